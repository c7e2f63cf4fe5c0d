"""What `GET /metrics` reads from the database at scrape time: the same answer from any web process,
whichever process or machine did the work (workers, the sweeper, other web processes)."""
from __future__ import annotations

import datetime

from peewee import Case, fn

from streamforge.store.db import ProcessingLog, Rendition, UploadStatus, Video, Worker, utcnow
from streamforge.store.stats import video_counts

__all__ = ["video_counts", "runs_by_outcome", "run_durations", "encode_speeds", "workers_alive", "runners_alive",
           "upload_bytes"]

RECENT_RUNS = 50


def runs_by_outcome() -> dict[str, int]:
    """Processing runs ever finished, by outcome: `completed` (the last stage recorded) or `failed`."""
    completed = (ProcessingLog.select().where((ProcessingLog.stage == "database")
                                              & (ProcessingLog.status == "completed")).count())
    failed = ProcessingLog.select().where(ProcessingLog.status == "failed").count()
    return {"completed": completed, "failed": failed}


def run_durations() -> list[float]:
    """Seconds each completed run took (the sum of its stages' durations)."""
    finished = fn.MAX(Case(None, [(ProcessingLog.stage == "database", 1)], 0))
    rows = (ProcessingLog.select(fn.SUM(ProcessingLog.duration), finished)
            .where(ProcessingLog.status == "completed")
            .group_by(ProcessingLog.video_id, ProcessingLog.attempt).tuples())
    return [float(total or 0.0) for total, done in rows if done]


def encode_speeds(recent: int = RECENT_RUNS) -> dict[str, float]:
    """Seconds of video encoded per second of transcode stage, per codec, over the latest completed runs."""
    rows = (ProcessingLog.select(ProcessingLog.video_id, ProcessingLog.duration, Video.original_duration)
            .join(Video, on=(Video.id == ProcessingLog.video_id))
            .where((ProcessingLog.stage == "transcode") & (ProcessingLog.status == "completed")
                   & (ProcessingLog.duration > 0))
            .order_by(ProcessingLog.created_at.desc()).limit(recent).tuples())
    media: dict[str, float] = {}
    spent: dict[str, float] = {}
    runs = list(rows)
    codecs: dict[str, set[str]] = {}
    for vid, codec in (Rendition.select(Rendition.video, Rendition.codec)
                       .where(Rendition.video.in_([r[0] for r in runs])).tuples()):
        codecs.setdefault(vid, set()).add(codec)
    for vid, took, duration in runs:
        for codec in codecs.get(vid, ()):
            media[codec] = media.get(codec, 0.0) + float(duration or 0.0)
            spent[codec] = spent.get(codec, 0.0) + float(took)
    return {codec: media[codec] / spent[codec] for codec in media if spent[codec] > 0}


def workers_alive(within_seconds: float = 60.0) -> int:
    """Worker processes whose heartbeat came within `within_seconds`."""
    since = utcnow() - datetime.timedelta(seconds=within_seconds)
    return Worker.select().where(Worker.last_seen_at >= since).count()


def runners_alive() -> int:
    """Remote runners seen lately: always 0 until remote runners exist (issue 22 replaces this)."""
    return 0


def upload_bytes() -> int:
    """Bytes of every upload the store has received (deleted videos' too: a counter never goes down)."""
    return int(Video.select(fn.COALESCE(fn.SUM(Video.original_file_size), 0))
               .where(Video.upload_status == UploadStatus.UPLOADED).scalar() or 0)
