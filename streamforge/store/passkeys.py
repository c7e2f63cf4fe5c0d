"""Passkeys (WebAuthn credentials) of users: registered on /account, a second way to sign in."""
from __future__ import annotations

from streamforge.errors import Conflict, NotFound
from streamforge.store.db import Passkey, User, utcnow


def add(user: User, credential_id: str, public_key: str, sign_count: int, name: str) -> Passkey:
    """Keep a credential the user's authenticator made; Conflict when it is registered already."""
    if Passkey.select().where(Passkey.credential_id == credential_id).exists():
        raise Conflict("that passkey is registered already")
    return Passkey.create(user=user, credential_id=credential_id, public_key=public_key,
                          sign_count=sign_count, name=(name or "Passkey")[:100])


def of_user(user: User) -> list[Passkey]:
    """The user's passkeys, oldest first."""
    return list(Passkey.select().where(Passkey.user == user).order_by(Passkey.created_at, Passkey.id))


def find(credential_id: str) -> Passkey | None:
    """The passkey with this credential id (its user joined), or None."""
    if not credential_id or len(credential_id) > 1400:
        return None
    return Passkey.select(Passkey, User).join(User).where(Passkey.credential_id == credential_id).first()


def used(passkey: Passkey, sign_count: int) -> None:
    """Note a sign-in with the passkey and the authenticator's new signature counter."""
    Passkey.update(sign_count=sign_count, last_used_at=utcnow()).where(Passkey.id == passkey.id).execute()


def remove(user: User, passkey_id: str) -> None:
    """Forget one of the user's passkeys; NotFound when it is not theirs."""
    if not Passkey.delete().where((Passkey.id == passkey_id) & (Passkey.user == user)).execute():
        raise NotFound("no such passkey")
