"""Sign-in you can trust (issue 20): server-side sessions that logout, token revocation, disabling and a
password change end for good; local accounts with argon2id passwords, a strength rule, throttling that
never tells whether an email exists; invites that ask for a password and never hand over an existing
account; the one-use sign-in ticket; a confirmation before a sign-in link switches a signed-in browser;
absolute URLs only on trusted hosts; HSTS, Secure cookies, Permissions-Policy; private database files."""
from __future__ import annotations

import datetime
import io
import os
import re
import statistics
import sys
import time

import pytest
from conftest import fresh_database_url
from werkzeug.http import parse_cookie

from streamforge import passwords
from streamforge.errors import ValidationError
from streamforge.store import db as dbmod
from streamforge.store import sessions, users, videos
from streamforge.store.db import SchemaVersion, SignInFailure, SignInTicket, User, UserSession, init_db

GOOD = "tangerine quartz orbit 42"
OTHER_GOOD = "velvet harbour nineteen kites"


def _user(email: str, password: str | None = GOOD, role: str = users.UPLOADER) -> User:
    with dbmod.db.connection_context():
        user = users.add_user(email, role)
        if password:
            user = users.set_password(user, password)
        return user


def _csrf(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _login(client, email: str, password: str, remember: bool = False, address: str = "127.0.0.1", **extra):
    form = {"csrf_token": _csrf(client), "email": email, "password": password, **extra}
    if remember:
        form["remember"] = "1"
    return client.post("/login", data=form, environ_base={"REMOTE_ADDR": address})


def _me(client) -> int:
    return client.get("/api/me").status_code


def _session_cookie(client) -> str:
    return client.get_cookie("streamforge_session").value


# ---------------------------------------------------------------------------------------------
# Sessions held on the server


def test_a_cookie_saved_before_logout_answers_401_after_it(app):
    """Hole 3: the session cookie was client-side and signed, so a copy outlived POST /logout."""
    _user("saver@example.com")
    client = app.test_client()
    assert _login(client, "saver@example.com", GOOD).status_code == 302
    saved = _session_cookie(client)
    assert _me(client) == 200
    r = client.post("/logout", data={"csrf_token": _csrf(client, "/logout")})
    assert r.status_code == 302 and _me(client) == 401
    thief = app.test_client()
    thief.set_cookie("streamforge_session", saved)
    assert _me(thief) == 401 and thief.get("/").status_code == 302
    with dbmod.db.connection_context():
        assert UserSession.select().count() == 0


def test_revoking_a_token_ends_every_browser_session_it_opened(app, auth):
    owner = auth("revoker@example.com")
    token = owner["Authorization"][7:]
    with dbmod.db.connection_context():
        second = videos.create_token(User.get(User.email == "revoker@example.com"), "second")[1]
    by_token, by_other = app.test_client(), app.test_client()
    assert by_token.get("/login", query_string={"token": token}).status_code == 302
    assert by_other.get("/login", query_string={"token": second}).status_code == 302
    assert _me(by_token) == 200 and _me(by_other) == 200
    token_id = next(t["id"] for t in app.test_client().get("/api/tokens", headers=owner).get_json()["items"]
                    if t["name"] == "test")
    assert app.test_client().delete(f"/api/tokens/{token_id}", headers={"Authorization": f"Bearer {second}"}
                                    ).status_code == 204
    assert _me(by_token) == 401  # the session the revoked token opened ended with it
    assert _me(by_other) == 200  # another token's session goes on


def test_disabling_a_user_ends_their_sessions_for_good(app):
    user = _user("gone@example.com")
    client = app.test_client()
    _login(client, "gone@example.com", GOOD)
    assert _me(client) == 200
    with dbmod.db.connection_context():
        users.update_user(user, disabled=True)
        assert UserSession.select().where(UserSession.user == user.id).count() == 0
        users.update_user(user, disabled=False)
    assert _me(client) == 401


def test_stay_signed_in_lasts_session_days_else_the_browser_session(seaweed, make_app, tmp_path):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_SERVER_BASE_URL": "http://127.0.0.1:5000",
                                             "STREAMFORGE_AUTH_SESSION_DAYS": "3"})
    app = make_app(cfg)
    _user("stay@example.com")
    client = app.test_client()
    r = _login(client, "stay@example.com", GOOD, remember=True)
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("streamforge_session="))
    expires = datetime.datetime.strptime(re.search(r"Expires=([^;]+)", cookie).group(1),
                                         "%a, %d %b %Y %H:%M:%S GMT")
    left = expires - datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert datetime.timedelta(days=2, hours=23) < left <= datetime.timedelta(days=3), cookie
    with dbmod.db.connection_context():
        row = UserSession.get()
        assert row.persistent and row.expires_at - row.created_at == datetime.timedelta(days=3)
    brief = app.test_client()
    r = _login(brief, "stay@example.com", GOOD)
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("streamforge_session="))
    assert "Expires=" not in cookie and "Max-Age" not in cookie, cookie  # ends with the browser
    for spelling in ("remember_me", "stay_signed_in"):  # what other clients call the checkbox
        r = _login(app.test_client(), "stay@example.com", GOOD, **{spelling: "on"})
        assert "Expires=" in next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("streamforge_session="))
    assert _me(brief) == 200 and _me(client) == 200
    with dbmod.db.connection_context():  # the server forgets an expired session whatever the cookie says
        UserSession.update(expires_at=dbmod.utcnow() - datetime.timedelta(seconds=1)).execute()
    assert _me(client) == 401 and _me(brief) == 401


