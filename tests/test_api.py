"""The video API against a real SeaweedFS: uploads, listing, editing, deleting, isolation, CSRF."""
import re

import requests
from conftest import MEDIA, queued_video_ids

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"


def create(client, headers, size=1000, **extra):
    body = {"title": "My clip", "filename": "clip.mp4", "size": size, "content_type": "video/mp4", **extra}
    return client.post("/api/videos", json=body, headers=headers)


def test_needs_auth(client):
    assert client.get("/api/videos").status_code == 401
    r = client.post("/api/videos", json={})
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/videos", headers={"Authorization": "Bearer sf_nope"}).status_code == 401


def test_create_validates(client, auth, config):
    h = auth()
    cases = [({"title": ""}, 400), ({"size": 0}, 400), ({"size": "12"}, 400), ({"content_type": "text/html"}, 400),
             ({"tags": "a,b", "visibility": "secret"}, 400), ({"size": config.upload.max_size + 1}, 413)]
    for extra, status in cases:
        r = create(client, h, **extra)
        assert r.status_code == status, (extra, r.get_json())
        assert set(r.get_json()["error"]) == {"code", "message"}
    assert client.get("/api/videos", headers=h).get_json()["items"] == []


def test_create_then_put_then_complete_starts_one_run(client, auth, seaweed):
    h = auth()
    size = CLIP.stat().st_size
    r = create(client, h, size=size, filename="../../etc/my clip ü.mp4", tags=["a", "b", "a"],
               description="desc")
    assert r.status_code == 201
    video, up = r.get_json()["video"], r.get_json()["upload"]
    assert video["upload_status"] == "UPLOADING" and video["status"] == "PENDING"
    assert video["original"]["filename"] == "my clip ü.mp4"
    assert video["original"]["key"] == f"originals/{video['id']}/my clip ü.mp4"
    assert video["tags"] == ["a", "b"] and video["visibility"] == "private"
    assert up["method"] == "PUT" and up["expires_at"].endswith("Z")
    # before the bytes arrive, complete says so and changes nothing
    assert client.post(f"/api/videos/{video['id']}/upload/complete", json={}, headers=h).status_code == 409
    put = requests.put(up["url"], data=CLIP.read_bytes(), headers=up["headers"], timeout=30)
    assert put.status_code == 200
    r1 = client.post(f"/api/videos/{video['id']}/upload/complete", json={}, headers=h)
    r2 = client.post(f"/api/videos/{video['id']}/upload/complete", json={}, headers=h)
    assert r1.status_code == r2.status_code == 200
    assert r1.get_json()["upload_status"] == "UPLOADED"
    assert queued_video_ids().count(video["id"]) == 1


