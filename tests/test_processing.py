"""The worker job in-process on a real SeaweedFS: stages, rows, HLS through signed links, failures."""
import dataclasses
import time

import av
import pytest
import requests
from conftest import MEDIA, LiveServer, drain_queue, free_port

from streamforge.jobs import processing
from streamforge.store import db as dbmod
from streamforge.store.db import Video

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
STAGES = ["download", "probe", "transcode", "thumbnails", "upload", "database"]


@pytest.fixture
def live(seaweed, make_app, tmp_path):
    """The app on a real port (players fetch /play links from it), with a small, fast ladder."""
    port = free_port()
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
                                             "STREAMFORGE_PIPELINE_HEIGHTS": "360,240",
                                             "STREAMFORGE_PLAYBACK_SIGNED_URL_TTL": "600"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    seaweed.store.prepare([cfg.base_url])  # as `streamforge web` does at start
    with LiveServer(make_app(cfg), port=port) as server:
        from streamforge.store import videos
        with dbmod.db.connection_context():
            _, tok = videos.create_token(videos.get_or_create_user("worker@example.com"))
        server.cfg = cfg
        server.h = {"Authorization": f"Bearer {tok}"}
        yield server


def upload(live, data: bytes, filename="clip.mp4"):
    r = requests.post(f"{live.url}/api/videos", json={"title": "t", "filename": filename, "size": len(data),
                                                      "content_type": "video/mp4"}, headers=live.h).json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
    done = requests.post(f"{live.url}/api/videos/{r['video']['id']}/upload/complete", json={}, headers=live.h)
    assert done.status_code == 200
    return r["video"]["id"]


def get(live, vid):
    return requests.get(f"{live.url}/api/videos/{vid}", headers=live.h).json()


def logs(live, vid):
    return requests.get(f"{live.url}/api/videos/{vid}/logs", headers=live.h).json()["items"]


def fetch(url):
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, (url, r.status_code)
    return r


