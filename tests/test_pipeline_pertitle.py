"""Per-title levels: the probe's choice of each rung's constant-quality level (pipeline/pertitle.py)."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from fractions import Fraction

import av
import media_factory as mf
import pytest

from streamforge.pipeline import PipelineOptions, pertitle, plan_ladder, probe, run_pipeline
from streamforge.pipeline.ladder import CRF_CAP, as_levels, target_bitrate
from streamforge.pipeline.pertitle import (
    LEVEL_RANGE,
    MARGIN,
    ProbePoint,
    SizeChoice,
    choose_levels,
    pick_level,
)

OPTS = PipelineOptions(heights=(720, 480, 360), target_quality=98.0)
SIZE = (640, 360)
TARGET = target_bitrate("h264", *SIZE, Fraction(25)) / 1000  # kbit/s


def _curve(*points: tuple[float, float, float]) -> list[ProbePoint]:
    """(level, kbit/s as a multiple of the target bitrate, VMAF) -> probe points."""
    return [ProbePoint(SIZE, level, share * TARGET, vmaf) for level, share, vmaf in points]


def _half_steps_down(level: float) -> float:
    return math.floor(level * 2) / 2


def test_the_level_is_the_highest_within_the_margin_of_what_the_target_bitrate_buys():
    # the target bitrate buys 94 (level 22's) -> aim 94 - MARGIN: between 22 (94) and 26 (90) on the line
    choice = pick_level(_curve((18, 2.0, 95.0), (22, 1.0, 94.0), (26, 0.5, 90.0)), SIZE, target=98.0)
    aim = 94.0 - MARGIN
    assert (choice.level, choice.aim, choice.met) == (_half_steps_down(22 + (94 - aim) / 4 * 4), aim, True)
    assert 22.0 < choice.level < 26.0
    # a target_quality below what the target bitrate buys is the aim
    choice = pick_level(_curve((18, 2.0, 99.5), (22, 1.0, 99.0), (26, 0.5, 90.0)), SIZE, target=95.0)
    assert choice.aim == 95.0 and choice.level == _half_steps_down(22 + (99 - 95) / 9 * 4)
    # one the leanest level probed still reaches stops there: past it the curve is a guess
    choice = pick_level(_curve((18, 2.0, 99.5), (22, 1.0, 99.0), (26, 0.5, 96.0)), SIZE, target=95.0)
    assert (choice.aim, choice.level, choice.met) == (95.0, 26.0, True)


def test_the_aim_is_what_abr_buys_less_the_gap_to_the_baseline_encode():
    # crf's settings are worth some VMAF at equal bytes: the baseline (abr's settings) lies that much
    # under crf's curve, and the aim comes down with it: a higher level, fewer bits
    top = pertitle.TOP_BOX
    target = target_bitrate("h264", *top, Fraction(25)) / 1000
    curve = [ProbePoint(top, level, share * target, vmaf) for level, share, vmaf in
             ((18, 2.0, 95.0), (22, 1.0, 94.0), (26, 0.5, 90.0))]
    baseline = ProbePoint(top, 20.0, 1.0 * target, 92.0, baseline=True)  # 2 under the curve at 1.0x
    assert pertitle.settings_gap(curve + [baseline]) == pytest.approx(2.0)
    assert pertitle.abr_buys(curve + [baseline], target) == pytest.approx(94.0 - 2.0)
    plain, gapped = pick_level(curve, top, target=98.0), pick_level(curve + [baseline], top, target=98.0)
    assert gapped.aim == pytest.approx(plain.aim - 2.0) and gapped.level > plain.level
    # a baseline above the curve (settings that do not help this picture) raises the aim
    better = ProbePoint(top, 20.0, 1.0 * target, 95.0, baseline=True)
    assert pick_level(curve + [better], top, target=98.0).aim == pytest.approx(plain.aim + 1.0)
    # so does a small size's
    small = _curve((18, 2.0, 95.0), (22, 1.0, 94.0), (26, 0.5, 90.0))
    gap = ProbePoint(SIZE, 20.0, 1.0 * TARGET, 93.0, baseline=True)
    assert pick_level(small + [gap], SIZE, 98.0).aim == pytest.approx(pick_level(small, SIZE, 98.0).aim - 1.0)


def test_easy_content_gets_a_higher_level_than_hard_content():
    easy = pick_level(_curve((18, 0.4, 99.0), (22, 0.25, 98.8), (26, 0.15, 98.5)), SIZE, 98.0)  # a screen
    hard = pick_level(_curve((18, 1.2, 90.0), (22, 0.5, 85.0), (26, 0.25, 79.0)), SIZE, 98.0)  # camera motion
    assert easy.met and hard.met
    assert LEVEL_RANGE[0] <= hard.level < easy.level <= LEVEL_RANGE[1]
    # the target buys 85 + 5 * ln(1/0.5) / ln(1.2/0.5) between 22 and 18; the level is where the aim falls
    aim = 85 + 5 * math.log(2) / math.log(2.4) - MARGIN
    assert hard.level == _half_steps_down(18 + (90 - aim) / 5 * 4)
    # the easy one meets the aim at every level probed: the leanest, never a guess past it
    assert easy.level == pertitle.LEVELS[-1] < LEVEL_RANGE[1]


def test_grain_keeps_the_cap():
    # every level takes more than the target bitrate: the rung gets the level where the curve, carried on
    # past the leanest probe, takes the target (a low one would spend the nearly full buffer a short video
    # starts with on top): 2.0x at 26, 1.5x less every 4 levels, reaches 1.0x near 33: the top of the range
    grain = pick_level(_curve((18, 4.0, 80.0), (22, 3.0, 79.0), (26, 2.0, 77.0)), SIZE, 98.0)
    assert (grain.level, grain.met) == (LEVEL_RANGE[1], False)
    # a steeper one reaches the target between the leanest probe and the top of the range
    steep = pick_level(_curve((18, 8.0, 80.0), (22, 3.0, 79.0), (26, 1.125, 77.0)), SIZE, 98.0)
    assert (steep.level, steep.met) == (26.5, False)
    assert pertitle.kbps_at(_curve((18, 8.0, 80.0), (22, 3.0, 79.0), (26, 1.125, 77.0)), 26.5) <= TARGET
    # or no level in range reaches what the target bitrate buys (the steep curve of starved pictures)
    starved = pick_level(_curve((18, 0.5, 70.0), (22, 0.3, 60.0), (26, 0.2, 50.0)), SIZE, 98.0)
    assert (starved.level, starved.met) == (LEVEL_RANGE[0], False)


def test_past_the_richest_probe_the_curve_goes_on_and_levels_below_it_are_chosen():
    # the target bitrate is 1/0.75 of what level 18 takes: abr buys more than 18's VMAF, its distance from
    # 100 shrinking as between 18 and 22 (from 12 to 7); the level is on under 18 at 1.25 VMAF a level
    choice = pick_level(_curve((18, 0.75, 93.0), (22, 0.45, 88.0), (26, 0.25, 83.0)), SIZE, 100.0)
    aim = 100 - 7 * (1 / 0.75) ** -(math.log(12 / 7) / math.log(0.75 / 0.45)) - MARGIN
    assert choice.met and round(choice.aim, 6) == round(aim, 6)
    assert choice.level == _half_steps_down(18 - (aim - 93) / 1.25) and LEVEL_RANGE[0] <= choice.level < 18
    # a little over level 18's bitrate (Big Buck Bunny's 720p): near 18, where it used to ride the cap at 16
    bbb = pick_level(_curve((18, 0.8, 95.4), (22, 0.43, 92.2), (26, 0.25, 87.3)), SIZE, 100.0)
    assert bbb.met and 17.0 <= bbb.level <= 18.5


def test_past_the_richest_probe_vmaf_closes_on_100():
    # 96 at 1000 kbit/s and 92 at 500: each doubling halves the distance from 100, where a straight line
    # in log bitrate would reach 100 at 2000 and stay there
    curve = [ProbePoint(SIZE, 18.0, 1000.0, 96.0), ProbePoint(SIZE, 22.0, 500.0, 92.0)]
    assert [round(pertitle.at_target(curve, kbps), 6) for kbps in (1000, 2000, 4000)] == [96.0, 98.0, 99.0]
    # far from 100 it is nearly the straight line: 60 and 55 go on to 64.4 at twice the bitrate (straight: 65)
    low = [ProbePoint(SIZE, 18.0, 1000.0, 60.0), ProbePoint(SIZE, 22.0, 500.0, 55.0)]
    assert 64.4 < pertitle.at_target(low, 2000) < 64.5
    # at 100 already it stays there; a curve that falls with more bits (noise) is not taken to rise
    assert pertitle.at_target([ProbePoint(SIZE, 18.0, 1000.0, 100.0), ProbePoint(SIZE, 22.0, 500.0, 99.0)], 4000) == 100.0
    flat = [ProbePoint(SIZE, 18.0, 1000.0, 90.0), ProbePoint(SIZE, 22.0, 500.0, 91.0)]
    assert pertitle.at_target(flat, 2000) < 90.0


def test_with_a_480p_probe_the_480p_rung_takes_its_own_level():
    rungs = plan_ladder(probe_result(1920, 1080), PipelineOptions(heights=(1080, 720, 480, 360, 240)))
    choices = [SizeChoice((1280, 720), 24.0, 90.0, True), SizeChoice((854, 480), 21.0, 85.0, True),
               SizeChoice((640, 360), 23.0, 80.0, True)]
    levels = {r.name: pertitle.rung_choice(choices, r, top_box=1080).level for r in rungs}
    # 720p under a 1080p rung: the lower of its own probe's level and the next smaller probe's
    assert levels == {"1080p": 24.0, "720p": 21.0, "480p": 21.0, "360p": 23.0, "240p": 22.0}
    assert pertitle.rung_choice(choices, rungs[1], top_box=720).level == 24.0


def test_rung_levels_come_from_the_probe_size_of_their_box_and_stay_in_range():
    rungs = plan_ladder(probe_result(1920, 1080), PipelineOptions(heights=(1080, 720, 480, 360, 240)))
    choices = [SizeChoice((1280, 720), 20.0, 90.0, True), SizeChoice((640, 360), 23.0, 80.0, True)]
    levels = {r.name: pertitle.rung_choice(choices, r, top_box=1080).level for r in rungs}
    assert levels == {"1080p": 20.0, "720p": 20.0, "480p": 20.0, "360p": 23.0, "240p": 22.0}
    # a 720p rung under a 1080p one is watched scaled up: the lower of the two sizes' levels
    lower_top = [SizeChoice((1280, 720), 25.0, 90.0, True), SizeChoice((640, 360), 22.0, 80.0, True)]
    assert pertitle.rung_choice(lower_top, rungs[0], top_box=1080).level == 25.0
    assert pertitle.rung_choice(lower_top, rungs[1], top_box=1080).level == 22.0
    assert pertitle.rung_choice(lower_top, rungs[1], top_box=720).level == 25.0
    capped = [SizeChoice((1280, 720), LEVEL_RANGE[0], 90.0, False), SizeChoice((640, 360), 23.0, 80.0, True)]
    assert pertitle.rung_choice(capped, rungs[0]).level == LEVEL_RANGE[0]
    assert all(LEVEL_RANGE[0] <= pertitle.rung_choice(choices, r).level <= LEVEL_RANGE[1] for r in rungs)


def probe_result(width: int, height: int):
    from streamforge.pipeline.probe import ProbeResult

    return ProbeResult(path="x.mp4", format_name="mp4", duration=10.0, width=width, height=height,
                       coded_width=width, coded_height=height, sample_aspect_ratio=Fraction(1), fps=25.0,
                       frame_rate=Fraction(25), rotation=0, video_codec="h264", pix_fmt="yuv420p",
                       interlaced=False, start_time=0.0, has_audio=False)


def _clip(path, kind: str, seconds: float = 2.0):
    """640x360 at 25 fps: "still", one smooth picture held (the easiest content there is), or "noise",
    new random pixels every frame (grain no level keeps up with)."""
    rng = random.Random(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.options = {"crf": "12", "preset": "ultrafast"}
        frame = av.VideoFrame(640, 360, "yuv420p")
        for n in range(int(seconds * 25)):
            for i, plane in enumerate(frame.planes):
                if kind == "noise":
                    data = rng.randbytes(plane.buffer_size)
                else:
                    row = bytes((16 + x // 4 + i * 40) % 236 for x in range(plane.line_size))
                    data = row * (plane.buffer_size // plane.line_size)
                memoryview(plane)[:] = data
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_a_real_probe_gives_a_still_the_leanest_level_and_grain_the_cap(tmp_path):
    chosen = {}
    for kind in ("still", "noise"):
        src = _clip(tmp_path / f"{kind}.mp4", kind)
        info = probe(src)
        planned = plan_ladder(info, OPTS)
        rungs, note = choose_levels(src, info, planned, OPTS)
        # the buffers are the plan's; the peaks too, but hard content's (below), which spends the target
        assert [(r.name, r.bufsize) for r in rungs] == [(r.name, r.bufsize) for r in planned]
        assert rungs[0].maxrate > planned[0].maxrate if kind == "noise" else rungs[0].maxrate == planned[0].maxrate
        assert rungs[0].maxrate <= rungs[0].bitrate
        assert note.startswith("per-title levels: 360p ") and "640x360: " in note
        assert "crf 18 " in note and "crf 26 " in note and "kbit/s VMAF " in note and "as abr at crf 20 " in note
        chosen[kind] = (rungs[0].crf, note)
    # the still meets the aim at every level probed: the leanest; the noise takes more than the target at
    # every one: hard content, at a level past the leanest where its curve comes down to the target
    assert chosen["still"][0] == pertitle.LEVELS[-1] and "level 26 meets the aim" in chosen["still"][1], chosen
    assert pertitle.LEVELS[-1] < chosen["noise"][0] <= pertitle.LEVEL_RANGE[1], chosen
    assert "hard content" in chosen["noise"][1]


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


def test_the_probe_takes_more_stretches_of_longer_videos_and_a_live_run_at_most_two():
    assert [pertitle.samples_for(d, live=False) for d in (4, 9.9, 10, 12, 299, 300, 3600)] == [1, 1, 2, 2, 2, 3, 3]
    assert [pertitle.samples_for(d, live=True) for d in (4, 12, 120, 3600)] == [1, 2, 2, 2]


def test_the_probe_scores_every_step_th_picture_as_if_it_had_scored_them_all(tmp_path):
    """vmaf_scores passes libvmaf only the scored pictures and their neighbours: its mean must be that of
    the same pictures when every picture is scored (the motion feature included)."""
    import json
    import subprocess

    frames = [f for f in av.open(str(mf.make_video(tmp_path / "in.mp4", width=320, height=180, seconds=1.6,
                                                   audio=None))).decode(video=0)][:pertitle.SAMPLE_FRAMES * 2]
    assert len(frames) == 40
    pertitle.write_raw(frames, tmp_path / "reference.yuv")
    data, _ = pertitle.encode_samples(frames, pertitle.probe_options(30.0, OPTS, (320, 180)), 100)
    (tmp_path / "0.h264").write_bytes(data)
    whole = pertitle._vmaf_command([0], 320, 180, 1)
    subprocess.run(whole, cwd=tmp_path, check=True)
    per_picture = [f["metrics"]["vmaf"] for f in json.loads((tmp_path / "vmaf0.json").read_text())["frames"]]
    assert len(per_picture) == 40
    for step in (pertitle.SCORE_STEP, pertitle.ONE_STRETCH_STEP, 7):
        subsampled = pertitle.vmaf_scores(tmp_path, [0], 320, 180, step)[0]
        scored = list(range(0, 40, step))
        assert subsampled == pytest.approx(sum(per_picture[n] for n in scored) / len(scored), abs=1e-3), step
        assert subsampled != pytest.approx(sum(per_picture) / 40, abs=1e-3)  # a subsample it is


def test_hard_contents_peak_rises_with_the_steepness_of_its_curve_and_is_never_lowered():
    # both take more than the target at every level probed: hard content, riding its peak all through
    flat = pick_level(_curve((18, 12.0, 97.5), (22, 6.4, 94.3), (26, 1.5, 87.5)), SIZE, 100.0)  # heavy grain
    steep = pick_level(_curve((18, 5.1, 99.0), (22, 3.6, 96.7), (26, 2.3, 92.2)), SIZE, 100.0)  # a fractal zoom
    assert not flat.met and not steep.met
    slope = (96.7 - 92.2) / math.log(3.6 / 2.3)  # VMAF per e-fold of bitrate, between the two leanest probes
    assert steep.peak == pytest.approx(math.exp(-pertitle.PEAK_LOSS / slope))
    assert 0.85 < flat.peak < steep.peak < 1.0
    rung = plan_ladder(probe_result(1280, 720), PipelineOptions(heights=(720,)))[0]
    assert pertitle._with_choice(rung, steep).maxrate == int(rung.bitrate * steep.peak) > rung.maxrate
    assert pertitle.hard_peak(_curve((18, 3.0, 80.0), (22, 2.0, 79.8))) == CRF_CAP["h264"]  # nearly flat
    easy = pertitle.SizeChoice(SIZE, 22.0, 90.0, True, peak=0.5)  # a peak under the plan's is not taken
    assert pertitle._with_choice(rung, easy).maxrate == rung.maxrate
    assert pertitle._with_choice(rung, pick_level(_curve((18, 0.8, 95.0), (22, 0.5, 92.0)), SIZE, 100.0)
                                 ).maxrate == rung.maxrate  # content a level meets: the plan's peak


def test_chosen_levels_carry_their_peaks_to_a_planned_ladder():
    info, opts = probe_result(1280, 720), PipelineOptions(heights=(720, 360))
    planned = plan_ladder(info, opts)
    hard = [dataclasses.replace(planned[0], crf=24.0, maxrate=int(planned[0].bitrate * 0.95)),
            dataclasses.replace(planned[1], crf=21.0)]
    levels = pertitle.levels_of(hard)
    assert levels == (("720p", 24.0, 0.95), ("360p", 21.0, CRF_CAP["h264"]))
    # as a chunk's job carries them (JSON), and as an older one did: without the peak
    for carried, peak in ((json.loads(json.dumps(levels)), 0.95), ([["720p", 24.0], ["360p", 21.0]], CRF_CAP["h264"])):
        again = plan_ladder(info, dataclasses.replace(opts, levels=as_levels(carried)))
        assert (again[0].crf, again[0].maxrate) == (24.0, int(again[0].bitrate * peak))
        assert (again[1].crf, again[1].maxrate) == (21.0, planned[1].maxrate)
