"""From an upload in the store to a queued run: shared by the webhook, `complete` and the sweeper.

A notification is only a hint: the object is looked up in the store, its size checked against what
was declared and the limit, and the video moved UPLOADING -> UPLOADED by one guarded UPDATE. Only
the caller that made that change enqueues, so any number of hints start one run.
"""
from __future__ import annotations

import datetime
import logging

from streamforge.config import Config
from streamforge.errors import StorageError
from streamforge.jobs import tasks
from streamforge.store import captions, counters, videos
from streamforge.store.db import ProcessingStatus, UploadStatus, utcnow
from streamforge.store.objects import ObjectStore

log = logging.getLogger("streamforge.jobs.intake")
# upload URLs live until upload_expires_at; past it (and this margin for clocks) nothing can be written
LATE_WRITE_MARGIN = 120


def accept_upload(config: Config, store: ObjectStore, video) -> str:
    """Check the upload in the store and start its one run; returns what happened.

    "queued" (this call enqueued), "already" (someone else did), "missing" (no object yet),
    "rejected" (wrong size: the object is deleted and the video FAILED)."""
    if is_closed(video):
        return "removed" if remove_late_write(store, video.id) else "already"
    if video.upload_status != UploadStatus.UPLOADING:
        return "already"
    info = store.stat(video.original_key)
    if info is None:
        return "missing"
    if info.size > config.upload.max_size or (video.declared_size and info.size != video.declared_size):
        reason = (f"the upload is {info.size} bytes, over the {config.upload.max_size} byte limit"
                  if info.size > config.upload.max_size else
                  f"the upload is {info.size} bytes but {video.declared_size} were declared")
        if videos.fail_upload(video.id, reason):
            tasks.emit_event(config, "video.failed", video.id)
            try:
                store.delete(video.original_key)
            except StorageError as e:
                log.warning("could not delete rejected upload %s: %s", video.original_key, e)
        return "rejected"
    task = tasks.processing_task(video.id)
    # the state change records the task's id too: one write, and the sweeper can tell the task is
    # waiting in the queue from the moment the video is UPLOADED
    if not videos.mark_uploaded(video.id, info.size, info.etag, task_id=task.id):
        return "already"
    tasks.enqueue_processing(video.id, task=task)
    return "queued"


def is_closed(video) -> bool:
    """True when the video takes no more bytes: deleted, or its upload refused or expired (FAILED)."""
    return video.status == ProcessingStatus.ARCHIVED or (
        video.upload_status == UploadStatus.UPLOADING and video.status == ProcessingStatus.FAILED)


def remove_late_write(store: ObjectStore, video_id: str) -> bool:
    """Delete whatever is under `originals/{id}/` of a closed video (written through a URL still alive);
    True when something was there. It counts against no quota and is never processed."""
    prefix = f"originals/{video_id}/"
    found = store.list(prefix)
    if not found:
        return False
    store.delete_prefix(prefix)
    log.warning("removed %d object(s) written under %s after the video was deleted or its upload closed",
                len(found), prefix)
    return True


def remove_late_writes(store: ObjectStore) -> int:
    """Sweeper: clear `originals/{id}/` of closed videos whose upload URLs may still be alive (a write
    through one is removed even when its notification never comes); returns how many were cleared."""
    since = utcnow() - datetime.timedelta(seconds=LATE_WRITE_MARGIN)
    removed = 0
    for video_id in videos.closed_with_live_upload_urls(since):
        try:
            removed += remove_late_write(store, video_id)
        except StorageError as e:
            log.warning("sweeper: store unavailable: %s", e)
            break
    return removed


