"""The video API of the contract: create and upload, list, get, edit, delete, reprocess, logs."""
from __future__ import annotations

import datetime
import fnmatch
import math
import re

from flask import Blueprint, request
from flask_login import current_user, login_required

from streamforge.errors import Conflict, StorageError, ValidationError
from streamforge.jobs import intake
from streamforge.store import chapters, users, videos
from streamforge.store.db import ProcessingStatus, UploadStatus, Visibility, utcnow
from streamforge.web.common import (
    account_json,
    cfg,
    handle_errors,
    page_arg,
    role_required,
    store,
    video_json,
)

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_PARTS = 10000
PER_PAGE = 20


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _text(body: dict, key: str, required: bool, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    value = value.strip()
    if required and not value:
        raise ValidationError(f"{key} must not be empty")
    if len(value) > limit:
        raise ValidationError(f"{key} is longer than {limit} characters")
    return value


def _tags(body: dict) -> list[str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if isinstance(tags, str):
        tags = [t for t in tags.split(",")]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValidationError("tags must be a list of strings")
    clean = list(dict.fromkeys(t.strip()[:50] for t in tags if t.strip()))
    if len(clean) > 30:
        raise ValidationError("at most 30 tags")
    return clean


def _visibility(body: dict) -> str | None:
    value = body.get("visibility")
    if value is None:
        return None
    if value not in Visibility.ALL:
        raise ValidationError(f"visibility must be one of {', '.join(Visibility.ALL)}")
    return value


# RFC 6838 restricted-name: the type and subtype of a media type; parameters (dropped) are token=token
# or token="quoted"; nothing else (no spaces inside, no control characters, no second slash)
_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_PARAM = r';[ \t]*[a-z0-9!#$&^_.+-]+=(?:[a-z0-9!#$&^_.+-]+|"[^"\\\x00-\x1f\x7f]*")[ \t]*'
MEDIA_TYPE = re.compile(rf"(?P<type>(?:video|audio)/{_NAME})[ \t]*(?:{_PARAM})*")


def _content_type(value) -> str:
    """A `video/*` or `audio/*` media type (parameters dropped), also matching [upload] content_types."""
    if not isinstance(value, str) or len(value) > 255:
        raise ValidationError("content_type must be a video or audio media type such as video/mp4")
    m = MEDIA_TYPE.fullmatch(value.strip(" \t").lower())
    if m is None or ".." in m["type"]:
        raise ValidationError(f"content_type {value[:100]!r} is not a video or audio media type "
                              "(such as video/mp4 or audio/mpeg)")
    value = m["type"]
    if not any(fnmatch.fnmatchcase(value, pat.lower()) for pat in cfg().upload.content_types):
        raise ValidationError(f"content_type {value} is not accepted; allowed: "
                              f"{', '.join(cfg().upload.content_types)}")
    return value


def _sha256(value) -> str | None:
    """An optional SHA-256 of the original: 64 hex digits, kept lower-case."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValidationError("sha256 must be the 64 hex digits of the file's SHA-256")
    return value.lower()


def _original_match() -> dict:
    """GET /api/videos?filename=&size=&sha256=: which original the listing is narrowed to."""
    size = request.args.get("size")
    if size is not None and not (size.isascii() and size.isdigit()):
        raise ValidationError("size must be a non-negative integer (bytes)")
    return {"filename": request.args.get("filename"), "size": int(size) if size is not None else None,
            "sha256": _sha256(request.args.get("sha256"))}


def _iso(dt: datetime.datetime) -> str:
    return dt.isoformat(timespec="seconds") + "Z"


def _part_size(size: int) -> int:
    part = cfg().upload.part_size
    return max(part, math.ceil(size / MAX_PARTS))


def _upload_descriptor(video) -> dict:
    """UPLOAD: a presigned PUT, or the plan of a multipart upload."""
    up = cfg().upload
    expires = video.upload_expires_at
    if video.declared_size <= up.multipart_threshold:
        # the signature covers these headers: exactly the declared size and type, and only a first write
        signed = store().presign_put(video.original_key, video.content_type, up.url_ttl, size=video.declared_size)
        return {"method": "PUT", "url": signed["url"], "headers": signed["headers"], "expires_at": _iso(expires)}
    part_size = _part_size(video.declared_size)
    return {"method": "MULTIPART", "upload_id": video.upload_id, "part_size": part_size,
            "part_count": math.ceil(video.declared_size / part_size), "expires_at": _iso(expires)}


@bp.route("/videos", methods=["POST"])
@role_required(*users.CAN_UPLOAD)
def create_video():
    """Create a video and hand back where to send its bytes."""
    c = cfg()
    body = _body()
    title = _text(body, "title", True, 300)
    filename = _text(body, "filename", True, 500)
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValidationError("size must be a positive integer (bytes)")
    if size > c.upload.max_size:
        return _too_large(size)
    content_type = _content_type(body.get("content_type"))
    description = _text(body, "description", False, 5000)
    tags = _tags(body) or []
    visibility = _visibility(body) or c.playback.default_visibility
    sha256 = _sha256(body.get("sha256"))
    expires = utcnow() + datetime.timedelta(seconds=c.upload.url_ttl)
    with users.quota_reservation(current_user.row, size, c.quota):  # 403 quota_exceeded, nothing created
        video = videos.create_video(current_user.row, title=title, filename=filename, size=size,
                                    content_type=content_type, bucket=c.storage.bucket, description=description,
                                    tags=tags, visibility=visibility, expires_at=expires, sha256=sha256)
    if size > c.upload.multipart_threshold:
        try:
            upload_id = store().create_multipart(video.original_key, content_type)
        except StorageError:
            videos.discard_upload(video.id)  # refused: no UPLOADING row left, nothing against the quota
            raise
        videos.set_upload_id(video.id, upload_id)
        video.upload_id = upload_id
    return {"video": video_json(video), "upload": _upload_descriptor(video)}, 201


def _too_large(size: int):
    from streamforge.web.common import error
    return error(413, "too_large", f"the file is {size} bytes; the largest upload accepted is "
                                   f"{cfg().upload.max_size} bytes")


@bp.route("/videos/<video_id>/upload/parts", methods=["POST"])
@role_required(*users.CAN_UPLOAD)
def upload_parts(video_id: str):
    """Presigned URLs for parts of a multipart upload."""
    video = videos.get_video(current_user.row, video_id)
    if video.upload_status != UploadStatus.UPLOADING or not video.upload_id:
        raise Conflict("this video is not waiting for a multipart upload")
    numbers = _body().get("part_numbers")
    count = math.ceil(video.declared_size / _part_size(video.declared_size))
    if (not isinstance(numbers, list) or not numbers or len(numbers) > MAX_PARTS
            or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= count for n in numbers)):
        raise ValidationError(f"part_numbers must be a list of integers from 1 to {count}")
    ttl = max(60, int((video.upload_expires_at - utcnow()).total_seconds()))
    part = _part_size(video.declared_size)
    # each URL takes exactly its part's bytes (the last part: what is left)
    urls = {str(n): store().presign_part(video.original_key, video.upload_id, n, ttl,
                                         size=min(part, video.declared_size - (n - 1) * part))
            for n in dict.fromkeys(numbers)}
    return {"urls": urls}


@bp.route("/videos/<video_id>/upload/parts", methods=["GET"])
@role_required(*users.CAN_UPLOAD)
def uploaded_parts(video_id: str):
    """The parts the store already has (for a browser resuming after a reload)."""
    video = videos.get_video(current_user.row, video_id)
    if video.upload_status != UploadStatus.UPLOADING or not video.upload_id:
        raise Conflict("this video is not waiting for a multipart upload")
    parts = store().list_parts(video.original_key, video.upload_id)
    return {"parts": parts, "upload": _upload_descriptor(video)}


@bp.route("/videos/<video_id>/upload/complete", methods=["POST"])
@role_required(*users.CAN_UPLOAD)
def upload_complete(video_id: str):
    """Finish the upload; processing starts once, whether this or the store's notification comes first."""
    video = videos.get_video(current_user.row, video_id)
    if video.upload_status == UploadStatus.UPLOADED:
        return video_json(video)
    if video.status != ProcessingStatus.PENDING:
        raise Conflict(f"the upload cannot be completed: the video is {video.status}")
    body = request.get_json(silent=True) or {}
    parts = body.get("parts") if isinstance(body, dict) else None
    if video.upload_id:
        if not isinstance(parts, list) or not parts:
            raise ValidationError("parts: a list of {part_number, etag} is required for a multipart upload")
        try:
            pairs = sorted((int(p["part_number"]), str(p["etag"]).strip('"')) for p in parts)
        except (KeyError, TypeError, ValueError):
            raise ValidationError("each part needs an integer part_number and an etag") from None
        _check_parts(video, pairs)
        try:
            store().complete_multipart(video.original_key, video.upload_id, pairs)
        except StorageError as e:
            # the notification may have raced us and the upload already be complete
            if store().stat(video.original_key) is None:
                raise ValidationError(f"the store refused to complete the upload: {e}") from None
    outcome = intake.accept_upload(cfg(), store(), videos.get_video(current_user.row, video_id))
    if outcome == "missing":
        raise Conflict("the store has no object for this upload yet; send the bytes first")
    return video_json(videos.get_video(current_user.row, video_id))


def _check_parts(video, pairs: list[tuple[int, str]]) -> None:
    """400 unless the parts named are every part of the plan, in the store, adding up to the declared size."""
    count = math.ceil(video.declared_size / _part_size(video.declared_size))
    if [n for n, _ in pairs] != list(range(1, count + 1)):
        raise ValidationError(f"parts must name each of the {count} parts once (1 to {count})")
    try:
        stored = {p["part_number"]: p["size"] for p in store().list_parts(video.original_key, video.upload_id)}
    except StorageError:
        if store().stat(video.original_key) is not None:
            return  # a racing complete (or the notification) finished it: nothing left to check
        raise
    missing = [n for n, _ in pairs if n not in stored]
    if missing:
        raise ValidationError(f"the store does not hold part {missing[0]} yet; send it first")
    total = sum(stored[n] for n, _ in pairs)
    if total != video.declared_size:
        raise ValidationError(f"the parts hold {total} bytes but {video.declared_size} were declared")


@bp.route("/videos", methods=["GET"])
@login_required
def list_videos():
    """The user's videos, newest first, a page at a time."""
    status = request.args.get("status") or None
    if status and status not in ProcessingStatus.ALL:
        raise ValidationError(f"status must be one of {', '.join(ProcessingStatus.ALL)}")
    page = page_arg()
    try:
        per_page = min(100, max(1, int(request.args.get("per_page", PER_PAGE))))
    except ValueError:
        raise ValidationError("per_page must be an integer") from None
    sort = request.args.get("sort") or "newest"
    if sort not in videos.LIBRARY_SORTS:
        raise ValidationError(f"sort must be one of {', '.join(videos.LIBRARY_SORTS)}")
    rows, more = videos.list_videos(current_user.row, status, page, per_page, match=_original_match(), sort=sort)
    return {"items": [video_json(v) for v in rows], "next": page + 1 if more else None}


@bp.route("/videos/<video_id>", methods=["GET"])
@login_required
def get_video(video_id: str):
    """One of the user's videos."""
    return video_json(videos.get_video(current_user.row, video_id))


@bp.route("/videos/<video_id>", methods=["PATCH"])
@login_required
def patch_video(video_id: str):
    """Edit title, description, tags or visibility."""
    video = videos.get_video(current_user.row, video_id)
    body = _body()
    unknown = set(body) - {"title", "description", "tags", "visibility"}
    if unknown:
        raise ValidationError(f"cannot change {', '.join(sorted(unknown))}")
    fields = {}
    if "title" in body:
        fields["title"] = _text(body, "title", True, 300)
    if "description" in body:
        fields["description"] = _text(body, "description", False, 5000)
    if "tags" in body:
        fields["tags"] = _tags(body) or []
    if "visibility" in body:
        fields["visibility"] = _visibility(body)
    video = videos.update_video(video, **fields)
    if "description" in fields:  # its timestamps may be the chapters: their file follows the edit
        chapters.publish(store(), video)
    return video_json(video)


@bp.route("/videos/<video_id>", methods=["DELETE"])
@login_required
def delete_video(video_id: str):
    """Archive the video and remove its objects from the store."""
    video = videos.get_video(current_user.row, video_id)
    if video.upload_id:
        try:
            store().abort_multipart(video.original_key, video.upload_id)
        except StorageError:
            pass
    videos.archive_video(video)
    store().delete_prefix(f"originals/{video.id}/")
    store().delete_prefix(f"processed/{video.id}/")
    return "", 204


@bp.route("/videos/<video_id>/reprocess", methods=["POST"])
@role_required(*users.CAN_UPLOAD)
def reprocess(video_id: str):
    """Run the pipeline again; the current output stays until the new one is complete."""
    from streamforge.jobs.tasks import enqueue_processing
    video = videos.get_video(current_user.row, video_id)
    if not videos.request_reprocess(video):
        raise Conflict(f"only a COMPLETED or FAILED upload can be reprocessed; this one is "
                       f"{video.upload_status}/{video.status}")
    enqueue_processing(video.id)
    return video_json(videos.get_video(current_user.row, video_id)), 202


@bp.route("/videos/<video_id>/logs", methods=["GET"])
@login_required
def logs(video_id: str):
    """The processing log, oldest first."""
    video = videos.get_video(current_user.row, video_id)
    return {"items": [{"stage": r.stage, "status": r.status, "message": r.message, "duration": r.duration,
                       "error_code": r.error_code, "attempt": r.attempt,
                       "created_at": r.created_at.isoformat(timespec="milliseconds") + "Z"}
                      for r in videos.logs_of(video)]}


@bp.route("/me", methods=["GET"])
@login_required
def me():
    """The signed-in user: role, usage and quota."""
    return account_json(current_user.row)


def init_app(app) -> None:
    """Register the API blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
