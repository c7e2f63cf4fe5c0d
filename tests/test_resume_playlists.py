"""Resume, history, the end screen and playlists in Chromium, on the app of player_site."""
from __future__ import annotations

import time

import pytest
import requests
from browser_helpers import poll, shot
from player_site import h, new_page

pytestmark = pytest.mark.browser
VIDEO_T = "() => document.getElementById('video').currentTime"


def history(site, who="ana") -> list[dict]:
    r = requests.get(f"{site.url}/api/me/history", headers=h(site, who), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def saved(site, vid, until, timeout=15.0):
    """Poll the history until the entry of `vid` satisfies `until`; returns it (or None)."""
    deadline = time.time() + timeout
    entry = None
    while time.time() < deadline:
        entry = next((i for i in history(site) if i["video"]["id"] == vid), None)
        if entry and until(entry):
            return entry
        time.sleep(0.25)
    return entry


def play(page, to: float) -> float:
    page.wait_for_function("() => document.getElementById('video').readyState >= 1")
    page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; v.play() }")
    return poll(page, VIDEO_T, lambda t: t >= to, timeout=20)


def test_the_player_saves_the_position_and_the_page_resumes_from_it(site, browser):
    requests.delete(f"{site.url}/api/me/history", headers=h(site, "ana"), timeout=10)
    vid, slug = site.v["plain"]["id"], site.v["plain"]["slug"]
    page = new_page(browser, site, "ana")
    try:
        page.goto(f"{site.url}/watch/{slug}")
        assert play(page, 3) >= 3
        page.evaluate("() => document.getElementById('video').pause()")
        at = page.evaluate(VIDEO_T)
        entry = saved(site, vid, lambda e: abs(e["position"] - at) < 0.2)  # saved on pause
        assert entry and abs(entry["position"] - at) < 0.2 and entry["watched"] is False, (entry, at)
        page.reload()
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert abs(poll(page, VIDEO_T, lambda t: abs(t - at) < 0.3) - at) < 0.3
        # ?t= wins over the saved position
        page.goto(f"{site.url}/watch/{slug}?t=1")
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert abs(poll(page, VIDEO_T, lambda t: abs(t - 1) < 0.3) - 1) < 0.3
        # a reload while playing starts where it was, though the last report may reach the server after
        # the new page's request (the browser keeps its own position too)
        page.goto(f"{site.url}/watch/{slug}")
        assert play(page, 4.5) >= 4.5
        page.reload()
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert poll(page, VIDEO_T, lambda t: t >= 4.4) >= 4.4
        # leaving the page while playing saves where it was (sendBeacon)
        page.goto(f"{site.url}/watch/{slug}?t=6")
        assert play(page, 7) >= 7
        page.goto(f"{site.url}/")
        entry = saved(site, vid, lambda e: e["position"] >= 7)
        assert entry and entry["position"] >= 7, entry
        # the library offers it under "Continue watching"
        row = page.locator("#continue-watching")
        assert row.is_visible() and site.v["plain"]["title"] in row.inner_text()
        shot(page, "library-continue-watching")
        # played to the end: watched, an end screen with replay, and no more "Continue watching"
        page.goto(f"{site.url}/watch/{slug}?t=10")
        play(page, 10)
        page.wait_for_function("() => document.getElementById('video').ended")
        end = page.locator("#end-screen")
        end.wait_for(state="visible")
        assert saved(site, vid, lambda e: e["watched"])["watched"] is True
        # the control bar stays usable below it
        assert page.evaluate("""() => document.getElementById('end-screen').getBoundingClientRect().bottom <=
            document.querySelector('media-time-range').getBoundingClientRect().top + 1""")
        shot(page, "watch-end-screen")
        page.locator("#end-screen [data-action=replay]").click()
        assert poll(page, "() => !document.getElementById('video').paused", bool) and not end.is_visible()
        page.goto(f"{site.url}/")
        assert page.locator("#continue-watching").count() == 0
        # a video watched to the end starts from the beginning again
        page.goto(f"{site.url}/watch/{slug}")
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert page.evaluate(VIDEO_T) < 0.5
        # a cleared history starts every video from the beginning
        page.goto(f"{site.url}/watch/{slug}?t=5")
        assert play(page, 6) >= 6
        page.goto(f"{site.url}/")
        assert saved(site, vid, lambda e: e["position"] >= 6)["position"] >= 6
        assert requests.delete(f"{site.url}/api/me/history", headers=h(site, "ana"), timeout=10).status_code == 204
        assert history(site) == []
        page.goto(f"{site.url}/watch/{slug}")
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        assert page.evaluate(VIDEO_T) < 0.5
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