# ---------------------------------------------------------------------------------------------
# Passwords


def test_passwords_are_argon2id_and_weak_ones_are_refused_with_the_reason(app):
    user = _user("hash@example.com")
    assert user.password_hash.startswith("$argon2id$")
    assert passwords.verify_password(user.password_hash, GOOD)
    assert not passwords.verify_password(user.password_hash, GOOD + "x")
    assert not passwords.verify_password(None, GOOD)
    cases = {"short1!": "at least 10 characters", "password123": "breached and common",
             "qwertyuiop": "top-100 common", "iloveyou2024": "breached and common",
             "hash@example.com": "made from your email", "aaaaaaaaaaaa": "repeats like",
             "x" * 1025: "at most 1024"}
    for weak, reason in cases.items():
        with pytest.raises(ValidationError) as e:
            passwords.check_strength(weak, ["hash@example.com"])
        assert reason in str(e.value).lower(), (weak, str(e.value))


def test_password_sign_in_needs_the_login_pages_csrf_token(app):
    _user("csrf@example.com")
    client = app.test_client()
    r = client.post("/login", data={"email": "csrf@example.com", "password": GOOD})
    assert r.status_code == 400 and _me(client) == 401
    page = app.test_client().get("/login").get_data(as_text=True)
    assert 'id="password-form"' in page and 'name="remember"' in page and 'name="csrf_token"' in page
    r = _login(client, "csrf@example.com", GOOD, next="/upload")
    assert r.status_code == 302 and r.headers["Location"].endswith("/upload")
    assert client.get("/api/me").get_json()["email"] == "csrf@example.com"


def test_answers_never_tell_whether_an_email_exists(app):
    """The same status and words for a wrong password and an unknown email, and about the same time
    (the unknown email's check runs against a dummy hash)."""
    _user("known@example.com")
    browser = app.test_client()
    wrong = _login(browser, "known@example.com", "not the password at all", address="10.0.0.1")
    unknown = _login(browser, "nobody@example.com", "not the password at all", address="10.0.0.2")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_data() == unknown.get_data()  # the very same page
    words = [re.search(r'id="login-error">([^<]+)<', r.get_data(as_text=True)).group(1) for r in (wrong, unknown)]
    assert words[0] == words[1] == "Wrong email or password."

    def seconds(email: str, address: str) -> float:
        client = app.test_client()
        form = {"csrf_token": _csrf(client), "email": email, "password": "still not the password"}
        start = time.perf_counter()
        client.post("/login", data=form, environ_base={"REMOTE_ADDR": address})
        return time.perf_counter() - start
    known = statistics.median(seconds("known@example.com", f"10.1.0.{i}") for i in range(3))
    missing = statistics.median(seconds(f"ghost{i}@example.com", f"10.2.0.{i}") for i in range(3))
    assert missing > 0.3 * known and known > 0.3 * missing, (known, missing)  # no hash at all: ~0.05


