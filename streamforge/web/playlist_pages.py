"""The playlist pages: /playlists (mine, and a form for a new one), /playlists/{slug} (anyone who may see
it, each viewer only the videos they may watch), and what the watch page needs for `?list=`."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from streamforge.errors import NotFound
from streamforge.store import playlists as store_playlists
from streamforge.store.db import Visibility
from streamforge.web.common import video_json
from streamforge.web.playlists import playlist_json, viewer_id

bp = Blueprint("playlist_pages", __name__)


@bp.route("/playlists")
@login_required
def mine():
    """The signed-in user's playlists and a form to start one."""
    rows = [playlist_json(p, full=False) for p in store_playlists.list_playlists(current_user.row)]
    return render_template("playlists.html", playlists=rows, visibilities=Visibility.ALL)


@bp.route("/playlists/<slug>")
def show(slug: str):
    """One playlist: its videos in order, with play-all; its owner reorders, removes and edits here."""
    try:
        playlist = store_playlists.get_playlist_by_slug(slug, viewer_id())
    except NotFound:
        return render_template("not_found.html"), 404
    data = playlist_json(playlist)
    return render_template("playlist.html", playlist=data, visibilities=Visibility.ALL)


def watch_context(list_slug: str | None, video) -> dict | None:
    """For /watch/{slug}?list=: the playlist's slug and title, its videos (short), where this one is and
    the next; None when there is no such playlist for this viewer or the video is not in it."""
    if not list_slug:
        return None
    try:
        playlist = store_playlists.get_playlist_by_slug(list_slug, viewer_id())
    except NotFound:
        return None
    rows = store_playlists.videos_of(playlist, viewer_id())
    ids = [v.id for v in rows]
    if video.id not in ids:
        return None
    index = ids.index(video.id)
    items = [{k: j[k] for k in ("id", "slug", "title", "cover_url")} | {"duration": j["original"]["duration"]}
             for j in (video_json(v) for v in rows)]
    return {"slug": playlist.slug, "title": playlist.title, "items": items, "index": index,
            "next": items[index + 1] if index + 1 < len(items) else None}


def init_app(app) -> None:
    """Register the playlist pages."""
    app.register_blueprint(bp)
