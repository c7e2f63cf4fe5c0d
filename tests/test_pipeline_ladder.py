"""Ladder planning: never upscale, even sizes, orientation kept, names, bitrates; options from config."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamforge.pipeline import PipelineOptions, plan_ladder
from streamforge.pipeline.ladder import CRF_CAP, encoder_preset, output_frame_rate


def source(width: int, height: int, rate: Fraction = Fraction(25)):
    return SimpleNamespace(width=width, height=height, frame_rate=rate)


def sizes(rungs):
    return [(r.name, r.width, r.height) for r in rungs]


def test_1080p_source_gets_the_whole_ladder():
    rungs = plan_ladder(source(1920, 1080), PipelineOptions())
    assert sizes(rungs) == [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    assert [r.bitrate_text for r in rungs] == sorted([r.bitrate_text for r in rungs], key=lambda t: -int(t[:-1]))


def test_never_upscales_and_keeps_the_source_size_in_between():
    assert sizes(plan_ladder(source(1280, 720), PipelineOptions())) == [
        ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    # 1000x562 sits between 720p and 480p: encoded at its own size, then the smaller rungs
    assert sizes(plan_ladder(source(1000, 562), PipelineOptions())) == [
        ("562p", 1000, 562), ("480p", 854, 480), ("360p", 640, 360)]


def test_source_below_the_smallest_rung_gets_one_rung_at_its_own_size():
    assert sizes(plan_ladder(source(64, 64), PipelineOptions())) == [("64p", 64, 64)]
    assert sizes(plan_ladder(source(321, 241), PipelineOptions())) == [("240p", 320, 240)]


def test_portrait_stays_portrait():
    rungs = plan_ladder(source(1080, 1920), PipelineOptions())
    assert sizes(rungs) == [("1080p", 1080, 1920), ("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)]


def test_cinemascope_fills_the_box_width():
    assert sizes(plan_ladder(source(1920, 800), PipelineOptions(heights=(1080, 720)))) == [
        ("1080p", 1920, 800), ("720p", 1280, 534)]


def test_other_codecs_get_their_own_names_and_lower_bitrates():
    opts = PipelineOptions(codecs=("h264", "hevc", "av1", "vp9"), heights=(720,))
    rungs = plan_ladder(source(1280, 720), opts)
    assert [r.name for r in rungs] == ["720p", "720p-hevc", "720p-av1", "720p-vp9"]
    h264 = rungs[0].bitrate
    assert all(r.bitrate < h264 for r in rungs[1:])


def test_bitrate_scales_with_frame_rate():
    at30 = plan_ladder(source(1280, 720, Fraction(30)), PipelineOptions(heights=(720,)))[0]
    at60 = plan_ladder(source(1280, 720, Fraction(60)), PipelineOptions(heights=(720,)))[0]
    assert 1.3 < at60.bitrate / at30.bitrate < 1.5
    assert at30.maxrate == int(at30.bitrate * CRF_CAP["h264"]) and at30.bufsize >= at30.maxrate


def test_abr_rungs_keep_their_target_and_peak():
    abr = plan_ladder(source(1280, 720, Fraction(30)), PipelineOptions(heights=(720,), rate_control="abr"))[0]
    assert abr.crf is None and abr.maxrate == int(abr.bitrate * 1.5) and abr.bufsize == abr.bitrate * 2


def test_crf_rungs_are_capped_and_smaller_rungs_get_a_lower_crf():
    rungs = plan_ladder(source(1920, 1080), PipelineOptions(codecs=("h264", "av1")))
    h264 = [r for r in rungs if r.codec == "h264"]
    # H.264's cap is CRF_CAP of the target, the other codecs' the target itself
    assert all(r.crf is not None and r.bufsize == 2 * r.bitrate for r in rungs)
    assert all(r.maxrate == int(r.bitrate * 0.85) for r in h264) and CRF_CAP == {"h264": 0.85}
    assert all(r.maxrate == r.bitrate for r in rungs if r.codec == "av1")
    assert [r.crf for r in h264] == sorted((r.crf for r in h264), reverse=True)
    assert h264[0].crf > h264[-1].crf
    assert [(r.name, r.crf) for r in h264] == [("1080p", 18), ("720p", 18), ("480p", 17), ("360p", 16)]
    small = plan_ladder(source(426, 240), PipelineOptions(heights=(240,)))[0]
    assert small.crf == 15
    # a film's or a phone's rungs take the level of the box they fill, as a 16:9 rung of that name does
    film = plan_ladder(source(1280, 544), PipelineOptions(heights=(720, 480, 360)))
    assert [(r.width, r.height, r.crf) for r in film] == [(1280, 544, 18), (854, 362, 17), (640, 272, 16)]
    phone = plan_ladder(source(720, 1280), PipelineOptions(heights=(720, 480)))
    assert [(r.width, r.height, r.crf) for r in phone] == [(720, 1280, 18), (480, 854, 17)]
    custom = plan_ladder(source(1280, 720), PipelineOptions(heights=(720, 480), quality={"h264": 26}))
    assert [r.crf for r in custom] == [26, 25]
    with pytest.raises(ValueError, match="rate_control"):
        plan_ladder(source(1280, 720), PipelineOptions(rate_control="vbr"))


def test_the_preset_is_the_configured_one_or_the_measured_default_of_the_rate_control():
    assert encoder_preset("h264", PipelineOptions()) == "veryfast"  # crf: per-title levels at abr's speed
    assert encoder_preset("h264", PipelineOptions(rate_control="abr")) == "veryfast"  # as it always was
    assert encoder_preset("hevc", PipelineOptions()) == "veryfast"
    assert encoder_preset("h264", PipelineOptions(preset="ultrafast")) == "ultrafast"
    assert encoder_preset("av1", PipelineOptions(preset="slow", rate_control="abr")) == "slow"


@pytest.mark.parametrize("rate,expected", [
    (Fraction(30000, 1001), Fraction(30000, 1001)), (Fraction(120), Fraction(60)), (Fraction(100), Fraction(50)),
    (Fraction(240), Fraction(60)), (Fraction(25), Fraction(25)), (Fraction(0), Fraction(25))])
def test_output_frame_rate_is_capped(rate, expected):
    assert output_frame_rate(rate, 60) == expected


@settings(max_examples=200, deadline=None)
@given(width=st.integers(16, 8192), height=st.integers(16, 8192),
       heights=st.lists(st.integers(16, 2160), min_size=1, max_size=6))
def test_every_plan_is_even_never_upscaled_and_keeps_orientation(width, height, heights):
    rungs = plan_ladder(source(width, height), PipelineOptions(heights=tuple(heights)))
    assert rungs
    names = [r.name for r in rungs]
    assert len(names) == len(set(names))
    for r in rungs:
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.width <= width and r.height <= height
        if width > height * 1.05:
            assert r.width >= r.height
        if height > width * 1.05:
            assert r.height >= r.width
    areas = [r.width * r.height for r in rungs]
    assert areas == sorted(areas, reverse=True)


def test_options_from_config_are_frozen_tuples():
    config = SimpleNamespace(codecs=["h264", "vp9"], heights=[720, 360], preset="fast", segment_seconds=6,
                             max_duration=60.0, max_width=1920, max_height=1080, max_streams=4, max_fps=30,
                             run_timeout=100)
    opts = PipelineOptions.from_config(config)
    assert opts.codecs == ("h264", "vp9") and opts.heights == (720, 360) and opts.preset == "fast"
    assert opts.segment_seconds == 6 and opts.max_fps == 30 and not opts.live
    live = dataclasses.replace(opts, live=True, codecs=("h264",))
    assert live.live and live.codecs == ("h264",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.preset = "slow"


def test_options_from_the_real_config():
    from streamforge.config import PipelineConfig

    opts = PipelineOptions.from_config(PipelineConfig())
    assert opts.codecs == ("h264",) and opts.heights == (1080, 720, 480, 360) and opts.segment_seconds == 4
