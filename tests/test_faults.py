"""Faults on purpose, on real services: the object store stopped mid-run, the web app down while
uploads finish, a storm of notifications, a full temp disk, SQLite shared by a busy web app and a
worker, and a big upload. Each ends with every video processed once and nothing lost.

The helpers above the tests take no pytest fixtures: bench/faults.py reuses them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import random
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Helpers shared with bench/faults.py


def tiny_clip(path: Path, seconds: float = 1.0, width: int = 320, height: int = 240) -> bytes:
    """A small real H.264/AAC MP4 made with PyAV; returns its bytes."""
    from media_factory import make_video
    return make_video(path, width=width, height=height, seconds=seconds).read_bytes()


class PaddedMp4:
    """A real clip followed by one top-level `free` box of padding: a valid MP4 of any size,
    produced a range at a time (never held in memory). Demuxers skip the box, so the video
    plays exactly like the clip."""

    HEADER = 16  # size=1, "free", 64-bit largesize

    def __init__(self, clip: bytes, total: int):
        assert total >= len(clip) + self.HEADER
        self.clip, self.total = clip, total
        self.box = struct.pack(">I4sQ", 1, b"free", total - len(clip))

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file."""
        head = self.clip + self.box
        out = bytearray()
        if start < len(head):
            out += head[start:min(end, len(head))]
        pad = max(0, end - max(start, len(head)))
        return bytes(out) + bytes(pad)


def rss_kb(pid: int) -> int:
    """Resident memory of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [pid], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class RssSampler:
    """Samples the summed RSS of a process tree in the background; `.peak` and `.samples` in KiB."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every = pid, every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tree = process_tree(pid)
        self._refreshed = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._refreshed > 1:
                self._tree, self._refreshed = process_tree(self.pid), time.monotonic()
            self.samples.append(sum(rss_kb(p) for p in self._tree))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples) if self.samples else 0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Services:
    """`streamforge web` / `worker` subprocesses of one deployment sharing one environment."""

    def __init__(self, tmp: Path, env: dict, port: int):
        self.tmp, self.env, self.port = tmp, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.data = tmp / "data"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", *args, "--data-dir", str(self.data)],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = proc
        return proc

    def start_web(self) -> subprocess.Popen:
        proc = self.start("web", "web", "--host", "127.0.0.1", "--port", str(self.port))
        self.wait_healthy()
        return proc

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError("web never became healthy: " + self.log("web")[-1500:])

    def wait_for_log(self, name: str, text: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while self.log(name).count(text) < count:
            assert time.time() < deadline, f"{text!r} x{count} not in the {name} log: " + self.log(name)[-1500:]
            time.sleep(0.2)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM) -> None:
        names = [name] if name else list(self.procs)
        for n in names:
            proc = self.procs[n]
            if proc.poll() is None:
                proc.send_signal(sig)
        for n in names:
            try:
                self.procs[n].wait(30)
            except subprocess.TimeoutExpired:
                self.procs[n].kill()
                self.procs[n].wait(5)


