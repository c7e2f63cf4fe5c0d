"""Playlists through the API: create, list mine, get, edit, delete, add / move / remove a video.

PLAYLIST is `{"id", "slug", "title", "description", "visibility", "items": [VIDEO...], "url", ...}`;
`items` holds only the videos the asking client may watch. Others' private playlists are 404, as are
changes to someone else's playlist.
"""
from __future__ import annotations

from flask import Blueprint
from flask_login import current_user, login_required

from streamforge.errors import ValidationError
from streamforge.store import playlists as store_playlists
from streamforge.store.db import Visibility
from streamforge.web.api import _body, _text, _visibility
from streamforge.web.common import _iso, app_url, handle_errors, video_json
from streamforge.web.viewing import watchable

bp = Blueprint("playlists_api", __name__, url_prefix="/api/playlists")


def viewer_id() -> str | None:
    """The signed-in client's user id, or None."""
    return current_user.id if current_user.is_authenticated else None


def playlist_json(playlist, full: bool = True) -> dict:
    """PLAYLIST as the API has it: its fields and, in order, the videos the client may watch."""
    items = store_playlists.videos_of(playlist, viewer_id())
    return {"id": playlist.id, "slug": playlist.slug, "title": playlist.title, "description": playlist.description,
            "visibility": playlist.visibility, "url": f"{app_url()}/playlists/{playlist.slug}",
            "owner": playlist.user_id == viewer_id(), "item_count": len(items),
            "items": [video_json(v, full=full) for v in items],
            "created_at": _iso(playlist.created_at), "updated_at": _iso(playlist.updated_at)}


def _fields(body: dict, creating: bool) -> dict:
    fields = {}
    title = _text(body, "title", creating, 300)
    if title is not None:
        if not title:
            raise ValidationError("title must not be empty")
        fields["title"] = title
    if "description" in body:
        fields["description"] = _text(body, "description", False, 5000) or None
    visibility = _visibility(body)
    if visibility is not None:
        fields["visibility"] = visibility
    return fields


@bp.route("", methods=["POST"])
@login_required
def create():
    """A new empty playlist: 201 PLAYLIST (private unless `visibility` says otherwise)."""
    fields = _fields(_body(), creating=True)
    playlist = store_playlists.create_playlist(current_user.row, fields["title"], fields.get("description"),
                                               fields.get("visibility", Visibility.PRIVATE))
    return playlist_json(playlist), 201


@bp.route("", methods=["GET"])
@login_required
def mine():
    """The signed-in user's playlists (their items as short VIDEOs)."""
    return {"items": [playlist_json(p, full=False) for p in store_playlists.list_playlists(current_user.row)]}


@bp.route("/<playlist_id>", methods=["GET"])
def get(playlist_id: str):
    """A playlist its owner, or anyone when it is not private, may see."""
    return playlist_json(store_playlists.get_playlist(playlist_id, viewer_id()))


@bp.route("/<playlist_id>", methods=["PATCH"])
@login_required
def patch(playlist_id: str):
    """Change the title, description or visibility of one's playlist."""
    playlist = store_playlists.own_playlist(current_user.row, playlist_id)
    return playlist_json(store_playlists.update_playlist(playlist, **_fields(_body(), creating=False)))


@bp.route("/<playlist_id>", methods=["DELETE"])
@login_required
def delete(playlist_id: str):
    """Delete one's playlist (its videos stay): 204."""
    store_playlists.delete_playlist(store_playlists.own_playlist(current_user.row, playlist_id))
    return "", 204


@bp.route("/<playlist_id>/items", methods=["POST"])
@login_required
def add_item(playlist_id: str):
    """Add a video one may watch at `position` (0 first; default the end), or move it there: PLAYLIST,
    201 when added, 200 when moved."""
    playlist = store_playlists.own_playlist(current_user.row, playlist_id)
    body = _body()
    video_id, position = body.get("video_id"), body.get("position")
    if not isinstance(video_id, str) or not video_id:
        raise ValidationError("video_id is required")
    if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
        raise ValidationError("position must be a non-negative integer (0 is the first place)")
    added = store_playlists.place_video(playlist, watchable(video_id), position)
    return playlist_json(playlist), 201 if added else 200


@bp.route("/<playlist_id>/items/<video_id>", methods=["DELETE"])
@login_required
def remove_item(playlist_id: str, video_id: str):
    """Take a video out of one's playlist: 204."""
    store_playlists.remove_video(store_playlists.own_playlist(current_user.row, playlist_id), video_id)
    return "", 204


def init_app(app) -> None:
    """Register the playlists API (its pages live in pages_playlists)."""
    app.register_blueprint(bp)


handle_errors(bp)
