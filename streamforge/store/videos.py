"""Queries and guarded state changes on users, tokens, videos and their processing runs.

Every change of a video's processing state is one conditional UPDATE, so a duplicate
notification, a replayed task or a second worker changes nothing: the database decides who wins.
"""
from __future__ import annotations

import datetime
import hashlib
import re
import secrets
import unicodedata

from peewee import Case, IntegrityError, fn

from streamforge.errors import NotFound
from streamforge.store.db import (
    ApiToken,
    ProcessingLog,
    ProcessingStatus,
    Rendition,
    Thumbnail,
    UploadStatus,
    User,
    Video,
    db,
    new_id,
    utcnow,
    write_transaction,
)

TOKEN_PREFIX = "sf_"


# ---------- users and tokens ----------

def get_or_create_user(email: str, name: str | None = None) -> User:
    """The user with this email, created on first sight."""
    email = email.strip().lower()
    user = User.get_or_none(User.email == email)
    if user:
        return user
    try:
        return User.create(email=email, name=name)
    except IntegrityError:  # created concurrently
        return User.get(User.email == email)


def hash_token(token: str) -> str:
    """The stored form of an API token: tokens are random, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: User, name: str = "") -> tuple[ApiToken, str]:
    """A new API token for `user`; the plain token is returned once and never stored."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(user=user, name=name[:100], token_hash=hash_token(plain), prefix=plain[:10])
    return row, plain


def find_token(plain: str) -> ApiToken | None:
    """An unrevoked API token (its user joined), or None; notes when it was last used."""
    if not plain or len(plain) > 200:
        return None
    row = (ApiToken.select(ApiToken, User).join(User)
           .where((ApiToken.token_hash == hash_token(plain)) & ApiToken.revoked_at.is_null()).first())
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return row


def user_for_token(plain: str) -> User | None:
    """The user an unrevoked API token belongs to, or None."""
    row = find_token(plain)
    return row.user if row else None


def list_tokens(user: User) -> list[ApiToken]:
    """The user's unrevoked tokens, newest first."""
    return list(ApiToken.select().where((ApiToken.user == user) & ApiToken.revoked_at.is_null())
                .order_by(ApiToken.created_at.desc()))


def revoke_token(user: User, token_id: str) -> None:
    """Revoke one of the user's tokens and end every browser session it opened; NotFound when it is not theirs."""
    from streamforge.store import sessions  # sessions hashes with hash_token above
    n = (ApiToken.update(revoked_at=utcnow())
         .where((ApiToken.id == token_id) & (ApiToken.user == user) & ApiToken.revoked_at.is_null()).execute())
    if not n:
        raise NotFound("no such token")
    sessions.end_sessions_of_token(token_id)


# ---------- videos ----------

