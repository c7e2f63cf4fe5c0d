"""A live run does not wait for the per-title probe: its first segment goes out at the fixed levels while the
probe runs, and every rung goes on at the level chosen for it (pipeline/levelswitch.py)."""
from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

import av
import media_live
import pytest
import requests
from conftest import drain_queue
from media_live import ffmpeg, get, upload

from streamforge.pipeline import PipelineOptions, levelswitch, probe, run_pipeline
from streamforge.pipeline.ladder import plan_ladder

live = media_live.live  # the fixture, for pytest to find

RATE = 25
OPTS = PipelineOptions(heights=(240, 144), segment_seconds=2, live=True, passthrough=False, target_quality=80)


def _clip(tmp_path: Path, seconds: int) -> Path:
    path = tmp_path / f"clip{seconds}.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={RATE}:duration={seconds}", "-f", "lavfi", "-i",
           f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


def _segments(folder: Path) -> list[Path]:
    names = [x for x in (folder / "index.m3u8").read_text().splitlines() if x and not x.startswith("#")]
    return [folder / n for n in names]


def _x264_level(segment: bytes) -> float:
    """The crf x264 wrote into its options SEI (the first keyframe an encoder writes carries it)."""
    found = re.search(rb"x264 - core .*? crf=(\d+(?:\.\d+)?)", segment, re.S)
    assert found, "no x264 options SEI in this segment"
    return float(found.group(1))


def _levels(note: str) -> dict[str, float]:
    head = note.split(";", 1)[0].removeprefix("per-title levels: ")
    return {name: float(level) for name, level in (pair.split() for pair in head.split(", "))}


def _joined_pts(folder: Path, tmp_path: Path) -> list[int]:
    path = tmp_path / f"{folder.name}-joined.mp4"
    path.write_bytes((folder / "init.mp4").read_bytes() + b"".join(s.read_bytes() for s in _segments(folder)))
    with av.open(str(path)) as f:
        return [frame.pts for frame in f.decode(video=0)]


def test_the_master_goes_out_before_the_probe_is_done_and_every_rung_goes_on_at_its_chosen_level(
        tmp_path, monkeypatch):
    src = _clip(tmp_path, 12)
    master = threading.Event()
    held = []
    real = levelswitch.pertitle.choose_levels

    def after_the_master(*args, **kwargs):
        held.append(master.wait(30))  # the probe may only start once the master is out
        return real(*args, **kwargs)

    monkeypatch.setattr(levelswitch.pertitle, "choose_levels", after_the_master)
    out = tmp_path / "out"
    result = run_pipeline(src, out, OPTS, on_file=lambda kind, relpath: kind == "master" and master.set())
    assert held == [True], "the master waited for the probe"
    note = next(n for n in result.notes if n.startswith("per-title levels: "))
    assert note.endswith("the first segment at the fixed levels while the probe ran"), note
    chosen = _levels(note)
    fixed = {r.name: r.crf for r in plan_ladder(probe(src, OPTS), OPTS)}
    assert set(chosen) == set(fixed) == {"240p", "144p"}
    assert any(chosen[name] != fixed[name] for name in chosen), (chosen, fixed)  # else nothing switched
    for name in chosen:
        folder = out / name
        segments = _segments(folder)
        # the first segment at the fixed level, the next one (a new encoder's first keyframe) at the chosen one
        assert _x264_level(segments[0].read_bytes()) == fixed[name]
        assert _x264_level(segments[1].read_bytes()) == chosen[name]
        # one init segment serves both encoders: every frame once, in order, across the switch
        pts = _joined_pts(folder, tmp_path)
        assert len(pts) == 12 * RATE
        assert len({b - a for a, b in zip(pts, pts[1:])}) == 1 and pts[1] > pts[0]


def _x264_option(segment: bytes, name: str) -> float:
    found = re.search(rb"x264 - core .*? " + name.encode() + rb"=(\d+(?:\.\d+)?)", segment, re.S)
    assert found, f"no {name} in this segment's x264 options SEI"
    return float(found.group(1))


def test_hard_content_goes_on_at_a_raised_peak_behind_the_same_init_segment(tmp_path):
    src = tmp_path / "noise.mp4"  # heavy noise: every level probed takes more than the target bitrate
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:size=320x240:rate={RATE}:duration=12", "-vf", "noise=c0s=60:c0f=t+u",
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-g", "50", "-pix_fmt", "yuv420p", src)
    out = tmp_path / "out"
    opts = dataclasses.replace(OPTS, heights=(240,))
    result = run_pipeline(src, out, opts)
    note = next(n for n in result.notes if n.startswith("per-title levels: "))
    assert "hard content" in note and note.endswith("while the probe ran"), note
    planned = plan_ladder(probe(src, opts), opts)[0]
    first, second = (s.read_bytes() for s in _segments(out / "240p")[:2])
    assert _x264_option(first, "vbv_maxrate") == planned.maxrate // 1000
    assert planned.maxrate // 1000 < _x264_option(second, "vbv_maxrate") <= planned.bitrate // 1000
    pts = _joined_pts(out / "240p", tmp_path)  # the one init segment serves both encoders
    assert len(pts) == 12 * RATE and len({b - a for a, b in zip(pts, pts[1:])}) == 1


def test_a_short_live_run_probes_before_it_encodes(tmp_path):
    src = _clip(tmp_path, 4)
    info = probe(src, OPTS)
    assert not levelswitch.switches(info, OPTS)
    assert levelswitch.switches(dataclasses.replace(info, duration=levelswitch.SWITCH_MIN_SECONDS), OPTS)
    assert not levelswitch.switches(dataclasses.replace(info, duration=60), dataclasses.replace(OPTS, live=False))
    result = run_pipeline(src, tmp_path / "out", OPTS)
    note = next(n for n in result.notes if n.startswith("per-title levels: "))
    assert "first segment" not in note
    for name, level in _levels(note).items():
        assert _x264_level(_segments(tmp_path / "out" / name)[0].read_bytes()) == level


@pytest.fixture
def live_env():
    return {"STREAMFORGE_PIPELINE_SEGMENT_SECONDS": "2", "STREAMFORGE_PIPELINE_TARGET_QUALITY": "80"}


def test_an_upload_plays_through_the_switch_in_chromium(live, tmp_path):
    from browser_helpers import play_to_the_end
    vid = upload(live, _clip(tmp_path, 12), process=False)
    assert [str(x) for x in drain_queue()] == ["completed"]
    v = get(live, vid)
    assert v["status"] == "COMPLETED" and v["playable_at"]
    logs = requests.get(f"{live.url}/api/videos/{vid}/logs", headers=live.h, timeout=10).json()["items"]
    assert any("the first segment at the fixed levels while the probe ran" in (r["message"] or "") for r in logs)
    seen = play_to_the_end(live.url, live.h["Authorization"].split()[1], v["watch_url"], longer_than=11)
    # through the switch at 0.5 s and on to the end, never back
    assert all(b >= a for a, b in zip(seen, seen[1:])) and any(0.2 < t < 2 for t in seen), seen[:50]
