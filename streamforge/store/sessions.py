"""Browser sessions held on the server, and the one-use sign-in tickets.

The browser's cookie carries a random session id; the `sessions` table holds its SHA-256, the user,
the API token that opened it (for `/login?token=`), whether the person asked to stay signed in, and
when it expires. Deleting the row ends the session for good, whatever the cookie still says:
signing out, revoking that API token, disabling the user and a password change do that.
"""
from __future__ import annotations

import datetime
import secrets

from streamforge.errors import SignInRefused
from streamforge.store.db import SignInTicket, User, UserSession, utcnow, write_transaction
from streamforge.store.videos import hash_token

SESSION_PREFIX = "ses_"
TICKET_PREFIX = "sit_"
TICKET_MINUTES = 15
# a session without "stay signed in" ends when the browser closes; the server forgets it after this
BROWSER_SESSION_HOURS = 24
_SEEN_EVERY = 60  # seconds between updates of a session's last_seen_at


def open_session(user: User, *, persistent: bool, days: int, api_token: str | None = None) -> str:
    """A new session for `user`; returns the id the cookie carries (stored only as its hash)."""
    forget_expired()
    plain = SESSION_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = datetime.timedelta(days=days) if persistent else datetime.timedelta(hours=BROWSER_SESSION_HOURS)
    UserSession.create(id=hash_token(plain), user=user, api_token=api_token, persistent=persistent,
                       created_at=now, expires_at=now + lifetime, last_seen_at=now)
    return plain


def session_user(plain: str | None) -> User | None:
    """The user of a live session (not ended, not expired), or None; a browser session's end is moved
    on while it is used."""
    if not plain or not isinstance(plain, str) or len(plain) > 100:
        return None
    row = (UserSession.select(UserSession, User).join(User)
           .where(UserSession.id == hash_token(plain)).first())
    now = utcnow()
    if row is None or row.expires_at <= now:
        return None
    if (now - row.last_seen_at).total_seconds() > _SEEN_EVERY:
        fields: dict = {"last_seen_at": now}
        if not row.persistent:
            fields["expires_at"] = now + datetime.timedelta(hours=BROWSER_SESSION_HOURS)
        UserSession.update(**fields).where(UserSession.id == row.id).execute()
    return row.user


def end_session(plain: str | None) -> None:
    """End one session for good."""
    if plain:
        UserSession.delete().where(UserSession.id == hash_token(plain)).execute()


def end_sessions_of(user: User, keep: str | None = None) -> int:
    """End every session of `user` (but `keep`'s); returns how many ended."""
    query = UserSession.delete().where(UserSession.user == user)
    if keep:
        query = query.where(UserSession.id != hash_token(keep))
    return query.execute()


def end_sessions_of_token(token_id: str) -> int:
    """End every browser session that `/login?token=` opened with this API token."""
    return UserSession.delete().where(UserSession.api_token == token_id).execute()


def forget_expired() -> int:
    """Delete sessions whose time is over, and tickets a day after theirs (until then a late click is
    told the link expired, not that it is unknown)."""
    now = utcnow()
    n = UserSession.delete().where(UserSession.expires_at <= now).execute()
    return n + SignInTicket.delete().where(SignInTicket.expires_at <= now - datetime.timedelta(days=1)).execute()


# ---------- one-use sign-in tickets ----------

def is_ticket(plain: str) -> bool:
    """True when `plain` has the form of a sign-in ticket (not an API token)."""
    return isinstance(plain, str) and plain.startswith(TICKET_PREFIX)


def create_ticket(user: User, minutes: int = TICKET_MINUTES) -> str:
    """A one-use sign-in ticket for `user`, valid `minutes`; the plain ticket is returned once."""
    plain = TICKET_PREFIX + secrets.token_urlsafe(24)
    SignInTicket.create(token_hash=hash_token(plain), user=user,
                        expires_at=utcnow() + datetime.timedelta(minutes=minutes))
    return plain


def ticket_user(plain: str) -> User:
    """The user of a ticket that can still be used (without using it); SignInRefused saying why not."""
    row = (SignInTicket.select(SignInTicket, User).join(User)
           .where(SignInTicket.token_hash == hash_token(plain or "")).first()) if len(plain or "") < 200 else None
    if row is None:
        raise SignInRefused("That sign-in link is not valid.")
    if row.used_at is not None:
        raise SignInRefused("That sign-in link was already used; each one works once. Ask for a new one.")
    if row.expires_at <= utcnow():
        raise SignInRefused(f"That sign-in link has expired (they last {TICKET_MINUTES} minutes); ask for a new one.")
    return row.user


def redeem_ticket(plain: str) -> User:
    """Use a ticket: its user, once; SignInRefused when it is unknown, used or expired."""
    with write_transaction():
        user = ticket_user(plain)
        n = (SignInTicket.update(used_at=utcnow())
             .where((SignInTicket.token_hash == hash_token(plain)) & SignInTicket.used_at.is_null()).execute())
        if n != 1:
            raise SignInRefused("That sign-in link was already used; each one works once. Ask for a new one.")
    return user
