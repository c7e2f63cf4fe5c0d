"""A video's cover picture (its COVER thumbnail) chosen by its owner: a frame, or an uploaded image."""
from __future__ import annotations

from streamforge.store.db import Thumbnail, ThumbnailType, Video, db, utcnow


def set_cover(video: Video, key: str, url: str, width: int, height: int, timestamp: float) -> None:
    """Point the video's COVER at the picture stored under `key` (made if the video had none)."""
    with db.atomic():
        n = (Thumbnail.update(s3_key=key, url=url, width=width, height=height, timestamp=timestamp)
             .where((Thumbnail.video == video.id) & (Thumbnail.type == ThumbnailType.COVER)).execute())
        if not n:
            Thumbnail.create(video=video.id, s3_key=key, url=url, width=width, height=height, timestamp=timestamp,
                             type=ThumbnailType.COVER)
        Video.update(thumbnail=url, updated_at=utcnow()).where(Video.id == video.id).execute()
