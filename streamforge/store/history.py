"""Where signed-in viewers stopped in the videos they watched: resume positions and the history list.

One row per viewer and video, moved to the top each time the player reports a position. A position
near the end marks the video watched (and the watch page then starts it from the beginning).
"""
from __future__ import annotations

import datetime

from peewee import IntegrityError

from streamforge.store.db import ProcessingStatus, User, Video, Visibility, WatchHistory, db, utcnow

# near the end: within the last 5 % of the video, or its last 10 seconds (at most a tenth of a short one)
END_FRACTION = 0.05
END_SECONDS = 10.0


def watchable_by(user_id: str | None):
    """A query condition on Video: the videos this user (None: nobody signed in) may watch."""
    allowed = Video.visibility != Visibility.PRIVATE
    if user_id:
        allowed = allowed | (Video.user == user_id)
    return (Video.status != ProcessingStatus.ARCHIVED) & allowed


def near_end(position: float, duration: float | None) -> bool:
    """True when `position` is close enough to the end of a video of `duration` to count as watched."""
    if not duration or duration <= 0:
        return False
    left = max(duration * END_FRACTION, min(END_SECONDS, duration / 10))
    return position >= duration - left


def save_position(user: User, video: Video, position: float, duration: float | None) -> WatchHistory:
    """Record where `user` is in `video` (the row moves to the top of their history)."""
    duration = duration or video.original_duration or None
    watched = near_end(position, duration)
    fields = {"position": 0.0 if watched else position, "duration": duration, "watched": watched,
              "watched_at": utcnow()}
    with db.atomic():
        n = WatchHistory.update(**fields).where((WatchHistory.user == user.id)
                                                & (WatchHistory.video == video.id)).execute()
        if n == 0:
            try:
                with db.atomic():
                    return WatchHistory.create(user=user.id, video=video.id, **fields)
            except IntegrityError:  # a report from another tab landed first
                WatchHistory.update(**fields).where((WatchHistory.user == user.id)
                                                    & (WatchHistory.video == video.id)).execute()
    return WatchHistory.get((WatchHistory.user == user.id) & (WatchHistory.video == video.id))


def resume_position(user_id: str | None, video_id: str) -> tuple[float, datetime.datetime | None]:
    """Where the watch page should start this video for this viewer (0 when new or watched to the end), and
    when that was saved (None: never)."""
    if not user_id:
        return 0.0, None
    row = WatchHistory.get_or_none((WatchHistory.user == user_id) & (WatchHistory.video == video_id))
    if row is None:
        return 0.0, None
    return (0.0 if row.watched else float(row.position or 0.0)), row.watched_at


def list_history(user: User, limit: int = 100, unfinished: bool = False) -> list[WatchHistory]:
    """The user's history, newest first, of videos they may still watch (`unfinished`: not watched yet)."""
    q = (WatchHistory.select(WatchHistory, Video).join(Video)
         .where((WatchHistory.user == user.id) & watchable_by(user.id)))
    if unfinished:
        q = q.where((WatchHistory.watched == False) & (WatchHistory.position > 0))  # noqa: E712
    return list(q.order_by(WatchHistory.watched_at.desc(), WatchHistory.id.desc()).limit(limit))


def clear_history(user: User) -> int:
    """Forget everything the user watched; returns how many rows went."""
    return WatchHistory.delete().where(WatchHistory.user == user.id).execute()
