"""Fault report: break a running StreamForge on purpose and print how it recovered.

    python bench/faults.py [--quick] [--modes embedded,production] [--storm N] [--big-mb N] [--json PATH]

Two deployments, each as real processes (`streamforge web`, `streamforge worker`, a SeaweedFS):

  * embedded: the embedded default split into its parts: `streamforge storage` (the SeaweedFS that
    `serve` runs, its filer webhook pointed at the web app), SQLite database and SQLite queue;
  * production: PostgreSQL + Redis, and SeaweedFS as an external S3 endpoint with its own filer webhook
    (skipped, with the reason, when PostgreSQL or Redis is not running on 127.0.0.1).

Scenarios (the same code paths as tests/test_faults.py, but with real processes and real waits: the
worker's own 10 s / 20 s retry backoff, the sweeper's interval, the lease):

  worker SIGKILL    the worker killed mid-transcode; another takes the run over after the lease
  store down        the object store stopped while the worker uploads, started again 3 s later
  store down long   the store stays down past the retry budget (3 attempts); then back, and reprocess
  web down          the web app stopped while uploads land and their notifications fire; back 3 s later
  storm             10,000 notifications (2,000 with --quick): duplicates, reordering, noise, garbage
  temp disk full    the worker's temp dir (a 64 MiB tmpfs) filled as a transcode starts (root only)
  db under load     16 API clients writing while 3 videos are processed
  big upload        a 2 GiB multipart upload (256 MiB with --quick) generated on the fly

The table: scenario, outcome, runs per video (processing runs started; completed), time to recover,
anything lost. The goal row reads "recovered, 1 run, nothing lost".
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from test_faults import (  # noqa: E402  (the tests' helpers: one code path for both)
    PaddedMp4,
    RssSampler,
    Services,
    attach,
    fire,
    percentile,
    runs_of,
    storm_bodies,
    tiny_clip,
)

from streamforge.store import db as dbmod  # noqa: E402
from streamforge.store import videos  # noqa: E402
from streamforge.store.connect import object_store  # noqa: E402

MiB = 1 << 20
REDIS_DB = "12"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def port_open(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), 1):
            return True
    except OSError:
        return False


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Skip(Exception):
    """A scenario or mode that cannot run on this machine (the message says why)."""


# ---------------------------------------------------------------------------------------------
# A deployment


class Deployment:
    """web + worker processes and a store the bench can stop and start."""

    def __init__(self, mode: str, tmp: Path):
        self.mode, self.tmp = mode, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
        env.update({"STREAMFORGE_SERVER_HOST": "127.0.0.1", "STREAMFORGE_SERVER_PORT": str(self.port),
                    "STREAMFORGE_PIPELINE_HEIGHTS": "240", "STREAMFORGE_SWEEPER_INTERVAL_SECONDS": "2",
                    "STREAMFORGE_SWEEPER_LEASE_SECONDS": "8", "PYTHONPATH": str(ROOT)})
        self.dbname = None
        self.handle = None
        if mode == "production":
            if not (port_open(5432) and port_open(6379)):
                raise Skip("PostgreSQL (5432) or Redis (6379) is not running on 127.0.0.1")
            from store_fixtures import start_seaweed
            self.dbname = "sf_faults_" + uuid.uuid4().hex[:8]
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {self.dbname}"],
                           check=True, capture_output=True)
            subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], check=True, capture_output=True)
            token = "faults-" + secrets.token_hex(12)
            self.handle = start_seaweed(tmp / "store", f"http://127.0.0.1:{self.port}/hooks/storage", token,
                                        bucket="faults")
            env.update({
                "STREAMFORGE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{self.dbname}",
                "STREAMFORGE_QUEUE_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
                "STREAMFORGE_STORAGE_ENDPOINT": self.handle.endpoint,
                "STREAMFORGE_STORAGE_ACCESS_KEY": self.handle.access_key,
                "STREAMFORGE_STORAGE_SECRET_KEY": self.handle.secret_key, "STREAMFORGE_STORAGE_BUCKET": "faults",
                "STREAMFORGE_WEBHOOK_TOKEN": token, "STREAMFORGE_SERVER_SECRET_KEY": "f-" + secrets.token_hex(16)})
        self.svc = Services(tmp, env, self.port)
        self.svc.data.mkdir(parents=True, exist_ok=True)
        self.url = self.svc.url
        if mode == "embedded":
            self.store_start()
        self.svc.start_web()
        self.start_worker()
        self.cfg = attach(env, self.svc.data)
        self.store = object_store(self.cfg)
        with dbmod.db.connection_context():
            _, tok = videos.create_token(videos.get_or_create_user("bench@example.com"))
        self.h = {"Authorization": f"Bearer {tok}"}
        self.clip = tiny_clip(tmp / "clip.mp4", seconds=2)
        self.long_clip = tiny_clip(tmp / "long.mp4", seconds=12, width=640, height=360)

    # -- the parts ---------------------------------------------------------------------------

    def store_start(self) -> None:
        if self.handle is not None:
            if not self.handle.embedded.running():
                self.handle.embedded.start()
                self.handle.embedded.wait_ready(60)
            return
        before = len(self.svc.log("storage"))
        self.svc.start("storage", "storage")
        deadline = time.time() + 90
        while "storage: SeaweedFS S3 at" not in self.svc.log("storage")[before:]:
            if self.svc.procs["storage"].poll() is not None or time.time() > deadline:
                raise RuntimeError("streamforge storage did not start: " + self.svc.log("storage")[-800:])
            time.sleep(0.2)

    def store_stop(self) -> None:
        if self.handle is not None:
            self.handle.embedded.stop(timeout=5)
        else:
            self.svc.stop("storage")

    def ensure_up(self) -> str:
        """Restart whatever part a failed scenario left stopped; returns what it did ("" if nothing)."""
        done = []
        store = self.handle.embedded.running() if self.handle is not None else (
            "storage" in self.svc.procs and self.svc.procs["storage"].poll() is None)
        if not store:
            self.store_start()
            done.append("store restarted")
        try:
            self.store.ping()
        except Exception as e:  # noqa: BLE001 (reported, not raised: the next scenario shows the damage)
            done.append(f"store unreachable at {self.store.endpoint}: {str(e)[:60]}")
        if self.svc.procs["web"].poll() is not None:
            self.svc.start_web()
            done.append("web restarted")
        if self.svc.procs.get("worker") is None or self.svc.procs["worker"].poll() is not None:
            self.start_worker("worker")
            done.append("worker restarted")
        return "; ".join(done)

    def start_worker(self, name: str = "worker", **env: str) -> subprocess.Popen:
        if env:
            saved = self.svc.env
            self.svc.env = {**saved, **env}
            try:
                return self.svc.start(name, "worker")
            finally:
                self.svc.env = saved
        return self.svc.start(name, "worker")

    def close(self, keep: bool = False) -> None:
        self.svc.stop()
        if self.handle is not None:
            self.handle.embedded.stop(timeout=5)
        if keep and self.dbname:
            log(f"{self.mode}: database {self.dbname} kept")
        elif self.dbname:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {self.dbname}"],
                           capture_output=True)
            subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], capture_output=True)

    # -- the API -----------------------------------------------------------------------------

    def create(self, size: int, title: str = "bench") -> dict:
        r = requests.post(f"{self.url}/api/videos", json={"title": title, "filename": "v.mp4", "size": size,
                                                          "content_type": "video/mp4"}, headers=self.h, timeout=30)
        r.raise_for_status()
        return r.json()

    def upload(self, data: bytes, title: str = "bench", complete: bool = True) -> str:
        made = self.create(len(data), title)
        requests.put(made["upload"]["url"], headers=made["upload"]["headers"], data=data, timeout=120).raise_for_status()
        if complete:
            requests.post(f"{self.url}/api/videos/{made['video']['id']}/upload/complete", json={}, headers=self.h,
                          timeout=60).raise_for_status()
        return made["video"]["id"]

    def get(self, vid: str) -> dict:
        return requests.get(f"{self.url}/api/videos/{vid}", headers=self.h, timeout=30).json()

    def wait(self, ids: list[str], pred=lambda v: v["status"] in ("COMPLETED", "FAILED"), timeout: float = 180,
             every: float = 0.2) -> dict:
        deadline = time.time() + timeout
        states = {}
        while time.time() < deadline:
            states = {v: self.get(v) for v in ids}
            if all(pred(s) for s in states.values()):
                return states
            time.sleep(every)
        raise TimeoutError({v: (s.get("status"), s.get("error_message")) for v, s in states.items()})

    def wait_stage(self, vid: str, stage: str = "transcode", timeout: float = 120) -> None:
        """Until the video's run has begun `stage` (read from its processing log, every 20 ms)."""
        from streamforge.store.db import ProcessingLog
        deadline = time.time() + timeout
        while time.time() < deadline:
            with dbmod.db.connection_context():
                if ProcessingLog.select().where((ProcessingLog.video_id == vid) & (ProcessingLog.stage == stage)
                                                & (ProcessingLog.status == "started")).exists():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"{vid} never reached {stage}")

    def runs(self, vid: str) -> dict:
        with dbmod.db.connection_context():
            return runs_of(vid)

    def wait_idle(self, timeout: float = 120) -> None:
        """Until nothing is queued or processing."""
        from streamforge.store.db import ProcessingStatus, UploadStatus, Video
        deadline = time.time() + timeout
        while time.time() < deadline:
            with dbmod.db.connection_context():
                busy = Video.select().where((Video.status == ProcessingStatus.PROCESSING) | (
                    (Video.status == ProcessingStatus.PENDING) & (Video.upload_status == UploadStatus.UPLOADED))).count()
            if not busy:
                return
            time.sleep(0.5)

    def intact(self, vids: list[str]) -> list[str]:
        """Which of these videos lost something: not COMPLETED, its original gone, or a playlist naming
        an object the store does not have."""
        lost = []
        for vid in vids:
            v = self.get(vid)
            if v["status"] != "COMPLETED":
                lost.append(f"{vid[-6:]} {v['status']}")
                continue
            if self.store.stat(v["original"]["key"]) is None:
                lost.append(f"{vid[-6:]} original")
            master = requests.get(v["master_playlist_url"], timeout=30)
            if master.status_code != 200:
                lost.append(f"{vid[-6:]} master {master.status_code}")
                continue
            for line in master.text.splitlines():
                if line and not line.startswith("#"):
                    media = requests.get(line, timeout=30)
                    refs = [x for x in media.text.splitlines() if x and not x.startswith("#")]
                    last = requests.get(refs[-1], timeout=30, stream=True) if refs else None
                    if media.status_code != 200 or last is None or last.status_code != 200:
                        lost.append(f"{vid[-6:]} rendition")
                    if last is not None:
                        last.close()
        return lost