def stack_env(store, port: int, **extra: str) -> dict:
    """The environment of a deployment on the SQLite default (database and queue in the data dir)
    with `store` (a store_fixtures.Seaweed) as its external object store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env.update({
        "STREAMFORGE_STORAGE_ENDPOINT": store.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": store.access_key,
        "STREAMFORGE_STORAGE_SECRET_KEY": store.secret_key, "STREAMFORGE_STORAGE_BUCKET": store.bucket,
        "STREAMFORGE_WEBHOOK_TOKEN": store.webhook_token,
        "STREAMFORGE_SERVER_SECRET_KEY": "faults-" + secrets.token_hex(16),
        "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}", "STREAMFORGE_PIPELINE_HEIGHTS": "240",
        # no transcription after each run: it would load the speech model into the worker being measured
        "STREAMFORGE_CAPTIONS_AUTO": "false",
        "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def attach(env: dict, data_dir: Path):
    """Point this process's database and queue at a deployment's (to read its state and queue)."""
    from streamforge.config import load_config
    from streamforge.jobs import tasks
    from streamforge.store import db as dbmod
    cfg = load_config(env={k: v for k, v in env.items() if k.startswith("STREAMFORGE_")}, data_dir=data_dir)
    dbmod.init_db(cfg.database_url)
    tasks.configure(cfg)
    return cfg


def minio_event(bucket: str, key: str, size: int, name: str = "s3:ObjectCreated:Put") -> dict:
    enc = quote_plus(key, safe="/")
    return {"EventName": name, "Key": f"{bucket}/{enc}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": enc, "size": size, "sequencer": secrets.token_hex(6)}}}]}


def seaweed_event(bucket: str, key: str, size: int, kind: str = "create", is_dir: bool = False) -> dict:
    name = key.rsplit("/", 1)[-1]
    entry = {"name": name, "is_directory": is_dir, "attributes": {"file_size": size}}
    message = {"new_entry": entry} if kind != "delete" else {"old_entry": entry}
    return {"event_type": kind, "key": f"/buckets/{bucket}/{key}", "message": message}


def storm_bodies(bucket: str, real: list[tuple[str, int]], unsent: list[tuple[str, int]], total: int,
                 seed: int = 8) -> list[tuple[str, str, bytes]]:
    """`total` notification bodies, shuffled: duplicates of every real upload's event in both formats
    (and removals), events for uploads whose bytes never came, noise (directories, multipart scratch
    parts, .system, outputs, other buckets), unknown keys and garbage. Each item is (kind, the
    original's key for "real" and "unsent" events, body)."""
    rnd = random.Random(seed)
    out: list[tuple[str, str, bytes]] = []

    def add(kind: str, body, key: str = "") -> None:
        out.append((kind, key, body if isinstance(body, bytes) else json.dumps(body).encode()))

    for key, size in real:
        add("real", seaweed_event(bucket, key, size), key)
        add("real", minio_event(bucket, key, size), key)
    while len(out) < total:
        roll = rnd.random()
        key, size = rnd.choice(real)
        vid = key.split("/")[1]
        if roll < 0.40:  # duplicates of a real upload, either format, sometimes multipart completion
            name = rnd.choice(["s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload"])
            add("real", minio_event(bucket, key, size, name) if rnd.random() < 0.5 else seaweed_event(bucket, key, size),
                key)
        elif roll < 0.45:
            add("noise", minio_event(bucket, key, size, "s3:ObjectRemoved:Delete"))
        elif roll < 0.55 and unsent:
            k, s = rnd.choice(unsent)
            add("unsent", seaweed_event(bucket, k, s) if rnd.random() < 0.5 else minio_event(bucket, k, s), k)
        elif roll < 0.75:
            noise = [seaweed_event(bucket, f"originals/{vid}", 0, is_dir=True),
                     seaweed_event(bucket, f".uploads/{secrets.token_hex(8)}/0001_{vid}.part", 5 * MiB),
                     {"event_type": "create", "key": "/buckets/.system/owners", "message": {"new_entry": {"name": "x"}}},
                     seaweed_event(bucket, f"processed/{vid}/240p/seg_{rnd.randrange(100):05d}.m4s", 9000),
                     seaweed_event("another-bucket", key, size),
                     seaweed_event(bucket, f"originals/{vid}/another-name.mp4", size),
                     {"event_type": "create", "key": "/topics/.system/log", "message": {}},
                     {"Records": []}]
            add("noise", rnd.choice(noise))
        elif roll < 0.92:  # keys of videos that do not exist, and keys that are not ours at all
            fake = "c" + "".join(rnd.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(20))
            add("unknown", rnd.choice([seaweed_event(bucket, f"originals/{fake}/x.mp4", 10),
                                       minio_event(bucket, f"originals/{fake}/my clip+ü.mp4", 10),
                                       minio_event(bucket, f"../../etc/{fake}", 10),
                                       seaweed_event(bucket, f"originals/{fake.upper()}/x.mp4", 10)]))
        else:
            add("garbage", rnd.choice([b"", b"not json", b"[]", b'{"Records": {}}', b'{"Records": [1]}',
                                       b'{"event_type": "create"}', b"\xff\xfe\x00", b"[" * 3000]))
    out = out[:total]
    rnd.shuffle(out)
    return out


def fire(url: str, token: str, bodies: list[bytes], concurrency: int = 16) -> list[tuple[int, float]]:
    """POST every body to the webhook from `concurrency` clients; returns (status, seconds) per body."""
    local = threading.local()

    def one(body: bytes) -> tuple[int, float]:
        session = getattr(local, "s", None)
        if session is None:
            session = local.s = requests.Session()
        t0 = time.perf_counter()
        try:
            r = session.post(url, data=body, timeout=60, headers={"Authorization": f"Bearer {token}",
                                                                   "Content-Type": "application/json"})
            status = r.status_code
        except requests.RequestException:
            status = -1
        return status, time.perf_counter() - t0

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, bodies))


def runs_of(video_id: str) -> dict:
    """How often the video's processing started and completed, from its processing log."""
    from streamforge.store.db import ProcessingLog
    rows = list(ProcessingLog.select().where(ProcessingLog.video_id == video_id))
    return {"started": sum(1 for r in rows if r.stage == "download" and r.status == "started"),
            "completed": sum(1 for r in rows if r.stage == "database" and r.status == "completed")}


# ---------------------------------------------------------------------------------------------
# Fixtures

from conftest import (  # noqa: E402
    LiveServer,
    drain_queue,
    free_port,
    fresh_database_url,
    port_open,
    queued_video_ids,
    require,
)

from streamforge.jobs import processing, tasks  # noqa: E402
from streamforge.store import db as dbmod  # noqa: E402
from streamforge.store import videos  # noqa: E402


@pytest.fixture(scope="module")
def private_store(tmp_path_factory):
    """A SeaweedFS of this module's own, to stop and start; its filer webhook calls port `.app_port`."""
    from store_fixtures import _require_weed, start_seaweed
    _require_weed()
    port = free_port()
    token = "faults-" + secrets.token_hex(12)
    handle = start_seaweed(tmp_path_factory.mktemp("faults-store"), f"http://127.0.0.1:{port}/hooks/storage",
                           token, bucket="faults")
    handle.app_port = port
    try:
        yield handle
    finally:
        handle.embedded.stop(timeout=5)


