"""A video's output for players: `GET /play/{id}/{path}` behind a short-lived signature (see
streamforge.playback), and `GET /processed/{id}/{path}`, a public video's output unsigned, the origin a
CDN at `[cdn] base_url` pulls from.

Both check the video on every request, so a video made private is closed at once: its signed links
were signed for its old visibility, and the CDN origin serves public videos only. The store itself
never serves anything without a signature (docs/stores.md, "Behind a CDN").
"""
from __future__ import annotations

import posixpath
import time

from flask import Blueprint, Response, redirect, request
from flask_login import current_user

from streamforge import playback
from streamforge.errors import NotFound, StorageError
from streamforge.store import videos
from streamforge.store.db import ProcessingStatus, Visibility
from streamforge.web.common import app_url, cfg, error, handle_errors, store
from streamforge.web.media_api import may_download as _may_download

bp = Blueprint("play", __name__)
PLAYLIST = "application/vnd.apple.mpegurl"
# A media file's redirect goes to a presigned store URL that lives this long: a player follows it at
# once, and a URL copied out of it stops working soon after the video is made private.
MEDIA_URL_SECONDS = 120
# How long a CDN may keep a public video's media files (playlists: 2 s) before asking the app again:
# the bound on how long a CDN edge serves a video after it was made private, unless it is purged.
PUBLIC_MEDIA_MAX_AGE = 600


def _cors(resp: Response) -> Response:
    # players on other origins (embeds, other front-ends) may fetch playlists; the signature is the key
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def may_download(video) -> bool:
    """Whether the client (its session or bearer token) may download `video` under [playback] downloads."""
    return _may_download(current_user.is_authenticated and current_user.id == video.user_id)


def _output(video, relpath: str) -> str:
    """The output path `relpath` names (relative to the video's folder); NotFound if there is none."""
    target = playback.join("", relpath)
    if (video is None or target is None or not video.master_playlist_url
            or video.status == ProcessingStatus.ARCHIVED):
        raise NotFound("no such video output")
    return target


@bp.route("/play/<video_id>/<path:relpath>", methods=["GET", "HEAD"])
def play(video_id: str, relpath: str):
    """Serve a signed playlist or WebVTT rewritten with signed references; redirect other files to the store."""
    exp, sig = request.args.get("exp"), request.args.get("sig")
    video = videos.get_video_by_id(video_id)
    # the signature covers the visibility the link was made under: a change of it revokes the link
    epochs = (video.visibility,) if video is not None else Visibility.ALL
    if not any(playback.verify(cfg().server.secret_key, video_id, exp, sig, epoch=e) for e in epochs):
        return _cors(error(403, "forbidden", "this playback link is invalid or has expired; reload the page"))
    target = _output(video, relpath)
    if target.split("/", 1)[0] == "downloads" and not may_download(video):
        # a download file is the video in one piece: [playback] downloads holds here as on the download route
        return _cors(error(403, "forbidden", "downloads of this video are not open to you; the video plays here"))
    key = f"{video.s3_processed_path}/{target}"
    folder = posixpath.dirname(target)
    query = f"exp={exp}&sig={sig}"

    def resolve(ref: str) -> str:
        path = playback.join(folder, ref)
        return ref if path is None else f"{app_url()}/play/{video_id}/{path}?{query}"

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
    ttl = min(MEDIA_URL_SECONDS, max(1, int(exp) - int(time.time())))
    resp = redirect(store().presigned_get(key, ttl), code=302)
    resp.headers["Cache-Control"] = f"private, max-age={ttl // 2}"
    return _cors(resp)


@bp.route("/processed/<video_id>/<path:relpath>", methods=["GET", "HEAD"])
def public_output(video_id: str, relpath: str):
    """A public video's output file, unsigned, for the CDN at `[cdn] base_url`; 404 for anything else."""
    video = videos.get_video_by_id(video_id)
    if not cfg().cdn.base_url or video is None or video.visibility != Visibility.PUBLIC:
        raise NotFound("no such public video output")
    target = _output(video, relpath)
    if target.split("/", 1)[0] == "downloads":  # downloads follow [playback] downloads, through the API
        raise NotFound("no such public video output")
    key = f"{video.s3_processed_path}/{target}"
    opened = store().open_stream(key) if request.method == "GET" else (store().stat(key), iter(()))
    if opened is None or opened[0] is None:
        raise NotFound("no such video output")
    info, chunks = opened
    resp = Response(chunks, mimetype=info.content_type or "application/octet-stream")
    resp.headers["Content-Length"] = str(info.size)
    if target.endswith((".m3u8", ".vtt")):
        live = video.status == ProcessingStatus.PROCESSING
        resp.headers["Cache-Control"] = "no-cache" if live else "public, max-age=2"
    else:
        resp.headers["Cache-Control"] = f"public, max-age={PUBLIC_MEDIA_MAX_AGE}"
    if info.etag:
        resp.headers["ETag"] = f'"{info.etag}"'
    return _cors(resp)


def init_app(app) -> None:
    """Register the playback blueprint."""
    app.register_blueprint(bp)


handle_errors(bp)