def debug_log(vid: str) -> None:
    """With SF_BENCH_DEBUG=1: the video's processing log on stderr."""
    if os.environ.get("SF_BENCH_DEBUG"):
        with dbmod.db.connection_context():
            for r in videos.logs_of(videos.get_video_by_id(vid)):
                log(f"  {r.created_at} attempt {r.attempt} {r.stage} {r.status} {r.message[:100]}")


def row(scenario: str, outcome: str, runs: str = "", recover: float | None = None, lost: list | str = "",
        notes: str = "") -> dict:
    lost_text = lost if isinstance(lost, str) else ("nothing lost" if not lost else "; ".join(lost))
    return {"scenario": scenario, "outcome": outcome, "runs": runs,
            "recover": "-" if recover is None else f"{recover:.1f} s", "lost": lost_text, "notes": notes}


def runs_text(d: Deployment, ids: list[str]) -> str:
    counts = [d.runs(v) for v in ids]
    started = sorted({c["started"] for c in counts})
    completed = sorted({c["completed"] for c in counts})
    fmt = lambda xs: "/".join(map(str, xs))  # noqa: E731
    return f"{fmt(completed)} run" + ("" if completed == [1] else "s") + (
        "" if started == completed else f" ({fmt(started)} started)")


# ---------------------------------------------------------------------------------------------
# Scenarios


