"""Outbound webhooks: `video.playable`, `video.ready` and `video.failed` POSTed to `[notify] urls`.

Each delivery is signed like the hosted services do it: header `StreamForge-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under [notify] secret>`. Deliveries go through the
queue (`streamforge.jobs.tasks` enqueues what `deliveries` builds and calls `deliver`), are retried with
exponential backoff and are at least once: the event's `id` (also sent as `Idempotency-Key`) is the
same on every attempt, so receivers can drop duplicates.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import requests

from streamforge.config import Config
from streamforge.store.db import Video, utcnow

log = logging.getLogger("streamforge.jobs.notify")
EVENTS = ("video.playable", "video.ready", "video.failed")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The StreamForge-Signature header value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300, now: float | None = None) -> bool:
    """Check a StreamForge-Signature header (what a receiver does); rejects stale timestamps."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, ts, body), header)


def event_body(event: str, video, attempt: int, base_url: str) -> dict:
    """The JSON of one event; its id is stable for (video, event, run) so retries keep it."""
    event_id = "evt_" + hashlib.sha256(f"{video.id}:{event}:{attempt}".encode()).hexdigest()[:24]
    return {"id": event_id, "type": event, "created_at": utcnow().isoformat(timespec="seconds") + "Z",
            "data": {"video": {
                "id": video.id, "slug": video.slug, "title": video.title, "status": video.status,
                "error_message": video.error_message, "duration": video.original_duration or None,
                "watch_url": f"{base_url}/watch/{video.slug}",
                "playable_at": video.playable_at.isoformat(timespec="seconds") + "Z" if video.playable_at else None,
                "processed_at": video.processed_at.isoformat(timespec="seconds") + "Z"
                if video.processed_at else None}}}


def deliveries(config: Config, event: str, video_id: str) -> list[tuple[str, str]]:
    """The (url, body) of each delivery of this event: one per configured URL (none without URLs)."""
    if not config.notify.urls:
        return []
    video = Video.get_or_none(Video.id == video_id)
    if video is None:
        return []
    body = json.dumps(event_body(event, video, video.attempts, config.base_url), separators=(",", ":"))
    return [(url, body) for url in config.notify.urls]


def deliver(config: Config, url: str, body: str, attempt: int) -> bool:
    """POST one signed delivery; True on a 2xx answer."""
    data = body.encode()
    event = json.loads(body)
    headers = {"Content-Type": "application/json", "User-Agent": "StreamForge-Webhooks/1",
               "StreamForge-Event": event["type"], "Idempotency-Key": event["id"],
               "StreamForge-Delivery-Attempt": str(attempt)}
    if config.notify.secret:
        headers["StreamForge-Signature"] = signature(config.notify.secret, int(time.time()), data)
    try:
        resp = requests.post(url, data=data, headers=headers, timeout=10, allow_redirects=False)
        ok = 200 <= resp.status_code < 300
        if not ok:
            log.warning("webhook %s to %s answered %s (attempt %d)", event["type"], url, resp.status_code, attempt)
        return ok
    except requests.RequestException as e:
        log.warning("webhook %s to %s failed: %s (attempt %d)", event["type"], url, e, attempt)
        return False


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt + 1`: 2, 4, 8, ... capped at an hour."""
    return float(min(3600, 2 ** attempt))
