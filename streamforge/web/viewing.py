"""What a player asks about a video it may show: `thumbnail.jpg` of any moment, and view reports.

Both are for whoever may watch the video (its owner; anyone for public and unlisted ones), signed
in or not; anyone else gets 404, as for a video that does not exist.
"""
from __future__ import annotations

import math

from flask import Blueprint, redirect, request
from flask_login import current_user

from streamforge.errors import NotFound, ValidationError
from streamforge.jobs import moments
from streamforge.store import videos
from streamforge.store import views as viewstore
from streamforge.store.db import ProcessingStatus, Visibility
from streamforge.web.common import cfg, error, handle_errors, media_url, store

bp = Blueprint("viewing", __name__, url_prefix="/api")
MAX_REPORT_SECONDS = 24 * 3600


def may_watch(video) -> bool:
    """True when the current client may watch `video`: its owner, or anyone unless it is private."""
    if video is None or video.status == ProcessingStatus.ARCHIVED:
        return False
    owner = current_user.is_authenticated and current_user.id == video.user_id
    return owner or video.visibility != Visibility.PRIVATE


def watchable(video_id: str):
    """The video with this id if the current client may watch it; NotFound otherwise."""
    video = videos.get_video_by_id(video_id)
    if not may_watch(video):
        raise NotFound("no such video")
    return video


@bp.route("/videos/<video_id>/thumbnail.jpg", methods=["GET"])
def thumbnail(video_id: str):
    """302 to a JPEG of the frame at ?time= seconds, ?width= pixels wide (made on first request)."""
    video = watchable(video_id)
    t, width = moments.parse_request(request.args.get("time"), request.args.get("width"))
    try:
        key = moments.thumbnail_at(store(), video, t, width)
    except moments.TooManyFrames as e:
        return error(429, e.code, str(e))
    resp = redirect(media_url(video, key), code=302)
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp


def _report(body) -> tuple[str, float]:
    if not isinstance(body, dict):
        raise ValidationError('the body must be a JSON object {"session", "watched_seconds"}')
    session, seconds = body.get("session"), body.get("watched_seconds", 0)
    if (not isinstance(session, str) or not 8 <= len(session) <= 64
            or not all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in session)):
        raise ValidationError("session must be a random id of 8 to 64 letters, digits, - or _")
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_REPORT_SECONDS):
        raise ValidationError(f"watched_seconds must be a number of seconds from 0 to {MAX_REPORT_SECONDS}")
    return session, float(seconds)


@bp.route("/videos/<video_id>/views", methods=["POST"])
def report_view(video_id: str):
    """A player's report: a view once per session, the seconds played since its last report added."""
    video = watchable(video_id)
    session, seconds = _report(request.get_json(silent=True))
    who = viewstore.ip_hash(cfg().server.secret_key, request.remote_addr or "")
    outcome = viewstore.record_view(video.id, session, seconds, who, cfg().playback.views_per_address_hour)
    if outcome == viewstore.LIMITED:
        return error(429, "rate_limited", "too many view reports from this client; try again later")
    return "", 204


def init_app(app) -> None:
    """Register the viewing blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
