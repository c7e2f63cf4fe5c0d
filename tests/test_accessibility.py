"""axe-core on every page in Chromium: no critical and no serious violation, at desktop and phone sizes."""
from __future__ import annotations

import pytest
import requests
from browser_helpers import shot
from conftest import MEDIA
from player_site import axe, h, new_page

from streamforge.store import db as dbmod
from streamforge.store import users, videos

pytestmark = pytest.mark.browser
CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
PHONE_PAGES = ("/login", "/", "/upload", "/admin", "/playlists", "/no-such-page")


@pytest.fixture(scope="module")
def admin_token(site):
    with dbmod.db.connection_context():
        user = users.add_user("root@example.com", role="admin")
        return videos.create_token(user)[1]


@pytest.fixture(scope="module")
def playlist(site):
    r = requests.post(f"{site.url}/api/playlists", json={"title": "For axe", "visibility": "public"},
                      headers=h(site, "ana"))
    pl = r.json()
    requests.post(f"{site.url}/api/playlists/{pl['id']}/items", json={"video_id": site.v["cc"]["id"]},
                  headers=h(site, "ana")).raise_for_status()
    return pl


def pages(site, playlist) -> list[tuple[str, str]]:
    """(who, path) of every page: signed out, as ana (an uploader), and as an admin."""
    cc = site.v["cc"]["slug"]
    return [("", "/login"), ("", "/explore"), ("", f"/embed/{cc}"), ("", "/no-such-page"),
            ("ana", "/"), ("ana", "/upload"), ("ana", f"/watch/{cc}"), ("ana", f"/watch/{cc}?list={playlist['slug']}"),
            ("ana", "/tokens"), ("ana", "/playlists"), ("ana", f"/playlists/{playlist['slug']}"), ("ana", "/logout"),
            ("admin", "/admin")]


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_no_critical_or_serious_axe_violations_on_any_page(site, browser, playlist, admin_token, size):
    site.tokens["admin"] = admin_token
    found = {}
    for who in ("", "ana", "admin"):
        page = new_page(browser, site, who, width=size[0], height=size[1])
        try:
            # a phone gets the pages whose layout changes most with the width
            for _, path in [p for p in pages(site, playlist) if p[0] == who
                            and (size[0] > 600 or p[1] in PHONE_PAGES or p[1].startswith("/watch/"))]:
                page.goto(site.url + path)
                page.wait_for_load_state("load")
                if "/watch/" in path or "/embed/" in path:
                    page.wait_for_function("() => customElements.get('media-controller') &&"
                                           " document.getElementById('video').readyState >= 1")
                if path == "/upload":
                    page.wait_for_function("() => window.streamforgeUppy")
                    page.wait_for_selector("#uppy-dashboard .uppy-Dashboard")
                name = path.strip("/").split("?")[0].replace("/", "-")[:30] or "library"
                shot(page, f"page-{size[0]}-{name}{'-list' if '?list=' in path else ''}")
                bad = axe(page)
                if bad:
                    found[path] = bad
                if path == "/upload":  # and with files in Uppy's list
                    page.locator("#uppy-dashboard input.uppy-Dashboard-input[type=file]").first.set_input_files(
                        [str(CLIP), str(MEDIA / "bikes-640x272-10s-noaudio.mp4")])
                    page.wait_for_selector(".upload-item")
                    if bad := axe(page):
                        found["/upload with files"] = bad
        finally:
            page.context.close()
    assert found == {}, found


def test_the_theme_follows_the_system_and_the_switch_and_light_passes_axe(site, browser, playlist):
    body_bg = "() => getComputedStyle(document.body).backgroundColor"
    page = new_page(browser, site, "ana", color_scheme="dark")
    try:
        page.goto(f"{site.url}/")
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert page.evaluate(body_bg) == "rgb(15, 17, 21)"
    finally:
        page.context.close()
    page = new_page(browser, site, "ana", color_scheme="light")
    try:
        page.goto(f"{site.url}/")
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
        assert page.evaluate(body_bg) == "rgb(246, 247, 249)"
        found = {}
        for path in ("/", "/upload", f"/watch/{site.v['cc']['slug']}", f"/playlists/{playlist['slug']}", "/explore"):
            page.goto(site.url + path)
            page.wait_for_load_state("load")
            if path in ("/", "/upload") or path.startswith("/watch/"):
                shot(page, "light" + (path.replace("/", "-").rstrip("-") if path != "/" else "-library"))
            if bad := axe(page):
                found[path] = bad
        assert found == {}, found
        # the switch wins over the system's choice, and is remembered
        page.locator("#theme-switch").click()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        page.reload()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert page.evaluate(body_bg) == "rgb(15, 17, 21)"
        assert page.locator("#theme-switch").get_attribute("aria-label") == "Switch to the light theme"
    finally:
        page.context.close()