def worker_sigkill(d: Deployment, quick: bool) -> dict:
    vid = d.upload(d.long_clip, "killed")
    d.wait_stage(vid)
    time.sleep(0.5)
    d.svc.stop("worker", signal.SIGKILL)
    killed = time.time()
    d.start_worker("worker")
    states = d.wait([vid], timeout=120)
    v = states[vid]
    return row("worker SIGKILL mid-transcode", "recovered" if v["status"] == "COMPLETED" else f"{v['status']}: "
               f"{v['error_message']}", runs_text(d, [vid]), time.time() - killed, d.intact([vid]),
               f"attempts {v['attempts']}; lease 8 s + sweeper 2 s")


def store_down(d: Deployment, quick: bool) -> dict:
    vid = d.upload(d.long_clip, "store down")
    d.wait_stage(vid)
    time.sleep(0.5)  # segments are going up while the ladder encodes
    stopped = time.time()
    d.store_stop()
    time.sleep(3)
    d.store_start()
    back = time.time()
    v = d.wait([vid], timeout=120)[vid]
    debug_log(vid)
    with dbmod.db.connection_context():
        failed = [f"{r.stage}" for r in videos.logs_of(videos.get_video_by_id(vid)) if r.status == "failed"]
    outcome = "recovered" if v["status"] == "COMPLETED" else f"{v['status']}: {v['error_message']}"
    return row("store down 3 s during upload", outcome, runs_text(d, [vid]), time.time() - back, d.intact([vid]),
               f"down {back - stopped:.0f} s (stop + 3 s + start); failed stage {','.join(failed) or '-'}; retried after backoff")