def safe_filename(name: str) -> str:
    """A filename safe as the last part of an object key: no path, no control characters."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*#%{}^~[]`')
    name = re.sub(r"\s+", " ", name).strip(" .")
    if not name:
        name = "video"
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:140] + dot + ext[:9]) if dot and len(ext) < 10 else name[:150]
    return name


def make_slug(title: str) -> str:
    """A URL slug: a readable part from the title and a random part that makes it unguessable."""
    base = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40].strip("-")
    rand = secrets.token_urlsafe(8).replace("_", "").replace("-", "")[:10].lower()
    return f"{base}-{rand}" if base else rand


def create_video(user: User, *, title: str, filename: str, size: int, content_type: str, bucket: str,
                 description: str | None, tags: list[str], visibility: str,
                 expires_at: datetime.datetime, sha256: str | None = None) -> Video:
    """The Video row for an upload about to start (UPLOADING / PENDING)."""
    vid = new_id()
    name = safe_filename(filename)
    for _ in range(5):
        try:
            return Video.create(
                id=vid, user=user, title=title, slug=make_slug(title), original_file_name=name,
                original_key=f"originals/{vid}/{name}", declared_size=size, original_file_size=size,
                content_type=content_type, s3_bucket=bucket, s3_processed_path=f"processed/{vid}",
                description=description, tags=tags, visibility=visibility, upload_expires_at=expires_at,
                original_sha256=sha256)
        except IntegrityError:  # a slug collision: try another random part
            continue
    raise RuntimeError("could not allocate a unique slug")


def get_video(user: User, video_id: str) -> Video:
    """The user's own video; NotFound for a missing one or someone else's."""
    v = Video.get_or_none((Video.id == video_id) & (Video.user == user))
    if v is None:
        raise NotFound("no such video")
    return v


def get_video_by_id(video_id: str) -> Video | None:
    """A video by id, whoever owns it (for the worker and the webhook)."""
    return Video.get_or_none(Video.id == video_id)


# The webhook's two statements are written out rather than built by peewee: building a query costs
# about ten times running it on SQLite (0.2-0.5 ms of Python per query, under the GIL), and a
# notification storm runs nothing else. Column names come from the model, so they stay in step.
_HOT_SQL: dict[tuple[str, str], str] = {}


def _hot_sql(name: str) -> str:
    key = (name, db.param)
    sql = _HOT_SQL.get(key)
    if sql is None:
        p, col = db.param, (lambda f: f'"{f.column_name}"')
        table = f'"{Video._meta.table_name}"'
        if name == "upload_state":
            cols = ", ".join(col(f) for f in UploadState.FIELDS)
            sql = f"SELECT {cols} FROM {table} WHERE {col(Video.id)} = {p}"
        else:  # mark_uploaded
            sets = ", ".join(f"{col(f)} = {p}" for f in _MARK_UPLOADED_SET)
            sql = (f"UPDATE {table} SET {sets} WHERE {col(Video.id)} = {p} AND {col(Video.upload_status)} = {p} "
                   f"AND {col(Video.status)} = {p}")
        sql = _HOT_SQL[key] = sql
    return sql


class UploadState:
    """What a notification needs of a video: id, key, declared size, upload and processing status."""

    FIELDS = (Video.id, Video.original_key, Video.declared_size, Video.upload_status, Video.status)
    __slots__ = ("id", "original_key", "declared_size", "upload_status", "status")

    def __init__(self, row):
        self.id, self.original_key, self.declared_size, self.upload_status, self.status = row


def get_upload_state(video_id: str) -> UploadState | None:
    """The webhook's lookup: one narrow SELECT (not the whole 37-column row)."""
    row = db.execute_sql(_hot_sql("upload_state"), (video_id,)).fetchone()
    return UploadState(row) if row else None


def get_video_by_slug(slug: str) -> Video | None:
    """A video by slug, whoever owns it (the watch page checks visibility)."""
    return Video.get_or_none(Video.slug == slug)


# the orders a user's library can be listed in (GET /api/videos?sort=, the library page)
LIBRARY_SORTS = {
    "newest": (Video.created_at.desc(), Video.id.desc()),
    "oldest": (Video.created_at, Video.id),
    "views": (Video.views.desc(), Video.created_at.desc(), Video.id.desc()),
}


def list_videos(user: User, status: str | None, page: int, per_page: int,
                match: dict | None = None, sort: str = "newest") -> tuple[list[Video], bool]:
    """One page of the user's videos, newest first (or as `sort`, one of LIBRARY_SORTS); and whether a
    next page exists.

    `match` narrows it to an original: `filename` (compared as stored, see safe_filename), `size`,
    `sha256`; every given key must match."""
    q = _library_query(user, status, match)
    rows = list(q.order_by(*LIBRARY_SORTS[sort]).offset((page - 1) * per_page).limit(per_page + 1))
    return rows[:per_page], len(rows) > per_page


def count_videos(user: User, status: str | None = None, match: dict | None = None) -> int:
    """How many videos list_videos pages through (the library page's last page comes from it)."""
    return _library_query(user, status, match).count()


def _library_query(user: User, status: str | None, match: dict | None):
    q = Video.select().where(Video.user == user)
    match = match or {}
    if match.get("filename") is not None:
        q = q.where(Video.original_file_name == safe_filename(match["filename"]))
    if match.get("size") is not None:
        q = q.where(Video.declared_size == match["size"])
    if match.get("sha256") is not None:
        q = q.where(Video.original_sha256 == match["sha256"])
    if status:
        q = q.where(Video.status == status)
    else:
        q = q.where(Video.status != ProcessingStatus.ARCHIVED)
    return q


def update_video(video: Video, **fields) -> Video:
    """Change a video's editable fields."""
    for k, v in fields.items():
        setattr(video, k, v)
    video.updated_at = utcnow()
    # only these columns: a whole-row save would put back counters (views) that changed meanwhile
    video.save(only=[Video._meta.fields[k] for k in fields] + [Video.updated_at])
    return video


