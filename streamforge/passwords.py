"""Passwords of local accounts: argon2id hashes and the strength rule, offline.

The rule: at least MIN_LENGTH characters, and not one zxcvbn rates guessable (score below
MIN_SCORE): zxcvbn carries the lists of breached and common passwords, names, words and keyboard
patterns, so the check needs no network. A refusal says why, in zxcvbn's words.
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from streamforge.errors import ValidationError

MIN_LENGTH = 10
MAX_LENGTH = 1024
MIN_SCORE = 3  # zxcvbn: "safely unguessable: moderate protection from offline slow-hash scenario"
# zxcvbn's matching grows with the length; past this many characters the tail adds only strength
_RATED_CHARS = 100

_hasher = PasswordHasher()  # argon2id with RFC 9106's low-memory parameters
_DUMMY = _hasher.hash("streamforge dummy password for timing")


def hash_password(password: str) -> str:
    """The argon2id hash to store for `password`."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches the stored hash; a missing hash costs the same time and is False."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when the stored hash was made with older parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def check_strength(password: str, user_inputs: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse (ValidationError with the reason) a password too short, too long, common or guessable."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise ValidationError(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"the password may be at most {MAX_LENGTH} characters long")
    from zxcvbn import zxcvbn
    inputs = [x for value in user_inputs for x in (value, *value.replace("@", " ").replace(".", " ").split()) if x]
    rating = zxcvbn(password[:_RATED_CHARS], user_inputs=[*inputs, "streamforge"])
    if rating["score"] >= MIN_SCORE:
        return
    feedback = rating.get("feedback") or {}
    matches = rating.get("sequence") or []
    if any(m.get("dictionary_name") == "passwords" for m in matches):
        why = "it is on the lists of breached and common passwords"
    elif any(m.get("dictionary_name") == "user_inputs" for m in matches):
        why = "it is made from your email address or name"
    else:
        why = "it follows a pattern that is quick to guess"
    warning = (feedback.get("warning") or "").rstrip(".")
    hint = " ".join(feedback.get("suggestions") or []) or "Use a few uncommon words together."
    raise ValidationError(f"that password is too easy to guess: {why}{f' ({warning})' if warning else ''}. {hint}")
