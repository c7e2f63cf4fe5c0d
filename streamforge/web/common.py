"""What the blueprints share: JSON errors, the current config and store, CSRF, and VIDEO as JSON."""
from __future__ import annotations

import hmac
import secrets

from flask import abort, current_app, has_request_context, jsonify, request, session
from werkzeug.exceptions import HTTPException

from streamforge.config import Config
from streamforge.errors import Conflict, Forbidden, NotFound, StorageError, StreamForgeError, ValidationError
from streamforge.store import captions, chapters, users, videos
from streamforge.store.objects import ObjectStore
from streamforge.web.hosts import host_allowed

STATUS_FOR = {NotFound: 404, ValidationError: 400, Conflict: 409, StorageError: 503, Forbidden: 403}


def cfg() -> Config:
    """The app's configuration."""
    return current_app.extensions["streamforge"]


def store() -> ObjectStore:
    """The app's object store."""
    return current_app.extensions["streamforge.store"]


def error(status: int, code: str, message: str):
    """A JSON error response as the contract has it."""
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    return resp


def handle_errors(bp) -> None:
    """Answer every error raised under the blueprint as JSON."""

    @bp.errorhandler(StreamForgeError)
    def _sf_error(e: StreamForgeError):
        status = next((s for cls, s in STATUS_FOR.items() if isinstance(e, cls)), 500)
        return error(status, e.code, str(e))

    @bp.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return error(e.code or 500, (e.name or "error").lower().replace(" ", "_"), e.description or e.name)


def role_required(*roles: str):
    """A view decorator: signed in (else 401 / the login page) and holding one of `roles` (else 403).

    A disabled user is not signed in at all (their session and tokens load no user)."""
    from functools import wraps

    from flask import render_template
    from flask_login import current_user, login_required

    def decorate(view):
        @wraps(view)
        def checked(*args, **kwargs):
            if current_user.role not in roles:
                message = f"your role ({current_user.role}) may not do this; it needs {' or '.join(roles)}"
                if request.path.startswith("/api/"):
                    return error(403, "forbidden", message)
                return render_template("forbidden.html", message=message), 403
            return view(*args, **kwargs)
        return login_required(checked)
    return decorate


def csrf_token() -> str:
    """The session's CSRF token (created on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def csrf_ok() -> bool:
    """True for safe methods, bearer calls, and cookie calls that carry the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS") or bearer_token():
        return True
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    want = session.get("csrf")
    return bool(want) and hmac.compare_digest(sent.encode(), want.encode())


def app_url() -> str:
    """The app's absolute URL for links in answers: `[server] base_url`, else the host the client used
    when `[server] allowed_hosts` trusts it; another Host is a 400 (web/hosts.py says why)."""
    if cfg().server.base_url or not has_request_context():
        return cfg().base_url
    if not host_allowed(request.host, cfg()):
        abort(400, description=f"the Host {request.host[:100]!r} is not one this server answers for; use its "
                               f"address, or name the host in [server] allowed_hosts (or set [server] base_url)")
    return request.host_url.rstrip("/")


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


def media_url(video, key: str) -> str:
    """The URL a player fetches one of the video's output objects from.

    Public videos behind `[cdn] base_url` are fetched through the CDN (whose origin is the app's
    `/processed/` route); everything else goes through the app's signed `/play/` links, which expire,
    and die at once when the video's visibility changes."""
    from streamforge import playback
    c = cfg()
    if c.cdn.base_url and video.visibility == "public":
        return store().public_url(key)
    prefix = video.s3_processed_path.rstrip("/") + "/"
    rel = key[len(prefix):] if key.startswith(prefix) else key
    exp = playback.expiry(c.playback.signed_url_ttl)
    return f"{app_url()}/play/{video.id}/{rel}?exp={exp}&sig={playback.sign(c.server.secret_key, video.id, exp, video.visibility)}"


