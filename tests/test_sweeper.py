"""The sweeper: lost notifications, expired uploads, dead runs, lost tasks."""
import datetime

import requests
from conftest import queued_video_ids

from streamforge.jobs import intake
from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.store.db import Video, utcnow


def new_video(client, headers, data=b"0123456789", send=True):
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": len(data),
                                         "content_type": "video/mp4"}, headers=headers).get_json()
    if send:
        requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
    return r["video"]["id"]


def sweep(config, seaweed):
    with dbmod.db.connection_context():
        return intake.sweep(config, seaweed.store)


def test_lost_notification_is_recovered_once(client, auth, config, seaweed):
    h = auth()
    vid = new_video(client, h)
    waiting = new_video(client, h, send=False)
    assert sweep(config, seaweed)["recovered_uploads"] == 1
    assert sweep(config, seaweed)["recovered_uploads"] == 0
    assert queued_video_ids().count(vid) == 1 and waiting not in queued_video_ids()
    assert client.get(f"/api/videos/{vid}", headers=h).get_json()["upload_status"] == "UPLOADED"
    assert client.get(f"/api/videos/{waiting}", headers=h).get_json()["upload_status"] == "UPLOADING"


def test_expired_upload_without_object_fails_with_reason(client, auth, config, seaweed):
    h = auth()
    vid = new_video(client, h, send=False)
    with dbmod.db.connection_context():
        Video.update(upload_expires_at=utcnow() - datetime.timedelta(seconds=1)).where(Video.id == vid).execute()
    assert sweep(config, seaweed)["expired_uploads"] == 1
    v = client.get(f"/api/videos/{vid}", headers=h).get_json()
    assert v["status"] == "FAILED" and "expired" in v["error_message"]


def test_dead_run_is_requeued_then_failed_after_max_attempts(client, auth, config, seaweed):
    h = auth()
    vid = new_video(client, h)
    sweep(config, seaweed)
    stale = utcnow() - datetime.timedelta(seconds=config.sweeper.lease_seconds + 5)
    for attempt in range(1, config.sweeper.max_attempts + 1):
        with dbmod.db.connection_context():
            video, _ = videos.claim_run(vid)
            assert video.attempts == attempt
            Video.update(heartbeat_at=stale, master_playlist_url="http://x/m.m3u8",
                         playable_at=utcnow()).where(Video.id == vid).execute()
        counts = sweep(config, seaweed)
        v = client.get(f"/api/videos/{vid}", headers=h).get_json()
        # a master published by a run that died is withdrawn: no half-written ladder stays visible
        assert v["master_playlist_url"] is None and v["playable_at"] is None
        if attempt < config.sweeper.max_attempts:
            assert counts["reclaimed"] == 1 and v["status"] == "PENDING"
        else:
            assert counts["failed_runs"] == 1 and v["status"] == "FAILED"
            assert "3 times" in v["error_message"]


def test_live_heartbeat_is_left_alone(client, auth, config, seaweed):
    h = auth()
    vid = new_video(client, h)
    sweep(config, seaweed)
    with dbmod.db.connection_context():
        videos.claim_run(vid)
    counts = sweep(config, seaweed)
    assert counts["reclaimed"] == 0
    assert client.get(f"/api/videos/{vid}", headers=h).get_json()["status"] == "PROCESSING"


def test_lost_task_is_enqueued_again(client, auth, config, seaweed):
    from streamforge.jobs import tasks
    h = auth()
    vid = new_video(client, h)
    sweep(config, seaweed)
    tasks.huey.flush()  # the queue lost its task
    with dbmod.db.connection_context():
        Video.update(queued_at=utcnow() - datetime.timedelta(seconds=config.sweeper.lease_seconds + 1)).where(
            Video.id == vid).execute()
    assert sweep(config, seaweed)["requeued"] == 1
    assert queued_video_ids() == [vid]
    assert sweep(config, seaweed)["requeued"] == 0


def test_a_video_waiting_its_turn_is_not_enqueued_again(client, auth, config, seaweed):
    h = auth()
    vid = new_video(client, h)
    sweep(config, seaweed)
    with dbmod.db.connection_context():
        Video.update(queued_at=utcnow() - datetime.timedelta(seconds=config.sweeper.lease_seconds + 1)).where(
            Video.id == vid).execute()
    assert sweep(config, seaweed)["requeued"] == 0  # its task is still in the queue
    assert queued_video_ids() == [vid]


def test_racing_sweepers_enqueue_a_lost_task_once(client, auth, config, seaweed):
    from streamforge.jobs import tasks
    h = auth()
    vid = new_video(client, h)
    sweep(config, seaweed)
    tasks.huey.flush()
    with dbmod.db.connection_context():
        old = utcnow() - datetime.timedelta(seconds=config.sweeper.lease_seconds + 1)
        Video.update(queued_at=old).where(Video.id == vid).execute()
        seen = Video.get_by_id(vid).queued_at
        assert videos.mark_requeued(vid, seen) is True
        assert videos.mark_requeued(vid, seen) is False  # the second sweeper saw the same old value


def test_a_write_after_the_video_was_deleted_is_removed_without_a_notification(client, auth, config, seaweed):
    """Issue 20, hole 1: with no notification (a store without a webhook) the sweeper clears what a URL
    still alive wrote after DELETE; an old deleted video is not looked at again."""
    h = auth()
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 10,
                                         "content_type": "video/mp4"}, headers=h).get_json()
    vid, up = r["video"]["id"], r["upload"]
    assert client.delete(f"/api/videos/{vid}", headers=h).status_code == 204
    assert requests.put(up["url"], data=b"0123456789", headers=up["headers"], timeout=30).status_code == 200
    assert len(seaweed.store.list(f"originals/{vid}/")) == 1
    assert sweep(config, seaweed)["removed_late_writes"] == 1
    assert seaweed.store.list(f"originals/{vid}/") == []
    assert sweep(config, seaweed)["removed_late_writes"] == 0
    assert client.get(f"/api/videos/{vid}", headers=h).get_json()["status"] == "ARCHIVED"
