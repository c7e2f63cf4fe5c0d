"""Audio-only uploads: MP3, M4A/AAC, FLAC, WAV, Ogg/Vorbis and Opus become one AAC HLS rendition in
an audio-only master (CODECS="mp4a.40.2") with a COVER: the file's embedded art, else a waveform."""
from __future__ import annotations

import av
import media_live
import pytest
import requests
from media_live import attrs, fetch, ffmpeg, get, upload

from streamforge.pipeline import PipelineOptions, run_pipeline
from streamforge.pipeline.audio import waveform

FORMATS = {"tone.mp3": "libmp3lame", "tone.m4a": "aac", "tone.flac": "flac", "tone.wav": "pcm_s16le",
           "tone.ogg": "vorbis", "tone.opus": "libopus"}

live, live_env = media_live.live, media_live.live_env  # the fixtures, for pytest to find


def _tone(tmp_path, name: str, seconds: float = 3.0, cover: bool = False):
    path = tmp_path / name
    extra = ["-strict", "-2", "-ac", "2"] if FORMATS[name] == "vorbis" else []
    if not cover:
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
               "-c:a", FORMATS[name], *extra, path)
        return path
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=200x160", "-frames:v", "1", tmp_path / "art.jpg")
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=523:sample_rate=44100:duration={seconds}", "-i",
           tmp_path / "art.jpg", "-map", "0:a", "-map", "1:v", "-c:a", FORMATS[name], "-c:v", "copy",
           "-disposition:v:0", "attached_pic", *(["-id3v2_version", "3"] if name.endswith(".mp3") else []), path)
    return path


def _decoded_seconds(outdir) -> float:
    lines = (outdir / "audio" / "index.m3u8").read_text().splitlines()
    blob = (outdir / "audio" / "init.mp4").read_bytes() + b"".join(
        (outdir / "audio" / x).read_bytes() for x in lines if x and not x.startswith("#"))
    path = outdir / "joined.mp4"
    path.write_bytes(blob)
    with av.open(str(path)) as f:
        assert [s.type for s in f.streams] == ["audio"]
        return sum(frame.samples for frame in f.decode(audio=0)) / 48000


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_audio_format_becomes_an_aac_rendition_with_a_cover(tmp_path, name):
    src = _tone(tmp_path, name)
    result = run_pipeline(src, tmp_path / "out", PipelineOptions(segment_seconds=2))
    out = tmp_path / "out"
    assert result.probe.kind == "audio" and [r.name for r in result.renditions] == ["audio"]
    master = (out / "master.m3u8").read_text().splitlines()
    variants = [attrs(x) for x in master if x.startswith("#EXT-X-STREAM-INF")]
    assert [v["CODECS"] for v in variants] == ["mp4a.40.2"] and "RESOLUTION" not in variants[0]
    assert master[master.index(next(x for x in master if x.startswith("#EXT-X-STREAM-INF"))) + 1] == "audio/index.m3u8"
    segments = [x for x in (out / "audio" / "index.m3u8").read_text().splitlines() if x and not x.startswith("#")]
    assert len(segments) == 2  # 3 s in 2 s segments
    assert abs(_decoded_seconds(out) - 3.0) < 0.1
    assert [(t.type, t.path) for t in result.thumbnails] == [("COVER", "thumbnails/cover.jpg")]
    cover = (out / "thumbnails" / "cover.jpg").read_bytes()
    assert cover[:3] == b"\xff\xd8\xff" and (result.thumbnails[0].width, result.thumbnails[0].height) == (640, 360)


@pytest.mark.parametrize("name", ["tone.mp3", "tone.m4a", "tone.flac"])
def test_embedded_art_is_the_cover(tmp_path, name):
    result = run_pipeline(_tone(tmp_path, name, cover=True), tmp_path / "out", PipelineOptions())
    assert result.probe.kind == "audio"
    assert (result.thumbnails[0].width, result.thumbnails[0].height) == (200, 160)
    with av.open(str(tmp_path / "out" / "thumbnails" / "cover.jpg")) as f:
        frame = next(f.decode(video=0))
    assert (frame.width, frame.height) == (200, 160)


