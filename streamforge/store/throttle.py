"""Throttling of password sign-in: five failures for one email, or from one address, within fifteen
minutes close that door for the rest of the window.

Failures are counted for every email typed, existing or not, so the answer never tells which exist.
They live in the database, so every web process sees the same counts.
"""
from __future__ import annotations

import datetime
import math

from streamforge.store.db import SignInFailure, utcnow

LIMIT = 5
WINDOW = datetime.timedelta(minutes=15)


def _norm(email: str) -> str:
    return (email or "").strip().lower()[:320]


def _wait(condition, now: datetime.datetime) -> int:
    recent = list(SignInFailure.select(SignInFailure.created_at)
                  .where(condition & (SignInFailure.created_at > now - WINDOW))
                  .order_by(SignInFailure.created_at.desc()).limit(LIMIT))
    if len(recent) < LIMIT:
        return 0
    # open again once the oldest of the last LIMIT failures leaves the window
    return max(1, math.ceil((recent[-1].created_at + WINDOW - now).total_seconds()))


def retry_after(email: str, address: str | None) -> int:
    """Seconds until this email (and this address, when given) may try again; 0 when they may now."""
    now = utcnow()
    by_address = _wait(SignInFailure.address == address[:64], now) if address is not None else 0
    return max(_wait(SignInFailure.email == _norm(email), now), by_address)


def record_failure(email: str, address: str) -> None:
    """Count one failed sign-in for the email and the address (and forget failures past the window)."""
    now = utcnow()
    SignInFailure.delete().where(SignInFailure.created_at <= now - WINDOW).execute()
    SignInFailure.create(email=_norm(email), address=address[:64], created_at=now)


def forget_email(email: str) -> None:
    """A successful sign-in: the email's earlier failures no longer count (the address's still do)."""
    SignInFailure.update(email="").where(SignInFailure.email == _norm(email)).execute()
