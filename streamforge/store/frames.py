"""Records of the pictures made by GET /api/videos/{id}/thumbnail.jpg: made once, then served from the store."""
from __future__ import annotations

from peewee import IntegrityError

from streamforge.store.db import FrameThumbnail, Video


def find_frame(video: Video, time_ms: int, width: int) -> FrameThumbnail | None:
    """The picture already made of this moment at this width, from the video's current output."""
    return FrameThumbnail.get_or_none((FrameThumbnail.video == video.id) & (FrameThumbnail.output == video.s3_processed_path)
                                      & (FrameThumbnail.time_ms == time_ms) & (FrameThumbnail.width == width))


def count_frames(video: Video) -> int:
    """How many pictures were made from the video's current output."""
    return FrameThumbnail.select().where((FrameThumbnail.video == video.id)
                                         & (FrameThumbnail.output == video.s3_processed_path)).count()


def save_frame(video: Video, time_ms: int, width: int, height: int, key: str) -> None:
    """Remember a picture just put in the store (a concurrent twin's record is as good)."""
    try:
        with FrameThumbnail._meta.database.atomic():
            FrameThumbnail.create(video=video.id, output=video.s3_processed_path, time_ms=time_ms, width=width,
                                  height=height, s3_key=key)
    except IntegrityError:
        pass
