"""Remote runners: tokens and the admin API, a runner as a separate process with no credentials processing a
video over HTTP alone, a runner killed mid-run whose work another takes over, a revoked runner that stops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import media_live
import pytest
import requests
from media_live import ffmpeg, get, upload

from streamforge.jobs import intake
from streamforge.store import db as dbmod
from streamforge.store import runners
from streamforge.store.connect import object_store

live = media_live.live


@pytest.fixture
def live_env():
    return {"STREAMFORGE_SWEEPER_LEASE_SECONDS": "5", "STREAMFORGE_AUTH_ADMINS": "owner-i13@example.com"}


def _clip(tmp_path, seconds: int = 4, name: str = "clip.mp4", size: str = "320x240") -> Path:
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}", "-f", "lavfi", "-i",
           f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


def _admin(live, method: str, path: str, body=None) -> requests.Response:
    return requests.request(method, live.url + path, json=body, headers=live.h, timeout=30)


def _start_runner(live, token: str, name: str, tmp_path: Path) -> subprocess.Popen:
    """`streamforge runner` in its own process, with an environment that holds no StreamForge setting at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFORGE_", "AWS_", "MINIO_"))}
    env["TMPDIR"] = str(tmp_path)
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "streamforge.commands.main", "runner", "--url", live.url,
                             "--token", token, "--name", name], env=env, cwd=tmp_path, stdout=log, stderr=log)


