"""The public search on both databases: a real full-text index (FTS5 on SQLite, tsvector + GIN on
PostgreSQL) kept in step with edits, whole-word matches ranked first, tags, pagination, and the
index filled for videos that existed before migration 5."""
from __future__ import annotations

import datetime

import pytest
from conftest import fresh_database_url

from streamforge.store import db as dbmod
from streamforge.store import search, videos
from streamforge.store.db import SchemaVersion, Video, init_db


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    with fresh_database_url(request.param, tmp_path, "search") as url:
        yield init_db(url), url


def make(user, title, description="", tags=(), visibility="public", status="COMPLETED", age=0):
    v = videos.create_video(user, title=title, filename="a.mp4", size=1, content_type="video/mp4", bucket="b",
                            description=description, tags=list(tags), visibility=visibility,
                            expires_at=datetime.datetime(2030, 1, 1))
    created = datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=age)
    Video.update(status=status, created_at=created).where(Video.id == v.id).execute()
    return Video.get_by_id(v.id)


def titles(q=None, tag=None, page=1, per_page=20):
    rows, more = search.public_videos(q, tag, page, per_page)
    return [r.title for r in rows], more


def test_search_finds_words_ranks_whole_words_first_and_keeps_private_out(database):
    with dbmod.db.connection_context():
        u = videos.get_or_create_user("s@example.com")
        make(u, "Lakeside picnic", "sandwiches", ["food"], age=5)
        make(u, "Sunset over Lake Bled", "Evening light on the water", ["travel", "Slovenia"], age=1)
        make(u, "Harbour at dawn", "Trawlers leave before sunrise", ["boats", "new york"], age=3)
        make(u, "Private lake house", "family", ["travel"], visibility="private", age=4)
        make(u, "Unlisted lake", "", ["travel"], visibility="unlisted", age=6)
        make(u, "Lake still processing", "", [], status="PROCESSING", age=7)
        make(u, "Crème brûlée at the lake", "dessert", [], age=2)
        assert titles() == (["Lakeside picnic", "Harbour at dawn", "Crème brûlée at the lake",
                             "Sunset over Lake Bled"], False)
        # whole-word "lake" first (newest first among equals when the rank ties), then "Lakeside"
        got, _ = titles("lake")
        assert got[-1] == "Lakeside picnic" and set(got[:2]) == {"Sunset over Lake Bled", "Crème brûlée at the lake"}
        assert titles("LAKE")[0] == got
        assert sorted(titles("lak")[0]) == sorted(got)  # a prefix finds all three
        assert titles("Brûlée")[0] == ["Crème brûlée at the lake"]
        assert titles("trawlers")[0] == ["Harbour at dawn"]        # description
        assert titles("slovenia")[0] == ["Sunset over Lake Bled"]  # a tag's words
        assert titles("lake bled")[0] == ["Sunset over Lake Bled"]  # every word must match
        assert titles("lake harbour")[0] == []
        assert titles('"; DROP TABLE videos; --')[0] == []          # words only, never syntax
        assert titles(None, "travel")[0] == ["Sunset over Lake Bled"]
        assert titles(None, "TRAVEL")[0] == ["Sunset over Lake Bled"]
        assert titles(None, "new york")[0] == ["Harbour at dawn"]
        assert titles(None, "york")[0] == []                        # a tag is matched whole
        assert titles(None, "trav")[0] == []
        assert titles("sunset", "travel")[0] == ["Sunset over Lake Bled"]
        assert titles("harbour", "travel")[0] == []
        assert titles(page=1, per_page=3) == (["Lakeside picnic", "Harbour at dawn", "Crème brûlée at the lake"], True)
        assert titles(page=2, per_page=3) == (["Sunset over Lake Bled"], False)


def test_the_index_follows_edits_and_deletes(database):
    with dbmod.db.connection_context():
        u = videos.get_or_create_user("e@example.com")
        v = make(u, "Old name", "plain", ["one"])
        assert titles("old")[0] == ["Old name"]
        videos.update_video(v, title="Glacier walk", tags=["ice"], description="crampons")
        assert titles("old")[0] == [] and titles("glacier")[0] == ["Glacier walk"]
        assert titles(None, "ice")[0] == ["Glacier walk"] and titles("crampons")[0] == ["Glacier walk"]
        Video.update(visibility="private").where(Video.id == v.id).execute()
        assert titles("glacier")[0] == []
        Video.update(visibility="public").where(Video.id == v.id).execute()
        Video.delete().where(Video.id == v.id).execute()
        assert titles("glacier")[0] == []


def test_search_uses_the_index(database):
    db, url = database
    with dbmod.db.connection_context():
        if url.startswith("sqlite"):
            plan = db.execute_sql("EXPLAIN QUERY PLAN SELECT video_id FROM video_search WHERE video_search MATCH ?",
                                  ('"lake"*',)).fetchall()
            assert any("VIRTUAL TABLE INDEX" in str(row) for row in plan), plan
            return
        db.execute_sql("SET enable_seqscan = off")  # a tiny table: make the planner show the index it has
        plan = db.execute_sql("EXPLAIN SELECT id FROM videos WHERE search_vector @@ to_tsquery('simple', 'lake:*')"
                              ).fetchall()
        assert "videos_search_vector" in str(plan), plan


def test_migration_5_indexes_videos_that_existed_before(database):
    db, url = database
    with dbmod.db.connection_context():
        u = videos.get_or_create_user("m@example.com")
        make(u, "Before the index", "", ["old"])
        # back to a schema at version 4, without the search index
        if url.startswith("sqlite"):
            for trigger in ("insert", "update", "delete"):
                db.execute_sql(f"DROP TRIGGER video_search_{trigger}")
            db.execute_sql("DROP TABLE video_search")
        else:
            db.execute_sql("ALTER TABLE videos DROP COLUMN search_vector")
        SchemaVersion.delete().where(SchemaVersion.version >= 5).execute()
    db.close()
    init_db(url)
    with dbmod.db.connection_context():
        assert titles("before")[0] == ["Before the index"] and titles(None, "old")[0] == ["Before the index"]
        make(u, "After the index", "", [])
        assert titles("index")[0] == ["After the index", "Before the index"]


def test_terms_are_words_only():
    assert search.terms('Lake  "Bled"* OR x:y -z') == ["lake", "bled", "or", "x", "y", "z"]
    assert search.terms("") == [] and search.terms(None) == []
    assert len(search.terms(" ".join(f"w{i}" for i in range(50)))) == search.MAX_TERMS
