"""The admin's API and page: users with usage, role, quota and disable; invites; stats."""
from __future__ import annotations

import datetime

from flask import Blueprint, render_template, request
from flask_login import current_user

from streamforge.errors import Conflict, NotFound, ValidationError
from streamforge.jobs import intake
from streamforge.store import counters, stats, users, workers
from streamforge.store.db import User
from streamforge.units import human_size
from streamforge.web.common import account_json, app_url, cfg, handle_errors, role_required

bp = Blueprint("admin", __name__)
ALIVE_SECONDS = 60  # a worker that has not beaten for this long is shown as gone


def _iso(dt: datetime.datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


def admin_user_json(user: User, usage: dict | None = None) -> dict:
    """A user as the admin API lists them: the account plus disabled, created and last seen."""
    out = account_json(user, usage)
    out.update(disabled=bool(user.disabled), created_at=_iso(user.created_at), last_seen_at=_iso(user.last_seen_at),
               own_quota={"max_bytes": user.max_bytes, "max_videos": user.max_videos},
               identity_bound=user.oidc_issuer is not None,
               admin_by_config=users.is_config_admin(user.email, cfg().auth.admins))
    return out


def collect_stats() -> dict:
    """GET /api/admin/stats: videos by status, storage bytes, queue depth, workers with their heartbeat."""
    from streamforge.jobs import tasks
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    health = counters.notification_health()
    return {"videos": stats.video_counts(), "storage_bytes": stats.storage_bytes(),
            "notifications": {"received": health.notifications, "last_at": _iso(health.last_notification_at),
                              "recovered_by_sweeper": health.recovered_uploads,
                              "not_acted_on": health.unprocessable,
                              "warning": intake.notification_warning(health)},
            "queue_depth": int(tasks.huey.storage.queue_size()),
            "workers": [{"name": w.name, "last_seen_at": _iso(w.last_seen_at), "running": w.running,
                         "alive": (now - w.last_seen_at).total_seconds() < ALIVE_SECONDS,
                         "started_at": _iso(w.started_at)} for w in workers.list_workers()]}


def all_users_json() -> list[dict]:
    """Every user with their usage, oldest first."""
    used = users.usage_by_user()
    return [admin_user_json(u, used.get(u.id, {"bytes": 0, "videos": 0})) for u in users.list_users()]


@bp.route("/api/admin/users", methods=["GET"])
@role_required(users.ADMIN)
def list_users():
    """Every user with usage, role, quota and whether they are disabled."""
    return {"items": all_users_json()}


def _patch_fields(body: dict, target: User) -> dict:
    unknown = set(body) - {"role", "disabled", "quota"}
    if unknown:
        raise ValidationError(f"cannot change {', '.join(sorted(unknown))}")
    if "disabled" in body and not isinstance(body["disabled"], bool):
        raise ValidationError("disabled must be true or false")
    quota = body.get("quota")
    if quota is not None and (not isinstance(quota, dict) or set(quota) - {"max_bytes", "max_videos"}):
        raise ValidationError("quota must be an object with max_bytes and/or max_videos")
    role = body.get("role")
    if role is not None:
        users.check_role(role)
        if role != users.ADMIN and users.is_config_admin(target.email, cfg().auth.admins):
            raise Conflict(f"{target.email} is an admin through [auth] admins in the config; change it there")
    if target.id == current_user.id and (body.get("disabled") is True or role not in (None, users.ADMIN)):
        raise Conflict("you cannot disable yourself or take away your own admin role")
    return {"role": role, "disabled": body.get("disabled"), "quota": quota}


@bp.route("/api/admin/users/<user_id>", methods=["PATCH"])
@role_required(users.ADMIN)
def patch_user(user_id: str):
    """Change a user's role, disabled flag or own quota."""
    target = User.get_or_none(User.id == user_id)
    if target is None:
        raise NotFound("no such user")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return admin_user_json(users.update_user(target, **_patch_fields(body, target)))


def invite_url(plain: str) -> str:
    """The link an invite is used through."""
    return f"{app_url()}/login?invite={plain}"


@bp.route("/api/admin/invites", methods=["POST"])
@role_required(users.ADMIN)
def create_invite():
    """A one-use link that creates this email's user with the role and signs them in (7 days)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("email"), str):
        raise ValidationError("email is required")
    row, plain = users.create_invite(body["email"], body.get("role") or cfg().auth.default_role, current_user.row)
    return {"url": invite_url(plain), "email": row.email, "role": row.role, "expires_at": _iso(row.expires_at)}, 201


@bp.route("/api/admin/stats", methods=["GET"])
@role_required(users.ADMIN)
def get_stats():
    """Videos by status, storage bytes, queue depth and workers."""
    return collect_stats()


@bp.route("/admin")
@role_required(users.ADMIN)
def page():
    """The admin's page: users, invites and stats."""
    from streamforge.web.runners_api import runners_json
    return render_template("admin.html", users=all_users_json(), stats=collect_stats(), roles=users.ROLES,
                           invites=users.list_invites(), default_role=cfg().auth.default_role, human_size=human_size,
                           runners=runners_json())


def init_app(app) -> None:
    """Register the admin blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