def _wait_for(what, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _status(live, vid) -> dict:
    return get(live, vid)


def _logs(live, vid) -> list[dict]:
    return requests.get(f"{live.url}/api/videos/{vid}/logs", headers=live.h, timeout=30).json()["items"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_runner_tokens_and_the_admin_api(live):
    r = _admin(live, "POST", "/api/admin/runners", {"name": "desktop"})
    assert r.status_code == 201 and set(r.json()) == {"id", "name", "token"} and r.json()["name"] == "desktop"
    made = r.json()
    listing = _admin(live, "GET", "/api/admin/runners").json()["items"]
    mine = next(x for x in listing if x["id"] == made["id"])
    assert mine == {"id": made["id"], "name": "desktop", "last_seen_at": None, "running": 0, "done": 0, "failed": 0,
                    "created_at": mine["created_at"]}
    # a runner token is no user's token, and a user's token is no runner's
    assert requests.get(f"{live.url}/api/videos", headers={"Authorization": f"Bearer {made['token']}"},
                        timeout=10).status_code == 401
    assert requests.post(f"{live.url}/api/runners/jobs/request", json={"wait": 0}, headers=live.h,
                         timeout=10).status_code == 401
    ok = requests.post(f"{live.url}/api/runners/jobs/request", json={"wait": 0},
                       headers={"Authorization": f"Bearer {made['token']}"}, timeout=10)
    assert ok.status_code == 204
    assert _admin(live, "GET", "/api/admin/runners").json()["items"][0]["last_seen_at"] is not None
    # only admins manage runners
    assert requests.get(f"{live.url}/api/admin/runners", headers=live.h2, timeout=10).status_code == 403
    assert _admin(live, "DELETE", f"/api/admin/runners/{made['id']}").status_code == 204
    assert _admin(live, "DELETE", f"/api/admin/runners/{made['id']}").status_code == 404
    assert requests.post(f"{live.url}/api/runners/jobs/request", json={"wait": 0},
                         headers={"Authorization": f"Bearer {made['token']}"}, timeout=10).status_code == 401
    assert made["id"] not in [x["id"] for x in _admin(live, "GET", "/api/admin/runners").json()["items"]]


def test_runner_token_create_prints_the_token_alone(seaweed, tmp_path):
    cfg_dir = tmp_path / "data"
    cfg = seaweed.make_config(cfg_dir)
    env = {k: v for k, v in os.environ.items()}
    assert cfg.database_url
    r = subprocess.run([sys.executable, "-m", "streamforge.commands.main", "runner-token", "create", "--name", "nas",
                        "--data-dir", str(cfg_dir)], env={**env, "STREAMFORGE_DATABASE_URL": cfg.database_url},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n" and token.startswith(runners.TOKEN_PREFIX)
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        row = runners.runner_for_token(token)
        assert row is not None and row.name == "nas"


def test_a_runner_with_no_credentials_processes_a_video(live, tmp_path):
    token = _admin(live, "POST", "/api/admin/runners", {"name": "desk"}).json()["token"]
    vid = upload(live, _clip(tmp_path), process=False)  # nobody drains the queue: only the runner works
    proc = _start_runner(live, token, "desk", tmp_path)
    try:
        v = _wait_for(lambda: (s := _status(live, vid))["status"] in ("COMPLETED", "FAILED") and s, 120)
        assert v["status"] == "COMPLETED", (v["error_message"], (tmp_path / "desk.log").read_text()[-2000:])
        assert v["playable_at"] and v["master_playlist_url"] and v["renditions"][0]["segment_count"] >= 2
        master = requests.get(v["master_playlist_url"], timeout=10)
        assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
        rows = _logs(live, vid)
        done = {r["stage"]: r["message"] for r in rows if r["status"] == "completed"}
        assert set(done) >= {"download", "probe", "transcode", "thumbnails", "upload", "database"}
        assert all("(by runner desk)" in done[s] for s in ("download", "probe", "transcode", "thumbnails"))
        # an audio-only upload goes the same way
        song = tmp_path / "song.m4a"
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000:duration=3", "-c:a", "aac", song)
        aid = upload(live, song, content_type="audio/mp4", process=False)
        a = _wait_for(lambda: (s := _status(live, aid))["status"] in ("COMPLETED", "FAILED") and s, 120)
        assert a["status"] == "COMPLETED" and a["kind"] == "audio", a["error_message"]
        listing = _admin(live, "GET", "/api/admin/runners").json()["items"]
        assert [(x["name"], x["done"], x["running"], x["failed"]) for x in listing] == [("desk", 2, 0, 0)]
        # the runner went on polling; SIGTERM stops it cleanly
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        _stop(proc)


def _transcoding(live, vid):
    return any(r["stage"] == "transcode" and r["status"] == "started" for r in _logs(live, vid))


def test_a_killed_runner_loses_its_work_to_another_and_a_revoked_one_stops(live, tmp_path):
    first = _admin(live, "POST", "/api/admin/runners", {"name": "first"}).json()
    second = _admin(live, "POST", "/api/admin/runners", {"name": "second"}).json()
    vid = upload(live, _clip(tmp_path, seconds=30, size="640x360"), process=False)
    a = _start_runner(live, first["token"], "first", tmp_path)
    try:
        _wait_for(lambda: _status(live, vid)["status"] == "PROCESSING", 120, 0.1)
        a.kill()  # mid-run: no goodbye
        a.wait(10)
        assert _status(live, vid)["status"] == "PROCESSING"
        # within the lease the sweeper takes it back (the test is the sweeper here)
        with dbmod.db.connection_context():
            _wait_for(lambda: intake.sweep(live.cfg, object_store(live.cfg))["reclaimed"] == 1, 60, 0.5)
        assert _status(live, vid)["status"] == "PENDING"
        b = _start_runner(live, second["token"], "second", tmp_path)
        try:
            v = _wait_for(lambda: (s := _status(live, vid))["status"] in ("COMPLETED", "FAILED") and s, 300)
            assert v["status"] == "COMPLETED", (v["error_message"], (tmp_path / "second.log").read_text()[-2000:])
            finished = [r["message"] for r in _logs(live, vid) if r["stage"] == "transcode" and r["status"] == "completed"]
            assert len(finished) == 1 and finished[0].endswith("(by runner second)")
            # the next video: second holds it, then is revoked: the work goes back and the runner stops at once
            vid2 = upload(live, _clip(tmp_path, seconds=30, size="640x360", name="two.mp4"), process=False)
            _wait_for(lambda: _status(live, vid2)["status"] == "PROCESSING", 120, 0.1)
            assert _admin(live, "DELETE", f"/api/admin/runners/{second['id']}").status_code == 204
            assert _status(live, vid2)["status"] == "PENDING"
            assert b.wait(30) == 3
        finally:
            _stop(b)
    finally:
        _stop(a)


def test_admin_page_lists_runners(live):
    _admin(live, "POST", "/api/admin/runners", {"name": "garage-pc"})
    page = requests.get(f"{live.url}/admin", headers=live.h, timeout=10)
    assert page.status_code == 200 and 'id="runners"' in page.text and "garage-pc" in page.text



def test_sigterm_gives_the_work_back_at_once(live, tmp_path):
    token = _admin(live, "POST", "/api/admin/runners", {"name": "laptop"}).json()["token"]
    vid = upload(live, _clip(tmp_path, seconds=30, size="640x360"), process=False)
    proc = _start_runner(live, token, "laptop", tmp_path)
    try:
        _wait_for(lambda: _transcoding(live, vid), 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        # back in the queue before any lease ran out, nothing of the run left published, no failure logged
        v = _status(live, vid)
        assert v["status"] == "PENDING" and v["master_playlist_url"] is None and v["error_message"] is None
        assert not [r for r in _logs(live, vid) if r["status"] == "failed"]
        assert _admin(live, "GET", "/api/admin/runners").json()["items"][0]["running"] == 0
    finally:
        _stop(proc)


def test_a_runner_waits_for_a_restarting_instance(live, tmp_path):
    from conftest import LiveServer
    token = _admin(live, "POST", "/api/admin/runners", {"name": "patient"}).json()["token"]
    proc = _start_runner(live, token, "patient", tmp_path)
    again = None
    try:
        _wait_for(lambda: _admin(live, "GET", "/api/admin/runners").json()["items"][0]["last_seen_at"], 60)
        app = live.server.app
        live.server.shutdown()
        live.server.server_close()  # the instance is down: connections are refused
        _wait_for(lambda: b"did not answer" in (tmp_path / "patient.log").read_bytes(), 90)
        again = LiveServer(app, port=live.port).__enter__()
        vid = upload(live, _clip(tmp_path), process=False)
        v = _wait_for(lambda: (s := _status(live, vid))["status"] in ("COMPLETED", "FAILED") and s, 120)
        assert v["status"] == "COMPLETED" and proc.poll() is None
    finally:
        _stop(proc)
        if again is not None:
            again.__exit__()


def test_a_runners_output_urls_reach_only_its_own_work(live, tmp_path):
    """A runner gets PUT URLs only for output paths of the work it holds, with the token it got it with."""
    token = _admin(live, "POST", "/api/admin/runners", {"name": "scoped"}).json()["token"]
    vid = upload(live, _clip(tmp_path), process=False)
    h = {"Authorization": f"Bearer {token}"}
    job = requests.post(f"{live.url}/api/runners/jobs/request", json={"wait": 5}, headers=h, timeout=30).json()["job"]
    assert job["video_id"] == vid
    url = f"{live.url}/api/runners/jobs/{job['id']}/uploads"
    for bad in ("../other/x.m4s", "downloads/720p.mp4", "/abs.m4s"):
        r = requests.post(url, json={"token": job["token"], "files": [bad]}, headers=h, timeout=10)
        assert r.status_code == 400, (bad, r.status_code)
    r = requests.post(url, json={"token": "not-the-job-token", "files": ["240p/seg_00000.m4s"]}, headers=h, timeout=10)
    assert r.status_code in (404, 409, 410), r.status_code
    good = requests.post(url, json={"token": job["token"], "files": ["240p/seg_00000.m4s"]}, headers=h, timeout=10)
    assert good.status_code == 200
    signed = good.json()["urls"]["240p/seg_00000.m4s"]
    target = signed["url"] if isinstance(signed, dict) else signed
    assert f"/processed/{vid}/" in requests.utils.unquote(target) and "240p/seg_00000.m4s" in target
    # the URL is signed for its key: the same signature on another key is refused by the store
    other = target.replace("seg_00000.m4s", "seg_00001.m4s")
    put = requests.put(other, data=b"x", headers=signed.get("headers", {}) if isinstance(signed, dict) else {},
                       timeout=10)
    assert put.status_code == 403, put.status_code
    # gives the work back
    back = requests.post(f"{live.url}/api/runners/jobs/{job['id']}/abort", json={"token": job["token"]}, headers=h,
                         timeout=10)
    assert back.status_code == 200


def test_a_runners_levels_may_carry_each_rungs_peak_and_are_checked():
    from streamforge.errors import ValidationError
    from streamforge.jobs.remote import _levels

    # an older runner's pairs, and a rung of hard content whose peak the probe raised to the target bitrate
    assert _levels([["720p", 22.5], ["360p", 21, 1.0]]) == [["720p", 22.5], ["360p", 21.0, 1.0]]
    assert _levels(None) == []
    for bad in ([["720p", 22, 1.0, 5]], [["720p"]], [["720p", 70]], [["720p", 22, 9.0]], [["720p", "x"]], 5):
        with pytest.raises(ValidationError):
            _levels(bad)