def renditions_of(video: Video) -> list[Rendition]:
    """The video's renditions, best first."""
    return list(Rendition.select().where(Rendition.video == video)
                .order_by(Rendition.codec, Rendition.height.desc()))


def thumbnails_of(video: Video) -> list[Thumbnail]:
    """The video's thumbnails in a stable order."""
    return list(Thumbnail.select().where(Thumbnail.video == video).order_by(Thumbnail.type, Thumbnail.timestamp))


def logs_of(video: Video) -> list[ProcessingLog]:
    """The video's processing log, oldest first."""
    return list(ProcessingLog.select().where(ProcessingLog.video_id == video.id)
                .order_by(ProcessingLog.created_at, ProcessingLog.id))


# ---------- guarded state changes ----------

def set_task_id(video_id: str, task_id: str) -> None:
    """Remember the queue task that runs the video (the seed schema's ecsTaskArn)."""
    Video.update(ecs_task_arn=task_id).where(Video.id == video_id).execute()


def set_upload_id(video_id: str, upload_id: str) -> None:
    """Remember the multipart upload id of a video being uploaded."""
    Video.update(upload_id=upload_id).where(Video.id == video_id).execute()


_MARK_UPLOADED_SET = (Video.upload_status, Video.original_file_size, Video.original_etag, Video.uploaded_at,
                      Video.updated_at, Video.upload_id, Video.queued_at, Video.ecs_task_arn)


def mark_uploaded(video_id: str, size: int, etag: str | None = None, task_id: str | None = None) -> bool:
    """UPLOADING -> UPLOADED once; True only for the call that made the change (it enqueues the
    task `task_id`, recorded in the same UPDATE)."""
    now = utcnow()
    values = (UploadStatus.UPLOADED, size, etag, now, now, None, now, task_id)
    params = [f.db_value(v) for f, v in zip(_MARK_UPLOADED_SET, values)]
    params += [video_id, UploadStatus.UPLOADING, ProcessingStatus.PENDING]
    cursor = db.execute_sql(_hot_sql("mark_uploaded"), params)
    return db.rows_affected(cursor) == 1


def discard_upload(video_id: str) -> bool:
    """Delete a video whose upload could not even start (the store refused it): no row, nothing counted."""
    n = (Video.delete().where((Video.id == video_id) & (Video.upload_status == UploadStatus.UPLOADING)
                              & (Video.status == ProcessingStatus.PENDING)).execute())
    return n == 1


def fail_upload(video_id: str, message: str) -> bool:
    """An upload that cannot be processed (too big, never arrived) ends FAILED with the reason."""
    now = utcnow()
    n = (Video.update(status=ProcessingStatus.FAILED, error_message=message, updated_at=now, upload_id=None)
         .where((Video.id == video_id) & (Video.upload_status == UploadStatus.UPLOADING)
                & (Video.status == ProcessingStatus.PENDING)).execute())
    return n == 1


def claim_run(video_id: str) -> tuple[Video, str] | None:
    """PENDING -> PROCESSING for one worker; returns the video and the run's token, or None."""
    token = new_id()
    now = utcnow()
    n = (Video.update(status=ProcessingStatus.PROCESSING, run_token=token, heartbeat_at=now,
                      processing_started_at=now, attempts=Video.attempts + 1, progress=0.0,
                      error_message=None, updated_at=now)
         .where((Video.id == video_id) & (Video.status == ProcessingStatus.PENDING)
                & (Video.upload_status == UploadStatus.UPLOADED)).execute())
    if n != 1:
        return None
    return Video.get_by_id(video_id), token


def _mine(video_id: str, token: str):
    return (Video.id == video_id) & (Video.run_token == token) & (Video.status == ProcessingStatus.PROCESSING)


def heartbeat(video_id: str, token: str, progress: float | None = None) -> bool:
    """Renew the run's lease (and progress); False when the run is no longer this worker's."""
    fields = {"heartbeat_at": utcnow()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, float(progress)))
    return Video.update(**fields).where(_mine(video_id, token)).execute() == 1


def still_mine(video_id: str, token: str) -> bool:
    """True while the run holds the video."""
    return Video.select().where(_mine(video_id, token)).exists()