def ensure_running(store) -> None:
    """Start the stopped store again on the same S3 port (the app's config names it)."""
    if not store.embedded.running():
        from streamforge.store.embedded import port_free
        port = int(store.endpoint.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        # a busy machine may hold the port (or its gRPC twin) a moment after weed exits: `start` would
        # then pick another one and the app would knock on the old one
        while not (port_free(port) and port_free(port + 10000)) and time.monotonic() < deadline:
            time.sleep(0.2)
        store.embedded.start()
        store.embedded.wait_ready(60)
        assert store.embedded.endpoint.rstrip("/") == store.endpoint.rstrip("/"), "the store moved to another port"
        writable(store)


def writable(store, timeout: float = 30) -> None:
    """Wait until the store takes a write. drain_queue runs a retry at once, not after its backoff, so a
    restarted store that lists its bucket but cannot yet write (its volume not yet registered, on a busy
    machine) would use up the retries the backoff gives it time for (CI saw retry, then failed)."""
    from streamforge.errors import StorageError

    deadline = time.monotonic() + timeout
    while True:
        try:
            store.store.put_bytes("processed/.faults-probe", b"ok")
            store.store.delete("processed/.faults-probe")
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@pytest.fixture
def private(private_store, tmp_path):
    """An app (not listening) on the private store, a token, and the store restarted afterwards."""
    from streamforge.web import create_app
    ensure_running(private_store)
    port = private_store.app_port
    cfg = private_store.make_config(tmp_path, env={"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
                                                   "STREAMFORGE_PIPELINE_HEIGHTS": "240"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    app = create_app(cfg)
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("faults@example.com"))
    ns = type("Private", (), {})()
    ns.cfg, ns.app, ns.client, ns.store = cfg, app, app.test_client(), private_store
    ns.h = {"Authorization": f"Bearer {tok}"}
    try:
        yield ns
    finally:
        ensure_running(private_store)


def create_and_put(client, h, data: bytes, filename: str = "clip.mp4", complete: bool = True) -> str:
    r = client.post("/api/videos", json={"title": "fault", "filename": filename, "size": len(data),
                                         "content_type": "video/mp4"}, headers=h)
    assert r.status_code == 201, r.get_json()
    made = r.get_json()
    requests.put(made["upload"]["url"], headers=made["upload"]["headers"], data=data, timeout=60).raise_for_status()
    vid = made["video"]["id"]
    if complete:
        assert client.post(f"/api/videos/{vid}/upload/complete", json={}, headers=h).status_code == 200
    return vid


def eta_in(video_id: str) -> float:
    """Seconds until the queued task of `video_id` is due."""
    task = next(t for t in tasks.huey.pending() if t.args[0] == video_id)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return (task.eta - now).total_seconds() if task.eta else 0.0


def stop_store_at_upload_stage(monkeypatch, store, times: int = 1) -> list:
    """Stop the store as the run's upload stage begins (the first `times` runs)."""
    real = processing.VideoRun.upload
    stopped = []

    def upload(self, outdir, result, uploader):
        if len(stopped) < times:
            store.embedded.stop(timeout=5)
            stopped.append(time.monotonic())
        return real(self, outdir, result, uploader)

    monkeypatch.setattr(processing.VideoRun, "upload", upload)
    return stopped


def assert_ladder_complete(client, h, store, vid: str) -> dict:
    """COMPLETED with one 240p rung; the master plays through its signed link; every object a
    playlist names is in the store; nothing lies outside the final run's own output folder."""
    v = client.get(f"/api/videos/{vid}", headers=h).get_json()
    assert v["status"] == "COMPLETED", v["error_message"]
    assert [(r["height"], r["codec"]) for r in v["renditions"]] == [(240, "h264")]
    master = client.get("/" + v["master_playlist_url"].split("://", 1)[1].split("/", 1)[1])
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.get_data(as_text=True)
    with dbmod.db.connection_context():
        root = videos.get_video_by_id(vid).s3_processed_path + "/"
    keys = {o.key for o in store.store.list(f"processed/{vid}/")}
    assert keys and all(k.startswith(root) for k in keys), sorted(keys)[:5]
    playlists = [k for k in keys if k.endswith(".m3u8") and not k.endswith("/master.m3u8")]
    assert playlists
    for key in playlists:
        folder = key.rsplit("/", 1)[0]
        text = store.store.get_bytes(key).decode()
        names = [line for line in text.splitlines() if line and not line.startswith("#")]
        names += [part.split('"', 1)[0] for part in text.split('URI="')[1:]]
        assert names and all(f"{folder}/{n}" in keys for n in names), (key, names[:3])
    return v


# ---------------------------------------------------------------------------------------------
# The object store stopped during the upload stage


def test_store_down_during_upload_is_retried_with_backoff_and_completes(private, monkeypatch, tmp_path):
    vid = create_and_put(private.client, private.h, tiny_clip(tmp_path / "a.mp4"))
    stopped = stop_store_at_upload_stage(monkeypatch, private.store)
    assert drain_queue(limit=1) == ["retry"]
    assert stopped and not private.store.embedded.running()
    v = private.client.get(f"/api/videos/{vid}", headers=private.h)
    assert v.status_code == 200  # the API answers while the store is down
    v = v.get_json()
    assert v["status"] == "PENDING" and v["error_message"].startswith("retrying: ")
    assert "unreachable" in v["error_message"] and "Traceback" not in v["error_message"]
    assert v["master_playlist_url"] is None  # the early master of the interrupted run is withdrawn
    assert 5 <= eta_in(vid) <= 10  # backoff: 5 * 2 ** attempt seconds
    with dbmod.db.connection_context():
        failed = [r for r in videos.logs_of(videos.get_video_by_id(vid)) if r.status == "failed"]
    assert [(r.stage, r.error_code) for r in failed] == [("upload", "storage")]
    ensure_running(private.store)
    recovered = time.monotonic()
    outcomes = drain_queue()
    assert outcomes == ["completed"], (outcomes, private.client.get(f"/api/videos/{vid}", headers=private.h)
                                       .get_json()["error_message"])
    v = assert_ladder_complete(private.client, private.h, private.store, vid)
    assert v["attempts"] == 2 and v["error_message"] is None
    with dbmod.db.connection_context():
        assert runs_of(vid) == {"started": 2, "completed": 1}
    assert queued_video_ids() == []
    print(f"\nstore down at upload stage: recovered {time.monotonic() - recovered:.1f} s after the store came back")


def test_store_down_beyond_the_retry_budget_fails_then_reprocess_works(private, monkeypatch, tmp_path):
    data = tiny_clip(tmp_path / "b.mp4")
    vid = create_and_put(private.client, private.h, data)
    stop_store_at_upload_stage(monkeypatch, private.store)
    outcomes, delays = [], []
    for _ in range(private.cfg.sweeper.max_attempts):
        outcomes += drain_queue(limit=1)
        if vid in queued_video_ids():
            delays.append(round(eta_in(vid)))
    v = private.client.get(f"/api/videos/{vid}", headers=private.h).get_json()
    assert outcomes == ["retry", "retry", "failed"], (outcomes, v["error_message"])
    assert 5 <= delays[0] <= 10 and 15 <= delays[1] <= 20, delays  # backoff 5 * 2 ** attempt s
    assert v["status"] == "FAILED" and v["error_message"].startswith("gave up after 3 attempts: "), v["error_message"]
    assert "unreachable" in v["error_message"] and len(v["error_message"]) < 500, v["error_message"]
    assert v["master_playlist_url"] is None
    # the store comes back: the original was kept, and reprocess runs the video to the end
    ensure_running(private.store)
    assert private.store.store.stat(v["original"]["key"]).size == len(data)
    r = private.client.post(f"/api/videos/{vid}/reprocess", headers=private.h)
    assert r.status_code == 202
    assert drain_queue() == ["completed"]
    v = assert_ladder_complete(private.client, private.h, private.store, vid)
    assert v["attempts"] == 1 and v["error_message"] is None


def test_a_retry_waiting_for_its_backoff_is_left_to_its_task(private, monkeypatch, tmp_path):
    """The store fails a run; the retry is scheduled 10 s later. A sweep after the lease (5 s) but before
    the retry is due finds nothing lost: the video keeps its one scheduled task (a second, immediate one
    would skip the backoff and burn the retry budget in seconds)."""
    from streamforge.jobs import intake
    from streamforge.web import create_app
    cfg = private.store.make_config(tmp_path / "lease", env={"STREAMFORGE_PIPELINE_HEIGHTS": "240",
                                                            "STREAMFORGE_SWEEPER_LEASE_SECONDS": "5"})
    client = create_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("lease@example.com"))
    vid = create_and_put(client, {"Authorization": f"Bearer {tok}"}, tiny_clip(tmp_path / "r.mp4"))
    stop_store_at_upload_stage(monkeypatch, private.store)
    assert drain_queue(limit=1) == ["retry"]
    ensure_running(private.store)
    assert queued_video_ids().count(vid) == 1 and eta_in(vid) > 6
    real_now = intake.utcnow
    monkeypatch.setattr(intake, "utcnow", lambda: real_now() + datetime.timedelta(seconds=6))  # 6 s later
    with dbmod.db.connection_context():
        counts = intake.sweep(cfg, private.store.store)
    assert counts["requeued"] == 0 and queued_video_ids().count(vid) == 1, (counts, queued_video_ids())


# ---------------------------------------------------------------------------------------------
# The web app down while uploads finish and their notifications fire


def test_web_down_while_uploads_finish_every_upload_processed_once(private, tmp_path):
    """Nothing listens where the store's filer webhook points while three uploads land; the app comes
    back while the store is still retrying; the sweeper and the late notifications race, and each
    video runs once."""
    from streamforge.jobs import intake
    clip = tiny_clip(tmp_path / "c.mp4")
    assert not port_open(private.store.app_port)
    ids = [create_and_put(private.client, private.h, clip, complete=False) for _ in range(3)]
    t_down = time.monotonic()
    time.sleep(2.0)  # the filer's first deliveries fail: connection refused
    states = [private.client.get(f"/api/videos/{v}", headers=private.h).get_json()["upload_status"] for v in ids]
    assert states == ["UPLOADING"] * 3
    with LiveServer(private.app, port=private.store.app_port):
        with dbmod.db.connection_context():
            counts = intake.sweep(private.cfg, private.store.store)
        deadline = time.monotonic() + 8  # the store's own retries (3, backoff 1, 2, 4 s) may still come
        while time.monotonic() < deadline:
            time.sleep(0.5)
            queued = queued_video_ids()
            assert all(queued.count(v) <= 1 for v in ids), queued
        queued = queued_video_ids()
        assert sorted(queued) == sorted(ids), (queued, counts)
        assert drain_queue() == ["completed"] * 3
        with dbmod.db.connection_context():
            assert intake.sweep(private.cfg, private.store.store)["recovered_uploads"] == 0
        assert queued_video_ids() == []
        for vid in ids:
            v = assert_ladder_complete(private.client, private.h, private.store, vid)
            assert v["attempts"] == 1
            with dbmod.db.connection_context():
                assert runs_of(vid) == {"started": 1, "completed": 1}
    print(f"\nweb down: swept {counts['recovered_uploads']} of 3, the rest by late notifications; "
          f"all done {time.monotonic() - t_down:.1f} s after the uploads")


# ---------------------------------------------------------------------------------------------
# Deployments as processes on the SQLite default (or PostgreSQL + Redis), with the session's
# SeaweedFS as their external store

REDIS_DB = "15"  # (test_production 11, bench/faults.py 12, bench/webhook.py 13, bench/throughput.py 14)
BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]


