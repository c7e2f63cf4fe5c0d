"""Several audio tracks: every audio stream of an upload (up to 8) becomes an audio rendition of the
master's audio group with its BCP 47 language and its name, exactly one DEFAULT=YES; VIDEO lists them
as `audio_tracks`; the MP4 download carries the default one; the watch page has an audio menu."""
from __future__ import annotations

import os

import av
import media_live
import pytest
import requests
from media_factory import make_multi_audio
from media_live import attrs, fetch, get, upload

from streamforge.pipeline import PipelineOptions, run_pipeline
from streamforge.pipeline.languages import language_name, normalise_language

live, live_env = media_live.live, media_live.live_env  # the fixtures, for pytest to find

TRACKS = [{"language": "eng"}, {"language": "ger", "title": "Kommentar", "default": True, "layout": "mono"},
          {"language": "fre"}]


@pytest.mark.parametrize("raw, tag", [("eng", "en"), ("ger", "de"), ("deu", "de"), ("fre", "fr"), ("chi", "zh"),
                                      ("cze", "cs"), ("pt-br", "pt-BR"), ("zh-hant", "zh-Hant"), ("EN", "en"),
                                      ("haw", "haw"), ("", "und"), (None, "und"), ("und", "und"),
                                      ("a b", "und"), ("english", "und")])
def test_stream_languages_become_bcp47_tags(raw, tag):
    assert normalise_language(raw) == tag


def test_language_names():
    assert (language_name("de"), language_name("pt-BR"), language_name("und")) == ("German", "Portuguese", "")


def _audio_media(master: str) -> list[dict]:
    return [attrs(x) for x in master.splitlines() if x.startswith("#EXT-X-MEDIA:TYPE=AUDIO")]


def _decoded_audio_seconds(folder) -> float:
    lines = (folder / "index.m3u8").read_text().splitlines()
    blob = (folder / "init.mp4").read_bytes() + b"".join(
        (folder / x).read_bytes() for x in lines if x and not x.startswith("#"))
    path = folder / "joined.mp4"
    path.write_bytes(blob)
    with av.open(str(path)) as f:
        return sum(frame.samples for frame in f.decode(audio=0)) / 48000


def test_every_audio_stream_is_a_rendition_of_the_audio_group(tmp_path):
    src = make_multi_audio(tmp_path / "three.mkv", TRACKS, seconds=2.0)
    result = run_pipeline(src, tmp_path / "out", PipelineOptions(heights=(240,), segment_seconds=2))
    master = (tmp_path / "out" / "master.m3u8").read_text()
    media = _audio_media(master)
    assert [(m["LANGUAGE"], m["NAME"], m["DEFAULT"], m["AUTOSELECT"]) for m in media] == [
        ("en", "English", "NO", "YES"), ("de", "Kommentar", "YES", "YES"), ("fr", "French", "NO", "YES")]
    # the default track keeps the folder downloads and older players know
    assert [m["URI"] for m in media] == ["audio-1/index.m3u8", "audio/index.m3u8", "audio-3/index.m3u8"]
    variants = [attrs(x) for x in master.splitlines() if x.startswith("#EXT-X-STREAM-INF")]
    assert variants and all(v["AUDIO"] == "audio" and v["CODECS"].endswith("mp4a.40.2") for v in variants)
    for m in media:  # every track is a whole, decodable AAC rendition
        assert abs(_decoded_audio_seconds(tmp_path / "out" / m["URI"].split("/")[0]) - 2.0) < 0.1
    assert [(a.name, a.language, a.label, a.default) for a in result.audio_tracks] == [
        ("audio-1", "en", "English", False), ("audio", "de", "Kommentar", True), ("audio-3", "fr", "French", False)]
    assert result.audio.name == "audio"


def test_without_a_default_flag_the_first_track_is_the_default(tmp_path):
    src = make_multi_audio(tmp_path / "two.mkv", [{"language": "spa"}, {"language": "ita"}], seconds=1.0)
    run_pipeline(src, tmp_path / "out", PipelineOptions(heights=(240,), segment_seconds=2))
    media = _audio_media((tmp_path / "out" / "master.m3u8").read_text())
    assert [(m["LANGUAGE"], m["DEFAULT"]) for m in media] == [("es", "YES"), ("it", "NO")]


