"""Server-rendered pages: the library, the upload page and the watch page."""
from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_login import current_user, login_required

from streamforge.store import videos
from streamforge.store.db import ProcessingStatus, Visibility
from streamforge.web.common import video_json

bp = Blueprint("pages", __name__)


@bp.route("/")
@login_required
def library():
    """The signed-in user's videos."""
    return render_template("library.html")


@bp.route("/upload")
@login_required
def upload():
    """The upload page."""
    return render_template("upload.html")


@bp.route("/watch/<slug>")
def watch(slug: str):
    """A video's page: its owner always; others when it is public or unlisted."""
    video = videos.get_video_by_slug(slug)
    if video is None or video.status == ProcessingStatus.ARCHIVED:
        abort(404)
    owner = current_user.is_authenticated and current_user.id == video.user_id
    if not owner and video.visibility == Visibility.PRIVATE:
        abort(404)
    return render_template("watch.html", video=video_json(video), owner=owner)


def init_app(app) -> None:
    """Register the pages blueprint."""
    app.register_blueprint(bp)