def _age_failures(minutes: int) -> None:
    """As if `minutes` had passed since every failure so far."""
    with dbmod.db.connection_context():
        for row in SignInFailure.select():
            SignInFailure.update(created_at=row.created_at - datetime.timedelta(minutes=minutes)).where(
                SignInFailure.id == row.id).execute()


def test_five_failures_for_one_email_close_it_for_the_rest_of_the_window(app):
    _user("target@example.com")
    for i in range(5):  # from five addresses: the email's count is what closes it
        assert _login(app.test_client(), "target@example.com", f"guess number {i}", address=f"10.3.0.{i}"
                      ).status_code == 401
    r = _login(app.test_client(), "TARGET@example.com", GOOD, address="10.3.0.99")
    assert r.status_code == 429 and 890 <= int(r.headers["Retry-After"]) <= 900, r.headers
    assert "Too many failed sign-ins" in r.get_data(as_text=True)
    # an unknown email closes the same way: a 429 tells nothing about existence
    for i in range(5):
        _login(app.test_client(), "phantom@example.com", f"guess number {i}", address=f"10.4.0.{i}")
    assert _login(app.test_client(), "phantom@example.com", GOOD, address="10.4.0.99").status_code == 429
    # other emails are not held back; the window moves on with the clock
    assert _login(app.test_client(), "target2@example.com", GOOD, address="10.3.0.98").status_code == 401
    _age_failures(minutes=14)
    r = _login(app.test_client(), "target@example.com", GOOD, address="10.3.0.97")
    assert r.status_code == 429 and 50 <= int(r.headers["Retry-After"]) <= 60, r.headers
    _age_failures(minutes=1)
    assert _login(app.test_client(), "target@example.com", GOOD, address="10.3.0.97").status_code == 302


def test_five_failures_from_one_address_close_it_for_every_email(app):
    _user("victim@example.com")
    for i in range(5):
        assert _login(app.test_client(), f"spray{i}@example.com", "password guess", address="10.5.0.1"
                      ).status_code == 401
    r = _login(app.test_client(), "victim@example.com", GOOD, address="10.5.0.1")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 800
    assert _login(app.test_client(), "victim@example.com", GOOD, address="10.5.0.2").status_code == 302


def test_a_disabled_account_and_passwords_off(seaweed, make_app, tmp_path, app):
    user = _user("off@example.com")
    with dbmod.db.connection_context():
        users.update_user(user, disabled=True)
    r = _login(app.test_client(), "off@example.com", GOOD)
    assert r.status_code == 403 and "is disabled" in r.get_data(as_text=True)
    cfg = seaweed.make_config(tmp_path / "nopw", env={"STREAMFORGE_SERVER_BASE_URL": "http://127.0.0.1:5000",
                                                      "STREAMFORGE_AUTH_PASSWORDS": "false"})
    client = make_app(cfg).test_client()
    assert 'id="password-form"' not in client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"email": "off@example.com", "password": GOOD}).status_code == 404


def test_the_login_page_offers_passwords_beside_oidc(seaweed, make_app, tmp_path):
    oidc = {"STREAMFORGE_AUTH_OIDC_ISSUER": "http://127.0.0.1:9", "STREAMFORGE_AUTH_OIDC_CLIENT_ID": "sf",
            "STREAMFORGE_AUTH_OIDC_NAME": "Family IdP", "STREAMFORGE_SERVER_BASE_URL": "http://127.0.0.1:5000"}
    client = make_app(seaweed.make_config(tmp_path / "both", env=oidc)).test_client()
    r = client.get("/login", query_string={"next": "/upload"})  # not sent to the provider at once
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="password-form"' in page and 'id="oidc-button"' in page
    assert "Sign in with Family IdP" in page and "next=/upload" in page.replace("%2F", "/")
    only = make_app(seaweed.make_config(tmp_path / "only", env={**oidc, "STREAMFORGE_AUTH_PASSWORDS": "false"}))
    page = only.test_client().get("/login").get_data(as_text=True)
    assert 'id="password-form"' not in page and 'id="oidc-button"' in page


