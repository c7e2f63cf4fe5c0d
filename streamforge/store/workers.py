"""The worker registry: each worker process notes itself and how many videos it runs, every few seconds."""
from __future__ import annotations

import datetime

from streamforge.store.db import Worker, db, utcnow

FORGET_AFTER = datetime.timedelta(days=1)


def beat(name: str, running: int) -> None:
    """Record that worker `name` is alive and runs `running` videos now."""
    now = utcnow()
    with db.atomic():
        n = Worker.update(last_seen_at=now, running=running).where(Worker.name == name).execute()
        if not n:
            Worker.insert(name=name, started_at=now, last_seen_at=now, running=running).on_conflict(
                conflict_target=[Worker.name], update={Worker.last_seen_at: now, Worker.running: running}).execute()


def forget(name: str) -> None:
    """A worker that stops cleanly leaves the registry."""
    Worker.delete().where(Worker.name == name).execute()


def list_workers() -> list[Worker]:
    """Workers seen in the last day, most recently seen first (older ones are dropped)."""
    Worker.delete().where(Worker.last_seen_at < utcnow() - FORGET_AFTER).execute()
    return list(Worker.select().order_by(Worker.last_seen_at.desc()))
