"""Shared by test_captions, test_downloads and test_audio: the app on a real port against the session's
SeaweedFS, uploads through the API, the queue drained in-process, and test inputs made with ffmpeg."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import LiveServer, drain_queue, free_port, require

from streamforge.store import db as dbmod
from streamforge.store import videos


@pytest.fixture
def live_env() -> dict:
    """Extra configuration for `live` (a test parametrizes it to change a key)."""
    return {}


@pytest.fixture
def live(seaweed, make_app, tmp_path, live_env):
    """The app on a real port with a one-rung ladder; `live.h` / `live.h2`: the owner's and another user's
    bearer headers."""
    port = free_port()
    env = {"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}", "STREAMFORGE_PIPELINE_HEIGHTS": "240",
           "STREAMFORGE_PIPELINE_SEGMENT_SECONDS": "2", **live_env}
    cfg = seaweed.make_config(tmp_path, env=env)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    seaweed.store.prepare([cfg.base_url])
    with LiveServer(make_app(cfg), port=port) as server:
        with dbmod.db.connection_context():
            _, tok = videos.create_token(videos.get_or_create_user("owner-i13@example.com"))
            _, tok2 = videos.create_token(videos.get_or_create_user("other-i13@example.com"))
        server.cfg = cfg
        server.h = {"Authorization": f"Bearer {tok}"}
        server.h2 = {"Authorization": f"Bearer {tok2}"}
        yield server


def upload(live, path: Path, content_type: str = "video/mp4", process: bool = True) -> str:
    """Create, PUT and complete an upload of `path`; with `process`, run its queued job; returns its id."""
    data = path.read_bytes()
    r = requests.post(f"{live.url}/api/videos", json={"title": path.stem, "filename": path.name, "size": len(data),
                                                      "content_type": content_type}, headers=live.h, timeout=30)
    assert r.status_code == 201, r.text
    answer = r.json()
    requests.put(answer["upload"]["url"], headers=answer["upload"]["headers"], data=data, timeout=30).raise_for_status()
    done = requests.post(f"{live.url}/api/videos/{answer['video']['id']}/upload/complete", json={}, headers=live.h,
                         timeout=30)
    assert done.status_code == 200, done.text
    if process:
        assert [str(x) for x in drain_queue()] == ["completed"]
    return answer["video"]["id"]


def get(live, vid: str, headers=None) -> dict:
    """GET /api/videos/{id} as the owner."""
    r = requests.get(f"{live.url}/api/videos/{vid}", headers=headers or live.h, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def fetch(url: str) -> requests.Response:
    """GET that must answer 200."""
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return r


def attrs(line: str) -> dict:
    """The attributes of an m3u8 tag line."""
    import re
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])}


def ffmpeg(*args) -> None:
    """Run ffmpeg (skipped where the machine has none) to make a test input."""
    require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    r = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
