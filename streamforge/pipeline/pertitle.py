"""Per-title levels: probe-encode a few short samples of a video and choose each rung's constant quality.

The probe takes `SAMPLES` stretches of `SAMPLE_FRAMES` frames spread over the video (each starting on
the keyframe a seek lands on, so only those frames are decoded), scales them to the 360p box and
encodes them as the ladder would: once at the target bitrate (what `rate_control = "abr"` gives the
rung) and at each of `LEVELS` under the rung's cap. Every encode is scored with VMAF against the
scaled samples, all in one run of imageio-ffmpeg's FFmpeg (PyAV's FFmpeg has no libvmaf; a fit of its
XPSNR to VMAF predicted unseen clips with R^2 0.32, see bench/README.md). The level chosen is the
highest (interpolated between the probe's levels, on half steps) whose VMAF reaches the aim:
`[pipeline] target_quality`, or what the target bitrate buys minus `MARGIN` when that is lower. Each
rung takes that level shifted by the QUALITY_OFFSETS between the 360p box and its own, within
LEVEL_RANGE, and stays capped at its peak. Content no level meets (heavy grain) gets the bottom of
the range, so it rides its cap as before.
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from streamforge.errors import MediaError
from streamforge.pipeline.ladder import (
    QUALITY_OFFSETS,
    PipelineOptions,
    RenditionSpec,
    box_height,
    encoder_preset,
    fit_box,
    target_bitrate,
)
from streamforge.pipeline.probe import ProbeResult, open_input

SAMPLES = 3  # stretches of the video the probe encodes
SAMPLE_FRAMES = 20  # frames per stretch
PROBE_BOX = (640, 360)  # the probe's picture: the 360p rung's box
PROBE_RATE = Fraction(25)
LEVELS = (18.0, 22.0, 26.0, 30.0)  # x264 CRF the probe encodes at; the choice interpolates between them
LEVEL_RANGE = (18.0, 34.0)  # the levels a rung may get
MARGIN = 1.0  # VMAF the aim keeps below what the target bitrate buys on the probe
VMAF_TIMEOUT = 120  # seconds the scoring run may take


@dataclass(frozen=True)
class ProbePoint:
    """One probe encode: its level (None: the target bitrate), bits per second and VMAF."""

    level: float | None
    kbps: float
    vmaf: float


@dataclass(frozen=True)
class TitleChoice:
    """The per-title decision: the probe's level, the aim it met and every measurement on the way."""

    probe_level: float
    aim: float
    met: bool  # False: no level in range met the aim (hard content: the rungs ride their caps)
    points: tuple[ProbePoint, ...]
    levels: dict  # rung name -> level
    seconds: float
    frames: int = 0  # pictures the probe encoded

    def note(self) -> str:
        """The processing log's line: the choice and its measurements."""
        measured = ", ".join(f"{'abr' if p.level is None else f'crf {p.level:g}'} {p.kbps:.0f} kbit/s "
                             f"VMAF {p.vmaf:.1f}" for p in self.points)
        levels = ", ".join(f"{name} {level:g}" for name, level in self.levels.items())
        verdict = (f"level {self.probe_level:g} meets the aim VMAF {self.aim:.1f}" if self.met else
                   f"no level meets the aim VMAF {self.aim:.1f} (hard content): the rungs ride their caps")
        return (f"per-title levels: {levels}; probe of {self.frames} frames at the 360p box in "
                f"{self.seconds:.2f} s: {verdict}; measured {measured}")


