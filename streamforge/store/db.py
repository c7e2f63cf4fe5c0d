"""The data model (the seed schema in peewee) and the database connection.

`db` is a DatabaseProxy initialised by `init_db(url)`: SQLite (WAL) by default, PostgreSQL from
`[database] url`. The schema is created on start and moved forward by numbered migrations
recorded in the `schema_version` table.
"""
from __future__ import annotations

import datetime
import json
import os
import secrets
import string
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from peewee import (
    SQL,
    BigIntegerField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    SqliteDatabase,
    TextField,
)
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from streamforge.errors import ConfigError

db = DatabaseProxy()

_ALPHABET = string.digits + string.ascii_lowercase


def new_id() -> str:
    """A collision-resistant, roughly time-ordered string id in the spirit of cuid."""
    ms = int(time.time() * 1000)
    stamp = ""
    while ms:
        ms, r = divmod(ms, 36)
        stamp = _ALPHABET[r] + stamp
    return "c" + stamp + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def utcnow() -> datetime.datetime:
    """The current UTC time, naive (peewee stores naive datetimes on both backends)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class ProcessingStatus:
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ARCHIVED = "ARCHIVED"
    ALL = (PENDING, PROCESSING, COMPLETED, FAILED, ARCHIVED)


class ThumbnailType:
    PREVIEW = "PREVIEW"
    COVER = "COVER"
    TIMELINE = "TIMELINE"
    ALL = (PREVIEW, COVER, TIMELINE)


class UploadStatus:
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    ALL = (UPLOADING, UPLOADED)


class Visibility:
    PRIVATE = "private"
    UNLISTED = "unlisted"
    PUBLIC = "public"
    ALL = (PRIVATE, UNLISTED, PUBLIC)


class ListField(TextField):
    """A list of strings stored as JSON text (Prisma's String[])."""

    def db_value(self, value):
        return json.dumps(list(value or []))

    def python_value(self, value):
        return json.loads(value) if value else []


class BaseModel(Model):
    class Meta:
        database = db


class User(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    email = CharField(unique=True, max_length=320)
    name = CharField(null=True)
    picture = TextField(null=True)
    oidc_sub = CharField(null=True, index=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # accounts (migration 3): the identity is (oidc_issuer, oidc_sub), bound at the first OIDC sign-in
    oidc_issuer = CharField(null=True, max_length=500)
    role = CharField(max_length=16, default="uploader")
    disabled = BooleanField(default=False)
    max_bytes = BigIntegerField(null=True)  # None: [quota] max_bytes_per_user; 0: unlimited
    max_videos = IntegerField(null=True)    # None: [quota] max_videos_per_user; 0: unlimited
    last_seen_at = DateTimeField(null=True)
    # local accounts (migration 8): an argon2id hash, None for a user who has no password
    password_hash = CharField(null=True, max_length=200)

    class Meta:
        table_name = "users"
        indexes = ((("oidc_issuer", "oidc_sub"), True),)


class ApiToken(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    user = ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    name = CharField(default="")
    token_hash = CharField(unique=True, max_length=64)
    prefix = CharField(max_length=16, default="")
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)

    class Meta:
        table_name = "api_tokens"


class Video(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    title = CharField(max_length=300)
    slug = CharField(unique=True, max_length=64)
    user = ForeignKeyField(User, backref="videos", on_delete="CASCADE", index=True)
    original_url = TextField(default="")
    original_file_name = CharField(max_length=300)
    original_file_size = BigIntegerField(default=0)
    original_duration = FloatField(default=0.0)
    status = CharField(max_length=16, default=ProcessingStatus.PENDING, index=True)
    ecs_task_arn = CharField(null=True)  # the queue's task id
    error_message = TextField(null=True)
    master_playlist_url = TextField(null=True)
    s3_bucket = CharField()
    s3_processed_path = CharField(default="")
    total_s3_files = IntegerField(default=0)
    description = TextField(null=True)
    tags = ListField(default=list)
    thumbnail = TextField(null=True)
    uploaded_at = DateTimeField(default=utcnow)
    processed_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # additions to the seed schema
    upload_status = CharField(max_length=16, default=UploadStatus.UPLOADING)
    visibility = CharField(max_length=16, default=Visibility.PRIVATE)
    playable_at = DateTimeField(null=True)
    original_key = TextField(default="")
    declared_size = BigIntegerField(default=0)
    content_type = CharField(default="application/octet-stream")
    upload_id = TextField(null=True)  # the multipart upload id, while uploading
    upload_expires_at = DateTimeField(null=True)
    progress = FloatField(default=0.0)
    attempts = IntegerField(default=0)
    run_token = CharField(null=True, max_length=32)
    heartbeat_at = DateTimeField(null=True)
    processing_started_at = DateTimeField(null=True)
    queued_at = DateTimeField(null=True)
    # the ETag of the original when its upload was accepted: a later overwrite is refused
    original_etag = CharField(null=True, max_length=80)
    # the original's SHA-256 as the uploader declared it (migration 6): `streamforge import` skips a
    # file whose content this user already uploaded
    original_sha256 = CharField(null=True, max_length=64, index=True)
    # sharing (migration 5): views counted once per player session, watch time summed
    views = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    watch_seconds = FloatField(default=0.0, constraints=[SQL("DEFAULT 0")])
    # captions, downloads, audio (migration 4): "video", or "audio" for an audio-only upload
    kind = CharField(max_length=8, default="video", constraints=[SQL("DEFAULT 'video'")])
    # audio tracks (migration 16): [{"name", "language", "label", "default"}] as JSON, in the file's order
    audio_tracks = ListField(default=list, constraints=[SQL("DEFAULT '[]'")])
    # speech and chapters (migration 12): the caption tracks' plain text, for the full-text search, and
    # the upload's own chapters as JSON [{"start", "title"}] (None: it has none; the description's apply)
    transcript = TextField(null=True)
    container_chapters = TextField(null=True)

    class Meta:
        table_name = "videos"


class Rendition(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    video = ForeignKeyField(Video, backref="renditions", on_delete="CASCADE", index=True)
    name = CharField(max_length=64)
    width = IntegerField()
    height = IntegerField()
    bitrate = CharField(max_length=16)
    bandwidth = IntegerField()
    playlist_url = TextField()
    playlist_name = CharField()
    segment_count = IntegerField(default=0)
    segment_size = IntegerField(null=True)
    codec = CharField(max_length=16)
    s3_key = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # additions
    average_bandwidth = IntegerField(null=True)
    codecs = CharField(default="")
    frame_rate = FloatField(null=True)

    class Meta:
        table_name = "renditions"
        indexes = ((("video", "name"), True),)


class Thumbnail(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    video = ForeignKeyField(Video, backref="thumbnails", on_delete="CASCADE", index=True)
    url = TextField()
    s3_key = TextField()
    timestamp = FloatField(default=0.0)
    width = IntegerField(default=320)
    height = IntegerField(default=180)
    type = CharField(max_length=16, default=ThumbnailType.PREVIEW)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "thumbnails"


class ProcessingLog(BaseModel):
    id = CharField(primary_key=True, max_length=32, default=new_id)
    video_id = CharField(max_length=32, index=True)
    stage = CharField(max_length=32)
    status = CharField(max_length=16)
    message = TextField(default="")
    duration = FloatField(null=True)
    error_code = CharField(null=True)
    error_details = TextField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    # addition: which processing run (attempt) wrote it
    attempt = IntegerField(default=0)

    class Meta:
        table_name = "processing_logs"


class Invite(BaseModel):
    """A one-use sign-in link for one email (POST /api/admin/invites)."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    token_hash = CharField(unique=True, max_length=64)
    email = CharField(max_length=320)
    role = CharField(max_length=16, default="uploader")
    created_by = CharField(max_length=32, null=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)
    used_by = CharField(max_length=32, null=True)

    class Meta:
        table_name = "invites"


class Worker(BaseModel):
    """A worker process's heartbeat, for the admin's stats."""

    name = CharField(primary_key=True, max_length=200)
    started_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    running = IntegerField(default=0)

    class Meta:
        table_name = "workers"


class ViewSession(BaseModel):
    """One player session's reports on one video (POST /api/videos/{id}/views): a view once, watch time summed."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    video = ForeignKeyField(Video, backref="view_sessions", on_delete="CASCADE")
    session = CharField(max_length=64)
    ip_hash = CharField(max_length=32)
    watched_seconds = FloatField(default=0.0)
    reports = IntegerField(default=1)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "view_sessions"
        indexes = ((("video", "session"), True), (("ip_hash", "created_at"), False))


class FrameThumbnail(BaseModel):
    """A picture of one moment (GET /api/videos/{id}/thumbnail.jpg) made once and kept in the store."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    video = ForeignKeyField(Video, backref="frame_thumbnails", on_delete="CASCADE")
    output = CharField(max_length=200)  # the video's s3_processed_path it was made from
    time_ms = IntegerField()
    width = IntegerField()
    height = IntegerField()
    s3_key = TextField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "frame_thumbnails"
        indexes = ((("video", "output", "time_ms", "width"), True),)


class Caption(BaseModel):
    """One caption track of a video, per language: its normalised WebVTT (the store holds copies)."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    video = ForeignKeyField(Video, backref="caption_tracks", on_delete="CASCADE")
    language = CharField(max_length=35)
    label = CharField(max_length=100, default="")
    # "upload", "original" (a stream of the upload) or "auto" (transcribed, migration 12: no schema change)
    source = CharField(max_length=16, default="upload")
    content = TextField()
    version = CharField(max_length=16)  # a hash of the content: its objects' names change with it
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "captions"
        indexes = ((("video", "language"), True),)


class DownloadFile(BaseModel):
    """A progressive MP4 made from a rendition on first request (GET /api/videos/{id}/download)."""

    key = CharField(primary_key=True, max_length=400)  # its object key, beside the HLS output
    video = ForeignKeyField(Video, backref="download_files", on_delete="CASCADE", index=True)
    state = CharField(max_length=16, default="making")  # "making" (one request holds it) or "ready"
    started_at = DateTimeField(default=utcnow)
    size = BigIntegerField(default=0)

    class Meta:
        table_name = "download_files"


class Counter(BaseModel):
    """A named event counter (store/counters.py): how many, and when the last one happened."""
    name = CharField(primary_key=True, max_length=100)
    value = BigIntegerField(default=0)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "counters"


class Runner(BaseModel):
    """A remote runner (`streamforge runner`): its name and the hash of its token; it processes videos over HTTP."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    name = CharField(max_length=200)
    token_hash = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)
    done = IntegerField(default=0)
    failed = IntegerField(default=0)

    class Meta:
        table_name = "runners"


class RunnerJob(BaseModel):
    """A piece of work a runner holds now: a video's run, by the run's lease token (the row goes when it ends)."""

    id = CharField(primary_key=True, max_length=80)  # the job id the runner uses: the video's id
    runner = ForeignKeyField(Runner, backref="jobs", on_delete="CASCADE", index=True)
    video = ForeignKeyField(Video, backref="runner_jobs", on_delete="CASCADE", index=True)
    token = CharField(max_length=32)  # the run's lease token, or the chunk's
    kind = CharField(max_length=16, default="run")  # "run" or "chunk"
    started_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "runner_jobs"


class Chunk(BaseModel):
    """One chunk of a chunked run: output frames [start_frame, end_frame), encoded by any worker or runner."""

    id = CharField(primary_key=True, max_length=80)  # "{video id}.{run token}.{index}"
    video = ForeignKeyField(Video, backref="chunks", on_delete="CASCADE", index=True)
    run_token = CharField(max_length=32)  # the run the chunk belongs to
    index = IntegerField()
    count = IntegerField()  # chunks in the run
    start_frame = IntegerField()
    end_frame = IntegerField(null=True)  # None: to the end
    first_segment = IntegerField()
    prefix = CharField(max_length=400)  # where the run writes its output
    state = CharField(max_length=16, default="waiting")  # waiting, running, done
    lease = CharField(max_length=32, null=True)  # the holder's token
    holder = CharField(max_length=200, null=True)  # "worker host:pid" or "runner NAME"
    heartbeat_at = DateTimeField(null=True)
    attempts = IntegerField(default=0)
    result = TextField(null=True)  # JSON: what the chunk wrote (pipeline/chunks.py encode_chunk)
    levels = TextField(null=True)  # JSON [[rung name, level], ...]: the run's per-title levels, every chunk's
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "chunks"


class UserSession(BaseModel):
    """A browser session held on the server (migration 8): the cookie names it, deleting the row ends it."""

    id = CharField(primary_key=True, max_length=64)  # the SHA-256 of the cookie's session id
    user = ForeignKeyField(User, backref="sessions", on_delete="CASCADE", index=True)
    api_token = CharField(max_length=32, null=True, index=True)  # the API token that opened it, if one did
    persistent = BooleanField(default=False)  # "stay signed in"
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    last_seen_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "sessions"


class SignInTicket(BaseModel):
    """A one-use sign-in link (the one `serve` prints): short-lived, never an API token."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    token_hash = CharField(unique=True, max_length=64)
    user = ForeignKeyField(User, backref="tickets", on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)

    class Meta:
        table_name = "sign_in_tickets"


class SignInFailure(BaseModel):
    """One failed password sign-in, by email and by address, for throttling."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    email = CharField(max_length=320, index=True)
    address = CharField(max_length=64, index=True)
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "sign_in_failures"


class Passkey(BaseModel):
    """A WebAuthn credential (passkey) a user registered on /account: a second way to sign in."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    user = ForeignKeyField(User, backref="passkeys", on_delete="CASCADE", index=True)
    credential_id = CharField(unique=True, max_length=1400)  # base64url of the authenticator's credential id
    public_key = TextField()  # base64url of its COSE public key
    sign_count = BigIntegerField(default=0)
    name = CharField(max_length=100, default="")
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)

    class Meta:
        table_name = "passkeys"


class WatchHistory(BaseModel):
    """Where a signed-in viewer stopped in a video (GET /api/me/history); `watched` once near its end."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    user = ForeignKeyField(User, backref="history", on_delete="CASCADE")
    video = ForeignKeyField(Video, backref="history", on_delete="CASCADE")
    position = FloatField(default=0.0)
    duration = FloatField(null=True)
    watched = BooleanField(default=False)
    watched_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "watch_history"
        indexes = ((("user", "video"), True), (("user", "watched_at"), False))


class Playlist(BaseModel):
    """A user's ordered list of videos (/api/playlists, /playlists/{slug})."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    user = ForeignKeyField(User, backref="playlists", on_delete="CASCADE", index=True)
    slug = CharField(unique=True, max_length=64)
    title = CharField(max_length=300)
    description = TextField(null=True)
    visibility = CharField(max_length=16, default=Visibility.PRIVATE)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "playlists"


class PlaylistItem(BaseModel):
    """One video at one place of a playlist (0 first)."""

    id = CharField(primary_key=True, max_length=32, default=new_id)
    playlist = ForeignKeyField(Playlist, backref="items", on_delete="CASCADE")
    video = ForeignKeyField(Video, backref="playlist_items", on_delete="CASCADE", index=True)
    position = IntegerField(default=0)
    added_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "playlist_items"
        indexes = ((("playlist", "video"), True), (("playlist", "position"), False))


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    applied_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "schema_version"


MODELS = (User, ApiToken, Video, Rendition, Thumbnail, ProcessingLog, ViewSession, FrameThumbnail, Invite, Worker,
          Caption, DownloadFile, Counter, UserSession, SignInTicket, SignInFailure, Passkey,
          WatchHistory, Playlist, PlaylistItem)
MODELS += (Runner, RunnerJob, Chunk)  # issue 24: remote runners and chunked runs


def _migration_1(database) -> None:
    """The initial schema."""
    database.create_tables(MODELS, safe=True)


def _migration_2(database) -> None:
    """videos.original_etag: the accepted upload's ETag."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    columns = {c.name for c in database.get_columns("videos")}
    if "original_etag" not in columns:  # a database created at version 2 already has it
        run(migrator.add_column("videos", "original_etag", Video.original_etag))


def _migration_3(database) -> None:
    """Accounts: users gain role, disabled, quota, issuer and last seen; invites and workers tables.

    Today's users keep their rows and email; their identity (issuer, sub) is bound at their next
    OIDC sign-in."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    columns = {c.name for c in database.get_columns("users")}
    for name in ("oidc_issuer", "role", "disabled", "max_bytes", "max_videos", "last_seen_at"):
        if name not in columns:
            run(migrator.add_column("users", name, User._meta.fields[name]))
    if not any(set(i.columns) == {"oidc_issuer", "oidc_sub"} for i in database.get_indexes("users")):
        run(migrator.add_index("users", ("oidc_issuer", "oidc_sub"), True))
    database.create_tables([Invite, Worker], safe=True)


def _migration_4(database) -> None:
    """Captions, downloads, audio: the captions and download_files tables, videos.kind."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    database.create_tables([Caption, DownloadFile], safe=True)
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    if "kind" not in {c.name for c in database.get_columns("videos")}:
        run(migrator.add_column("videos", "kind", Video.kind))


def _migration_5(database) -> None:
    """Sharing: videos.views and watch_seconds, the view_sessions and frame_thumbnails tables, and the
    full-text index of titles, descriptions and tags (FTS5 on SQLite, a tsvector with GIN on PostgreSQL)."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run

    from streamforge.store import search
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    columns = {c.name for c in database.get_columns("videos")}
    for name in ("views", "watch_seconds"):
        if name not in columns:
            run(migrator.add_column("videos", name, Video._meta.fields[name]))
    database.create_tables([ViewSession, FrameThumbnail], safe=True)
    search.install(database)


def _migration_6(database) -> None:
    """videos.original_sha256 and its index: `streamforge import` finds content already uploaded."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    if "original_sha256" not in {c.name for c in database.get_columns("videos")}:
        run(migrator.add_column("videos", "original_sha256", Video.original_sha256))
    if not any(i.columns == ["original_sha256"] for i in database.get_indexes("videos")):
        run(migrator.add_index("videos", ("original_sha256",), False))


def _migration_7(database) -> None:
    """Reserved for issue 15/16: spare (a no-op until that change lands)."""


def _slot_not_landed(database) -> None:
    """A number the third round reserved for a change that needed no schema change: a no-op."""


def _migration_8(database) -> None:
    """Sign-in: users.password_hash, and the sessions, sign_in_tickets, sign_in_failures and passkeys tables.

    The API tokens earlier `serve` starts minted as their sign-in links (permanent admin tokens, one per
    start) are revoked: the link is a one-use ticket now."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    if "password_hash" not in {c.name for c in database.get_columns("users")}:
        run(migrator.add_column("users", "password_hash", User.password_hash))
    database.create_tables([UserSession, SignInTicket, SignInFailure, Passkey], safe=True)
    (ApiToken.update(revoked_at=utcnow())
     .where((ApiToken.name == "serve sign-in link") & ApiToken.revoked_at.is_null()).execute())


def _migration_10(database) -> None:
    """The counters table: notifications the webhook could not act on, uploads the sweeper recovered."""
    database.create_tables([Counter], safe=True)


def _migration_16(database) -> None:
    """Several audio tracks: the list a run published."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    if "audio_tracks" not in {c.name for c in database.get_columns("videos")}:
        run(migrator.add_column("videos", "audio_tracks", Video.audio_tracks))


def _migration_17(database) -> None:
    """Per-title levels in chunked runs: chunks.levels, chosen once by the run, the same in every chunk."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    if "levels" not in {c.name for c in database.get_columns("chunks")}:
        run(migrator.add_column("chunks", "levels", Chunk.levels))


def _migration_14(database) -> None:
    """Issue 24: runners (remote runners and their tokens), runner_jobs (the work each holds), chunks."""
    database.create_tables([Runner, RunnerJob, Chunk], safe=True)


def _migration_12(database) -> None:
    """Speech and chapters: videos.transcript (in the full-text index) and videos.container_chapters."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run

    from streamforge.store import search
    migrator = (SqliteMigrator if isinstance(database, SqliteDatabase) else PostgresqlMigrator)(database)
    columns = {c.name for c in database.get_columns("videos")}
    for name in ("transcript", "container_chapters"):
        if name not in columns:
            run(migrator.add_column("videos", name, Video._meta.fields[name]))
    if not search.indexes_transcript(database):
        search.rebuild(database)


def _migration_13(database) -> None:
    """Watching: the watch_history, playlists and playlist_items tables."""
    database.create_tables([WatchHistory, Playlist, PlaylistItem], safe=True)


# Each later schema change appends a function here (using playhouse.migrate); never edit old ones.
# A new table's model goes in MODELS too (a fresh database creates it at migration 1), so each
# migration must be safe to run on a schema that already has its change (create_tables(safe=True),
# add_column only when the column is missing), like _migration_2.
MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5, _migration_6, _migration_7,
              _migration_8, _slot_not_landed, _migration_10, _slot_not_landed, _migration_12,
              _migration_13, _migration_14, _slot_not_landed, _migration_16, _migration_17]
SCHEMA_VERSION = len(MIGRATIONS)


def write_transaction(database=db):
    """A transaction that takes SQLite's write lock at BEGIN (IMMEDIATE).

    A deferred transaction that reads first and writes later fails at once with "database is
    locked" when another connection committed in between (WAL snapshot conflict; busy_timeout does
    not apply); taking the lock first makes it wait its turn instead."""
    target = database.obj if isinstance(database, DatabaseProxy) else database
    if isinstance(target, SqliteDatabase):
        return target.atomic("IMMEDIATE")
    return database.atomic()


def private_file(path: Path) -> None:
    """Make sure `path` exists and only its owner may read or write it (0600): a SQLite database holds
    password hashes and sessions. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if extra.exists() and extra.stat().st_mode & 0o077:
            extra.chmod(0o600)


def make_database(url: str, pooled: bool = False):
    """A peewee database for a `sqlite:///path` or `postgresql://...` URL.

    `pooled` (the web app): `close()` hands the connection back to a pool instead of closing it, so
    a request does not pay for a new connection (a PostgreSQL backend fork and login; SQLite's
    pragmas, schema load and, on the last close, a WAL checkpoint with an fsync). Only for code
    whose every thread closes what it opened: a pooled connection is never reclaimed from a thread
    that ends without closing it."""
    parts = urlsplit(url)
    pool = {"max_connections": 64, "stale_timeout": 300, "timeout": 10} if pooled else {}
    if parts.scheme == "sqlite":
        path = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else parts.path
        if path != ":memory:":
            private_file(Path(path))
        # WAL lets the web app read while the worker writes; busy_timeout turns lock contention
        # into a short wait instead of a "database is locked" error reaching a user.
        pragmas = {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": "normal"}
        if pooled and path != ":memory:":
            # a pooled connection moves between request threads
            return PooledSqliteDatabase(path, pragmas=pragmas, check_same_thread=False, **pool)
        return SqliteDatabase(path, pragmas=pragmas, timeout=30)
    if parts.scheme in ("postgresql", "postgres"):
        cls = PooledPostgresqlDatabase if pooled else PostgresqlDatabase
        return cls(
            unquote(parts.path.lstrip("/")) or "postgres", user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None, host=parts.hostname or None,
            port=parts.port or 5432, connect_timeout=5, **pool)
    raise ConfigError(f"[database] url: unsupported scheme {parts.scheme!r}")


def migrate(database=db) -> int:
    """Create or upgrade the schema to SCHEMA_VERSION; returns the version now in place."""
    with database.atomic():
        database.create_tables([SchemaVersion], safe=True)
        current = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
        have = current.version if current else 0
        for number, step in enumerate(MIGRATIONS[have:], start=have + 1):
            step(database)
            SchemaVersion.create(version=number)
    return SCHEMA_VERSION


def init_db(url: str, create: bool = True, pooled: bool = False):
    """Point the models at the database named by `url` and migrate it; returns the database."""
    database = make_database(url, pooled=pooled)
    db.initialize(database)
    if create:
        for attempt in range(5):
            try:
                migrate(database)
                break
            except Exception as e:  # two processes creating the schema at once: the loser retries
                if attempt == 4 or "exist" not in str(e).lower() and "lock" not in str(e).lower():
                    raise
                time.sleep(0.2 * (attempt + 1))
        if not database.is_closed():
            database.close()
    return database

