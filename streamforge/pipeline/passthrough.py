"""Passthrough: an upload that already is a good H.264 rung keeps its own packets for that rung.

An H.264 yuv420p 8-bit upload whose picture is the top H.264 rung's size, at its frame rate, and
whose segments stay under the rung's peak bitrate (copy_peak) is remuxed into that rung's fMP4 segments
with no decode and no encode (PeerTube and Mux do the same). Its pictures cannot move, so the segments start
on its own keyframes, and every other rung (and the audio) is cut at those same times. A source whose
keyframes are irregular, or more than 2 x segment_seconds apart, would make segments a player cannot
switch between cleanly: it is encoded as usual, and `plan_passthrough` says why.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from streamforge.pipeline.ladder import PipelineOptions, RenditionSpec
from streamforge.pipeline.probe import ProbeResult, open_input

MAX_GAP_SEGMENTS = 2  # keyframes further apart than this many segment_seconds: encode instead
SPREAD = 0.5  # keyframe intervals further than this fraction from their median: irregular
TAIL_SECONDS = 0.5  # a last segment shorter than this is merged into the one before
# a run that is playable early (live) copies a rung only when its first segment, cut on the upload's
# keyframes, is at most this many seconds long: a longer one holds the master back
LIVE_FIRST_SECONDS = 2.0


@dataclass(frozen=True)
class PassthroughPlan:
    """The rung that keeps the source's packets, and the frames where every rung's segments start."""

    rung: RenditionSpec
    starts: tuple[int, ...]  # output frame numbers of segments 2, 3, ... (source keyframes)
    keyframe_interval: float  # seconds, the median
    peak: int  # bit/s, the largest segment of the source


@dataclass
class _Scan:
    """What the source's packets say, read without decoding."""

    pts: list[float] = field(default_factory=list)  # seconds from the first frame, presentation order
    keyframes: list[float] = field(default_factory=list)
    sizes: list[tuple[float, int]] = field(default_factory=list)  # (pts, bytes)
    extradata: bool = False


def plan_passthrough(src: Path, info: ProbeResult, rungs: list[RenditionSpec],
                     opts: PipelineOptions) -> tuple[PassthroughPlan | None, str]:
    """(plan, "") when the top H.264 rung can be copied from `src`; (None, why not) otherwise."""
    if not opts.passthrough:
        return None, ""
    rung = next((r for r in rungs if r.codec == "h264"), None)
    why = _unsuitable(info, rung)
    if why:
        return None, why
    rate = rung.frame_rate
    why = _late_first_keyframe(src, info, rate, opts)  # a live run refuses early, before the whole scan
    if why:
        return None, why
    scan = _scan(src, info)
    why = _irregular(scan, rate, info.duration, opts.segment_seconds)
    if why:
        return None, why
    interval = statistics.median(b - a for a, b in zip(scan.keyframes, scan.keyframes[1:])) \
        if len(scan.keyframes) > 1 else info.duration
    first = float(opts.first_segment_seconds) if opts.live else None
    starts = _segment_starts(scan.keyframes, interval, info.duration, rate, opts.segment_seconds, first)
    why = _late_first_segment(starts, rate, info.duration, opts)
    if why:
        return None, why
    peak, limit = _peak(scan, [0.0] + [n / rate for n in starts] + [info.duration]), copy_peak(rung)
    if peak > limit:
        return None, f"its peak of {peak // 1000} kbit/s is above the {rung.name} rung's {limit // 1000} kbit/s"
    return PassthroughPlan(rung=rung, starts=tuple(starts), keyframe_interval=interval, peak=peak), ""


def copy_peak(rung: RenditionSpec) -> int:
    """The highest segment bitrate (bit/s) an upload may have to stand for the rung: its VBV peak, or its
    target bitrate where that is higher (an H.264 crf rung is capped below its target, ladder.CRF_CAP,
    to save encoded bytes; the upload's own pictures cost no encoding, and took up to the target before)."""
    return max(rung.maxrate, rung.bitrate)


def _unsuitable(info: ProbeResult, rung: RenditionSpec | None) -> str:
    """Why the source's pictures cannot stand for the rung as they are ("" if they can)."""
    if rung is None:
        return "the ladder has no H.264 rung"
    if info.video_codec != "h264":
        return f"the upload is {info.video_codec}, not H.264"
    if info.pix_fmt != "yuv420p":
        return f"the upload's pixels are {info.pix_fmt}, not yuv420p 8-bit"
    if info.interlaced or info.rotation or info.sample_aspect_ratio != 1:
        return "the upload is interlaced, rotated or has non-square pixels"
    if (info.width, info.height) != (rung.width, rung.height):
        return f"the upload ({info.width}x{info.height}) is larger than the {rung.name} rung ({rung.width}x{rung.height})"
    if Fraction(info.frame_rate) != rung.frame_rate:
        return f"the upload's {float(info.frame_rate):g} fps is above the rung's {float(rung.frame_rate):g} fps"
    return ""


