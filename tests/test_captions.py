"""Captions: WebVTT/SRT parsed, validated (the line that is wrong) and written as safe WebVTT; text
subtitle streams of uploads (SRT and ASS in Matroska, mov_text in MP4) become tracks; every track is a
SUBTITLES rendition of the master, which is rewritten on every change and never lists a missing file."""
from __future__ import annotations

import media_live
import pytest
import requests
from media_live import attrs, fetch, ffmpeg, get, upload

from streamforge import captiontext as vtt
from streamforge.pipeline.captions import extract_subtitles

VTT_EN = ("WEBVTT\n\n00:00:00.500 --> 00:00:01.500\nHello from the English track\n\n"
          "00:00:01.600 --> 00:00:02.800\nA second English cue\n")
SRT_FR = "1\r\n00:00:00,500 --> 00:00:02,000\r\nBonjour <font color=red>à tous</font>\r\n\r\n"

live, live_env = media_live.live, media_live.live_env  # the fixtures, for pytest to find


# ------------------------------------------------------------------ parsing, pure


def test_srt_and_webvtt_become_the_same_safe_webvtt():
    srt = vtt.normalise("1\n00:00:01,000 --> 00:00:04,000\nHello\n\n2\n00:00:05,500 --> 00:00:08,250\nBye\n")
    webvtt = vtt.normalise("WEBVTT - a title\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:04.000\nHello\n\n"
                           "00:00:05.500 --> 00:00:08.250\nBye\n")
    assert srt == webvtt == ("WEBVTT\n\n00:00:01.000 --> 00:00:04.000\nHello\n\n"
                             "00:00:05.500 --> 00:00:08.250\nBye\n")


def test_markup_and_odd_timing_are_kept_safe():
    out = vtt.normalise("WEBVTT\n\n00:00:05.000 --> 00:00:03.000 align:start onload:x\n"
                        "<script>alert(1)</script><img src=x onerror=alert(2)> <b>bold</b> <v Bob>hi</v> a<b & c\n\n"
                        "00:00:01.000 --> 00:00:02.000\nfirst --> by start\n")
    cues = vtt.parse_captions(out)
    assert [c.start for c in cues] == [1.0, 5.0]  # sorted by start
    assert cues[1].end > cues[1].start  # an end before its start became a short cue
    assert "<script" not in out and "<img" not in out and "onerror" not in out.split("align:start")[1].split("\n")[0]
    assert "<b>bold</b>" in out and "<v Bob>hi</v>" in out and "a&lt;b &amp; c" in out
    assert "first --&gt; by start" in out and "onload" not in out
    assert vtt.normalise(out) == out  # normalising is stable


@pytest.mark.parametrize("text, line", [
    ("Dear diary,\nno subtitles today.\n", 1),
    ("\n\nJust prose\n", 3),
    ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nok\n\nno timing here\ntext\n", 7),
    ("1\n00:00:01,000 -> 00:00:02,000\nx\n", 2),
    ("1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\n00:00:03,000 --> soon\ny\n", 6),
    ("", 1),
])
def test_a_file_that_is_neither_names_the_line(text, line):
    with pytest.raises(vtt.CaptionFormatError) as e:
        vtt.parse_captions(text)
    assert e.value.line == line and str(e.value).startswith(f"line {line}:")


