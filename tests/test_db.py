"""The data model on SQLite and on PostgreSQL: every seed field, constraints, cascades, migrations."""
import datetime
import json

import pytest
from conftest import fresh_database_url
from peewee import IntegrityError

from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store.db import (
    ApiToken,
    ProcessingLog,
    Rendition,
    SchemaVersion,
    Thumbnail,
    User,
    Video,
    init_db,
)

SEED_FIELDS = {
    User: {"id", "email", "name", "created_at", "updated_at"},
    Video: {"id", "title", "slug", "user", "original_url", "original_file_name", "original_file_size",
            "original_duration", "status", "ecs_task_arn", "error_message", "master_playlist_url", "s3_bucket",
            "s3_processed_path", "total_s3_files", "description", "tags", "thumbnail", "uploaded_at",
            "processed_at", "created_at", "updated_at", "upload_status", "visibility", "playable_at"},
    Rendition: {"id", "video", "name", "width", "height", "bitrate", "bandwidth", "playlist_url", "playlist_name",
                "segment_count", "segment_size", "codec", "s3_key", "created_at", "updated_at"},
    Thumbnail: {"id", "video", "url", "s3_key", "timestamp", "width", "height", "type", "created_at"},
    ProcessingLog: {"id", "video_id", "stage", "status", "message", "duration", "error_code", "error_details",
                    "created_at"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    with fresh_database_url(request.param, tmp_path) as url:
        yield init_db(url)


def make_video(user, **kw):
    return videos.create_video(user, title=kw.pop("title", "Hello World!"), filename="a.mp4", size=10,
                               content_type="video/mp4", bucket="b", description=None, tags=["x", "y"],
                               visibility="private", expires_at=datetime.datetime(2030, 1, 1), **kw)


def test_every_seed_field_exists():
    for model, fields in SEED_FIELDS.items():
        assert fields <= set(model._meta.fields), (model.__name__, fields - set(model._meta.fields))
    assert Video.slug.unique and User.email.unique
    assert ((("video", "name"), True) in Rendition._meta.indexes)


def test_model_round_trip_constraints_and_cascade(database):
    with database.connection_context():
        user = videos.get_or_create_user("Someone@Example.com")
        assert videos.get_or_create_user("someone@example.com").id == user.id
        v = make_video(user)
        assert v.slug.startswith("hello-world-") and isinstance(v.id, str)
        got = Video.get_by_id(v.id)
        assert got.tags == ["x", "y"] and got.upload_status == "UPLOADING" and got.status == "PENDING"
        Rendition.create(video=v, name="720p", width=1280, height=720, bitrate="2800k", bandwidth=3000000,
                         playlist_url="u", playlist_name="720p/index.m3u8", codec="h264", s3_key="k")
        with pytest.raises(IntegrityError), database.atomic():
            Rendition.create(video=v, name="720p", width=1, height=1, bitrate="1k", bandwidth=1,
                             playlist_url="u", playlist_name="p", codec="h264", s3_key="k")
        with pytest.raises(IntegrityError), database.atomic():
            Video.create(title="t", slug=v.slug, user=user, original_file_name="a", s3_bucket="b")
        Thumbnail.create(video=v, url="u", s3_key="k", timestamp=1.0, type="COVER")
        ApiToken.create(user=user, token_hash="h" * 64)
        user.delete_instance()  # cascades to videos, renditions, thumbnails, tokens
        assert Video.select().count() == Rendition.select().count() == Thumbnail.select().count() == 0
        assert ApiToken.select().count() == 0


def test_guarded_transitions_happen_once(database):
    with database.connection_context():
        v = make_video(videos.get_or_create_user("a@b.c"))
        assert videos.claim_run(v.id) is None  # not uploaded yet
        state = videos.get_upload_state(v.id)
        assert (state.id, state.original_key, state.upload_status, state.status) == (
            v.id, v.original_key, "UPLOADING", "PENDING")
        assert videos.get_upload_state("nosuchvideo") is None
        before = dbmod.utcnow() - datetime.timedelta(seconds=1)
        assert videos.mark_uploaded(v.id, 10, "etag1", task_id="task-1") is True
        assert videos.mark_uploaded(v.id, 10, "etag2", task_id="task-2") is False
        row = Video.get_by_id(v.id)  # what the hand-written UPDATE stored reads back through the model
        assert (row.upload_status, row.original_file_size, row.original_etag, row.ecs_task_arn) == (
            "UPLOADED", 10, "etag1", "task-1")
        assert isinstance(row.uploaded_at, datetime.datetime) and row.uploaded_at >= before
        assert row.queued_at == row.uploaded_at and row.upload_id is None
        assert videos.get_upload_state(v.id).upload_status == "UPLOADED"
        first = videos.claim_run(v.id)
        assert first is not None and videos.claim_run(v.id) is None
        _, token = first
        assert videos.heartbeat(v.id, token, 0.5) and not videos.heartbeat(v.id, "other", 0.5)
        assert videos.finish_run(v.id, "other", master_url="m", processed_path="p", total_files=1, duration=1.0,
                                 cover_url=None, renditions=[], thumbnails=[]) is False
        assert videos.finish_run(v.id, token, master_url="m", processed_path="p", total_files=1, duration=1.0,
                                 cover_url=None, renditions=[], thumbnails=[]) is True
        done = Video.get_by_id(v.id)
        assert done.status == "COMPLETED" and done.processed_at and done.playable_at and done.progress == 1.0
        assert videos.request_reprocess(done) and not videos.request_reprocess(done)


def test_migrations_are_recorded_and_idempotent(database):
    with database.connection_context():
        assert dbmod.migrate(database) == dbmod.SCHEMA_VERSION
        assert dbmod.migrate(database) == dbmod.SCHEMA_VERSION
        assert [r.version for r in SchemaVersion.select()] == list(range(1, dbmod.SCHEMA_VERSION + 1))


def test_sqlite_uses_wal(tmp_path):
    database = init_db(f"sqlite:///{tmp_path / 'w.db'}")
    with database.connection_context():
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_database_is_migrated_forward(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = init_db(url)
    with database.connection_context():
        # make it look like a database created before migration 2 (no original_etag column)
        database.execute_sql("ALTER TABLE videos DROP COLUMN original_etag")
        SchemaVersion.delete().where(SchemaVersion.version > 1).execute()
        user = videos.get_or_create_user("old@example.com")
        database.execute_sql("INSERT INTO videos (id, title, slug, user_id, original_url, original_file_name, "
                             "original_file_size, original_duration, status, s3_bucket, s3_processed_path, "
                             "total_s3_files, tags, uploaded_at, created_at, updated_at, upload_status, visibility, "
                             "original_key, declared_size, content_type, progress, attempts) VALUES ('cold1', 't', "
                             "'s', ?, '', 'a.mp4', 1, 0, 'PENDING', 'b', 'p', 0, '[]', '2026-01-01', '2026-01-01', "
                             "'2026-01-01', 'UPLOADING', 'private', 'k', 1, 'video/mp4', 0, 0)", (user.id,))
    database = init_db(url)
    with database.connection_context():
        assert "original_etag" in {c.name for c in database.get_columns("videos")}
        assert max(r.version for r in SchemaVersion.select()) == dbmod.SCHEMA_VERSION
        assert Video.get_by_id("cold1").title == "t"  # the data survived


def test_migration_17_gives_chunks_their_levels(database):
    """A database from before per-title levels in chunked runs (version 16) gets chunks.levels, rows kept."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run

    from streamforge.store import chunks
    with database.connection_context():
        migrator = (SqliteMigrator if isinstance(database, dbmod.SqliteDatabase) else PostgresqlMigrator)(database)
        run(migrator.drop_column("chunks", "levels"))
        SchemaVersion.delete().where(SchemaVersion.version > 16).execute()
        assert "levels" not in {c.name for c in database.get_columns("chunks")}
        assert dbmod.migrate(database) == dbmod.SCHEMA_VERSION == 17
        assert "levels" in {c.name for c in database.get_columns("chunks")}
        user = videos.get_or_create_user("levels@example.com")
        v = videos.create_video(user, title="c", filename="c.mp4", size=10, content_type="video/mp4", bucket="b",
                                description=None, tags=[], visibility="private",
                                expires_at=datetime.datetime(2030, 1, 1))
        (cid,) = chunks.create(v.id, "run1", f"processed/{v.id}", [{"index": 0, "start": 0, "end": None,
                                                                    "first_segment": 0}], [["720p", 21.5]])
        assert json.loads(chunks.get(cid).levels) == [["720p", 21.5]]