def log_stage(video_id: str, attempt: int, stage: str, status: str, message: str = "",
              duration: float | None = None, error_code: str | None = None,
              error_details: str | None = None) -> ProcessingLog:
    """Append one ProcessingLog row."""
    return ProcessingLog.create(video_id=video_id, attempt=attempt, stage=stage, status=status,
                                message=message[:2000], duration=duration, error_code=error_code,
                                error_details=(error_details or None) and error_details[:8000])


def set_original_sha256(video_id: str, token: str, sha256: str) -> bool:
    """Record the SHA-256 of the original the run downloaded (`streamforge import` finds copies by it)."""
    return Video.update(original_sha256=sha256).where(_mine(video_id, token)).execute() == 1


def set_original_info(video_id: str, token: str, *, duration: float, size: int | None = None,
                      kind: str | None = None) -> bool:
    """Record what the probe learnt about the original (`kind`: "video" or "audio")."""
    fields = {"original_duration": duration, "updated_at": utcnow()}
    if kind is not None:
        fields["kind"] = kind
    if size is not None:
        fields["original_file_size"] = size
    return Video.update(**fields).where(_mine(video_id, token)).execute() == 1


def set_playable(video_id: str, token: str, *, master_url: str, processed_path: str) -> bool:
    """The master is published while the ladder is still encoding: the video becomes playable."""
    now = utcnow()
    return (Video.update(master_playlist_url=master_url, s3_processed_path=processed_path,
                         playable_at=fn.COALESCE(Video.playable_at, now), updated_at=now)
            .where(_mine(video_id, token)).execute() == 1)


def finish_run(video_id: str, token: str, *, master_url: str, processed_path: str, total_files: int,
               duration: float, cover_url: str | None, renditions: list[dict], thumbnails: list[dict],
               audio_tracks: list[dict] | None = None) -> bool:
    """Switch the video to the new output in one transaction: rows replaced, COMPLETED."""
    now = utcnow()
    with write_transaction():
        video = Video.select().where(_mine(video_id, token)).first()
        if video is None:
            return False
        Rendition.delete().where(Rendition.video == video_id).execute()
        Thumbnail.delete().where(Thumbnail.video == video_id).execute()
        for r in renditions:
            Rendition.create(video=video_id, **r)
        for t in thumbnails:
            Thumbnail.create(video=video_id, **t)
        Video.update(status=ProcessingStatus.COMPLETED, master_playlist_url=master_url,
                     s3_processed_path=processed_path, total_s3_files=total_files, original_duration=duration,
                     thumbnail=cover_url, processed_at=now, playable_at=fn.COALESCE(Video.playable_at, now),
                     progress=1.0, run_token=None, error_message=None, updated_at=now,
                     audio_tracks=audio_tracks or []).where(Video.id == video_id).execute()
    return True


def fail_run(video_id: str, token: str, message: str, *, unpublish: bool) -> bool:
    """The run failed for good: FAILED with a readable reason (and, if asked, nothing published)."""
    fields = {"status": ProcessingStatus.FAILED, "error_message": message[:2000], "run_token": None,
              "updated_at": utcnow()}
    if unpublish:
        fields.update(master_playlist_url=None, playable_at=None)
    return Video.update(**fields).where(_mine(video_id, token)).execute() == 1


def _unpublish_unfinished() -> dict:
    """Fields that withdraw a master published early by a run that did not finish.

    A video that completed before keeps its old master: a rerun only switches at its end."""
    never_done = Video.processed_at.is_null()
    return {"master_playlist_url": Case(None, [(never_done, None)], Video.master_playlist_url),
            "playable_at": Case(None, [(never_done, None)], Video.playable_at)}


def release_run(video_id: str, token: str, message: str | None = None) -> bool:
    """Hand a run back (worker stopping, or a retryable failure): PROCESSING -> PENDING."""
    return (Video.update(status=ProcessingStatus.PENDING, run_token=None, heartbeat_at=None,
                         queued_at=utcnow(), error_message=message, updated_at=utcnow(),
                         **_unpublish_unfinished())
            .where(_mine(video_id, token)).execute() == 1)


