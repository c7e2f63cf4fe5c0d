"""`streamforge migrate --to CONFIG`: the embedded default (SQLite + its own SeaweedFS) to PostgreSQL and
an external S3 store, and from there back to a fresh embedded data dir; a video COMPLETED before plays
after each move, with its owner's token, id, slug and captions."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import requests
from conftest import MEDIA, LiveServer, drain_queue, free_port, fresh_database_url

from streamforge.commands import local_serve
from streamforge.config import load_config
from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store.db import ProcessingLog, Video
from streamforge.store.embedded import EmbeddedStore
from streamforge.store.objects import ObjectStore

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
VTT = "WEBVTT\n\n00:00.500 --> 00:02.000\nMoved along\n"


def write_toml(path: Path, sections: dict) -> Path:
    """A config file from {section: {key: value}} (strings, integers and lists: JSON is TOML for these).

    Auto captions are off unless a section says otherwise (test_speech covers them; here a transcription
    would only add a task to every drained queue)."""
    sections = {**sections, "captions": {"auto": False, **sections.get("captions", {})}}
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Run `streamforge ARGS` as a user would (no STREAMFORGE_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", *args], env=env, capture_output=True,
                         text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


@contextlib.contextmanager
def embedded(cfg):
    """The embedded store of `cfg` running for the block (as `serve` runs it); stopped without the
    graceful wait a real install gets (weed often needs its full 10 s to stop on SIGTERM)."""
    store = EmbeddedStore(cfg)
    store.start()
    try:
        store.wait_ready(60)
        yield store
    finally:
        store.stop(timeout=2)


def app_config(path: Path, data_dir: Path | None = None):
    return load_config(path, data_dir, env={})


def upload_and_process(url: str, h: dict) -> str:
    """Upload the clip through the API, run its job here, add an English caption; returns its id."""
    data = CLIP.read_bytes()
    r = requests.post(f"{url}/api/videos", json={"title": "Family day", "filename": "day one.mp4", "size": len(data),
                                                 "content_type": "video/mp4"}, headers=h, timeout=30).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=60).raise_for_status()
    vid = r["video"]["id"]
    assert requests.post(f"{url}/api/videos/{vid}/upload/complete", json={}, headers=h, timeout=30).status_code == 200
    assert [str(x) for x in drain_queue()] == ["completed"]
    assert requests.post(f"{url}/api/videos/{vid}/captions", json={"language": "en", "content": VTT}, headers=h,
                         timeout=30).status_code == 201
    return vid


def plays(make_app, cfg, h: dict, vid: str, languages: tuple = ("en",)) -> dict:
    """The video as `cfg`'s app serves it, after fetching its master, a rendition, a segment and its caption."""
    with LiveServer(make_app(cfg), port=cfg.server.port) as server:
        v = requests.get(f"{server.url}/api/videos/{vid}", headers=h, timeout=30).json()
        assert v["status"] == "COMPLETED", v
        master = requests.get(v["master_playlist_url"], timeout=30)
        assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
        rendition = next(x for x in master.text.splitlines() if x and not x.startswith("#"))
        playlist = requests.get(rendition, timeout=30)
        assert playlist.status_code == 200 and "#EXT-X-ENDLIST" in playlist.text
        segment = requests.get([x for x in playlist.text.splitlines() if x and not x.startswith("#")][-1], timeout=30)
        assert segment.status_code == 200 and len(segment.content) > 1000
        captions = requests.get(f"{server.url}/api/videos/{vid}/captions", headers=h, timeout=30).json()["items"]
        assert tuple(c["language"] for c in captions) == languages
        for c in captions:
            assert "Moved along" in requests.get(c["url"], timeout=30).text
    return v