def test_account_page_changes_the_password_and_ends_the_other_sessions(app):
    _user("changer@example.com")
    here, elsewhere = app.test_client(), app.test_client()
    _login(here, "changer@example.com", GOOD)
    _login(elsewhere, "changer@example.com", GOOD)
    page = here.get("/account").get_data(as_text=True)
    assert 'id="password-change-form"' in page and 'name="old"' in page
    csrf = _csrf(here, "/account")
    r = here.post("/account", data={"csrf_token": csrf, "old": "not my password", "password": OTHER_GOOD,
                                    "password2": OTHER_GOOD})
    assert r.status_code == 403 and "current password is not that one" in r.get_data(as_text=True)
    r = here.post("/account", data={"csrf_token": csrf, "old": GOOD, "password": "password123",
                                    "password2": "password123"})
    assert r.status_code == 400 and "common" in r.get_data(as_text=True)
    r = here.post("/account", data={"old": GOOD, "password": OTHER_GOOD, "password2": OTHER_GOOD})
    assert r.status_code in (400, 403)  # no CSRF token: nothing changed
    r = here.post("/account", data={"csrf_token": csrf, "old": GOOD, "password": OTHER_GOOD,
                                    "password2": OTHER_GOOD})
    assert r.status_code == 200 and "Password changed" in r.get_data(as_text=True)
    assert _me(here) == 200 and _me(elsewhere) == 401
    assert _login(app.test_client(), "changer@example.com", GOOD).status_code == 401
    assert _login(app.test_client(), "changer@example.com", OTHER_GOOD).status_code == 302


def test_user_set_password_from_stdin_and_twice_on_a_terminal(tmp_path, capsys, monkeypatch):
    from streamforge.commands import main as cli
    data = str(tmp_path / "data")

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # not a terminal: one line from stdin
        code = cli.main(["user", *args, "--data-dir", data])
        out = capsys.readouterr()
        return code, out.out, out.err
    assert run("add", "cli@example.com")[0] == 0
    code, _, err = run("set", "cli@example.com", "--password", stdin="password123\n")
    assert code == 1 and "breached and common" in err, err
    code, out, err = run("set", "cli@example.com", "--password", stdin=GOOD + "\n")
    assert code == 0 and "password set" in out, err
    code, out, err = run("invite", "cli@example.com")
    assert code == 1 and "already has an account" in err and "invite=" not in out
    with dbmod.db.connection_context():
        assert users.authenticate("cli@example.com", GOOD) is not None
    # on a terminal: asked twice, not echoed; two different answers change nothing
    import pty
    cmd = [sys.executable, "-m", "streamforge.commands.main", "user"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    for answers, code in (((OTHER_GOOD, OTHER_GOOD + "!"), 1), ((OTHER_GOOD, OTHER_GOOD), 0)):
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(sys.executable, [*cmd[:1], *cmd[1:], "set", "cli@example.com", "--password", "--data-dir",
                                       data], env)
        out = b""
        for answer in answers:
            while b"password" not in out.split(b"\n")[-1].lower():
                out += os.read(fd, 1024)
            os.write(fd, answer.encode() + b"\n")
            out += b"\n"
        rest = b""
        with __import__("contextlib").suppress(OSError):
            while chunk := os.read(fd, 1024):
                rest += chunk
        assert os.waitpid(pid, 0)[1] >> 8 == code, out + rest
        assert OTHER_GOOD.encode() not in out + rest  # never echoed
    database = init_db(f"sqlite:///{tmp_path / 'data' / 'streamforge.db'}")
    with database.connection_context():
        assert users.authenticate("cli@example.com", OTHER_GOOD) is not None
    database.close()


# ---------------------------------------------------------------------------------------------
# Invites


def test_an_invite_asks_for_a_password_then_the_account_exists_and_is_signed_in(app, auth):
    admin = auth("root@example.com")
    with dbmod.db.connection_context():
        users.add_user("root@example.com", users.ADMIN)
    r = app.test_client().post("/api/admin/invites", json={"email": "Kid@Example.com", "role": "viewer"},
                               headers=admin)
    assert r.status_code == 201
    link = r.get_json()["url"].split("127.0.0.1:5000", 1)[1]
    client = app.test_client()
    page = client.get(link)
    assert page.status_code == 200 and 'id="invite-form"' in page.get_data(as_text=True)
    assert "kid@example.com" in page.get_data(as_text=True) and _me(client) == 401
    with dbmod.db.connection_context():
        assert not User.select().where(User.email == "kid@example.com").exists()  # not before the password
    invite = re.search(r'name="invite" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    r = client.post("/login/invite", data={"csrf_token": csrf, "invite": invite, "password": "kid12345678",
                                           "password2": "kid12345678"})
    assert r.status_code == 400 and "Choose another password" in r.get_data(as_text=True) and _me(client) == 401
    r = client.post("/login/invite", data={"csrf_token": csrf, "invite": invite, "password": GOOD, "password2": GOOD})
    assert r.status_code == 302 and client.get("/api/me").get_json()["role"] == "viewer"
    assert _login(app.test_client(), "kid@example.com", GOOD).status_code == 302
    again = app.test_client().get(link)
    assert again.status_code == 403 and "already used" in again.get_data(as_text=True)


