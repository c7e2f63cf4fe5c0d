"""Login: server-side sessions under flask-login, OIDC through authlib, API tokens, and sign-in links.

The cookie (Flask's signed session) carries `sid`, the id of a row of the `sessions` table: a session
lives only while that row does (store/sessions.py), so signing out, revoking the API token that opened
it, disabling the user or changing the password end it for good.
"""
from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, login_required, login_user, logout_user

from streamforge.errors import SignInRefused
from streamforge.store import sessions, users, videos
from streamforge.store.db import User
from streamforge.web.common import bearer_token, cfg, csrf_ok, csrf_token, error, handle_errors

bp = Blueprint("auth", __name__)
login_manager = LoginManager()


class SessionUser:
    """flask-login's view of a User row."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, row: User, via_token: bool = False):
        self.row = row
        self.via_token = via_token

    def get_id(self) -> str:
        return self.row.id

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def email(self) -> str:
        return self.row.email

    @property
    def name(self) -> str:
        return self.row.name or self.row.email

    @property
    def role(self) -> str:
        """admin, uploader or viewer ([auth] admins make an admin whatever the stored role)."""
        return users.effective_role(self.row, cfg().auth.admins)

    @property
    def is_admin(self) -> bool:
        return self.role == users.ADMIN


@login_manager.user_loader
def _load_user(user_id: str):
    if bearer_token() is not None:
        # a request that names a token is authenticated by that token alone, never by the cookie
        # beside it: so waiving CSRF for bearer calls cannot waive it for a cookie session
        return None
    row = sessions.session_user(session.get("sid"))  # an ended or expired session loads nobody
    if row is None or row.id != user_id:
        return None
    row = users.active_user(row)  # a disabled user's session stops here
    return SessionUser(row) if row else None


@login_manager.request_loader
def _load_from_bearer(req):
    token = bearer_token()
    if not token:
        return None
    row = users.active_user(videos.user_for_token(token))
    return SessionUser(row, via_token=True) if row else None


@login_manager.unauthorized_handler
def _unauthorized():
    if request.path.startswith("/api/"):
        return error(401, "unauthorized", "sign in or send Authorization: Bearer <token>")
    return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))


def _oauth(app):
    a = cfg().auth
    if not a.oidc_client_id or not (a.oidc_issuer or a.oidc_metadata_url):
        return None
    from authlib.integrations.flask_client import OAuth
    oauth = OAuth(app)
    metadata = a.oidc_metadata_url or a.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
    oauth.register("oidc", server_metadata_url=metadata, client_id=a.oidc_client_id,
                   client_secret=a.oidc_client_secret or None, client_kwargs={"scope": a.oidc_scopes})
    return oauth


def _safe_next(target: str | None) -> str:
    """A same-site path to go to after signing in; anything else goes to the library."""
    if (target and target.startswith("/") and "\\" not in target
            and not any(ord(ch) < 33 or ord(ch) == 127 for ch in target)
            and not target.startswith("//") and not urlsplit(target).netloc):
        return target
    return url_for("pages.library")


def login_page(error: str | None = None, status: int = 200, **extra):
    """The login page: the password form when passwords are on, the provider's button when OIDC is."""
    return render_template("login.html", error=error, oidc=cfg().auth.oidc_name if _oidc() else None,
                           passwords=cfg().auth.passwords, next=request.values.get("next") or "",
                           email=extra.pop("email", ""), **extra), status


def _refused(message: str, status: int = 403):
    """The login page with the reason a sign-in was refused; the refusal leaves no session behind."""
    sessions.end_session(session.get("sid"))
    session.clear()
    logout_user()
    return login_page(message, status)


def _oidc():
    from flask import current_app
    return current_app.extensions.get("streamforge.oauth")


def signed_in(row: User, nxt: str | None, *, persistent: bool = False, api_token: str | None = None):
    """Start a new server-side session for `row` (ending this browser's previous one) and go on to `nxt`.

    `persistent` ("stay signed in"): a cookie that lasts `[auth] session_days`; else a browser-session
    cookie. `api_token`: the id of the API token that opened it (revoking the token ends it)."""
    sessions.end_session(session.get("sid"))
    session.clear()
    session["sid"] = sessions.open_session(row, persistent=persistent, days=cfg().auth.session_days,
                                           api_token=api_token)
    session.permanent = persistent
    login_user(SessionUser(row), remember=False)
    csrf_token()
    return redirect(_safe_next(nxt))


def _start_invite(invite: str):
    """`/login?invite=`: through the provider when OIDC is on (the email must be the invite's), else at once."""
    try:
        row = users.check_invite(invite)
        if _oidc() is None:
            if users.has_account(row.email):
                return _refused(f"The account {row.email} exists already; sign in to it instead.", 409)
            if cfg().auth.passwords:  # the person chooses their password first (web/account.py)
                return render_template("invite.html", invite=invite, email=row.email, error=None)
            return signed_in(users.accept_invite_directly(invite), None)
    except SignInRefused as e:
        return _refused(str(e))
    session.clear()
    session["login_invite"] = invite
    session["login_next"] = url_for("pages.library")
    return _oidc().oidc.authorize_redirect(cfg().base_url + url_for("auth.callback"))


