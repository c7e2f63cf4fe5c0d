"""ObjectStore against a real SeaweedFS (the session `seaweed` fixture)."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from streamforge.errors import StorageError
from streamforge.store.objects import ObjectStore, content_type_for

MiB = 1024 * 1024


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test: the session store is shared."""
    return f"t-{uuid.uuid4().hex[:10]}/"


def test_presigned_put_uploads_and_keeps_content_type(seaweed, prefix):
    key = prefix + "originals/my video.mp4"
    upload = seaweed.store.presign_put(key, "video/mp4", expires=120)
    assert upload["method"] == "PUT" and upload["expires_at"].endswith("Z")
    r = requests.put(upload["url"], data=b"\x00" * 1000, headers=upload["headers"], timeout=10)
    assert r.status_code == 200, r.text
    info = seaweed.store.stat(key)
    assert info is not None
    assert (info.size, info.content_type) == (1000, "video/mp4")
    assert info.etag == r.headers["ETag"].strip('"')
    assert seaweed.store.exists(key)


def test_tampered_presigned_put_is_refused(seaweed, prefix):
    key = prefix + "originals/a.mp4"
    url = seaweed.store.presign_put(key, "video/mp4", expires=120)["url"]
    # another key with the same signature
    other = url.replace("/originals/a.mp4", "/originals/b.mp4")
    assert requests.put(other, data=b"x", timeout=10).status_code == 403
    # a changed signature
    parts = urlsplit(url)
    query = parts.query.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert requests.put(parts._replace(query=query).geturl(), data=b"x", timeout=10).status_code == 403
    assert seaweed.store.stat(prefix + "originals/b.mp4") is None
    assert seaweed.store.stat(key) is None


def test_expired_presigned_put_is_refused(seaweed, prefix):
    key = prefix + "originals/late.mp4"
    url = seaweed.store.presign_put(key, "video/mp4", expires=1)["url"]
    time.sleep(2.2)
    r = requests.put(url, data=b"x", timeout=10)
    assert r.status_code == 403, r.text
    assert seaweed.store.stat(key) is None


def test_multipart_round_trip_with_list_parts(seaweed, prefix):
    store = seaweed.store
    key = prefix + "originals/big.bin"
    upload_id = store.create_multipart(key, "video/mp4")
    chunks = {1: b"a" * (5 * MiB), 2: b"b" * (5 * MiB), 3: b"c" * 1234}
    etags = {}
    # parts may arrive in any order
    for n in (2, 1):
        r = requests.put(store.presign_part(key, upload_id, n, expires=120), data=chunks[n], timeout=30)
        assert r.status_code == 200, r.text
        etags[n] = r.headers["ETag"]
    listed = store.list_parts(key, upload_id)
    assert [(p["part_number"], p["etag"], p["size"]) for p in listed] == [
        (1, etags[1].strip('"'), 5 * MiB), (2, etags[2].strip('"'), 5 * MiB)]
    # a resumed browser sends only what is missing
    r = requests.put(store.presign_part(key, upload_id, 3, expires=120), data=chunks[3], timeout=30)
    etags[3] = r.headers["ETag"]
    etag = store.complete_multipart(key, upload_id, [(n, e) for n, e in etags.items()])
    assert etag.endswith("-3")
    info = store.stat(key)
    assert info.size == 10 * MiB + 1234 and info.content_type == "video/mp4"
    assert store.get_bytes(key)[5 * MiB - 1: 5 * MiB + 1] == b"ab"


def test_abort_multipart(seaweed, prefix):
    store = seaweed.store
    key = prefix + "originals/aborted.bin"
    upload_id = store.create_multipart(key, "video/mp4")
    requests.put(store.presign_part(key, upload_id, 1, expires=60), data=b"x" * 100, timeout=10)
    store.abort_multipart(key, upload_id)
    with pytest.raises(StorageError, match="complete_multipart"):
        store.complete_multipart(key, upload_id, [(1, "0" * 32)])
    assert store.stat(key) is None
    with pytest.raises(StorageError):
        store.presign_part(key, upload_id, 0, expires=60)


def test_post_policy_refuses_oversized_body(seaweed, prefix):
    key = prefix + "originals/form.mp4"
    form = seaweed.store.presign_post(key, max_size=1000, content_type="video/mp4", expires=120)
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f.mp4", b"x" * 2000)}, timeout=10)
    assert r.status_code == 400 and "EntityTooLarge" in r.text
    assert seaweed.store.stat(key) is None
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f.mp4", b"x" * 500)}, timeout=10)
    assert r.status_code in (200, 201, 204), r.text
    assert seaweed.store.stat(key).size == 500


