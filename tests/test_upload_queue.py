"""The upload page's queue in Chromium: several files at once, each its own video titled from its name,
one card each that says what Uppy is doing, and a cancel that leaves nothing behind."""
from __future__ import annotations

import pytest
import requests
from browser_helpers import poll, shot
from media_factory import make_video
from player_site import h, new_page

pytestmark = pytest.mark.browser
PICKER = "#uppy-dashboard input.uppy-Dashboard-input[type=file]"


def mine(site, who="ana") -> list[dict]:
    return requests.get(f"{site.url}/api/videos?per_page=100", headers=h(site, who), timeout=10).json()["items"]


def test_several_files_at_once_each_become_a_video_with_its_own_card(site, browser, tmp_path):
    files = [make_video(tmp_path / name, seconds=1) for name in ("harbour_at_dawn.mp4", "lake-at-noon.mp4",
                                                                 "city night.mp4")]
    before = {v["id"] for v in mine(site)}
    page = new_page(browser, site, "ana")
    held = []
    try:
        page.goto(f"{site.url}/upload")
        page.locator(PICKER).first.set_input_files([str(f) for f in files])
        cards = page.locator(".upload-item")
        poll(page, "() => document.querySelectorAll('.upload-item').length", lambda n: n == 3)
        assert cards.count() == 3
        assert sorted(cards.locator(".upload-item-title").all_inner_texts()) == [
            "city night", "harbour at dawn", "lake-at-noon"]
        assert set(cards.locator("[data-role=badge]").all_text_contents()) == {"Ready to upload"}
        # with several files the one title field gives way to the file names
        assert page.locator("#upload-title").is_disabled() and page.locator("#upload-title-hint").is_visible()
        shot(page, "upload-queue-chosen")
        # the third file's bytes are held back: it stays "Uploading", and is cancelled from its card
        page.route(lambda url: "/originals/" in url and "city" in url, lambda route: held.append(route))
        page.locator("#upload-description").fill("Three at once")
        page.locator("#upload-submit").click()
        city = cards.filter(has_text="city night")
        poll(page, "() => document.querySelectorAll('.upload-item [data-role=badge]').length", lambda n: n == 3)
        for name in ("harbour at dawn", "lake-at-noon"):
            cards.filter(has_text=name).locator("[data-role=badge]", has_text="Queued").or_(
                cards.filter(has_text=name).locator("[data-role=badge]", has_text="Ready")).or_(
                cards.filter(has_text=name).locator("[data-role=badge]", has_text="Processing")).first.wait_for()
        assert poll(page, "() => 0", lambda _: bool(held), timeout=15) == 0 and held
        city.locator("[data-role=badge]", has_text="Uploading").wait_for()
        shot(page, "upload-queue-uploading")
        made = [v for v in mine(site) if v["id"] not in before]
        assert sorted(v["title"] for v in made) == ["city night", "harbour at dawn", "lake-at-noon"]
        assert {v["description"] for v in made} == {"Three at once"}
        city_video = next(v for v in made if v["title"] == "city night")
        city.locator("[data-action=cancel]").click()
        city.wait_for(state="detached")
        deadline = poll(page, f"""async () => (await fetch('/api/videos/{city_video["id"]}')).status""",
                        lambda s: s == 404 or s == 200, timeout=10)
        assert deadline in (200, 404)
        gone = requests.get(f"{site.url}/api/videos/{city_video['id']}", headers=h(site, "ana")).json()
        assert gone.get("status") == "ARCHIVED" or gone.get("error"), gone
        uploaded = [v for v in mine(site) if v["id"] in {m["id"] for m in made} and v["title"] != "city night"]
        assert {v["upload_status"] for v in uploaded} == {"UPLOADED"}
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        for route in held:
            route.abort()
        page.context.close()
