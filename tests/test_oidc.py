"""OIDC login against a real OIDC provider running locally (oidc-provider-mock), not a mocked authlib:
the allow-list, verified emails, identities bound to (issuer, sub), invites, and that every refusal
leaves no session behind."""
import contextlib
import dataclasses
import datetime
import logging
import re

import pytest
import requests
from conftest import LiveServer, free_port

from streamforge.store import db as dbmod
from streamforge.store import users, videos
from streamforge.store.db import Invite, User

oidc_mock = pytest.importorskip("oidc_provider_mock")


@pytest.fixture(scope="module")
def idp():
    """One provider for the module; each test puts the accounts it needs on it."""
    with oidc_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


def account(idp: str, sub: str, email: str, verified: bool | None = True, **claims) -> str:
    """An account at the provider (its claims replaced when it exists); returns its sub."""
    body = {"email": email, **claims}
    if verified is not None:
        body["email_verified"] = verified
    requests.put(f"{idp}/users/{sub}", json=body, timeout=10).raise_for_status()
    return sub


@contextlib.contextmanager
def oidc_server(seaweed, make_app, tmp_path, issuer: str, **auth):
    """The app on a real port with OIDC at `issuer`; `auth` are [auth] keys (lists as JSON)."""
    import json
    port = free_port()
    env = {"STREAMFORGE_AUTH_OIDC_ISSUER": issuer, "STREAMFORGE_AUTH_OIDC_CLIENT_ID": "streamforge",
           "STREAMFORGE_AUTH_OIDC_CLIENT_SECRET": "client-secret", "STREAMFORGE_AUTH_OIDC_NAME": "Mock IdP",
           "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}"}
    for key, value in auth.items():
        env[f"STREAMFORGE_AUTH_{key.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    cfg = seaweed.make_config(tmp_path / "data", env=env)
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    with LiveServer(make_app(cfg), port=port) as live:
        yield live.url


def sign_in(url: str, sub: str, start: str = "/login?start=1", s: requests.Session | None = None):
    """A browser signing in through the provider as `sub`; returns (session, the callback's answer)."""
    s = s or requests.Session()
    r = s.get(url + start, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    authorize = r.headers["Location"]
    assert s.get(authorize, timeout=10).status_code == 200  # the provider's page where the person picks an account
    r = s.post(authorize, data={"sub": sub, "action": "approve"}, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/login/callback?" in r.headers["Location"], r.text[:300]
    return s, s.get(r.headers["Location"], allow_redirects=False, timeout=10)


def assert_no_session(url: str, s: requests.Session) -> None:
    """The browser is signed in as nobody: the API says 401, pages send it to the login page."""
    assert s.get(f"{url}/api/me", timeout=10).status_code == 401
    r = s.get(f"{url}/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def assert_refused(url: str, s: requests.Session, r, words: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert words in r.text, re.sub(r"\s+", " ", r.text)[-600:]
    assert_no_session(url, s)


def me(url: str, s: requests.Session) -> dict:
    r = s.get(f"{url}/api/me", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_oidc_login_round_trip(idp, seaweed, make_app, tmp_path):
    claims = {"name": "Olivia Example", "picture": "https://example.com/o.png"}
    account(idp, "olivia-sub", "Olivia@Example.com", **claims)
    with oidc_server(seaweed, make_app, tmp_path, idp, allow=["*@example.com"]) as url:
        s = requests.Session()
        assert "Sign in with Mock IdP" in s.get(f"{url}/login").text
        s, r = sign_in(url, "olivia-sub", start="/login?start=1&next=/upload", s=s)
        assert r.status_code == 302 and r.headers["Location"].endswith("/upload")
        assert s.get(f"{url}/api/videos").status_code == 200
        html = s.get(f"{url}/upload").text
        assert re.search(r'name="csrf-token" content="[^"]+"', html)
        got = me(url, s)
        assert (got["email"], got["name"], got["role"]) == ("olivia@example.com", "Olivia Example", "uploader")
        # a forged callback without the provider's code is refused
        bad = requests.get(f"{url}/login/callback?code=forged&state=nope", allow_redirects=False)
        assert bad.status_code == 400
    with dbmod.db.connection_context():
        user = User.get(User.email == "olivia@example.com")
        assert (user.name, user.picture, user.oidc_sub, user.oidc_issuer) == (
            "Olivia Example", claims["picture"], "olivia-sub", idp)


def test_login_page_without_oidc_explains_the_link(client):
    page = client.get("/login").get_data(as_text=True)
    assert "/login?token=" in page


def test_each_refusal_is_said_in_plain_words_and_leaves_no_session(idp, seaweed, make_app, tmp_path, caplog):
    """Not allowed, unverified, another sub for a bound email: refused on the login page, logged, and
    the browser (signed in as someone else before) is signed in as nobody after."""
    account(idp, "ok-sub", "member@example.com")
    account(idp, "stranger-sub", "stranger@gmail.com")
    account(idp, "unverified-sub", "unverified@example.com", verified=False)
    account(idp, "missing-flag-sub", "noflag@example.com", verified=None)
    account(idp, "bound-sub", "bound@example.com")
    account(idp, "thief-sub", "bound@example.com")  # another account at the provider claiming the same email
    caplog.set_level(logging.WARNING, logger="streamforge.accounts")
    with oidc_server(seaweed, make_app, tmp_path, idp, allow=["*@example.com"]) as url:
        _, r = sign_in(url, "bound-sub")
        assert r.status_code == 302
        cases = [("stranger-sub", "This server does not accept stranger@gmail.com; ask its admin for an invite"),
                 ("unverified-sub", "has not verified the address unverified@example.com"),
                 ("missing-flag-sub", "has not verified the address noflag@example.com"),
                 ("thief-sub", "The account bound@example.com on this server belongs to another sign-in")]
        for sub, words in cases:
            s, r = sign_in(url, "ok-sub")
            assert r.status_code == 302 and me(url, s)["email"] == "member@example.com"
            s, r = sign_in(url, sub, s=s)
            assert_refused(url, s, r, words)
        for why in ("not allowed", "unverified email", "other identity"):
            assert any(f"sign-in refused ({why})" in m for m in caplog.messages), (why, caplog.messages)
    with dbmod.db.connection_context():
        assert User.get(User.email == "bound@example.com").oidc_sub == "bound-sub"
        assert not User.select().where(User.email.in_(["stranger@gmail.com", "unverified@example.com"])).exists()


def test_another_issuer_for_a_bound_email_is_refused(idp, seaweed, make_app, tmp_path):
    """The same provider reached under another name is another issuer: the identity does not match."""
    account(idp, "iss-sub", "iss@example.com")
    with oidc_server(seaweed, make_app, tmp_path, idp, allow=["*@example.com"]) as url:
        s, r = sign_in(url, "iss-sub")
        assert r.status_code == 302
    other = idp.replace("localhost", "127.0.0.1")
    with oidc_server(seaweed, make_app, tmp_path, other, allow=["*@example.com"]) as url:
        s, r = sign_in(url, "iss-sub")
        assert_refused(url, s, r, "belongs to another sign-in")
    with dbmod.db.connection_context():
        assert User.get(User.email == "iss@example.com").oidc_issuer == idp


def test_with_an_empty_allow_list_only_existing_users_sign_in(idp, seaweed, make_app, tmp_path):
    """Existing users (made before, e.g. by `streamforge user add`, or before this change with a
    legacy sub and no issuer) sign in and are bound then; a legacy sub that differs is refused;
    `[auth] admins` may sign in and are admins; disabled users are refused."""
    with oidc_server(seaweed, make_app, tmp_path, idp, admins=["boss@corp.example"]) as url:
        with dbmod.db.connection_context():
            users.add_user("old@home.example", users.VIEWER)
            legacy = users.add_user("legacy@home.example")
            User.update(oidc_sub="legacy-sub").where(User.id == legacy.id).execute()
            twin = users.add_user("twin@home.example")
            User.update(oidc_sub="twin-sub").where(User.id == twin.id).execute()
            off = users.add_user("off@home.example")
            users.update_user(off, disabled=True)
        for sub, email in (("old-sub", "old@home.example"), ("legacy-sub", "legacy@home.example"),
                           ("boss-sub", "boss@corp.example")):
            s, r = sign_in(url, account(idp, sub, email))
            assert r.status_code == 302, (email, r.text[:300])
            assert me(url, s)["email"] == email
        assert me(url, sign_in(url, "boss-sub")[0])["role"] == "admin"
        assert me(url, sign_in(url, "old-sub")[0])["role"] == "viewer"
        s, r = sign_in(url, account(idp, "new-sub", "new@home.example"))
        assert_refused(url, s, r, "This server does not accept new@home.example; ask its admin for an invite")
        s, r = sign_in(url, account(idp, "not-twin-sub", "twin@home.example"))
        assert_refused(url, s, r, "belongs to another sign-in")
        s, r = sign_in(url, account(idp, "off-sub", "off@home.example"))
        assert_refused(url, s, r, "is disabled")
    with dbmod.db.connection_context():
        bound = {u.email: (u.oidc_issuer, u.oidc_sub) for u in User.select()}
        assert bound["legacy@home.example"] == (idp, "legacy-sub") and bound["old@home.example"] == (idp, "old-sub")
        assert bound["twin@home.example"] == (None, "twin-sub")


def _invite(url: str, admin_token: str, email: str, role: str | None = None) -> str:
    body = {"email": email} | ({"role": role} if role else {})
    r = requests.post(f"{url}/api/admin/invites", json=body, headers={"Authorization": f"Bearer {admin_token}"},
                      timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith(f"{url}/login?invite=")
    return r.json()["url"][len(url):]


def test_invites_are_one_use_expire_and_are_bound_to_their_email(idp, seaweed, make_app, tmp_path):
    with oidc_server(seaweed, make_app, tmp_path, idp) as url:
        with dbmod.db.connection_context():
            _, admin_token = videos.create_token(users.add_user("root@home.example", users.ADMIN))
        account(idp, "guest-sub", "guest@other.example")
        link = _invite(url, admin_token, "Guest@Other.example", "viewer")
        s, r = sign_in(url, "guest-sub", start=link)
        assert r.status_code == 302, r.text[:300]
        assert (me(url, s)["email"], me(url, s)["role"]) == ("guest@other.example", "viewer")
        # one use: the link is spent (the guest now signs in as an existing user)
        s2 = requests.Session()
        r = s2.get(url + link, allow_redirects=False, timeout=10)
        assert_refused(url, s2, r, "That invite link was already used")
        assert sign_in(url, "guest-sub")[1].status_code == 302
        # bound email: someone else with the link is refused and the invite stays usable for its email
        link = _invite(url, admin_token, "friend@other.example")
        account(idp, "enemy-sub", "enemy@other.example")
        s, r = sign_in(url, "enemy-sub", start=link)
        assert_refused(url, s, r, "That invite is for friend@other.example, but you signed in as enemy@other.example")
        s, r = sign_in(url, account(idp, "friend-sub", "friend@other.example"), start=link)
        assert r.status_code == 302 and me(url, s)["role"] == "uploader"
        # expiry
        link = _invite(url, admin_token, "late@other.example")
        with dbmod.db.connection_context():
            Invite.update(expires_at=dbmod.utcnow() - datetime.timedelta(seconds=1)).where(
                Invite.email == "late@other.example").execute()
        s = requests.Session()
        assert_refused(url, s, s.get(url + link, allow_redirects=False, timeout=10), "That invite link has expired")
        # a made-up invite
        s = requests.Session()
        assert_refused(url, s, s.get(f"{url}/login?invite=inv_nope", allow_redirects=False, timeout=10),
                       "That invite link is not valid")
    with dbmod.db.connection_context():
        assert not User.select().where(User.email.in_(["enemy@other.example", "late@other.example"])).exists()
        used = {i.email: i.used_at is not None for i in Invite.select()}
        assert used == {"guest@other.example": True, "friend@other.example": True, "late@other.example": False}
