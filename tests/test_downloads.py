"""Downloads: a rendition as a progressive MP4 (moov before mdat, the HLS packets remuxed, with audio),
made once on first request even when two requests race, reused after; the original's exact bytes; who
may download per `[playback] downloads`."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import av
import media_live
import pytest
import requests
from conftest import drain_queue
from media_live import fetch, ffmpeg, get, upload

from streamforge.pipeline.remux import top_level_boxes
from streamforge.store import db as dbmod
from streamforge.store.db import DownloadFile
from streamforge.web import media_api

live, live_env = media_live.live, media_live.live_env  # the fixtures, for pytest to find


def _clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000:duration=4", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


@pytest.fixture(autouse=True)
def _short_wait(monkeypatch):
    """A request waits this long for the worker's MP4 before answering 202 (no worker runs here)."""
    monkeypatch.setattr(media_api, "PREPARING_WAIT", 0.3)


def _ask(live, vid, rendition, headers=None):
    return requests.get(f"{live.url}/api/videos/{vid}/download", params={"rendition": rendition},
                        headers=live.h if headers is None else headers, allow_redirects=False, timeout=120)


def _download(live, vid, rendition, headers=None):
    """The answer once the worker had its turn: a 202 runs the queued download job, then asks again."""
    r = _ask(live, vid, rendition, headers)
    if r.status_code == 202:
        drain_queue()
        r = _ask(live, vid, rendition, headers)
    return r


def _video_packets(path: Path) -> list[int]:
    with av.open(str(path)) as f:
        return [p.size for p in f.demux(f.streams.video[0]) if p.size]


def test_a_rendition_downloads_as_a_progressive_mp4_made_once(live, tmp_path):
    clip = _clip(tmp_path)
    vid = upload(live, clip)
    v = get(live, vid)
    rung = v["renditions"][0]
    answers = [None, None]

    def ask(i):
        answers[i] = _ask(live, vid, rung["name"])
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # no worker yet: both wait a moment, then hear that it is being prepared, and one job was queued
    assert [a.status_code for a in answers] == [202, 202], [a.text[:200] for a in answers]
    assert all(a.json() == {"status": "preparing"} and int(a.headers["Retry-After"]) > 0 for a in answers)
    assert [str(x) for x in drain_queue()] == ["ready"]  # made once, by the worker side
    answers = [_ask(live, vid, rung["name"]) for _ in range(2)]
    assert [a.status_code for a in answers] == [302, 302], [a.text[:200] for a in answers]
    assert all(a.headers["Location"].startswith("http") for a in answers)
    data = fetch(answers[0].headers["Location"]).content
    out = tmp_path / "download.mp4"
    out.write_bytes(data)
    boxes = top_level_boxes(out)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat") and "moof" not in boxes
    with av.open(str(out)) as f:
        kinds = sorted(s.type for s in f.streams)
        assert kinds == ["audio", "video"] and f.streams.video[0].codec_context.height == rung["height"]
        assert abs(f.duration / 1e6 - 4.0) < 0.3
    # the same pictures as the HLS rendition (a remux, not a second encode)
    text = fetch(rung["playlist_url"]).text.splitlines()
    init = next(x for x in text if x.startswith("#EXT-X-MAP")).split('URI="')[1].split('"')[0]
    hls = tmp_path / "hls.mp4"
    hls.write_bytes(fetch(init).content + b"".join(fetch(x).content for x in text if x and not x.startswith("#")))
    assert _video_packets(out) == _video_packets(hls)
    # made once, kept beside the HLS output, and reused
    with dbmod.db.connection_context():
        rows = list(DownloadFile.select().where(DownloadFile.video == vid))
    assert [(r.state, r.key) for r in rows] == [("ready", f"processed/{vid}/downloads/{rung['name']}.mp4")]
    again = _download(live, vid, rung["name"])
    assert again.status_code == 302 and fetch(again.headers["Location"]).content == data
    assert "attachment" in requests.get(again.headers["Location"], timeout=30).headers.get("Content-Disposition", "")
    # the original, byte for byte; unknown renditions are a 4xx
    original = _download(live, vid, "original")
    assert original.status_code == 302
    assert hashlib.sha256(fetch(original.headers["Location"]).content).digest() == \
        hashlib.sha256(clip.read_bytes()).digest()
    assert _download(live, vid, "no-such-rung").status_code == 404
    assert _download(live, vid, "").status_code == 400


def _permissions(live, vid) -> dict:
    """{who: (status of the rendition download, of the original download, of the rendition's MP4 through
    the signed /play/ route every viewer of the watch page is handed)} on a public video."""
    v = get(live, vid)
    rung, signed = v["renditions"][0]["name"], v["master_playlist_url"].split("?", 1)[1]
    out = {}
    for who, headers in (("owner", live.h), ("other", live.h2), ("anonymous", {})):
        play = requests.get(f"{live.url}/play/{vid}/downloads/{rung}.mp4?{signed}", headers=headers,
                            allow_redirects=False, timeout=30)
        out[who] = (_download(live, vid, rung, headers).status_code, _download(live, vid, "original", headers).status_code,
                    play.status_code)
    return out


@pytest.mark.parametrize("live_env, want", [
    ({}, {"owner": (302, 302, 302), "other": (403, 403, 403), "anonymous": (401, 401, 403)}),
    ({"STREAMFORGE_PLAYBACK_DOWNLOADS": "viewers"},
     {"owner": (302, 302, 302), "other": (302, 302, 302), "anonymous": (302, 302, 302)}),
    ({"STREAMFORGE_PLAYBACK_DOWNLOADS": "off"},
     {"owner": (403, 403, 403), "other": (403, 403, 403), "anonymous": (403, 403, 403)}),
], ids=["owner", "viewers", "off"])
def test_who_may_download_follows_the_setting(live, tmp_path, want):
    vid = upload(live, _clip(tmp_path))
    rung = get(live, vid)["renditions"][0]["name"]
    # a private video: no one but its owner learns it exists
    assert _download(live, vid, rung, live.h2).status_code == 404
    assert _download(live, vid, "original", {}).status_code == 404
    assert requests.patch(f"{live.url}/api/videos/{vid}", json={"visibility": "public"}, headers=live.h).status_code == 200
    assert _permissions(live, vid) == want


@pytest.mark.parametrize("live_env", [{"STREAMFORGE_QUEUE_WORKERS": "0"}], ids=["runners-only"])
def test_with_no_worker_a_rendition_download_says_so_instead_of_preparing_forever(live, tmp_path):
    vid = upload(live, _clip(tmp_path))
    rung = get(live, vid)["renditions"][0]["name"]
    r = _ask(live, vid, rung)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker" and "worker" in r.json()["error"]["message"]
    assert _ask(live, vid, "original").status_code == 302  # the original needs no worker


def test_a_browser_following_the_download_link_gets_a_page_that_asks_again(live, tmp_path):
    vid = upload(live, _clip(tmp_path))
    rung = get(live, vid)["renditions"][0]["name"]
    page = _ask(live, vid, rung, {**live.h, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 202 and page.headers["Content-Type"].startswith("text/html")
    assert 'http-equiv="refresh"' in page.text and "Preparing your download" in page.text
    drain_queue()
    assert _ask(live, vid, rung, {**live.h, "Accept": "text/html"}).status_code == 302
