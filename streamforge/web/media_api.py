"""Captions and downloads of a video (API.md, "Captions, downloads and audio").

Captions are changed by the video's owner and read by whoever may watch it. A download is a 302 to
a signed store URL that lives a few minutes: a rendition's progressive MP4 (made by a worker on first
request, see jobs/downloads.py: 202 with Retry-After until it exists) or the original file; `[playback] downloads` says who may have one.
"""
from __future__ import annotations

import datetime
import time

from flask import Blueprint, jsonify, make_response, redirect, render_template, request
from flask_login import current_user, login_required

from streamforge import captiontext as vtt
from streamforge.errors import Conflict, NotFound, StorageError, ValidationError
from streamforge.jobs import tasks
from streamforge.store import captions, downloads, videos
from streamforge.store.db import ProcessingStatus, utcnow
from streamforge.web.common import caption_json, captions_json, cfg, error, handle_errors, store
from streamforge.web.viewing import watchable

bp = Blueprint("media_api", __name__, url_prefix="/api")
MAX_CAPTION_BYTES = 1024 * 1024
# the JSON around 1 MiB of caption text, escaped (\u00e9 is six bytes for one character)
MAX_CAPTION_BODY = 7 * MAX_CAPTION_BYTES
DOWNLOAD_URL_TTL = 300
PREPARING_WAIT = 5.0  # seconds a request waits for a small file before answering 202
PREPARING_RETRY_AFTER = 3


def _is_owner(video) -> bool:
    return current_user.is_authenticated and current_user.id == video.user_id


def _language(value: str) -> str:
    """The track's key: the primary language subtag in lower case ("EN" and "en" are one track)."""
    head, _, rest = value.partition("-")
    return head.lower() + (f"-{rest}" if rest else "")


def _caption_body() -> tuple[str, str, str]:
    request.max_content_length = MAX_CAPTION_BODY
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError('the body must be a JSON object {"language", "label"?, "content"}')
    language, label, content = body.get("language"), body.get("label"), body.get("content")
    if not vtt.valid_language(language):
        raise ValidationError("language must be a language tag such as en, fr or pt-BR")
    if label is not None and (not isinstance(label, str) or len(label) > 100):
        raise ValidationError("label must be a string of at most 100 characters")
    if not isinstance(content, str) or not content.strip():
        raise ValidationError("content must be the text of a WebVTT or SRT file")
    if len(content.encode("utf-8")) > MAX_CAPTION_BYTES:
        raise ValidationError(f"content is larger than {MAX_CAPTION_BYTES} bytes")
    return _language(language), (label or "").strip(), content


@bp.route("/videos/<video_id>/captions", methods=["POST"])
@login_required
def add_caption(video_id: str):
    """Add or replace the track of one language from WebVTT or SRT text (the owner)."""
    video = videos.get_video(current_user.row, video_id)
    language, label, content = _caption_body()
    try:
        text = vtt.normalise(content)
    except vtt.CaptionFormatError as e:
        return error(400, "invalid_captions", f"not a WebVTT or SRT file: {e}")
    track = captions.save_track(video.id, language, label, text)
    captions.publish(store(), videos.get_video_by_id(video.id))
    item = caption_json(video, track)
    return {"language": item["language"], "label": item["label"], "url": item["url"],
            "source": item["source"]}, 201


@bp.route("/videos/<video_id>/captions", methods=["GET"])
def list_captions(video_id: str):
    """The video's caption tracks (whoever may watch it)."""
    return {"items": captions_json(watchable(video_id))}


@bp.route("/videos/<video_id>/captions/<language>", methods=["DELETE"])
@login_required
def delete_caption(video_id: str, language: str):
    """Remove the track of one language (the owner)."""
    video = videos.get_video(current_user.row, video_id)
    if not captions.delete_track(video.id, _language(language)):
        raise NotFound(f"this video has no {language!r} caption track")
    captions.publish(store(), video)
    return "", 204


