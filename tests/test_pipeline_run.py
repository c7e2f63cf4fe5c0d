"""run_pipeline end to end: the HLS tree, exact CODECS, aligned segments, audio, I-frame playlists,
thumbnails, several codecs in one master, live (EVENT) publishing, progress, and failure cleanup."""
from __future__ import annotations

import dataclasses
import io
import os
import re
import threading
from pathlib import Path

import av
import media_factory as mf
import pytest

from streamforge.errors import MediaError
from streamforge.pipeline import PipelineOptions, probe, run_pipeline
from streamforge.pipeline import hls as hlsmod

MEDIA = Path(os.environ.get("STREAMFORGE_TEST_MEDIA", Path(__file__).resolve().parents[2] / "shared" / "media"))
if not MEDIA.exists():
    MEDIA = Path("/work/shared/media")
BUNNY = MEDIA / "bigbuckbunny-720p-5s.mp4"
BIKES = MEDIA / "bikes-640x272-10s-noaudio.mp4"

SMALL = PipelineOptions(heights=(240, 144), preset="ultrafast", segment_seconds=1)


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def bunny(tmp_path_factory):
    """Big Buck Bunny (720p, 5.1 AAC) through a 480/360 ladder with 2 s segments, once for the module."""
    out = tmp_path_factory.mktemp("bunny") / "out"
    files = []
    opts = PipelineOptions(heights=(480, 360), segment_seconds=2)
    result = run_pipeline(needs(BUNNY), out, opts, on_file=lambda kind, path: files.append((kind, path)))
    return result, out, files


def test_real_footage_gives_a_complete_ladder(bunny):
    result, out, files = bunny
    facts = mf.check_hls(out, expected_duration=result.probe.duration)
    assert result.probe.audio_channels == 6 and result.probe.width == 1280
    assert [(r.name, r.width, r.height, r.codec) for r in result.renditions] == [
        ("480p", 854, 480, "h264"), ("360p", 640, 360, "h264")]
    assert result.master == "master.m3u8"
    # every file named exists, was announced once the run finished, and the master came last
    assert all((out / f).is_file() for f in result.files)
    assert [p for _, p in files] == result.files and files[-1] == ("master", "master.m3u8")
    assert {k for k, _ in files} == {"segment", "playlist", "master", "thumbnail"}
    # the audio was 5.1 and is stereo 48 kHz now, about as long as the video
    assert result.audio.codecs == "mp4a.40.2" and result.audio.playlist == "audio/index.m3u8"
    assert abs(facts["audio"]["seconds"] - result.probe.duration) < 0.2
    for r, variant in zip(result.renditions, facts["variants"]):
        assert variant["attrs"]["CODECS"] == f"{r.codecs},mp4a.40.2"
        assert int(variant["attrs"]["BANDWIDTH"]) == r.bandwidth
        assert int(variant["attrs"]["AVERAGE-BANDWIDTH"]) == r.average_bandwidth <= r.bandwidth
        assert variant["attrs"]["FRAME-RATE"] == "25.000"
        assert r.segment_count == variant["segments"] and r.segment_size > 0
        assert r.bitrate.endswith("k") and r.playlist == f"{r.name}/index.m3u8"


def test_codecs_strings_match_the_bitstream(bunny):
    result, out, _ = bunny
    for r in result.renditions:
        init = (out / r.name / "init.mp4").read_bytes()
        avcc = init[init.index(b"avcC") + 4:]
        assert r.codecs == f"avc1.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"
        with av.open(io.BytesIO(init + (out / r.name / "seg_00001.m4s").read_bytes())) as c:
            profile = c.streams.video[0].codec_context.profile
        assert (avcc[1] == 100) == (profile == "High")
    assert re.fullmatch(r"avc1\.64001[ef]", result.renditions[0].codecs)


