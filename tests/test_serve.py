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


BANNER_END = "Stop: press Ctrl-C"


def start_serve(tmp_path, *extra: str, command=None, env: dict | None = None, timeout: float = 120,
                port: int | None = None, inherit_env: bool = True):
    """Start `serve` in its own session, output to tmp_path/serve.log; return once the banner is out."""
    port = port or free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")} if inherit_env else {}
    base["STREAMFORGE_PIPELINE_HEIGHTS"] = "360,240"
    env = {**base, **(env or {})}
    log = open(tmp_path / "serve.log", "w+")
    cmd = command or [sys.executable, "-m", "streamforge.commands.main"]
    proc = subprocess.Popen([*cmd, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.url, proc.port, proc.data, proc.env = f"http://127.0.0.1:{port}", port, tmp_path / "data", env
    proc.logpath = tmp_path / "serve.log"
    deadline = time.time() + timeout
    while BANNER_END not in proc.logpath.read_text():  # printed once every part answers
        if proc.poll() is not None or time.time() > deadline:
            stop_serve(proc)
            raise AssertionError("serve never printed its banner: " + proc.logpath.read_text()[-3000:])
        time.sleep(0.2)
    assert requests.get(proc.url + "/healthz", timeout=5).status_code == 200
    return proc


def stop_serve(proc) -> None:
    """Kill the whole session of a serve started by start_serve."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def serve(tmp_path):
    proc = start_serve(tmp_path)
    try:
        yield proc
    finally:
        stop_serve(proc)


def assert_first_screen(proc) -> None:
    """The terminal shows the banner last, no INFO lines and no retry warnings; the logs are in files."""
    text = proc.logpath.read_text()
    banner = text[text.rindex("StreamForge is running at"):]
    assert banner.rstrip().endswith(BANNER_END), text[-2000:]
    for line in (f"StreamForge is running at {proc.url}/", f"Sign in: {proc.url}/login?token=",
                 f"Data: {proc.data.resolve()}", BANNER_END):
        assert line in banner, banner
    assert " INFO " not in text and "[INFO]" not in text and "Retrying" not in text, text[-3000:]
    logs = proc.data / "logs"
    assert "Booting worker" in (logs / "web.log").read_text()
    assert "huey" in (logs / "worker.log").read_text()
    assert "started SeaweedFS" in (logs / "serve.log").read_text()
    assert "starting weed mini" in (logs / "weed.log").read_text()


def test_verbose_serve_shows_the_parts_logs_too(tmp_path):
    proc = start_serve(tmp_path, "--verbose")
    try:
        text = proc.logpath.read_text()
        assert "Booting worker" in text and "started SeaweedFS" in text  # INFO on the terminal too
        assert f"Sign in: {proc.url}/login?token=" in text
        assert "Booting worker" in (proc.data / "logs" / "web.log").read_text()
    finally:
        stop_serve(proc)


def test_serve_runs_everything_and_stops_cleanly(serve):
    text = serve.logpath.read_text()
    assert f"StreamForge is running at {serve.url}/" in text
    link = re.search(r"Sign in: (\S+/login\?token=\S+)", text).group(1)
    s = requests.Session()
    assert s.get(link).status_code == 200 and s.get(serve.url + "/api/videos").status_code == 200
    secrets = serve.data / "secrets.json"
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"
    tok = subprocess.run([sys.executable, "-m", "streamforge.commands.main", "token", "create", "--email", "u@example.com",
                          "--data-dir", str(serve.data)], env=serve.env, capture_output=True, text=True,
                         timeout=60).stdout.strip()
    h = {"Authorization": f"Bearer {tok}"}
    data = CLIP.read_bytes()
    r = requests.post(serve.url + "/api/videos", json={"title": "serve", "filename": "bbb.mp4", "size": len(data),
                                                       "content_type": "video/mp4"}, headers=h).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=60).raise_for_status()
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
    # a whole upload later, the banner is still the last thing on the terminal: the parts logged to files
    assert_first_screen(serve)
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
    out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", "doctor", "--data-dir", str(serve.data)],
                         env=serve.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == ["config", "database", "store", "queue", "codecs",
                                                                 "speech", "notifications"]
    assert all(line.startswith("ok") for line in lines)
    secrets = (serve.data / "secrets.json").read_text()
    import json
    for value in json.loads(secrets).values():
        assert value not in out.stdout and value not in serve.logpath.read_text()
