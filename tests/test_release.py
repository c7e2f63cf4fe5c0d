"""The single-file release: `make release` builds dist/streamforge, and it runs with no Python around it.

The build (a few minutes) happens once per test session. `serve` from it runs under `env -i` with a
PATH that holds nothing, through upload -> COMPLETED -> a playable master; SIGTERM leaves no
unpacked `_MEI*` directory and no `weed` behind.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from conftest import require
from test_serve import CLIP, alive, children_of, start_serve, stop_serve

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "dist" / "streamforge"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def release() -> Path:
    """dist/streamforge, built by `make release` once in this session."""
    require(importlib.util.find_spec("PyInstaller") is not None,
            "PyInstaller is not installed (pip install -e '.[release]')")
    require((ROOT / "streamforge" / "web" / "static" / "vendor").is_dir(), "no static/vendor (npm ci)")
    # the venv is this Python's; its packages are installed already (-o: not again)
    out = subprocess.run(["make", "-o", "install-release", "release", f"VENV={sys.prefix}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert RELEASE.is_file() and os.access(RELEASE, os.X_OK)
    return RELEASE


def bare_env(tmp_path: Path) -> dict[str, str]:
    """What `env -i` leaves, plus a PATH of nothing and a private TMPDIR: no Python to lean on."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"PATH": "/nonexistent-bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
            "STREAMFORGE_PIPELINE_HEIGHTS": "360,240"}


def test_version_and_commands_from_the_file_alone(release, tmp_path):
    env = bare_env(tmp_path)
    out = subprocess.run([str(release), "--version"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and re.fullmatch(r"streamforge \d+\.\d+\.\d+\S*\n", out.stdout), out
    out = subprocess.run([str(release), "doctor", "--data-dir", str(tmp_path / "d")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert "ok   codecs: PyAV" in out.stdout and "libx264" in out.stdout, out.stdout + out.stderr
    assert "ok   speech: faster-whisper tiny.en (packaged" in out.stdout, out.stdout  # the model is in the file
    assert not list((tmp_path / "tmp").glob("_MEI*"))


def _play(master_url: str) -> None:
    """Fetch what a player fetches first: the master, a media playlist, its init segment and a segment."""
    master = requests.get(master_url, timeout=10)
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text, master.text
    media_url = urljoin(master.url, next(x for x in master.text.splitlines() if x and not x.startswith("#")))
    media = requests.get(media_url, timeout=10)
    assert media.status_code == 200 and "#EXTINF" in media.text, media.text
    urls = [urljoin(media.url, u) for u in re.findall(r'URI="([^"]+)"', media.text)]
    urls += [urljoin(media.url, x) for x in media.text.splitlines() if x and not x.startswith("#")][:1]
    for url in urls:
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and len(r.content) > 0, url


def test_serve_from_the_release_without_python_uploads_plays_and_stops_clean(release, tmp_path):
    env = bare_env(tmp_path)
    proc = start_serve(tmp_path, command=[str(release)], env=env, inherit_env=False, timeout=180)
    try:
        tree = children_of(proc.pid)
        exes = {os.readlink(f"/proc/{p}/exe") for p in tree | {proc.pid} if alive(p)}
        unpacked = [Path(p) for p in (tmp_path / "tmp").glob("_MEI*")]
        assert len(unpacked) == 1, unpacked  # the parts reuse one unpacked bundle
        # nothing runs but the file itself and the weed it carries
        assert exes == {str(release), str(unpacked[0] / "weed")}, exes
        tok = subprocess.run([str(release), "token", "create", "--email", "release@example.com", "--data-dir",
                              str(proc.data)], env=env, capture_output=True, text=True, timeout=120)
        assert tok.returncode == 0, tok.stderr
        h = {"Authorization": f"Bearer {tok.stdout.strip()}"}
        data = CLIP.read_bytes()
        r = requests.post(proc.url + "/api/videos", json={"title": "release", "filename": "bbb.mp4",
                                                          "size": len(data), "content_type": "video/mp4"},
                          headers=h, timeout=10).json()
        requests.put(r["upload"]["url"], data=data, headers=r["upload"].get("headers"), timeout=60).raise_for_status()
        deadline, video = time.time() + 180, {}
        while time.time() < deadline:
            video = requests.get(f"{proc.url}/api/videos/{r['video']['id']}", headers=h, timeout=10).json()
            if video["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.5)
        assert video["status"] == "COMPLETED", (video.get("error_message"), proc.logpath.read_text()[-3000:])
        _play(video["master_playlist_url"])
        # the release carries the speech model: the auto captions stage runs offline after COMPLETED
        deadline, stages = time.time() + 180, []
        while time.time() < deadline:
            logs = requests.get(f"{proc.url}/api/videos/{r['video']['id']}/logs", headers=h, timeout=10).json()
            stages = [x for x in logs["items"] if x["stage"] == "captions" and x["status"] != "started"]
            if stages:
                break
            time.sleep(0.5)
        assert [x["status"] for x in stages] == ["completed"], (stages, proc.logpath.read_text()[-3000:])
        # SIGTERM to the program (the bootloader forwards it): every part ends, the unpacked dir goes
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.time() + 15
        while time.time() < deadline and (any(alive(p) for p in tree) or unpacked[0].exists()):
            time.sleep(0.2)
        assert not [p for p in tree if alive(p)], "parts left running"
        assert not unpacked[0].exists() and not list((tmp_path / "tmp").glob("_MEI*"))
    finally:
        stop_serve(proc)


def test_a_noexec_tmpdir_is_one_clear_line(release, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a noexec tmpfs needs root")
    mnt = tmp_path / "noexec"
    mnt.mkdir()
    # room for the whole unpacked bundle (about 900 MB with the speech model and its libraries): a tmpfs
    # takes memory only for what is written to it
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=2g", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        env = {**bare_env(tmp_path), "TMPDIR": str(mnt)}
        out = subprocess.run([str(release), "--version"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert len(lines) == 1 and "TMPDIR" in lines[0] and "noexec" in lines[0], lines
        assert not list(mnt.glob("_MEI*"))
    finally:
        subprocess.run(["umount", str(mnt)])


def test_frozen_glue_commands_certificates_and_weed(monkeypatch, tmp_path):
    """What frozen.py decides, without building: the parts' argv, the CA bundle, weed's run bit."""
    import ssl

    import certifi

    from streamforge import frozen
    assert frozen.self_command("web", "--data-dir", "d") == [sys.executable, "-m", "streamforge.commands.main", "web",
                                                             "--data-dir", "d"]
    assert frozen.bundled_binary("weed") is None  # not frozen: the venv's weed
    weed = tmp_path / "weed"
    weed.write_bytes(b"#!/bin/sh\n")
    weed.chmod(0o644)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setenv("PYINSTALLER_RESET_ENVIRONMENT", "1")
    # frozen: the executable itself with the subcommand, an environment that reuses the unpacked bundle
    assert frozen.self_command("worker") == [sys.executable, "worker"]
    assert "PYINSTALLER_RESET_ENVIRONMENT" not in frozen.child_env()
    assert frozen.bundled_binary("weed") == str(weed) and os.access(weed, os.X_OK)
    # a host with no CA bundle gets certifi's; one with its own keeps it
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: ssl.DefaultVerifyPaths(
        str(tmp_path / "none.pem"), str(tmp_path / "none"), "", "", "", ""))
    frozen.use_bundled_certificates()
    assert os.environ["SSL_CERT_FILE"] == certifi.where()
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/mine.pem")
    frozen.use_bundled_certificates()
    assert os.environ["SSL_CERT_FILE"] == "/etc/ssl/mine.pem"
