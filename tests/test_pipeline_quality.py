"""Rate control: capped constant quality (default) against the target bitrates, and the measured bandwidths."""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import media_factory as mf
import pytest
from conftest import MEDIA

from streamforge.config import ConfigError, load_config
from streamforge.pipeline import PipelineOptions, RenditionSpec, run_pipeline
from streamforge.pipeline.transcode import encoder_settings

SPEC = dict(name="720p", width=1280, height=720, bitrate=2_500_000, maxrate=2_500_000, bufsize=5_000_000,
            frame_rate=Fraction(25))


def test_crf_settings_per_codec_are_capped_by_vbv():
    opts = PipelineOptions()
    _, x264 = encoder_settings(RenditionSpec(codec="h264", crf=18, **SPEC), opts, gop=100, threads=1)
    assert x264["crf"] == "18" and "b" not in x264
    assert (x264["maxrate"], x264["bufsize"]) == ("2500000", "5000000") and "vbv-init=0.5" in x264["x264-params"]
    _, x265 = encoder_settings(RenditionSpec(codec="hevc", crf=23.5, **SPEC), opts, gop=100, threads=1)
    assert "crf=23.5" in x265["x265-params"] and "vbv-maxrate=2500:vbv-bufsize=5000" in x265["x265-params"]
    assert "bitrate=" not in x265["x265-params"] and "b" not in x265
    _, av1 = encoder_settings(RenditionSpec(codec="av1", crf=30, **SPEC), opts, gop=100, threads=1)
    assert av1["crf"] == "30" and "rc=0:mbr=2500" in av1["svtav1-params"] and "b" not in av1
    _, vp9 = encoder_settings(RenditionSpec(codec="vp9", crf=28, **SPEC), opts, gop=100, threads=1)
    assert vp9["crf"] == "28" and vp9["b"] == "2500000"  # constrained quality: b is the ceiling


def test_crf_adds_its_measured_x264_settings_per_rung_size_and_abr_does_not():
    opts = PipelineOptions()  # crf at veryfast
    large = RenditionSpec(codec="h264", crf=20, **SPEC)
    small = RenditionSpec(codec="h264", crf=20, **{**SPEC, "name": "480p", "width": 854, "height": 480})
    film = RenditionSpec(codec="h264", crf=20, **{**SPEC, "width": 1280, "height": 544})  # 720p box, 2.35:1
    params = {s.name + str(s.height): encoder_settings(s, opts, gop=100, threads=1)[1]["x264-params"].split(":")
              for s in (large, small, film)}
    assert {"trellis=1", "rc-lookahead=20", "subme=1"} <= set(params["720p720"]) == set(params["720p544"])
    assert {"trellis=1", "rc-lookahead=20"} <= set(params["480p480"]) and not any(
        p.startswith("subme") for p in params["480p480"])
    # another preset keeps its own settings (they were measured at veryfast only); admins' options win
    _, medium = encoder_settings(large, PipelineOptions(preset="medium"), gop=100, threads=1)
    assert "trellis" not in medium["x264-params"] and "subme" not in medium["x264-params"]
    mine = PipelineOptions(encoder_options={"h264": {"x264-params": "subme=7"}})
    _, admin = encoder_settings(large, mine, gop=100, threads=1)
    assert admin["x264-params"].split(":")[-1] == "subme=7"


def test_the_crf_settings_reach_the_encoded_rungs(tmp_path):
    src = mf.make_video(tmp_path / "in.mp4", width=1280, height=720, seconds=1)
    opts = PipelineOptions(heights=(720, 360), segment_seconds=1, passthrough=False, preview_count=1,
                           target_quality=0)
    run_pipeline(src, tmp_path / "out", opts)
    written = {}
    for rung in ("720p", "360p"):
        data = b"".join(p.read_bytes() for p in sorted((tmp_path / "out" / rung).glob("*.m4s")))
        written[rung] = re.search(rb"x264 - core .*? options: ([^\x00]*)", data, re.S)[1].decode(errors="replace")
    assert all(f" {option} " in written["720p"] for option in ("subme=1", "trellis=1", "rc_lookahead=20"))
    assert " subme=2 " in written["360p"] and " trellis=1 " in written["360p"], written["360p"]


def test_abr_settings_are_unchanged():
    spec = RenditionSpec(codec="h264", **{**SPEC, "maxrate": 3_750_000})
    _, x264 = encoder_settings(spec, PipelineOptions(rate_control="abr"), gop=100, threads=1)
    assert x264 == {"b": "2500000", "maxrate": "3750000", "bufsize": "5000000", "preset": "veryfast",
                    "forced-idr": "1", "threads": "1",
                    "x264-params": "keyint=100:min-keyint=100:scenecut=0:open-gop=0:partitions=i8x8"}


