"""StreamForge's short exception hierarchy."""


class StreamForgeError(Exception):
    """Base of every error StreamForge raises on purpose; its message is meant for people."""

    code = "error"


class ConfigError(StreamForgeError):
    """The configuration is invalid: an unknown key, a wrong type or a missing secret."""

    code = "config"


class StorageError(StreamForgeError):
    """The object store refused or failed an operation (the message names the operation and key)."""

    code = "storage"


class MediaError(StreamForgeError):
    """The input is not media we accept: broken, hostile or beyond the configured limits.

    Never retried: the same bytes fail the same way."""

    code = "media"


class NotFound(StreamForgeError):
    """A resource does not exist or belongs to someone else."""

    code = "not_found"


class ValidationError(StreamForgeError):
    """A request's body or parameters are invalid."""

    code = "invalid"


class Conflict(StreamForgeError):
    """The request conflicts with the resource's current state."""

    code = "conflict"


class Forbidden(StreamForgeError):
    """The user is known but may not do this (their role, or a disabled account)."""

    code = "forbidden"


class QuotaExceeded(Forbidden):
    """The upload would take the user over their quota of bytes or videos."""

    code = "quota_exceeded"


class SignInRefused(Forbidden):
    """An OIDC sign-in or invite that this server does not accept; the message says why, in plain words."""

    code = "sign_in_refused"
