"""Phone-sized pages in Chromium (390x844): the player's controls are big enough to hit and leave the
picture mostly free; /admin shows every user's role and quota with no sideways scroll, quotas in MB/GB."""
from __future__ import annotations

import pytest
import requests
from browser_helpers import shot
from player_site import h, new_page

from streamforge.store import db as dbmod
from streamforge.store import users, videos

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}

CONTROLS = """() => {
  const video = document.getElementById('video').getBoundingClientRect()
  const top = document.querySelector('media-time-range').getBoundingClientRect().top
  const icons = [...document.querySelectorAll('media-control-bar > *')].filter(el => el.getClientRects().length
      && !el.classList.contains('control-spacer') && el.tagName !== 'MEDIA-TIME-DISPLAY'
      && el.tagName !== 'MEDIA-VOLUME-RANGE' && getComputedStyle(el).display !== 'none')
    .map(el => { const shown = [...(el.shadowRoot ? el.shadowRoot.querySelectorAll('svg') : [])]
                   .map(svg => svg.getBoundingClientRect()).filter(b => b.width > 0)
                 const hit = el.getBoundingClientRect()
                 return {name: el.tagName.toLowerCase(), hit: Math.min(hit.width, hit.height),
                         icon: Math.max(0, ...shown.map(b => Math.min(b.width, b.height)))} })
  return {covered: (video.bottom - top) / video.height, icons}
}"""


def test_phone_player_has_big_controls_that_leave_the_picture_free(site, browser):
    page = new_page(browser, **PHONE)
    try:
        page.goto(f"{site.url}/watch/{site.v['cc']['slug']}")
        page.wait_for_function("() => customElements.get('media-controller') && "
                               "document.getElementById('video').readyState >= 1")
        page.wait_for_timeout(300)
        got = page.evaluate(CONTROLS)
        shot(page, "phone-watch")
        assert got["covered"] < 0.4, got
        small = [i for i in got["icons"] if i["icon"] < 24 or i["hit"] < 40]
        assert got["icons"] and not small, got
        assert page.evaluate("() => document.scrollingElement.scrollWidth <= innerWidth")
    finally:
        page.context.close()


def test_admin_on_a_phone_shows_role_and_quota_without_sideways_scroll(site, browser):
    with dbmod.db.connection_context():
        admin = users.add_user("phone-admin@example.com", role="admin")
        token = videos.create_token(admin)[1]
        ana = videos.get_or_create_user("ana@example.com")
    site.tokens["phone-admin"] = token
    page = new_page(browser, site, "phone-admin", **PHONE)
    try:
        page.goto(f"{site.url}/admin")
        assert page.evaluate("() => document.scrollingElement.scrollWidth <= innerWidth"), "sideways scroll"
        row = page.locator(f"tr[data-user-id='{ana.id}']")
        role, amount = row.locator("select[data-action=role]"), row.locator("input[name=max_bytes]")
        assert role.is_visible() and amount.is_visible() and row.locator("select[name=unit]").is_visible()
        for el in (role, amount):
            box = el.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        shot(page, "phone-admin")
        default = requests.get(f"{site.url}/api/me", headers=h(site, "ana")).json()["quota"]["max_bytes"]
        amount.fill("2")
        row.locator("select[name=unit]").select_option(label="GB")
        # the page PATCHes the user, then reloads: wait for that reload (the select shows GB before it too)
        with page.expect_navigation():
            row.locator("form[data-action=quota] button[type=submit]").click()
        page.wait_for_function(f"""() => document.querySelector("tr[data-user-id='{ana.id}'] select[name=unit]")
            .selectedOptions[0].textContent === 'GB'""")
        me = requests.get(f"{site.url}/api/me", headers=h(site, "ana")).json()
        assert me["quota"]["max_bytes"] == 2 * 1024 ** 3
        assert row.locator("input[name=max_bytes]").input_value() == "2"
        amount = page.locator(f"tr[data-user-id='{ana.id}'] input[name=max_bytes]")
        amount.fill("")  # back to the default
        with page.expect_navigation():
            page.locator(f"tr[data-user-id='{ana.id}'] form[data-action=quota] button[type=submit]").click()
        page.wait_for_function(f"""() => document.querySelector("tr[data-user-id='{ana.id}'] input[name=max_bytes]")
            .value === ''""")
        me = requests.get(f"{site.url}/api/me", headers=h(site, "ana")).json()
        assert me["quota"]["max_bytes"] == default != 2 * 1024 ** 3
    finally:
        page.context.close()