def test_master_gains_and_loses_the_subtitles_group():
    master = ('#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",URI="audio/index.m3u8"\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.64000d,mp4a.40.2",AUDIO="audio"\n240p/index.m3u8\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=2,CODECS="avc1.64001e,mp4a.40.2",AUDIO="audio"\n360p/index.m3u8\n'
              '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI="240p/iframes.m3u8"\n')
    two = vtt.master_with_subtitles(master, [("en", 'Eng "x"', "subs/en-1.m3u8"), ("fr", "Français", "subs/fr-2.m3u8")])
    subs = [attrs(x) for x in two.splitlines() if x.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES")]
    assert [(s["LANGUAGE"], s["GROUP-ID"], s["URI"]) for s in subs] == [("en", "subs", "subs/en-1.m3u8"),
                                                                        ("fr", "subs", "subs/fr-2.m3u8")]
    assert all(attrs(x).get("SUBTITLES") == "subs" for x in two.splitlines() if x.startswith("#EXT-X-STREAM-INF"))
    again = vtt.master_with_subtitles(two, [("fr", "Français", "subs/fr-3.m3u8")])
    assert "subs/en-1" not in again and again.count('SUBTITLES="subs"') == 2 and "fr-3" in again
    assert vtt.master_with_subtitles(again, []) == master


# ------------------------------------------------------------------ embedded subtitle streams

CUE = "Subtitle carried inside the file"


def _with_subtitles(tmp_path, name: str, codec: str, language: str | None) -> str:
    srt = tmp_path / "in.srt"
    srt.write_text(f"1\n00:00:00,400 --> 00:00:01,800\n<i>{CUE}</i>\n\n2\n00:00:02,000 --> 00:00:02,600\nTwo & more\n")
    out = tmp_path / name
    meta = ["-metadata:s:s:0", f"language={language}"] if language else []
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-f", "lavfi",
           "-i", "sine=frequency=440:sample_rate=48000:duration=3", "-i", srt, "-map", "0:v", "-map", "1:a",
           "-map", "2:s", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-c:s", codec, *meta, out)
    return out


@pytest.mark.parametrize("name, codec, language, want", [
    ("srt.mkv", "srt", "eng", "en"), ("ass.mkv", "ass", "ger", "de"), ("mov_text.mp4", "mov_text", "fra", "fr"),
    ("webvtt.mkv", "webvtt", None, "und")])
def test_text_subtitle_streams_are_extracted(tmp_path, name, codec, language, want):
    from streamforge.pipeline import probe
    src = _with_subtitles(tmp_path, name, codec, language)
    info = probe(src)
    assert [s[0] for s in info.subtitle_streams] == [2]
    tracks = extract_subtitles(src, start=info.start_time)  # on the output's clock: 0 is the first picture
    assert [t.language for t in tracks] == [want]
    cues = tracks[0].cues
    assert [(c.start, c.end) for c in cues] == [(0.4, 1.8), (2.0, 2.6)]
    assert cues[0].text in (CUE, f"<i>{CUE}</i>") and cues[1].text == "Two &amp; more"  # ASS tags dropped


def test_an_mkv_with_an_srt_stream_gets_an_original_track_in_its_master(live, tmp_path):
    vid = upload(live, _with_subtitles(tmp_path, "subs.mkv", "srt", "eng"), "video/x-matroska")
    v = get(live, vid)
    assert [(c["language"], c["source"]) for c in v["captions"]] == [("en", "original")]
    assert CUE in fetch(v["captions"][0]["url"]).text
    texts = master_tracks(v)
    assert list(texts) == ["en"] and CUE in texts["en"]


# ------------------------------------------------------------------ the API and the master


def master_tracks(v: dict) -> dict:
    """{language: WebVTT} of the master's SUBTITLES renditions; checks every variant names the group and
    every listed playlist and file is there (no window with a missing playlist)."""
    lines = fetch(v["master_playlist_url"]).text.splitlines()
    variants = [attrs(x) for x in lines if x.startswith("#EXT-X-STREAM-INF")]
    subs = [attrs(x) for x in lines if x.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES")]
    assert variants and all(x.get("SUBTITLES") == ("subs" if subs else None) for x in variants)
    out = {}
    for s in subs:
        assert s["GROUP-ID"] == "subs" and s["NAME"]
        playlist = fetch(s["URI"]).text
        assert "#EXT-X-ENDLIST" in playlist
        segment = next(x for x in playlist.splitlines() if x and not x.startswith("#"))
        out[s["LANGUAGE"]] = fetch(segment).text
        assert out[s["LANGUAGE"]].startswith("WEBVTT")
    return out


def test_captions_round_trip_through_the_master(live, tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000:duration=3", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", tmp_path / "clip.mp4")
    vid = upload(live, tmp_path / "clip.mp4")
    base = f"{live.url}/api/videos/{vid}/captions"
    assert master_tracks(get(live, vid)) == {}
    r = requests.post(base, json={"language": "en", "label": "English", "content": VTT_EN}, headers=live.h)
    assert r.status_code == 201 and r.json()["language"] == "en" and r.json()["label"] == "English"
    assert "Hello from the English track" in fetch(r.json()["url"]).text
    r = requests.post(base, json={"language": "FR", "content": SRT_FR}, headers=live.h)
    assert r.status_code == 201 and r.json()["label"] == "fr"
    texts = master_tracks(get(live, vid))
    assert sorted(texts) == ["en", "fr"] and "A second English cue" in texts["en"]
    assert "Bonjour à tous" in texts["fr"] and "font" not in texts["fr"]
    listed = requests.get(base, headers=live.h).json()["items"]
    assert [(i["language"], i["source"]) for i in listed] == [("en", "upload"), ("fr", "upload")]
    # refused: no track is added, the master is unchanged
    r = requests.post(base, json={"language": "de", "content": "Dear diary,\nno subtitles.\n"}, headers=live.h)
    assert r.status_code == 400 and "line 1" in r.json()["error"]["message"]
    for body in ({"language": "not a language!", "content": VTT_EN}, {"language": "de"}, {"content": VTT_EN},
                 {"language": "de", "content": "WEBVTT\n\n" + "x" * (1024 * 1024)}):
        assert requests.post(base, json=body, headers=live.h).status_code == 400, body
    assert sorted(master_tracks(get(live, vid))) == ["en", "fr"]
    # replaced, then deleted: the old cues and files are gone
    old_files = [x.key for x in live_store(live).list(f"processed/{vid}/subs/")]
    assert requests.post(base, json={"language": "en", "content": "WEBVTT\n\n00:01.000 --> 00:02.000\nNew\n"},
                         headers=live.h).status_code == 201
    texts = master_tracks(get(live, vid))
    assert "New" in texts["en"] and "Hello" not in texts["en"]
    assert requests.delete(f"{base}/fr", headers=live.h).status_code == 204
    assert requests.delete(f"{base}/fr", headers=live.h).status_code == 404
    assert list(master_tracks(get(live, vid))) == ["en"]
    left = [x.key for x in live_store(live).list(f"processed/{vid}/subs/")]
    assert len(left) == 2 and not set(left) & set(old_files)
    # another user: nothing to see or change (private); the owner's track stays
    assert requests.post(base, json={"language": "it", "content": VTT_EN}, headers=live.h2).status_code == 404
    assert requests.delete(f"{base}/en", headers=live.h2).status_code == 404
    assert requests.get(base, headers=live.h2).status_code == 404
    assert requests.get(base).status_code == 404
    # a reprocess writes a fresh output with the tracks in its master
    assert requests.post(f"{live.url}/api/videos/{vid}/reprocess", headers=live.h).status_code == 202
    from conftest import drain_queue
    assert [str(x) for x in drain_queue()] == ["completed"]
    assert "New" in master_tracks(get(live, vid))["en"]


def live_store(live):
    from streamforge.store.objects import ObjectStore
    return ObjectStore.from_config(live.cfg)


# ------------------------------------------------------------------ in Chromium

BROWSER_VTT = ("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nCaption seen by hls.js <img src=x onerror=\"window.__pwned=1\">\n")
TRACKS = """() => { const v = document.querySelector('video');
  if (v.paused) { v.muted = true; v.play().catch(() => {}) }
  return {t: v.currentTime, pwned: !!window.__pwned, tracks: [...v.textTracks]
    .filter(x => x.kind === 'subtitles' || x.kind === 'captions')
    .map(x => ({lang: x.language, label: x.label, mode: x.mode, cues: [...(x.cues || [])].map(c => c.text)}))} }"""


@pytest.mark.browser
def test_captions_play_in_chromium_and_the_choice_is_remembered(live, tmp_path):
    import os

    from browser_helpers import CHROMIUM, poll, signed_in_page
    from conftest import require
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000:duration=6", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", tmp_path / "clip.mp4")
    vid = upload(live, tmp_path / "clip.mp4")
    r = requests.post(f"{live.url}/api/videos/{vid}/captions", headers=live.h,
                      json={"language": "en", "label": "English", "content": BROWSER_VTT})
    assert r.status_code == 201
    watch = get(live, vid)["watch_url"]
    token = live.h["Authorization"].split()[1]
    with playwright.sync_playwright() as p, signed_in_page(p, live.url, token) as (page, errors):
        page.goto(watch)
        state = poll(page, TRACKS, lambda s: s["t"] > 1 and s["tracks"], timeout=45)
        assert [(x["lang"], x["label"]) for x in state["tracks"]] == [("en", "English")], state
        assert page.locator("media-captions-menu-button").count() == 1
        # the viewer turns English on: hls.js loads the WebVTT and the cue arrives as text, never as markup
        page.evaluate("() => { for (const t of document.querySelector('video').textTracks) "
                      "if (t.kind === 'subtitles') t.mode = 'showing' }")
        state = poll(page, TRACKS, lambda s: s["tracks"][0]["cues"], timeout=30)
        cue = state["tracks"][0]["cues"][0]
        assert cue.startswith("Caption seen by hls.js") and not state["pwned"], state
        assert page.evaluate("() => localStorage.getItem('streamforge-captions')") == "en"
        # the next visit shows English by itself; turning it off is remembered too
        page.reload()
        state = poll(page, TRACKS, lambda s: s["tracks"] and s["tracks"][0]["mode"] == "showing", timeout=45)
        assert state["tracks"][0]["mode"] == "showing", state
        page.evaluate("() => { for (const t of document.querySelector('video').textTracks) "
                      "if (t.kind === 'subtitles') t.mode = 'disabled' }")
        assert poll(page, "() => localStorage.getItem('streamforge-captions')", lambda s: s == "off") == "off"
        # the owner adds a French SRT through the page's form; after the reload both tracks are offered
        srt = tmp_path / "fr.srt"
        srt.write_text(SRT_FR)
        page.click("#captions-editor summary")
        page.fill("#caption-language", "fr")
        page.fill("#caption-label", "Français")
        page.set_input_files("#caption-file", str(srt))
        page.click("#caption-form button[type=submit]")
        page.wait_for_selector('#caption-list li[data-language="fr"]', timeout=30000)
        state = poll(page, TRACKS, lambda s: len(s["tracks"]) == 2, timeout=45)
        assert sorted(x["lang"] for x in state["tracks"]) == ["en", "fr"], state
        assert page.locator('#downloads a[data-rendition="original"]').count() == 1
        assert errors == [] and not page.evaluate("() => !!window.__pwned")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_4_adds_captions_downloads_and_kind_to_an_older_database(backend, tmp_path):
    """A database from before migration 4 gains the captions and download_files tables and videos.kind."""
    from conftest import fresh_database_url

    from streamforge.store import captions, videos
    from streamforge.store import db as dbmod
    from streamforge.store.db import SchemaVersion, Video
    with fresh_database_url(backend, tmp_path, "i13") as url:
        database = dbmod.init_db(url)
        with database.connection_context():
            user = videos.get_or_create_user("old-i13@example.com")
            Video.insert(id="cold4", title="t", slug="s-i13", user=user, original_file_name="a.mp4",
                         s3_bucket="b").execute()
            database.execute_sql("DROP TABLE captions")
            database.execute_sql("DROP TABLE download_files")
            database.execute_sql("ALTER TABLE videos DROP COLUMN kind")
            SchemaVersion.delete().where(SchemaVersion.version > 3).execute()
        database = dbmod.init_db(url)
        with database.connection_context():
            assert max(r.version for r in SchemaVersion.select()) == dbmod.SCHEMA_VERSION
            assert Video.get_by_id("cold4").kind == "video"
            captions.save_track("cold4", "en", "English", vtt.normalise(VTT_EN))
            captions.save_track("cold4", "en", "English", vtt.normalise(VTT_EN.replace("Hello", "Hi")))
            assert [("en", "Hi" in t.content) for t in captions.tracks_of("cold4")] == [("en", True)]
        dbmod.migrate(database)  # again: nothing to do
        database.close()
