"""The chunks of chunked runs: planned by the run, claimed one at a time by any worker or runner, each with a
lease of its own (a token and a heartbeat), done once.

Every change is guarded: a chunk is claimed only while waiting and while its run still holds the video,
beaten and completed only with its lease, so a chunk done twice (a holder that lost its lease and came
back) is recorded once, and a new run of the video never mixes with an old run's chunks (it deletes them).
"""
from __future__ import annotations

import datetime
import json

from streamforge.store.db import Chunk, ProcessingStatus, Video, db, new_id, utcnow

WAITING, RUNNING, DONE = "waiting", "running", "done"


def chunk_id(video_id: str, run_token: str, index: int) -> str:
    """The id of a run's chunk."""
    return f"{video_id}.{run_token}.{index}"


def create(video_id: str, run_token: str, prefix: str, plans: list[dict], levels: list | None = None,
           count: int | None = None) -> list[str]:
    """The run's chunks (dicts with index, start, end, first_segment), waiting; other runs' chunks go.
    `levels` ([[rung name, level], ...]) are the run's per-title levels, these chunks'; `count` the run's
    chunks in all, when these are some of them. Returns their ids."""
    with db.atomic():
        Chunk.delete().where((Chunk.video == video_id) & (Chunk.run_token != run_token)).execute()
        ids = []
        for p in plans:
            cid = chunk_id(video_id, run_token, p["index"])
            Chunk.insert(id=cid, video=video_id, run_token=run_token, index=p["index"], count=count or len(plans),
                         start_frame=p["start"], end_frame=p["end"], first_segment=p["first_segment"],
                         prefix=prefix, levels=json.dumps(levels) if levels else None
                         ).on_conflict_ignore().execute()
            ids.append(cid)
    return ids


def _live_run():
    """Chunks whose run still holds its video."""
    return (Video.status == ProcessingStatus.PROCESSING) & (Video.run_token == Chunk.run_token)


def claim(holder: str, chunk: str | None = None, video_id: str | None = None) -> tuple[Chunk, str] | None:
    """Take a waiting chunk (that one, one of that video, or the oldest anywhere) for `holder`; returns it and
    its lease token, or None."""
    q = Chunk.select(Chunk.id).join(Video, on=(Chunk.video == Video.id)).where(
        (Chunk.state == WAITING) & _live_run())
    if chunk is not None:
        q = q.where(Chunk.id == chunk)
    if video_id is not None:
        q = q.where(Chunk.video == video_id)
    for row in q.order_by(Video.processing_started_at, Chunk.index).limit(20):
        lease, now = new_id(), utcnow()
        n = Chunk.update(state=RUNNING, lease=lease, holder=holder[:200], heartbeat_at=now,
                         attempts=Chunk.attempts + 1, updated_at=now).where(
            (Chunk.id == row.id) & (Chunk.state == WAITING)).execute()
        if n == 1:
            return Chunk.get_by_id(row.id), lease
    return None


def _held(chunk: str, lease: str):
    return (Chunk.id == chunk) & (Chunk.lease == lease) & (Chunk.state == RUNNING)


def beat(chunk: str, lease: str) -> bool:
    """Renew the chunk's lease; False when it is no longer this holder's (or its run is gone)."""
    row = Chunk.get_or_none(_held(chunk, lease))
    if row is None or not Video.select().where((Video.id == row.video_id) & (Video.status == ProcessingStatus.PROCESSING)
                                               & (Video.run_token == row.run_token)).exists():
        return False
    return Chunk.update(heartbeat_at=utcnow()).where(_held(chunk, lease)).execute() == 1


def complete(chunk: str, lease: str, result: dict) -> bool:
    """The chunk is encoded and its files are in the store: done, once (False: not this holder's any more)."""
    return Chunk.update(state=DONE, result=json.dumps(result), heartbeat_at=utcnow(), updated_at=utcnow()).where(
        _held(chunk, lease)).execute() == 1


def release(chunk: str, lease: str) -> bool:
    """The holder gives the chunk back (stopping, or a failure another machine may not have)."""
    return Chunk.update(state=WAITING, lease=None, holder=None, heartbeat_at=None, updated_at=utcnow()).where(
        _held(chunk, lease)).execute() == 1


def of_run(video_id: str, run_token: str) -> list[Chunk]:
    """The run's chunks, in order."""
    return list(Chunk.select().where((Chunk.video == video_id) & (Chunk.run_token == run_token))
                .order_by(Chunk.index))


def get(chunk: str) -> Chunk | None:
    """One chunk by id."""
    return Chunk.get_or_none(Chunk.id == chunk)


def reclaim_stale(video_id: str, run_token: str, older_than: datetime.datetime) -> list[str]:
    """Running chunks of the run whose holder stopped beating go back to waiting; returns their ids."""
    stale = [c.id for c in Chunk.select(Chunk.id).where(
        (Chunk.video == video_id) & (Chunk.run_token == run_token) & (Chunk.state == RUNNING)
        & (Chunk.heartbeat_at < older_than))]
    back = []
    for cid in stale:
        n = Chunk.update(state=WAITING, lease=None, holder=None, heartbeat_at=None, updated_at=utcnow()).where(
            (Chunk.id == cid) & (Chunk.state == RUNNING) & (Chunk.heartbeat_at < older_than)).execute()
        if n:
            back.append(cid)
    return back


def delete_run(video_id: str, run_token: str) -> None:
    """The run ended: its chunks go."""
    Chunk.delete().where((Chunk.video == video_id) & (Chunk.run_token == run_token)).execute()
