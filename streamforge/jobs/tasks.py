"""The one Huey instance and its thin tasks.

`huey` exists at import time so tasks can be declared; `configure(config)` points its storage
at `[queue] url` (a SQLite file by default, Redis for scale-out) before anything is enqueued or
consumed. Tasks take ids; the work itself lives in `streamforge.jobs.processing` and `streamforge.jobs.notify`,
which never call back into the queue: a run returns what happened and the queue acts on it (a retry
after its backoff, a video handed back at shutdown), and the run's events reach `emit_event`.
"""
from __future__ import annotations

import datetime
import logging
from urllib.parse import unquote, urlsplit

from huey import Huey
from huey.storage import MemoryStorage, RedisStorage, SqliteStorage
from peewee import InterfaceError, OperationalError

from streamforge.config import Config
from streamforge.jobs import captioning, downloads, heartbeats, notify
from streamforge.jobs.processing import run_video
from streamforge.store import captions, videos
from streamforge.store.db import private_file

log = logging.getLogger("streamforge.jobs.tasks")

huey = Huey("streamforge", results=False, storage_class=MemoryStorage)
_config: Config | None = None


class _SqliteQueueStorage(SqliteStorage):
    """Huey's SQLite storage with `synchronous=NORMAL`: in WAL mode a commit no longer waits for an
    fsync (a webhook's enqueue took up to ~10 ms under huey's one lock), and the queue is still
    never corrupted; a power cut may lose the last tasks, which the sweeper enqueues again."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=normal")
        return conn


def make_storage(url: str):
    """A Huey storage for a `sqlite:///path` or `redis://...` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from pathlib import Path
        path = unquote(url[len("sqlite:///"):])
        private_file(Path(path))
        return _SqliteQueueStorage("streamforge", filename=path, timeout=30)
    return RedisStorage("streamforge", url=url)


def configure(config: Config) -> None:
    """Bind the queue to its configured storage and remember the config for the tasks."""
    global _config
    _config = config
    huey.storage = make_storage(config.queue_url)


def config() -> Config:
    """The configuration the queue was bound with."""
    if _config is None:
        raise RuntimeError("streamforge.jobs.tasks.configure(config) was not called")
    return _config


@huey.task(context=True)
def process_video(video_id: str, task=None) -> str:
    """Run the processing pipeline for one video (a no-op unless the video is waiting for a run), and
    enqueue it again when the run asks for that (a retry after its backoff, a hand-back at shutdown)."""
    cfg = config()
    with heartbeats.running():
        outcome = run_video(cfg, video_id, task_id=getattr(task, "id", None),
                            emit=lambda event, vid: emit_event(cfg, event, vid))
    if outcome.requeue_after is not None:
        try:
            if outcome.requeue_after:
                enqueue_processing(video_id, delay=outcome.requeue_after)
            else:
                enqueue_processing(video_id)
        except (OperationalError, InterfaceError) as e:  # the sweeper finds the video by its stale state
            log.warning("could not enqueue %s again: %s", video_id, e)
    if outcome == "completed" and cfg.captions.auto and not captions.has_auto_track(video_id):
        try:  # after COMPLETED, never before it: the transcription is a task of its own
            enqueue_captions(video_id)
        except (OperationalError, InterfaceError) as e:  # POST .../captions/auto runs it later
            log.warning("could not enqueue the auto captions of %s: %s", video_id, e)
    return str(outcome)


@huey.task()
def auto_captions(video_id: str) -> str:
    """Transcribe a COMPLETED video into its `auto` caption track (stage `captions` in its log)."""
    with heartbeats.running():
        outcome = captioning.caption_video(config(), video_id)
    if outcome == "handed-back":  # the worker stopped mid-way: the next one transcribes it
        enqueue_captions(video_id)
    return outcome


def enqueue_captions(video_id: str) -> str:
    """Put an auto-captions task for the video on the queue; returns the task id."""
    task = auto_captions.s(video_id)
    huey.enqueue(task)
    return task.id


def processing_task(video_id: str, delay: float | None = None):
    """A processing task for the video (to run after `delay` seconds), not yet enqueued."""
    task = process_video.s(video_id)
    if delay:
        # huey compares etas with naive UTC times (utc=True)
        task.eta = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(
            seconds=delay)
    return task


def enqueue_processing(video_id: str, delay: float | None = None, task=None) -> str:
    """Put a processing task for the video on the queue (after `delay` seconds) and record its id on
    the video, so the sweeper can tell a task still waiting from a lost one; returns the task id.

    With `task` (from `processing_task`), its id is already recorded on the video: only enqueue it."""
    if task is None:
        task = processing_task(video_id, delay)
        videos.set_task_id(video_id, task.id)
    huey.enqueue(task)
    return task.id


def waiting_caption_ids() -> set[str]:
    """Ids of the videos whose auto-captions task waits in the queue or its schedule."""
    return {t.args[0] for t in [*huey.pending(), *huey.scheduled()] if t.name == "auto_captions" and t.args}


def waiting_task_ids() -> set[str]:
    """Ids of the tasks in the queue or its schedule, read without taking them."""
    return {t.id for t in huey.pending()} | {t.id for t in huey.scheduled()}


def emit_event(config: Config, event: str, video_id: str) -> None:
    """Queue one outbound webhook delivery per configured URL for this event of the video."""
    for url, body in notify.deliveries(config, event, video_id):
        try:
            deliver_webhook(url, body, 1)
        except Exception:  # a queue outage must not fail the video; the event is logged instead
            log.exception("could not queue webhook %s for %s", event, video_id)


@huey.task()
def deliver_webhook(url: str, body: str, attempt: int) -> bool:
    """Deliver one outbound webhook; on failure schedule the next attempt with backoff."""
    cfg = config()
    if notify.deliver(cfg, url, body, attempt):
        return True
    if attempt < cfg.notify.max_attempts:
        deliver_webhook.schedule((url, body, attempt + 1), delay=notify.backoff(attempt))
    return False


@huey.task()
def make_download(video_id: str, rendition: str) -> str:
    """Make a rendition's progressive MP4 (GET /api/videos/{id}/download answers 202 until it exists)."""
    return downloads.make_download(config(), video_id, rendition)


@huey.task()
def process_chunk(chunk_id: str) -> str:
    """Encode one chunk of a chunked run, unless another worker or a runner has it already."""
    from streamforge.jobs import chunkwork
    with heartbeats.running():
        return chunkwork.run_chunk_task(config(), chunk_id, f"worker {heartbeats.worker_name()}")


def enqueue_chunk(chunk_id: str) -> None:
    """Put a chunk's task on the queue (for the local workers; runners claim chunks over HTTP)."""
    try:
        process_chunk(chunk_id)
    except (OperationalError, InterfaceError) as e:  # the run encodes a chunk nobody took itself
        log.warning("could not enqueue chunk %s: %s", chunk_id, e)
