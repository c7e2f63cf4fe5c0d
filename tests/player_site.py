"""A pytest plugin (conftest's pytest_plugins) for the player, playlist, upload-queue and page tests: one app on
a real port against the session's SeaweedFS with a few processed clips (one with a caption track), made once
a session; Chromium pages signed in by token link; axe-core."""
from __future__ import annotations

import dataclasses
import os

import pytest
import requests
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, watch_page
from conftest import LiveServer, drain_queue, free_port, require
from media_factory import make_video

from streamforge.store import db as dbmod
from streamforge.store import videos
from streamforge.web import create_app

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:30.000\nHello from the captions\n"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def h(site, who: str) -> dict:
    """Bearer headers of ana (the owner), ben (another uploader) or '' (nobody)."""
    return {"Authorization": f"Bearer {site.tokens[who]}"} if who else {}


def upload(site, who: str, data: bytes, **fields) -> dict:
    """Create, PUT and complete an upload through the API; returns its VIDEO."""
    r = requests.post(f"{site.url}/api/videos", json={"filename": "clip.mp4", "size": len(data),
                                                      "content_type": "video/mp4", **fields}, headers=h(site, who))
    assert r.status_code == 201, r.text
    body = r.json()
    requests.put(body["upload"]["url"], data=data, headers=body["upload"].get("headers") or {},
                 timeout=30).raise_for_status()
    done = requests.post(f"{site.url}/api/videos/{body['video']['id']}/upload/complete", json={},
                         headers=h(site, who), timeout=30)
    assert done.status_code == 200, done.text
    return body["video"]


@pytest.fixture(scope="session")
def player_site_once(seaweed, tmp_path_factory):
    """Ana's public clip with an English caption track, her public and private clips without, Ben's public one:
    made once for the session (processing is the slow part); `site` points the database at it per module."""
    tmp = tmp_path_factory.mktemp("player")
    port = free_port()
    cfg = seaweed.make_config(tmp, env={"STREAMFORGE_SERVER_BASE_URL": f"http://127.0.0.1:{port}",
                                        "STREAMFORGE_PIPELINE_HEIGHTS": "360",
                                        "STREAMFORGE_PIPELINE_SEGMENT_SECONDS": "2"})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=port))
    seaweed.store.prepare([cfg.base_url])
    clip = make_video(tmp / "clip.mp4", width=640, height=360, seconds=12).read_bytes()
    app = create_app(cfg)
    with LiveServer(app, port=port) as server:
        with dbmod.db.connection_context():
            server.tokens = {who: videos.create_token(videos.get_or_create_user(f"{who}@example.com"))[1]
                             for who in ("ana", "ben")}
        server.cfg, server.app, server.v = cfg, app, {}
        for key, who, title, vis in (("cc", "ana", "Lake with captions", "public"),
                                     ("plain", "ana", "Lake without captions", "public"),
                                     ("priv", "ana", "Private lake", "private"),
                                     ("ben", "ben", "Harbour at dawn", "public")):
            server.v[key] = upload(server, who, clip, title=title, visibility=vis,
                                   description="Filmed at https://example.org/lake?x=1&y=<b> on a calm day.")
            assert drain_queue() == ["completed"]
        r = requests.post(f"{server.url}/api/videos/{server.v['cc']['id']}/captions",
                          json={"language": "en", "label": "English", "content": VTT}, headers=h(server, "ana"))
        assert r.status_code == 201, r.text
        yield server


@pytest.fixture(scope="module")
def site(player_site_once, seaweed):
    """The session's player site, with the process-wide database and queue pointed at it again and the
    store's CORS rule naming it again (tests of other modules change them), as test_security's World.activate."""
    from streamforge.jobs import tasks
    seaweed.store.prepare([player_site_once.cfg.base_url])
    dbmod.init_db(player_site_once.cfg.database_url)
    tasks.configure(player_site_once.cfg)
    return player_site_once


@pytest.fixture(scope="module")
def browser():
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


def new_page(browser, site=None, who: str = "", width: int = 1280, height: int = 800, **options):
    """A page in a fresh context of that size, signed in as `who` (through the token link) when given."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.set_default_timeout(20000)
    page.troubles = watch_page(page)
    if who:
        page.goto(f"{site.url}/login?token={site.tokens[who]}")
    return page


def axe(page) -> list[dict]:
    """axe-core's critical and serious violations on the page (axe-core injected from node_modules)."""
    require(AXE.exists(), "axe-core is not installed: run `npm ci` at the repository root")
    page.evaluate(AXE.read_text())  # through DevTools: the page's CSP (script-src 'self') does not apply
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                          ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))"
                          ".slice(0, 5), help: v.help}))")
    return [v for v in found if v["impact"] in ("critical", "serious")]