def test_media_playlists_are_vod_with_exact_targets(bunny):
    result, out, _ = bunny
    for r in result.renditions:
        playlist = mf.read_media_playlist(out / r.playlist)
        assert {"#EXT-X-ENDLIST", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-PLAYLIST-TYPE"} <= playlist["tags"]
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist["lines"]
        assert playlist["target"] == max(round(d) for d, _, _ in playlist["segments"])
        assert [n for _, n, _ in playlist["segments"]][:2] == ["seg_00001.m4s", "seg_00002.m4s"]


def test_iframe_playlists_point_at_keyframes(bunny):
    result, out, _ = bunny
    master = mf.read_master(out)
    assert len(master["iframes"]) == len(result.renditions)
    for attrs, r in zip(master["iframes"], result.renditions):
        assert attrs["URI"] == f"{r.name}/iframes.m3u8" and attrs["CODECS"] == r.codecs
        assert attrs["RESOLUTION"] == f"{r.width}x{r.height}"
        playlist = mf.read_media_playlist(out / attrs["URI"])
        assert "#EXT-X-I-FRAMES-ONLY" in playlist["tags"]
        init = (out / r.name / playlist["map"]).read_bytes()
        for _, name, (length, offset) in playlist["segments"]:
            data = (out / r.name / name).read_bytes()
            assert 0 < length < len(data)
            frames = mf.decode_segment(init, data[offset:offset + length])
            assert len(frames) == 1 and frames[0].key_frame


def test_thumbnails(bunny):
    result, out, _ = bunny
    kinds = [t.type for t in result.thumbnails]
    assert kinds.count("COVER") == 1 and kinds.count("PREVIEW") == 5 and kinds.count("TIMELINE") == 2
    cover = next(t for t in result.thumbnails if t.type == "COVER")
    assert cover.path == "thumbnails/cover.jpg" and 0.3 < cover.timestamp < 3.5
    previews = [t.timestamp for t in result.thumbnails if t.type == "PREVIEW"]
    assert previews == sorted(previews) and previews[0] > 0 and previews[-1] < result.probe.duration
    for t in result.thumbnails:
        assert (out / t.path).is_file()
        if t.path.endswith(".jpg"):
            with av.open(str(out / t.path)) as c:
                frame = next(c.decode(video=0))
            assert (frame.width, frame.height) == (t.width, t.height)
    sprite = next(t for t in result.thumbnails if t.path.endswith("sprite.jpg"))
    vtt = (out / "thumbnails" / "timeline.vtt").read_text()
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"([\d:.]+) --> ([\d:.]+)\n(sprite\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)", vtt)
    assert len(cues) >= 5
    for start, end, _, x, y, w, h in cues:
        assert start < end
        assert int(x) + int(w) <= sprite.width and int(y) + int(h) <= sprite.height


def test_cover_skips_black_frames(tmp_path):
    src = mf.make_video(tmp_path / "fade-in.mp4", seconds=2, black_seconds=1.0, audio=None)
    result = run_pipeline(src, tmp_path / "out", SMALL)
    cover = next(t for t in result.thumbnails if t.type == "COVER")
    assert cover.timestamp >= 1.0
    with av.open(str(tmp_path / "out" / cover.path)) as c:
        gray = next(c.decode(video=0)).reformat(format="gray")
    data = bytes(gray.planes[0])
    assert sum(data) / len(data) > 40


def test_video_without_audio_has_no_audio_at_all(tmp_path):
    result = run_pipeline(needs(BIKES), tmp_path / "out", dataclasses.replace(SMALL, heights=(360, 240)))
    assert result.audio is None and not result.probe.has_audio
    assert not (tmp_path / "out" / "audio").exists()
    assert not any(f.startswith("audio/") for f in result.files)
    assert "EXT-X-MEDIA" not in (tmp_path / "out" / "master.m3u8").read_text()
    facts = mf.check_hls(tmp_path / "out", expected_duration=result.probe.duration)
    # 640x272 fits the 360p box (640x360): its own size; the 240p box (426x240) takes it to 426x182
    assert [(v["width"], v["height"]) for v in facts["variants"]] == [(640, 272), (426, 182)]
    assert [r.name for r in result.renditions] == ["360p", "240p"]


