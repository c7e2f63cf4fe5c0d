"""`streamforge serve` on the embedded default, as a new user runs it: one process tree, end to end."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from conftest import MEDIA, free_port

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    tree, found = {}, set()
    for line in out.splitlines():
        p, pp = map(int, line.split())
        tree.setdefault(pp, []).append(p)
    stack = [pid]
    while stack:
        for c in tree.get(stack.pop(), []):
            found.add(c)
            stack.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    stat = open(f"/proc/{pid}/stat").read().split()
    return stat[2] != "Z"


@pytest.fixture
def serve(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    env["STREAMFORGE_PIPELINE_HEIGHTS"] = "360,240"
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamforge.cli", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError("serve never became healthy: " + (tmp_path / "serve.log").read_text()[-2000:])
    proc.url, proc.data, proc.env, proc.logpath = url, tmp_path / "data", env, tmp_path / "serve.log"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_runs_everything_and_stops_cleanly(serve):
    text = serve.logpath.read_text()
    assert f"StreamForge is running at {serve.url}/" in text
    link = re.search(r"Sign in: (\S+/login\?token=\S+)", text).group(1)
    s = requests.Session()
    assert s.get(link).status_code == 200 and s.get(serve.url + "/api/videos").status_code == 200
    secrets = serve.data / "secrets.json"
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"
    tok = subprocess.run([sys.executable, "-m", "streamforge.cli", "token", "create", "--email", "u@example.com",
                          "--data-dir", str(serve.data)], env=serve.env, capture_output=True, text=True,
                         timeout=60).stdout.strip()
    h = {"Authorization": f"Bearer {tok}"}
    data = CLIP.read_bytes()
    r = requests.post(serve.url + "/api/videos", json={"title": "serve", "filename": "bbb.mp4", "size": len(data),
                                                       "content_type": "video/mp4"}, headers=h).json()
    requests.put(r["upload"]["url"], data=data, timeout=60).raise_for_status()
    vid = r["video"]["id"]
    deadline, v = time.time() + 120, {}
    while time.time() < deadline:  # no complete call: the embedded store's notification starts the run
        v = requests.get(f"{serve.url}/api/videos/{vid}", headers=h).json()
        if v["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.5)
    assert v["status"] == "COMPLETED", v.get("error_message")
    master = requests.get(v["master_playlist_url"], timeout=10)
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
    assert s.get(v["watch_url"]).status_code == 404  # the admin of the sign-in link is not its owner
    owner = requests.Session()
    owner.get(f"{serve.url}/login?token={tok}")
    page = owner.get(v["watch_url"])
    assert page.status_code == 200 and "<video" in page.text
    # someone else (not signed in) cannot see the private video's page
    assert requests.get(v["watch_url"]).status_code == 404
    # Ctrl-C stops the whole tree: web, worker and the store
    tree = children_of(serve.pid)
    assert len(tree) >= 3
    # the web app: gunicorn's arbiter and one process per core (at most 4)
    web = [p for p in tree if open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[3:4] == [b"web"]]
    assert len(web) == 1 + min(4, len(os.sched_getaffinity(0))), web
    os.kill(serve.pid, signal.SIGINT)
    assert serve.wait(30) == 0
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    assert not [p for p in tree if alive(p)]


def test_doctor_and_token_output(serve):
    out = subprocess.run([sys.executable, "-m", "streamforge.cli", "doctor", "--data-dir", str(serve.data)],
                         env=serve.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == ["config", "database", "store", "queue", "codecs"]
    assert all(line.startswith("ok") for line in lines)
    secrets = (serve.data / "secrets.json").read_text()
    import json
    for value in json.loads(secrets).values():
        assert value not in out.stdout and value not in serve.logpath.read_text()
