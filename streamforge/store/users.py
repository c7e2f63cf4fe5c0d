"""Accounts: roles, the allow-list, identities bound to (issuer, sub), quotas and usage, invites.

A user is found by their identity (issuer, `sub`) once they have signed in through OIDC; an email
alone never hands over an account that is bound to another identity. Quotas count every video
that is not deleted, uploads in flight by their declared size, and are checked under a lock on the
user's row, so parallel creates cannot overshoot.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import secrets
from collections.abc import Iterator

from peewee import IntegrityError, SqliteDatabase, fn

from streamforge import passwords
from streamforge.errors import Conflict, NotFound, QuotaExceeded, SignInRefused, ValidationError
from streamforge.store import sessions
from streamforge.store.db import Invite, ProcessingStatus, User, Video, db, utcnow, write_transaction
from streamforge.store.videos import get_or_create_user, hash_token

log = logging.getLogger("streamforge.accounts")

ADMIN, UPLOADER, VIEWER = "admin", "uploader", "viewer"
ROLES = (ADMIN, UPLOADER, VIEWER)
CAN_UPLOAD = (ADMIN, UPLOADER)
INVITE_DAYS = 7
INVITE_PREFIX = "inv_"


# ---------- roles and the allow-list ----------

def _norm(email: str) -> str:
    return (email or "").strip().lower()


def is_config_admin(email: str, admins: list) -> bool:
    """True when `[auth] admins` names this email."""
    return _norm(email) in {_norm(a) for a in admins}


def effective_role(user: User, admins: list) -> str:
    """The user's role: admin when `[auth] admins` names them, else their stored role."""
    return ADMIN if is_config_admin(user.email, admins) else (user.role or UPLOADER)


def email_allowed(email: str, allow: list) -> bool:
    """True when `[auth] allow` lists the email exactly or as `*@domain`."""
    email = _norm(email)
    domain = email.rpartition("@")[2]
    for pattern in (_norm(p) for p in allow):
        if pattern == email or (pattern.startswith("*@") and pattern[2:] == domain):
            return True
    return False


# ---------- users ----------

def add_user(email: str, role: str = UPLOADER, name: str | None = None) -> User:
    """Create a user with this role (or give an existing one the role)."""
    email = _norm(email)
    if "@" not in email or len(email) > 320:
        raise ValidationError(f"not an email address: {email!r}")
    check_role(role)
    user = get_or_create_user(email, name)
    if user.role != role:
        User.update(role=role, updated_at=utcnow()).where(User.id == user.id).execute()
        user.role = role
    return user


def check_role(role) -> str:
    """`role` when it is one of admin, uploader, viewer; else a ValidationError."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}")
    return role


def find_user(email_or_id: str) -> User:
    """A user by id or email; NotFound otherwise."""
    user = User.get_or_none((User.id == email_or_id) | (User.email == _norm(email_or_id)))
    if user is None:
        raise NotFound(f"no such user: {email_or_id}")
    return user


def has_account(email: str) -> bool:
    """True when a user with this email exists."""
    return User.select().where(User.email == _norm(email)).exists()


def list_users() -> list[User]:
    """Every user, oldest first."""
    return list(User.select().order_by(User.created_at, User.id))


def update_user(user: User, *, role: str | None = None, disabled: bool | None = None,
                quota: dict | None = None) -> User:
    """Change a user's role, disabled flag or own quota (a quota value of None: the config default)."""
    fields: dict = {}
    if role is not None:
        fields["role"] = check_role(role)
    if disabled is not None:
        fields["disabled"] = bool(disabled)
    for key, column in (("max_bytes", "max_bytes"), ("max_videos", "max_videos")):
        if quota and key in quota:
            value = quota[key]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValidationError(f"quota.{key} must be an integer >= 0 (0 = unlimited) or null (the default)")
            fields[column] = value
    if fields:
        fields["updated_at"] = utcnow()
        User.update(**fields).where(User.id == user.id).execute()
    if disabled:
        sessions.end_sessions_of(user)  # disabling ends every session for good, not only while disabled
    return User.get_by_id(user.id)


# ---------- passwords ----------

def set_password(user: User, password: str, keep_session: str | None = None) -> User:
    """Give `user` this password (refused with the reason when weak) and end their other sessions."""
    passwords.check_strength(password, [user.email, user.name or ""])
    User.update(password_hash=passwords.hash_password(password), updated_at=utcnow()).where(
        User.id == user.id).execute()
    sessions.end_sessions_of(user, keep=keep_session)
    return User.get_by_id(user.id)