def request_reprocess(video: Video) -> bool:
    """COMPLETED or FAILED -> PENDING for a new run (the old output stays until the new one is ready)."""
    now = utcnow()
    n = (Video.update(status=ProcessingStatus.PENDING, attempts=0, error_message=None, queued_at=now,
                      progress=0.0, updated_at=now)
         .where((Video.id == video.id) & (Video.upload_status == UploadStatus.UPLOADED)
                & (Video.status.in_([ProcessingStatus.COMPLETED, ProcessingStatus.FAILED]))).execute())
    return n == 1


def is_archived(video_id: str) -> bool:
    """True when the video was deleted (ARCHIVED) or its row is gone."""
    status = Video.select(Video.status).where(Video.id == video_id).scalar()
    return status is None or status == ProcessingStatus.ARCHIVED


def archive_video(video: Video) -> None:
    """ARCHIVED: the row stays (for the log), the output rows go."""
    now = utcnow()
    with write_transaction():
        Rendition.delete().where(Rendition.video == video.id).execute()
        Thumbnail.delete().where(Thumbnail.video == video.id).execute()
        Video.update(status=ProcessingStatus.ARCHIVED, run_token=None, master_playlist_url=None,
                     thumbnail=None, playable_at=None, total_s3_files=0, updated_at=now
                     ).where(Video.id == video.id).execute()


# ---------- what the sweeper looks at ----------

def uploading_videos(limit: int = 500) -> list[Video]:
    """Videos still waiting for their bytes."""
    return list(Video.select().where((Video.upload_status == UploadStatus.UPLOADING)
                                     & (Video.status == ProcessingStatus.PENDING)).limit(limit))


def closed_with_live_upload_urls(since: datetime.datetime, limit: int = 500) -> list[str]:
    """Ids of videos deleted (or whose upload was refused or expired) while their upload URLs, which
    expire at upload_expires_at, were alive after `since`."""
    closed = ((Video.status == ProcessingStatus.ARCHIVED)
              | ((Video.upload_status == UploadStatus.UPLOADING) & (Video.status == ProcessingStatus.FAILED)))
    return [v.id for v in Video.select(Video.id).where(closed & (Video.upload_expires_at > since)).limit(limit)]


def stale_queued(older_than: datetime.datetime, limit: int = 500) -> list[Video]:
    """UPLOADED videos waiting in the queue since before `older_than` (their task may be lost)."""
    return list(Video.select().where((Video.upload_status == UploadStatus.UPLOADED)
                                     & (Video.status == ProcessingStatus.PENDING)
                                     & ((Video.queued_at < older_than) | Video.queued_at.is_null()))
                .limit(limit))


def mark_requeued(video_id: str, seen_queued_at: datetime.datetime | None) -> bool:
    """Note that a PENDING video is put on the queue again; False when another sweeper just did
    (its `queued_at` is no longer the one the caller saw)."""
    same = Video.queued_at.is_null() if seen_queued_at is None else Video.queued_at == seen_queued_at
    return (Video.update(queued_at=utcnow())
            .where((Video.id == video_id) & (Video.status == ProcessingStatus.PENDING) & same).execute() == 1)


def dead_runs(older_than: datetime.datetime, limit: int = 500) -> list[Video]:
    """PROCESSING runs whose heartbeat stopped before `older_than`: their worker died."""
    return list(Video.select().where((Video.status == ProcessingStatus.PROCESSING)
                                     & (Video.heartbeat_at < older_than)).limit(limit))


def reclaim_dead_run(video: Video, max_attempts: int) -> str:
    """Hand a dead run back to the queue, or fail it after `max_attempts`; returns what happened."""
    guard = (Video.id == video.id) & (Video.run_token == video.run_token) & (
        Video.status == ProcessingStatus.PROCESSING)
    now = utcnow()
    if video.attempts >= max_attempts:
        n = Video.update(status=ProcessingStatus.FAILED, run_token=None, updated_at=now,
                         error_message=f"processing stopped {video.attempts} times without finishing "
                                       f"(the worker died or timed out); reprocess to try again",
                         **_unpublish_unfinished()).where(guard).execute()
        return "failed" if n else "raced"
    n = Video.update(status=ProcessingStatus.PENDING, run_token=None, heartbeat_at=None, queued_at=now,
                     updated_at=now, **_unpublish_unfinished()).where(guard).execute()
    return "requeued" if n else "raced"