def test_multipart_round_trip(client, auth, make_app, seaweed, tmp_path):
    cfg = seaweed.make_config(tmp_path / "mp", env={"STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 << 20),
                                                    "STREAMFORGE_UPLOAD_PART_SIZE": str(5 << 20)})
    client = make_app(cfg).test_client()
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("mp@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB
    r = create(client, h, size=len(data))
    video, up = r.get_json()["video"], r.get_json()["upload"]
    assert up["method"] == "MULTIPART" and up["part_count"] == 3 and up["part_size"] == 5 << 20
    vid = video["id"]
    assert client.post(f"/api/videos/{vid}/upload/parts", json={"part_numbers": [0]}, headers=h).status_code == 400
    assert client.post(f"/api/videos/{vid}/upload/parts", json={"part_numbers": [4]}, headers=h).status_code == 400
    urls = client.post(f"/api/videos/{vid}/upload/parts", json={"part_numbers": [1, 2, 3]}, headers=h).get_json()
    parts = []
    for n in (1, 2):
        part = data[(n - 1) * up["part_size"]:n * up["part_size"]]
        # each part URL takes exactly its part's size
        assert requests.put(urls["urls"][str(n)], data=part + b"x", timeout=30).status_code == 403
        assert requests.put(urls["urls"][str(n)], data=part[:-1], timeout=30).status_code == 403
        resp = requests.put(urls["urls"][str(n)], data=part, timeout=30)
        assert resp.status_code == 200
        parts.append({"part_number": n, "etag": resp.headers["ETag"].strip('"')})
    # a reloaded browser asks what the store already has
    listed = client.get(f"/api/videos/{vid}/upload/parts", headers=h).get_json()
    assert [p["part_number"] for p in listed["parts"]] == [1, 2]
    # the complete step checks that every part is there: 400, and the upload stays open
    r = client.post(f"/api/videos/{vid}/upload/complete", json={"parts": parts}, headers=h)
    assert r.status_code == 400 and "3 parts" in r.get_json()["error"]["message"]
    r = client.post(f"/api/videos/{vid}/upload/complete", json={"parts": parts + [{"part_number": 3, "etag": "x"}]},
                    headers=h)
    assert r.status_code == 400 and "part 3" in r.get_json()["error"]["message"]
    resp = requests.put(urls["urls"]["3"], data=data[2 * up["part_size"]:], timeout=30)
    parts.append({"part_number": 3, "etag": resp.headers["ETag"]})
    done = client.post(f"/api/videos/{vid}/upload/complete", json={"parts": parts}, headers=h)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["upload_status"] == "UPLOADED"
    assert done.get_json()["original"]["size"] == len(data)
    assert seaweed.store.stat(video["original"]["key"]).size == len(data)
    again = client.post(f"/api/videos/{vid}/upload/complete", json={"parts": parts}, headers=h)
    assert again.status_code == 200
    assert queued_video_ids().count(vid) == 1


def test_wrong_size_upload_fails_and_is_deleted(client, auth, seaweed):
    h = auth()
    r = create(client, h, size=10)
    video, up = r.get_json()["video"], r.get_json()["upload"]
    # the URL takes exactly the declared size and type (its signature covers Content-Length and Content-Type)
    assert up["headers"] == {"Content-Type": "video/mp4", "Content-Length": "10", "If-None-Match": "*"}
    for data, headers in ((b"x" * 11, up["headers"]), (b"x" * 9, up["headers"]),
                          (b"x" * 10, {**up["headers"], "Content-Type": "text/html"}), (b"x" * 10, {})):
        assert requests.put(up["url"], data=data, headers=headers, timeout=30).status_code == 403
    assert seaweed.store.stat(video["original"]["key"]) is None
    # a store that ignored the signature's length: the size is checked again when the upload is accepted
    seaweed.store.put_bytes(video["original"]["key"], b"x" * 11)
    out = client.post(f"/api/videos/{video['id']}/upload/complete", json={}, headers=h).get_json()
    assert out["status"] == "FAILED" and "11 bytes but 10 were declared" in out["error_message"]
    assert seaweed.store.stat(video["original"]["key"]) is None
    assert video["id"] not in queued_video_ids()


def test_list_get_patch_isolation(client, auth):
    alice, bob = auth("alice@example.com"), auth("bob@example.com")
    ids = [create(client, alice, title=f"v{i}").get_json()["video"]["id"] for i in range(3)]
    page = client.get("/api/videos?per_page=2", headers=alice).get_json()
    assert len(page["items"]) == 2 and page["next"] == 2
    page2 = client.get("/api/videos?per_page=2&page=2", headers=alice).get_json()
    assert len(page2["items"]) == 1 and page2["next"] is None
    assert {v["id"] for v in page["items"] + page2["items"]} == set(ids)
    assert client.get("/api/videos?status=PENDING", headers=alice).get_json()["items"]
    assert client.get("/api/videos?status=COMPLETED", headers=alice).get_json()["items"] == []
    assert client.get("/api/videos?status=NOPE", headers=alice).status_code == 400
    vid = ids[0]
    for method, path, body in [("GET", f"/api/videos/{vid}", None), ("PATCH", f"/api/videos/{vid}", {"title": "x"}),
                               ("DELETE", f"/api/videos/{vid}", None), ("GET", f"/api/videos/{vid}/logs", None),
                               ("POST", f"/api/videos/{vid}/reprocess", None),
                               ("POST", f"/api/videos/{vid}/upload/complete", {}),
                               ("POST", f"/api/videos/{vid}/upload/parts", {"part_numbers": [1]})]:
        r = client.open(path, method=method, json=body, headers=bob)
        assert r.status_code == 404, (method, path, r.status_code)
    assert client.get("/api/videos", headers=bob).get_json()["items"] == []
    r = client.patch(f"/api/videos/{vid}", json={"title": "New", "tags": ["x"], "visibility": "unlisted",
                                                 "description": "d"}, headers=alice)
    assert r.status_code == 200
    v = r.get_json()
    assert (v["title"], v["tags"], v["visibility"], v["description"]) == ("New", ["x"], "unlisted", "d")
    assert client.patch(f"/api/videos/{vid}", json={"status": "COMPLETED"}, headers=alice).status_code == 400
    assert client.post(f"/api/videos/{vid}/reprocess", headers=alice).status_code == 409


def test_delete_archives_and_removes_objects(client, auth, seaweed):
    h = auth()
    r = create(client, h, size=5)
    video, up = r.get_json()["video"], r.get_json()["upload"]
    requests.put(up["url"], data=b"12345", headers=up["headers"], timeout=30).raise_for_status()
    seaweed.store.put_bytes(f"processed/{video['id']}/master.m3u8", b"#EXTM3U\n")
    assert client.delete(f"/api/videos/{video['id']}", headers=h).status_code == 204
    assert client.get(f"/api/videos/{video['id']}", headers=h).get_json()["status"] == "ARCHIVED"
    assert seaweed.store.list(f"originals/{video['id']}/") == []
    assert seaweed.store.list(f"processed/{video['id']}/") == []
    assert client.get("/api/videos", headers=h).get_json()["items"] == []


def test_cookie_session_needs_csrf_token(client, token_for):
    tok = token_for("carol@example.com")
    assert client.get(f"/login?token={tok}").status_code == 302
    body = {"title": "t", "filename": "a.mp4", "size": 10, "content_type": "video/mp4"}
    r = client.post("/api/videos", json=body)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "csrf"
    page = client.get("/upload").get_data(as_text=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post("/api/videos", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.post("/api/videos", json=body, headers={"X-CSRF-Token": csrf + "x"}).status_code == 403
    assert client.get("/api/videos").status_code == 200


def test_login_link_rejects_bad_token_and_cookie_flags(client, token_for):
    assert client.get("/login?token=sf_wrong").status_code == 401
    tok = token_for("dan@example.com")
    r = client.get(f"/login?token={tok}")
    cookie = r.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200
    page = client.get("/logout").get_data(as_text=True)  # a page with the sign-out button: signs nobody out
    assert client.get("/").status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/").status_code == 302


def test_pages_send_security_headers(client, token_for):
    client.get(f"/login?token={token_for('erin@example.com')}")
    r = client.get("/")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "blob:" in csp


def test_tokens_api(client, auth):
    h = auth("frank@example.com")
    made = client.post("/api/tokens", json={"name": "laptop"}, headers=h)
    assert made.status_code == 201
    tok = made.get_json()["token"]
    listed = client.get("/api/tokens", headers=h).get_json()["items"]
    assert any(t["name"] == "laptop" for t in listed) and all("token" not in t for t in listed)
    assert client.get("/api/videos", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    assert client.delete(f"/api/tokens/{made.get_json()['id']}", headers=h).status_code == 204
    assert client.get("/api/videos", headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_tokens_stored_hashed(app, token_for):
    from streamforge.store import db as dbmod
    from streamforge.store.db import ApiToken
    tok = token_for("gina@example.com")
    with dbmod.db.connection_context():
        stored = [t.token_hash for t in ApiToken.select()]
    assert tok not in stored and all(len(h) == 64 for h in stored)


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json()["checks"] == {"database": "ok", "store": "ok", "queue": "ok"}


def test_healthz_names_a_failing_part_without_its_details(app, monkeypatch, caplog):
    from streamforge.errors import StorageError
    store = app.extensions["streamforge.store"]

    def down():
        raise StorageError("ping: connection refused by 10.0.0.7:8333")

    monkeypatch.setattr(store, "ping", down)
    r = app.test_client().get("/healthz")
    assert r.status_code == 503
    assert r.get_json() == {"ok": False, "checks": {"database": "ok", "store": "error", "queue": "ok"}}
    assert "10.0.0.7" not in r.get_data(as_text=True) and "10.0.0.7" in caplog.text


def test_page_past_the_end_is_an_empty_list_or_the_last_page(client, auth, token_for):
    """Issue 20, hole 9: `?page=10^23` was a 500 (an OFFSET past a 64-bit integer)."""
    h = auth()
    ids = [create(client, h, title=f"clip {i}").get_json()["video"]["id"] for i in range(2)]
    for huge in (str(10**23), "9" * 400):
        r = client.get(f"/api/videos?page={huge}", headers=h)
        assert r.status_code == 200 and r.get_json() == {"items": [], "next": None}, huge
    assert client.get("/api/videos?page=abc", headers=h).status_code == 400
    assert client.get("/api/videos?page=0", headers=h).status_code == 400
    # the library page shows its last page instead
    client.get(f"/login?token={token_for('alice@example.com')}")
    page = client.get(f"/?page={10**23}")
    assert page.status_code == 200
    assert all(f'data-video-id="{vid}"' in page.get_data(as_text=True) for vid in ids)


def test_content_type_must_be_a_real_video_or_audio_media_type(client, auth):
    """Issue 20, hole 9: fnmatch took `video/../../text/html` and a type with CRLF in it."""
    h = auth()
    for bad in ("video/../../text/html", "video/mp4\r\nX-Evil: 1", "video/mp4\r\n", "video/mp4\n", "video/x..y",
                "video/", "video/*", "text/html", "application/octet-stream", "video/mp4 x", "video/mp4;",
                "video/mp4; a=b\r\nc: d", "vidéo/mp4", 42, None):
        r = create(client, h, content_type=bad)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid", repr(bad)
    assert client.get("/api/videos", headers=h).get_json()["items"] == []
    for good, stored in (("video/mp4", "video/mp4"), ("Video/MP4; codecs=\"avc1.64001f\"", "video/mp4"),
                         ("audio/mpeg", "audio/mpeg"), ("video/x-matroska", "video/x-matroska")):
        r = create(client, h, content_type=good)
        assert r.status_code == 201, good
        assert r.get_json()["video"]["original"]["content_type"] == stored


def test_a_refused_multipart_create_leaves_nothing(seaweed, make_app, tmp_path):
    """Issue 20, hole 9: a multipart create the store refused left an UPLOADING row counted in the quota."""
    cfg = seaweed.make_config(tmp_path / "nb", env={"STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(5 << 20),
                                                    "STREAMFORGE_STORAGE_SECRET_KEY": "not-the-secret"})
    client = make_app(cfg).test_client()
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("nb@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    r = create(client, h, size=12 << 20)
    assert r.status_code >= 500 and r.get_json()["error"]["code"]
    assert client.get("/api/videos?status=PENDING", headers=h).get_json()["items"] == []
    assert client.get("/api/me", headers=h).get_json()["usage"] == {"bytes": 0, "videos": 0}
