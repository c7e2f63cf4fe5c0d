"""A signed-in viewer's watching: the player's position reports, resume, and the history.

- `POST /api/me/history` `{"video_id", "position", "duration"?}` (JSON, or form fields with `csrf_token`
  as `navigator.sendBeacon` sends them when the page is left): 204.
- `GET /api/me/history` -> `{"items": [{"video": VIDEO, "position", "watched_at", "watched"}]}`, newest first.
- `DELETE /api/me/history`: 204, everything forgotten.
"""
from __future__ import annotations

import math

from flask import Blueprint, request
from flask_login import current_user, login_required

from streamforge.errors import ValidationError
from streamforge.store import history
from streamforge.web.common import _iso, handle_errors, video_json
from streamforge.web.viewing import watchable

bp = Blueprint("watching", __name__, url_prefix="/api/me")
MAX_SECONDS = 7 * 24 * 3600
MAX_ITEMS = 100


def _seconds(value, name: str, required: bool) -> float | None:
    if value in (None, "") and not required:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not 0 <= number <= MAX_SECONDS:
        raise ValidationError(f"{name} must be a number of seconds from 0 to {MAX_SECONDS}")
    return number


def _report() -> tuple[str, float, float | None]:
    body = request.get_json(silent=True) if request.is_json else request.form
    if not body:
        raise ValidationError('the body must be {"video_id", "position", "duration"?}')
    video_id = body.get("video_id")
    if not isinstance(video_id, str) or not video_id or len(video_id) > 32:
        raise ValidationError("video_id is required")
    return video_id, _seconds(body.get("position"), "position", True), _seconds(body.get("duration"), "duration",
                                                                                  False)


def history_json(row) -> dict:
    """One history entry as the API has it."""
    return {"video": video_json(row.video), "position": round(float(row.position or 0), 1),
            "duration": row.duration, "watched": bool(row.watched), "watched_at": _iso(row.watched_at)}


@bp.route("/history", methods=["POST"])
@login_required
def save_position():
    """The player's report of where the viewer is in a video they may watch."""
    video_id, position, duration = _report()
    video = watchable(video_id)
    history.save_position(current_user.row, video, position, duration)
    return "", 204


@bp.route("/history", methods=["GET"])
@login_required
def list_history():
    """The viewer's history, newest first."""
    return {"items": [history_json(r) for r in history.list_history(current_user.row, MAX_ITEMS)]}


@bp.route("/history", methods=["DELETE"])
@login_required
def clear_history():
    """Forget the viewer's history (and so every resume position)."""
    history.clear_history(current_user.row)
    return "", 204


def init_app(app) -> None:
    """Register the watching API."""
    app.register_blueprint(bp)


handle_errors(bp)
