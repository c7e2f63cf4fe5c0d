"""The player in Chromium on the watch page and in a 640x360 embed: its layout with and without caption
tracks, clicks on the picture, captions above the controls, the CC button, and page-wide keys."""
from __future__ import annotations

import pytest
from browser_helpers import SCREENSHOTS, poll, shot
from player_site import new_page

pytestmark = pytest.mark.browser

GEOMETRY = """() => {
  const bar = document.querySelector('media-control-bar').getBoundingClientRect()
  const range = document.querySelector('media-time-range').getBoundingClientRect()
  const video = document.getElementById('video').getBoundingClientRect()
  return {barBottom: bar.bottom, rangeTop: range.top, videoTop: video.top, videoBottom: video.bottom,
          videoHeight: video.height, barTop: bar.top}
}"""


def ready(page) -> None:
    page.wait_for_function("() => customElements.get('media-controller') && document.getElementById('video')"
                           ".readyState >= 1")


@pytest.mark.parametrize("where", ["watch", "embed"])
@pytest.mark.parametrize("key", ["cc", "plain"])
def test_control_bar_sits_at_the_bottom_of_the_picture(site, browser, where, key):
    width, height = (1280, 800) if where == "watch" else (640, 360)
    page = new_page(browser, width=width, height=height)
    try:
        page.goto(f"{site.url}/{where}/{site.v[key]['slug']}")
        ready(page)
        if key == "cc":  # the captions menu exists once hls.js has added the subtitle track
            page.wait_for_function("() => [...document.getElementById('video').textTracks]"
                                   ".some(t => t.kind === 'subtitles')")
        page.wait_for_timeout(300)
        g = page.evaluate(GEOMETRY)
        assert abs(g["barBottom"] - g["videoBottom"]) <= 1, g
        # the controls take the bottom of the picture, not its middle
        assert g["rangeTop"] > g["videoTop"] + g["videoHeight"] * 0.7, g
        shot(page, f"player-{where}-{key}")
        # the CC button is there only when there is a track to choose
        visible = page.locator("media-captions-menu-button").is_visible()
        assert visible == (key == "cc")
        # a click in the middle of the picture plays, another pauses
        page.evaluate("() => { document.getElementById('video').muted = true }")
        page.mouse.click(width / 2, (g["videoTop"] + g["videoBottom"]) / 2)
        assert poll(page, "() => !document.getElementById('video').paused", bool, timeout=10)
        t = page.evaluate("() => document.getElementById('video').currentTime")
        assert t < 2, f"the click seeked to {t}"
        # a second click a moment later (not a double-click) pauses
        assert poll(page, "() => document.getElementById('video').currentTime", lambda x: x > t + 0.5) > t + 0.5
        page.mouse.click(width / 2, (g["videoTop"] + g["videoBottom"]) / 2)
        assert poll(page, "() => document.getElementById('video').paused", bool, timeout=10)
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


DIFF = """async ([a, b, skip]) => {
  const load = (src) => new Promise((ok) => { const i = new Image(); i.onload = () => ok(i); i.src = src })
  const [ia, ib] = [await load(a), await load(b)]
  const pixels = (img) => { const c = document.createElement('canvas'); c.width = img.width; c.height = img.height
    const x = c.getContext('2d'); x.drawImage(img, 0, 0); return x.getImageData(0, 0, c.width, c.height).data }
  const [pa, pb] = [pixels(ia), pixels(ib)]
  let box = null, bright = 0, dark = 0
  for (let y = 0; y < ib.height; y++) for (let x = 0; x < ib.width; x++) {
    if (x >= skip.left && x <= skip.right && y >= skip.top && y <= skip.bottom) continue  // the CC button
    const k = (y * ib.width + x) * 4
    if (Math.abs(pa[k] - pb[k]) + Math.abs(pa[k + 1] - pb[k + 1]) + Math.abs(pa[k + 2] - pb[k + 2]) < 40) continue
    box = box ? {top: Math.min(box.top, y), bottom: Math.max(box.bottom, y)} : {top: y, bottom: y}
    const lum = (pb[k] + pb[k + 1] + pb[k + 2]) / 3
    if (lum > 235) bright += 1
    if (lum < 30) dark += 1
  }
  return {box, bright, dark}
}"""


