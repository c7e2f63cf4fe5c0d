"""Outbound webhooks: signed, retried with backoff, the same event id on every attempt."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import MEDIA, drain_queue

from streamforge.jobs import notify, tasks

SECRET = "whsec-test-secret"


class Receiver:
    """A local HTTP endpoint that records deliveries and fails the first `fail_first` of them."""

    def __init__(self, fail_first=0):
        self.got, self.fail_first = [], fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                self.send_response(500 if len(outer.got) <= outer.fail_first else 204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_signature_round_trip_and_staleness():
    body = b'{"id":"evt_1"}'
    header = notify.signature(SECRET, int(time.time()), body)
    assert notify.verify_signature(SECRET, header, body)
    assert not notify.verify_signature(SECRET, header, body + b" ")
    assert not notify.verify_signature("other", header, body)
    old = notify.signature(SECRET, int(time.time()) - 3600, body)
    assert not notify.verify_signature(SECRET, old, body)
    assert not notify.verify_signature(SECRET, "garbage", body)


def test_processing_sends_signed_playable_and_ready(seaweed, make_app, tmp_path, receiver):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_NOTIFY_URLS": receiver.url,
                                             "STREAMFORGE_NOTIFY_SECRET": SECRET,
                                             "STREAMFORGE_PIPELINE_HEIGHTS": "240"})
    client = make_app(cfg).test_client()
    from streamforge.store import db as dbmod
    from streamforge.store import videos
    with dbmod.db.connection_context():
        _, tok = videos.create_token(videos.get_or_create_user("hooks@example.com"))
    h = {"Authorization": f"Bearer {tok}"}
    data = (MEDIA / "bigbuckbunny-720p-5s.mp4").read_bytes()
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": len(data),
                                         "content_type": "video/mp4"}, headers=h).get_json()
    requests.put(r["upload"]["url"], headers=r["upload"]["headers"], data=data, timeout=30).raise_for_status()
    client.post(f"/api/videos/{r['video']['id']}/upload/complete", json={}, headers=h)
    drain_queue()  # the run, then the deliveries it queued
    events = [json.loads(body) for _, body in receiver.got]
    assert [e["type"] for e in events] == ["video.playable", "video.ready"]
    for headers, body in receiver.got:
        assert notify.verify_signature(SECRET, headers["StreamForge-Signature"], body)
        assert headers["Idempotency-Key"] == json.loads(body)["id"]
    assert events[1]["data"]["video"]["status"] == "COMPLETED"
    assert events[1]["data"]["video"]["id"] == r["video"]["id"]


def test_failed_delivery_is_retried_with_the_same_id(seaweed, tmp_path, make_app):
    rec = Receiver(fail_first=2)
    try:
        cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_NOTIFY_URLS": rec.url,
                                                 "STREAMFORGE_NOTIFY_SECRET": SECRET})
        make_app(cfg)
        body = json.dumps({"id": "evt_abc", "type": "video.failed", "data": {}})
        tasks.deliver_webhook(rec.url, body, 1)
        results = drain_queue()
        assert results == [False, False, True]
        assert [h["StreamForge-Delivery-Attempt"] for h, _ in rec.got] == ["1", "2", "3"]
        assert {h["Idempotency-Key"] for h, _ in rec.got} == {"evt_abc"}
        assert notify.backoff(1) == 2 and notify.backoff(3) == 8 and notify.backoff(30) == 3600
    finally:
        rec.server.shutdown()


def test_gives_up_after_max_attempts(seaweed, tmp_path, make_app):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_NOTIFY_URLS": "http://127.0.0.1:9/none",
                                             "STREAMFORGE_NOTIFY_MAX_ATTEMPTS": "3"})
    make_app(cfg)
    tasks.deliver_webhook("http://127.0.0.1:9/none", json.dumps({"id": "e", "type": "video.ready"}), 1)
    assert drain_queue() == [False, False, False]
