"""Per-title levels: the probe's choice of each rung's constant-quality level (pipeline/pertitle.py)."""
from __future__ import annotations

from fractions import Fraction

import av
import media_factory as mf
import pytest

from streamforge.pipeline import PipelineOptions, plan_ladder, probe, run_pipeline
from streamforge.pipeline import pertitle
from streamforge.pipeline.pertitle import LEVEL_RANGE, ProbePoint, choose_levels, pick_level

OPTS = PipelineOptions(heights=(720, 480, 360), target_quality=98.0)


def _curve(abr: float, *vmafs: float) -> list[ProbePoint]:
    return [ProbePoint(None, 800, abr)] + [ProbePoint(level, 800 - 20 * level, v)
                                           for level, v in zip(pertitle.LEVELS, vmafs)]


def test_the_level_is_the_highest_that_keeps_within_the_margin_of_abr():
    # abr 94 -> aim 93: between 22 (94) and 26 (92) the line crosses at 24
    level, aim, met = pick_level(_curve(94.0, 95.0, 94.0, 92.0, 88.0), target=98.0)
    assert (level, aim, met) == (24.0, 93.0, True)
    # target_quality below what the target bitrate buys is the aim
    level, aim, _ = pick_level(_curve(99.5, 99.8, 99.2, 97.0, 93.0), target=95.0)
    assert aim == 95.0 and 26.0 < level < 30.0


def test_easy_content_gets_a_higher_level_than_hard_content():
    easy, _, _ = pick_level(_curve(97.0, 98.5, 98.2, 97.6, 96.5), target=98.0)  # a slideshow
    hard, _, _ = pick_level(_curve(90.0, 91.0, 89.5, 85.0, 79.0), target=98.0)  # camera motion
    assert easy > hard
    assert LEVEL_RANGE[0] <= hard < easy <= LEVEL_RANGE[1]


def test_grain_that_no_level_meets_keeps_the_cap():
    level, aim, met = pick_level(_curve(86.0, 84.0, 83.5, 80.0, 72.0), target=98.0)
    assert (level, met) == (LEVEL_RANGE[0], False) and aim == 85.0


def test_rung_levels_follow_the_offsets_and_stay_in_range():
    info = probe_result(1920, 1080)
    rungs = plan_ladder(info, PipelineOptions(heights=(1080, 720, 480, 360, 240)))
    levels = {r.name: pertitle.rung_level(24.0, r, met=True) for r in rungs}
    assert levels == {"1080p": 26.0, "720p": 26.0, "480p": 25.0, "360p": 24.0, "240p": 23.0}
    assert max(pertitle.rung_level(33.5, r, met=True) for r in rungs) == LEVEL_RANGE[1]
    assert {pertitle.rung_level(24.0, r, met=False) for r in rungs} == {LEVEL_RANGE[0]}


def probe_result(width: int, height: int):
    from streamforge.pipeline.probe import ProbeResult

    return ProbeResult(path="x.mp4", format_name="mp4", duration=10.0, width=width, height=height,
                       coded_width=width, coded_height=height, sample_aspect_ratio=Fraction(1), fps=25.0,
                       frame_rate=Fraction(25), rotation=0, video_codec="h264", pix_fmt="yuv420p",
                       interlaced=False, start_time=0.0, has_audio=False)


def _still(path, seconds=2.0):
    """A static picture: the easiest content there is."""
    frame = av.VideoFrame(640, 360, "yuv420p")
    for i, plane in enumerate(frame.planes):
        memoryview(plane)[:] = bytes((n * 7 + i * 50) % 200 + 20 for n in range(plane.buffer_size))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        for n in range(int(seconds * 25)):
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_a_real_probe_gives_a_still_a_higher_level_than_moving_stripes(tmp_path):
    still = _still(tmp_path / "still.mp4")
    stripes = mf.make_video(tmp_path / "stripes.mp4", width=640, height=360, seconds=2.0, audio=None,
                            options={"crf": "10"})
    chosen = {}
    for name, src in (("still", still), ("stripes", stripes)):
        info = probe(src)
        planned = plan_ladder(info, OPTS)
        rungs, note = choose_levels(src, info, planned, OPTS)
        assert [(r.name, r.maxrate, r.bufsize) for r in rungs] == [(r.name, r.maxrate, r.bufsize) for r in planned]
        assert note.startswith("per-title levels: 360p ") and "abr " in note and "crf 18 " in note
        assert "VMAF" in note and "kbit/s" in note
        chosen[name] = rungs[0].crf
    assert chosen["still"] > chosen["stripes"]


def test_the_processing_notes_carry_the_choice_and_off_means_the_fixed_levels(tmp_path):
    src = mf.make_video(tmp_path / "in.mp4", width=640, height=360, seconds=1.0, audio=None)
    result = run_pipeline(src, tmp_path / "out", OPTS)
    assert result.notes[0].startswith("per-title levels: 360p ")
    fixed = run_pipeline(src, tmp_path / "fixed", PipelineOptions(heights=(720, 480, 360), target_quality=0))
    assert not any(n.startswith("per-title") for n in fixed.notes)
    abr = run_pipeline(src, tmp_path / "abr", PipelineOptions(heights=(360,), rate_control="abr"))
    assert not any(n.startswith("per-title") for n in abr.notes)


@pytest.mark.parametrize("value", ["-1", "101", "high"])
def test_target_quality_config_is_checked(tmp_path, value):
    from streamforge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="target_quality"):
        load_config(data_dir=tmp_path, env={"STREAMFORGE_PIPELINE_TARGET_QUALITY": value})
    config = load_config(data_dir=tmp_path, env={"STREAMFORGE_PIPELINE_TARGET_QUALITY": "95"})
    assert PipelineOptions.from_config(config.pipeline).target_quality == 95.0