def store_down_long(d: Deployment, quick: bool) -> dict:
    vid = d.upload(d.long_clip, "store down long")
    d.wait_stage(vid)
    time.sleep(0.5)
    stopped = time.time()
    d.store_stop()
    try:
        v = d.wait([vid], lambda v: v["status"] == "FAILED", timeout=120, every=0.5)[vid]
    finally:
        failed_at = time.time()
        d.store_start()
    back = time.time()
    reason = v["error_message"]
    debug_log(vid)
    r = requests.post(f"{d.url}/api/videos/{vid}/reprocess", headers=d.h, timeout=30)
    v2 = d.wait([vid], timeout=120)[vid]
    ok = r.status_code == 202 and v2["status"] == "COMPLETED"
    return row("store down past retry budget", ("FAILED, then reprocess: recovered" if ok else
               f"reprocess {r.status_code}, {v2['status']}"), runs_text(d, [vid]), time.time() - back,
               d.intact([vid]), f"FAILED {failed_at - stopped:.0f} s after the stop: {reason[:70]}")


def web_down(d: Deployment, quick: bool) -> dict:
    d.wait_idle()
    made = [d.create(len(d.clip), f"web down {i}") for i in range(3)]
    d.svc.stop("web")
    down = time.time()
    try:
        for m in made:  # the bytes land; the store's notifications find nobody
            requests.put(m["upload"]["url"], headers=m["upload"]["headers"], data=d.clip, timeout=60).raise_for_status()
        landed = time.time()
        ids = [m["video"]["id"] for m in made]
        with dbmod.db.connection_context():  # (the API is down: read the database)
            from streamforge.store.db import Video
            time.sleep(3)
            during = {v.status for v in Video.select().where(Video.id.in_(ids))}
    finally:
        d.svc.start_web()
    back = time.time()
    states = d.wait(ids, timeout=120)
    done = max(time.time() - landed, 0)
    time.sleep(3)  # any late notification or sweep would start a second run now
    ok = all(s["status"] == "COMPLETED" for s in states.values())
    return row("web down while uploads land", "recovered" if ok else "not all COMPLETED", runs_text(d, ids), done,
               d.intact(ids), f"web down {back - down:.0f} s; 3 uploads; states 3 s after they landed, web still "
               f"down: {'/'.join(sorted(during))} (the worker's sweeper, every 2 s, needs no web app)")


