"""The admin API and the /admin page: users with usage, role, quota and disable; invites; stats. The
page is driven in Chromium (its buttons call the API with the session's CSRF token)."""
import dataclasses
import os
import re

import pytest
import requests
from conftest import LiveServer, free_port, require

from streamforge.store import db as dbmod
from streamforge.store import users, videos
from streamforge.store.db import Invite, User

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def site(seaweed, make_app, tmp_path):
    """The app on a real port; `root` is an admin, `boss` an admin through [auth] admins."""
    port = free_port()
    cfg = seaweed.make_config(tmp_path / "data", env={
        "STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}", "STREAMFORGE_AUTH_ADMINS": "boss@example.com",
        "STREAMFORGE_QUOTA_MAX_BYTES_PER_USER": "5000"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    with LiveServer(make_app(cfg), port=port) as live:
        with dbmod.db.connection_context():
            root = users.add_user("root@example.com", users.ADMIN)
            _, root_token = videos.create_token(root)
            _, boss_token = videos.create_token(users.add_user("boss@example.com"))
            _, ann_token = videos.create_token(users.add_user("ann@example.com"))
        live.root, live.root_id = root_token, root.id
        live.boss, live.ann = boss_token, ann_token
        yield live


def call(site, method: str, path: str, token: str, body=None) -> requests.Response:
    return requests.request(method, site.url + path, json=body, headers={"Authorization": f"Bearer {token}"},
                            timeout=10)


def test_users_are_listed_with_usage_role_and_quota(site):
    r = call(site, "POST", "/api/videos", site.ann, {"title": "t", "filename": "a.mp4", "size": 1200,
                                                     "content_type": "video/mp4"})
    assert r.status_code == 201
    listing = call(site, "GET", "/api/admin/users", site.root).json()["items"]
    by_email = {u["email"]: u for u in listing}
    assert list(by_email) == ["root@example.com", "boss@example.com", "ann@example.com"]
    ann = by_email["ann@example.com"]
    assert {"id", "email", "name", "role", "disabled", "usage", "quota", "created_at", "last_seen_at"} <= set(ann)
    assert (ann["role"], ann["disabled"], ann["usage"], ann["quota"]) == (
        "uploader", False, {"bytes": 1200, "videos": 1}, {"max_bytes": 5000, "max_videos": 0})
    assert ann["last_seen_at"] and ann["created_at"].endswith("Z")
    assert by_email["boss@example.com"]["role"] == "admin"  # through [auth] admins
    # boss is an admin through the config: the admin API is theirs too
    assert call(site, "GET", "/api/admin/users", site.boss).status_code == 200
    assert call(site, "GET", "/api/admin/users", site.ann).status_code == 403


def test_patch_a_user(site):
    ann = call(site, "GET", "/api/me", site.ann).json()["id"]
    r = call(site, "PATCH", f"/api/admin/users/{ann}", site.root,
             {"role": "viewer", "quota": {"max_bytes": 0, "max_videos": 2}})
    assert r.status_code == 200, r.text
    assert (r.json()["role"], r.json()["quota"]) == ("viewer", {"max_bytes": 0, "max_videos": 2})
    me = call(site, "GET", "/api/me", site.ann).json()
    assert (me["role"], me["quota"]) == ("viewer", {"max_bytes": 0, "max_videos": 2})
    # back to the defaults
    r = call(site, "PATCH", f"/api/admin/users/{ann}", site.root, {"quota": {"max_bytes": None}})
    assert r.json()["quota"] == {"max_bytes": 5000, "max_videos": 2}
    # disabled: at once 401, enabled: back
    assert call(site, "PATCH", f"/api/admin/users/{ann}", site.root, {"disabled": True}).json()["disabled"] is True
    assert call(site, "GET", "/api/me", site.ann).status_code == 401
    assert call(site, "PATCH", f"/api/admin/users/{ann}", site.root, {"disabled": False}).status_code == 200
    assert call(site, "GET", "/api/me", site.ann).status_code == 200
    # bad input: a clear 4xx and nothing changed
    boss = call(site, "GET", "/api/me", site.boss).json()["id"]
    bad = [(ann, {"role": "king"}, 400), (ann, {"disabled": "yes"}, 400), (ann, {"quota": {"max_bytes": -1}}, 400),
           (ann, {"quota": {"max_bytes": 1.5}}, 400), (ann, {"quota": {"gigabytes": 1}}, 400),
           (ann, {"name": "x"}, 400), (ann, [], 400), ("nosuchuser", {"role": "viewer"}, 404),
           (site.root_id, {"disabled": True}, 409), (site.root_id, {"role": "viewer"}, 409),
           (boss, {"role": "uploader"}, 409)]
    before = call(site, "GET", "/api/admin/users", site.root).json()
    for target, body, status in bad:
        r = call(site, "PATCH", f"/api/admin/users/{target}", site.root, body)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert set(r.json()["error"]) == {"code", "message"}
    assert call(site, "GET", "/api/admin/users", site.root).json() == before


def test_invites_and_stats(site):
    r = call(site, "POST", "/api/admin/invites", site.root, {"email": "New@Example.com", "role": "viewer"})
    assert r.status_code == 201
    body = r.json()
    assert body["url"].startswith(f"{site.url}/login?invite=inv_") and (body["email"], body["role"]) == (
        "new@example.com", "viewer")
    for bad in ({}, {"email": "not an email"}, {"email": "a@b.c", "role": "king"}):
        assert call(site, "POST", "/api/admin/invites", site.root, bad).status_code == 400
    # without OIDC the link asks its person for a password, then signs them in, once (issue 20)
    s = requests.Session()
    link = body["url"]
    page = s.get(link, allow_redirects=False, timeout=10)
    assert page.status_code == 200 and 'id="invite-form"' in page.text
    form = {name: re.search(rf'name="{name}" value="([^"]+)"', page.text).group(1) for name in ("csrf_token", "invite")}
    form["password"] = form["password2"] = "lantern meadow ninety owls"
    assert s.post(f"{site.url}/login/invite", data=form, allow_redirects=False, timeout=10).status_code == 302
    me = s.get(f"{site.url}/api/me", timeout=10).json()
    assert (me["email"], me["role"]) == ("new@example.com", "viewer")
    again = requests.get(link, allow_redirects=False, timeout=10)
    assert again.status_code == 403 and "already used" in again.text
    stats = call(site, "GET", "/api/admin/stats", site.root).json()
    assert set(stats) >= {"videos", "storage_bytes", "queue_depth", "workers"}
    assert set(stats["videos"]) == {"PENDING", "PROCESSING", "COMPLETED", "FAILED", "ARCHIVED"}
    assert isinstance(stats["storage_bytes"], int) and isinstance(stats["queue_depth"], int)
    made = call(site, "POST", "/api/videos", site.ann, {"title": "t", "filename": "a.mp4", "size": 700,
                                                        "content_type": "video/mp4"})
    after = call(site, "GET", "/api/admin/stats", site.root).json()
    assert after["videos"]["PENDING"] == stats["videos"]["PENDING"] + 1
    assert after["storage_bytes"] == stats["storage_bytes"] + 700
    assert made.status_code == 201


def test_the_admin_page_in_a_browser(site):
    """The admin signs in, sees usage and stats, disables ann with the button (ann's token stops), sets
    a quota, changes a role and makes an invite link."""
    require(os.path.exists(CHROMIUM), "Chromium is not installed at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        page.goto(f"{site.url}/login?token={site.root}")
        page.goto(f"{site.url}/")
        assert page.locator("a[href='/admin']").count() == 1  # the nav links the admin page
        page.goto(f"{site.url}/admin")
        assert page.locator("[data-stat=queue]").inner_text().isdigit()
        ann_row = page.locator("tr", has_text="ann@example.com")
        assert "0 bytes of 4.9 KiB" in ann_row.inner_text()
        ann_row.locator("button[data-action=toggle]").click()
        # a function, not an expression: Playwright polls an expression with eval, which the page's CSP
        # forbids (an EvalError whenever the first look does not find it yet)
        page.wait_for_function("() => document.querySelector(\"tr[data-disabled='true']\") !== null")
        assert call(site, "GET", "/api/me", site.ann).status_code == 401
        ann_row.locator("input[name=max_videos]").fill("4")
        with page.expect_navigation():
            ann_row.locator("form[data-action=quota] button").click()
        ann_row = page.locator("tr", has_text="ann@example.com")
        assert "of 4 videos" in ann_row.inner_text()
        with page.expect_response(lambda r: "/api/admin/users/" in r.url and r.request.method == "PATCH"):
            ann_row.locator("select[data-action=role]").select_option("viewer")
        page.fill("#invite-email", "pal@example.com")
        page.click("#invite-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('invite-url')?.value.includes('/login?invite=')")
        url = page.input_value("#invite-url")
        browser.close()
    assert re.fullmatch(rf"{re.escape(site.url)}/login\?invite=inv_\S+", url)
    assert not errors, errors
    with dbmod.db.connection_context():
        ann = User.get(User.email == "ann@example.com")
        assert (ann.disabled, ann.max_videos, ann.role) == (True, 4, "viewer")
        assert Invite.select().where(Invite.email == "pal@example.com").count() == 1