def test_an_audio_upload_with_several_streams_offers_each(tmp_path):
    src = make_multi_audio(tmp_path / "two.mka", [{"language": "eng", "default": True},
                                                  {"language": "spa", "title": "Español"}], video=False)
    result = run_pipeline(src, tmp_path / "out", PipelineOptions(segment_seconds=2))
    assert result.probe.kind == "audio"
    master = (tmp_path / "out" / "master.m3u8").read_text()
    media = _audio_media(master)
    assert [(m["LANGUAGE"], m["NAME"], m["DEFAULT"]) for m in media] == [("en", "English", "YES"),
                                                                       ("es", "Español", "NO")]
    # the variant itself carries the default track (RFC 8216 4.3.4.1: its EXT-X-MEDIA has no URI)
    assert "URI" not in media[0] and media[1]["URI"] == "audio-2/index.m3u8"
    lines = master.splitlines()
    inf = next(i for i, x in enumerate(lines) if x.startswith("#EXT-X-STREAM-INF"))
    assert attrs(lines[inf])["AUDIO"] == "audio" and lines[inf + 1] == "audio/index.m3u8"
    assert abs(_decoded_audio_seconds(tmp_path / "out" / "audio-2") - 2.0) < 0.1


def test_a_single_track_keeps_its_language(tmp_path):
    src = make_multi_audio(tmp_path / "one.mkv", [{"language": "eng"}], seconds=1.0)
    run_pipeline(src, tmp_path / "out", PipelineOptions(heights=(240,), segment_seconds=2))
    media = _audio_media((tmp_path / "out" / "master.m3u8").read_text())
    assert [(m["LANGUAGE"], m["NAME"], m["DEFAULT"], m["URI"]) for m in media] == [
        ("en", "English", "YES", "audio/index.m3u8")]


def test_an_upload_lists_its_audio_tracks_and_downloads_the_default(live, tmp_path):
    vid = upload(live, make_multi_audio(tmp_path / "three.mkv", TRACKS, seconds=2.0), "video/x-matroska")
    v = get(live, vid)
    assert v["status"] == "COMPLETED"
    assert v["audio_tracks"] == [{"language": "en", "label": "English", "default": False},
                                 {"language": "de", "label": "Kommentar", "default": True},
                                 {"language": "fr", "label": "French", "default": False}]
    media = _audio_media(fetch(v["master_playlist_url"]).text)
    assert len(media) == 3 and sum(m["DEFAULT"] == "YES" for m in media) == 1
    logs = requests.get(f"{live.url}/api/videos/{vid}/logs", headers=live.h, timeout=30).json()["items"]
    probe = next(x for x in logs if x["stage"] == "probe" and x["status"] == "completed")
    assert "3 tracks" in probe["message"] and "de 'Kommentar' default" in probe["message"]
    r = requests.get(f"{live.url}/api/videos/{vid}/download", params={"rendition": "240p"}, headers=live.h,
                     allow_redirects=False, timeout=60)
    if r.status_code == 202:  # the MP4 is being made by a worker
        media_live.drain_queue()
        r = requests.get(f"{live.url}/api/videos/{vid}/download", params={"rendition": "240p"}, headers=live.h,
                         allow_redirects=False, timeout=60)
    assert r.status_code == 302
    (tmp_path / "dl.mp4").write_bytes(fetch(r.headers["Location"]).content)
    with av.open(str(tmp_path / "dl.mp4")) as f:
        audio = [s for s in f.streams if s.type == "audio"]
        assert len(audio) == 1  # the default track only
        # the default (German, mono in the upload) is the track downloaded: stereo AAC after encoding
        assert audio[0].codec_context.channels == 2


@pytest.mark.browser
def test_the_watch_page_switches_audio_tracks_in_chromium(live, tmp_path):
    from browser_helpers import CHROMIUM, poll, signed_in_page
    from conftest import require
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    vid = upload(live, make_multi_audio(tmp_path / "three.mkv", TRACKS, seconds=6.0), "video/x-matroska")
    v = get(live, vid)
    token = live.h["Authorization"].split()[1]
    with playwright.sync_playwright() as p, signed_in_page(p, live.url, token) as (page, errors):
        page.goto(v["watch_url"])
        tracks = poll(page, """() => { const h = window.streamforgePlayer.hls;
            return h ? h.audioTracks.map((t) => [t.lang, t.name, t.default]) : [] }""",
                      lambda t: len(t) == 3, timeout=30)
        assert tracks == [["en", "English", False], ["de", "Kommentar", True], ["fr", "French", False]]
        assert page.locator("#audio-button").is_visible()
        page.evaluate("() => { const m = document.querySelector('video'); m.muted = true; m.play().catch(() => {}) }")
        poll(page, "() => document.querySelector('video').currentTime", lambda t: t > 0.5, timeout=30)
        # choose French in the audio menu, as a viewer does
        page.locator("#audio-button").click()
        page.locator("#audio-menu [role=menuitemradio]", has_text="French").click()
        switched = poll(page, "() => document.querySelector('video').dataset.audioTrack", lambda x: x == "2",
                        timeout=30)
        assert switched == "2"
        played = poll(page, "() => document.querySelector('video').currentTime", lambda t: t > 3, timeout=30)
        assert played > 3 and errors == []
