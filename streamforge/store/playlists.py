"""Playlists: a user's ordered lists of videos, shown to others by the playlist's visibility, each viewer
seeing only the videos of it they may watch (history.watchable_by, the watch page's own rule)."""
from __future__ import annotations

from peewee import IntegrityError

from streamforge.errors import Conflict, NotFound
from streamforge.store.db import Playlist, PlaylistItem, User, Video, Visibility, db, utcnow
from streamforge.store.history import watchable_by
from streamforge.store.videos import make_slug

MAX_ITEMS = 1000


def create_playlist(user: User, title: str, description: str | None, visibility: str) -> Playlist:
    """A new empty playlist of `user`'s."""
    for _ in range(5):
        try:
            with db.atomic():
                return Playlist.create(user=user.id, slug=make_slug(title), title=title, description=description,
                                       visibility=visibility)
        except IntegrityError:  # a slug collision: another random part
            continue
    raise RuntimeError("could not allocate a unique slug")


def _visible(row: Playlist | None, viewer_id: str | None) -> Playlist:
    if row is None or (row.visibility == Visibility.PRIVATE and row.user_id != viewer_id):
        raise NotFound("no such playlist")
    return row


def get_playlist(playlist_id: str, viewer_id: str | None) -> Playlist:
    """The playlist if this viewer may see it (its owner; anyone unless private); NotFound otherwise."""
    return _visible(Playlist.get_or_none(Playlist.id == playlist_id), viewer_id)


def get_playlist_by_slug(slug: str, viewer_id: str | None) -> Playlist:
    """As get_playlist, by slug."""
    return _visible(Playlist.get_or_none(Playlist.slug == slug), viewer_id)


def own_playlist(user: User, playlist_id: str) -> Playlist:
    """The user's own playlist; NotFound for a missing one or someone else's."""
    row = Playlist.get_or_none((Playlist.id == playlist_id) & (Playlist.user == user.id))
    if row is None:
        raise NotFound("no such playlist")
    return row


def list_playlists(user: User) -> list[Playlist]:
    """The user's playlists, most recently changed first."""
    return list(Playlist.select().where(Playlist.user == user.id)
                .order_by(Playlist.updated_at.desc(), Playlist.id.desc()))


def update_playlist(playlist: Playlist, **fields) -> Playlist:
    """Change a playlist's title, description or visibility."""
    for key, value in fields.items():
        setattr(playlist, key, value)
    playlist.updated_at = utcnow()
    playlist.save()
    return playlist


def delete_playlist(playlist: Playlist) -> None:
    """Delete the playlist (its videos stay)."""
    playlist.delete_instance(recursive=True)


def videos_of(playlist: Playlist, viewer_id: str | None) -> list[Video]:
    """The playlist's videos in order, only those this viewer may watch."""
    return list(Video.select().join(PlaylistItem, on=(PlaylistItem.video == Video.id))
                .where((PlaylistItem.playlist == playlist.id) & watchable_by(viewer_id))
                .order_by(PlaylistItem.position, PlaylistItem.added_at))


def _ordered_ids(playlist: Playlist) -> list[str]:
    return [r.video_id for r in PlaylistItem.select(PlaylistItem.video)
            .where(PlaylistItem.playlist == playlist.id).order_by(PlaylistItem.position, PlaylistItem.added_at)]


def _renumber(playlist: Playlist, order: list[str]) -> None:
    for index, video_id in enumerate(order):
        (PlaylistItem.update(position=index)
         .where((PlaylistItem.playlist == playlist.id) & (PlaylistItem.video == video_id)).execute())
    Playlist.update(updated_at=utcnow()).where(Playlist.id == playlist.id).execute()


def place_video(playlist: Playlist, video: Video, position: int | None) -> bool:
    """Put the video at `position` (0 first; None: the end), moving it there when it is in already;
    True when it was added, False when moved. The caller checks the owner may watch the video."""
    with db.atomic():
        order = _ordered_ids(playlist)
        added = video.id not in order
        if added:
            if len(order) >= MAX_ITEMS:
                raise Conflict(f"a playlist holds at most {MAX_ITEMS} videos")
            PlaylistItem.create(playlist=playlist.id, video=video.id, position=len(order))
        else:
            order.remove(video.id)
        index = len(order) if position is None else max(0, min(position, len(order)))
        order.insert(index, video.id)
        _renumber(playlist, order)
    return added


def remove_video(playlist: Playlist, video_id: str) -> None:
    """Take the video out of the playlist; NotFound when it is not in it."""
    with db.atomic():
        n = PlaylistItem.delete().where((PlaylistItem.playlist == playlist.id)
                                        & (PlaylistItem.video == video_id)).execute()
        if not n:
            raise NotFound("that video is not in this playlist")
        _renumber(playlist, _ordered_ids(playlist))
