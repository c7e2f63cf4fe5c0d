"""Server-rendered pages: the library, the upload page, the watch page and the API tokens page.

The pages are plain Jinja templates; small ES modules under static/js/ add the live parts (Uppy
for uploads, hls.js with media-chrome for playback, polling for processing progress). Those
libraries come from npm and are copied into static/vendor/ by `npm ci` (scripts/vendor.mjs).
"""
from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, current_app, render_template, request
from flask_login import current_user, login_required

from streamforge.store import users, videos
from streamforge.store.db import ProcessingStatus, Visibility
from streamforge.units import human_size
from streamforge.web.common import account_json, cfg, last_page, page_arg, role_required, video_json

bp = Blueprint("pages", __name__)
LIBRARY_PAGE_SIZE = 24
# extensions the file picker offers besides the configured MIME patterns (browsers give some
# containers, such as .mkv, no MIME type at all)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg",
                    ".mpeg", ".flv", ".wmv", ".ogv", ".3gp",
                    ".mp3", ".m4a", ".aac", ".flac", ".wav", ".ogg", ".oga", ".opus")  # audio-only uploads too


def vendor_versions() -> dict[str, str]:
    """The npm packages copied into static/vendor/ and their versions; empty when not installed."""
    path = Path(current_app.static_folder or "", "vendor", "versions.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@bp.route("/")
@login_required
def library():
    """The signed-in user's videos, newest first, as a grid of cards."""
    page = page_arg(lenient=True)
    sort = request.args.get("sort") if request.args.get("sort") in videos.LIBRARY_SORTS else "newest"
    rows, more = videos.list_videos(current_user.row, None, page, LIBRARY_PAGE_SIZE, sort=sort)
    if not rows and page > 1:  # past the end: the last page
        page = last_page(page, videos.count_videos(current_user.row), LIBRARY_PAGE_SIZE)
        rows, more = videos.list_videos(current_user.row, None, page, LIBRARY_PAGE_SIZE, sort=sort)
    return render_template("library.html", videos=[video_json(v) for v in rows], page=page, more=more,
                           per_page=LIBRARY_PAGE_SIZE, sort=sort, visibilities=Visibility.ALL,
                           account=account_json(current_user.row), human_size=human_size)


@bp.route("/upload")
@role_required(*users.CAN_UPLOAD)
def upload():
    """The upload page: Uppy sends the bytes straight to the store through our API's presigned URLs."""
    up = cfg().upload
    patterns = [t for t in up.content_types if t != "application/octet-stream"]
    settings = {
        "partSize": up.part_size, "multipartThreshold": up.multipart_threshold, "maxSize": up.max_size,
        "contentTypes": list(up.content_types), "extensions": list(VIDEO_EXTENSIONS),
        "defaultVisibility": cfg().playback.default_visibility,
    }
    return render_template("upload.html", settings=settings, accept=",".join(patterns + list(VIDEO_EXTENSIONS)),
                           max_size=human_size(up.max_size), visibilities=Visibility.ALL,
                           default_visibility=cfg().playback.default_visibility)


@bp.route("/watch/<slug>")
def watch(slug: str):
    """A video's page: its owner always; others when it is public or unlisted."""
    video = videos.get_video_by_slug(slug)
    if video is None or video.status == ProcessingStatus.ARCHIVED:
        return render_template("not_found.html"), 404
    owner = current_user.is_authenticated and current_user.id == video.user_id
    if not owner and video.visibility == Visibility.PRIVATE:
        return render_template("not_found.html"), 404
    data = video_json(video)
    timeline = next((t["url"] for t in data.get("thumbnails", [])
                     if t["type"] == "TIMELINE" and t["url"].split("?")[0].endswith(".vtt")), None)
    from streamforge.web.share import share_meta
    return render_template("watch.html", video=data, owner=owner, timeline_vtt=timeline,
                           visibilities=Visibility.ALL, share=share_meta(video, data))


@bp.route("/tokens")
@login_required
def tokens():
    """The user's API tokens: create (shown once), list, revoke."""
    rows = videos.list_tokens(current_user.row)
    return render_template("tokens.html", tokens=rows)


def init_app(app) -> None:
    """Register the pages blueprint and the helpers its templates use."""
    app.register_blueprint(bp)

    @app.context_processor
    def _page_helpers():
        return {"vendor_versions": vendor_versions}
