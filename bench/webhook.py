"""Benchmark: the storage webhook (`POST /hooks/storage`) under the production WSGI server.

    .venv/bin/python bench/webhook.py [--uploads 200] [--size 4096] [--db sqlite|postgres]
        [--queue sqlite|redis] [--latency-events 1500] [--latency-inflight 10]
        [--storm 1000] [--storm-inflight 200] [--threads N] [--env KEY=VALUE] [--profile DIR] [--keep]

What it starts (all stopped again on exit, also on Ctrl-C or SIGTERM):
  * a SeaweedFS (`weed mini`, tests/store_fixtures.start_seaweed) on free ports whose filer webhook
    posts every event, unfiltered, to a recorder inside this script: the bench replays the store's
    real filer bodies (and its real noise: directories, /buckets/.system, multipart scratch parts);
  * `streamforge web` (gunicorn gthread, exactly what `serve` runs) on a fresh data dir, on SQLite
    and a SQLite queue by default, or PostgreSQL (`--db postgres`, a database created and dropped
    here) and Redis (`--queue redis`, its own db number, flushed before and after). No worker runs,
    so every enqueued task stays in the queue to be counted.

Then it creates `--uploads` videos through the API and PUTs their bytes to the presigned URLs (the
sizes match what was declared), plus a few videos whose bytes never arrive, and fires two rounds of
notifications, in SeaweedFS filer format and MinIO record format (URL-encoded keys, '+' for a space):

  1. latency: `--latency-events` at `--latency-inflight` (the stores' own concurrency: SeaweedFS
     posts with 5 workers, MinIO one target at a time), carrying the first notifications of half
     the uploads, their replays and duplicates, noise and unknown keys, shuffled;
  2. storm: `--storm` at `--storm-inflight`, carrying the other half's notifications four times each
     (so duplicates race each other), replays of the first half, noise and unknown keys.

It prints p50/p90/p99/max latency (client side, request sent to body read) per round and per
outcome, the storm's status histogram and throughput, the CPU milliseconds per request of the web
app, the store and this client and how busy the whole machine was (latency on a shared machine
depends on the neighbours; CPU per request does not), and how many runs were enqueued, counted
three ways: 202 "queued" answers, videos UPLOADED in the API, and process_video tasks waiting in
the queue. Pass/fail: p99 < 50 ms in the latency round, no 5xx and no connection errors, and every
count equal to the number of distinct uploads. Exit 0 only when all hold.

`--profile DIR` samples the web app with py-spy (`--gil`: only the thread holding the GIL, i.e.
where its one core goes) during the latency round (`pip install py-spy` into the venv) and prints
the share of gunicorn, Flask and the handler, and the functions under the handler.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote_plus

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

GOAL_P99_MS = 50.0
PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtc"]


# --------------------------------------------------------------------------------------------
# the stack: SeaweedFS, PostgreSQL/Redis, `streamforge web` and workers as separate processes
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), 1):
            return True
    except OSError:
        return False


def _exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) raises SystemExit, so every finally block stops what it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class Stack:
    """One deployment: an external SeaweedFS, the database and queue, and streamforge processes.

    `close()` stops every process it started (their whole process groups), drops the PostgreSQL
    database, flushes the Redis db and removes the work dir (unless `keep`)."""

    def __init__(self, workdir: Path | None = None, *, db: str = "sqlite", queue: str = "sqlite",
                 redis_db: int = 13, bucket: str = "bench", env: dict | None = None, keep: bool = False,
                 tag: str = "bench"):
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix=f"sf-{tag}-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.data_dir = (self.tmp / "data").resolve()
        self.db, self.queue, self.redis_db, self.bucket, self.keep = db, queue, redis_db, bucket, keep
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hook_url = f"{self.url}/hooks/storage"
        self.webhook_token = "bench-hook-" + secrets.token_urlsafe(16)
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()
        self.logs: dict[str, object] = {}
        self.seaweed = None
        self.pg_name: str | None = None
        self.database_url = f"sqlite:///{self.data_dir / 'streamforge.db'}"
        self.queue_url = f"sqlite:///{self.data_dir / 'queue.db'}"
        self.env: dict[str, str] = {}

    # -- backing services ------------------------------------------------------------------

    def prepare_backends(self) -> None:
        """Create the PostgreSQL database and flush the Redis db when those are used."""
        if self.db == "postgres":
            if not port_open(5432):
                raise SystemExit("PostgreSQL is not running on 127.0.0.1:5432")
            name = "sf_bench_" + uuid.uuid4().hex[:10]
            subprocess.run(PG + [f"CREATE DATABASE {name}"], check=True, capture_output=True)
            self.pg_name = name
            self.database_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        if self.queue == "redis":
            if not port_open(6379):
                raise SystemExit("Redis is not running on 127.0.0.1:6379")
            self.queue_url = f"redis://127.0.0.1:6379/{self.redis_db}"
            self._flush_redis()

    def _flush_redis(self) -> None:
        import redis
        redis.Redis.from_url(self.queue_url).flushdb()

    def start_store(self, webhook_url: str, webhook_prefixes: list[str] | None = None):
        """Start SeaweedFS whose filer webhook posts to `webhook_url` (filtered by prefixes)."""
        from store_fixtures import start_seaweed
        self.seaweed = start_seaweed(self.tmp / "store", webhook_url, self.webhook_token, bucket=self.bucket,
                                     webhook_prefixes=webhook_prefixes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
        env.update({
            "STREAMFORGE_STORAGE_ENDPOINT": self.seaweed.endpoint,
            "STREAMFORGE_STORAGE_ACCESS_KEY": self.seaweed.access_key,
            "STREAMFORGE_STORAGE_SECRET_KEY": self.seaweed.secret_key,
            "STREAMFORGE_STORAGE_BUCKET": self.bucket,
            "STREAMFORGE_WEBHOOK_TOKEN": self.webhook_token,
            "STREAMFORGE_SERVER_BASE_URL": self.url,
            "STREAMFORGE_SERVER_SECRET_KEY": "bench-" + secrets.token_hex(16),
        })
        if self.db == "postgres":
            env["STREAMFORGE_DATABASE_URL"] = self.database_url
        if self.queue == "redis":
            env["STREAMFORGE_QUEUE_URL"] = self.queue_url
        env.update(self.extra_env)
        self.env = env
        return self.seaweed

    # -- streamforge processes ---------------------------------------------------------------

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start `streamforge ARGS --data-dir D` in its own process group, logging to NAME.log."""
        log = open(self.tmp / f"{name}.log", "w")
        self.logs[name] = log
        proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", *args, "--data-dir", str(self.data_dir)],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_web(self, timeout: float = 90) -> subprocess.Popen:
        """`streamforge web` (gunicorn gthread) on this stack's port; waits for /healthz."""
        proc = self.start("web", "web", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"web exited with {proc.returncode}: {self.tail('web')}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=3).status_code == 200:
                    return proc
            time.sleep(0.3)
        raise SystemExit(f"web not healthy after {timeout:.0f} s: {self.tail('web')}")

    def web_worker_pids(self) -> list[int]:
        """The pids of gunicorn's worker processes (children of `streamforge web`)."""
        web = self.procs["web"].pid
        out = subprocess.run(["pgrep", "-P", str(web)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def cli(self, *args: str) -> str:
        """Run a streamforge command to completion; its last line of stdout."""
        out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", *args, "--data-dir", str(self.data_dir)],
                             env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise SystemExit(f"streamforge {' '.join(args)} failed: {out.stderr[-500:]}")
        return out.stdout.strip().splitlines()[-1]

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 30) -> int | None:
        """Signal a process's group, wait `grace` seconds, then SIGKILL the group; its exit code."""
        proc = self.procs.get(name)
        if proc is None or name in self.stopped:
            return None if proc is None else proc.returncode
        self.stopped.add(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # whatever else is left in its group (e.g. a gunicorn worker) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log = self.logs.pop(name, None)
        if log:
            log.close()
        return proc.returncode

    def close(self) -> None:
        """Stop everything this stack started and remove what it created."""
        for name in list(self.procs):
            try:
                self.stop(name, grace=20)
            except Exception as e:  # keep stopping the rest
                print(f"warning: stopping {name}: {e}", file=sys.stderr)
        if self.seaweed is not None:
            self.seaweed.embedded.stop(timeout=10)
        if self.pg_name:
            subprocess.run(PG + [f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)"], capture_output=True)
        if self.queue == "redis":
            with contextlib.suppress(Exception):
                self._flush_redis()
        if self.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- what the queue holds ----------------------------------------------------------------

    def pending_tasks(self) -> list[tuple[str, tuple]]:
        """(task name, args) of every task waiting in the queue (read directly from its storage)."""
        from streamforge.jobs import tasks
        tasks.huey.storage = tasks.make_storage(self.queue_url)
        return [(t.name, tuple(t.args or ())) for t in tasks.huey.pending()]


# --------------------------------------------------------------------------------------------
# API helpers
# --------------------------------------------------------------------------------------------

def api_session(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def all_videos(base_url: str, token: str) -> list[dict]:
    """Every video of the token's user, through the paginated list."""
    s, out, page = api_session(token), [], 1
    while page:
        r = s.get(f"{base_url}/api/videos", params={"page": page, "per_page": 100}, timeout=30)
        r.raise_for_status()
        body = r.json()
        out += body["items"]
        page = body["next"]
    return out


def parallel(fn, items, threads: int = 8) -> list:
    """fn(item) for every item on `threads` threads; results in order, first exception re-raised."""
    results, errors = [None] * len(items), []
    it, lock = iter(range(len(items))), threading.Lock()

    def work():
        while not errors:
            with lock:
                i = next(it, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except Exception as e:  # reported after the join
                errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


# --------------------------------------------------------------------------------------------
# the store's own notifications, recorded
# --------------------------------------------------------------------------------------------

class Recorder:
    """An HTTP server that keeps every body the store's filer webhook posts."""

    def __init__(self):
        self.bodies: list[bytes] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/storage"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def by_key(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = collections.defaultdict(list)
        for body in list(self.bodies):
            with contextlib.suppress(ValueError, AttributeError):
                out[json.loads(body).get("key", "")].append(body)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# notification bodies in the stores' formats
# --------------------------------------------------------------------------------------------

def minio_event(bucket: str, key: str, size: int, name: str = "s3:ObjectCreated:Put") -> bytes:
    """A MinIO webhook body as MinIO sends it (key URL-encoded, '+' for a space)."""
    enc = quote_plus(key, safe="/")
    seq = secrets.token_hex(8).upper()
    return json.dumps({"EventName": name, "Key": f"{bucket}/{enc}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventName": name,
        "userIdentity": {"principalId": "minio"},
        "requestParameters": {"principalId": "minio", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-id-2": secrets.token_hex(32), "x-amz-request-id": seq,
                             "x-minio-deployment-id": str(uuid.uuid4()),
                             "x-minio-origin-endpoint": "http://minio:9000"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minio"}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": enc, "size": size, "eTag": secrets.token_hex(16), "contentType": "video/mp4",
                          "userMetadata": {"content-type": "video/mp4"}, "sequencer": seq}},
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}}]}).encode()


def filer_event(bucket: str, key: str, size: int, is_dir: bool = False, event_type: str = "create") -> bytes:
    """A SeaweedFS filer webhook body (what `weed` posts; used where no real one was recorded)."""
    folder, name = key.rsplit("/", 1) if "/" in key else ("", key)
    now = int(time.time())
    entry = {"name": name, "is_directory": is_dir,
             "attributes": {"file_size": size, "mtime": now, "file_mode": 2147484141 if is_dir else 432,
                            "crtime": now, "mime": "" if is_dir else "video/mp4"}}
    path = f"/buckets/{bucket}/{key}" if bucket else key
    message = ({"old_entry": entry, "delete_chunks": True} if event_type == "delete"
               else {"new_entry": entry, "new_parent_path": f"/buckets/{bucket}/{folder}".rstrip("/")})
    message["signatures"] = [random.randint(1, 2**31)]
    return json.dumps({"event_type": event_type, "key": path, "message": message}).encode()


class Mix:
    """Builds the rounds' notification lists: (kind, body) pairs."""

    def __init__(self, rng: random.Random, bucket: str, uploads: list[dict], never_uploaded: list[dict],
                 recorded: dict[str, list[bytes]]):
        self.rng, self.bucket = rng, bucket
        self.uploads, self.never = uploads, never_uploaded
        self.recorded = recorded
        upload_paths = {f"/buckets/{bucket}/{u['key']}" for u in uploads + never_uploaded}
        # the store's own noise: directories, /buckets/.system, multipart scratch parts, other keys
        self.noise = [b for k, bodies in recorded.items() if k not in upload_paths for b in bodies]
        self.real_filer = sum(1 for u in uploads if recorded.get(f"/buckets/{bucket}/{u['key']}"))

    def upload_filer(self, u: dict) -> tuple[str, bytes]:
        real = self.recorded.get(f"/buckets/{self.bucket}/{u['key']}")
        return "upload/filer", (self.rng.choice(real) if real else filer_event(self.bucket, u["key"], u["size"]))

    def upload_minio(self, u: dict) -> tuple[str, bytes]:
        name = self.rng.choice(["s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload",
                                "s3:ObjectCreated:Copy"])
        return "upload/minio", minio_event(self.bucket, u["key"], u["size"], name)

    def noise_event(self, pool: list[dict]) -> tuple[str, bytes]:
        """One event that must not start anything."""
        r, b = self.rng, self.bucket
        u = r.choice(pool)
        vid = u["id"]
        kind = r.choices(["store-noise", "directory", "multipart-part", "system", "other-bucket", "processed",
                          "delete", "unknown-key", "wrong-name", "not-uploaded"],
                         weights=[14, 10, 8, 6, 10, 8, 8, 22, 6, 8])[0]
        if kind == "store-noise" and self.noise:
            return kind, r.choice(self.noise)
        if kind in ("store-noise", "directory"):
            return "directory", filer_event(b, f"originals/{vid}", 0, is_dir=True)
        if kind == "multipart-part":
            return kind, filer_event(b, f".uploads/{uuid.uuid4()}/{r.randint(1, 9):04d}_{uuid.uuid4()}.part",
                                     5 * 1024 * 1024)
        if kind == "system":
            return kind, json.dumps({"event_type": "create", "key": f"/buckets/.system/{r.choice(['owners', 'iam'])}",
                                     "message": {"new_entry": {"name": "x"}}}).encode()
        if kind == "other-bucket":
            other = r.choice(["backups", "other", b + "-old"])
            return kind, (filer_event(other, u["key"], u["size"]) if r.random() < 0.5
                          else minio_event(other, u["key"], u["size"]))
        if kind == "processed":
            key = f"processed/{vid}/{r.choice(['master.m3u8', '240p/index.m3u8', 'thumbnails/cover.jpg'])}"
            return kind, filer_event(b, key, 100) if r.random() < 0.5 else minio_event(b, key, 100)
        if kind == "delete":
            return kind, (filer_event(b, u["key"], u["size"], event_type="delete") if r.random() < 0.5
                          else minio_event(b, u["key"], u["size"], "s3:ObjectRemoved:Delete"))
        if kind == "unknown-key":
            alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
            key = r.choice([f"originals/{''.join(r.choices(alphabet, k=20))}/clip {r.randint(1, 99)}.mp4",
                            f"originals/x/{uuid.uuid4()}.mp4", f"uploads/{uuid.uuid4()}.mp4",
                            f"originals/{vid}/nested/dir/clip.mp4"])
            return kind, filer_event(b, key, 10) if r.random() < 0.5 else minio_event(b, key, 10)
        if kind == "wrong-name":
            key = f"originals/{vid}/not-the-original.mp4"
            return kind, filer_event(b, key, 10) if r.random() < 0.5 else minio_event(b, key, 10)
        n = r.choice(self.never)  # created through the API, bytes never sent: stat finds nothing
        return kind, (filer_event(b, n["key"], n["size"]) if r.random() < 0.5
                      else minio_event(b, n["key"], n["size"]))

    def round(self, total: int, fresh: list[dict], copies: int, replay_pool: list[dict],
              replay_share: float) -> list[tuple[str, bytes]]:
        """`copies` notifications of each fresh upload (both formats), then replays of `replay_pool`
        and noise up to `total`, all shuffled."""
        events = []
        for u in fresh:
            for c in range(copies):
                events.append(self.upload_filer(u) if c % 2 == 0 else self.upload_minio(u))
        while len(events) < total:
            if replay_pool and self.rng.random() < replay_share:
                u = self.rng.choice(replay_pool)
                k, body = self.upload_filer(u) if self.rng.random() < 0.5 else self.upload_minio(u)
                events.append(("replay/" + k.split("/")[1], body))
            else:
                events.append(self.noise_event(self.uploads))
        self.rng.shuffle(events)
        return events


# --------------------------------------------------------------------------------------------
# firing
# --------------------------------------------------------------------------------------------

def fire(port: int, token: str, events: list[tuple[str, bytes]], inflight: int,
         timeout: float = 60) -> tuple[list[tuple], float]:
    """POST every event with `inflight` threads, each on its own keep-alive connection; returns
    [(kind, status, seconds, outcome)] in event order, and the wall time."""
    results: list = [None] * len(events)
    it, lock = iter(range(len(events))), threading.Lock()
    start = threading.Barrier(inflight + 1)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "User-Agent": "Go-http-client/1.1"}

    def work():
        conn = None
        start.wait()
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            kind, body = events[i]
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/hooks/storage", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                status, data = f"conn-error {type(e).__name__}", b""
                conn.close()
                conn = None
            took = time.perf_counter() - t0
            outcome = "-"
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                got = json.loads(data).get("outcomes") or {}
                for name in ("queued", "rejected", "deferred", "missing", "already", "ignored"):
                    if got.get(name):
                        outcome = name
                        break
                else:
                    outcome = "no-events" if json.loads(data).get("events") == 0 else "-"
            results[i] = (kind, status, took, outcome)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(inflight)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


class CpuMeter:
    """CPU seconds used by the web app, the store and this client over a round, and by the whole
    machine: on a shared machine the latencies depend on what else runs, the CPU cost per request
    does not."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, stack: Stack):
        self.stack = stack

    @classmethod
    def proc(cls, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime + stime

    @classmethod
    def machine(cls) -> tuple[float, float]:
        """(busy, total) CPU seconds of the machine since boot."""
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values[:8]) - idle) / cls.TICK, sum(values[:8]) / cls.TICK

    def sample(self) -> dict:
        web = self.stack.procs["web"].pid
        store = self.stack.seaweed.embedded.proc.pid
        busy, total = self.machine()
        return {"web": sum(self.proc(p) for p in [web, *self.stack.web_worker_pids()]),
                "store": self.proc(store), "client": time.process_time(), "busy": busy, "total": total}

    def __enter__(self):
        self.before = self.sample()
        return self

    def __exit__(self, *exc):
        after = self.sample()
        self.used = {k: after[k] - self.before[k] for k in after}


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def summary(results: list[tuple]) -> dict:
    lat = sorted(r[2] * 1000 for r in results)
    return {"n": len(lat), "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": lat[-1] if lat else 0}


def status_histogram(results: list[tuple]) -> collections.Counter:
    return collections.Counter(str(r[1]) for r in results)


def print_breakdown(title: str, results: list[tuple], index: int) -> None:
    groups: dict[str, list] = collections.defaultdict(list)
    for r in results:
        groups[r[index]].append(r)
    print(f"  {title:<22} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        s = summary(rows)
        print(f"  {name:<22} {s['n']:>5} {s['p50']:>8.1f} {s['p90']:>8.1f} {s['p99']:>8.1f} {s['max']:>8.1f}")


# --------------------------------------------------------------------------------------------
# profiling
# --------------------------------------------------------------------------------------------

def start_profiler(pid: int, out: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if not exe:
        print("  (py-spy not found: .venv/bin/pip install py-spy)")
        return None
    # --gil: only the thread holding the GIL is sampled, i.e. where the web app's one core goes
    # (without it, threads waiting for the GIL after a socket call look busy)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "250",
                             "--format", "raw", "--output", str(out), "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop_profiler(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def print_profile(path: Path, top: int = 22) -> None:
    """Where the request threads spend their samples: inclusive share per function under the hook."""
    if not path.exists():
        print("  (no profile written)")
        return
    total, inclusive, own = 0, collections.Counter(), collections.Counter()
    layers, everything = collections.Counter(), 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        everything += int(count)
        layer = ("storage_hook (the handler)" if "storage_hook" in stack else
                 "Flask/Werkzeug around it" if "wsgi_app" in stack else
                 "gunicorn (HTTP parsing, sockets, poller)" if "gunicorn" in stack else "other")
        layers[layer] += int(count)
        if "storage_hook" not in stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        seen = set()
        for f in frames[[i for i, f in enumerate(frames) if "storage_hook" in f][0]:]:
            name = f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")" if " (" in f else f
            if name not in seen:
                inclusive[name] += n
                seen.add(name)
        last = frames[-1]
        own[last.split(" (")[0] + " (" + last.split(" (")[-1].split(":")[0].split("/")[-1] + ")"] += n
    if not total:
        print("  (no samples inside storage_hook)")
        return
    print(f"  samples holding the GIL: {everything} (py-spy raw profile: {path})")
    for name, n in layers.most_common():
        print(f"  {100 * n / everything:>8.1f}%  {name}")
    print(f"  samples inside storage_hook: {total}")
    print(f"  {'inclusive':>9}  function")
    for name, n in inclusive.most_common(top):
        print(f"  {100 * n / total:>8.1f}%  {name}")
    print(f"  {'self':>9}  function (leaf frames)")
    for name, n in own.most_common(10):
        print(f"  {100 * n / total:>8.1f}%  {name}")


# --------------------------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------------------------

def create_uploads(stack: Stack, token: str, n: int, size: int, rng: random.Random, send: bool) -> list[dict]:
    """Create `n` videos through the API; PUT their bytes (declared size) when `send`."""
    names = ["clip {i}.mp4", "holiday été {i}.mp4", "a+b {i}.mov", "Übung_{i}.mp4", "  spaced   out {i}.mkv"]
    local = threading.local()

    def one(i: int) -> dict:
        if not hasattr(local, "s"):
            local.s = api_session(token)
        data = rng.randbytes(size + i % 257)
        r = local.s.post(f"{stack.url}/api/videos", json={
            "title": f"bench {i}", "filename": names[i % len(names)].format(i=i), "size": len(data),
            "content_type": "video/mp4"}, timeout=30)
        if r.status_code != 201:
            raise SystemExit(f"POST /api/videos answered {r.status_code}: {r.text[:300]}")
        body = r.json()
        up = body["upload"]
        if send:
            if up["method"] != "PUT":
                raise SystemExit(f"expected a presigned PUT, got {up['method']}")
            put = requests.put(up["url"], data=data, headers=up.get("headers") or {}, timeout=60)
            if put.status_code not in (200, 204):
                raise SystemExit(f"presigned PUT answered {put.status_code}: {put.text[:300]}")
        return {"id": body["video"]["id"], "key": body["video"]["original"]["key"], "size": len(data)}

    return parallel(one, list(range(n)), threads=8)


def make_store_noise(seaweed, count: int = 3) -> None:
    """A few multipart uploads and nested keys outside originals/: the filer's scratch-part noise."""
    store = seaweed.store
    for i in range(count):
        key = f"scratch/noise {i}.bin"
        upload_id = store.create_multipart(key, "application/octet-stream")
        etags = []
        for part in (1, 2):
            r = requests.put(store.presign_part(key, upload_id, part, 60),
                             data=(b"p" * (5 * 1024 * 1024) if part == 1 else b"tail"), timeout=60)
            r.raise_for_status()
            etags.append((part, r.headers["ETag"]))
        store.complete_multipart(key, upload_id, etags)
        store.put_bytes(f"processed/noise{i}/master.m3u8", b"#EXTM3U\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=200, help="real uploads (half first seen in each round)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per upload (plus up to 256, so sizes differ)")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--queue", choices=["sqlite", "redis"], default=None,
                    help="default: sqlite with --db sqlite, redis with --db postgres")
    ap.add_argument("--redis-db", type=int, default=13)
    ap.add_argument("--threads", type=int, help="gunicorn threads of each web process ([server] threads)")
    ap.add_argument("--workers", type=int, help="gunicorn processes of the web app ([server] workers; "
                                                 "default: one per core, at most 4)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the streamforge processes, e.g. STREAMFORGE_SERVER_THREADS=16")
    ap.add_argument("--latency-events", type=int, default=1500)
    ap.add_argument("--latency-inflight", type=int, default=10)
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--storm-inflight", type=int, default=200)
    ap.add_argument("--profile", metavar="DIR", help="py-spy the web app during the latency round")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = ap.parse_args(argv)
    queue = args.queue or ("redis" if args.db == "postgres" else "sqlite")
    rng = random.Random(args.seed)
    _exit_on_sigterm()
    env = {"STREAMFORGE_SERVER_THREADS": str(args.threads)} if args.threads else {}
    if args.workers:
        env["STREAMFORGE_SERVER_WORKERS"] = str(args.workers)
    env.update(kv.split("=", 1) for kv in args.env)
    stack = Stack(db=args.db, queue=queue, redis_db=args.redis_db, env=env, keep=args.keep, tag="webhook")
    recorder = Recorder()
    profiler = None
    try:
        stack.prepare_backends()
        print(f"database {args.db}, queue {queue}; starting SeaweedFS (filer webhook -> recorder)...", flush=True)
        stack.start_store(recorder.url, webhook_prefixes=[])
        stack.start_web()
        threads = args.threads or 8
        token = stack.cli("token", "create", "--email", "bench@example.com")
        processes = len(stack.web_worker_pids())
        print(f"web: `streamforge web` (gunicorn gthread, {processes} process(es) x {threads} threads) at "
              f"{stack.url}", flush=True)

        t0 = time.monotonic()
        uploads = create_uploads(stack, token, args.uploads, args.size, rng, send=True)
        never = create_uploads(stack, token, max(5, args.uploads // 20), args.size, rng, send=False)
        make_store_noise(stack.seaweed)
        print(f"created {len(uploads)} uploads of ~{args.size} bytes (+{len(never)} never uploaded) "
              f"in {time.monotonic() - t0:.1f} s", flush=True)
        wanted = {f"/buckets/{stack.bucket}/{u['key']}" for u in uploads}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not wanted <= set(recorder.by_key()):
            time.sleep(0.5)
        recorded = recorder.by_key()
        mix = Mix(rng, stack.bucket, uploads, never, recorded)
        print(f"recorded {len(recorder.bodies)} real filer events ({mix.real_filer}/{len(uploads)} uploads, "
              f"{len(mix.noise)} noise: directories, /buckets/.system, .uploads parts, other keys)", flush=True)

        half = len(uploads) // 2
        first, second = uploads[:half], uploads[half:]
        # warm-up: every code path once (DB connections, the store client's pool), not measured
        warm = [mix.noise_event(uploads) for _ in range(60)]
        fire(stack.port, stack.webhook_token, warm, args.latency_inflight)

        lat_events = mix.round(args.latency_events, first, copies=3, replay_pool=first, replay_share=0.35)
        storm_events = mix.round(args.storm, second, copies=4, replay_pool=uploads, replay_share=0.25)

        print(f"\nround 1: {len(lat_events)} notifications at {args.latency_inflight} in flight...", flush=True)
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profiler = start_profiler(stack.procs["web"].pid, Path(args.profile) / "webhook-latency.txt")
            time.sleep(1.0)
        with CpuMeter(stack) as lat_cpu:
            lat_results, lat_wall = fire(stack.port, stack.webhook_token, lat_events, args.latency_inflight)
        stop_profiler(profiler)

        print(f"round 2: storm of {len(storm_events)} at {args.storm_inflight} in flight...", flush=True)
        with CpuMeter(stack) as storm_cpu:
            storm_results, storm_wall = fire(stack.port, stack.webhook_token, storm_events, args.storm_inflight)
        time.sleep(0.5)

        # counting: what the answers say, what the API says, what the queue holds
        all_results = lat_results + storm_results
        queued_answers = sum(1 for r in all_results if r[3] == "queued")
        vids = all_videos(stack.url, token)
        upload_ids = {u["id"] for u in uploads}
        uploaded = [v for v in vids if v["upload_status"] == "UPLOADED"]
        never_ids = {n["id"] for n in never}
        never_wrong = [v for v in vids if v["id"] in never_ids and v["upload_status"] != "UPLOADING"]
        tasks = stack.pending_tasks()
        runs = [args_[0] for name, args_ in tasks if name.endswith("process_video") and args_]
        run_counts = collections.Counter(runs)
        other_tasks = [name for name, args_ in tasks if not name.endswith("process_video")]

        # ---------------------------------------------------------------- the report
        lat = summary(lat_results)
        storm = summary(storm_results)
        lat_hist, storm_hist = status_histogram(lat_results), status_histogram(storm_results)
        bad_lat = sum(n for s, n in lat_hist.items() if not s.isdigit() or int(s) >= 500)
        bad_storm = sum(n for s, n in storm_hist.items() if not s.isdigit() or int(s) >= 500)
        print("\n=== StreamForge webhook bench ===")
        print(f"stack: streamforge web (gunicorn gthread, {processes} x {threads} threads), {args.db} + {queue} queue, "
              f"SeaweedFS {stack.seaweed.endpoint}, {os.cpu_count()} CPUs")
        print(f"{'round':<10} {'requests':>8} {'in flight':>9} {'wall s':>7} {'req/s':>7} {'p50 ms':>7} "
              f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}  statuses")
        for name, s, wall, inflight, hist in (("latency", lat, lat_wall, args.latency_inflight, lat_hist),
                                              ("storm", storm, storm_wall, args.storm_inflight, storm_hist)):
            print(f"{name:<10} {s['n']:>8} {inflight:>9} {wall:>7.2f} {s['n'] / wall:>7.0f} {s['p50']:>7.1f} "
                  f"{s['p90']:>7.1f} {s['p99']:>7.1f} {s['max']:>7.1f}  "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items())))
        print(f"\n{'round':<10} {'web CPU ms/req':>14} {'store CPU ms/req':>16} {'client CPU ms/req':>17}  "
              f"machine during the round")
        for name, cpu, n, wall in (("latency", lat_cpu.used, lat["n"], lat_wall),
                                   ("storm", storm_cpu.used, storm["n"], storm_wall)):
            ours = cpu["web"] + cpu["store"] + cpu["client"]
            cores = cpu["total"] / wall if wall else 0
            print(f"{name:<10} {1000 * cpu['web'] / n:>14.2f} {1000 * cpu['store'] / n:>16.2f} "
                  f"{1000 * cpu['client'] / n:>17.2f}  {100 * cpu['busy'] / cpu['total']:.0f}% of {cores:.0f} CPUs "
                  f"busy, {100 * max(0.0, cpu['busy'] - ours) / cpu['total']:.0f}% by everything else")
        print("\nlatency round by outcome (what the handler did):")
        print_breakdown("outcome", lat_results, 3)
        print("latency round by notification kind:")
        print_breakdown("kind", lat_results, 0)
        print("storm by outcome:")
        print_breakdown("outcome", storm_results, 3)

        print("\nruns enqueued:")
        checks = [
            (f"latency p99 {lat['p99']:.1f} ms < {GOAL_P99_MS:.0f} ms at {args.latency_inflight} in flight",
             lat["p99"] < GOAL_P99_MS),
            (f"no 5xx or connection error: latency {bad_lat}, storm {bad_storm}", bad_lat == 0 and bad_storm == 0),
            (f"202 'queued' answers: {queued_answers} == {len(uploads)} distinct uploads",
             queued_answers == len(uploads)),
            (f"videos UPLOADED (API): {len(uploaded)} == {len(uploads)}, all of them real uploads",
             len(uploaded) == len(uploads) and {v['id'] for v in uploaded} == upload_ids),
            (f"process_video tasks in the queue: {len(runs)} for {len(run_counts)} videos == {len(uploads)} "
             f"(max per video {max(run_counts.values(), default=0)})",
             len(runs) == len(uploads) and set(run_counts) == upload_ids),
            (f"never-uploaded videos still UPLOADING: {len(never) - len(never_wrong)}/{len(never)}", not never_wrong),
        ]
        if other_tasks:
            print(f"  (other tasks in the queue: {collections.Counter(other_tasks)})")
        for text, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")
        if args.profile:
            print("\nprofile of the web app during the latency round:")
            print_profile(Path(args.profile) / "webhook-latency.txt")
        web_errors = [line for line in stack.tail("web", 400).splitlines() if "Traceback" in line or " ERROR " in line]
        if web_errors:
            print(f"\nweb log has {len(web_errors)} error lines; last: {web_errors[-1][:200]}")
        ok = all(c for _, c in checks)
        print(f"\nRESULT: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        stop_profiler(profiler)
        recorder.close()
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