@pytest.fixture
def stack(seaweed, tmp_path):
    """`streamforge web` / `worker` processes on the SQLite default, or on PostgreSQL and Redis with
    backend="postgres"; this process is pointed at their database and queue."""
    port = free_port()
    made: list[Services] = []
    databases = contextlib.ExitStack()

    def make(backend: str = "sqlite", **extra: str) -> Services:
        if backend == "postgres":
            require(port_open(6379), "Redis is not running on 127.0.0.1:6379")
            url = databases.enter_context(fresh_database_url("postgresql", tmp_path, "faults"))
            subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], check=True, capture_output=True)
            extra = {"STREAMFORGE_DATABASE_URL": url,
                     "STREAMFORGE_QUEUE_URL": f"redis://127.0.0.1:6379/{REDIS_DB}", **extra}
        s = Services(tmp_path, stack_env(seaweed, port, **extra), port)
        s.data.mkdir(parents=True, exist_ok=True)
        s.cfg = attach(s.env, s.data)
        seaweed.store.prepare([s.cfg.base_url])
        with dbmod.db.connection_context():
            _, s.token = videos.create_token(videos.get_or_create_user("stack@example.com"))
        s.h = {"Authorization": f"Bearer {s.token}"}
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop()
        with databases:  # dropped after the processes that use them have stopped
            subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], capture_output=True)


