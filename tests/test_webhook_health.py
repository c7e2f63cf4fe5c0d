"""The webhook never jams a store's queue, and the operator hears when notifications stop.

MinIO with a queue dir replays events in order and retries a failing one every 3 s forever: an
authenticated notification we cannot act on must still be answered 2xx (logged, counted, left to the
sweeper). When the sweeper is the one finding finished uploads, `streamforge doctor` and /admin say so.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import requests
from test_webhook import hook, minio_event, seaweed_event

from streamforge.jobs import intake
from streamforge.store import counters, users, videos
from streamforge.store import db as dbmod
from streamforge.web import hooks

ROOT = Path(__file__).resolve().parents[1]


def upload(client, headers, data=b"0123456789") -> dict:
    """A video whose bytes are in the store and whose notification has not come."""
    r = client.post("/api/videos", json={"title": "t", "filename": "a clip.mp4", "size": len(data),
                                         "content_type": "video/mp4"}, headers=headers).get_json()
    requests.put(r["upload"]["url"], data=data, headers=r["upload"]["headers"], timeout=30).raise_for_status()
    return r["video"]


def not_acted_on() -> dict[str, int]:
    with dbmod.db.connection_context():
        return counters.webhook_unprocessable()


def status(client, h, vid) -> str:
    return client.get(f"/api/videos/{vid}", headers=h).get_json()["upload_status"]


def test_notifications_it_cannot_act_on_answer_200_and_are_counted(client, config):
    tok, bucket = config.webhook.token, config.storage.bucket
    no_key = minio_event(bucket, "originals/abcdefgh12/x.mp4", 3)
    del no_key["Records"][0]["s3"]["object"]["key"]
    not_a_list = {**minio_event(bucket, "originals/abcdefgh12/x.mp4", 3), "Records": "x"}
    bad_record = {**minio_event(bucket, "originals/abcdefgh12/x.mp4", 3), "Records": [1]}
    filer_no_key = {"event_type": "create", "message": {"new_entry": {"name": "x"}}}
    for body in (no_key, not_a_list, bad_record, filer_no_key):
        r = hook(client, body, tok)
        assert r.status_code == 200 and r.get_json()["outcomes"] == {"malformed": 1}, (body, r.get_json())
    unknown = minio_event(bucket, "originals/zzzzzzzz0000/my clip.mp4", 10)
    r = hook(client, unknown, tok)
    assert r.status_code == 200 and r.get_json()["outcomes"] == {"unknown_key": 1}
    r = hook(client, seaweed_event(bucket, "originals/zzzzzzzz0000/my clip.mp4", 10), tok)
    assert r.status_code == 200 and r.get_json()["outcomes"] == {"unknown_key": 1}
    assert not_acted_on() == {"malformed": 4, "unknown_key": 2, "failed": 0}
    # S3's test event when a configuration is set: nothing to do, nothing wrong
    r = hook(client, {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}, tok)
    assert r.status_code == 200 and r.get_json()["events"] == 0
    # unauthenticated stays 401, a body that is no notification at all stays 400: neither is counted
    assert hook(client, no_key, "wrong-token").status_code == 401
    assert hook(client, unknown, "").status_code == 401
    assert hook(client, b"not json at all", tok).status_code == 400
    assert not_acted_on() == {"malformed": 4, "unknown_key": 2, "failed": 0}


def test_a_bug_inside_answers_200_and_the_sweeper_takes_the_upload(client, config, auth, seaweed, monkeypatch):
    h = auth()
    video = upload(client, h)
    ok = upload(client, h)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr(hooks, "intake", types.SimpleNamespace(accept_upload=broken))
    body = minio_event(config.storage.bucket, video["original"]["key"], 10)
    r = hook(client, body, config.webhook.token)
    assert r.status_code == 200 and r.get_json()["outcomes"] == {"failed": 1}
    assert not_acted_on()["failed"] == 1
    # a bug outside the per-event loop too (reading the body) is answered 200 and counted
    monkeypatch.setattr(hooks, "parse_notification", broken)
    assert hook(client, body, config.webhook.token).status_code == 200
    assert not_acted_on()["failed"] == 2
    monkeypatch.undo()
    assert status(client, h, video["id"]) == "UPLOADING"
    # the next notification (another upload) goes through; the sweeper finishes the first one
    r = hook(client, minio_event(config.storage.bucket, ok["original"]["key"], 10), config.webhook.token)
    assert r.status_code == 202 and status(client, h, ok["id"]) == "UPLOADED"
    with dbmod.db.connection_context():
        assert intake.sweep(config, seaweed.store)["recovered_uploads"] == 1
    assert status(client, h, video["id"]) == "UPLOADED"


def doctor(config) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env.update({"STREAMFORGE_STORAGE_ENDPOINT": config.storage.endpoint,
                "STREAMFORGE_STORAGE_ACCESS_KEY": config.storage.access_key,
                "STREAMFORGE_STORAGE_SECRET_KEY": config.storage.secret_key,
                "STREAMFORGE_STORAGE_BUCKET": config.storage.bucket,
                "STREAMFORGE_WEBHOOK_TOKEN": config.webhook.token,
                "STREAMFORGE_SERVER_SECRET_KEY": config.server.secret_key})
    return subprocess.run([sys.executable, "-m", "streamforge", "doctor", "--data-dir", str(config.data_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_doctor_and_admin_warn_when_the_sweeper_does_the_webhooks_job(client, config, auth, seaweed, monkeypatch):
    # this process wrote other tests' notification counts less than a second ago (into their databases)
    monkeypatch.setitem(counters._notified, "pending", 0)
    monkeypatch.setitem(counters._notified, "written", float("-inf"))
    with dbmod.db.connection_context():
        _, admin = videos.create_token(users.add_user("admin-hooks@example.com", users.ADMIN), "main")
    ah = {"Authorization": f"Bearer {admin}"}
    h = auth()
    first = upload(client, h)
    assert hook(client, minio_event(config.storage.bucket, first["original"]["key"], 10),
                config.webhook.token).status_code == 202
    out = doctor(config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok   notifications: 1 received" in out.stdout
    # notifications stop (a token changed on one side, a jammed queue): the sweeper finds two uploads
    for _ in range(2):
        upload(client, h)
        with dbmod.db.connection_context():
            assert intake.sweep(config, seaweed.store)["recovered_uploads"] == 1
    out = doctor(config)
    assert out.returncode == 0, out.stdout + out.stderr  # a warning, not a failure (the worker's healthcheck)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WARN notifications:"))
    for cause in ("token", "jammed", "mc event add", "put-bucket-notification-configuration"):
        assert cause in line, (cause, line)
    stats = client.get("/api/admin/stats", headers=ah).get_json()["notifications"]
    assert stats["recovered_by_sweeper"] == 2 and "mc event add" in stats["warning"]
    page = client.get("/admin", headers=ah)
    assert page.status_code == 200 and 'id="notifications-warning"' in page.get_data(as_text=True)
    # one notification arrives again: the warning goes away
    late = upload(client, h)
    assert hook(client, seaweed_event(config.storage.bucket, late["original"]["key"], 10),
                config.webhook.token).status_code == 202
    assert client.get("/api/admin/stats", headers=ah).get_json()["notifications"]["warning"] is None
    assert 'id="notifications-warning"' not in client.get("/admin", headers=ah).get_data(as_text=True)
    assert "WARN notifications" not in doctor(config).stdout


def test_counters_survive_on_postgresql_too(tmp_path):
    from conftest import fresh_database_url
    with fresh_database_url("postgresql", tmp_path, "counters") as url:
        dbmod.init_db(url)
        with dbmod.db.connection_context():
            counters.note_recovered_upload()
            counters.note_recovered_upload()
            counters.note_unprocessable("malformed")
            before = counters.notification_health()
            counters.note_upload_notification()
            after = counters.notification_health()
    assert before.recovered_since_notification == 2 and intake.notification_warning(before)
    assert after.recovered_since_notification == 0 and intake.notification_warning(after) is None
    assert after.recovered_uploads == 2 and after.unprocessable["malformed"] == 1