def test_embedded_to_postgres_and_s3_and_back(tmp_path, make_app, seaweed):
    port = free_port()
    home = write_toml(tmp_path / "home.toml", {
        "server": {"data_dir": str(tmp_path / "home"), "port": port, "base_url": f"http://127.0.0.1:{port}"},
        "pipeline": {"heights": [240], "segment_seconds": 2}})
    cfg = app_config(home)
    with embedded(cfg) as store:  # the embedded default, as `serve` runs it
        store.object_store().prepare([cfg.base_url])
        with LiveServer(make_app(cfg), port=port) as server:
            with dbmod.db.connection_context():
                _, token = videos.create_token(videos.get_or_create_user("family@example.com"))
            h = {"Authorization": f"Bearer {token}"}
            vid = upload_and_process(server.url, h)
            before = requests.get(f"{server.url}/api/videos/{vid}", headers=h, timeout=30).json()
        with fresh_database_url("postgresql", tmp_path, "mig") as pg_url:
            bucket = "mig-" + uuid.uuid4().hex[:8]
            big = write_toml(tmp_path / "big.toml", {
                "server": {"data_dir": str(tmp_path / "big"), "port": port, "base_url": f"http://127.0.0.1:{port}",
                           "secret_key": "big-" + uuid.uuid4().hex},
                "database": {"url": pg_url},
                "storage": {"endpoint": seaweed.endpoint, "access_key": seaweed.access_key,
                            "secret_key": seaweed.secret_key, "bucket": bucket},
                "webhook": {"token": "big-hook-" + uuid.uuid4().hex}})
            # refused while this install's serve runs (its run file names a live process)
            local_serve.write_run_file(cfg, pid=os.getpid())
            refused = cli("migrate", "--config", str(home), "--to", str(big), ok=False)
            local_serve.run_file(cfg).unlink()
            assert refused.returncode == 1 and "serve` is running" in refused.stderr
            out = cli("migrate", "--config", str(home), "--to", str(big)).stdout
            assert "ok   videos: 1 rows here, 1 there" in out and "FAIL" not in out, out
            after = plays(make_app, app_config(big), h, vid)
            assert (after["slug"], after["title"], after["original"]) == (before["slug"], before["title"],
                                                                          before["original"])
            # a rerun copies only what is missing: here one segment lost on the way
            lost = next(o.key for o in ObjectStore.from_config(app_config(big)).list("processed/")
                        if o.key.endswith(".m4s"))
            ObjectStore.from_config(app_config(big)).delete(lost)
            # and brings rows changed since up to date (here a title edited before the new install started)
            dbmod.init_db(cfg.database_url)
            with dbmod.db.connection_context():
                Video.update(title="Family day, edited").where(Video.id == vid).execute()
                # and drops rows dropped here since (a reprocess replaces renditions the same way)
                ProcessingLog.delete().where(ProcessingLog.id == ProcessingLog.select().first().id).execute()
            again = cli("migrate", "--config", str(home), "--to", str(big)).stdout
            assert "objects: 1 to copy" in again and "videos: 1 rows, 0 new" in again, again
            assert "FAIL" not in again and "ok   processing_logs" in again, again
            dbmod.init_db(pg_url)
            with dbmod.db.connection_context():
                assert Video.get_by_id(vid).title == "Family day, edited"

            # and back, to a fresh embedded data dir
            back = write_toml(tmp_path / "back.toml", {
                "server": {"data_dir": str(tmp_path / "back"), "port": port,
                           "base_url": f"http://127.0.0.1:{port}"}})
            back_cfg = app_config(back)
            with embedded(back_cfg):
                out = cli("migrate", "--config", str(big), "--to", str(back)).stdout
                assert "FAIL" not in out and "ok   objects" in out, out
                plays(make_app, back_cfg, h, vid)


def test_migrate_refuses_the_same_place_and_a_target_with_another_install(tmp_path):
    cfg_path = write_toml(tmp_path / "a.toml", {"server": {"data_dir": str(tmp_path / "a")}})
    out = cli("migrate", "--config", str(cfg_path), "--to", str(cfg_path), ok=False)
    assert out.returncode == 1 and "this install's own" in out.stderr
    other = write_toml(tmp_path / "b.toml", {"server": {"data_dir": str(tmp_path / "b")}})
    cli("token", "create", "--config", str(other), "--email", "someone@example.com")
    cli("token", "create", "--config", str(cfg_path), "--email", "me@example.com")
    out = cli("migrate", "--config", str(cfg_path), "--to", str(other), ok=False)
    assert out.returncode == 1 and "another install" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr

