"""Remote runners: their tokens, when they were last seen, and the work each holds now.

A runner's token is shown once (at creation) and kept as a SHA-256 hash, like API tokens. Revoking a
runner marks it revoked (its token answers 401 from then on) and hands back every run it held, so the
queue gives them to another worker or runner at once.
"""
from __future__ import annotations

import datetime
import secrets

from peewee import JOIN, fn

from streamforge.errors import NotFound, ValidationError
from streamforge.store import chunks, videos
from streamforge.store.db import Chunk, ProcessingStatus, Runner, RunnerJob, UploadStatus, Video, db, utcnow

TOKEN_PREFIX = "sfr_"
SEEN_EVERY = datetime.timedelta(seconds=2)  # last_seen_at is written at most this often per runner


def create_runner(name: str) -> tuple[Runner, str]:
    """A new runner named `name`; returns its row and its token (shown once)."""
    name = (name or "").strip()
    if not name:
        name = f"runner-{secrets.token_hex(3)}"
    if len(name) > 200:
        raise ValidationError("a runner's name has at most 200 characters")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return Runner.create(name=name, token_hash=videos.hash_token(plain)), plain


def runner_for_token(plain: str) -> Runner | None:
    """The runner a token belongs to (None when unknown or revoked); notes that it was seen."""
    if not plain or not plain.startswith(TOKEN_PREFIX):
        return None
    row = Runner.get_or_none((Runner.token_hash == videos.hash_token(plain)) & Runner.revoked_at.is_null())
    if row is not None:
        now = utcnow()
        if row.last_seen_at is None or now - row.last_seen_at > SEEN_EVERY:
            Runner.update(last_seen_at=now).where(Runner.id == row.id).execute()
            row.last_seen_at = now
    return row


def list_runners() -> list[dict]:
    """Every runner not revoked, with how many runs it holds now, has done and has failed."""
    forget_lost()
    running = dict(RunnerJob.select(RunnerJob.runner, fn.COUNT(RunnerJob.id)).group_by(RunnerJob.runner).tuples())
    return [{"id": r.id, "name": r.name, "last_seen_at": r.last_seen_at, "created_at": r.created_at,
             "running": int(running.get(r.id, 0)), "done": r.done, "failed": r.failed}
            for r in Runner.select().where(Runner.revoked_at.is_null()).order_by(Runner.created_at)]


def revoke_runner(runner_id: str) -> list[str]:
    """Revoke a runner and hand back the runs it held; returns those videos' ids (to enqueue again)."""
    with db.atomic():
        n = Runner.update(revoked_at=utcnow()).where((Runner.id == runner_id) & Runner.revoked_at.is_null()).execute()
        if not n:
            raise NotFound("no such runner")
        jobs = list(RunnerJob.select().where(RunnerJob.runner == runner_id))
        handed = [j.video_id for j in jobs
                  if j.kind == "run" and videos.release_run(j.video_id, j.token, "its runner was revoked")]
        for j in jobs:
            if j.kind == "chunk":
                chunks.release(j.id, j.token)
        RunnerJob.delete().where(RunnerJob.runner == runner_id).execute()
    return handed


def waiting_videos(limit: int = 20) -> list[str]:
    """Ids of videos waiting for a run, longest waiting first."""
    q = (Video.select(Video.id).where((Video.status == ProcessingStatus.PENDING)
                                      & (Video.upload_status == UploadStatus.UPLOADED))
         .order_by(Video.queued_at.asc(nulls="first")).limit(limit))
    return [v.id for v in q]


def hold(runner: Runner, video_id: str, token: str, job_id: str | None = None, kind: str = "run") -> None:
    """Note that `runner` holds a piece of work of the video: its run (`token`: the run's), or a chunk."""
    RunnerJob.insert(id=job_id or video_id, runner=runner.id, video=video_id, token=token, kind=kind,
                     started_at=utcnow()).on_conflict(
        conflict_target=[RunnerJob.id],
        update={RunnerJob.runner: runner.id, RunnerJob.token: token, RunnerJob.started_at: utcnow()}).execute()


def held(runner: Runner, job_id: str, token: str) -> RunnerJob | None:
    """The job when this runner holds it with this token (else None: lost, revoked, or never its)."""
    return RunnerJob.get_or_none((RunnerJob.id == job_id) & (RunnerJob.runner == runner.id)
                                 & (RunnerJob.token == token))


def drop(runner: Runner, job_id: str, token: str, outcome: str | None) -> None:
    """The runner is done with the job: forget it; count it as "done" or "failed" (None: neither)."""
    RunnerJob.delete().where((RunnerJob.id == job_id) & (RunnerJob.runner == runner.id)
                             & (RunnerJob.token == token)).execute()
    if outcome == "done":
        Runner.update(done=Runner.done + 1).where(Runner.id == runner.id).execute()
    elif outcome == "failed":
        Runner.update(failed=Runner.failed + 1).where(Runner.id == runner.id).execute()


def forget_lost(limit: int = 500) -> int:
    """Drop the jobs whose run is no longer the one the runner held (the sweeper took it back)."""
    stale = (RunnerJob.select(RunnerJob.id).join(Video, on=(RunnerJob.video == Video.id))
             .where((RunnerJob.kind == "run") & ((Video.run_token.is_null()) | (Video.run_token != RunnerJob.token)))
             .limit(limit))
    ids = [j.id for j in stale]
    lost_chunks = RunnerJob.select(RunnerJob.id).join(Chunk, JOIN.LEFT_OUTER, on=(RunnerJob.id == Chunk.id)).where(
        (RunnerJob.kind == "chunk") & (Chunk.id.is_null() | (Chunk.lease.is_null()) | (Chunk.lease != RunnerJob.token)))
    ids += [j.id for j in lost_chunks]
    if ids:
        RunnerJob.delete().where(RunnerJob.id.in_(ids)).execute()
    return len(ids)


def rename(runner: Runner, name: str) -> None:
    """The runner calls itself `name` (its --name): the admin's list and the processing log show it."""
    name = name.strip()[:200]
    if name and name != runner.name:
        Runner.update(name=name).where(Runner.id == runner.id).execute()
        runner.name = name


def active(runner_id: str) -> bool:
    """True while the runner exists and is not revoked (a long poll stops claiming as soon as it is)."""
    return Runner.select().where((Runner.id == runner_id) & Runner.revoked_at.is_null()).exists()