def authenticate(email: str, password: str) -> User | None:
    """The user whose email and password these are, or None; as slow for an unknown email as for a known one."""
    user = User.get_or_none(User.email == _norm(email)) if len(email or "") <= 320 else None
    stored = user.password_hash if user is not None else None
    if not passwords.verify_password(stored, password or ""):
        return None
    if passwords.needs_rehash(stored):
        User.update(password_hash=passwords.hash_password(password)).where(User.id == user.id).execute()
    return user


def active_user(user: User | None) -> User | None:
    """The user unless disabled; notes when they were last seen (at most once a minute)."""
    if user is None or user.disabled:
        return None
    now = utcnow()
    if user.last_seen_at is None or (now - user.last_seen_at).total_seconds() > 60:
        User.update(last_seen_at=now).where(User.id == user.id).execute()
        user.last_seen_at = now
    return user


# ---------- quotas and usage ----------

def _counted():
    return Video.status != ProcessingStatus.ARCHIVED


def usage(user: User) -> dict:
    """What the user holds: bytes of originals (declared size while uploading) and videos, not deleted."""
    row = (Video.select(fn.COALESCE(fn.SUM(Video.original_file_size), 0), fn.COUNT(Video.id))
           .where((Video.user == user) & _counted()).tuples().first())
    return {"bytes": int(row[0] or 0), "videos": int(row[1] or 0)}


def usage_by_user() -> dict[str, dict]:
    """usage() of every user that holds something, in one query."""
    rows = (Video.select(Video.user, fn.COALESCE(fn.SUM(Video.original_file_size), 0), fn.COUNT(Video.id))
            .where(_counted()).group_by(Video.user).tuples())
    return {uid: {"bytes": int(b or 0), "videos": int(n or 0)} for uid, b, n in rows}


def quota(user: User, defaults) -> dict:
    """The user's limits (0 = unlimited): their own when an admin set one, else `[quota]`'s."""
    return {"max_bytes": defaults.max_bytes_per_user if user.max_bytes is None else user.max_bytes,
            "max_videos": defaults.max_videos_per_user if user.max_videos is None else user.max_videos}


def _lock(user: User) -> User:
    """Re-read the user's row holding its lock until the transaction ends (SQLite: the write lock)."""
    q = User.select().where(User.id == user.id)
    if not isinstance(db.obj, SqliteDatabase):  # SQLite: the IMMEDIATE transaction holds the write lock
        q = q.for_update()
    return q.get()


@contextlib.contextmanager
def quota_reservation(user: User, size: int, defaults) -> Iterator[None]:
    """A transaction in which `size` more bytes and one more video fit the user's quota: create the
    video inside it. Parallel creates of one user wait for each other (row lock), so none overshoots."""
    with write_transaction():
        row = _lock(user)
        limits, used = quota(row, defaults), usage(row)
        if limits["max_videos"] and used["videos"] + 1 > limits["max_videos"]:
            raise QuotaExceeded(f"you have {used['videos']} videos, your quota is {limits['max_videos']}; "
                                f"delete some or ask an admin for more")
        if limits["max_bytes"] and used["bytes"] + size > limits["max_bytes"]:
            raise QuotaExceeded(f"this upload of {size} bytes would take you to {used['bytes'] + size} bytes, "
                                f"over your quota of {limits['max_bytes']} bytes; delete some videos or ask "
                                f"an admin for more")
        yield


# ---------- OIDC sign-in ----------

def _refuse(message: str, *, why: str, **details) -> SignInRefused:
    log.warning("sign-in refused (%s): %s", why, " ".join(f"{k}={v!r}" for k, v in details.items()))
    return SignInRefused(message)


def oidc_sign_in(claims: dict, issuer: str, auth, invite_token: str | None = None) -> User:
    """The user an ID token's claims sign in as, creating or binding them; SignInRefused otherwise.

    `auth` is the `[auth]` config (allow, admins, require_verified_email, default_role)."""
    email, sub = _norm(claims.get("email") or ""), str(claims.get("sub") or "")
    if not email or not sub:
        raise _refuse("The identity provider did not share an email address and an account id.",
                      why="no email or sub", email=email, sub=sub)
    if auth.require_verified_email and claims.get("email_verified") is not True:
        raise _refuse(f"Your provider has not verified the address {email}; verify it there, then sign in "
                      f"again.", why="unverified email", email=email, issuer=issuer)
    with write_transaction():
        user = User.get_or_none((User.oidc_issuer == issuer) & (User.oidc_sub == sub))
        if user is None:
            user = _bind_or_create(email, sub, issuer, auth, invite_token)
        if user.disabled:
            raise _refuse(f"The account {user.email} is disabled on this server; ask its admin.",
                          why="disabled", email=user.email)
        user.name = claims.get("name") or user.name
        user.picture = claims.get("picture") or user.picture
        user.updated_at = user.last_seen_at = utcnow()
        user.save()
    return user