def api_upload(url: str, h: dict, data: bytes, title: str = "v", complete: bool = True) -> str:
    r = requests.post(f"{url}/api/videos", json={"title": title, "filename": "v.mp4", "size": len(data),
                                                 "content_type": "video/mp4"}, headers=h, timeout=30).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=60).raise_for_status()
    if complete:
        requests.post(f"{url}/api/videos/{r['video']['id']}/upload/complete", json={}, headers=h,
                      timeout=30).raise_for_status()
    return r["video"]["id"]


def wait_status(url: str, h: dict, ids: list[str], timeout: float = 120, watch=None) -> dict:
    deadline = time.time() + timeout
    states = {}
    while time.time() < deadline:
        states = {v: requests.get(f"{url}/api/videos/{v}", headers=h, timeout=30).json() for v in ids}
        if watch:
            watch(states)
        if all(s["status"] in ("COMPLETED", "FAILED") for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError({v: (s["status"], s["error_message"]) for v, s in states.items()})


# ---------------------------------------------------------------------------------------------
# A storm of notifications


STORM = int(os.environ.get("SF_TEST_STORM", "2000"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_notification_storm(stack, seaweed, tmp_path, backend):
    """~2,000 notifications from 16 clients against `streamforge web`: duplicates in both formats,
    reordering, removals, noise, unknown keys, garbage, and uploads that land mid-storm. No 5xx,
    one queued run per real upload, none for anything else; the latency stays flat. Two web
    processes, so duplicates race each other across processes too."""
    s = stack(backend, STREAMFORGE_SERVER_WORKERS="2")
    s.start_web()
    s.wait_for_log("web", "Booting worker", count=2)
    h = s.h
    bucket = seaweed.bucket

    def make(n, send):
        out = []
        for i in range(n):
            data = secrets.token_bytes(64 + i)
            r = requests.post(f"{s.url}/api/videos", json={"title": f"storm {i}", "filename": f"s {i}+ü.mp4",
                                                           "size": len(data), "content_type": "video/mp4"},
                              headers=h, timeout=30).json()
            if send:
                requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
            out.append((r["video"]["id"], r["video"]["original"]["key"], data, r["upload"]["url"]))
        return out

    early, late, never = make(20, True), make(5, False), make(10, False)
    real = [(k, len(d)) for _, k, d, _ in early + late]
    bodies = storm_bodies(bucket, real, [(k, len(d)) for _, k, d, _ in never], STORM)
    half = len(bodies) // 2
    t0 = time.perf_counter()
    first = fire(f"{s.url}/hooks/storage", seaweed.webhook_token, [b for _, _, b in bodies[:half]])
    for _, _, data, url in late:  # these bytes land mid-storm; their earlier events found nothing
        requests.put(url, data=data, headers={"Content-Type": "video/mp4", "If-None-Match": "*"},
                     timeout=30).raise_for_status()
    second = fire(f"{s.url}/hooks/storage", seaweed.webhook_token, [b for _, _, b in bodies[half:]])
    wall = time.perf_counter() - t0
    results = first + second
    statuses = [st for st, _ in results]
    kinds = [k for k, _, _ in bodies]
    assert not [st for st in statuses if st >= 500 or st < 0], sorted(set(statuses))
    for kind, st in zip(kinds, statuses):
        assert st in ({200, 202} if kind != "garbage" else {200, 400}), (kind, st)
    # one run per real upload (the late ones too, since they had events after their bytes), none else
    announced_after = {key for kind, key, _ in bodies[half:] if kind == "real"}
    queued = queued_video_ids()
    for vid, *_ in early:
        assert queued.count(vid) == 1, vid
    for vid, key, *_ in late:  # (its bytes came mid-storm: queued once if an event followed them)
        assert queued.count(vid) == (1 if key in announced_after else 0), vid
    assert not set(queued) - {v for v, *_ in early + late}
    for vid, *_ in never:
        v = requests.get(f"{s.url}/api/videos/{vid}", headers=h, timeout=10).json()
        assert (v["upload_status"], v["status"]) == ("UPLOADING", "PENDING")
    assert statuses.count(202) == len(set(queued))  # the 202s are exactly the enqueuing answers
    # each queued video runs once (the bytes are not video: each run ends FAILED at the probe)
    outcomes = drain_queue(limit=100)
    assert outcomes == ["failed"] * len(set(queued))
    with dbmod.db.connection_context():
        assert all(runs_of(v)["started"] == 1 for v in set(queued))
    lat = [t for _, t in results]
    quarter = len(lat) // 4
    p = {q: percentile(lat, q) * 1000 for q in (50, 95, 99)}
    early_p95, late_p95 = percentile(lat[:quarter], 95), percentile(lat[-quarter:], 95)
    print(f"\nstorm ({backend}): {len(lat)} notifications in {wall:.1f} s ({len(lat) / wall:.0f}/s), "
          f"latency p50 {p[50]:.1f} ms, p95 {p[95]:.1f} ms, p99 {p[99]:.1f} ms, max {max(lat) * 1000:.0f} ms; "
          f"p95 first quarter {early_p95 * 1000:.1f} ms, last quarter {late_p95 * 1000:.1f} ms; "
          f"{len(set(queued))} runs for {len(real)} real uploads")
    assert p[99] < 3000
    assert late_p95 < 3 * early_p95 + 0.25  # no build-up over the storm
    assert "Traceback" not in s.log("web")


# ---------------------------------------------------------------------------------------------
# The temp disk full during a transcode


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of the test's own, or a skip when this machine cannot mount one."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (the full-disk fault is simulated on one)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0777", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file until only `leave` bytes are free on `disk`."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        remaining = max(0, free - leave)
        while remaining:
            n = min(remaining, 4 * MiB)
            f.write(bytes(n))
            remaining -= n
    return filler


def test_temp_disk_full_during_transcode(small_disk, seaweed, make_app, monkeypatch, tmp_path):
    """Another process fills the worker's temp disk as the transcode starts: FAILED with a readable
    reason, the run's temp files gone, and the same worker completes the next video once there is room."""
    cfg = seaweed.make_config(tmp_path / "d", env={"STREAMFORGE_PIPELINE_HEIGHTS": "240",
                                                   "STREAMFORGE_PIPELINE_TEMP_DIR": str(small_disk)})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("disk@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    clip = tiny_clip(tmp_path / "d.mp4", seconds=2)
    first = create_and_put(client, h, clip)
    second = create_and_put(client, h, clip)
    real_transcode, real_execute = processing.VideoRun.transcode, processing.VideoRun.execute
    seen = {}

    def transcode(self, src, outdir, uploader):
        if not seen:
            seen["filler"] = fill(small_disk, leave=16 * 1024)
            seen["workdir"] = src.parent
        return real_transcode(self, src, outdir, uploader)

    def execute(self):
        try:
            return real_execute(self)
        finally:
            if "filler" in seen and seen["filler"].exists():
                seen["left"] = sorted(p.name for p in small_disk.iterdir() if p.name != "filler")
                seen["filler"].unlink()  # the other process is done: room again

    monkeypatch.setattr(processing.VideoRun, "transcode", transcode)
    monkeypatch.setattr(processing.VideoRun, "execute", execute)
    assert drain_queue() == ["failed", "completed"]
    v = client.get(f"/api/videos/{first}", headers=h).get_json()
    assert v["status"] == "FAILED" and v["master_playlist_url"] is None
    msg = v["error_message"]
    assert "space" in msg.lower() and "Traceback" not in msg and len(msg) < 300, msg
    assert seen["left"] == [], "the failed run left temp files behind"
    assert not seen["workdir"].exists() and list(small_disk.iterdir()) == []
    assert seaweed.store.list(f"processed/{first}/") == []  # nothing of the failed run stays published
    with dbmod.db.connection_context():
        failed = [r for r in videos.logs_of(videos.get_video_by_id(first)) if r.status == "failed"]
    assert failed and failed[0].stage in ("transcode", "thumbnails")
    assert_ladder_complete(client, h, seaweed, second)
    # and the failed one goes through on reprocess, now that there is room
    assert client.post(f"/api/videos/{first}/reprocess", headers=h).status_code == 202
    assert drain_queue() == ["completed"]
    print(f"\ntemp disk full: {msg}")


# ---------------------------------------------------------------------------------------------
# SQLite shared by a busy web app and a worker


# Regression: finish_run() used to open its transaction with a read (BEGIN DEFERRED); on SQLite in WAL
# mode a write committed by another connection between that read and its first write failed at once
# with "database is locked" (busy_timeout does not apply), and the finished run was thrown away.


def test_a_write_committed_during_the_final_transaction_does_not_fail_the_run(seaweed, make_app, monkeypatch,
                                                                             tmp_path):
    """The web app commits a write at the moment the worker records a finished run: the run completes."""
    import sqlite3

    from streamforge.store.db import Rendition
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_PIPELINE_HEIGHTS": "240"})
    client = make_app(cfg).test_client()
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("wal@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    vid = create_and_put(client, h, tiny_clip(tmp_path / "w.mp4"))
    other = client.post("/api/videos", json={"title": "other", "filename": "o.mp4", "size": 10,
                                             "content_type": "video/mp4"}, headers=h).get_json()["video"]["id"]
    path = cfg.database_url[len("sqlite:///"):]

    def web_app_writes():  # what a PATCH from a browser does, on the web app's own connection
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("UPDATE videos SET title = ? WHERE id = ?", ("edited meanwhile", other))
            conn.commit()
        finally:
            conn.close()

    real_delete = Rendition.delete
    writers: list[threading.Thread] = []

    def delete(cls):
        if not writers:  # inside finish_run's transaction, after its first read
            writers.append(threading.Thread(target=web_app_writes))
            writers[0].start()
            writers[0].join(1.0)  # (with a write lock held here, the writer waits for our commit)
        return real_delete()

    monkeypatch.setattr(Rendition, "delete", classmethod(delete))
    outcome = drain_queue()
    writers[0].join(30)
    v = client.get(f"/api/videos/{vid}", headers=h).get_json()
    assert client.get(f"/api/videos/{other}", headers=h).get_json()["title"] == "edited meanwhile"
    assert outcome == ["completed"], (outcome, v["error_message"])


SQLITE_VIDEOS = int(os.environ.get("SF_TEST_SQLITE_VIDEOS", "3"))


@pytest.mark.parametrize("backend", [
    BACKENDS[0], BACKENDS[1]])
def test_database_under_concurrent_web_and_worker_writes(stack, tmp_path, backend):
    """`streamforge web` (two processes of 8 threads) and `streamforge worker` (with a 1 s sweeper) on
    the SQLite default (and on PostgreSQL): 16 clients write through the API while three videos are
    processed. No 5xx, no "database is locked" in any answer or any video's error, and each video
    runs once."""
    s = stack(backend, STREAMFORGE_SWEEPER_INTERVAL_SECONDS="1", STREAMFORGE_SWEEPER_LEASE_SECONDS="20",
              STREAMFORGE_SERVER_WORKERS="2")
    s.start_web()
    s.wait_for_log("web", "Booting worker", count=2)
    s.start("worker", "worker")
    clip = tiny_clip(tmp_path / "q.mp4", seconds=2)
    ids = [api_upload(s.url, s.h, clip, f"busy {i}") for i in range(SQLITE_VIDEOS)]
    stop = threading.Event()
    answers: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        sess = requests.Session()
        sess.headers.update(s.h)
        rnd = random.Random(n)
        mine: list[str] = []
        while not stop.is_set():
            op = rnd.random()
            if op < 0.35 or not mine:
                r = sess.post(f"{s.url}/api/videos", json={"title": f"w{n}", "filename": "a.mp4", "size": 10,
                                                           "content_type": "video/mp4"}, timeout=60)
                if r.status_code == 201:
                    mine.append(r.json()["video"]["id"])
            elif op < 0.6:
                r = sess.patch(f"{s.url}/api/videos/{rnd.choice(mine)}", json={"title": secrets.token_hex(4),
                                                                              "tags": ["a", "b"]}, timeout=60)
            elif op < 0.7:
                r = sess.delete(f"{s.url}/api/videos/{mine.pop()}", timeout=60)
            elif op < 0.8:
                r = sess.post(f"{s.url}/api/tokens", json={"name": "x"}, timeout=60)
            elif op < 0.9:
                r = sess.post(f"{s.url}/api/videos/{rnd.choice(mine)}/upload/complete", json={}, timeout=60)
            else:
                r = sess.get(f"{s.url}/api/videos/{rnd.choice(ids)}", timeout=60)
            with lock:
                answers.append((r.request.method, r.status_code, r.text))

    errors: list[str] = []

    def watch(states):
        for v in states.values():
            if v.get("error_message") and "lock" in v["error_message"].lower():
                errors.append(v["error_message"])

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(16)]
    t0 = time.time()
    for t in threads:
        t.start()
    try:
        states = wait_status(s.url, s.h, ids, timeout=180, watch=watch)
        while time.time() - t0 < 8:  # keep the load up for a while even on a fast machine
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wall = time.time() - t0
    bad = [a for a in answers if a[1] >= 500]
    locked = [a for a in answers if "locked" in a[2].lower()]
    from streamforge.store.db import ProcessingLog
    with dbmod.db.connection_context():
        failed_stages = [(r.video_id, r.stage, r.message) for r in
                         ProcessingLog.select().where(ProcessingLog.video_id.in_(ids) & (ProcessingLog.status == "failed"))]
    assert not failed_stages, failed_stages
    assert not bad, bad[:3]
    assert not locked, ([(m, st, re.findall(r'.{0,120}locked.{0,80}', text, re.I)) for m, st, text in locked[:3]],
                        [line for line in s.log("worker").splitlines() if "lock" in line.lower()][:5])
    assert not errors, (errors[:3], [line for line in s.log("worker").splitlines() if "lock" in line.lower()][:5])
    assert {v["status"] for v in states.values()} == {"COMPLETED"}, {k: v["error_message"] for k, v in states.items()}
    assert [v["attempts"] for v in states.values()] == [1] * len(ids)
    with dbmod.db.connection_context():
        assert [runs_of(v) for v in ids] == [{"started": 1, "completed": 1}] * len(ids)
    worker_locked = s.log("worker").lower().count("database is locked")
    print(f"\n{backend}: {len(answers)} API writes/reads in {wall:.1f} s ({len(answers) / wall:.0f}/s) while {len(ids)} videos "
          f"ran; 5xx 0, 'locked' answers 0; worker log mentions of 'database is locked': {worker_locked}")
    assert "database is locked" not in s.log("web").lower()


# ---------------------------------------------------------------------------------------------
# A big multipart upload


BIG = int(os.environ.get("SF_TEST_BIG_MB", "256")) * MiB


def test_big_multipart_upload_memory_stays_flat(stack, seaweed, tmp_path):
    """A 256 MiB upload (a real 2 s clip padded with a `free` box, generated part by part): the web
    app's memory does not move (the bytes go straight to the store), the worker streams the original
    to disk (its peak is that of a run on the small clip), and the ladder is right."""
    s = stack(STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD=str(64 * MiB), STREAMFORGE_UPLOAD_PART_SIZE=str(16 * MiB))
    web = s.start_web()
    worker = s.start("worker", "worker")
    clip = tiny_clip(tmp_path / "big.mp4", seconds=2)
    # a warm-up run on the plain clip: the worker's own peak for this ladder
    with RssSampler(worker.pid) as small:
        warm = api_upload(s.url, s.h, clip, "warm-up")
        assert wait_status(s.url, s.h, [warm])[warm]["status"] == "COMPLETED"
    body = PaddedMp4(clip, BIG)
    r = requests.post(f"{s.url}/api/videos", json={"title": "big", "filename": "big.mp4", "size": BIG,
                                                   "content_type": "video/mp4"}, headers=s.h, timeout=30)
    made = r.json()
    up, vid = made["upload"], made["video"]["id"]
    assert up["method"] == "MULTIPART" and up["part_size"] == 16 * MiB
    numbers = list(range(1, up["part_count"] + 1))
    t0 = time.time()
    with RssSampler(web.pid) as web_rss, RssSampler(worker.pid) as big:
        urls = requests.post(f"{s.url}/api/videos/{vid}/upload/parts", json={"part_numbers": numbers},
                             headers=s.h, timeout=30).json()["urls"]
        parts = []
        for n in numbers:
            chunk = body.read((n - 1) * up["part_size"], min(BIG, n * up["part_size"]))
            resp = requests.put(urls[str(n)], data=chunk, timeout=120)
            resp.raise_for_status()
            parts.append({"part_number": n, "etag": resp.headers["ETag"]})
            del chunk
        done = requests.post(f"{s.url}/api/videos/{vid}/upload/complete", json={"parts": parts}, headers=s.h,
                             timeout=120)
        assert done.status_code == 200, done.text
        uploaded = time.time() - t0
        v = wait_status(s.url, s.h, [vid], timeout=240)[vid]
    total = time.time() - t0
    assert v["status"] == "COMPLETED", v["error_message"]
    assert v["original"]["size"] == BIG and abs(v["original"]["duration"] - 2.0) < 0.2
    assert [(r["height"], r["codec"]) for r in v["renditions"]] == [(240, "h264")]
    assert requests.get(v["master_playlist_url"], timeout=10).status_code == 200
    web_growth = (web_rss.peak - web_rss.samples[0]) / 1024
    worker_extra = (big.peak - small.peak) / 1024
    print(f"\nbig upload: {BIG / MiB:.0f} MiB in {len(numbers)} parts, uploaded in {uploaded:.1f} s, COMPLETED "
          f"{total:.1f} s after the first byte; web RSS {web_rss.samples[0] / 1024:.0f} -> peak "
          f"{web_rss.peak / 1024:.0f} MiB; worker peak {big.peak / 1024:.0f} MiB vs {small.peak / 1024:.0f} MiB "
          f"on the plain clip")
    assert web_growth < 32, f"the web app grew by {web_growth:.0f} MiB during a {BIG >> 20} MiB upload"
    # a worker that held the original would peak at least BIG (256 MiB) above; one that streams it peaked
    # 15-30 MiB above on its own and 96 MiB once in a full CI run (the cause was not found)
    assert worker_extra < BIG / MiB / 2, f"the worker's peak was {worker_extra:.0f} MiB above the plain clip's"
    # clean up the store: 256 MiB is not left in the shared bucket
    assert requests.delete(f"{s.url}/api/videos/{vid}", headers=s.h, timeout=60).status_code == 204