def test_upload_tree_sets_types_and_cache_control_and_public_read(seaweed, prefix, tmp_path):
    tree = tmp_path / "hls"
    files = {
        "master.m3u8": "application/vnd.apple.mpegurl",
        "720p/index.m3u8": "application/vnd.apple.mpegurl",
        "720p/init.mp4": "video/mp4",
        "720p/seg_00001.m4s": "video/iso.segment",
        "thumbnails/cover.jpg": "image/jpeg",
        "thumbnails/cover.webp": "image/webp",
        "thumbnails/sprite.png": "image/png",
        "thumbnails/timeline.vtt": "text/vtt",
    }
    for rel in files:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(rel.encode())

    def cache(rel: str) -> str | None:
        return "public, max-age=5" if rel.endswith(".m3u8") else "public, max-age=31536000, immutable"

    processed = f"processed/{prefix}"
    assert seaweed.store.upload_tree(processed, tree, cache_control=cache, workers=4) == len(files)
    for rel, ctype in files.items():
        info = seaweed.store.stat(processed + rel)
        assert info.content_type == ctype, rel
        assert info.cache_control == cache(rel), rel
        assert content_type_for(rel) == ctype
    # nothing is readable without a signature (a CDN reads public videos through the app's /processed/)
    assert requests.get(seaweed.store.public_url(processed + "master.m3u8"), timeout=10).status_code == 403
    r = requests.get(seaweed.store.presigned_get(processed + "master.m3u8", 60), timeout=10)
    assert r.status_code == 200 and r.content == b"master.m3u8"
    assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    seaweed.store.put_bytes(prefix + "originals/secret.mp4", b"secret")
    assert requests.get(seaweed.store.public_url(prefix + "originals/secret.mp4"), timeout=10).status_code == 403
    signed = seaweed.store.presigned_get(prefix + "originals/secret.mp4", expires=60)
    assert requests.get(signed, timeout=10).content == b"secret"


def test_delete_prefix_and_list(seaweed, prefix):
    store = seaweed.store
    for i in range(5):
        store.put_bytes(f"{prefix}gone/{i}/x.txt", b"x")
    store.put_bytes(f"{prefix}kept.txt", b"k")
    assert [o.key for o in store.list(prefix)] == [f"{prefix}gone/{i}/x.txt" for i in range(5)] + [
        f"{prefix}kept.txt"]
    assert store.delete_prefix(prefix + "gone/") == 5
    assert [o.key for o in store.list(prefix)] == [f"{prefix}kept.txt"]
    assert store.delete_prefix(prefix + "gone/") == 0
    store.delete(prefix + "kept.txt")
    store.delete(prefix + "kept.txt")  # twice is fine
    assert store.list(prefix) == []
    with pytest.raises(StorageError):
        store.delete_prefix("")


def test_stat_missing_is_none_and_download_streams(seaweed, prefix, tmp_path):
    store = seaweed.store
    assert store.stat(prefix + "nothing-here") is None
    data = bytes(range(256)) * 4096 + b"tail"
    store.put_bytes(prefix + "blob.bin", data)
    out = tmp_path / "sub" / "blob.bin"
    assert store.download(prefix + "blob.bin", out, chunk=64 * 1024) == len(data)
    assert out.read_bytes() == data
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    with pytest.raises(StorageError, match="download .*nothing-here"):
        store.download(prefix + "nothing-here", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()
    store.copy(prefix + "blob.bin", prefix + "copy.bin")
    assert store.stat(prefix + "copy.bin").size == len(data)


def test_public_url_with_and_without_cdn(seaweed, tmp_path):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_CDN_BASE_URL": "https://cdn.example.com/v/"})
    store = ObjectStore.from_config(cfg)
    assert store.public_url("processed/ab c/master.m3u8") == \
        "https://cdn.example.com/v/processed/ab%20c/master.m3u8"
    plain = ObjectStore.from_config(seaweed.make_config(tmp_path))
    assert plain.public_url("processed/x#y.m3u8") == \
        f"http://{seaweed.endpoint}/{seaweed.bucket}/processed/x%23y.m3u8"


def test_presigned_urls_are_signed_for_the_public_host(seaweed, prefix, tmp_path):
    port = seaweed.endpoint.rsplit(":", 1)[1]
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_STORAGE_PUBLIC_URL": f"http://localhost:{port}"})
    store = ObjectStore.from_config(cfg)
    upload = store.presign_put(prefix + "originals/p.mp4", "video/mp4", expires=60)
    assert upload["url"].startswith(f"http://localhost:{port}/{seaweed.bucket}/")
    assert requests.put(upload["url"], data=b"p", headers=upload["headers"], timeout=10).status_code == 200
    assert store.stat(prefix + "originals/p.mp4").size == 1


def test_cors_lets_the_app_origin_put_and_read_etag(seaweed, prefix):
    origin = "http://127.0.0.1:8000"
    seaweed.store.ensure_bucket(cors_origins=[origin])
    url = seaweed.store.presign_put(prefix + "originals/c.mp4", "video/mp4", expires=60)["url"]
    r = requests.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "PUT",
                                       "Access-Control-Request-Headers": "content-type"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == origin
    assert "PUT" in r.headers["Access-Control-Allow-Methods"]
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    assert "<AllowedOrigin>http://127.0.0.1:8000</AllowedOrigin>" in seaweed.store.get_cors()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_storage_error_fast_when_store_is_down():
    store = ObjectStore(f"127.0.0.1:{_closed_port()}", "key", "secret", "bucket")
    started = time.monotonic()
    with pytest.raises(StorageError, match="ping bucket.*unreachable"):
        store.ping()
    with pytest.raises(StorageError, match="stat bucket/some/key"):
        store.stat("some/key")
    with pytest.raises(StorageError, match="upload_file bucket/k"):
        store.upload_file("k", __file__)
    assert time.monotonic() - started < 3


def test_ping_times_out_on_a_hung_store():
    # accepts connections, never answers
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        store = ObjectStore(f"127.0.0.1:{listener.getsockname()[1]}", "key", "secret", "bucket")
        started = time.monotonic()
        with pytest.raises(StorageError, match="ping"):
            store.ping()
        assert time.monotonic() - started < 3.5
    finally:
        stop.set()
        thread.join()
        for c in conns:
            c.close()
        listener.close()
