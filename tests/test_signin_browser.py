"""Sign-in in Chromium (issue 20): the password form with "stay signed in" (a cookie that outlives the
browser session, for [auth] session_days) and without it (a browser-session cookie), a wrong password's
message, and the invite page where a new person chooses a password and lands signed in; the admin page
says why an invite for an existing email is refused."""
from __future__ import annotations

import dataclasses
import os
import re
import time

import pytest
import requests
from conftest import LiveServer, free_port, require

from streamforge.store import db as dbmod
from streamforge.store import users, videos

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "juniper cobalt lantern 77"
pytestmark = pytest.mark.browser


@pytest.fixture
def site(seaweed, make_app, tmp_path):
    port = free_port()
    cfg = seaweed.make_config(tmp_path / "data", env={"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
                                                      "STREAMFORGE_AUTH_SESSION_DAYS": "12"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    with LiveServer(make_app(cfg), port=port) as live:
        with dbmod.db.connection_context():
            users.set_password(users.add_user("mum@example.com", users.ADMIN), PASSWORD)
            _, live.admin_token = videos.create_token(users.find_user("mum@example.com"))
        yield live


def _chromium(p):
    require(os.path.exists(CHROMIUM), "Chromium is not installed at /usr/bin/chromium")
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def _session_cookie(context) -> dict:
    return next(c for c in context.cookies() if c["name"] == "streamforge_session")


def test_password_sign_in_stay_signed_in_and_the_invite_page_in_chromium(site):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = _chromium(p)
        for stay in (True, False):
            context = browser.new_context()
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(15000)
            page.goto(f"{site.url}/upload")  # signed out: sent to the login page, which comes back here
            assert page.url.startswith(f"{site.url}/login")
            page.fill("#login-email", "mum@example.com")
            page.fill("#login-password", "not my password at all")
            page.click("#password-form button[type=submit]")
            assert page.locator("#login-error").inner_text() == "Wrong email or password."
            # the answer does not echo the email (it is the same for every email); the page puts it back
            expect(page.locator("#login-email")).to_have_value("mum@example.com")
            page.fill("#login-password", PASSWORD)
            if stay:
                page.check("#login-remember")
            page.click("#password-form button[type=submit]")
            page.wait_for_url(f"{site.url}/upload")
            assert page.locator(".nav-user a.user-name").inner_text() == "mum@example.com"
            cookie = _session_cookie(context)
            if stay:  # [auth] session_days = 12
                assert 11.9 * 86400 < cookie["expires"] - time.time() <= 12 * 86400, cookie
            else:
                assert cookie["expires"] == -1, cookie  # a browser-session cookie
            context.close()
        # the admin invites someone; the invite page asks them for a password
        context = browser.new_context()
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        page.goto(f"{site.url}/login?token={site.admin_token}")
        page.goto(f"{site.url}/admin")
        page.fill("#invite-email", "mum@example.com")
        page.click("#invite-form button[type=submit]")
        # (locator waits: the page's CSP allows no eval, which a string wait_for_function needs)
        expect(page.locator("#invite-error")).to_contain_text("already has")
        page.fill("#invite-email", "gran@example.com")
        page.click("#invite-form button[type=submit]")
        expect(page.locator("#invite-url")).to_have_value(re.compile(r"/login\?invite="))
        link = page.input_value("#invite-url")
        context.close()
        context = browser.new_context()
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        page.goto(link)
        assert page.locator("#invite-email").inner_text() == "gran@example.com"
        page.fill("#invite-password", "password1234")
        page.fill("#invite-password2", "password1234")
        page.click("#invite-form button[type=submit]")
        assert "common" in page.locator("#invite-error").inner_text()
        page.fill("#invite-password", "marigold tandem seventy rooks")
        page.fill("#invite-password2", "marigold tandem seventy rooks")
        page.check("#invite-remember")
        page.click("#invite-form button[type=submit]")
        page.wait_for_url(f"{site.url}/")
        assert page.locator(".nav-user a.user-name").inner_text() == "gran@example.com"
        assert _session_cookie(context)["expires"] > time.time() + 11 * 86400
        context.close()
        browser.close()
    assert not errors, errors
    s = requests.Session()  # the new account signs in with its password from now on
    page = s.get(f"{site.url}/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{site.url}/login", data={"csrf_token": csrf, "email": "gran@example.com",
                                          "password": "marigold tandem seventy rooks"}, allow_redirects=False)
    assert r.status_code == 302 and s.get(f"{site.url}/api/me", timeout=10).json()["email"] == "gran@example.com"


def test_a_passkey_added_on_account_signs_in_in_chromium(seaweed, make_app, tmp_path):
    """With Chromium's virtual authenticator: add a passkey on /account, sign out, sign in with it (no
    email or password typed), remove it; a removed passkey signs nobody in."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    port = free_port()
    url = f"http://localhost:{port}"  # WebAuthn needs a domain (not an IP address) as the relying party
    cfg = seaweed.make_config(tmp_path / "data", env={"STREAMFORGE_SERVER_BASE_URL": url})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    errors: list[str] = []
    with LiveServer(make_app(cfg), port=port), sync_playwright() as p:
        with dbmod.db.connection_context():
            users.set_password(users.add_user("keys@example.com"), PASSWORD)
        browser = _chromium(p)
        context = browser.new_context()
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
            "isUserVerified": True, "automaticPresenceSimulation": True}})
        page.goto(f"{url}/login")
        page.fill("#login-email", "keys@example.com")
        page.fill("#login-password", PASSWORD)
        page.click("#password-form button[type=submit]")
        page.wait_for_url(f"{url}/")
        page.goto(f"{url}/account")
        page.wait_for_selector("#passkey-list[data-loaded=true]", state="attached")
        page.fill("#passkey-name", "laptop")
        page.click("#passkey-form button[type=submit]")
        page.wait_for_selector("#passkey-list li")
        assert "laptop" in page.locator("#passkey-list li").inner_text()
        page.click(".nav-user form button[type=submit]")  # sign out
        page.wait_for_url(f"{url}/login")
        page.click("#passkey-button")
        page.wait_for_url(f"{url}/")
        assert page.locator(".nav-user a.user-name").inner_text() == "keys@example.com"
        page.goto(f"{url}/account")
        page.wait_for_selector("#passkey-list li")
        page.click("#passkey-list button[data-action=remove]")
        page.wait_for_selector("#passkey-list li", state="detached")
        page.click(".nav-user form button[type=submit]")
        page.wait_for_url(f"{url}/login")
        page.click("#passkey-button")  # the authenticator still holds the key; the server forgot it
        page.wait_for_selector("#passkey-error:not([hidden])")
        assert "not registered" in page.locator("#passkey-error").inner_text()
        assert page.evaluate("fetch('/api/me').then(r => r.status)") == 401
        browser.close()
    assert not errors, errors
