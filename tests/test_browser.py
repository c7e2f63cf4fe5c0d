"""The pages in real Chromium (Debian's, driven by Playwright) against a real `streamforge serve`.

One service and one signed-in browser for the module: upload a real clip through /upload and see
the bar move, follow its processing, play it on /watch past 3 s, switch quality through the menu,
hover the timeline for a preview thumbnail, manage it from the library, resume a multipart upload
after a reload, and create and revoke an API token. Screenshots go to artifacts/screenshots/.
"""
from __future__ import annotations

import os
import re
import time

import pytest
import requests
from browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PROGRESS_WATCH,
    ROOT,
    Api,
    Service,
    poll,
    shot,
    watch_page,
)
from conftest import MEDIA, require

pytestmark = pytest.mark.browser

CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
SMALL_CLIP = MEDIA / "bikes-640x272-10s-noaudio.mp4"
MiB = 1024 * 1024
DESCRIPTION = "A rabbit, a meadow,\nand three rodents."
TAGS = ["animation", "open movie"]
CODEC_LABELS = {"h264": "H.264", "vp9": "VP9", "av1": "AV1", "hevc": "HEVC"}
VENDOR = ROOT / "streamforge" / "web" / "static" / "vendor" / "versions.json"


@pytest.fixture(scope="module")
def service():
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    require(VENDOR.exists(), "the browser libraries are not installed: run `npm ci` at the repository root")
    require(CLIP.exists(), f"test clip {CLIP} missing")
    svc = Service(env={
        # multipart above 8 MiB in 5 MiB parts, so a 12 MiB file takes 3 parts
        "STREAMFORGE_UPLOAD_MULTIPART_THRESHOLD": str(8 * MiB),
        "STREAMFORGE_UPLOAD_PART_SIZE": str(5 * MiB),
        # two codecs on a short ladder: the quality menu must tell the rungs apart
        "STREAMFORGE_PIPELINE_CODECS": "h264,vp9",
        "STREAMFORGE_PIPELINE_HEIGHTS": "480,360",
    }).start()
    try:
        svc.tok = svc.token("viewer@example.com")
        svc.api = Api(svc.url, svc.tok)
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        br = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield br
        br.close()


