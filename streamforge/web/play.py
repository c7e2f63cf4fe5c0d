"""`GET /play/{id}/{path}`: a video's output behind a short-lived signature (see streamforge.playback)."""
from __future__ import annotations

import posixpath
import time

from flask import Blueprint, Response, redirect, request
from flask_login import current_user

from streamforge import playback
from streamforge.errors import NotFound, StorageError
from streamforge.store import videos
from streamforge.store.db import ProcessingStatus
from streamforge.web.common import app_url, cfg, error, handle_errors, store
from streamforge.web.media_api import may_download as _may_download

bp = Blueprint("play", __name__)
PLAYLIST = "application/vnd.apple.mpegurl"


def _cors(resp: Response) -> Response:
    # players on other origins (embeds, other front-ends) may fetch playlists; the signature is the key
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def may_download(video) -> bool:
    """Whether the client (its session or bearer token) may download `video` under [playback] downloads."""
    return _may_download(current_user.is_authenticated and current_user.id == video.user_id)


@bp.route("/play/<video_id>/<path:relpath>", methods=["GET", "HEAD"])
def play(video_id: str, relpath: str):
    """Serve a signed playlist or WebVTT rewritten with signed references; redirect other files to the store."""
    exp, sig = request.args.get("exp"), request.args.get("sig")
    if not playback.verify(cfg().server.secret_key, video_id, exp, sig):
        return _cors(error(403, "forbidden", "this playback link is invalid or has expired; reload the page"))
    video = videos.get_video_by_id(video_id)
    target = playback.join("", relpath)
    if (video is None or target is None or not video.master_playlist_url
            or video.status == ProcessingStatus.ARCHIVED):
        raise NotFound("no such video output")
    if target.split("/", 1)[0] == "downloads" and not may_download(video):
        # a download file is the video in one piece: [playback] downloads holds here as on the download route
        return _cors(error(403, "forbidden", "downloads of this video are not open to you; the video plays here"))
    key = f"{video.s3_processed_path}/{target}"
    ttl = max(60, int(exp) - int(time.time()))
    folder = posixpath.dirname(target)
    query = f"exp={exp}&sig={sig}"

    def resolve(ref: str) -> str:
        path = playback.join(folder, ref)
        if path is None:
            return ref
        if path.endswith((".m3u8", ".vtt")):
            return f"{app_url()}/play/{video_id}/{path}?{query}"
        return store().presigned_get(f"{video.s3_processed_path}/{path}", ttl)

    if target.endswith(".m3u8") or target.endswith(".vtt"):
        try:
            text = store().get_bytes(key).decode("utf-8", "replace")
        except StorageError:
            if store().stat(key) is None:
                raise NotFound("no such playlist") from None
            raise
        if target.endswith(".m3u8"):
            body, mime = playback.rewrite_playlist(text, resolve), PLAYLIST
        elif target.startswith("subs/"):  # a caption track: cue text is served as it is (it names no files)
            body, mime = text, "text/vtt"
        else:
            body, mime = playback.rewrite_vtt(text, resolve), "text/vtt"
        resp = Response(body, mimetype=mime)
        live = video.status == ProcessingStatus.PROCESSING
        # the master is rewritten when a caption track is added or removed: never kept stale
        resp.headers["Cache-Control"] = "no-cache" if live or target == "master.m3u8" else "private, max-age=30"
        return _cors(resp)
    resp = redirect(store().presigned_get(key, ttl), code=302)
    resp.headers["Cache-Control"] = "private, max-age=300"
    return _cors(resp)


def init_app(app) -> None:
    """Register the playback blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
