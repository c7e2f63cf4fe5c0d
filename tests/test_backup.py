"""`streamforge backup DIR` while uploads and runs go on, `restore DIR` into another database and store:
every video COMPLETED in the backup plays there; a rerun adds only the new objects."""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

import requests
from conftest import LiveServer, drain_queue, free_port, fresh_database_url
from test_migrate import CLIP, cli, embedded, plays, upload_and_process, write_toml

from streamforge.config import load_config
from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store.objects import ObjectStore


def install_toml(path, seaweed, port: int, bucket: str, data_dir, database: str = "") -> str:
    """A config file for an install on the session's SeaweedFS (its own bucket) and `database`."""
    sections = {
        "server": {"data_dir": str(data_dir), "port": port, "base_url": f"http://127.0.0.1:{port}",
                   "secret_key": "k-" + uuid.uuid4().hex},
        "storage": {"endpoint": seaweed.endpoint, "access_key": seaweed.access_key, "secret_key": seaweed.secret_key,
                    "bucket": bucket},
        "webhook": {"token": "hook-" + uuid.uuid4().hex},
        "pipeline": {"heights": [240], "segment_seconds": 2}}
    if database:
        sections["database"] = {"url": database}
    return str(write_toml(path, sections))


def start_upload(url: str, h: dict) -> str:
    """A video whose bytes are in the store and whose run is queued (not run yet)."""
    data = CLIP.read_bytes()
    r = requests.post(f"{url}/api/videos", json={"title": "later", "filename": "b.mp4", "size": len(data),
                                                 "content_type": "video/mp4"}, headers=h, timeout=30).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=60).raise_for_status()
    assert requests.post(f"{url}/api/videos/{r['video']['id']}/upload/complete", json={}, headers=h,
                         timeout=30).status_code == 200
    return r["video"]["id"]


def wait_until_processing(vid: str, timeout: float = 120) -> None:
    """Wait for the state itself: the video's run has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with dbmod.db.connection_context():
            if videos.Video.get_by_id(vid).status == "PROCESSING":
                return
        time.sleep(0.02)
    raise AssertionError(f"{vid} never started processing")


def completed_ids(toml: str) -> list[str]:
    """The COMPLETED videos of an install's database."""
    cfg = load_config(toml, env={})
    dbmod.init_db(cfg.database_url)
    with dbmod.db.connection_context():
        return [v.id for v in videos.Video.select().where(videos.Video.status == "COMPLETED")]


def test_backup_while_busy_then_restore_elsewhere(tmp_path, seaweed, make_app):
    port = free_port()
    home = install_toml(tmp_path / "home.toml", seaweed, port, "bk-" + uuid.uuid4().hex[:8], tmp_path / "home")
    cfg = load_config(home, env={})
    ObjectStore.from_config(cfg).ensure_bucket([cfg.base_url])
    with LiveServer(make_app(cfg), port=port) as server:
        with dbmod.db.connection_context():
            _, token = videos.create_token(videos.get_or_create_user("keeper@example.com"))
        h = {"Authorization": f"Bearer {token}"}
        first = upload_and_process(server.url, h)
        second = start_upload(server.url, h)
        assert requests.post(f"{server.url}/api/videos/{first}/reprocess", headers=h, timeout=30).status_code == 202
        # the backup runs while this process runs both queued jobs: a new video, and a reprocess that
        # replaces the first one's output (and removes the old one once it is switched)
        worker = threading.Thread(target=drain_queue)
        worker.start()
        wait_until_processing(first)  # the queue runs in order: the second video is COMPLETED, the reprocess runs
        cli("backup", "--config", home, str(tmp_path / "bk"))
        worker.join(120)
        manifest = json.loads((tmp_path / "bk" / "backup.json").read_text())
        assert manifest["database"]["method"] == "sqlite online backup" and manifest["objects"]["count"] > 10
        assert set(completed_ids(home)) == {first, second}

    with fresh_database_url("postgresql", tmp_path, "restore") as pg_url:
        there = install_toml(tmp_path / "there.toml", seaweed, port, "rs-" + uuid.uuid4().hex[:8], tmp_path / "there",
                             pg_url)
        out = cli("restore", "--config", there, str(tmp_path / "bk")).stdout
        assert "FAIL" not in out and "ok   videos" in out, out
        restored = completed_ids(there)
        assert second in restored  # and the first if its reprocess finished before the snapshot
        for vid in restored:
            plays(make_app, load_config(there, env={}), h, vid, languages=("en",) if vid != second else ())
        # a rerun of the backup adds only what is new since (the runs finished meanwhile), a third nothing
        again = cli("backup", "--config", home, str(tmp_path / "bk")).stdout
        assert "0 to copy" in cli("backup", "--config", home, str(tmp_path / "bk")).stdout, again
        # a backup of a PostgreSQL install: the row copy, in one snapshot
        cli("backup", "--config", there, str(tmp_path / "bk2"))
        manifest = json.loads((tmp_path / "bk2" / "backup.json").read_text())
        assert manifest["database"]["method"].startswith("row copy")
        assert manifest["database"]["rows"]["videos"] == 2