def _variant_lines(master: str) -> dict[str, dict]:
    variants = {}
    lines = master.splitlines()
    for attrs, uri in zip(lines, lines[1:]):
        if attrs.startswith("#EXT-X-STREAM-INF:"):
            variants[uri] = {k: int(v) for k, v in re.findall(r"(BANDWIDTH|AVERAGE-BANDWIDTH)=(\d+)", attrs)}
    return variants


def _measured(folder: Path) -> tuple[int, int]:
    """Peak and mean bit/s of a media playlist, from its EXTINF durations and the segment files' sizes."""
    text = (folder / "index.m3u8").read_text().splitlines()
    pairs = [(float(a[8:-1]), (folder / b).stat().st_size) for a, b in zip(text, text[1:])
             if a.startswith("#EXTINF:")]
    peak = max(size * 8 / duration for duration, size in pairs)
    mean = sum(size for _, size in pairs) * 8 / sum(duration for duration, _ in pairs)
    return math.ceil(peak), math.ceil(mean)


@pytest.mark.parametrize("rate_control", ["crf", "abr"])
def test_bandwidth_is_the_measured_peak_and_mean_of_the_segments(tmp_path, rate_control):
    src = mf.make_video(tmp_path / "in.mp4", width=320, height=240, seconds=3, black_seconds=1.5)
    opts = PipelineOptions(heights=(240, 120), preset="ultrafast", segment_seconds=1, rate_control=rate_control,
                           passthrough=False, preview_count=1)
    result = run_pipeline(src, tmp_path / "out", opts)
    out = tmp_path / "out"
    variants = _variant_lines((out / "master.m3u8").read_text())
    audio_peak, audio_mean = _measured(out / "audio")
    for rendition in result.renditions:
        peak, mean = _measured(out / rendition.name)
        assert variants[rendition.playlist] == {"BANDWIDTH": peak + audio_peak,
                                                "AVERAGE-BANDWIDTH": mean + audio_mean}
        assert (rendition.bandwidth, rendition.average_bandwidth) == (peak + audio_peak, mean + audio_mean)


def test_an_easy_picture_takes_fewer_bits_in_crf_than_in_abr(tmp_path):
    src = tmp_path / "still.mp4"  # one picture of real footage held for 3 s (a slide)
    with av.open(str(MEDIA / "bigbuckbunny-720p-5s.mp4")) as footage:
        picture = next(f for f in footage.decode(video=0) if f.time >= 1.0).reformat(640, 360, "yuv420p")
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(75):
            frame = picture.reformat(640, 360, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    sizes = {}
    for mode in ("crf", "abr"):
        opts = PipelineOptions(heights=(360,), preset="veryfast", segment_seconds=3, rate_control=mode,
                               passthrough=False, preview_count=1)
        rung = run_pipeline(src, tmp_path / mode, opts).renditions[0].name
        sizes[mode] = sum(p.stat().st_size for p in (tmp_path / mode / rung).glob("seg_*.m4s"))
    # 0.48x before crf's trellis and lookahead (ladder.CRF_X264_PARAMS), 0.53x with them: the still gets the
    # lowest level (16), where trellis spends a little more on its detail
    assert sizes["crf"] < 0.6 * sizes["abr"]


def test_rate_control_and_quality_config(tmp_path):
    cfg = load_config(data_dir=tmp_path, env={"STREAMFORGE_PIPELINE_RATE_CONTROL": "abr",
                                              "STREAMFORGE_PIPELINE_QUALITY": '{"h264": 22, "av1": 33}',
                                              "STREAMFORGE_PIPELINE_PASSTHROUGH": "false"})
    opts = PipelineOptions.from_config(cfg.pipeline)
    assert (opts.rate_control, opts.quality, opts.passthrough) == ("abr", {"h264": 22.0, "av1": 33.0}, False)
    defaults = PipelineOptions.from_config(load_config(data_dir=tmp_path, env={}).pipeline)
    assert (defaults.rate_control, defaults.quality, defaults.passthrough) == ("crf", {}, True)
    for env, message in ((("RATE_CONTROL", "vbr"), "rate_control"), (("QUALITY", '{"mpeg2": 3}'), "unknown codec"),
                         (("QUALITY", '{"h264": 60}'), "0 to 51"), (("QUALITY", '{"vp9": "x"}'), "vp9")):
        with pytest.raises(ConfigError, match=message):
            load_config(data_dir=tmp_path, env={f"STREAMFORGE_PIPELINE_{env[0]}": env[1]})