def _scan(src: Path, info: ProbeResult) -> _Scan:
    """Timestamps, keyframes and sizes of every video packet (demuxed, never decoded)."""
    scan = _Scan()
    with open_input(src) as container:
        stream = container.streams[info.video_stream_index]
        scan.extradata = bool(stream.codec_context.extradata)
        tb = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None or tb is None:
                    scan.pts.append(math.nan)
                    continue
                t = float(packet.pts * tb) - info.start_time
                scan.pts.append(t)
                scan.sizes.append((t, packet.size))
                if packet.is_keyframe:
                    scan.keyframes.append(t)
        except av.FFmpegError:
            scan.pts.append(math.nan)  # a damaged file: the decode decides; no copy of it
    scan.keyframes.sort()
    return scan


def _late_first_keyframe(src: Path, info: ProbeResult, rate: Fraction, opts: PipelineOptions) -> str:
    """In a live run, why the upload's first keyframe past first_segment_seconds comes too late for a copy,
    read from the packets up to it (a long upload is not scanned to the end only to be refused)."""
    if not opts.live:
        return ""
    first = float(opts.first_segment_seconds) - 0.5 / float(rate)
    with open_input(src) as container:
        stream = container.streams[info.video_stream_index]
        try:
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None and stream.time_base is not None:
                    t = float(packet.pts * stream.time_base) - info.start_time
                    if t >= first:
                        return _late_first_segment([round(t * rate)], rate, info.duration, opts)
        except av.FFmpegError:
            return ""  # the whole scan decides
    return _late_first_segment([], rate, info.duration, opts)


def _late_first_segment(starts: list[int], rate: Fraction, duration: float, opts: PipelineOptions) -> str:
    """Why, in a run that is to be playable early, the copied rung's first segment would hold that back."""
    if not opts.live:
        return ""
    first = starts[0] / float(rate) if starts else duration
    limit = max(LIVE_FIRST_SECONDS, float(opts.first_segment_seconds))
    if first > limit + 0.5 / float(rate):
        return (f"its first keyframe after the start is {first:.1f} s in: a copied rung's first segment would "
                f"hold the video's first playable moment back past {limit:g} s")
    return ""


def _irregular(scan: _Scan, rate: Fraction, duration: float, segment_seconds: float) -> str:
    """Why the packets cannot be cut into aligned segments ("" if they can)."""
    if not scan.extradata:
        return "the upload's H.264 has no global header (avcC)"
    if not scan.pts or any(math.isnan(t) for t in scan.pts):
        return "the upload has packets without timestamps"
    frame = 1 / float(rate)
    ordered = sorted(scan.pts)
    if abs(ordered[0]) > frame / 2 or any(abs(t - i * frame) > frame / 2 for i, t in enumerate(ordered)):
        return "the upload's frames are not evenly spaced (a variable frame rate or dropped frames)"
    keys = scan.keyframes
    if not keys or keys[0] > frame / 2:
        return "the upload does not start on a keyframe"
    gaps = [b - a for a, b in zip(keys, keys[1:])] + [duration - keys[-1]]
    limit = MAX_GAP_SEGMENTS * segment_seconds
    if max(gaps) > limit + frame / 2:
        return (f"its keyframes are up to {max(gaps):.1f} s apart, more than 2 x segment_seconds "
                f"({limit:g} s)")
    inner = gaps[:-1]
    if inner:
        median = statistics.median(inner)
        if any(abs(g - median) > SPREAD * median for g in inner):
            return (f"its keyframes are irregular ({min(inner):.2f} to {max(inner):.2f} s apart)")
    return ""


def _segment_starts(keys: list[float], interval: float, duration: float, rate: Fraction,
                    segment_seconds: float, first: float | None = None) -> list[int]:
    """Every m-th source keyframe (m keyframe intervals closest to segment_seconds) as an output frame number;
    with `first` (a live run), the first segment ends on the first keyframe at least `first` seconds in."""
    step = max(1, round(segment_seconds / interval)) if interval > 0 else 1
    begin = step
    if first is not None:
        half = 0.5 / float(rate)
        begin = next((i for i, t in enumerate(keys) if i and t >= first - half), len(keys))
    starts = [round(t * rate) for t in keys[begin::step]]
    if starts and duration - starts[-1] / float(rate) < TAIL_SECONDS:
        starts.pop()
    return starts


def _peak(scan: _Scan, bounds: list[float]) -> int:
    """The largest segment bitrate, bit/s, with segments cut at `bounds` (seconds)."""
    totals = [0] * (len(bounds) - 1)
    index = 0
    for t, size in sorted(scan.sizes):
        while index < len(totals) - 1 and t >= bounds[index + 1] - 1e-6:
            index += 1
        totals[index] += size
    rates = [total * 8 / (b - a) for total, a, b in zip(totals, bounds, bounds[1:]) if b - a > 0]
    return math.ceil(max(rates)) if rates else 0


def remux(src: Path, info: ProbeResult, container, stopped: Callable[[], bool]) -> int:
    """Copy the source's video packets into an open output container, times from 0; returns packets copied."""
    copied = 0
    with open_input(src) as source:
        stream = source.streams[info.video_stream_index]
        out = container.add_stream_from_template(stream)
        out.codec_tag = "avc1"
        offset = None
        for packet in source.demux(stream):
            if stopped():
                break
            if packet.size == 0 or packet.pts is None:
                continue
            if offset is None:
                offset = round(info.start_time / packet.time_base)  # the first frame's time becomes 0
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = out
            container.mux(packet)
            copied += 1
    return copied