def png_url(data: bytes) -> str:
    import base64
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_captions_show_above_the_controls_in_white_on_black(site, browser):
    page = new_page(browser)
    try:
        page.goto(f"{site.url}/watch/{site.v['cc']['slug']}")
        ready(page)
        page.wait_for_function("() => [...document.getElementById('video').textTracks]"
                               ".some(t => t.kind === 'subtitles')")
        page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; v.play() }")
        assert poll(page, "() => document.getElementById('video').currentTime", lambda t: t > 1, timeout=20) > 1
        page.evaluate("() => document.getElementById('video').pause()")
        page.mouse.move(640, 300)  # the controls show
        page.wait_for_timeout(400)
        player = page.locator("#player")
        without = player.screenshot()
        page.evaluate("() => { for (const t of document.getElementById('video').textTracks)"
                      " if (t.kind === 'subtitles') t.mode = 'showing' }")
        page.wait_for_timeout(600)
        with_cc = player.screenshot(path=str(SCREENSHOTS / "player-captions-above-controls.png"))
        top, skip = page.evaluate("""() => {
          const p = document.getElementById('player').getBoundingClientRect()
          const b = document.querySelector('media-captions-menu-button').getBoundingClientRect()
          return [document.querySelector('media-time-range').getBoundingClientRect().top - p.top,
                  {left: b.left - p.left, right: b.right - p.left, top: b.top - p.top, bottom: b.bottom - p.top}]
        }""")
        found = page.evaluate(DIFF, [png_url(without), png_url(with_cc), skip])
        assert found["box"], "the caption was not drawn"
        assert found["box"]["bottom"] < top, (found, top)  # above the controls, not under them
        assert found["bright"] > 200 and found["dark"] > 1000, found  # white letters on a dark box
        shot(page, "player-captions-above-controls")
    finally:
        page.context.close()


def state(page) -> dict:
    return page.evaluate("""() => { const v = document.getElementById('video'); return {paused: v.paused,
      t: v.currentTime, d: v.duration, muted: v.muted, volume: v.volume, full: !!document.fullscreenElement,
      cc: [...v.textTracks].some(t => t.kind === 'subtitles' && t.mode === 'showing')} }""")


def test_keys_work_page_wide_wherever_focus_is(site, browser):
    page = new_page(browser)
    try:
        page.goto(f"{site.url}/watch/{site.v['cc']['slug']}")
        ready(page)
        page.wait_for_function("() => [...document.getElementById('video').textTracks]"
                               ".some(t => t.kind === 'subtitles')")
        page.evaluate("() => { document.getElementById('video').muted = true }")
        page.locator("#video-title").click()  # focus far from the player
        page.keyboard.press("k")
        assert poll(page, "() => !document.getElementById('video').paused", bool)
        page.keyboard.press(" ")
        assert poll(page, "() => document.getElementById('video').paused", bool)
        page.keyboard.press("5")
        s = state(page)
        assert abs(s["t"] - s["d"] / 2) < 0.6, s
        page.keyboard.press("ArrowRight")
        assert abs(state(page)["t"] - (s["t"] + 5)) < 0.6
        page.keyboard.press("ArrowLeft")
        assert abs(state(page)["t"] - s["t"]) < 0.6
        page.keyboard.press("1")
        page.keyboard.press("l")
        assert abs(state(page)["t"] - (s["d"] / 10 + 10)) < 0.6
        page.keyboard.press("j")
        assert abs(state(page)["t"] - s["d"] / 10) < 0.6
        page.keyboard.press("0")
        assert state(page)["t"] < 0.3
        page.keyboard.press("m")
        assert state(page)["muted"] is False
        page.keyboard.press("m")
        assert state(page)["muted"] is True
        page.evaluate("() => { const v = document.getElementById('video'); v.muted = false; v.volume = 0.5 }")
        page.keyboard.press("ArrowDown")
        assert abs(state(page)["volume"] - 0.4) < 0.01  # steps of 10 %, not 2.5 %
        page.locator("media-volume-range").focus()
        page.keyboard.press("ArrowUp")  # on the volume slider too, a step one can hear
        assert 0.45 - 0.01 <= state(page)["volume"] <= 0.5 + 0.01, state(page)
        page.keyboard.press("c")
        assert state(page)["cc"] is True
        page.keyboard.press("c")
        assert state(page)["cc"] is False
        # in the search box the keys are letters
        page.locator("#site-q").focus()
        page.keyboard.type("kf")
        assert page.locator("#site-q").input_value() == "kf" and state(page)["paused"] and not state(page)["full"]
        page.locator("#video-title").click()
        page.keyboard.press("f")
        assert poll(page, "() => !!document.fullscreenElement", bool)
        page.keyboard.press("f")
        assert poll(page, "() => !document.fullscreenElement", bool)
        page.keyboard.press("?")
        dialog = page.locator("#shortcuts-dialog")
        assert dialog.is_visible() and "Play or pause" in dialog.inner_text()
        shot(page, "player-shortcuts")
        page.keyboard.press("Escape")
        assert not dialog.is_visible()
        # a double-click on the picture: fullscreen, another: back
        box = page.locator("#video").bounding_box()
        page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
        assert poll(page, "() => !!document.fullscreenElement", bool)
        page.mouse.dblclick(640, 300)
        assert poll(page, "() => !document.fullscreenElement", bool)
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


def test_cast_and_airplay_buttons_show_only_where_the_browser_offers_them(site, browser):
    page = new_page(browser)
    try:
        page.goto(f"{site.url}/watch/{site.v['plain']['slug']}")
        ready(page)
        for name, flag in (("media-airplay-button", "mediaairplayunavailable"),
                           ("media-cast-button", "mediacastunavailable")):
            button = page.locator(f"media-control-bar {name}")
            assert button.count() == 1
            # headless Chromium has no AirPlay and no Cast receiver: media-chrome says why and hides it
            page.wait_for_function(f"() => document.querySelector('{name}').hasAttribute('{flag}')")
            assert not button.is_visible()
    finally:
        page.context.close()