@pytest.fixture(scope="module")
def context(browser, service):
    """A browser signed in through the one-time link, as `serve` prints it."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.add_init_script(PROGRESS_WATCH)
    page = ctx.new_page()
    page.goto(f"{service.url}/login?token={service.tok}")
    assert page.url.rstrip("/") == service.url, page.url
    page.close()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.troubles = watch_page(pg)
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def state():
    return {}


def no_troubles(page, console=True):
    assert page.troubles["errors"] == [], page.troubles["errors"]
    if console:
        assert page.troubles["console"] == [], page.troubles["console"]


def completed_video(service, state) -> dict:
    """The clip uploaded through the page (or, if that test did not get there, through the API), COMPLETED."""
    if "video" not in state:
        v = service.api.upload_bytes(CLIP.read_bytes(), CLIP.name, "Big Buck Bunny", tags=TAGS,
                                     description=DESCRIPTION)
        state["video"] = service.api.wait(v["id"], lambda x: x["status"] in ("COMPLETED", "FAILED"), 180)
    v = service.api.video(state["video"]["id"])
    assert v["status"] == "COMPLETED", v.get("error_message")
    return v


# ---------------------------------------------------------------- upload

# the page's one file picker: the Dashboard's own input (behind its "choose a file" button)
UPPY_PICKER = "#uppy-dashboard input.uppy-Dashboard-input[type=file]"


def test_upload_page_sends_the_file_with_a_moving_bar_and_follows_processing(page, service, state):
    page.goto(f"{service.url}/upload")
    form = page.locator("#upload-form")
    from playwright.sync_api import expect
    picker = form.locator(UPPY_PICKER).first
    picker.wait_for(state="attached")
    # one file picker on the page: Uppy's (its hidden input behind "choose a file"), no native one above it
    assert page.locator("input[type=file]").count() == page.locator(UPPY_PICKER).count() >= 1
    assert page.locator("input[type=file]:visible").count() == 0
    picker.set_input_files(str(CLIP))
    # the title is filled from the file name (once the uploader has loaded), and can be changed
    expect(form.locator("input[name=title]")).to_have_value("bigbuckbunny-720p-5s")
    form.locator("input[name=title]").fill("Big Buck Bunny")
    form.locator("textarea[name=description]").fill("A rabbit, a meadow,\nand three rodents.")
    form.locator("input[name=tags]").fill("animation, open movie")
    shot(page, "upload-selected")
    form.locator("[type=submit]").click()

    # a bar became visible and moved, and the row reached the end of the upload
    seen = poll(page, "() => window.__progress.seen", lambda n: n > 0, timeout=15)
    assert seen > 0, "no visible progress bar with a value above 0"
    row = page.locator(".upload-item").first
    row.wait_for()
    vid = poll(page, "() => window.streamforgeUppy?.getFiles()[0]?.meta.videoId", bool, timeout=15)
    assert vid
    v = service.api.video(vid)
    assert v["title"] == "Big Buck Bunny" and v["tags"] == TAGS and v["description"] == DESCRIPTION
    assert v["original"]["size"] == CLIP.stat().st_size

    # the row follows the processing without a reload, until the video is ready to watch
    page.locator(".upload-item [data-role=badge]", has_text="Processing").or_(
        page.locator(".upload-item [data-role=badge]", has_text="Ready")).first.wait_for(timeout=60000)
    shot(page, "upload-processing")
    row.locator("[data-role=badge]", has_text="Ready").wait_for(timeout=120000)
    assert row.get_by_role("link", name="Watch", exact=True).count() == 1
    assert page.locator(".upload-item progress").first.evaluate("el => el.value") == 100
    state["video"] = service.api.wait(vid, lambda x: x["status"] == "COMPLETED", 30, "COMPLETED")
    shot(page, "upload")
    no_troubles(page)


def test_upload_button_stays_put_while_the_uploader_loads(page, service):
    # Uppy (a 1 MB module) is held back: the Dashboard's place is kept free meanwhile, so a click on
    # Upload made before it arrives lands on Upload (it once landed 240 px above it on a slow machine)
    held = []
    page.route("**/uppy.min.mjs", lambda route: held.append(route))
    page.goto(f"{service.url}/upload", wait_until="domcontentloaded")
    poll(page, "() => document.readyState", lambda s: s != "loading", timeout=10)
    page.wait_for_timeout(300)
    before = page.locator("#upload-submit").bounding_box()
    assert held, "the uploader module was not requested"
    for route in held:
        route.continue_()
    page.wait_for_function("() => window.streamforgeUppy")
    assert page.locator("#upload-submit").bounding_box() == before
    assert page.locator("#uppy-dashboard .uppy-Dashboard").count() == 1


def test_multipart_upload_resumes_after_a_reload(page, service, tmp_path):
    # 12 MiB of noise: three 5 MiB parts. The third part is held back, the page reloaded, the file
    # picked again (too big for IndexedDB, so Uppy keeps a "ghost"), and only that part is sent.
    big = tmp_path / "holiday.mp4"
    big.write_bytes(os.urandom(12 * MiB))
    sent, answers, console = [], [], []
    page.on("request", lambda r: sent.append(r.url) if r.method == "PUT" and "partNumber=" in r.url else None)
    page.on("response", lambda r: answers.append((r.request.method, r.url.split("?")[0][-60:], r.status))
            if "/api/" in r.url else None)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    held = []
    page.route(lambda url: "partNumber=3" in url, lambda route: held.append(route))
    page.goto(f"{service.url}/upload")
    page.locator(UPPY_PICKER).first.set_input_files(str(big))
    box = page.locator("#upload-submit").bounding_box()
    # as a person would: the file shows in the uploader, then Upload (which stays where it was)
    assert poll(page, "() => window.streamforgeUppy?.getFiles().length", bool, timeout=30)
    assert page.locator("#upload-submit").bounding_box() == box
    page.locator("#upload-submit").click()
    vid = poll(page, "() => window.streamforgeUppy?.getFiles()[0]?.meta.videoId", bool, timeout=30)
    assert vid, ("the upload did not start", page.locator("#upload-error").inner_text(), page.troubles, answers,
                 console, page.evaluate("""() => [document.getElementById('upload-title').value,
                     document.getElementById('upload-form').checkValidity(),
                     document.getElementById('upload-submit').disabled,
                     window.streamforgeUppy?.getState().recoveredState ? 'recovered' : 'fresh',
                     window.streamforgeUppy?.getFiles().map((f) => [f.name, f.isRestored, f.progress])]"""))
    deadline = time.time() + 30
    while time.time() < deadline:
        parts = service.api.call("GET", f"/api/videos/{vid}/upload/parts")["parts"]
        if len(parts) == 2:
            break
        page.wait_for_timeout(250)
    assert len(parts) == 2 and held, (parts, held)
    assert sorted(int(re.search(r"partNumber=(\d+)", u).group(1)) for u in sent) == [1, 2, 3]
    values = page.evaluate("() => window.__progress.values")
    assert any(0 < x < 100 for x in values), values  # the bar moved on the way
    shot(page, "upload-multipart-held")

    sent.clear()
    page.reload()  # the held part dies with the page; then let parts through again
    page.unroute_all(behavior="ignoreErrors")
    row = page.locator(".upload-item").first
    row.locator("[data-role=badge]", has_text="Interrupted").wait_for()
    assert "Choose the same file again" in row.inner_text()
    shot(page, "upload-restored")
    # one step: the card's Resume asks for the file again (too big for the browser to keep), and the
    # upload goes on from there with no other press
    with page.expect_file_chooser() as chooser:
        row.locator("[data-action=resumeRestored]").click()
    chooser.value.set_files(str(big))
    v = service.api.wait(vid, lambda x: x["upload_status"] == "UPLOADED", 30, "UPLOADED", page=page)
    assert v["original"]["size"] == 12 * MiB
    assert [re.search(r"partNumber=(\d+)", u).group(1) for u in sent] == ["3"], sent
    assert page.troubles["errors"] == []
    service.api.call("DELETE", f"/api/videos/{vid}")


# ---------------------------------------------------------------- watch


def test_watch_page_plays_switches_quality_and_previews_the_timeline(page, service, state):
    v = completed_video(service, state)
    segments = []
    page.on("request", lambda r: segments.append(r.url) if re.search(r"\.(m4s|ts|mp4)(\?|$)", r.url) else None)
    page.goto(v["watch_url"])
    html = page.content()
    assert "<video" in html
    assert page.locator("h1").inner_text() == v["title"]
    assert page.locator(".tag").all_inner_texts() == v["tags"]
    assert "three rodents" in page.locator(".description").inner_text()
    assert page.locator("video").get_attribute("poster") == v["cover_url"]

    # play (muted, as a browser allows without a gesture) past 3 s
    t0 = time.time()
    played = 0.0
    while time.time() - t0 < 40 and played < 3.0:
        played = page.evaluate("() => document.querySelector('video').currentTime")
        page.evaluate("() => { const v = document.querySelector('video'); if (v.paused) { v.muted = true;"
                      " v.play().catch(() => {}) } }")
        page.wait_for_timeout(300)
    assert played >= 3.0
    assert page.evaluate("() => document.querySelector('video').videoWidth") > 0
    assert segments, "no media segment was fetched"
    assert page.evaluate("() => window.Hls && !!window.streamforgePlayer.hls"), "hls.js (not native HLS) plays"

    # the quality menu lists every rung with its codec (there are two); choosing one switches to it
    rungs = sorted(((r["height"], CODEC_LABELS[r["codec"]]) for r in v["renditions"]),
                   key=lambda x: (-x[0], x[1]))
    assert {c for _, c in rungs} == {"H.264", "VP9"}, rungs
    page.locator("media-settings-menu-button").click()
    page.locator("media-settings-menu-item", has_text="Quality").click()
    items = page.locator("media-rendition-menu [role=menuitemradio]")
    items.first.wait_for()
    labels = items.all_inner_texts()
    assert [x for x in labels if not x.startswith("Auto")] == [f"{h}p · {c}" for h, c in rungs], labels
    shot(page, "watch-quality-menu")
    lowest, codec = min(h for h, _ in rungs), "VP9"
    page.locator("media-rendition-menu").get_by_role("menuitemradio", name=f"{lowest}p · {codec}").click()
    page.evaluate("() => { const v = document.querySelector('video'); v.currentTime = 0; v.muted = true;"
                  " return v.play() }")
    # the choice holds (no automatic switching), and what plays is that rung: the picture's height and the
    # level hls.js is playing at the playhead (both are waited for together: right after the switch the
    # picture on screen may still come from the level played before)
    playing = poll(page, "() => { const h = window.streamforgePlayer.hls; const l = h.levels[h.currentLevel];"
                         " return [document.querySelector('video').videoHeight, l && l.height, l && l.videoCodec] }",
                   lambda x: x[0] == lowest and x[1] == lowest and (x[2] or "").startswith("vp09"), timeout=20)
    assert playing[0] == playing[1] == lowest and playing[2].startswith("vp09"), playing
    chosen = page.evaluate("() => { const h = window.streamforgePlayer.hls; const l = h.levels[h.loadLevel];"
                           " return [h.autoLevelEnabled, l.height, l.videoCodec] }")
    assert chosen[0] is False and chosen[1] == lowest and chosen[2].startswith("vp09"), chosen
    assert poll(page, "() => document.querySelector('video').currentTime", lambda t: t > 0.5, timeout=10) > 0.5

    # hovering the timeline shows the thumbnail of that moment, from the WebVTT sprite
    page.evaluate("() => document.querySelector('video').pause()")
    page.keyboard.press("Escape")  # close the settings menu
    page.locator("media-settings-menu").wait_for(state="hidden")
    bar = page.locator("media-time-range")
    box = bar.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    preview = page.locator("media-time-range > media-preview-thumbnail")
    image = poll(page, "() => document.querySelector('media-time-range > media-preview-thumbnail')"
                       ".getAttribute('mediapreviewimage')",
                 bool, timeout=10)
    assert image and "sprite" in image and "#xywh=" in image, image
    pbox = preview.bounding_box()
    assert pbox and pbox["width"] > 40 and pbox["height"] > 20
    loaded = poll(page, """() => { const t = document.querySelector('media-time-range > media-preview-thumbnail');
        const img = t.shadowRoot && t.shadowRoot.querySelector('img');
        return img ? img.complete && img.naturalWidth : 0 }""", bool, timeout=10)
    assert loaded, "the sprite image did not load"
    # the preview shows while the pointer moves over the bar (it fades when the viewer goes idle)
    page.mouse.move(box["x"] + box["width"] * 0.62, box["y"] + box["height"] / 2, steps=3)
    page.wait_for_timeout(300)
    assert preview.is_visible()
    shot(page, "watch-timeline-preview")
    no_troubles(page)


def test_watch_page_of_a_video_being_processed_waits_then_plays(page, service):
    # the owner opens the page right after the upload: a status overlay, then the player by itself
    v = service.api.upload_bytes(SMALL_CLIP.read_bytes(), SMALL_CLIP.name, "Bikes")
    page.goto(v["watch_url"])
    assert page.locator("video").count() == 1
    played = poll(page, """() => { const v = document.querySelector('video');
        if (v.paused && v.readyState > 1) { v.muted = true; v.play().catch(() => {}) } return v.currentTime }""",
                  lambda t: t >= 1.0, timeout=90, step_ms=400)
    assert played >= 1.0
    assert page.locator("#player-overlay").is_hidden()
    shot(page, "watch-after-processing")
    no_troubles(page)


def test_watch_page_plays_the_growing_event_playlist_while_processing(page, service, tmp_path):
    # a 90 s clip on an H.264 + VP9 ladder takes a while: the owner's page starts playing as soon as
    # the master is published, from the EVENT playlists the worker is still growing
    from media_factory import make_video
    clip = make_video(tmp_path / "long.mp4", width=640, height=360, seconds=90, audio=None,
                      options={"crf": "38"})  # ~6 MiB: one PUT (multipart starts at 8 MiB here)
    v = service.api.upload_bytes(clip.read_bytes(), "long.mp4", "Still encoding")
    v = service.api.wait(v["id"], lambda x: x["playable_at"] or x["status"] not in ("PENDING", "PROCESSING"),
                         60, "playable")
    assert v["status"] == "PROCESSING" and v["master_playlist_url"], (v["status"], v["error_message"])
    playlists = []

    def on_response(r):
        if ".m3u8" in r.url and r.ok:
            playlists.append(r.text())
    page.on("response", on_response)
    page.goto(v["watch_url"])
    played = poll(page, """() => { const v = document.querySelector('video');
        if (v.paused && v.readyState > 1) { v.muted = true; v.play().catch(() => {}) } return v.currentTime }""",
                  lambda t: t >= 1.0, timeout=60, step_ms=300)
    assert played >= 1.0
    media = [t for t in list(playlists) if "#EXT-X-TARGETDURATION" in t]
    during = service.api.video(v["id"])
    assert during["status"] == "PROCESSING", "the video finished before the page played it; use a longer clip"
    # hls.js started on the growing EVENT playlists (the run makes them VOD only at its very end)
    assert media and "#EXT-X-PLAYLIST-TYPE:EVENT" in media[0] and "#EXT-X-ENDLIST" not in media[0], media[:1]
    no_troubles(page)
    service.api.wait(v["id"], lambda x: x["status"] in ("COMPLETED", "FAILED"), 240, "done")
    service.api.call("DELETE", f"/api/videos/{v['id']}")


def test_watch_page_hides_private_videos_from_others(browser, service, state):
    v = completed_video(service, state)
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        r = pg.goto(v["watch_url"])
        assert r.status == 404
        assert "<video" not in pg.content()
    finally:
        ctx.close()


# ---------------------------------------------------------------- library


def test_library_shows_cards_updates_live_and_edits(page, service, state):
    v = completed_video(service, state)
    page.goto(service.url + "/")
    card = page.locator(f".video-card[data-video-id='{v['id']}']")
    assert card.locator(".card-title").inner_text() == v["title"]
    assert card.locator("[data-role=badge]").inner_text().lower() == "ready"
    assert card.locator("[data-role=duration]").inner_text() == "0:05"
    assert poll(page, f"""() => document.querySelector(".video-card[data-video-id='{v['id']}'] img")?.naturalWidth""",
                bool, timeout=10)

    # a video uploaded meanwhile shows its progress, then becomes ready without a reload
    fresh = service.api.upload_bytes(SMALL_CLIP.read_bytes(), SMALL_CLIP.name, "Bikes again")
    page.reload()
    other = page.locator(f".video-card[data-video-id='{fresh['id']}']")
    assert other.locator("[data-role=badge]").inner_text().lower() in ("queued", "processing", "ready")
    other.locator("[data-role=badge]", has_text="Ready").wait_for(timeout=90000)
    assert other.locator("[data-role=progress]").is_hidden()
    assert other.locator("[data-role=duration]").inner_text() == "0:10"

    # edit through the dialog
    card.locator("[data-action=edit]").click()
    dialog = page.locator("#edit-dialog")
    dialog.locator("input[name=title]").fill("Big Buck Bunny (edited)")
    dialog.locator("select[name=visibility]").select_option("unlisted")
    shot(page, "library-edit")
    dialog.locator("[type=submit]").click()
    card.locator(".card-title", has_text="(edited)").wait_for()
    assert dialog.is_hidden()
    after = service.api.video(v["id"])
    assert after["title"] == "Big Buck Bunny (edited)" and after["visibility"] == "unlisted"
    state["video"] = after
    shot(page, "library")
    no_troubles(page)


def test_library_shows_failures_reprocesses_and_deletes(page, service):
    bad = service.api.upload_bytes(b"this is not a video" * 1000, "broken.mp4", "Broken upload")
    service.api.wait(bad["id"], lambda x: x["status"] == "FAILED", 60, "FAILED")
    page.goto(service.url + "/")
    card = page.locator(f".video-card[data-video-id='{bad['id']}']")
    assert card.locator("[data-role=badge]").inner_text().lower() == "failed"
    assert card.locator("[data-role=error]").inner_text().strip()
    shot(page, "library-failed")
    def failures():
        return sum(1 for x in service.api.call("GET", f"/api/videos/{bad['id']}/logs")["items"]
                   if x["status"] == "failed")

    before = failures()
    card.locator("[data-action=reprocess]").click()
    deadline = time.time() + 60
    while failures() == before and time.time() < deadline:
        page.wait_for_timeout(300)
    assert failures() > before, "reprocessing did not run again"
    card.locator("[data-role=badge]", has_text="Failed").wait_for(timeout=30000)

    card.locator("[data-action=delete]").click()
    page.locator("#delete-dialog [type=submit]").click()
    card.wait_for(state="detached")
    r = requests.get(f"{service.url}/api/videos/{bad['id']}", headers=service.api.headers, timeout=10)
    assert r.status_code == 404 or r.json()["status"] == "ARCHIVED"
    no_troubles(page)


# ---------------------------------------------------------------- tokens and header


def test_tokens_page_creates_shows_once_and_revokes(page, service):
    page.goto(service.url + "/tokens")
    page.locator("#token-name").fill("backup script")
    page.locator("#token-form [type=submit]").click()
    value = page.locator("#new-token-value")
    value.wait_for()
    token = value.input_value()
    assert token.startswith("sf_")
    row = page.locator("#tokens-body tr", has_text="backup script")
    assert row.count() == 1
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{service.url}/api/videos", headers=headers, timeout=10).status_code == 200
    shot(page, "tokens")

    page.reload()  # shown once: after a reload only its prefix is left
    assert token not in page.content()
    page.once("dialog", lambda d: d.accept())
    page.locator("#tokens-body tr", has_text="backup script").locator("[data-action=revoke]").click()
    page.locator("#tokens-body tr", has_text="backup script").wait_for(state="detached")
    assert requests.get(f"{service.url}/api/videos", headers=headers, timeout=10).status_code == 401
    no_troubles(page)


def test_header_links_and_sign_out(browser, service):
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.goto(f"{service.url}/login?token={service.tok}")
        nav = pg.locator("header nav")
        for name in ("Library", "Upload", "API tokens"):
            assert nav.get_by_role("link", name=name).count() == 1
        nav.get_by_role("button", name="Sign out").click()
        pg.wait_for_url(re.compile(r"/login"))
        assert pg.locator("header").get_by_role("link", name="Sign in").count() == 1
        pg.goto(service.url + "/upload")
        assert "/login" in pg.url
    finally:
        ctx.close()


def test_pages_say_so_when_the_vendor_files_are_missing(browser, service):
    """Without `npm ci` the pages still render and tell the reader what to run."""
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.route(re.compile(r"/static/vendor/"), lambda route: route.fulfill(status=404, body="missing"))
        errors = watch_page(pg)
        pg.goto(f"{service.url}/login?token={service.tok}")
        pg.goto(service.url + "/upload")
        notice = pg.locator(".vendor-missing")
        notice.wait_for()
        assert "npm ci" in notice.inner_text()
        assert pg.locator("#upload-submit").is_disabled()
        assert errors["errors"] == []
    finally:
        ctx.close()