def playlist_refs(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_upload_becomes_a_signed_hls_ladder(live, seaweed, tmp_path):
    vid = upload(live, CLIP.read_bytes())
    assert drain_queue() == ["completed"]
    v = get(live, vid)
    assert v["status"] == "COMPLETED" and v["progress"] == 1.0 and v["processed_at"] and v["playable_at"]
    assert abs(v["original"]["duration"] - 5.31) < 0.2
    assert sorted((r["height"], r["codec"]) for r in v["renditions"]) == [(240, "h264"), (360, "h264")]
    assert all(r["segment_count"] >= 2 and r["bandwidth"] > 0 and r["codecs"].startswith("avc1.")
               for r in v["renditions"])
    assert {t["type"] for t in v["thumbnails"]} == {"COVER", "PREVIEW", "TIMELINE"}
    items = logs(live, vid)
    completed = [i["stage"] for i in items if i["status"] == "completed"]
    assert sorted(completed) == sorted(STAGES)  # each stage once
    chain = [completed.index(s) for s in ("download", "probe", "transcode", "upload", "database")]
    assert chain == sorted(chain)
    assert all(i["duration"] is not None for i in items if i["status"] == "completed")
    # the master and everything under it are reachable through the signed links only
    master = fetch(v["master_playlist_url"]).text
    assert "#EXT-X-STREAM-INF" in master and 'TYPE=AUDIO' in master and "EXT-X-I-FRAME-STREAM-INF" in master
    variant = fetch(playlist_refs(master)[0]).text
    assert "#EXT-X-ENDLIST" in variant and "#EXT-X-PLAYLIST-TYPE:VOD" in variant
    init = next(line for line in variant.splitlines() if line.startswith("#EXT-X-MAP"))
    init_url = init.split('URI="')[1].split('"')[0]
    seg_url = playlist_refs(variant)[0]
    blob = fetch(init_url).content + fetch(seg_url).content
    path = tmp_path / "seg.mp4"
    path.write_bytes(blob)
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames > 10
    vtt_url = next(t["url"] for t in v["thumbnails"] if t["type"] == "TIMELINE" and ".vtt" in t["url"])
    vtt = fetch(vtt_url).text
    sprite = next(line for line in vtt.splitlines() if "#xywh=" in line)
    assert fetch(sprite.split("#")[0]).content[:3] == b"\xff\xd8\xff"
    # a guessed or tampered URL is refused; the store itself does not serve the output anonymously
    key = f"processed/{vid}/master.m3u8"
    assert requests.get(seaweed.store.public_url(key), timeout=10).status_code == 403
    tampered = v["master_playlist_url"].replace("sig=", "sig=x")
    assert requests.get(tampered, timeout=10).status_code == 403
    unsigned = v["master_playlist_url"].split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_signed_links_expire(live):
    from streamforge import playback
    vid = upload(live, CLIP.read_bytes())
    drain_queue()
    past = int(time.time()) - 1
    sig = playback.sign(live.cfg.server.secret_key, vid, past, "private")
    r = requests.get(f"{live.url}/play/{vid}/master.m3u8?exp={past}&sig={sig}", timeout=10)
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
    soon = int(time.time()) + 60
    sig = playback.sign(live.cfg.server.secret_key, vid, soon, "private")
    assert requests.get(f"{live.url}/play/{vid}/master.m3u8?exp={soon}&sig={sig}", timeout=10).status_code == 200
    other = playback.sign(live.cfg.server.secret_key, "someothervideo", soon)
    assert requests.get(f"{live.url}/play/{vid}/master.m3u8?exp={soon}&sig={other}", timeout=10).status_code == 403


def test_broken_upload_fails_readably_and_the_worker_goes_on(live, seaweed):
    bad = upload(live, b"this is not a video at all" * 100, filename="notes.mp4")
    good = upload(live, CLIP.read_bytes())
    assert drain_queue() == ["failed", "completed"]
    v = get(live, bad)
    assert v["status"] == "FAILED" and v["error_message"] and "Traceback" not in v["error_message"]
    assert len(v["error_message"]) < 300 and v["master_playlist_url"] is None
    failed = [i for i in logs(live, bad) if i["status"] == "failed"]
    assert failed and failed[0]["stage"] == "probe"
    assert seaweed.store.list(f"processed/{bad}/") == []
    assert get(live, good)["status"] == "COMPLETED"
    # reprocess of a media failure runs again (and fails the same way), of a completed video succeeds
    assert requests.post(f"{live.url}/api/videos/{bad}/reprocess", headers=live.h).status_code == 202
    assert drain_queue() == ["failed"]


def test_a_picture_over_the_limits_fails_with_its_size(live, seaweed, tmp_path):
    """Issue 20, hole 7: the worker refuses a 16000x16000 upload from its header (it decoded frames first)."""
    import media_factory as mf
    huge = mf.make_header_only(tmp_path / "huge.mov", 16000, 16000).read_bytes()
    vid = upload(live, huge, filename="huge.mov")
    assert drain_queue() == ["failed"]
    v = get(live, vid)
    assert v["status"] == "FAILED" and v["master_playlist_url"] is None
    assert "too large: 16000x16000" in v["error_message"] and "8192x8192" in v["error_message"]
    failed = [i for i in logs(live, vid) if i["status"] == "failed"]
    assert [i["stage"] for i in failed] == ["probe"]
    assert seaweed.store.list(f"processed/{vid}/") == []


def test_reprocess_writes_a_fresh_prefix_and_switches_at_the_end(live, seaweed):
    vid = upload(live, CLIP.read_bytes())
    drain_queue()
    first = get(live, vid)
    old_keys = {o.key for o in seaweed.store.list(f"processed/{vid}/")}
    r = requests.post(f"{live.url}/api/videos/{vid}/reprocess", headers=live.h)
    assert r.status_code == 202 and r.json()["status"] == "PENDING"
    # until the new run is done, the old ladder keeps playing
    assert fetch(get(live, vid)["master_playlist_url"]).status_code == 200
    assert requests.post(f"{live.url}/api/videos/{vid}/reprocess", headers=live.h).status_code == 409
    assert drain_queue() == ["completed"]
    second = get(live, vid)
    new_keys = {o.key for o in seaweed.store.list(f"processed/{vid}/")}
    assert second["status"] == "COMPLETED" and not (old_keys & new_keys)
    assert all(k.startswith(f"processed/{vid}/r-") for k in new_keys)
    assert second["processed_at"] >= first["processed_at"]
    assert "#EXT-X-STREAM-INF" in fetch(second["master_playlist_url"]).text
    runs = [i for i in logs(live, vid) if i["stage"] == "download" and i["status"] == "started"]
    assert len(runs) == 2


def test_first_run_is_playable_before_it_completes(live, monkeypatch):
    seen = {}
    real = processing.videos.set_playable

    def spy(video_id, token, **kw):
        ok = real(video_id, token, **kw)
        with dbmod.db.connection_context():
            row = Video.get_by_id(video_id)
        seen.update(status=row.status, master=row.master_playlist_url, playable_at=row.playable_at)
        # the master a player would fetch right now is a valid, growing EVENT playlist
        v = get(live, video_id)
        master = fetch(v["master_playlist_url"]).text
        media = fetch(playlist_refs(master)[0]).text
        seen.update(api_status=v["status"], event="#EXT-X-PLAYLIST-TYPE:EVENT" in media,
                    ended="#EXT-X-ENDLIST" in media, segments=len(playlist_refs(media)))
        return ok

    monkeypatch.setattr(processing.videos, "set_playable", spy)
    vid = upload(live, CLIP.read_bytes())
    drain_queue()
    assert seen["status"] == "PROCESSING" and seen["api_status"] == "PROCESSING" and seen["playable_at"]
    assert seen["event"] and not seen["ended"] and seen["segments"] >= 1
    v = get(live, vid)
    assert v["status"] == "COMPLETED" and v["playable_at"] <= v["processed_at"]


def test_store_failure_is_retried_then_fails_with_the_reason(live, monkeypatch):
    from streamforge.errors import StorageError
    vid = upload(live, CLIP.read_bytes())

    def broken(self, key, path, chunk=0):
        raise StorageError(f"download {key}: connection refused")

    monkeypatch.setattr(processing.ObjectStore, "download", broken)
    scheduled = []
    monkeypatch.setattr("streamforge.jobs.tasks.enqueue_processing", lambda v, delay=None: scheduled.append((v, delay)))
    assert drain_queue() == ["retry"]
    v = get(live, vid)
    assert v["status"] == "PENDING" and "connection refused" in v["error_message"]
    assert scheduled == [(vid, 10)]
    for _ in range(live.cfg.sweeper.max_attempts - 1):
        with dbmod.db.connection_context():
            outcome = processing.run_video(live.cfg, vid)
    assert outcome == "failed"
    v = get(live, vid)
    assert v["status"] == "FAILED" and "gave up after 3 attempts" in v["error_message"]
    monkeypatch.undo()
    assert requests.post(f"{live.url}/api/videos/{vid}/reprocess", headers=live.h).status_code == 202
    assert drain_queue() == ["completed"]


def test_a_run_that_lost_its_lease_writes_nothing(live):
    vid = upload(live, CLIP.read_bytes())
    real = processing.VideoRun.record

    def steal_then_record(self, result, total):
        with dbmod.db.connection_context():
            Video.update(run_token="someone-else").where(Video.id == self.video_id).execute()
        return real(self, result, total)

    processing.VideoRun.record = steal_then_record
    try:
        assert drain_queue() == ["lease-lost"]
    finally:
        processing.VideoRun.record = real
    v = get(live, vid)
    assert v["status"] == "PROCESSING" and v["renditions"] == []


def test_a_video_deleted_mid_run_leaves_nothing_in_the_store(live, seaweed):
    # the owner deletes the video once it is playable, while the worker still encodes and uploads
    vid = upload(live, CLIP.read_bytes())
    real = processing.videos.set_playable
    deleted = []

    def delete_when_playable(video_id, token, **kw):
        ok = real(video_id, token, **kw)
        r = requests.delete(f"{live.url}/api/videos/{video_id}", headers=live.h)
        deleted.append(r.status_code)
        return ok

    processing.videos.set_playable = delete_when_playable
    try:
        assert drain_queue() == ["deleted"]
    finally:
        processing.videos.set_playable = real
    assert deleted == [204]
    v = get(live, vid)
    assert v["status"] == "ARCHIVED" and v["renditions"] == [] and v["master_playlist_url"] is None
    assert seaweed.store.list(f"processed/{vid}/") == [] and seaweed.store.list(f"originals/{vid}/") == []
