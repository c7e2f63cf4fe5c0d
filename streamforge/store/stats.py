"""What the admin's stats count: videos by status and the bytes they hold in the store."""
from __future__ import annotations

from peewee import fn

from streamforge.store.db import ProcessingStatus, Rendition, Video


def video_counts() -> dict[str, int]:
    """How many videos are in each processing status (every status named, 0 when none)."""
    counts = dict(Video.select(Video.status, fn.COUNT(Video.id)).group_by(Video.status).tuples())
    return {status: int(counts.get(status, 0)) for status in ProcessingStatus.ALL}


def storage_bytes() -> int:
    """Bytes in the store: the originals of videos not deleted plus their renditions' segments."""
    originals = (Video.select(fn.COALESCE(fn.SUM(Video.original_file_size), 0))
                 .where(Video.status != ProcessingStatus.ARCHIVED).scalar())
    segments = Rendition.select(fn.COALESCE(fn.SUM(Rendition.segment_size * Rendition.segment_count), 0)).scalar()
    return int(originals or 0) + int(segments or 0)