def test_an_invite_for_an_existing_email_is_refused(app, auth, tmp_path):
    """Hole 5: an admin's invite for an existing email signed the admin in as that person."""
    admin = auth("boss@example.com")
    with dbmod.db.connection_context():
        users.add_user("boss@example.com", users.ADMIN)
        _user("member@example.com")
    r = app.test_client().post("/api/admin/invites", json={"email": "Member@example.com"}, headers=admin)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "conflict"
    # an invite made before the account existed cannot take it over either
    with dbmod.db.connection_context():
        _, plain = users.create_invite("later@example.com")
        _user("later@example.com")
    client = app.test_client()
    r = client.get("/login", query_string={"invite": plain})
    assert r.status_code == 409 and "exists already" in r.get_data(as_text=True) and _me(client) == 401
    # nor its password form, sent after the account was made (the page was shown before): 409 too
    r = client.post("/login/invite", data={"csrf_token": _csrf(client), "invite": plain, "password": OTHER_GOOD,
                                           "password2": OTHER_GOOD})
    assert r.status_code == 409 and "exists already" in r.get_data(as_text=True) and _me(client) == 401
    assert _login(app.test_client(), "later@example.com", GOOD).status_code == 302


# ---------------------------------------------------------------------------------------------
# Sign-in links: the one-use ticket, and asking before a switch


def test_the_serve_ticket_works_once_for_fifteen_minutes_and_is_no_api_token(app):
    with dbmod.db.connection_context():
        admin = users.add_user("admin@localhost", users.ADMIN)
        ticket = sessions.create_ticket(admin)
        late = sessions.create_ticket(admin)
        SignInTicket.update(expires_at=dbmod.utcnow() - datetime.timedelta(seconds=1)).where(
            SignInTicket.token_hash == videos.hash_token(late)).execute()
        row = SignInTicket.get(SignInTicket.token_hash == videos.hash_token(ticket))
        assert datetime.timedelta(minutes=14) < row.expires_at - row.created_at <= datetime.timedelta(minutes=15)
    assert app.test_client().get("/api/me", headers={"Authorization": f"Bearer {ticket}"}).status_code == 401
    client = app.test_client()
    assert client.get("/login", query_string={"token": ticket}).status_code == 302
    assert client.get("/api/me").get_json()["role"] == "admin"
    assert client.get("/api/tokens").get_json()["items"] == []
    r = app.test_client().get("/login", query_string={"token": ticket})
    assert r.status_code == 401 and "already used" in r.get_data(as_text=True)
    r = app.test_client().get("/login", query_string={"token": late})
    assert r.status_code == 401 and "expired" in r.get_data(as_text=True)


