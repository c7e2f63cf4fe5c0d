"""Remote runners over HTTP: the admin's runner tokens, and the runners' own API (claim, upload URLs,
update, success, error, give back), authenticated by a runner token, never by a user's.

The runners' API lives under /api/runners/; the protocol is described in docs/runners.md.
"""
from __future__ import annotations

import datetime
import threading
from functools import wraps

from flask import Blueprint, g, request

from streamforge.errors import ValidationError
from streamforge.jobs import remote
from streamforge.store import runners, users
from streamforge.web.common import bearer_token, cfg, error, handle_errors, role_required

bp = Blueprint("runners_api", __name__)


def _iso(dt: datetime.datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


# ---------- the admin's side ----------

@bp.route("/api/admin/runners", methods=["POST"])
@role_required(users.ADMIN)
def create_runner():
    """A new runner token, shown once: 201 {id, name, token}."""
    body = request.get_json(silent=True) or {}
    name = body.get("name") if isinstance(body, dict) else None
    if name is not None and not isinstance(name, str):
        raise ValidationError("name must be a string")
    row, token = runners.create_runner(name or "")
    return {"id": row.id, "name": row.name, "token": token}, 201


def runners_json() -> list[dict]:
    """Every runner with when it was last seen and its running, done and failed counts."""
    return [{**r, "last_seen_at": _iso(r["last_seen_at"]), "created_at": _iso(r["created_at"])}
            for r in runners.list_runners()]


@bp.route("/api/admin/runners", methods=["GET"])
@role_required(users.ADMIN)
def list_runners():
    """{"items": [{id, name, last_seen_at, running, done, failed}]}."""
    return {"items": runners_json()}


@bp.route("/api/admin/runners/<runner_id>", methods=["DELETE"])
@role_required(users.ADMIN)
def revoke_runner(runner_id: str):
    """Revoke a runner: its token stops working at once and its running work goes back to the queue."""
    remote.revoke(cfg(), runner_id)
    return "", 204


# ---------- the runners' side ----------

def runner_required(view):
    """A view for runners: `Authorization: Bearer <runner token>` (else 401)."""
    @wraps(view)
    def checked(*args, **kwargs):
        runner = runners.runner_for_token(bearer_token() or "")
        if runner is None:
            return error(401, "unauthorized", "a valid runner token is required (it may have been revoked)")
        g.runner = runner
        return view(*args, **kwargs)
    return checked


def _gone():
    return error(409, "job_gone", "this runner no longer holds that work (taken back, revoked or finished); drop it")


@bp.route("/api/runners/jobs/request", methods=["POST"])
@runner_required
def request_job():
    """Long poll for work: 200 {"job": JOB} or 204 when none came within `wait` seconds."""
    body = _body()
    wait = body.get("wait", 20)
    if isinstance(body.get("name"), str):
        runners.rename(g.runner, body["name"])
    if not isinstance(wait, (int, float)) or wait < 0:
        raise ValidationError("wait: seconds, 0 or more")
    # a long poll holds a request thread: at most half of them wait at once, the others are answered now
    waiting = _long_polls(cfg().server.threads)
    holds = waiting.acquire(blocking=False)
    try:
        job = remote.request_work(cfg(), g.runner, float(wait) if holds else 0.0)
    finally:
        if holds:
            waiting.release()
    return ({"job": job}, 200) if job else ("", 204)


_polls: dict[int, threading.BoundedSemaphore] = {}


def _long_polls(threads: int) -> threading.BoundedSemaphore:
    """The semaphore of the long polls this process lets wait at once (half its request threads)."""
    return _polls.setdefault(threads, threading.BoundedSemaphore(max(1, threads // 2)))


@bp.route("/api/runners/jobs/<job_id>/uploads", methods=["POST"])
@runner_required
def upload_urls(job_id: str):
    """Presigned PUT URLs for output files of the job: {"urls": {path: {url, headers, ...}}}."""
    body = _body()
    try:
        return remote.presign_outputs(cfg(), g.runner, job_id, body.get("token"), body.get("files"))
    except remote.JobGone:
        return _gone()


@bp.route("/api/runners/jobs/<job_id>/update", methods=["POST"])
@runner_required
def update_job(job_id: str):
    """A beat: progress, finished stage rows, facts about the original, or the master published early."""
    body = _body()
    try:
        remote.update(cfg(), g.runner, job_id, body.get("token"), body)
    except remote.JobGone:
        return _gone()
    return {"ok": True}


@bp.route("/api/runners/jobs/<job_id>/success", methods=["POST"])
@runner_required
def job_success(job_id: str):
    """The runner wrote everything: the instance checks it and publishes; {"outcome"}."""
    body = _body()
    try:
        return {"outcome": remote.succeed(cfg(), g.runner, job_id, body.get("token"), body)}
    except remote.JobGone:
        return _gone()


@bp.route("/api/runners/jobs/<job_id>/error", methods=["POST"])
@runner_required
def job_error(job_id: str):
    """The runner failed: {"message", "retry"}: FAILED for bad input, else back to the queue."""
    body = _body()
    try:
        return {"outcome": remote.fail(cfg(), g.runner, job_id, body.get("token"), body)}
    except remote.JobGone:
        return _gone()


@bp.route("/api/runners/jobs/<job_id>/abort", methods=["POST"])
@runner_required
def job_abort(job_id: str):
    """The runner is stopping: the work goes back to the queue at once."""
    body = _body()
    try:
        return {"outcome": remote.give_back(cfg(), g.runner, job_id, body.get("token"))}
    except remote.JobGone:
        return _gone()


@bp.route("/api/runners/jobs/<job_id>/chunks", methods=["POST"])
@runner_required
def plan_chunks(job_id: str):
    """The runner holding a run cut it into chunks: {"token", "plan": [{index, start, end, first_segment}],
    "levels": [[rung name, level, peak], ...] (optional: the title's levels and VBV peaks as a share of the
    target bitrate, every chunk's; the peak may be left out)}."""
    body = _body()
    try:
        return remote.plan_chunks(cfg(), g.runner, job_id, body.get("token"), body.get("plan"),
                                  body.get("levels")), 201
    except remote.JobGone:
        return _gone()


@bp.route("/api/runners/jobs/<job_id>/chunks/claim", methods=["POST"])
@runner_required
def claim_chunk(job_id: str):
    """The run's holder takes one of its own waiting chunks: {"job": chunk job or null, "done", "total"}."""
    body = _body()
    whole = body.get("whole") if isinstance(body.get("whole"), dict) else None
    try:
        return remote.claim_own_chunk(cfg(), g.runner, job_id, body.get("token"), whole)
    except remote.JobGone:
        return _gone()


def init_app(app) -> None:
    """Register the runners' blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