def storm(d: Deployment, quick: bool, n: int) -> dict:
    d.wait_idle()
    bucket = d.cfg.storage.bucket

    def make(count: int, send: bool):
        out = []
        for i in range(count):
            data = secrets.token_bytes(64 + i)
            m = d.create(len(data), f"storm {i}")
            if send:
                requests.put(m["upload"]["url"], headers=m["upload"]["headers"], data=data, timeout=30).raise_for_status()
            out.append((m["video"]["id"], m["video"]["original"]["key"], data, m["upload"]["url"]))
        return out

    early, late, never = make(20, True), make(5, False), make(10, False)
    real = [(k, len(b)) for _, k, b, _ in early + late]
    bodies = storm_bodies(bucket, real, [(k, len(b)) for _, k, b, _ in never], n)
    half = len(bodies) // 2
    t0 = time.perf_counter()
    results = fire(f"{d.url}/hooks/storage", d.cfg.webhook.token, [b for _, _, b in bodies[:half]])
    for _, _, data, url in late:
        requests.put(url, data=data, headers={"Content-Type": "video/mp4", "If-None-Match": "*"},
                     timeout=30).raise_for_status()
    results += fire(f"{d.url}/hooks/storage", d.cfg.webhook.token, [b for _, _, b in bodies[half:]])
    wall = time.perf_counter() - t0
    statuses = [s for s, _ in results]
    fivexx = sum(1 for s in statuses if s >= 500 or s < 0)
    announced_after = {key for kind, key, _ in bodies[half:] if kind == "real"}
    expect = {v: 1 for v, *_ in early} | {v: int(k in announced_after) for v, k, *_ in late}
    expect |= {v: 0 for v, *_ in never}
    d.wait_idle()
    got = {v: d.runs(v)["started"] for v in expect}
    wrong = [f"{v[-6:]}: {got[v]} runs, expected {n}" for v, n in expect.items() if got[v] != n]
    lat = [t for _, t in results]
    q = len(lat) // 4
    notes = (f"{len(lat)} in {wall:.1f} s ({len(lat) / wall:.0f}/s); p50 {percentile(lat, 50) * 1e3:.0f} ms, "
             f"p99 {percentile(lat, 99) * 1e3:.0f} ms, max {max(lat) * 1e3:.0f} ms; p95 first/last quarter "
             f"{percentile(lat[:q], 95) * 1e3:.0f}/{percentile(lat[-q:], 95) * 1e3:.0f} ms; 5xx {fivexx}")
    outcome = "no 5xx, latency flat" if not fivexx else f"{fivexx} 5xx"
    return row(f"storm of {len(lat)} notifications", outcome,
               "1 run per real upload" if not wrong else "wrong run counts", None, wrong, notes)


def temp_disk_full(d: Deployment, quick: bool) -> dict:
    if os.geteuid() != 0 or not shutil.which("mount"):
        raise Skip("needs root to mount a small tmpfs")
    mnt = d.tmp / "small-disk"
    mnt.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0777", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    d.wait_idle()
    d.svc.stop("worker")
    d.start_worker("disk-worker", STREAMFORGE_PIPELINE_TEMP_DIR=str(mnt))
    filler = mnt / "filler"
    try:
        vid = d.upload(d.long_clip, "disk full")
        deadline = time.time() + 120
        while time.time() < deadline:  # the run's output folder appears: the transcode has begun
            if any((p / "out").exists() for p in mnt.glob("sf-run-*")):
                break
            time.sleep(0.01)
        st = os.statvfs(mnt)
        try:
            with open(filler, "wb") as f:  # another process fills the disk (the run writes meanwhile)
                remaining = st.f_bavail * st.f_frsize - 16 * 1024
                while remaining > 0:
                    f.write(bytes(min(remaining, 4 * MiB)))
                    remaining -= 4 * MiB
        except OSError:
            pass  # full already
        v = d.wait([vid], timeout=120)[vid]
        left = sorted(p.name for p in mnt.iterdir() if p.name != "filler")
        filler.unlink()
        freed = time.time()
        nxt = d.upload(d.clip, "after the disk was freed")
        v_next = d.wait([nxt], timeout=120)[nxt]
        requests.post(f"{d.url}/api/videos/{vid}/reprocess", headers=d.h, timeout=30)
        v_again = d.wait([vid], timeout=120)[vid]
        recover = time.time() - freed
    finally:
        d.svc.stop("disk-worker")
        d.start_worker("worker")
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    ok = v["status"] == "FAILED" and v_next["status"] == "COMPLETED" and v_again["status"] == "COMPLETED"
    outcome = ("FAILED readably; next video and reprocess: recovered" if ok and not left else
               f"{v['status']}/{v_next['status']}/{v_again['status']}, temp left: {left}")
    return row("temp disk full in transcode", outcome, runs_text(d, [nxt]), recover, d.intact([vid, nxt]),
               f"reason: {v['error_message'][:60]}; temp files left: {len(left)}")


