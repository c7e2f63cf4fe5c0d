"""Named event counters in the database: what the webhook could not act on, what the sweeper recovered.

They outlive restarts and are shared by every web and worker process, so `streamforge doctor`, `/admin`
and the Prometheus metrics read the same numbers. Each is (value, time of the last event).
"""
from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass

from streamforge.store.db import Counter, utcnow

# An authenticated notification the webhook could not act on, by reason (answered 200 all the same:
# a store that queues events would otherwise retry it forever and hold back every later one).
UNPROCESSABLE = "webhook.unprocessable."
UNPROCESSABLE_REASONS = ("malformed", "unknown_key", "failed")
# The last authenticated notification about an upload this instance knows (its value counts them).
NOTIFIED = "webhook.upload_notifications"
# Uploads the sweeper found finished with no notification: in all, and since the last notification.
RECOVERED = "sweeper.recovered_uploads"
RECOVERED_SINCE_NOTIFICATION = "sweeper.recovered_since_notification"


def bump(name: str, by: int = 1) -> None:
    """Add `by` to the counter `name` (created at 0) and stamp it now."""
    now = utcnow()
    (Counter.insert(name=name, value=by, updated_at=now)
     .on_conflict(conflict_target=[Counter.name], update={Counter.value: Counter.value + by, Counter.updated_at: now})
     .execute())


def reset(name: str) -> None:
    """Set the counter `name` back to 0 (stamped now)."""
    now = utcnow()
    (Counter.insert(name=name, value=0, updated_at=now)
     .on_conflict(conflict_target=[Counter.name], update={Counter.value: 0, Counter.updated_at: now})
     .execute())


def read(name: str) -> tuple[int, datetime.datetime | None]:
    """(value, time of the last change) of the counter `name`; (0, None) when it never moved."""
    row = Counter.get_or_none(Counter.name == name)
    return (int(row.value), row.updated_at) if row else (0, None)


def note_unprocessable(reason: str) -> None:
    """Count one authenticated notification the webhook answered 2xx but could not act on."""
    bump(UNPROCESSABLE + (reason if reason in UNPROCESSABLE_REASONS else "failed"))


# A notification storm repeats events by the thousand: the count of notifications is written at most
# once a second per process (added up meanwhile), and the sweeper's streak only when it is not 0.
_NOTIFIED_EVERY = 1.0
_notified = {"pending": 0, "written": float("-inf")}
_notified_lock = threading.Lock()


def note_upload_notification() -> None:
    """An authenticated notification about a known upload arrived: notifications work."""
    now = time.monotonic()
    with _notified_lock:
        _notified["pending"] += 1
        pending = _notified["pending"] if now - _notified["written"] >= _NOTIFIED_EVERY else 0
        if pending:
            _notified["pending"], _notified["written"] = 0, now
    if pending:
        bump(NOTIFIED, pending)
    if read(RECOVERED_SINCE_NOTIFICATION)[0]:
        reset(RECOVERED_SINCE_NOTIFICATION)


def note_recovered_upload() -> None:
    """The sweeper found a finished upload whose notification never came."""
    bump(RECOVERED)
    bump(RECOVERED_SINCE_NOTIFICATION)


def webhook_unprocessable() -> dict[str, int]:
    """Authenticated notifications the webhook could not act on, by reason (for /metrics and doctor)."""
    return {reason: read(UNPROCESSABLE + reason)[0] for reason in UNPROCESSABLE_REASONS}


@dataclass(frozen=True)
class NotificationHealth:
    """Whether the store's notifications reach the webhook, as the counters tell it."""
    last_notification_at: datetime.datetime | None
    notifications: int
    recovered_uploads: int
    recovered_since_notification: int
    last_recovered_at: datetime.datetime | None
    unprocessable: dict[str, int]


def notification_health() -> NotificationHealth:
    """The counters `streamforge doctor` and /admin read to tell whether notifications still arrive."""
    notified, notified_at = read(NOTIFIED)
    recovered, _ = read(RECOVERED)
    since, since_at = read(RECOVERED_SINCE_NOTIFICATION)
    return NotificationHealth(last_notification_at=notified_at, notifications=notified, recovered_uploads=recovered,
                              recovered_since_notification=since, last_recovered_at=since_at if since else None,
                              unprocessable=webhook_unprocessable())