def test_a_sign_in_link_asks_before_switching_a_signed_in_browser(app, token_for):
    """Hole 4 (login CSRF): /login?token= signed a browser into someone else's account with one click."""
    _user("me@example.com")
    theirs = token_for("attacker@example.com")
    client = app.test_client()
    _login(client, "me@example.com", GOOD)
    page = client.get("/login", query_string={"token": theirs, "next": "/upload"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="switch-form"' in text and "attacker@example.com" in text
    assert client.get("/api/me").get_json()["email"] == "me@example.com"  # nothing switched yet
    assert client.post("/login/switch", data={"token": theirs}).status_code in (400, 403)  # no CSRF token
    assert client.get("/api/me").get_json()["email"] == "me@example.com"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)
    r = client.post("/login/switch", data={"csrf_token": csrf, "token": theirs, "next": "/upload"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/upload")
    assert client.get("/api/me").get_json()["email"] == "attacker@example.com"
    # the same person's link, or a browser signed in as nobody: at once
    assert client.get("/login", query_string={"token": theirs}).status_code == 302
    fresh = app.test_client()
    assert fresh.get("/login", query_string={"token": theirs}).status_code == 302 and _me(fresh) == 200
    # a ticket is spent only once the switch is confirmed
    with dbmod.db.connection_context():
        ticket = sessions.create_ticket(User.get(User.email == "me@example.com"))
    assert client.get("/login", query_string={"token": ticket}).status_code == 200
    csrf = _csrf(client, "/logout")
    assert client.post("/login/switch", data={"csrf_token": csrf, "token": ticket}).status_code == 302
    assert client.get("/api/me").get_json()["email"] == "me@example.com"


# ---------------------------------------------------------------------------------------------
# Absolute URLs, headers, files


def _video(client, headers) -> str:
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 100,
                                         "content_type": "video/mp4"}, headers=headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["video"]["id"]


def test_absolute_urls_follow_only_trusted_hosts(seaweed, make_app, tmp_path, auth):
    cfg = seaweed.make_config(tmp_path, env={"STREAMFORGE_SERVER_PORT": "8123"})
    client = make_app(cfg).test_client()
    h = auth("hosts@example.com")  # each app below has a database of its own: a token for each
    vid = _video(client, h)
    ok = client.get(f"/api/videos/{vid}", headers=h, base_url="http://127.0.0.1:8123")
    assert ok.status_code == 200 and ok.get_json()["watch_url"].startswith("http://127.0.0.1:8123/watch/")
    assert client.get(f"/api/videos/{vid}", headers=h, base_url="http://localhost:8123").status_code == 200
    evil = client.get(f"/api/videos/{vid}", headers=h, base_url="http://evil.example")
    assert evil.status_code == 400 and "evil.example" in evil.get_json()["error"]["message"]
    assert client.get(f"/api/videos/{vid}", headers={**h, "Host": "evil.example:8123"}).status_code == 400
    slug = ok.get_json()["slug"]
    r = client.get("/oembed", query_string={"url": f"http://evil.example/watch/{slug}"}, base_url="http://evil.example")
    assert r.status_code == 400
    assert client.get(f"/watch/{slug}", headers=h, base_url="http://evil.example").status_code == 400
    # refused before anything happens: no video made whose answer could not be given
    r = client.post("/api/videos", json={"title": "t", "filename": "a.mp4", "size": 100, "content_type": "video/mp4"},
                    headers=h, base_url="http://evil.example")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_host"
    assert len(client.get("/api/videos", headers=h).get_json()["items"]) == 1
    assert client.get("/healthz", base_url="http://evil.example").status_code == 200
    cfg = seaweed.make_config(tmp_path / "named", env={"STREAMFORGE_SERVER_ALLOWED_HOSTS": '["videos.home.arpa"]'})
    client = make_app(cfg).test_client()
    h = auth("hosts@example.com")
    vid = _video(client, h)
    r = client.get(f"/api/videos/{vid}", headers=h, base_url="http://videos.home.arpa:8000")
    assert r.status_code == 200 and r.get_json()["watch_url"].startswith("http://videos.home.arpa:8000/watch/")
    assert client.get(f"/api/videos/{vid}", headers=h, base_url="http://other.home.arpa:8000").status_code == 400
    assert client.get(f"/api/videos/{vid}", headers=h, base_url="http://127.0.0.1:8000").status_code == 200
    cfg = seaweed.make_config(tmp_path / "base", env={"STREAMFORGE_SERVER_BASE_URL": "https://tube.example"})
    client = make_app(cfg).test_client()
    h = auth("hosts@example.com")
    vid = _video(client, h)
    r = client.get(f"/api/videos/{vid}", headers=h, base_url="http://evil.example")
    assert r.status_code == 200 and r.get_json()["watch_url"].startswith("https://tube.example/watch/")


def test_the_default_hosts_are_this_machines(seaweed, tmp_path):
    import socket

    from streamforge.web.hosts import allowed_hosts, host_allowed
    wildcard = seaweed.make_config(tmp_path / "any", env={"STREAMFORGE_SERVER_HOST": "0.0.0.0"})
    names = allowed_hosts(wildcard)
    assert {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()} <= names and "0.0.0.0" not in names
    assert host_allowed("[::1]:8000", wildcard) and host_allowed(f"{socket.gethostname()}:8000", wildcard)
    assert not host_allowed("evil.example", wildcard) and not host_allowed("", wildcard)
    assert not host_allowed("127.0.0.1@evil.example", wildcard)
    one = seaweed.make_config(tmp_path / "one", env={"STREAMFORGE_SERVER_HOST": "192.0.2.7"})
    assert host_allowed("192.0.2.7:8000", one) and "192.0.2.7" not in allowed_hosts(wildcard)


def test_https_base_url_brings_hsts_and_secure_cookies_and_every_answer_a_permissions_policy(
        seaweed, make_app, tmp_path, app):
    plain = app.test_client().get("/login")
    assert "camera=()" in plain.headers["Permissions-Policy"] and "Strict-Transport-Security" not in plain.headers
    assert "camera=()" in app.test_client().get("/api/me").headers["Permissions-Policy"]
    cfg = seaweed.make_config(tmp_path / "tls", env={"STREAMFORGE_SERVER_BASE_URL": "https://tube.example"})
    tls = make_app(cfg)
    _user("tls@example.com")
    client = tls.test_client()
    r = client.get("/login", base_url="https://tube.example")
    assert r.headers["Strict-Transport-Security"].startswith("max-age=") and "Permissions-Policy" in r.headers
    form = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', r.get_data(as_text=True)).group(1),
            "email": "tls@example.com", "password": GOOD}
    r = client.post("/login", data=form, base_url="https://tube.example")
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("streamforge_session="))
    assert r.status_code == 302 and "Secure" in cookie and "HttpOnly" in cookie
    assert parse_cookie(cookie)["streamforge_session"]