def test_the_waveform_follows_the_loudness():
    quiet_then_loud = [0.01] * 50 + [1.0] * 50
    frame = waveform(quiet_then_loud, 100, 60).reformat(format="gray")
    plane = frame.planes[0]
    rows = [bytes(plane)[y * plane.line_size: y * plane.line_size + 100] for y in range(60)]
    lit = [sum(1 for y in range(60) if rows[y][x] > 100) for x in range(100)]
    assert max(lit[:45]) <= 4 and min(lit[55:]) >= 45


def test_an_audio_upload_completes_as_kind_audio_and_plays_on_its_page(live, tmp_path):
    vid = upload(live, _tone(tmp_path, "tone.mp3", cover=True), "audio/mpeg")
    v = get(live, vid)
    assert v["status"] == "COMPLETED" and v["kind"] == "audio"
    assert [(r["name"], r["codec"]) for r in v["renditions"]] == [("audio", "aac")]
    lines = fetch(v["master_playlist_url"]).text.splitlines()
    assert [attrs(x)["CODECS"] for x in lines if x.startswith("#EXT-X-STREAM-INF")] == ["mp4a.40.2"]
    cover = [t for t in v["thumbnails"] if t["type"] == "COVER"]
    assert len(cover) == 1 and fetch(cover[0]["url"]).content[:3] == b"\xff\xd8\xff"
    assert v["cover_url"]
    session = requests.Session()
    session.get(f"{live.url}/login", params={"token": live.h["Authorization"].split()[1]}, timeout=30)
    page = session.get(v["watch_url"], timeout=30)
    assert page.status_code == 200 and 'data-kind="audio"' in page.text
    library = session.get(f"{live.url}/", timeout=30)
    assert library.status_code == 200 and "Audio" in library.text
    # the audio rendition downloads too, as an MP4 with sound only
    r = requests.get(f"{live.url}/api/videos/{vid}/download", params={"rendition": "audio"}, headers=live.h,
                     allow_redirects=False, timeout=60)
    if r.status_code == 202:  # the MP4 is being made by a worker (API.md, third round): let it run
        media_live.drain_queue()
        r = requests.get(f"{live.url}/api/videos/{vid}/download", params={"rendition": "audio"}, headers=live.h,
                         allow_redirects=False, timeout=60)
    assert r.status_code == 302
    (tmp_path / "dl.m4a").write_bytes(fetch(r.headers["Location"]).content)
    with av.open(str(tmp_path / "dl.m4a")) as f:
        assert [s.type for s in f.streams] == ["audio"] and abs(f.duration / 1e6 - 3.0) < 0.2
    # a video upload is kind video
    assert get(live, upload(live, _clip(tmp_path)))["kind"] == "video"


def _clip(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", tmp_path / "v.mp4")
    return tmp_path / "v.mp4"


@pytest.mark.browser
def test_an_audio_upload_plays_on_its_watch_page_in_chromium(live, tmp_path):
    import os

    from browser_helpers import CHROMIUM, poll, signed_in_page
    from conftest import require
    require(os.path.exists(CHROMIUM), f"no {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    vid = upload(live, _tone(tmp_path, "tone.m4a", seconds=6), "audio/mp4")
    v = get(live, vid)
    token = live.h["Authorization"].split()[1]
    with playwright.sync_playwright() as p, signed_in_page(p, live.url, token) as (page, errors):
        page.goto(v["watch_url"])
        played = poll(page, """() => { const m = document.querySelector('video');
            if (m.paused) { m.muted = true; m.play().catch(() => {}) } return m.currentTime }""",
                      lambda t: t > 2, timeout=45)
        assert played > 2 and errors == []
        assert page.get_attribute("video", "poster") == v["cover_url"]
        page.goto(f"{live.url}/")
        assert page.locator(f'li[data-video-id="{vid}"][data-kind="audio"] [data-role=kind]').inner_text() == "Audio"
