"""`POST /hooks/storage`: both payload formats, auth, noise, replays, and a real store's own webhook."""
import json
import time
from urllib.parse import quote_plus

import pytest
import requests
from conftest import LiveServer, queued_video_ids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamforge.web.hooks import NotANotification, parse_notification


def hook(client, body, token, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/hooks/storage", data=data, content_type="application/json",
                       headers={"Authorization": f"Bearer {token}"}, **kw)


def minio_event(bucket, key, size, name="s3:ObjectCreated:Put"):
    """A MinIO webhook body as MinIO sends it (key URL-encoded with '+' for spaces)."""
    enc = quote_plus(key, safe="/")
    return {"EventName": name, "Key": f"{bucket}/{enc}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-11-25T10:00:00.000Z",
        "eventName": name, "userIdentity": {"principalId": "minio"},
        "requestParameters": {"principalId": "minio", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "17B", "x-minio-origin-endpoint": "http://minio:9000"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minio"}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": enc, "size": size, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                          "contentType": "video/mp4", "userMetadata": {"content-type": "video/mp4"},
                          "sequencer": "17B2C3D4E5F6"}},
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}}]}


def seaweed_event(bucket, key, size, is_dir=False):
    folder, name = key.rsplit("/", 1) if "/" in key else ("", key)
    return {"event_type": "create", "key": f"/buckets/{bucket}/{key}",
            "message": {"new_entry": {"name": name, "is_directory": is_dir,
                                      "attributes": {"file_size": size, "mime": "video/mp4"}},
                        "new_parent_path": f"/buckets/{bucket}/{folder}", "signatures": [1]}}


@pytest.fixture
def uploaded(client, auth, seaweed, config):
    """A video created through the API whose bytes are in the store (no notification yet)."""
    def make(filename="clip.mp4", data=b"0123456789"):
        h = auth()
        r = client.post("/api/videos", json={"title": "t", "filename": filename, "size": len(data),
                                             "content_type": "video/mp4"}, headers=h)
        video = r.get_json()["video"]
        up = r.get_json()["upload"]
        requests.put(up["url"], headers=up["headers"], data=data, timeout=30).raise_for_status()
        return video, h
    return make


def test_parse_minio_key_is_url_decoded():
    events = parse_notification(json.dumps(minio_event("b", "originals/abc/my clip ü+1.mp4", 3)).encode())
    assert [(e.bucket, e.key, e.created) for e in events] == [("b", "originals/abc/my clip ü+1.mp4", True)]


def test_parse_aws_style_event_name_and_removal():
    body = minio_event("b", "originals/abc/x.mp4", 3, name="ObjectCreated:CompleteMultipartUpload")
    assert parse_notification(json.dumps(body).encode())[0].created
    body = minio_event("b", "originals/abc/x.mp4", 3, name="s3:ObjectRemoved:Delete")
    assert not parse_notification(json.dumps(body).encode())[0].created


DEEP = [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"42", b'{"foo": 1}', b'{"Records": {}}',
                                  b'{"Records": [1]}', b'{"Records": [{"s3": {}}]}', b'{"event_type": "create"}',
                                  b"[" * 5000 + b"]" * 5000, json.dumps({"Records": [], "x": DEEP}).encode()])
def test_parse_rejects_non_notifications(body):
    with pytest.raises(NotANotification):
        parse_notification(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(
                        st.sampled_from(["Records", "s3", "bucket", "object", "key", "name", "eventName",
                                         "event_type", "message", "new_entry", "is_directory", "size"])
                        | st.text(max_size=5), children, max_size=5), max_leaves=30))
def test_fuzzed_bodies_never_crash_the_parser(value):
    try:
        parse_notification(json.dumps(value).encode())
    except NotANotification:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_requests_never_get_a_5xx(client, config, body):
    r = client.post("/hooks/storage", data=body, content_type="application/json",
                    headers={"Authorization": f"Bearer {config.webhook.token}"})
    assert r.status_code in (200, 202, 400)


