"""A worker process's heartbeat in the database: its name, when it was last seen, how many videos it runs.

`GET /api/admin/stats` and `streamforge user stats` list the workers from it."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

from streamforge.store import db as dbmod
from streamforge.store import workers

log = logging.getLogger("streamforge.worker")
INTERVAL = 10.0  # seconds between heartbeats

_lock = threading.Lock()
_running = 0


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Count a video as running in this process while the block runs."""
    global _running
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1


def running_now() -> int:
    """How many videos this process runs now."""
    return _running


def worker_name() -> str:
    """This worker's name in the registry: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat_until(stop: threading.Event, interval: float = INTERVAL) -> None:
    """Beat every `interval` seconds until `stop` is set, then leave the registry."""
    name = worker_name()
    while True:
        try:
            with dbmod.db.connection_context():
                if stop.is_set():
                    workers.forget(name)
                    return
                workers.beat(name, running_now())
        except Exception as e:  # the database may be down for a while; the worker goes on
            log.warning("worker heartbeat failed: %s", e)
            if stop.is_set():
                return
        stop.wait(interval)


def start(stop: threading.Event, interval: float = INTERVAL) -> threading.Thread:
    """Start the heartbeat thread."""
    thread = threading.Thread(target=beat_until, args=(stop, interval), name="sf-registry", daemon=True)
    thread.start()
    return thread