def test_restore_refuses_what_is_not_a_backup_and_backup_another_install_s_folder(tmp_path):
    out = cli("restore", "--data-dir", str(tmp_path / "d"), str(tmp_path), ok=False)
    assert out.returncode == 1 and "is not a backup" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "backup.json").write_text(json.dumps({"install": "sqlite:///elsewhere.db + s3/other"}))
    out = cli("backup", "--data-dir", str(tmp_path / "d"), str(tmp_path / "bk"), ok=False)
    assert out.returncode == 1 and "another install" in out.stderr and "Traceback" not in out.stderr


def test_a_snapshot_whose_output_moved_meanwhile_is_taken_again(tmp_path, seaweed, make_app, monkeypatch, capsys):
    port = free_port()
    home = install_toml(tmp_path / "home.toml", seaweed, port, "mv-" + uuid.uuid4().hex[:8], tmp_path / "home")
    cfg = load_config(home, env={})
    store = ObjectStore.from_config(cfg)
    store.ensure_bucket([cfg.base_url])
    with LiveServer(make_app(cfg), port=port) as server:
        with dbmod.db.connection_context():
            _, token = videos.create_token(videos.get_or_create_user("mover@example.com"))
        vid = upload_and_process(server.url, {"Authorization": f"Bearer {token}"})
    from streamforge.commands import backup as command
    real, taken = command.snapshot_database, []

    def snapshot_then_switch(cfg, path):
        """The snapshot, then what a reprocess that finishes right after it does: a new output, the old removed."""
        taken.append(real(cfg, path))
        if len(taken) == 1:
            with dbmod.db.connection_context():
                video = videos.Video.get_by_id(vid)
                old, new = video.s3_processed_path, video.s3_processed_path + "-again"
                for o in store.list(old + "/"):
                    store.copy(o.key, new + o.key[len(old):])
                videos.Video.update(s3_processed_path=new).where(videos.Video.id == vid).execute()
                for r in videos.Rendition.select().where(videos.Rendition.video == vid):
                    videos.Rendition.update(s3_key=new + r.s3_key[len(old):]).where(videos.Rendition.id == r.id).execute()
            store.delete_prefix(old + "/")
        return taken[-1]

    monkeypatch.setattr(command, "snapshot_database", snapshot_then_switch)
    assert command.cmd_backup(argparse.Namespace(dir=str(tmp_path / "bk"), workers=4), cfg) == 0
    assert len(taken) == 2 and "lost objects meanwhile" in capsys.readouterr().out
    held = {line.split('"key": "')[1].split('"')[0] for line in (tmp_path / "bk" / "objects.jsonl").open()}
    assert f"processed/{vid}" in "".join(held) and any(k.endswith("-again/master.m3u8") for k in held)
    # restored into an empty data dir (the embedded default), it plays from its new output
    fresh = write_toml(tmp_path / "fresh.toml", {"server": {"data_dir": str(tmp_path / "fresh"), "port": port,
                                                            "base_url": f"http://127.0.0.1:{port}"}})
    fresh_cfg = load_config(fresh, env={})
    with embedded(fresh_cfg):
        out = cli("restore", "--config", str(fresh), str(tmp_path / "bk")).stdout
        assert "FAIL" not in out and "ok   objects" in out, out
        plays(make_app, fresh_cfg, {"Authorization": f"Bearer {token}"}, vid)
