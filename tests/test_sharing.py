"""Sharing on a real app and SeaweedFS: the embed page and who may frame it, oEmbed, link-preview tags,
the public listing and /explore, thumbnail.jpg of any moment, and view counting with its caps."""
from __future__ import annotations

import dataclasses
import html
import re
import secrets
from urllib.parse import urlencode

import av
import pytest
import requests
from conftest import LiveServer, drain_queue, free_port
from media_factory import make_video

from streamforge.store import db as dbmod
from streamforge.store import views as viewstore
from streamforge.store.db import FrameThumbnail, Video
from streamforge.web import create_app

W, H = 320, 136  # the clip's size: a thumbnail 160 wide is 68 high


@pytest.fixture(scope="module")
def site(seaweed, tmp_path_factory):
    """One app on a real port with Ana's public, unlisted and private clip and Ben's public one, processed."""
    tmp = tmp_path_factory.mktemp("sharing")
    port = free_port()
    cfg = seaweed.make_config(tmp, env={"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
                                        "STREAMFORGE_PIPELINE_HEIGHTS": "136",
                                        "STREAMFORGE_PIPELINE_SEGMENT_SECONDS": "2"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    seaweed.store.prepare([cfg.base_url])
    clip = make_video(tmp / "clip.mp4", width=W, height=H, seconds=6, audio=None).read_bytes()
    app = create_app(cfg)
    with LiveServer(app, port=port) as server:
        from streamforge.store import videos
        with dbmod.db.connection_context():
            server.tokens = {who: videos.create_token(videos.get_or_create_user(f"{who}@example.com"))[1]
                             for who in ("ana", "ben")}
        server.cfg, server.app, server.v = cfg, app, {}
        for key, who, title, desc, tags, vis in (
                ("pub", "ana", "Sunset over Lake Bled", "Evening light on the water", ["travel"], "public"),
                ("unl", "ana", "Unlisted lake rehearsal", "For those with the link", ["travel"], "unlisted"),
                ("priv", "ana", "Private lake dinner", "Family only", ["travel"], "private"),
                ("bpub", "ben", "Harbour at dawn", "Trawlers leave before sunrise", ["boats"], "public")):
            server.v[key] = upload(server, who, clip, title=title, description=desc, tags=tags, visibility=vis)
            assert drain_queue() == ["completed"]
        yield server


def h(site, who):
    return {"Authorization": f"Bearer {site.tokens[who]}"} if who else {}


def upload(site, who, data, **fields):
    r = requests.post(f"{site.url}/api/videos", json={"filename": "clip.mp4", "size": len(data),
                                                      "content_type": "video/mp4", **fields}, headers=h(site, who))
    assert r.status_code == 201, r.text
    body = r.json()
    requests.put(body["upload"]["url"], headers=body["upload"]["headers"], data=data, timeout=30).raise_for_status()
    done = requests.post(f"{site.url}/api/videos/{body['video']['id']}/upload/complete", json={}, headers=h(site, who))
    assert done.status_code == 200
    return body["video"]


def video(site, key, who="ana"):
    owner = "ben" if key == "bpub" else "ana"
    return requests.get(f"{site.url}/api/videos/{site.v[key]['id']}", headers=h(site, who or owner)).json()


def frame_ancestors(resp) -> list[str]:
    policy = resp.headers.get("Content-Security-Policy", "")
    return next((d.split()[1:] for d in policy.split(";") if d.split()[:1] == ["frame-ancestors"]), [])


# ---------------------------------------------------------------- embed


def test_embed_page_is_the_player_alone_and_any_site_may_frame_it(site):
    r = requests.get(f"{site.url}/embed/{site.v['pub']['slug']}")
    assert r.status_code == 200
    assert "<video" in r.text and "media-controller" in r.text and "watch.js" in r.text
    assert "quality-menu" in r.text and "site-header" not in r.text  # the watch page's player, no header
    assert frame_ancestors(r) == ["*"]
    assert "X-Frame-Options" not in r.headers
    assert requests.get(f"{site.url}/embed/{site.v['unl']['slug']}").status_code == 200
    # a private video is never embeddable, not even for its owner; the watch page itself is never framable
    assert requests.get(f"{site.url}/embed/{site.v['priv']['slug']}", headers=h(site, "ana")).status_code == 404
    assert requests.get(f"{site.url}/embed/no-such-slug").status_code == 404
    watch = requests.get(site.v["pub"]["watch_url"])
    assert frame_ancestors(watch) == ["'none'"] and watch.headers["X-Frame-Options"] == "DENY"


def test_embed_origins_limit_who_may_frame(site):
    playback = dataclasses.replace(site.cfg.playback, embed_origins=["https://blog.example.com", "'self'"])
    app = create_app(dataclasses.replace(site.cfg, playback=playback))
    try:
        r = app.test_client().get(f"/embed/{site.v['pub']['slug']}")
        assert r.status_code == 200
        assert frame_ancestors(r) == ["https://blog.example.com", "'self'"]
    finally:
        dbmod.init_db(site.cfg.database_url, pooled=True)  # the module's app keeps its database


# ---------------------------------------------------------------- oEmbed and link previews


def oembed(site, url, **extra):
    return requests.get(f"{site.url}/oembed?" + urlencode({"url": url, "format": "json", **extra}))


def test_oembed_describes_public_and_unlisted_videos(site):
    pub = site.v["pub"]
    r = oembed(site, pub["watch_url"])
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    j = r.json()
    assert j["version"] == "1.0" and j["type"] == "video" and j["title"] == pub["title"]
    assert j["provider_name"] == "StreamForge"
    assert j["width"] == 640 and abs(j["height"] - 272) <= 2  # the rungs are even-sized: proportions within a pixel
    src = html.unescape(re.search(r'<iframe[^>]* src="([^"]+)"', j["html"]).group(1))
    assert src == f"{site.url}/embed/{pub['slug']}"
    assert f'width="{j["width"]}"' in j["html"] and "allowfullscreen" in j["html"]
    assert requests.get(j["thumbnail_url"]).content[:3] == b"\xff\xd8\xff"
    assert j["thumbnail_width"] > 0 and j["thumbnail_height"] > 0
    assert oembed(site, src).json()["title"] == pub["title"]  # the embed URL works as well
    assert oembed(site, site.v["unl"]["watch_url"]).status_code == 200
    small = oembed(site, pub["watch_url"], maxwidth=320).json()
    assert small["width"] == 320 and abs(small["height"] - 136) <= 1
    for url in (site.v["priv"]["watch_url"], f"{site.url}/watch/nope", f"https://elsewhere.example/watch/{pub['slug']}",
                f"{site.url}/explore", ""):
        assert oembed(site, url).status_code == 404, url
    assert requests.get(f"{site.url}/oembed?" + urlencode({"url": pub["watch_url"], "format": "xml"})).status_code == 501
    assert oembed(site, pub["watch_url"], maxwidth="-3").status_code == 400


def meta(page: str) -> dict:
    out = {}
    for tag in re.findall(r"<meta\b[^>]*>", page):
        name = re.search(r'(?:property|name)="([^"]+)"', tag)
        content = re.search(r'content="([^"]*)"', tag)
        if name and content:
            out[name.group(1)] = html.unescape(content.group(1))
    return out


def test_watch_pages_of_shared_videos_carry_link_preview_tags(site):
    pub = video(site, "pub")
    page = requests.get(pub["watch_url"]).text
    m = meta(page)
    assert m["og:title"] == pub["title"] and m["og:url"] == pub["watch_url"]
    assert m["og:image"] == pub["cover_url"] and m["twitter:image"] == pub["cover_url"]
    assert m["og:video"] == f"{site.url}/embed/{pub['slug']}" and m["og:video:type"] == "text/html"
    assert m["twitter:card"] == "player" and m["twitter:player"] == m["og:video"]
    assert m["og:description"] == pub["description"]
    link = re.search(r'<link rel="alternate" type="application/json\+oembed" href="([^"]+)"', page)
    assert link and requests.get(html.unescape(link.group(1))).json()["title"] == pub["title"]
    unl = requests.get(site.v["unl"]["watch_url"]).text
    assert meta(unl)["og:title"] == site.v["unl"]["title"] and meta(unl)["robots"] == "noindex"
    # the owner's own private page announces nothing
    own = requests.get(site.v["priv"]["watch_url"], headers=h(site, "ana"))
    assert own.status_code == 200 and "og:title" not in meta(own.text) and "json+oembed" not in own.text
    # the watch page offers the embed code and the share-from-this-moment link
    assert 'id="embed-button"' in page and "&lt;iframe" in page and 'id="moment-button"' in page
    assert 'id="embed-button"' not in own.text


# ---------------------------------------------------------------- public listing and /explore


def listed(site, query=""):
    r = requests.get(f"{site.url}/api/public/videos{query}")
    assert r.status_code == 200, r.text
    ids = {v["id"]: k for k, v in site.v.items()}
    return [ids.get(i["id"], "other") for i in r.json()["items"]]


def test_public_listing_is_public_completed_newest_first_and_searchable(site):
    assert listed(site) == ["bpub", "pub"]
    for query, want in (("?q=lake", ["pub"]), ("?q=LAKE", ["pub"]), ("?q=lak", ["pub"]), ("?tag=travel", ["pub"]),
                        ("?q=travel", ["pub"]), ("?q=trawlers", ["bpub"]), ("?q=sunset+bled", ["pub"]),
                        ("?q=lake+harbour", []), ("?tag=trav", []), ("?tag=Boats", ["bpub"]), ("?q=dinner", [])):
        assert listed(site, query) == want, query
    item = requests.get(f"{site.url}/api/public/videos").json()["items"][0]
    assert "original" not in item and "error_message" not in item
    assert item["embed_url"].endswith(f"/embed/{item['slug']}") and item["cover_url"] and item["views"] >= 0
    for bad in ("?page=0", "?page=abc", "?page=-1", "?q=" + "x" * 201, "?tag=" + "t" * 51):
        r = requests.get(f"{site.url}/api/public/videos{bad}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid", bad
    assert requests.get(f"{site.url}/explore?page=99999999999999999999999&q=%00%27").status_code == 200
    assert requests.get(f"{site.url}/api/public/videos?page=2").json() == {"items": [], "next": None}
    # past the last page: an empty list from the API (never a 500), the last page on /explore
    for huge in ("99999999999999999999999", str(10**23), "1" + "0" * 300):
        r = requests.get(f"{site.url}/api/public/videos?page={huge}")
        assert r.status_code == 200 and r.json() == {"items": [], "next": None}, huge
        page = requests.get(f"{site.url}/explore?page={huge}")
        assert page.status_code == 200 and "Harbour at dawn" in page.text, huge


def test_explore_page_lists_public_titles_with_tag_links_and_search(site):
    page = requests.get(f"{site.url}/explore").text
    assert site.v["pub"]["title"] in page and site.v["bpub"]["title"] in page
    assert site.v["unl"]["title"] not in page and site.v["priv"]["title"] not in page
    assert 'href="/explore?tag=travel"' in page and 'role="search"' in page
    found = requests.get(f"{site.url}/explore?q=harbour").text
    assert site.v["bpub"]["title"] in found and site.v["pub"]["title"] not in found
    tagged = requests.get(f"{site.url}/explore?tag=travel").text
    assert site.v["pub"]["title"] in tagged and site.v["bpub"]["title"] not in tagged
    assert 'class="site-search"' in requests.get(site.v["pub"]["watch_url"]).text  # the header's search box


# ---------------------------------------------------------------- thumbnail.jpg


def thumb(site, key, query, who="ana"):
    return requests.get(f"{site.url}/api/videos/{site.v[key]['id']}/thumbnail.jpg{query}", headers=h(site, who),
                        allow_redirects=False)


def jpeg_size(data: bytes, tmp_path) -> tuple[int, int]:
    path = tmp_path / "t.jpg"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.width, s.height


def test_thumbnail_at_a_time_is_made_once_and_kept(site, tmp_path, monkeypatch):
    r = thumb(site, "priv", "?time=3&width=160")
    assert r.status_code == 302
    img = requests.get(r.headers["Location"]).content
    assert img[:3] == b"\xff\xd8\xff" and abs(jpeg_size(img, tmp_path)[1] - 68) <= 1
    assert jpeg_size(img, tmp_path)[0] == 160
    with dbmod.db.connection_context():
        row = FrameThumbnail.get(FrameThumbnail.video == site.v["priv"]["id"])
    assert row.time_ms == 3000 and row.s3_key.endswith("/thumbnails/at/3000-160.jpg")
    assert site.app.extensions["streamforge.store"].exists(row.s3_key)

    from streamforge.pipeline import frames

    def refuse(*a, **k):
        raise AssertionError("decoded again")
    monkeypatch.setattr(frames, "jpeg_at", refuse)
    again = thumb(site, "priv", "?time=3&width=160")
    assert again.status_code == 302 and requests.get(again.headers["Location"]).content == img
    monkeypatch.undo()
    later = requests.get(thumb(site, "priv", "?time=5.5&width=160").headers["Location"]).content
    assert later != img
    for width, height in ((16, 7), (17, 7), (1920, 816)):
        data = requests.get(thumb(site, "priv", f"?time=0&width={width}").headers["Location"]).content
        got = jpeg_size(data, tmp_path)
        assert got[0] == width and abs(got[1] - height) <= max(1, height // 100), got
    assert thumb(site, "priv", "?time=6&width=64").status_code == 302  # the very end
    # a video keeps a bounded number of made pictures; those made are still served
    from streamforge.jobs import moments
    monkeypatch.setattr(moments, "MAX_FRAMES_PER_OUTPUT", 3)
    refused = thumb(site, "priv", "?time=2&width=99")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert thumb(site, "priv", "?time=3&width=160").status_code == 302


@pytest.mark.parametrize("query", ["?time=60&width=160", "?time=-1&width=160", "?time=abc", "?time=nan",
                                   "?time=inf", "?time=1&width=15", "?time=1&width=1921", "?time=1&width=3.5"])
def test_thumbnail_bounds_are_checked(site, query):
    r = thumb(site, "pub", query)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid", query


def test_thumbnail_is_for_whoever_may_watch(site):
    assert thumb(site, "priv", "?time=1&width=64", who="ben").status_code == 404
    assert thumb(site, "priv", "?time=1&width=64", who=None).status_code == 404
    assert thumb(site, "unl", "?time=1&width=64", who=None).status_code == 302
    r = thumb(site, "pub", "?time=1&width=64", who=None)
    assert r.status_code == 302 and requests.get(r.headers["Location"]).content[:3] == b"\xff\xd8\xff"
    waiting = requests.post(f"{site.url}/api/videos", headers=h(site, "ana"), json={
        "title": "no bytes yet", "filename": "w.mp4", "size": 10, "content_type": "video/mp4"}).json()["video"]
    r = requests.get(f"{site.url}/api/videos/{waiting['id']}/thumbnail.jpg?time=0", headers=h(site, "ana"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    requests.delete(f"{site.url}/api/videos/{waiting['id']}", headers=h(site, "ana"))


# ---------------------------------------------------------------- views


def report(site, key, session, seconds, who=None):
    return requests.post(f"{site.url}/api/videos/{site.v[key]['id']}/views",
                         json={"session": session, "watched_seconds": seconds}, headers=h(site, who))


def test_views_count_once_per_session_and_sum_watch_time(site):
    s1, s2 = secrets.token_hex(8), secrets.token_hex(8)
    for s, sec in ((s1, 4), (s1, 4), (s2, 4)):
        assert report(site, "bpub", s, sec).status_code == 204
    v = video(site, "bpub", who="ben")
    assert v["views"] == 2 and v["watch_seconds"] == 12
    assert report(site, "unl", s1, 1).status_code == 204
    for who in (None, "ben"):
        assert report(site, "priv", s2, 4, who).status_code == 404
    assert report(site, "priv", s2, 4, "ana").status_code == 204  # its owner may watch it
    mine = requests.get(f"{site.url}/api/videos?sort=views", headers=h(site, "ana")).json()["items"]
    assert [x["views"] for x in mine] == sorted((x["views"] for x in mine), reverse=True)
    assert mine[-1]["id"] == site.v["pub"]["id"] and mine[-1]["views"] < mine[0]["views"]
    assert requests.get(f"{site.url}/api/videos?sort=bogus", headers=h(site, "ana")).status_code == 400
    library = requests.get(f"{site.url}/?sort=views", headers=h(site, "ana")).text
    assert library.index(site.v["pub"]["title"]) > library.index(site.v["priv"]["title"])
    assert 'data-role="views">1 view<' in library
    assert "1 view" in requests.get(site.v["unl"]["watch_url"]).text


@pytest.mark.parametrize("body", [None, [], {"watched_seconds": 3}, {"session": "short", "watched_seconds": 3},
                                  {"session": "a" * 65, "watched_seconds": 3},
                                  {"session": "has spaces in it", "watched_seconds": 3},
                                  {"session": "abcdefgh1234", "watched_seconds": -1},
                                  {"session": "abcdefgh1234", "watched_seconds": "4"},
                                  {"session": "abcdefgh1234", "watched_seconds": True},
                                  {"session": "abcdefgh1234", "watched_seconds": 1e12}])
def test_bad_view_reports_are_refused(site, body):
    r = requests.post(f"{site.url}/api/videos/{site.v['pub']['id']}/views", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"


def test_view_caps_per_address_and_session(site, monkeypatch):
    with dbmod.db.connection_context():
        before = Video.get_by_id(site.v["unl"]["id"])
    # a session cannot claim more watch time than it has been alive (plus what played before its first report)
    s = secrets.token_hex(8)
    assert report(site, "unl", s, 5000).status_code == 204
    assert report(site, "unl", s, 5000).status_code == 204
    with dbmod.db.connection_context():
        after = Video.get_by_id(site.v["unl"]["id"])
    gained = after.watch_seconds - before.watch_seconds
    assert viewstore.FIRST_REPORT_ALLOWANCE <= gained < viewstore.FIRST_REPORT_ALLOWANCE + 10
    monkeypatch.setattr(viewstore, "MAX_REPORTS", 3)
    assert report(site, "unl", s, 1).status_code == 204
    r = report(site, "unl", s, 1)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    # an address starts only so many sessions an hour: later ones are not counted
    with dbmod.db.connection_context():
        used = dbmod.ViewSession.select().count()
    playback = dataclasses.replace(site.cfg.playback, views_per_address_hour=used + 1)
    monkeypatch.setitem(site.app.extensions, "streamforge", dataclasses.replace(site.cfg, playback=playback))
    assert report(site, "pub", secrets.token_hex(8), 1).status_code == 204
    views = video(site, "pub")["views"]
    assert report(site, "pub", secrets.token_hex(8), 1).status_code == 429
    assert video(site, "pub")["views"] == views


# ---------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser():
    import os

    from browser_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT
    from conftest import require
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    require((ROOT / "streamforge/web/static/vendor/versions.json").exists(), "the browser libraries are not "
            "installed: run `npm ci` at the repository root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        br = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield br
        br.close()


@pytest.fixture
def parent_site():
    """Another site (localhost on another port, not 127.0.0.1) that serves the page framing the embed."""
    import http.server
    import threading

    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.pages, server.url = pages, f"http://localhost:{server.server_port}"
    yield server
    server.shutdown()
    server.server_close()


def _new_page(browser):
    from browser_helpers import watch_page
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    page.set_default_timeout(20000)
    page.troubles = watch_page(page)
    return page


@pytest.mark.browser
def test_the_embed_plays_inside_another_sites_iframe_and_reports_a_view(site, browser, parent_site):
    from browser_helpers import poll, shot
    pub = video(site, "bpub", who="ben")
    embed = f"{site.url}/embed/{pub['slug']}"
    parent_site.pages["/"] = (f'<!doctype html><title>A blog</title><h1>My trip</h1><iframe id="player" src="{embed}" '
                              f'width="640" height="272" allow="autoplay; fullscreen"></iframe>')
    page = _new_page(browser)
    try:
        page.goto(parent_site.url + "/")
        frame = page.frame_locator("#player")
        frame.locator("media-controller").wait_for()
        inner = next(f for f in page.frames if f.url.startswith(embed))
        inner.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.loop = true;"
                       " v.play().catch(() => {}) }")
        played = poll(inner, "() => document.querySelector('video').currentTime", lambda t: t > 2, timeout=30)
        assert played > 2, "the embedded player did not play"
        assert inner.evaluate("() => !!(window.Hls && window.streamforgePlayer.hls)")
        assert inner.evaluate("() => document.querySelector('video').videoWidth") > 0
        # the same controls as the watch page, quality menu included
        assert frame.locator("media-rendition-menu").count() == 1 and frame.locator("media-play-button").count() == 1
        shot(page, "embed-in-another-site")
        # after a few seconds played the player reports the view (the frame has no cookie: anonymous)
        assert poll(inner, "() => document.querySelector('video').dataset.viewReported || ''", bool, timeout=30)
        for _ in range(30):
            if video(site, "bpub", who="ben")["views"] > pub["views"]:
                break
            page.wait_for_timeout(500)
        assert video(site, "bpub", who="ben")["views"] == pub["views"] + 1
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()


@pytest.mark.browser
def test_watch_page_embed_code_and_a_link_from_this_moment(site, browser):
    from browser_helpers import poll, shot
    pub = site.v["pub"]
    page = _new_page(browser)
    try:
        page.goto(pub["watch_url"] + "?t=3")
        # ?t= starts the player at that moment
        start = poll(page, "() => document.querySelector('video').currentTime", lambda t: t >= 2.9, timeout=30)
        assert start >= 2.9
        page.locator("#embed-button").click()
        code = page.locator("#share-code").input_value()
        assert code.startswith("<iframe") and f'src="{site.url}/embed/{pub["slug"]}"' in code
        page.evaluate("() => { const v = document.querySelector('video'); v.pause(); v.currentTime = 4.2 }")
        poll(page, "() => document.querySelector('video').currentTime", lambda t: abs(t - 4.2) < 0.3)
        page.locator("#moment-button").click()
        link = page.locator("#share-code").input_value()
        assert link == f"{pub['watch_url']}?t=4"
        loaded = poll(page, "() => { const i = document.getElementById('moment-image'); "
                            "return i.complete ? i.naturalWidth : 0 }", bool, timeout=30)
        assert loaded == 320, "the picture of that moment did not load"
        shot(page, "watch-share-moment", full_page=True)
        page.goto(f"{site.url}/explore?q=lake")
        assert page.locator("#explore .card-title").all_inner_texts() == [pub["title"]]
        page.locator(".tag a", has_text="travel").first.click()
        page.wait_for_url("**/explore?tag=travel")
        shot(page, "explore-tag", full_page=True)
        assert page.troubles["errors"] == [], page.troubles["errors"]
    finally:
        page.context.close()