@bp.route("/videos/<video_id>/captions/auto", methods=["POST"])
@login_required
def auto_captions(video_id: str):
    """Transcribe the video again into its `auto` track, on the worker (the owner): 202."""
    from streamforge.jobs.tasks import enqueue_captions
    video = videos.get_video(current_user.row, video_id)
    if video.status != ProcessingStatus.COMPLETED:
        raise Conflict(f"only a COMPLETED video can be transcribed; this one is {video.status}")
    return {"id": video.id, "task": enqueue_captions(video.id), "status": "queued"}, 202


@bp.route("/videos/<video_id>/download", methods=["GET"])
def download(video_id: str):
    """302 to a short-lived signed URL of a rendition's MP4 or of the original ([playback] downloads)."""
    video = watchable(video_id)
    mode = cfg().playback.downloads
    if mode == "off":
        return error(403, "downloads_off", "downloads are turned off on this server")
    if not _is_owner(video) and mode != "viewers":
        if not current_user.is_authenticated:
            return error(401, "unauthorized", "sign in to download this video")
        return error(403, "forbidden", "only the owner may download this video")
    rendition = request.args.get("rendition") or ""
    if not rendition:
        raise ValidationError("rendition is required: a rendition's name, or original")
    if rendition == "original":
        key = video.original_key
        if not key or video.upload_status != "UPLOADED":
            raise NotFound("the original of this video is not in the store")
    else:
        if video.status != ProcessingStatus.COMPLETED:
            return error(409, "not_ready", f"the video is {video.status}; renditions download once it is COMPLETED")
        key = _prepared_mp4(video, rendition)
        if key is None and cfg().queue.workers == 0 and not _a_worker_is_alive():
            return error(503, "no_worker", "renditions are made into MP4 downloads by a worker, and this server "
                                           "runs none ([queue] workers = 0) and none has reported in the last "
                                           "minute; start `streamforge worker` or download the original")
        if key is None:
            resp = _preparing(video, rendition)
            resp.headers["Retry-After"] = str(PREPARING_RETRY_AFTER)
            resp.headers["Cache-Control"] = "no-store"
            return resp
    url = store().presigned_get(key, DOWNLOAD_URL_TTL, download_name=downloads.download_name(video, rendition))
    resp = redirect(url, code=302)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _prepared_mp4(video, rendition: str) -> str | None:
    """The key of the rendition's MP4 once a worker has made it; None while it is being made (the first
    request to find none has a job make it, then every request waits for it a few seconds)."""
    state, key = downloads.request(store(), video, rendition)
    if state == "mine":
        tasks.make_download(video.id, rendition)
    deadline = time.monotonic() + PREPARING_WAIT
    while state != downloads.READY and time.monotonic() < deadline:
        time.sleep(0.2)
        state = downloads.state_of(key)
        if state is None:  # the job failed and dropped the row: the next request claims it again
            raise StorageError("the download could not be prepared; try again")
    return key if state == downloads.READY else None


def _preparing(video, rendition: str):
    """202 while a worker makes the MP4: {"status": "preparing"}, or for a browser's link a page that asks again."""
    wants_page = request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
    if wants_page:
        resp = make_response(render_template("preparing.html", title=video.title, rendition=rendition,
                                             retry_after=PREPARING_RETRY_AFTER), 202)
    else:
        resp = jsonify({"status": "preparing"})
        resp.status_code = 202
    return resp


def _a_worker_is_alive() -> bool:
    """True when a worker process (any host) has beaten in the last minute."""
    from streamforge.store import workers
    recent = utcnow() - datetime.timedelta(seconds=60)
    return any(w.last_seen_at >= recent for w in workers.list_workers())


def may_download(owner: bool) -> bool:
    """For templates: whether a viewer of the page (its owner or not) may download the video."""
    mode = cfg().playback.downloads
    return mode == "viewers" or (owner and mode == "owner")


def init_app(app) -> None:
    """Register the captions and downloads blueprint (and `may_download` for the watch page)."""
    app.register_blueprint(bp)
    app.jinja_env.globals["may_download"] = may_download


handle_errors(bp)