def test_several_codecs_in_one_master(tmp_path):
    src = mf.make_video(tmp_path / "clip.mp4", seconds=2)
    opts = dataclasses.replace(SMALL, codecs=("h264", "hevc", "av1", "vp9"), heights=(144,))
    result = run_pipeline(src, tmp_path / "out", opts)
    facts = mf.check_hls(tmp_path / "out", expected_duration=2.0)  # also: every variant's EXTINFs equal
    assert [r.name for r in result.renditions] == ["144p", "144p-hevc", "144p-av1", "144p-vp9"]
    prefixes = [v["attrs"]["CODECS"].split(".")[0] for v in facts["variants"]]
    assert prefixes == ["avc1", "hvc1", "av01", "vp09"]
    assert re.fullmatch(r"hvc1\.1\.6\.L\d+(\.[0-9A-F]{1,2})*", result.renditions[1].codecs)
    assert re.fullmatch(r"av01\.0\.\d\dM\.08", result.renditions[2].codecs)
    assert re.fullmatch(r"vp09\.00\.\d\d\.08", result.renditions[3].codecs)
    assert b"hvc1" in (tmp_path / "out" / "144p-hevc" / "init.mp4").read_bytes()
    master = mf.read_master(tmp_path / "out")
    assert len(master["iframes"]) == 4 and len(master["media"]) == 1
    for attrs in master["iframes"]:
        playlist = mf.read_media_playlist(tmp_path / "out" / attrs["URI"])
        folder = (tmp_path / "out" / attrs["URI"]).parent
        init = (folder / playlist["map"]).read_bytes()
        for _, name, (length, offset) in playlist["segments"]:
            frames = mf.decode_segment(init, (folder / name).read_bytes()[offset:offset + length])
            assert frames and frames[0].key_frame, attrs["URI"]


def test_live_mode_publishes_event_playlists_then_vod(tmp_path):
    src = mf.make_video(tmp_path / "clip.mp4", seconds=5)
    out = tmp_path / "out"
    seen = []

    def on_file(kind, relpath):
        path = out / relpath
        assert path.is_file() and not path.name.startswith(".")
        text = path.read_text() if relpath.endswith(".m3u8") else None
        if kind == "segment" and relpath.endswith(".m4s"):
            init = (path.parent / "init.mp4").read_bytes()
            assert mf.decode_segment(init, path.read_bytes())  # complete when announced
        seen.append((kind, relpath, text))

    opts = dataclasses.replace(SMALL, segment_seconds=2, live=True, first_segment_seconds=1.0)
    result = run_pipeline(src, out, opts, on_file=on_file)
    masters = [i for i, (kind, _, _) in enumerate(seen) if kind == "master"]
    assert len(masters) == 2
    first_master = masters[0]
    # the master came as soon as every rung and the audio had one segment, long before the end
    before = [relpath for _, relpath, _ in seen[:first_master]]
    for folder in ("240p", "144p", "audio"):
        assert f"{folder}/seg_00001.m4s" in before
        assert f"{folder}/seg_00003.m4s" not in before
    early = seen[first_master][2]
    assert "#EXT-X-STREAM-INF" in early and "mp4a.40.2" in early
    # mid-way the media playlists are growing EVENT playlists that start with a ~1 s segment
    event = next(text for kind, relpath, text in seen[:first_master] if relpath == "240p/index.m3u8")
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
    assert "#EXTINF:1.000000," in event
    # at the end every playlist was rewritten as VOD, and the final master came last
    final = {relpath: text for kind, relpath, text in seen if text is not None}
    for relpath, text in final.items():
        if relpath != "master.m3u8":
            assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "#EXT-X-ENDLIST" in text, relpath
    assert seen[-1][0] == "master"
    facts = mf.check_hls(out, expected_duration=5.0)
    durations = [d for d, _, _ in mf.read_media_playlist(out / "240p/index.m3u8")["segments"]]
    assert durations == [1.0, 2.0, 2.0]
    assert result.renditions[0].segment_count == 3 and facts["audio"]["segments"] >= 3