def video_json(video, full: bool = True) -> dict:
    """VIDEO as the contract describes it; URLs absolute and built now (so `[cdn]` applies)."""
    base = app_url()
    out = {
        "id": video.id, "slug": video.slug, "title": video.title, "description": video.description,
        "tags": video.tags, "visibility": video.visibility, "upload_status": video.upload_status,
        "status": video.status, "progress": round(float(video.progress or 0), 4),
        "error_message": video.error_message,
        "original": {"filename": video.original_file_name, "key": video.original_key,
                     "size": video.original_file_size, "duration": video.original_duration or None,
                     "content_type": video.content_type, "sha256": video.original_sha256},
        "master_playlist_url": media_url(video, f"{video.s3_processed_path}/master.m3u8")
        if video.master_playlist_url else None,
        "watch_url": f"{base}/watch/{video.slug}",
        "created_at": _iso(video.created_at), "updated_at": _iso(video.updated_at),
        "uploaded_at": _iso(video.uploaded_at) if video.upload_status == "UPLOADED" else None,
        "processed_at": _iso(video.processed_at), "playable_at": _iso(video.playable_at),
        "attempts": video.attempts, "kind": video.kind or "video",
        "views": video.views or 0, "watch_seconds": round(float(video.watch_seconds or 0), 1),
        "audio_tracks": [{"language": a.get("language", "und"), "label": a.get("label", ""),
                          "default": bool(a.get("default"))} for a in (video.audio_tracks or [])],
        **chapters_json(video),
    }
    if full:
        out["renditions"] = [{
            "name": r.name, "width": r.width, "height": r.height, "codec": r.codec, "codecs": r.codecs,
            "bitrate": r.bitrate, "bandwidth": r.bandwidth, "average_bandwidth": r.average_bandwidth,
            "frame_rate": r.frame_rate, "playlist_url": media_url(video, r.s3_key), "segment_count": r.segment_count,
            "segment_size": r.segment_size} for r in videos.renditions_of(video)]
        out["thumbnails"] = [{
            "type": t.type, "url": media_url(video, t.s3_key), "timestamp": t.timestamp, "width": t.width,
            "height": t.height} for t in videos.thumbnails_of(video)]
        cover = next((t["url"] for t in out["thumbnails"] if t["type"] == "COVER"), None)
        out["cover_url"] = cover
        out["captions"] = captions_json(video)
    return out


def account_json(user, usage: dict | None = None) -> dict:
    """A user as /api/me has it: id, email, name, role, usage and quota (0 = unlimited)."""
    return {"id": user.id, "email": user.email, "name": user.name or user.email,
            "role": users.effective_role(user, cfg().auth.admins),
            "usage": usage if usage is not None else users.usage(user), "quota": users.quota(user, cfg().quota)}


def caption_json(video, track) -> dict:
    """A caption track as the API lists it; `url` is its WebVTT file."""
    key = f"{video.s3_processed_path}/{captions.relpaths(track)[0]}"
    return {"language": track.language, "label": captions.label_of(track), "source": track.source,
            "url": media_url(video, key)}


def captions_json(video) -> list[dict]:
    """VIDEO.captions: every track of the video."""
    return [caption_json(video, t) for t in captions.tracks_of(video.id)]


def chapters_json(video) -> dict:
    """VIDEO.chapters ([{"start", "title"}]) and `chapters_url`, the WebVTT chapters file the player reads."""
    found = chapters.chapters_of(video)
    rel = chapters.relpath(video) if found and video.master_playlist_url else None
    return {"chapters": [c.as_json() for c in found],
            "chapters_url": media_url(video, f"{video.s3_processed_path}/{rel}") if rel else None}


# `?page=` past this is past the end of any list (and keeps OFFSET within a 64-bit integer)
PAGE_CEILING = 10**7


def page_arg(lenient: bool = False) -> int:
    """`?page=` (default 1): a positive integer, held to PAGE_CEILING; not one is a 400, or page 1 when lenient."""
    value = (request.args.get("page") or "1").strip()
    if not (value.isascii() and value.isdigit() and value.strip("0")) or len(value) > 1000:
        if lenient:
            return 1
        raise ValidationError("page must be a positive integer")
    return min(PAGE_CEILING, int(value))


def last_page(page: int, count: int, per_page: int) -> int:
    """`page` when the list reaches it, else its last page (1 when it is empty): pages past the end show the last."""
    return max(1, min(page, -(-count // per_page)))