def test_a_playlist_plays_through_and_its_page_reorders_and_removes(site, browser):
    ana = h(site, "ana")
    r = requests.post(f"{site.url}/api/playlists", json={"title": "Lakes", "visibility": "public"}, headers=ana)
    pl = r.json()
    for key in ("cc", "plain", "priv"):
        requests.post(f"{site.url}/api/playlists/{pl['id']}/items", json={"video_id": site.v[key]["id"]},
                      headers=ana).raise_for_status()
    page = new_page(browser, site, "ana")
    try:
        page.goto(f"{site.url}/playlists/{pl['slug']}")
        titles = page.locator(".playlist-item-title").all_inner_texts()
        assert titles == ["Lake with captions", "Lake without captions", "Private lake"]
        shot(page, "playlist-page")
        page.locator("#play-all").click()
        page.wait_for_url(f"**/watch/{site.v['cc']['slug']}?list={pl['slug']}")
        assert "Lakes" in page.locator("#playlist-panel").inner_text()
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        page.evaluate("() => { const v = document.getElementById('video'); v.muted = true;"
                      " v.currentTime = Math.max(0, v.duration - 1); v.play() }")
        page.locator("#end-screen").wait_for(state="visible")
        assert "Lake without captions" in page.locator("#end-screen").inner_text()
        page.wait_for_url(f"**/watch/{site.v['plain']['slug']}?list={pl['slug']}*", timeout=20000)
        assert poll(page, VIDEO_T, lambda t: t > 0.5) > 0.5  # the next one plays by itself
        # reorder and remove on the playlist page
        page.goto(f"{site.url}/playlists/{pl['slug']}")
        page.locator(".playlist-item").nth(0).locator("[data-action=down]").click()
        page.wait_for_load_state()
        page.wait_for_function("() => document.querySelector('.playlist-item-title')?.textContent === "
                               "'Lake without captions'")
        page.locator(".playlist-item").nth(2).locator("[data-action=remove]").click()
        page.wait_for_function("() => document.querySelectorAll('.playlist-item').length === 2")
        got = requests.get(f"{site.url}/api/playlists/{pl['id']}", headers=ana).json()
        assert [v["id"] for v in got["items"]] == [site.v["plain"]["id"], site.v["cc"]["id"]]
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()
    # ben sees the public playlist without ana's private video
    requests.post(f"{site.url}/api/playlists/{pl['id']}/items", json={"video_id": site.v["priv"]["id"]}, headers=ana)
    page = new_page(browser, site, "ben", width=390, height=844)
    try:
        page.goto(f"{site.url}/playlists/{pl['slug']}")
        assert page.locator(".playlist-item-title").all_inner_texts() == ["Lake without captions", "Lake with captions"]
        assert page.locator("[data-action=remove]").count() == 0
        shot(page, "playlist-page-phone")
    finally:
        page.context.close()