def test_progress_is_throttled_monotonic_and_finishes(tmp_path):
    src = mf.make_video(tmp_path / "clip.mp4", seconds=2, audio=None)
    calls = []
    run_pipeline(src, tmp_path / "out", SMALL, progress=lambda fraction, stage: calls.append((fraction, stage)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and calls[-1][1] == "done"
    assert all(0.0 <= f <= 1.0 for f in fractions) and len(calls) < 100


def test_a_rerun_replaces_the_previous_output(tmp_path):
    out = tmp_path / "out"
    run_pipeline(mf.make_video(tmp_path / "a.mp4", seconds=2, audio=None), out, SMALL)
    (out / "240p" / "stale.m4s").write_bytes(b"old")
    result = run_pipeline(mf.make_video(tmp_path / "b.mp4", frames=5), out, SMALL)
    assert not (out / "240p" / "stale.m4s").exists()
    assert result.audio is not None and (out / "audio").is_dir()
    mf.check_hls(out, expected_duration=0.2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


@pytest.mark.parametrize("live", [False, True])
def test_a_failed_run_leaves_no_master_and_no_files(tmp_path, monkeypatch, live):
    src = mf.make_video(tmp_path / "clip.mp4", seconds=3)
    out = tmp_path / "out"
    original = hlsmod.Publisher.on_segment
    calls = []
    lock = threading.Lock()

    def failing(self, track, segment):
        with lock:  # rung threads report concurrently
            calls.append(segment)
            count = len(calls)
        original(self, track, segment)
        if count == 6:  # after a live master was published
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(hlsmod.Publisher, "on_segment", failing)
    announced = []
    with pytest.raises(OSError):
        run_pipeline(src, out, dataclasses.replace(SMALL, live=live),
                     on_file=lambda kind, relpath: announced.append(relpath))
    assert not (out / "master.m3u8").exists()
    assert ("master.m3u8" in announced) == live
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "clip.mp4"]
    assert leftovers == []


def test_bad_media_raises_media_error_and_writes_nothing(tmp_path):
    bad = mf.random_bytes(tmp_path / "noise.mp4")
    with pytest.raises(MediaError):
        run_pipeline(bad, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_probe_reads_what_the_pipeline_needs(tmp_path):
    info = probe(mf.make_video(tmp_path / "phone.mp4", width=320, height=180, rotation=90, frames=3,
                               audio="5.1"))
    assert (info.width, info.height, info.rotation) == (180, 320, 90)
    assert info.has_audio and info.audio_channels == 6 and info.video_codec == "h264"
    with pytest.raises(MediaError, match="too long"):
        probe(mf.make_video(tmp_path / "long.mp4", seconds=1, audio=None),
              dataclasses.replace(SMALL, max_duration=0.5))
    song = probe(mf.make_audio_only(tmp_path / "song.m4a"))  # audio-only: accepted (see test_audio.py)
    assert song.kind == "audio" and song.has_audio and abs(song.duration - 1.0) < 0.1


class HandBack(BaseException):
    """What a worker's progress callback may raise to give a job back (not an Exception)."""


def test_a_callback_raising_stops_every_thread_and_cleans_up(tmp_path):
    src = mf.make_video(tmp_path / "clip.mp4", seconds=3)
    before = threading.active_count()

    def progress(fraction, stage):
        if fraction > 0.3:
            raise HandBack()

    with pytest.raises(HandBack):
        run_pipeline(src, tmp_path / "out", SMALL, progress=progress)
    assert threading.active_count() == before
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