def test_auth_and_garbage(client, config):
    assert hook(client, {"Records": []}, "wrong").status_code == 401
    assert client.post("/hooks/storage", json={"Records": []}).status_code == 401
    assert hook(client, b"not json at all", config.webhook.token).status_code == 400
    assert hook(client, {"Records": []}, config.webhook.token).status_code == 200
    big = b'{"Records": [], "pad": "' + b"x" * (config.webhook.max_body_bytes + 10) + b'"}'
    assert hook(client, big, config.webhook.token).status_code == 413
    r = client.get("/hooks/storage")
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and r.get_json()["error"]["code"]
    r = hook(client, b"[1]", config.webhook.token)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "not_a_notification"
    assert r.headers["Content-Type"] == "application/json" and r.headers["X-Content-Type-Options"] == "nosniff"


def test_noise_is_ignored(client, config, uploaded):
    tok, b = config.webhook.token, config.storage.bucket
    video, _ = uploaded()
    vid = video["id"]
    for body in [seaweed_event(b, f"originals/{vid}", 0, is_dir=True),
                 seaweed_event(b, f".uploads/x/0001_{vid}.part", 5),
                 {"event_type": "create", "key": "/buckets/.system/owners", "message": {"new_entry": {"name": "x"}}},
                 seaweed_event("other-bucket", video["original"]["key"], 10),
                 seaweed_event(b, f"processed/{vid}/master.m3u8", 10),
                 seaweed_event(b, "originals/cunknown00000000000/x.mp4", 10),
                 seaweed_event(b, f"originals/{vid}/other-name.mp4", 10),
                 {"event_type": "delete", "key": f"/buckets/{b}/{video['original']['key']}",
                  "message": {"old_entry": {"name": "clip.mp4"}}},
                 minio_event(b, video["original"]["key"], 10, name="s3:ObjectRemoved:Delete")]:
        r = hook(client, body, tok)
        assert r.status_code == 200, body
    assert vid not in queued_video_ids()


@pytest.mark.parametrize("fmt", ["minio", "seaweed"])
def test_replays_and_reordering_start_one_run(client, config, uploaded, fmt):
    video, h = uploaded(filename="mon film été+1.mp4")
    key = video["original"]["key"]
    make = minio_event if fmt == "minio" else seaweed_event
    body = make(config.storage.bucket, key, 10)
    statuses = [hook(client, body, config.webhook.token).status_code for _ in range(5)]
    assert statuses[0] == 202 and set(statuses[1:]) == {200}
    assert client.get(f"/api/videos/{video['id']}", headers=h).get_json()["upload_status"] == "UPLOADED"
    assert client.post(f"/api/videos/{video['id']}/upload/complete", json={}, headers=h).status_code == 200
    assert queued_video_ids().count(video["id"]) == 1


def test_notification_before_the_object_exists_changes_nothing(client, config, auth):
    h = auth()
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 10,
                                         "content_type": "video/mp4"}, headers=h)
    video = r.get_json()["video"]
    assert hook(client, seaweed_event(config.storage.bucket, video["original"]["key"], 10),
                config.webhook.token).status_code == 200
    assert client.get(f"/api/videos/{video['id']}", headers=h).get_json()["upload_status"] == "UPLOADING"


