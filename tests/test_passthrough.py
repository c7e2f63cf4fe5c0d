"""Passthrough: an H.264 upload that fits the top rung keeps its own packets; the other rungs align to it."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import media_factory as mf
import pytest
from test_processing import live  # noqa: F401 - the app on a real SeaweedFS, a 360/240 ladder

from streamforge.pipeline import PipelineOptions, run_pipeline
from streamforge.pipeline import passthrough as pt

OPTS = PipelineOptions(codecs=("h264",), heights=(240, 120), preset="ultrafast", segment_seconds=2,
                       preview_count=1)


def make_upload(path: Path, keyframes: list[int], frames: int = 100, width: int = 320, height: int = 240,
                audio: bool = True, crf: int = 32) -> Path:
    """A 25 fps H.264 yuv420p clip whose keyframes are exactly on `keyframes` (frame numbers)."""
    rate = Fraction(25)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = 1 / rate
        video.codec_context.options = {"preset": "ultrafast", "crf": str(crf), "forced-idr": "1",
                                       "x264-params": "keyint=1000:min-keyint=1000:scenecut=0"}
        sound = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for i in range(frames):
            frame = mf._picture(width, height, i)
            frame.pts, frame.time_base = i, 1 / rate
            frame.pict_type = av.video.frame.PictureType.I if i in keyframes else av.video.frame.PictureType.NONE
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            mf._write_audio(out, sound, frames / 25, 0.0)
    return path


def video_packets(path: Path) -> list[bytes]:
    """The payload of every video packet, in decode order."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def joined(outdir: Path, rung: str) -> Path:
    """init + every segment of a rung, as one MP4."""
    folder = outdir / rung
    names = [line for line in (folder / "index.m3u8").read_text().splitlines() if line and not line[0] == "#"]
    target = outdir / f"{rung}.mp4"
    target.write_bytes(b"".join((folder / n).read_bytes() for n in ["init.mp4", *names]))
    return target


@pytest.mark.parametrize("live_mode", [False, True])
def test_an_h264_upload_is_copied_and_the_other_rungs_align_to_its_keyframes(tmp_path, live_mode):
    src = make_upload(tmp_path / "up.mp4", keyframes=[0, 25, 50, 75])  # 1 s keyframes, 4 s
    opts = dataclasses.replace(OPTS, live=live_mode)
    result = run_pipeline(src, tmp_path / "out", opts)
    top, small = result.renditions
    assert top.copied and not small.copied and (top.width, top.height) == (320, 240)
    assert any("240p copied from the upload" in note for note in result.notes)
    # the very packets of the upload, not a re-encode
    assert video_packets(joined(tmp_path / "out", "240p")) == video_packets(src)
    # every rung (and the audio) cut at the same times, on the upload's keyframes: two 2 s segments, or in a
    # live run a first segment of first_segment_seconds (1 s) so that the video is playable early
    cuts = [0.0, 1.0, 3.0] if live_mode else [0.0, 2.0]
    for rung in ("240p", "120p", "audio"):
        text = (tmp_path / "out" / rung / "index.m3u8").read_text()
        durations = [float(line[8:-1]) for line in text.splitlines() if line.startswith("#EXTINF:")]
        # audio is cut at its own frames (1024 samples, 21 ms) nearest the boundary
        expected = [b - a for a, b in zip(cuts, [*cuts[1:], 4.0])]
        assert durations == pytest.approx(expected, abs=0.03 if rung != "audio" else 0.07), rung
    with av.open(str(joined(tmp_path / "out", "120p"))) as container:
        keys = [float(p.pts * p.time_base) for p in container.demux(container.streams.video[0]) if p.is_keyframe]
    assert keys == pytest.approx(cuts, abs=0.01)


def test_a_live_run_does_not_copy_an_upload_whose_first_keyframe_would_hold_playback_back(tmp_path):
    """Keyframes every 3 s suit 2 s segments, but in a run that is playable early the copied rung's first
    segment would be 3 s, past 2 s: that run encodes the rung, with its short first segment (first_segment_seconds)."""
    src = make_upload(tmp_path / "up.mp4", keyframes=[0, 75, 150], frames=200, audio=False)
    live_run = run_pipeline(src, tmp_path / "live", dataclasses.replace(OPTS, live=True))
    assert not any(r.copied for r in live_run.renditions)
    assert any("first playable moment" in note for note in live_run.notes), live_run.notes
    text = (tmp_path / "live" / "240p" / "index.m3u8").read_text()
    assert float(next(line for line in text.splitlines() if line.startswith("#EXTINF:"))[8:-1]) == pytest.approx(OPTS.first_segment_seconds, abs=0.04)  # whole frames
    assert run_pipeline(src, tmp_path / "built", OPTS).renditions[0].copied  # built aside: no hurry, copied


def test_an_upload_with_one_keyframe_is_one_segment_in_every_rung(tmp_path):
    src = make_upload(tmp_path / "up.mp4", keyframes=[0], frames=90)  # 3.6 s, within 2 x 2 s
    result = run_pipeline(src, tmp_path / "out", OPTS)
    assert result.renditions[0].copied
    assert [r.segment_count for r in result.renditions] == [1, 1]
    assert (tmp_path / "out" / "audio" / "index.m3u8").read_text().count("#EXTINF:") == 1