def choose_levels(src: Path, info: ProbeResult, rungs: list[RenditionSpec],
                  opts: PipelineOptions) -> tuple[list[RenditionSpec], str | None]:
    """The rungs with their per-title levels (H.264 crf rungs), and the log line; unchanged when off."""
    targets = [r for r in rungs if r.codec == "h264" and r.crf is not None]
    if not targets or not opts.target_quality or opts.rate_control != "crf":
        return rungs, None
    started = time.monotonic()
    try:
        frames = sample_frames(src, info)
        points = measure(frames, opts)
    except (MediaError, av.FFmpegError, OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
        return rungs, f"per-title levels: not measured ({' '.join(str(e).split())[:300]}); the fixed levels"
    level, aim, met = pick_level(points, opts.target_quality)
    levels = {r.name: rung_level(level, r, met) for r in targets}
    chosen = [dataclasses.replace(r, crf=levels[r.name]) if r.name in levels else r for r in rungs]
    choice = TitleChoice(probe_level=level, aim=aim, met=met, points=tuple(points), levels=levels,
                         seconds=time.monotonic() - started, frames=len(frames))
    return chosen, choice.note()


def pick_level(points: list[ProbePoint], target: float) -> tuple[float, float, bool]:
    """(level, aim, met): the highest level, on half steps, whose VMAF (linear between probes) reaches the aim."""
    reference = next(p for p in points if p.level is None)
    aim = min(float(target), reference.vmaf - MARGIN)
    curve = sorted((p for p in points if p.level is not None), key=lambda p: p.level)
    if curve[0].vmaf < aim:
        return LEVEL_RANGE[0], aim, False
    best = curve[0].level
    for low, high in zip(curve, curve[1:]):
        if high.vmaf >= aim:
            best = high.level
            continue
        fraction = (low.vmaf - aim) / (low.vmaf - high.vmaf)  # low meets the aim, high does not
        best = low.level + fraction * (high.level - low.level)
        break
    else:  # the highest probe still meets it: step on at the last slope, at most one step
        if len(curve) > 1 and curve[-2].vmaf > curve[-1].vmaf:
            slope = (curve[-2].vmaf - curve[-1].vmaf) / (curve[-1].level - curve[-2].level)
            best = curve[-1].level + min(curve[-1].level - curve[-2].level, (curve[-1].vmaf - aim) / slope)
        else:
            best = LEVEL_RANGE[1]
    return min(LEVEL_RANGE[1], math.floor(best * 2) / 2), aim, True


def rung_level(probe_level: float, rung: RenditionSpec, met: bool) -> float:
    """A rung's level from the probe's: shifted by the QUALITY_OFFSETS between the 360p box and the rung's."""
    if not met:
        return LEVEL_RANGE[0]
    level = probe_level + _offset(PROBE_BOX[1]) - _offset(box_height(rung.width, rung.height))
    return min(LEVEL_RANGE[1], max(LEVEL_RANGE[0], level))


def _offset(height: int) -> float:
    return next(minus for tall, minus in QUALITY_OFFSETS if height >= tall)


def measure(frames: list, opts: PipelineOptions) -> list[ProbePoint]:
    """Encode the samples at the target bitrate and at every probe level; their bitrates and VMAF."""
    width, height = frames[0].width, frames[0].height
    bitrate = target_bitrate("h264", width, height, PROBE_RATE)
    seconds = len(frames) / float(PROBE_RATE)
    levels: list[float | None] = [None, *LEVELS]
    with tempfile.TemporaryDirectory(prefix="sf-pertitle-") as tmp:
        work = Path(tmp)
        write_raw(frames, work / "reference.yuv")
        sizes = []
        for i, level in enumerate(levels):
            data = encode_samples(frames, probe_options(level, bitrate, opts))
            (work / f"{i}.h264").write_bytes(data)
            sizes.append(len(data))
        scores = vmaf_scores(work, len(levels), width, height)
    return [ProbePoint(level=level, kbps=size * 8 / seconds / 1000, vmaf=score)
            for level, size, score in zip(levels, sizes, scores)]


def probe_options(level: float | None, bitrate: int, opts: PipelineOptions) -> dict:
    """x264 options of one probe encode: as abr encodes (level None: its preset, 1.5x peak) or as crf does."""
    params = f"keyint={SAMPLE_FRAMES}:min-keyint={SAMPLE_FRAMES}:scenecut=0:open-gop=0:partitions=i8x8"
    if level is None:
        abr = dataclasses.replace(opts, rate_control="abr", preset="")
        return {"b": str(bitrate), "maxrate": str(int(bitrate * 1.5)), "bufsize": str(bitrate * 2),
                "preset": encoder_preset("h264", abr), "x264-params": params, "threads": "2"}
    return {"crf": f"{level:g}", "maxrate": str(bitrate), "bufsize": str(bitrate * 2),
            "preset": encoder_preset("h264", opts), "x264-params": params + ":vbv-init=0.5", "threads": "2"}


def sample_frames(src: Path, info: ProbeResult) -> list:
    """Up to SAMPLES stretches of SAMPLE_FRAMES frames spread over the video, scaled to the 360p box.

    Each stretch starts on the first keyframe at or after its point (the demuxer's index finds it and
    nothing before it is decoded, however long the GOPs); a keyframe already taken is not taken twice,
    and a video with too few keyframes gets its first stretch from the start.
    """
    width, height = fit_box(info.width, info.height, *PROBE_BOX)
    reformatter = VideoReformatter()
    stretches: dict[float, list] = {}
    with open_input(src) as container:
        stream = container.streams[info.video_stream_index]
        stream.thread_type = "AUTO"
        points = [info.start_time + info.duration * (i + 0.5) / SAMPLES for i in range(SAMPLES)]
        for at in [*points, info.start_time]:
            if len(stretches) == SAMPLES:
                break
            try:
                container.seek(int(at / stream.time_base), stream=stream, backward=at <= info.start_time,
                               any_frame=False)
            except av.FFmpegError:
                continue
            taken: list = []
            for frame in container.decode(stream):
                if not taken and (frame.time in stretches or any(frame.time is not None and
                                  start <= frame.time <= start + SAMPLE_FRAMES / float(PROBE_RATE)
                                  for start in stretches)):
                    break  # a stretch already taken
                taken.append(reformatter.reformat(frame, width, height, "yuv420p",
                                                  interpolation=Interpolation.BICUBIC))
                if len(taken) == SAMPLE_FRAMES:
                    break
            if taken:
                stretches[taken[0].time if taken[0].time is not None else at] = taken
    frames = [frame for start in sorted(stretches) for frame in stretches[start]]
    if not frames:
        raise MediaError("no pictures to probe")
    return frames


def encode_samples(frames: list, options: dict) -> bytes:
    """The samples as an H.264 Annex B stream, an IDR at each stretch's start."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    encoder.time_base = 1 / PROBE_RATE
    encoder.framerate = PROBE_RATE
    encoder.options = options
    packets: list = []
    for n, frame in enumerate(frames):
        frame.pts = n
        frame.time_base = encoder.time_base
        frame.pict_type = PictureType.I if n % SAMPLE_FRAMES == 0 else PictureType.NONE
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_raw(frames: list, path: Path) -> None:
    """yuv420p frames as one raw file, rows without their padding (FFmpeg's rawvideo input)."""
    with open(path, "wb") as f:
        for frame in frames:
            for i, plane in enumerate(frame.planes):
                width = frame.width if i == 0 else (frame.width + 1) // 2
                data = memoryview(plane)
                if plane.line_size == width:
                    f.write(data[: width * plane.height])
                    continue
                for row in range(plane.height):
                    f.write(data[row * plane.line_size: row * plane.line_size + width])


def ffmpeg_with_vmaf() -> str:
    """imageio-ffmpeg's FFmpeg (built with libvmaf); RuntimeError when it is missing."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def vmaf_scores(work: Path, count: int, width: int, height: int) -> list[float]:
    """VMAF of each of `count` probe streams (work/N.h264) against work/reference.yuv, in one FFmpeg run."""
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-framerate", "25"]
    args = [ffmpeg_with_vmaf(), "-hide_banner", "-nostats", "-loglevel", "error", *raw, "-i", "reference.yuv"]
    for i in range(count):
        args += ["-f", "h264", "-framerate", "25", "-i", f"{i}.h264"]
    graph = [f"[0:v]settb=1/25,setpts=N,split={count}" + "".join(f"[r{i}]" for i in range(count))]
    for i in range(count):
        graph.append(f"[{i + 1}:v]settb=1/25,setpts=N[d{i}];[d{i}][r{i}]libvmaf=n_threads=2:n_subsample=2:"
                     f"log_fmt=json:log_path=vmaf{i}.json")
    args += ["-filter_complex", ";".join(graph), "-f", "null", "-"]
    subprocess.run(args, cwd=work, capture_output=True, timeout=VMAF_TIMEOUT, check=True)
    return [json.loads((work / f"vmaf{i}.json").read_text())["pooled_metrics"]["vmaf"]["mean"]
            for i in range(count)]