def test_real_store_webhook_moves_uploads_on(make_app, seaweed_factory, tmp_path):
    """A SeaweedFS whose own filer webhook calls the app on a real port: PUT and multipart."""
    import dataclasses

    from conftest import free_port

    from streamforge.config import load_config
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    port = free_port()  # the store needs the app's URL before the app exists
    token = "hook-secret-for-test"
    store = seaweed_factory(f"http://127.0.0.1:{port}/hooks/storage", token)
    cfg = load_config(data_dir=tmp_path, env={
        "STREAMFORGE_STORAGE_ENDPOINT": store.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": store.access_key,
        "STREAMFORGE_STORAGE_SECRET_KEY": store.secret_key, "STREAMFORGE_STORAGE_BUCKET": store.bucket,
        "STREAMFORGE_WEBHOOK_TOKEN": token, "STREAMFORGE_SERVER_SECRET_KEY": "k" * 32,
        "STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 << 20), "STREAMFORGE_UPLOAD_PART_SIZE": str(5 << 20)})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    app = make_app(cfg)
    with LiveServer(app, port=port) as live:
        with dbmod.db.connection_context():
            _, tok = videos.create_token(videos.get_or_create_user("hook@example.com"))
        h = {"Authorization": f"Bearer {tok}"}
        small = requests.post(f"{live.url}/api/videos", json={
            "title": "small", "filename": "a b.mp4", "size": 100, "content_type": "video/mp4"}, headers=h).json()
        requests.put(small["upload"]["url"], headers=small["upload"]["headers"], data=b"x" * 100, timeout=30).raise_for_status()
        data = b"y" * (11 << 20)
        big = requests.post(f"{live.url}/api/videos", json={
            "title": "big", "filename": "big.mp4", "size": len(data), "content_type": "video/mp4"}, headers=h).json()
        up = big["upload"]
        vid = big["video"]["id"]
        urls = requests.post(f"{live.url}/api/videos/{vid}/upload/parts",
                             json={"part_numbers": list(range(1, up["part_count"] + 1))}, headers=h).json()["urls"]
        parts = []
        for n in range(1, up["part_count"] + 1):
            chunk = data[(n - 1) * up["part_size"]:n * up["part_size"]]
            resp = requests.put(urls[str(n)], data=chunk, timeout=30)
            parts.append((n, resp.headers["ETag"]))
        # complete the multipart upload in the store directly: only the notification may move it on
        store.store.complete_multipart(big["video"]["original"]["key"], up["upload_id"], parts)
        deadline = time.time() + 20
        states = {}
        while time.time() < deadline:
            states = {v: requests.get(f"{live.url}/api/videos/{v}", headers=h).json()["upload_status"]
                      for v in (small["video"]["id"], vid)}
            if set(states.values()) == {"UPLOADED"}:
                break
            time.sleep(0.2)
        assert set(states.values()) == {"UPLOADED"}, states
        time.sleep(1.5)  # let any duplicate deliveries arrive
        queued = queued_video_ids()
        assert queued.count(small["video"]["id"]) == 1 and queued.count(vid) == 1


def test_a_write_after_the_video_was_deleted_is_removed(client, config, auth, seaweed):
    """Issue 20, hole 1: a URL still alive after DELETE stored bytes no quota counted; its notification
    now removes them and changes nothing else."""
    h = auth()
    r = client.post("/api/videos", json={"title": "t", "filename": "late.mp4", "size": 10,
                                         "content_type": "video/mp4"}, headers=h).get_json()
    video, up = r["video"], r["upload"]
    assert client.delete(f"/api/videos/{video['id']}", headers=h).status_code == 204
    before = client.get("/api/me", headers=h).get_json()["usage"]
    assert requests.put(up["url"], data=b"0123456789", headers=up["headers"], timeout=30).status_code == 200
    key = video["original"]["key"]
    for body in (seaweed_event(config.storage.bucket, key, 10), seaweed_event(config.storage.bucket, key, 10)):
        out = hook(client, body, config.webhook.token)
        assert out.status_code == 200
    assert out.get_json()["outcomes"] in ({"already": 1}, {"removed": 1})
    assert seaweed.store.list(f"originals/{video['id']}/") == []
    v = client.get(f"/api/videos/{video['id']}", headers=h).get_json()
    assert v["status"] == "ARCHIVED" and v["upload_status"] == "UPLOADING"
    assert client.get("/api/me", headers=h).get_json()["usage"] == before
    assert video["id"] not in queued_video_ids()