def test_passthrough_off_encodes_every_rung(tmp_path):
    src = make_upload(tmp_path / "up.mp4", keyframes=[0, 25, 50, 75], audio=False)
    result = run_pipeline(src, tmp_path / "out", dataclasses.replace(OPTS, passthrough=False))
    assert not any(r.copied for r in result.renditions)
    assert [n for n in result.notes if n.startswith("passthrough")] == []  # (the per-title levels have a note)
    assert video_packets(joined(tmp_path / "out", "240p")) != video_packets(src)


@pytest.mark.parametrize("keyframes,frames,reason", [
    ([0, 10, 50, 55, 90], 100, "irregular"),  # scene-cut style keyframes
    ([0, 120], 150, "more than 2 x segment_seconds"),  # 4.8 s apart, segments of 2 s
])
def test_irregular_or_sparse_keyframes_are_encoded_and_the_log_says_why(tmp_path, keyframes, frames, reason):
    src = make_upload(tmp_path / "up.mp4", keyframes=keyframes, frames=frames, audio=False)
    result = run_pipeline(src, tmp_path / "out", OPTS)
    assert not any(r.copied for r in result.renditions)
    notes = [n for n in result.notes if n.startswith("passthrough")]
    assert len(notes) == 1 and "not used" in notes[0] and reason in notes[0]
    # the usual 2 s timeline
    text = (tmp_path / "out" / "240p" / "index.m3u8").read_text()
    assert text.count("#EXTINF:2.000000,") >= 2


def test_a_crf_rung_capped_below_its_target_still_takes_an_upload_up_to_the_target(tmp_path):
    from streamforge.pipeline import plan_ladder, probe

    src = make_upload(tmp_path / "up.mp4", keyframes=[0, 25, 50, 75])
    info = probe(src)
    rungs = plan_ladder(info, OPTS)
    plan, why = pt.plan_passthrough(src, info, rungs, OPTS)
    assert plan is not None, why
    # the upload's peak between the rung's VBV cap and its target: copied (the cap saves encoded bytes)
    crf = dataclasses.replace(rungs[0], bitrate=plan.peak + 1000, maxrate=plan.peak - 1000)
    assert pt.copy_peak(crf) == plan.peak + 1000
    plan_crf, why = pt.plan_passthrough(src, info, [crf, *rungs[1:]], OPTS)
    assert plan_crf is not None and plan_crf.rung is crf, why
    # above both: encoded, and the log says why
    low = dataclasses.replace(rungs[0], bitrate=plan.peak - 2000, maxrate=plan.peak - 1000)
    refused, why = pt.plan_passthrough(src, info, [low, *rungs[1:]], OPTS)
    assert refused is None and "peak" in why and f"{(plan.peak - 1000) // 1000} kbit/s" in why


def test_what_is_never_copied(tmp_path):
    from streamforge.pipeline import plan_ladder, probe

    def why(src: Path, opts: PipelineOptions = OPTS) -> str:
        info = probe(src)
        plan, reason = pt.plan_passthrough(src, info, plan_ladder(info, opts), opts)
        assert plan is None
        return reason

    big = make_upload(tmp_path / "big.mp4", keyframes=[0, 25], frames=50, width=640, height=480, audio=False)
    assert "larger than the 240p rung" in why(big)
    # far above the 240p rung's peak (stripes at CRF 5)
    heavy = make_upload(tmp_path / "heavy.mp4", keyframes=[0, 25, 50, 75], crf=5, audio=False)
    assert "peak" in why(heavy)
    hevc = mf.make_video(tmp_path / "hevc.mp4", codec="libx265", seconds=1, audio=None)
    assert "not H.264" in why(hevc)
    vfr = mf.make_video(tmp_path / "vfr.mp4", seconds=2, vfr=True, audio=None)
    assert "not evenly spaced" in why(vfr)
    yuv444 = mf.make_video(tmp_path / "444.mp4", seconds=1, pix_fmt="yuv444p", audio=None)
    assert "yuv420p" in why(yuv444)
    assert pt.plan_passthrough(big, probe(big), plan_ladder(probe(big), OPTS),
                               dataclasses.replace(OPTS, passthrough=False)) == (None, "")


def test_the_processing_log_says_which_rung_was_copied(live, tmp_path):  # noqa: F811 - the fixture
    from conftest import drain_queue
    from test_processing import logs, upload

    # fits the 240p rung; 4 s: the worker's live run cuts a 1 s first segment (on the keyframe at 1 s), then the rest
    src = make_upload(tmp_path / "phone.mp4", keyframes=[0, 25, 50, 75])
    vid = upload(live, src.read_bytes())
    assert drain_queue() == ["completed"]
    done = [i for i in logs(live, vid) if i["stage"] == "transcode" and i["status"] == "completed"]
    assert len(done) == 1 and "240p h264 320x240 2 segments (copied)" in done[0]["message"]
    assert "passthrough: 240p copied from the upload" in done[0]["message"]
