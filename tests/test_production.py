"""The scale-out stack as separate processes: `streamforge web` and workers on PostgreSQL and Redis,
with an external SeaweedFS whose own filer webhook calls the web app."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import MEDIA, free_port, fresh_database_url, port_open, require

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
REDIS_DB = "11"


class Stack:
    """Processes of one deployment sharing one environment."""

    def __init__(self, tmp: Path, env: dict, port: int):
        self.tmp, self.env, self.port = tmp, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", *args, "--data-dir", str(self.tmp / "d")],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", *args, "--data-dir", str(self.tmp / "d")],
                             env=self.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError("web not healthy: " + (self.tmp / "web.log").read_text()[-500:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def stack(tmp_path, seaweed_factory):
    require(port_open(6379), "Redis is not running on 127.0.0.1:6379")
    with fresh_database_url("postgresql", tmp_path, "prod") as url:
        yield from _stack_on(url, tmp_path, seaweed_factory)


def _stack_on(url: str, tmp_path, seaweed_factory):
    """The web app and workers on `url` and Redis, with their own SeaweedFS calling the web app."""
    subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], check=True, capture_output=True)
    port = free_port()
    token = "prod-hook-" + uuid.uuid4().hex
    store = seaweed_factory(f"http://127.0.0.1:{port}/hooks/storage", token, bucket="prod")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env.update({
        "STREAMFORGE_DATABASE_URL": url,
        "STREAMFORGE_QUEUE_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "STREAMFORGE_STORAGE_ENDPOINT": store.endpoint, "STREAMFORGE_STORAGE_ACCESS_KEY": store.access_key,
        "STREAMFORGE_STORAGE_SECRET_KEY": store.secret_key, "STREAMFORGE_STORAGE_BUCKET": "prod",
        "STREAMFORGE_WEBHOOK_TOKEN": token, "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
        "STREAMFORGE_SERVER_SECRET_KEY": "prod-secret-" + uuid.uuid4().hex,
        "STREAMFORGE_PIPELINE_HEIGHTS": "480,360", "STREAMFORGE_SWEEPER_INTERVAL_SECONDS": "2",
        "STREAMFORGE_SWEEPER_LEASE_SECONDS": "8"})
    s = Stack(tmp_path, env, port)
    s.store = store
    try:
        yield s
    finally:
        s.stop()
        subprocess.run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"], capture_output=True)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> bytes:
    """20 s of 720p: long enough that a worker is still transcoding when the test stops it, even
    on a fast machine (the 5 s clip can be done between two polls)."""
    from media_factory import make_video
    return make_video(tmp_path_factory.mktemp("media") / "long.mp4", width=1280, height=720,
                      seconds=20).read_bytes()


def upload(stack, token, title, data: bytes | None = None):
    h = {"Authorization": f"Bearer {token}"}
    data = CLIP.read_bytes() if data is None else data
    r = requests.post(stack.url + "/api/videos", json={"title": title, "filename": "bbb.mp4", "size": len(data),
                                                       "content_type": "video/mp4"}, headers=h).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=60).raise_for_status()
    return r["video"]["id"]


def wait_for(stack, token, vid, pred, timeout=120):
    h = {"Authorization": f"Bearer {token}"}
    deadline = time.time() + timeout
    v = {}
    while time.time() < deadline:
        v = requests.get(f"{stack.url}/api/videos/{vid}", headers=h).json()
        if pred(v):
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out; last state {v.get('upload_status')}/{v.get('status')} {v.get('error_message')}")


def runs(stack, token, vid):
    items = requests.get(f"{stack.url}/api/videos/{vid}/logs", headers={"Authorization": f"Bearer {token}"}).json()
    return [i for i in items["items"] if i["stage"] == "download" and i["status"] == "started"]


def test_web_and_two_workers_on_postgres_and_redis(stack):
    stack.start("web", "web", "--host", "127.0.0.1", "--port", str(stack.port))
    stack.start("worker0", "worker")
    stack.start("worker1", "worker")
    stack.wait_healthy()
    tok = stack.cli("token", "create", "--email", "ops@example.com")
    ids = [upload(stack, tok, f"prod {i}") for i in range(4)]
    done = [wait_for(stack, tok, vid, lambda v: v["status"] in ("COMPLETED", "FAILED")) for vid in ids]
    assert [v["status"] for v in done] == ["COMPLETED"] * 4, [v["error_message"] for v in done]
    time.sleep(2)
    assert [len(runs(stack, tok, vid)) for vid in ids] == [1, 1, 1, 1]
    master = requests.get(done[0]["master_playlist_url"], timeout=10)
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
    assert all(p.poll() is None for p in stack.procs.values())


def test_killed_worker_run_is_finished_by_another(stack, long_clip):
    stack.start("web", "web", "--host", "127.0.0.1", "--port", str(stack.port))
    doomed = stack.start("doomed", "worker")
    stack.wait_healthy()
    tok = stack.cli("token", "create", "--email", "ops@example.com")
    vid = upload(stack, tok, "killed mid-run", long_clip)
    wait_for(stack, tok, vid, lambda v: v["status"] == "PROCESSING" and v["progress"] > 0.05)
    doomed.send_signal(signal.SIGKILL)  # no hand-back: the lease must run out
    doomed.wait(10)
    stack.start("rescuer", "worker")
    v = wait_for(stack, tok, vid, lambda v: v["status"] in ("COMPLETED", "FAILED"), timeout=90)
    assert v["status"] == "COMPLETED", v["error_message"]
    assert v["attempts"] == 2 and len(runs(stack, tok, vid)) == 2
    # the second run wrote a fresh prefix and, once the video was switched to it, removed what the
    # dead one left (after COMPLETED is recorded, so poll)
    deadline = time.time() + 30
    while True:
        keys = [o.key for o in stack.store.store.list(f"processed/{vid}/")]
        stale = [k for k in keys if not k.startswith(f"processed/{vid}/r-")]
        if not stale or time.time() > deadline:
            break
        time.sleep(0.5)
    assert keys and not stale, stale[:5]
    assert requests.get(v["master_playlist_url"], timeout=10).status_code == 200


def test_sigterm_hands_the_video_back(stack, long_clip):
    stack.start("web", "web", "--host", "127.0.0.1", "--port", str(stack.port))
    leaving = stack.start("leaving", "worker")
    stack.wait_healthy()
    tok = stack.cli("token", "create", "--email", "ops@example.com")
    vid = upload(stack, tok, "handed back", long_clip)
    wait_for(stack, tok, vid, lambda v: v["status"] == "PROCESSING" and v["progress"] > 0.05)
    t0 = time.time()
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(30) == 0
    v = wait_for(stack, tok, vid, lambda v: v["status"] != "PROCESSING", timeout=10)
    assert v["status"] in ("PENDING", "COMPLETED")
    stack.start("next", "worker")
    v = wait_for(stack, tok, vid, lambda v: v["status"] in ("COMPLETED", "FAILED"), timeout=60)
    assert v["status"] == "COMPLETED" and time.time() - t0 < 60