def test_the_database_queue_and_secrets_are_private_files(tmp_path):
    from streamforge.config import load_config
    from streamforge.jobs import tasks
    old = tmp_path / "old.db"
    old.write_bytes(b"")
    old.chmod(0o644)
    init_db(f"sqlite:///{old}").close()
    cfg = load_config(env={}, data_dir=tmp_path / "data")
    init_db(cfg.database_url).close()
    tasks.make_storage(cfg.queue_url)
    for path in (old, tmp_path / "data" / "streamforge.db", tmp_path / "data" / "queue.db",
                 tmp_path / "data" / "secrets.json"):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    with fresh_database_url(request.param, tmp_path, "i20") as url:
        yield url


def test_migration_8_on_a_database_from_before(database_url):
    url = database_url
    database = init_db(url)
    with database.connection_context():
        database.execute_sql('ALTER TABLE "users" DROP COLUMN "password_hash"')
        for table in ("sessions", "sign_in_tickets", "sign_in_failures", "passkeys"):
            database.execute_sql(f'DROP TABLE "{table}"')
        SchemaVersion.delete().where(SchemaVersion.version >= 8).execute()
        database.execute_sql("INSERT INTO users (id, email, role, disabled, created_at, updated_at) VALUES "
                             "('u7', 'seven@example.com', 'uploader', FALSE, '2026-01-01', '2026-01-01')")
        _, link = videos.create_token(User(id="u7"), "serve sign-in link")  # what serve minted before
        _, script = videos.create_token(User(id="u7"), "backup script")
    database.close()
    database = init_db(url)
    with database.connection_context():
        assert max(r.version for r in SchemaVersion.select()) == dbmod.SCHEMA_VERSION >= 8
        assert videos.user_for_token(link) is None and videos.user_for_token(script).id == "u7"
        user = users.set_password(User.get_by_id("u7"), GOOD)
        assert users.authenticate("seven@example.com", GOOD).id == "u7"
        sessions.open_session(user, persistent=False, days=30)
        sessions.create_ticket(user)
    database.close()
    init_db(url).close()  # again: nothing left to do
