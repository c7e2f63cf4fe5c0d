"""The embedded SeaweedFS: config files, ports, the filer webhook, supervision, `run_storage`."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from streamforge.config import load_config
from streamforge.errors import ConfigError, StorageError
from streamforge.store.connect import object_store
from streamforge.store.embedded import EmbeddedStore, embedded_ports, port_free, weed_binary
from streamforge.store.objects import ObjectStore

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **env: str):
    base = {"STREAMFORGE_WEBHOOK_TOKEN": "hook-token", "STREAMFORGE_STORAGE_BUCKET": "sf-embedded"}
    return load_config(env={**base, **env}, data_dir=tmp_path)


def _wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_writes_secrets_0600_and_webhook_config(tmp_path):
    cfg = _config(tmp_path)
    store = EmbeddedStore(cfg, "http://127.0.0.1:8000/hooks/storage")
    store.write_config()
    s3 = store.dir / "s3.json"
    notification = store.dir / "notification.toml"
    for path in (s3, notification):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    creds = json.loads(s3.read_text())["identities"][0]["credentials"][0]
    assert creds == {"accessKey": cfg.storage.access_key, "secretKey": cfg.storage.secret_key}
    text = notification.read_text()
    assert "[notification.webhook]" in text and "enabled = true" in text
    assert 'endpoint = "http://127.0.0.1:8000/hooks/storage"' in text
    assert 'bearer_token = "hook-token"' in text
    assert 'path_prefixes = ["/buckets/sf-embedded/originals/"]' in text
    cmd = " ".join(store.command())
    for name in ("master", "volume", "filer", "s3_store", "admin"):
        assert str(store.ports[name]) in cmd
    # weed binds everything on loopback; the browsers' port ("s3") is the forwarder's, not weed's
    assert f"={store.ports['s3']}" not in cmd
    assert "-ip.bind=127.0.0.1" in cmd and "-metricsIp=127.0.0.1" in cmd
    assert "-s3.port.lance=0" in cmd and "-bucket=sf-embedded" in cmd


def test_external_endpoint_has_no_embedded_store(tmp_path):
    cfg = load_config(env={"STREAMFORGE_STORAGE_ENDPOINT": "minio:9000", "STREAMFORGE_STORAGE_ACCESS_KEY": "a",
                           "STREAMFORGE_STORAGE_SECRET_KEY": "b", "STREAMFORGE_WEBHOOK_TOKEN": "t",
                           "STREAMFORGE_SERVER_SECRET_KEY": "s"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="endpoint"):
        EmbeddedStore(cfg)


def test_ports_are_persisted_reused_and_repicked_when_taken(tmp_path):
    cfg = _config(tmp_path)
    ports = embedded_ports(cfg)
    assert set(ports) == {"master", "volume", "filer", "s3", "admin", "s3_store"}
    assert len(set(ports.values()) | {p + 10000 for p in ports.values()}) == 12
    assert all(p + 10000 < 65536 for p in ports.values())
    saved = json.loads((tmp_path / "seaweed" / "ports.json").read_text())
    assert saved == ports
    assert embedded_ports(_config(tmp_path)) == ports  # the next start reuses them
    # something else took the S3 port: a start picks a new one, keeps the rest
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["s3"]))
        squatter.listen(1)
        assert not port_free(ports["s3"])
        again = embedded_ports(cfg, check_free=True)
    assert again["s3"] != ports["s3"]
    assert {k: v for k, v in again.items() if k != "s3"} == {k: v for k, v in ports.items() if k != "s3"}
    assert json.loads((tmp_path / "seaweed" / "ports.json").read_text()) == again
    # ports set in config win
    fixed = embedded_ports(_config(tmp_path, STREAMFORGE_STORAGE_S3_PORT="23456"))
    assert fixed["s3"] == 23456


def test_public_url_of_embedded_store_follows_base_url(tmp_path):
    cfg = _config(tmp_path, STREAMFORGE_SERVER_BASE_URL="http://videos.example:8000")
    store = object_store(cfg)
    ports = embedded_ports(cfg)
    s3 = ports["s3"]
    # the app talks to weed's own S3 port; browsers get the forwarded one, signed for their host
    assert store.endpoint == f"127.0.0.1:{ports['s3_store']}"
    assert store.public_url("processed/a/master.m3u8") == \
        f"http://videos.example:{s3}/sf-embedded/processed/a/master.m3u8"
    assert store.presign_put("originals/a/b.mp4", "video/mp4", 60)["url"].startswith(
        f"http://videos.example:{s3}/sf-embedded/originals/a/b.mp4?")


def _imported_modules(path: Path) -> set[str]:
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_object_store_does_not_know_the_embedded_store(tmp_path):
    """No import circle: objects.py imports neither embedded.py nor connect.py, at any depth of a function."""
    store_dir = ROOT / "streamforge" / "store"
    assert not {"streamforge.store.embedded", "streamforge.store.connect"} & _imported_modules(
        store_dir / "objects.py")
    assert "streamforge.store.connect" not in _imported_modules(store_dir / "embedded.py")
    # an embedded config has no endpoint of its own: ObjectStore.from_config says where to go
    with pytest.raises(ConfigError, match="connect.object_store"):
        ObjectStore.from_config(_config(tmp_path))
    # the external mode is the same through either door
    ext = _config(tmp_path, STREAMFORGE_STORAGE_ENDPOINT="minio:9000", STREAMFORGE_STORAGE_ACCESS_KEY="a",
                  STREAMFORGE_STORAGE_SECRET_KEY="b", STREAMFORGE_SERVER_SECRET_KEY="s")
    assert object_store(ext).endpoint == ObjectStore.from_config(ext).endpoint == "minio:9000"


class _Recorder(BaseHTTPRequestHandler):
    events: ClassVar[list] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.events.append({"auth": self.headers.get("Authorization"), "path": self.path,
                            "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook_server():
    """A local HTTP server that records the JSON bodies POSTed to it."""
    handler = type("Recorder", (_Recorder,), {"events": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/storage", handler.events
    server.shutdown()
    server.server_close()


def test_filer_webhook_posts_created_objects_with_bearer_token(seaweed_factory, hook_server):
    url, events = hook_server
    sw = seaweed_factory(url, "s3cr3t-token")
    store = sw.store
    upload = store.presign_put("originals/v1/my clip.mp4", "video/mp4", expires=60)
    assert requests.put(upload["url"], data=b"x" * 10, headers=upload["headers"], timeout=10).status_code == 200
    store.put_bytes("processed/v1/master.m3u8", b"#EXTM3U")  # filtered out at the source
    # a multipart upload announces its final key once it is completed
    upload_id = store.create_multipart("originals/v2/big.mp4", "video/mp4")
    r = requests.put(store.presign_part("originals/v2/big.mp4", upload_id, 1, 60), data=b"y" * 100, timeout=10)
    store.complete_multipart("originals/v2/big.mp4", upload_id, [(1, r.headers["ETag"])])

    def keys() -> set[str]:
        return {e["body"]["key"] for e in events}
    wanted = {f"/buckets/{sw.bucket}/originals/v1/my clip.mp4", f"/buckets/{sw.bucket}/originals/v2/big.mp4"}
    assert _wait_for(lambda: wanted <= keys(), timeout=15), events
    for event in events:
        assert event["auth"] == "Bearer s3cr3t-token"
        assert event["path"] == "/hooks/storage"
    clip = next(e["body"] for e in events if e["body"]["key"].endswith("my clip.mp4"))
    assert clip["event_type"] == "create"
    assert clip["message"]["new_entry"]["name"] == "my clip.mp4"
    assert not any("/processed/" in k for k in keys())


def test_supervisor_restarts_killed_weed(seaweed_factory, hook_server):
    sw = seaweed_factory(hook_server[0], "t")
    embedded = sw.embedded
    stop = threading.Event()
    thread = threading.Thread(target=embedded.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        sw.store.put_bytes("originals/before.txt", b"kept")
        first = embedded.proc.pid
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: embedded.running() and embedded.proc.pid != first, timeout=15)
        embedded.wait_ready(timeout=30)
        # the S3 port answers before the restarted volume server has loaded its volumes: reads may
        # fail for a moment (the worker retries StorageError the same way); the data must come back
        def kept() -> bool:
            try:
                return sw.store.get_bytes("originals/before.txt") == b"kept"
            except StorageError:
                return False
        assert _wait_for(kept, timeout=20)
        assert "starting weed mini" in embedded.log_path.read_text()
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert not embedded.running()


def test_run_storage_serves_until_sigterm(tmp_path):
    weed_binary()
    code = ("import sys; from streamforge.config import load_config; "
            "from streamforge.store.embedded import run_storage; "
            "sys.exit(run_storage(load_config(data_dir=sys.argv[1]), ''))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env["STREAMFORGE_CDN_BASE_URL"] = "https://cdn.example.com"  # a CDN opens nothing on the store
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("storage: SeaweedFS S3 at http://127.0.0.1:"), line
        cfg = load_config(data_dir=tmp_path, env={})
        store = object_store(cfg)
        store.ping()
        assert "<AllowedOrigin>http://127.0.0.1:8000</AllowedOrigin>" in store.get_cors()
        store.put_bytes("processed/x/master.m3u8", b"#EXTM3U")
        # with a CDN or without, the output is private on the store: players get signed links
        assert requests.get(store.public_url("processed/x/master.m3u8"), timeout=10).status_code == 403
        assert requests.get(store.presigned_get("processed/x/master.m3u8", 60), timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        s3 = embedded_ports(cfg)["s3"]
        assert _wait_for(lambda: port_free(s3), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_weed_that_loses_a_port_to_another_process_is_started_again_on_another(tmp_path, monkeypatch):
    """Another process may take a port between our check and weed's bind (a client's ephemeral port, a
    restarted weed's socket not yet gone): weed exits with "address already in use" and is started again."""
    from streamforge.store import embedded
    cfg = _config(tmp_path)
    ports = embedded_ports(cfg)
    taken = ports["filer"]
    real, lied = embedded._pair_free, []

    def racy_check(port: int) -> bool:  # the check runs before the other process binds the port
        if port == ports["filer"] and not lied:
            lied.append(port)
            return True
        return real(port)

    monkeypatch.setattr(embedded, "_pair_free", racy_check)
    store = EmbeddedStore(cfg)
    with socket.socket() as squatter:
        # the port may still hold an earlier test's closed connections (TIME_WAIT): bind over them, as weed
        # (Go sets SO_REUSEADDR) would; a listening squatter still keeps weed off it
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen(1)
        try:
            store.start()
            store.wait_ready(60)
            assert lied and store.ports["filer"] != ports["filer"]
            assert "is not available" in store.log_path.read_text()  # weed's own word for it
            store.object_store().ping()
        finally:
            store.stop()