def sweep(config: Config, store: ObjectStore) -> dict:
    """Finish what notifications and workers left undone; returns counts of what was done."""
    counts = {"recovered_uploads": 0, "expired_uploads": 0, "requeued": 0, "reclaimed": 0, "failed_runs": 0}
    now = utcnow()
    # uploads whose notification never came (SeaweedFS keeps them in memory; MinIO may try once)
    for video in videos.uploading_videos():
        try:
            outcome = accept_upload(config, store, video)
        except StorageError as e:
            log.warning("sweeper: store unavailable: %s", e)
            break
        if outcome == "queued":
            counts["recovered_uploads"] += 1
            counters.note_recovered_upload()
        elif outcome == "missing" and video.upload_expires_at and video.upload_expires_at < now:
            if video.upload_id:
                try:
                    store.abort_multipart(video.original_key, video.upload_id)
                except StorageError:
                    pass
            if videos.fail_upload(video.id, "the upload was never completed before its upload URLs expired; "
                                            "upload the file again"):
                tasks.emit_event(config, "video.failed", video.id)
                counts["expired_uploads"] += 1
    counts["removed_late_writes"] = remove_late_writes(store)
    lease = datetime.timedelta(seconds=config.sweeper.lease_seconds)
    # runs whose worker died: Huey has no acknowledgements, a killed consumer loses its task
    for video in videos.dead_runs(now - lease):
        outcome = videos.reclaim_dead_run(video, config.sweeper.max_attempts)
        if outcome == "requeued":
            tasks.enqueue_processing(video.id)
            counts["reclaimed"] += 1
        elif outcome == "failed":
            tasks.emit_event(config, "video.failed", video.id)
            counts["failed_runs"] += 1
    # queued videos whose task was lost (enqueue failed after the state change, or the queue was wiped)
    waiting: set[str] | None = None
    for video in videos.stale_queued(now - lease):
        if waiting is None:
            waiting = tasks.waiting_task_ids()
        if video.ecs_task_arn in waiting:
            continue  # still in line behind other videos: its task is in the queue
        if videos.mark_requeued(video.id, video.queued_at):  # one sweeper of many wins
            tasks.enqueue_processing(video.id)
            counts["requeued"] += 1
    if config.captions.auto:
        counts["captions_requeued"] = _sweep_transcriptions(now, lease)
    return counts


# a transcription still "started" this long after it began is taken for lost (six hours of speech take
# about half an hour with the default model on two cores)
TRANSCRIPTION_LOST_AFTER = datetime.timedelta(hours=3)


def _sweep_transcriptions(now, lease: datetime.timedelta) -> int:
    """Enqueue again the auto captions of the last day's videos whose task was lost (a worker killed mid-way,
    an enqueue that failed); a task still waiting in the queue is left to run."""
    lost = captions.lost_transcriptions(now - datetime.timedelta(days=1), now - lease,
                                        now - TRANSCRIPTION_LOST_AFTER)
    if not lost:
        return 0
    waiting = tasks.waiting_caption_ids()
    again = [video_id for video_id in lost if video_id not in waiting]
    for video_id in again:
        tasks.enqueue_captions(video_id)
    return len(again)


# The sweeper recovering this many uploads in a row, with no notification about any upload in between,
# means notifications have stopped (one can be lost now and then: SeaweedFS keeps them in memory).
STALLED_AFTER = 2
STALLED_CAUSES = (
    "the webhook token differs between the store and [webhook] token (the store gets 401)",
    "MinIO's queue (MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_*) is jammed behind an event it keeps retrying, or full "
    "(see MinIO's log and `mc admin info`)",
    "the bucket has no subscription: `mc event add ALIAS/BUCKET arn:minio:sqs::STREAMFORGE:webhook --event put "
    "--prefix originals/` was never run (`mc event ls ALIAS/BUCKET` shows none), or AWS's "
    "put-bucket-notification-configuration replaced it",
    "the store cannot reach the webhook URL (MINIO_NOTIFY_WEBHOOK_ENDPOINT_*, a proxy, a firewall)",
)


def notification_warning(health: counters.NotificationHealth) -> str | None:
    """A warning naming the likely causes when the sweeper is doing the webhook's job; None when all is well."""
    if health.recovered_since_notification < STALLED_AFTER:
        return None
    since = (f"since the last one at {health.last_notification_at:%Y-%m-%d %H:%M} UTC"
             if health.last_notification_at else "and none has ever arrived")
    return (f"store notifications have stopped arriving: the sweeper picked up the last "
            f"{health.recovered_since_notification} finished uploads, {since} (uploads wait up to "
            f"[sweeper] interval_seconds). Likely causes: " + "; ".join(STALLED_CAUSES) + ".")
