"""Passkeys (WebAuthn, through py_webauthn): register one on /account, sign in with it on /login.

The relying party is the app's own host (`[server] base_url`'s, else the trusted request host) and
its origin; every ceremony's challenge lives in the session and is used once. Passkeys are
discoverable credentials, so signing in needs no email: the authenticator offers the user's passkeys.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, request, session
from flask_login import current_user, login_required
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from streamforge.store import passkeys, users
from streamforge.web.auth import signed_in
from streamforge.web.common import app_url, csrf_ok, error, handle_errors

bp = Blueprint("passkeys", __name__)
RP_NAME = "StreamForge"


def _relying_party() -> tuple[str, str]:
    """(rp id, origin): the host and origin people reach the app at."""
    origin = app_url()
    return urlsplit(origin).hostname or "localhost", origin


def _passkey_json(p) -> dict:
    return {"id": p.id, "name": p.name, "created_at": p.created_at.isoformat(timespec="seconds") + "Z",
            "last_used_at": p.last_used_at.isoformat(timespec="seconds") + "Z" if p.last_used_at else None}


def _json_object() -> dict:
    """The request's JSON body when it is an object, else {} (a number or a list was a 500)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _browser_only():
    if current_user.via_token:  # a token is not a person at a browser: it registers no credential
        abort(403, description="passkeys are registered from a signed-in browser, not with an API token")


@bp.route("/api/me/passkeys", methods=["GET"])
@login_required
def list_passkeys():
    """The signed-in user's passkeys."""
    return {"items": [_passkey_json(p) for p in passkeys.of_user(users.find_user(current_user.id))]}


@bp.route("/api/me/passkeys/options", methods=["POST"])
@login_required
def registration_options():
    """The options for navigator.credentials.create(): a fresh challenge, this user, their keys excluded."""
    _browser_only()
    rp_id, _ = _relying_party()
    user = users.find_user(current_user.id)
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_id=user.id.encode(), user_name=user.email,
        user_display_name=user.name or user.email,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                             for p in passkeys.of_user(user)],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.PREFERRED))
    session["passkey_register"] = bytes_to_base64url(options.challenge)
    return options_to_json(options), 200, {"Content-Type": "application/json"}


@bp.route("/api/me/passkeys", methods=["POST"])
@login_required
def register():
    """`{"credential": <the browser's PublicKeyCredential as JSON>, "name"?}`: keep the new passkey."""
    _browser_only()
    body = _json_object()
    challenge = session.pop("passkey_register", None)
    if not challenge or not isinstance(body.get("credential"), dict):
        return error(400, "invalid", "ask for options first, then send the credential the browser made")
    rp_id, origin = _relying_party()
    try:
        made = verify_registration_response(credential=body["credential"], expected_challenge=base64url_to_bytes(
            challenge), expected_rp_id=rp_id, expected_origin=origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as e:  # a malformed credential too
        return error(400, "invalid", f"the passkey could not be verified: {e}")
    row = passkeys.add(users.find_user(current_user.id), bytes_to_base64url(made.credential_id),
                       bytes_to_base64url(made.credential_public_key), made.sign_count, str(body.get("name") or ""))
    return _passkey_json(row), 201


@bp.route("/api/me/passkeys/<passkey_id>", methods=["DELETE"])
@login_required
def delete(passkey_id: str):
    """Forget one of the user's passkeys."""
    passkeys.remove(users.find_user(current_user.id), passkey_id)
    return "", 204


@bp.route("/login/passkey/options", methods=["POST"])
def authentication_options():
    """The options for navigator.credentials.get() (with the CSRF token of GET /login)."""
    if not csrf_ok():
        return error(400, "csrf", "send the X-CSRF-Token of the login page")
    rp_id, _ = _relying_party()
    options = generate_authentication_options(rp_id=rp_id, user_verification=UserVerificationRequirement.PREFERRED)
    session["passkey_sign_in"] = bytes_to_base64url(options.challenge)
    return options_to_json(options), 200, {"Content-Type": "application/json"}


@bp.route("/login/passkey", methods=["POST"])
def sign_in():
    """`{"credential", "remember"?, "next"?}`: sign in as the passkey's user; answers `{"redirect"}`."""
    if not csrf_ok():
        return error(400, "csrf", "send the X-CSRF-Token of the login page")
    body = _json_object()
    challenge = session.pop("passkey_sign_in", None)
    credential = body.get("credential")
    if not challenge or not isinstance(credential, dict):
        return error(400, "invalid", "ask for options first, then send the browser's assertion")
    key = passkeys.find(str(credential.get("id") or ""))
    if key is None:
        return error(401, "unknown_passkey", "this passkey is not registered here (it may have been removed)")
    rp_id, origin = _relying_party()
    try:
        checked = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=base64url_to_bytes(key.public_key),
            credential_current_sign_count=key.sign_count)
    except (WebAuthnException, ValueError, KeyError, TypeError) as e:  # a malformed credential too
        return error(401, "invalid_passkey", f"the passkey's answer could not be verified: {e}")
    if key.user.disabled:
        return error(403, "forbidden", f"The account {key.user.email} is disabled on this server; ask its admin.")
    passkeys.used(key, checked.new_sign_count)
    done = signed_in(key.user, body.get("next"), persistent=bool(body.get("remember")))
    return {"redirect": done.location}


def init_app(app) -> None:
    """Register the passkey routes."""
    app.register_blueprint(bp)


handle_errors(bp)