def db_under_load(d: Deployment, quick: bool) -> dict:
    d.wait_idle()
    ids = [d.upload(d.clip, f"busy {i}") for i in range(3)]
    stop = threading.Event()
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        sess = requests.Session()
        sess.headers.update(d.h)
        rnd = random.Random(n)
        mine: list[str] = []
        while not stop.is_set():
            op = rnd.random()
            if op < 0.35 or not mine:
                r = sess.post(f"{d.url}/api/videos", json={"title": f"w{n}", "filename": "a.mp4", "size": 10,
                                                           "content_type": "video/mp4"}, timeout=60)
                if r.status_code == 201:
                    mine.append(r.json()["video"]["id"])
            elif op < 0.6:
                r = sess.patch(f"{d.url}/api/videos/{rnd.choice(mine)}", json={"title": secrets.token_hex(4)},
                               timeout=60)
            elif op < 0.75:
                r = sess.delete(f"{d.url}/api/videos/{mine.pop()}", timeout=60)
            elif op < 0.85:
                r = sess.post(f"{d.url}/api/tokens", json={"name": "x"}, timeout=60)
            else:
                r = sess.get(f"{d.url}/api/videos/{rnd.choice(ids)}", timeout=60)
            with lock:
                answers.append((r.status_code, r.text))

    seen_locked: list[str] = []

    def watch(v) -> bool:
        if v.get("error_message") and "lock" in v["error_message"].lower():
            seen_locked.append(v["error_message"])
        return v["status"] in ("COMPLETED", "FAILED")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(16)]
    t0 = time.time()
    for t in threads:
        t.start()
    try:
        states = d.wait(ids, watch, timeout=180)
        while time.time() - t0 < 10:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wall = time.time() - t0
    fivexx = sum(1 for s, _ in answers if s >= 500)
    locked = sum(1 for _, text in answers if "locked" in text.lower())
    ok = not fivexx and not locked and not seen_locked and all(s["status"] == "COMPLETED" for s in states.values())
    kind = "SQLite" if d.mode == "embedded" else "PostgreSQL"
    outcome = "no 5xx, no 'locked'" if ok else (f"{fivexx} 5xx, {locked} 'locked' answers, "
                                                 f"{len(set(seen_locked))} videos showed '{(seen_locked or [''])[0]}'")
    return row(f"{kind}: web + worker under load", outcome, runs_text(d, ids), None, d.intact(ids),
               f"{len(answers)} API calls in {wall:.0f} s from 16 clients while 3 videos ran")


def big_upload(d: Deployment, quick: bool, size: int) -> dict:
    d.wait_idle()
    part = 32 * MiB
    web_pid, worker_pid = d.svc.procs["web"].pid, d.svc.procs["worker"].pid
    with RssSampler(worker_pid) as small:
        warm = d.upload(d.clip, "warm-up")
        d.wait([warm])
    body = PaddedMp4(d.clip, size)
    made = requests.post(f"{d.url}/api/videos", json={"title": "big", "filename": "big.mp4", "size": size,
                                                      "content_type": "video/mp4"}, headers=d.h, timeout=30).json()
    up, vid = made["upload"], made["video"]["id"]
    numbers = list(range(1, up["part_count"] + 1))
    t0 = time.time()
    with RssSampler(web_pid) as web, RssSampler(worker_pid) as big:
        urls = requests.post(f"{d.url}/api/videos/{vid}/upload/parts", json={"part_numbers": numbers},
                             headers=d.h, timeout=60).json()["urls"]
        parts = []
        for n in numbers:
            chunk = body.read((n - 1) * up["part_size"], min(size, n * up["part_size"]))
            resp = requests.put(urls[str(n)], data=chunk, timeout=600)
            resp.raise_for_status()
            parts.append({"part_number": n, "etag": resp.headers["ETag"]})
            del chunk
        requests.post(f"{d.url}/api/videos/{vid}/upload/complete", json={"parts": parts}, headers=d.h,
                      timeout=600).raise_for_status()
        uploaded = time.time() - t0
        v = d.wait([vid], timeout=900, every=1)[vid]
    total = time.time() - t0
    lost = d.intact([vid])
    ladder = [(r["height"], r["codec"]) for r in v.get("renditions", [])]
    web_growth = (web.peak - web.samples[0]) / 1024
    extra = (big.peak - small.peak) / 1024
    ok = v["status"] == "COMPLETED" and ladder == [(240, "h264")] and v["original"]["size"] == size
    flat = web_growth < 32 and extra < 64
    requests.delete(f"{d.url}/api/videos/{vid}", headers=d.h, timeout=120)
    return row(f"{size / MiB / 1024:.2g} GiB multipart upload" if size >= 1024 * MiB else f"{size // MiB} MiB upload",
               ("done, memory flat" if ok and flat else f"{v['status']}, web +{web_growth:.0f} MiB, worker "
                f"+{extra:.0f} MiB"), runs_text(d, [vid]), None, lost,
               f"upload {uploaded:.0f} s (parts of {part // MiB} MiB), COMPLETED after {total:.0f} s; web RSS "
               f"+{web_growth:.0f} MiB; worker peak {big.peak / 1024:.0f} MiB vs {small.peak / 1024:.0f} on the clip")


