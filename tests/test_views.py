"""View counting in the store, on SQLite and PostgreSQL: a view once per session (also when a session's
reports race), watch time summed and held to the wall clock, the per-address and per-session caps."""
from __future__ import annotations

import datetime
import threading

import pytest
from conftest import fresh_database_url

from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store import views as viewstore
from streamforge.store.db import Video, ViewSession, init_db


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    with fresh_database_url(request.param, tmp_path, "views") as url:
        yield init_db(url)


@pytest.fixture
def vid(database):
    with dbmod.db.connection_context():
        user = videos.get_or_create_user("v@example.com")
        return videos.create_video(user, title="t", filename="a.mp4", size=1, content_type="video/mp4", bucket="b",
                                   description=None, tags=[], visibility="public",
                                   expires_at=datetime.datetime(2030, 1, 1)).id


def counts(video_id):
    with dbmod.db.connection_context():
        v = Video.get_by_id(video_id)
        return v.views, round(v.watch_seconds, 3)


def record(video_id, session, seconds, ip="ip-a"):
    with dbmod.db.connection_context():
        return viewstore.record_view(video_id, session, seconds, ip)


def test_a_view_once_per_session_and_watch_time_summed(vid):
    assert record(vid, "session-one", 5) == viewstore.COUNTED
    assert record(vid, "session-one", 4) == viewstore.ADDED
    assert record(vid, "session-two", 3) == viewstore.COUNTED
    assert counts(vid) == (2, 12)
    assert record(vid, "session-two", 0) == viewstore.ADDED  # a report with nothing played changes nothing
    assert counts(vid) == (2, 12)


def test_watch_time_never_runs_ahead_of_the_clock(vid):
    assert record(vid, "greedy-session", 100000) == viewstore.COUNTED
    assert counts(vid)[1] == viewstore.FIRST_REPORT_ALLOWANCE
    assert record(vid, "greedy-session", 100000) == viewstore.ADDED
    assert counts(vid)[1] < viewstore.FIRST_REPORT_ALLOWANCE + 5
    # an hour later the session may have played an hour more
    with dbmod.db.connection_context():
        ViewSession.update(created_at=dbmod.utcnow() - datetime.timedelta(hours=1)).execute()
    record(vid, "greedy-session", 3000)
    assert viewstore.FIRST_REPORT_ALLOWANCE + 3000 <= counts(vid)[1] < viewstore.FIRST_REPORT_ALLOWANCE + 3005


def test_caps_per_address_and_per_session(vid, monkeypatch):
    monkeypatch.setattr(viewstore, "MAX_SESSIONS_PER_IP_HOUR", 2)
    monkeypatch.setattr(viewstore, "MAX_REPORTS", 2)
    assert record(vid, "session-aaa1", 1) == viewstore.COUNTED
    assert record(vid, "session-aaa2", 1) == viewstore.COUNTED
    assert record(vid, "session-aaa3", 1) == viewstore.LIMITED
    assert record(vid, "session-bbb1", 1, ip="ip-b") == viewstore.COUNTED  # another address is not held back
    assert counts(vid)[0] == 3
    assert record(vid, "session-aaa1", 1) == viewstore.ADDED
    assert record(vid, "session-aaa1", 1) == viewstore.LIMITED
    # the hour passes: the address may start sessions again
    with dbmod.db.connection_context():
        ViewSession.update(created_at=dbmod.utcnow() - datetime.timedelta(hours=2)).execute()
    assert record(vid, "session-aaa3", 1) == viewstore.COUNTED


def test_racing_reports_of_one_session_count_one_view(vid):
    results, errors = [], []

    def send():
        try:
            results.append(record(vid, "racing-session", 2))
        except Exception as e:  # noqa: BLE001 - the test reports whatever a racer hit
            errors.append(e)
    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results.count(viewstore.COUNTED) == 1 and results.count(viewstore.ADDED) == 5
    assert counts(vid) == (1, 12)


def test_addresses_are_stored_keyed():
    h = viewstore.ip_hash("secret", "203.0.113.9")
    assert len(h) == 32 and "203" not in h and h != viewstore.ip_hash("other", "203.0.113.9")