@bp.route("/login")
def login():
    """Sign in: with `?token=` as that token's user, `?invite=` with an invite, else through OIDC."""
    token = request.args.get("token")
    if token:
        return _link_sign_in(token, request.args.get("next"), confirmed=False)
    if request.args.get("invite"):
        return _start_invite(request.args["invite"])
    oauth = _oidc()
    if oauth is not None and (request.args.get("start") or (
            request.args.get("next") is not None and not cfg().auth.passwords)):
        session["login_next"] = _safe_next(request.args.get("next"))
        return oauth.oidc.authorize_redirect(cfg().base_url + url_for("auth.callback"))
    return login_page()


def _link_user(token: str) -> tuple[User, str | None]:
    """The user a sign-in link names (a one-use ticket, or an API token and its id); SignInRefused if none."""
    if sessions.is_ticket(token):
        return sessions.ticket_user(token), None
    row = videos.find_token(token)
    if row is None:
        raise SignInRefused("That sign-in link is not valid (the token is unknown or revoked).")
    return row.user, row.id


def _link_sign_in(token: str, nxt: str | None, confirmed: bool):
    """`/login?token=`: sign in as the link's user; a browser signed in as someone else is asked first
    (so another site cannot switch it to an account of its choosing with one click)."""
    try:
        row, token_id = _link_user(token)
        if row.disabled:
            raise SignInRefused(f"The account {row.email} is disabled on this server; ask its admin.")
        if not confirmed and current_user.is_authenticated and not current_user.via_token \
                and current_user.id != row.id:
            return render_template("login_switch.html", token=token, target=row.email, next=nxt or ""), 200
        if token_id is None:
            row = sessions.redeem_ticket(token)
    except SignInRefused as e:
        return _refused(str(e), 401)
    return signed_in(row, nxt, api_token=token_id)


@bp.route("/login/switch", methods=["POST"])
def switch():
    """The confirmation of `/login?token=` from a browser signed in as someone else (with the CSRF token)."""
    if not csrf_ok():
        abort(400)
    return _link_sign_in(request.form.get("token") or "", request.form.get("next"), confirmed=True)


@bp.route("/login/callback")
def callback():
    """The OIDC provider sends the browser back here with a code."""
    from authlib.integrations.base_client.errors import OAuthError
    from flask import current_app
    oauth = current_app.extensions.get("streamforge.oauth")
    if oauth is None:
        abort(404)
    invite, nxt = session.get("login_invite"), session.get("login_next")
    try:
        token = oauth.oidc.authorize_access_token()
    except OAuthError as e:
        return _refused(f"Sign-in failed: {e.description or e.error}", 400)
    claims = dict(token.get("userinfo") or {})
    if not claims.get("email"):
        claims.update({k: v for k, v in oauth.oidc.userinfo(token=token).items() if k not in ("iss", "sub")})
    issuer = claims.get("iss") or oauth.oidc.load_server_metadata().get("issuer") or ""
    try:
        row = users.oidc_sign_in(claims, issuer, cfg().auth, invite)
    except SignInRefused as e:
        return _refused(str(e))
    return signed_in(row, nxt)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """POST (with the CSRF token) signs out and forgets the session; GET shows the button that does."""
    if request.method == "GET":
        return render_template("logout.html")
    if not csrf_ok():
        abort(400)
    sessions.end_session(session.get("sid"))  # for good: the cookie, kept or copied, signs nobody in after this
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/api/tokens", methods=["GET"])
@login_required
def list_tokens():
    """The user's API tokens (never the secrets)."""
    return {"items": [{"id": t.id, "name": t.name, "prefix": t.prefix,
                       "created_at": t.created_at.isoformat(timespec="seconds") + "Z",
                       "last_used_at": t.last_used_at.isoformat(timespec="seconds") + "Z"
                       if t.last_used_at else None} for t in videos.list_tokens(current_user.row)]}


@bp.route("/api/tokens", methods=["POST"])
@login_required
def create_token():
    """A new API token, shown once."""
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):  # a JSON number or list was a 500 (found by schemathesis)
        return error(400, "invalid", "the body must be a JSON object")
    name = str(body.get("name") or "")[:100]
    row, plain = videos.create_token(current_user.row, name)
    return {"id": row.id, "name": row.name, "token": plain, "prefix": row.prefix}, 201


@bp.route("/api/tokens/<token_id>", methods=["DELETE"])
@login_required
def revoke_token(token_id: str):
    """Revoke one of the user's tokens."""
    videos.revoke_token(current_user.row, token_id)
    return "", 204


def init_app(app) -> None:
    """Register login handling, OIDC and CSRF checks on the app."""
    login_manager.init_app(app)
    # "stay signed in" makes the cookie permanent for this long; other sessions end with the browser
    app.config["PERMANENT_SESSION_LIFETIME"] = datetime.timedelta(days=app.extensions["streamforge"].auth.session_days)
    app.register_blueprint(bp)
    # the sign-in area's other rooms: passwords and /account, passkeys (they build on this module)
    from streamforge.web import account, passkeys
    account.init_app(app)
    passkeys.init_app(app)
    with app.app_context():
        oauth = _oauth(app)
    if oauth is not None:
        app.extensions["streamforge.oauth"] = oauth

    @app.before_request
    def _csrf():
        # only a signed-in browser session can be ridden by another site; bearer calls carry no cookie
        if request.path.startswith("/hooks/") or "_user_id" not in session or csrf_ok():
            return None
        if request.endpoint == "auth.logout":
            return None
        return error(403, "csrf", "missing or wrong X-CSRF-Token header for a signed-in browser request")

    @app.context_processor
    def _inject():
        return {"csrf_token": csrf_token, "current_user": current_user, "oidc_enabled": oauth is not None}


handle_errors(bp)