# ---------------------------------------------------------------------------------------------


def run_mode(mode: str, args, tmp: Path) -> list[dict]:
    log(f"{mode}: starting the deployment")
    try:
        d = Deployment(mode, tmp / mode)
    except Skip as e:
        return [row(f"({mode})", f"skipped: {e}")]
    rows = []
    scenarios = [("worker SIGKILL", worker_sigkill), ("store down", store_down),
                 ("store down long", store_down_long), ("web down", web_down),
                 ("storm", lambda d, q: storm(d, q, args.storm)), ("temp disk full", temp_disk_full),
                 ("db under load", db_under_load), ("big upload", lambda d, q: big_upload(d, q, args.big_mb * MiB))]
    try:
        for name, fn in scenarios:
            if args.only and not any(o in name for o in args.only.split(",")):
                continue
            repaired = d.ensure_up()
            if repaired:
                log(f"{mode}: before {name}: {repaired}")
            log(f"{mode}: {name}")
            t0 = time.time()
            try:
                r = fn(d, args.quick)
            except Skip as e:
                r = row(name, f"skipped: {e}")
            except Exception as e:  # a scenario that breaks is a row, not the end of the report
                traceback.print_exc()
                r = row(name, f"ERROR {type(e).__name__}: {str(e)[:80]}")
            r["mode"] = mode
            rows.append(r)
            log(f"{mode}: {name}: {r['outcome']} ({time.time() - t0:.0f} s)")
            d.wait_idle(60)
    finally:
        d.close(keep=args.keep)
    return rows


def print_table(rows: list[dict]) -> None:
    cols = [("mode", "mode"), ("scenario", "scenario"), ("outcome", "outcome"), ("runs", "runs/video"),
            ("recover", "recover"), ("lost", "lost")]
    widths = {k: max(len(title), *(len(str(r.get(k, ""))) for r in rows)) for k, title in cols}
    line = "  ".join(title.ljust(widths[k]) for k, title in cols)
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(r.get(k, "")).ljust(widths[k]) for k, _ in cols))
    print()
    for r in rows:
        if r.get("notes"):
            print(f"  {r.get('mode', '')} / {r['scenario']}: {r['notes']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 notifications and a 256 MiB upload")
    p.add_argument("--modes", default="embedded,production")
    p.add_argument("--storm", type=int, help="notifications in the storm (10000; 2000 with --quick)")
    p.add_argument("--big-mb", type=int, help="size of the big upload in MiB (2048; 256 with --quick)")
    p.add_argument("--only", help="comma-separated scenario names to run (e.g. storm,web down)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs) and print its path")
    args = p.parse_args(argv)
    args.storm = args.storm or (2000 if args.quick else 10000)
    args.big_mb = args.big_mb or (256 if args.quick else 2048)
    import logging
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="sf-faults-"))
    rows: list[dict] = []
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            rows += run_mode(mode, args, tmp)
    finally:
        if args.keep:
            log(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    goal = [r for r in rows if not r["outcome"].startswith("skipped")]
    return 0 if all(r["lost"] in ("nothing lost", "") and not r["outcome"].startswith("ERROR") for r in goal) else 1


if __name__ == "__main__":
    sys.exit(main())