def _bind_or_create(email: str, sub: str, issuer: str, auth, invite_token: str | None) -> User:
    """The user with this email bound to (issuer, sub) now, or a new one if the server accepts them."""
    user = User.get_or_none(User.email == email)
    if user is not None:
        if user.oidc_issuer is not None or (user.oidc_sub and user.oidc_sub != sub):
            # the email is already someone's identity: another account claiming it is not them
            raise _refuse(f"The account {email} on this server belongs to another sign-in; ask its admin.",
                          why="other identity", email=email, issuer=issuer, sub=sub,
                          bound_issuer=user.oidc_issuer, bound_sub=user.oidc_sub)
        User.update(oidc_issuer=issuer, oidc_sub=sub).where(User.id == user.id).execute()
        user.oidc_issuer, user.oidc_sub = issuer, sub
        log.info("bound %s to its identity at %s", email, issuer)
        return user
    invite = _usable_invite(invite_token, email) if invite_token else None
    if invite is None and not (email_allowed(email, auth.allow) or is_config_admin(email, auth.admins)):
        raise _refuse(f"This server does not accept {email}; ask its admin for an invite.",
                      why="not allowed", email=email, issuer=issuer)
    role = invite.role if invite else auth.default_role
    try:
        with db.atomic():
            user = User.create(email=email, role=role, oidc_issuer=issuer, oidc_sub=sub)
    except IntegrityError:  # the same identity signing in twice at once
        raise _refuse("That sign-in is already in progress in another window; try again.",
                      why="race", email=email) from None
    if invite is not None:
        _consume(invite, user)
    return user


# ---------- invites ----------

def create_invite(email: str, role: str = UPLOADER, created_by: User | None = None,
                  days: int = INVITE_DAYS) -> tuple[Invite, str]:
    """A one-use invite for `email` with `role`, valid `days`; the plain token is returned once."""
    email = _norm(email)
    if "@" not in email or len(email) > 320:
        raise ValidationError("email must be an email address")
    check_role(role)
    if has_account(email):
        # an invite signs its holder in as its email's user: for an existing user that would hand
        # their account to whoever holds the link (the admin who made it included)
        raise Conflict(f"{email} already has an account here; they sign in as themselves")
    plain = INVITE_PREFIX + secrets.token_urlsafe(24)
    row = Invite.create(token_hash=hash_token(plain), email=email, role=role,
                        created_by=created_by.id if created_by else None,
                        expires_at=utcnow() + datetime.timedelta(days=days))
    return row, plain


def check_invite(plain: str) -> Invite:
    """The invite behind a link if it can still be used; SignInRefused saying why not."""
    row = Invite.get_or_none(Invite.token_hash == hash_token(plain or "")) if plain and len(plain) < 200 else None
    if row is None:
        raise SignInRefused("That invite link is not valid; ask the admin for a new one.")
    if row.used_at is not None:
        raise SignInRefused("That invite link was already used; sign in, or ask the admin for a new one.")
    if row.expires_at < utcnow():
        raise SignInRefused("That invite link has expired; ask the admin for a new one.")
    return row


def _usable_invite(plain: str, email: str) -> Invite:
    invite = check_invite(plain)
    if invite.email != email:
        raise _refuse(f"That invite is for {invite.email}, but you signed in as {email}.",
                      why="invite for another email", email=email, invite_email=invite.email)
    return invite


def _consume(invite: Invite, user: User) -> None:
    """Mark the invite used by `user`, once; a second use at the same moment is refused."""
    n = (Invite.update(used_at=utcnow(), used_by=user.id)
         .where((Invite.id == invite.id) & Invite.used_at.is_null()).execute())
    if n != 1:
        raise SignInRefused("That invite link was already used; sign in, or ask the admin for a new one.")


def accept_invite_directly(plain: str, password: str | None = None) -> User:
    """Without OIDC, the invite makes its person's account (with the password they chose, when
    passwords are on) and the invite is used; never an account that exists already."""
    with write_transaction():
        invite = check_invite(plain)
        if has_account(invite.email):
            raise SignInRefused(f"The account {invite.email} exists already; sign in to it instead.")
        hashed = None
        if password is not None:
            passwords.check_strength(password, [invite.email])
            hashed = passwords.hash_password(password)
        try:
            with db.atomic():
                user = User.create(email=invite.email, role=invite.role, password_hash=hashed)
        except IntegrityError:  # the same invite sent twice at once (PostgreSQL: both saw no account)
            raise SignInRefused("That invite link was already used; sign in, or ask the admin for a new one.") from None
        _consume(invite, user)
    return user


def list_invites() -> list[Invite]:
    """Invites not yet used or expired, newest first."""
    return list(Invite.select().where(Invite.used_at.is_null() & (Invite.expires_at > utcnow()))
                .order_by(Invite.created_at.desc()))
