"""Local accounts: password sign-in (throttled), the invite page that asks for a password, and /account.

Every refusal of a password sign-in says the same words whether the email exists or not, and costs
the same time (a missing user's check runs against a dummy hash).
"""
from __future__ import annotations

from flask import Blueprint, abort, render_template, request, session
from flask_login import current_user, login_required

from streamforge import passwords
from streamforge.errors import SignInRefused, ValidationError
from streamforge.store import throttle, users
from streamforge.web.auth import login_page, signed_in
from streamforge.web.common import cfg, csrf_ok

bp = Blueprint("account", __name__)

WRONG = "Wrong email or password."
# the "stay signed in" checkbox; other spellings clients use for it are honoured too
STAY_FIELDS = ("remember", "remember_me", "stay_signed_in")


def _stay() -> bool:
    return any(request.form.get(name) not in (None, "", "0", "false", "off") for name in STAY_FIELDS)


def _too_many(seconds: int, render):
    minutes = max(1, round(seconds / 60))
    resp, status = render(f"Too many failed sign-ins; try again in about {minutes} minute{'s' * (minutes != 1)}.")
    return resp, 429, {"Retry-After": str(seconds)}


@bp.route("/login", methods=["POST"])
def password_login():
    """`email` + `password` (+ `remember`, `next`) with the CSRF token of GET /login."""
    if not cfg().auth.passwords:
        abort(404)
    if not csrf_ok():
        return login_page("That form had expired; please sign in again.", 400)
    email = (request.form.get("email") or "").strip()
    password = request.form.get("password") or ""
    address = request.remote_addr or ""
    wait = throttle.retry_after(email, address)
    if wait:  # the same answer (and page) whichever email was typed, existing or not
        return _too_many(wait, lambda m: login_page(m, 429))
    user = users.authenticate(email, password) if email and password else None
    if user is None:
        if not (email and password):
            passwords.verify_password(None, password)  # the same time for every refusal
        throttle.record_failure(email, address)
        return login_page(WRONG, 401)
    if user.disabled:
        return login_page(f"The account {user.email} is disabled on this server; ask its admin.", 403, email=email)
    throttle.forget_email(email)
    return signed_in(user, request.form.get("next"), persistent=_stay())


@bp.route("/login/invite", methods=["POST"])
def accept_invite():
    """The invite page's form: the new person's password; their account is made and signed in."""
    invite = request.form.get("invite") or ""
    if not cfg().auth.passwords:
        abort(404)
    if not csrf_ok():
        abort(400)

    def again(message: str, status: int):
        row = users.check_invite(invite)
        return render_template("invite.html", invite=invite, email=row.email, error=message), status
    try:  # an account made for the email since the invite page was shown: 409, as GET /login?invite= says
        email = users.check_invite(invite).email
        if users.has_account(email):
            return login_page(f"The account {email} exists already; sign in to it instead.", 409)
        password = request.form.get("password") or ""
        if password != request.form.get("password2", password):
            return again("The two passwords differ; type the same one twice.", 400)
        user = users.accept_invite_directly(invite, password)
    except ValidationError as e:
        try:
            return again(f"Choose another password: {e}", 400)
        except SignInRefused as refused:
            return login_page(str(refused), 403)
    except SignInRefused as e:
        return login_page(str(e), 403)
    return signed_in(user, None, persistent=_stay())


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """The signed-in person's account: change (or set a first) password, the old one required."""
    if request.method == "GET":
        return _page(None, None, 200)
    if not cfg().auth.passwords:
        abort(404)
    if not csrf_ok():
        abort(400)
    if current_user.via_token:  # an API token is not a person at a browser: it sets no password
        return _page("Change your password from a signed-in browser, not with an API token.", None, 403)
    row = users.find_user(current_user.id)
    address = request.remote_addr or ""
    wait = throttle.retry_after(row.email, None)  # guesses at this account's old password, from anywhere
    if wait:
        return _too_many(wait, lambda m: _page(m, None, 429))
    if row.password_hash and not passwords.verify_password(row.password_hash, request.form.get("old") or ""):
        throttle.record_failure(row.email, address)
        return _page("Your current password is not that one.", None, 403)
    new = request.form.get("password") or ""
    if new != request.form.get("password2", new):
        return _page("The two new passwords differ; type the same one twice.", None, 400)
    try:
        users.set_password(row, new, keep_session=session.get("sid"))
    except ValidationError as e:
        return _page(f"Choose another password: {e}", None, 400)
    return _page(None, "Password changed. Every other session of yours was signed out.", 200)


def _page(error: str | None, done: str | None, status: int):
    row = users.find_user(current_user.id)
    return render_template("account.html", error=error, done=done, has_password=bool(row.password_hash),
                           passwords=cfg().auth.passwords, min_length=passwords.MIN_LENGTH), status


def init_app(app) -> None:
    """Register the local accounts' routes."""
    app.register_blueprint(bp)
