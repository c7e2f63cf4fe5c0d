"""View counting: a view once per player session, watch time summed, with caps against inflation.

The player makes a random session id per page load and reports the seconds it played since its
last report. The first report of a session counts the view. Caps: a client address starts at
most `[playback] views_per_address_hour` sessions an hour; a session sends at most `MAX_REPORTS` reports;
a session's watch time never runs ahead of the wall clock since it began (plus a first report's
allowance), so a scripted client cannot add hours in a second.
"""
from __future__ import annotations

import datetime
import hashlib

from peewee import IntegrityError

from streamforge.store.db import Video, ViewSession, utcnow, write_transaction

MAX_SESSIONS_PER_IP_HOUR = 60  # the default of [playback] views_per_address_hour
MAX_REPORTS = 2880  # 12 hours of reports every 15 seconds
FIRST_REPORT_ALLOWANCE = 60.0  # seconds a session may claim beyond its age (what played before the first report)
COUNTED, ADDED, LIMITED = "counted", "added", "limited"


def ip_hash(secret: str, address: str) -> str:
    """The stored form of a client address: keyed, so the table holds no addresses."""
    return hashlib.sha256(f"views:{secret}:{address}".encode()).hexdigest()[:32]


def _new_session(video_id: str, session: str, seconds: float, ip: str, now: datetime.datetime,
                 per_hour: int) -> str | None:
    hour_ago = now - datetime.timedelta(hours=1)
    recent = ViewSession.select().where((ViewSession.ip_hash == ip) & (ViewSession.created_at > hour_ago)).count()
    if recent >= per_hour:
        return LIMITED
    add = min(seconds, FIRST_REPORT_ALLOWANCE)
    try:
        with ViewSession._meta.database.atomic():  # a savepoint: a concurrent twin must not abort the rest
            ViewSession.create(video=video_id, session=session, ip_hash=ip, watched_seconds=add,
                               created_at=now, updated_at=now)
    except IntegrityError:
        return None  # the same session's other report got there first: add to it instead
    Video.update(views=Video.views + 1, watch_seconds=Video.watch_seconds + add).where(Video.id == video_id).execute()
    return COUNTED


def _add_to_session(row: ViewSession, seconds: float, now: datetime.datetime) -> str:
    if row.reports >= MAX_REPORTS:
        return LIMITED
    age = (now - row.created_at).total_seconds()
    add = max(0.0, min(seconds, age + FIRST_REPORT_ALLOWANCE - row.watched_seconds))
    ViewSession.update(watched_seconds=ViewSession.watched_seconds + add, reports=ViewSession.reports + 1,
                       updated_at=now).where(ViewSession.id == row.id).execute()
    if add:
        Video.update(watch_seconds=Video.watch_seconds + add).where(Video.id == row.video_id).execute()
    return ADDED


def record_view(video_id: str, session: str, seconds: float, ip: str, per_hour: int | None = None) -> str:
    """Apply one player report: COUNTED (a new session's view), ADDED (watch time) or LIMITED (capped);
    `per_hour`: the sessions one address may start an hour (default MAX_SESSIONS_PER_IP_HOUR)."""
    now = utcnow()
    with write_transaction():
        row = ViewSession.get_or_none((ViewSession.video == video_id) & (ViewSession.session == session))
        if row is None:
            outcome = _new_session(video_id, session, seconds, ip, now, per_hour or MAX_SESSIONS_PER_IP_HOUR)
            if outcome is not None:
                return outcome
            row = ViewSession.get((ViewSession.video == video_id) & (ViewSession.session == session))
        return _add_to_session(row, seconds, now)