def test_add_to_playlist_from_the_watch_page(site, browser):
    page = new_page(browser, site, "ben")
    try:
        page.goto(f"{site.url}/watch/{site.v['cc']['slug']}")
        page.locator("#add-to-playlist summary").click()
        page.locator("#new-playlist-title").fill("Ben's favourites")
        page.locator("#add-to-playlist button[type=submit]").click()
        box = page.locator("#add-to-playlist input[type=checkbox]")
        box.wait_for()
        assert box.is_checked()
        mine = requests.get(f"{site.url}/api/playlists", headers=h(site, "ben")).json()["items"]
        fav = next(p for p in mine if p["title"] == "Ben's favourites")
        assert [v["id"] for v in fav["items"]] == [site.v["cc"]["id"]]
        shot(page, "watch-add-to-playlist")
        box.uncheck()
        page.wait_for_function("() => document.querySelector('#add-to-playlist [role=status]')?.textContent"
                               "?.startsWith('Removed')")
        assert requests.get(f"{site.url}/api/playlists/{fav['id']}", headers=h(site, "ben")).json()["items"] == []
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


def png(width: int = 64, height: int = 48) -> bytes:
    """A small PNG picture made with PyAV."""
    import av
    frame = av.VideoFrame(width, height, "rgb24")
    frame.planes[0].update(bytes([200, 40, 40]) * (frame.planes[0].buffer_size // 3))
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "rgb24"
    return b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))


def cover_of(site, key="plain") -> dict:
    v = requests.get(f"{site.url}/api/videos/{site.v[key]['id']}", headers=h(site, "ana")).json()
    return next(t for t in v["thumbnails"] if t["type"] == "COVER")


def test_the_owner_edits_and_chooses_the_cover_on_the_watch_page(site, browser, tmp_path):
    page = new_page(browser, site, "ana")
    try:
        page.goto(f"{site.url}/watch/{site.v['plain']['slug']}")
        page.locator("#owner-edit summary").click()
        page.locator("#watch-edit-title").fill("Lake at noon")
        page.locator("#watch-edit-description").fill("Calm. More at https://example.org/noon")
        page.locator("#owner-edit button[type=submit]").click()
        page.wait_for_function("() => document.getElementById('video-title')?.textContent === 'Lake at noon'")
        assert page.locator("#video-description a[rel~=nofollow]").get_attribute("href") == "https://example.org/noon"
        # a moment of the timeline becomes the cover
        page.locator("#cover-chooser summary").click()
        tiles = page.locator("#cover-chooser .cover-frame")
        tiles.nth(2).wait_for()
        t = float(tiles.nth(2).get_attribute("data-time"))
        shot(page, "watch-cover-chooser")
        tiles.nth(2).click()
        page.wait_for_function("() => document.querySelector('#cover-chooser [role=status]')?.textContent"
                               "?.includes('changed')")
        cover = cover_of(site)
        assert cover["timestamp"] == t and t > 0
        assert requests.get(cover["url"], timeout=10).content[:3] == b"\xff\xd8\xff"
        # an uploaded picture becomes the cover, re-encoded as a JPEG
        picture = tmp_path / "cover.png"
        picture.write_bytes(png())
        page.locator("#cover-file").set_input_files(str(picture))
        page.wait_for_function("() => document.querySelector('#cover-chooser [role=status]')?.textContent"
                               "?.includes('changed') && document.getElementById('video')?.poster.includes('cover-')")
        cover = cover_of(site)
        assert (cover["width"], cover["height"]) == (64, 48) and "cover-" in cover["url"]
        assert requests.get(cover["url"], timeout=10).content[:3] == b"\xff\xd8\xff"
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


@pytest.mark.parametrize("body", [{}, {"time": -1}, {"time": "x"}, {"image": "not base64!"},
                                  {"image": "aGVsbG8="}, {"time": 1, "image": "aGVsbG8="}])
def test_bad_covers_are_refused(site, body):
    r = requests.put(f"{site.url}/api/videos/{site.v['cc']['id']}/cover", json=body, headers=h(site, "ana"))
    assert r.status_code == 400 and r.json()["error"]["message"], r.text
    r = requests.put(f"{site.url}/api/videos/{site.v['cc']['id']}/cover", json={"time": 1}, headers=h(site, "ben"))
    assert r.status_code == 404
