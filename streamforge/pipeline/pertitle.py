"""Per-title levels: probe-encode a few short samples of a video and choose each rung's constant quality.

The probe takes up to `SAMPLES` stretches of `SAMPLE_FRAMES` frames spread over the video (samples_for: one
under ONE_SAMPLE_SECONDS, two under five minutes) and encodes them at three sizes, the 720p, 480p and 360p
boxes (PROBE_BOXES), at `LEVELS` with crf's preset (the third level only where the choice may lie past the
second). Each encode's bitrate is counted as the ladder would spend it (a keyframe a segment, not a stretch)
and its pictures are scaled up to the 720p-box samples and scored with VMAF, as a player scales a small rung
up, every SCORE_STEPth picture, a size's encodes in one run of imageio-ffmpeg's FFmpeg (PyAV's FFmpeg has no
libvmaf; a fit of its XPSNR to VMAF predicted unseen clips with R^2 0.32 only, bench/README.md). The probe
encodes with crf's x264 settings for the size (ladder.crf_x264_params), which give more VMAF per bit than
abr's, so one more encode per size at abr's settings (the baseline) measures the gap between them. That
gives each size a curve of VMAF against bitrate; where the size's target bitrate falls on it, less the gap,
is what `rate_control = "abr"` would buy. The level chosen is the highest (linear between the probe's
levels, on half steps) whose VMAF reaches the aim: `[pipeline] target_quality`, or what the target bitrate
buys minus `MARGIN` when that is lower (past the richest probe the curve goes on up and closes on 100, and
levels under it down to LEVEL_RANGE's; never past the leanest level probed). The top rung (of
the 720p box or more) takes the 720p size's level, the others their own box's (rung_choice: between two
sizes, and 720p under a 1080p rung, the lower of the two; below 360p one lower). Every rung stays capped at
its planned peak (ladder.CRF_CAP). Hard content (heavy grain: no level in range reaches the aim, or the
level that does would take more than the target bitrate anyway) gets the level where its curve spends the
target bitrate (on past the leanest probe for grain, up to LEVEL_RANGE's top), so it spends about what abr
spends; where even the leanest level probed takes more than the target, its rungs ride their peak all
through, and the peak is raised to what a steep curve needs (hard_peak).
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from streamforge.errors import MediaError
from streamforge.pipeline.ladder import (
    CRF_CAP,
    PipelineOptions,
    RenditionSpec,
    box_height,
    crf_x264_params,
    encoder_preset,
    fit_box,
    target_bitrate,
)
from streamforge.pipeline.probe import ProbeResult, open_input
from streamforge.pipeline.workers import cpu_cores

SAMPLES = 3  # stretches of the video the probe encodes, at most: one under ONE_SAMPLE_SECONDS, two under
# five minutes, three beyond (a live run, whose probe delays the first segments, takes at most two)
LIVE_SAMPLES = 2
ONE_SAMPLE_SECONDS = 10.0  # shorter videos take one stretch. One stretch of a 12 s clip was too few: on
# the tuning half (bench/quality.py, 12 s clips) two took the worst rung from 1.83 below abr's to 1.20
# and the bytes from 0.79x abr's to 0.76x (the probe's stretch had missed the clips' harder seconds);
# it costs about 1.3 s more wall time on a 30 s 1080p video (bench/README.md, "Fifth session")
SAMPLE_FRAMES = 20  # frames per stretch (shorter ones miss what pictures cost far from a keyframe: at 10
# frames Big Buck Bunny's 720p probe at level 18 counted 1134 kbit/s against 1924 at 20)
TOP_BOX, SMALL_BOX = (1280, 720), (640, 360)  # the probe's largest and smallest picture sizes
# every size the probe encodes at, largest first. With the 720p and 360p boxes only, 480p rungs took the
# lower of their levels, and text lost most there: the screen recording's 480p rung 1.45 below abr's VMAF,
# the terminal's 1.48 (every picture scored); with a 480p probe 0.9 below (bench/README.md, "Seventh
# session"), for about a quarter more probe CPU (5.8 s where it took 4.6 on the 30 s 1080p bench input)
PROBE_BOXES = (TOP_BOX, (854, 480), SMALL_BOX)
PROBE_RATE = Fraction(25)
SEEK_SLACK = 1.0  # seconds before its point a stretch may start, on a keyframe
LEVELS = (18.0, 22.0, 26.0)  # x264 CRF the probe encodes at; the choice interpolates between them
BASELINE_LEVEL = 20.0  # the probe's encode at abr's x264 settings (the preset alone), at this CRF
LEVEL_RANGE = (16.0, 28.0)  # the levels a rung may get
MARGIN = 1.0  # VMAF the aim keeps below what abr buys (abr_buys). On the tuning half and the fresh clips,
# every picture scored (bench/README.md, "Eighth session"): with the curve closing on 100 past the richest
# probe (at_target) 1.0 took 0.69x abr's bytes with two rungs more than 1.5 below abr's VMAF (-3.8, -1.6),
# 1.25 0.68x with three (-3.8, -2.0, -1.6); with the curve on straight 1.25 took 0.70x with two (-3.8, -1.8)
SCORE_STEP = 8  # VMAF scores every 8th picture of a probe of two or more stretches
ONE_STRETCH_STEP = 4  # and every 4th of a one-stretch probe (libvmaf's motion feature sees the scored
# pictures' neighbours): on the 30 s 1080p bench input's two stretches every 8th moved the scores by 0.2
# at most and took 1.9 CPU seconds of scoring where every 4th took 2.5. The first scored picture is a
# stretch's keyframe, and every 8th hits the same place in x264's runs of B-frames; scoring clear of both,
# with one x264 thread an encode, tracked every picture closer but chose worse levels: the tuning half's
# worst rung 1.68 below abr's where it is 1.45, at 0.74x its bytes where they are 0.72x (every picture
# scored; bench/README.md, "Sixth session")
PEAK_LOSS = 0.5  # VMAF hard content's rungs may lose to their VBV peak (hard_peak)
VMAF_TIMEOUT = 300  # seconds the scoring run may take


@dataclass(frozen=True)
class ProbePoint:
    """One probe encode: its size, level, the bitrate it takes in the ladder (kbit/s) and its VMAF."""

    size: tuple[int, int]
    level: float
    kbps: float
    vmaf: float
    baseline: bool = False  # encoded at abr's x264 settings, not crf's (abr_buys)


@dataclass(frozen=True)
class SizeChoice:
    """The level chosen at one probe size and the aim it met."""

    size: tuple[int, int]
    level: float
    aim: float
    met: bool  # False: no level in range met the aim (hard content: its rungs ride their caps)
    peak: float = 0.0  # hard content's VBV peak as a share of the target bitrate (hard_peak); 0: the plan's


def choose_levels(src: Path, info: ProbeResult, rungs: list[RenditionSpec],
                  opts: PipelineOptions) -> tuple[list[RenditionSpec], str | None]:
    """The rungs with their per-title levels (H.264 crf rungs), and the log line; unchanged when off."""
    targets = [r for r in rungs if r.codec == "h264" and r.crf is not None]
    if not targets or not opts.target_quality or opts.rate_control != "crf" or opts.levels:
        return rungs, None
    started = time.monotonic()
    try:
        frames = sample_frames(src, info, samples_for(info.duration, opts.live))
        points = measure(frames, probe_sizes(info), opts, opts.target_quality)
    except (MediaError, av.FFmpegError, OSError, RuntimeError, subprocess.SubprocessError, ValueError,
            ImportError) as e:
        return rungs, f"per-title levels: not measured ({' '.join(str(e).split())[:300]}); the fixed levels"
    choices = [pick_level([p for p in points if p.size == size], size, opts.target_quality)
               for size in dict.fromkeys(p.size for p in points)]
    top_box = max(box_height(r.width, r.height) for r in targets)
    taken = {r.name: rung_choice(choices, r, top_box) for r in targets}
    chosen = [_with_choice(r, taken[r.name]) if r.name in taken else r for r in rungs]
    levels = {name: c.level for name, c in taken.items()}
    return chosen, note(levels, choices, points, len(frames), time.monotonic() - started)


def _with_choice(rung: RenditionSpec, choice: SizeChoice) -> RenditionSpec:
    """The rung at the choice's level, its VBV peak raised to the choice's (hard content), never lowered."""
    return dataclasses.replace(rung, crf=choice.level, maxrate=max(rung.maxrate, int(rung.bitrate * choice.peak)))


def samples_for(duration: float, live: bool) -> int:
    """How many stretches the probe takes of a video this long (seconds)."""
    samples = 1 if duration < ONE_SAMPLE_SECONDS else 2 if duration < 300 else SAMPLES
    return min(samples, LIVE_SAMPLES) if live else samples


def levels_of(rungs: list[RenditionSpec]) -> tuple:
    """The chosen levels of a ladder, ((rung name, level, VBV peak as a share of the target), ...), for
    PipelineOptions.levels."""
    return tuple((r.name, r.crf, round(r.maxrate / r.bitrate, 4)) for r in rungs
                 if r.codec == "h264" and r.crf is not None)


def note(levels: dict, choices: list[SizeChoice], points: list[ProbePoint], frames: int, seconds: float) -> str:
    """The processing log's line: the levels, the choice per probe size and every measurement."""
    text = [f"per-title levels: {', '.join(f'{name} {level:g}' for name, level in levels.items())}; "
            f"probe of {frames} frames in {seconds:.2f} s"]
    for choice in choices:
        size = f"{choice.size[0]}x{choice.size[1]}"
        verdict = (f"level {choice.level:g} meets the aim VMAF {choice.aim:.1f}" if choice.met else
                   f"no level meets the aim VMAF {choice.aim:.1f} (hard content: capped"
                   + (f" at {choice.peak:.2f}x the target bitrate)" if choice.peak else ")"))
        measured = ", ".join(f"{'as abr at ' if p.baseline else ''}crf {p.level:g} {p.kbps:.0f} kbit/s "
                             f"VMAF {p.vmaf:.1f}" for p in points if p.size == choice.size)
        text.append(f"{size}: {verdict}; measured {measured}")
    return "; ".join(text)


def pick_level(points: list[ProbePoint], size: tuple[int, int], target: float) -> SizeChoice:
    """The highest level, on half steps, whose VMAF (linear between probes) reaches the aim: `target`, or
    what the size's target bitrate buys (at_target) minus MARGIN when that is lower; at most the leanest
    level probed (past it the curve is a guess: the fourth session's levels of 27.5 and 28, one step on,
    lost 1.2 to 2.0 VMAF against abr on three 12 s clips the probe had put there). Hard content gets
    capped_level, about abr's bits: when even the highest level probed takes more than the target
    bitrate (heavy grain: what the target buys is then a guess below the curve), when the level that
    reaches the aim is below LEVEL_RANGE, or when it would take the target bitrate anyway."""
    kbps, aim = aim_at(points, size, target)
    curve = crf_curve(points)
    if kbps < min(p.kbps for p in curve):
        return SizeChoice(size, capped_level(curve, kbps), aim, False, peak=hard_peak(curve))
    best = level_for(curve, aim)
    level = min(LEVEL_RANGE[1], max(LEVEL_RANGE[0], math.floor(best * 2) / 2))
    if best < LEVEL_RANGE[0] or kbps_at(curve, level) >= kbps:
        return SizeChoice(size, capped_level(curve, kbps), aim, False)
    return SizeChoice(size, level, aim, True)


def aim_at(points: list[ProbePoint], size: tuple[int, int], target: float) -> tuple[float, float]:
    """The size's target bitrate (kbit/s) and the VMAF its level aims at: `target`, or what that bitrate
    buys abr minus MARGIN when that is lower."""
    kbps = target_bitrate("h264", size[0], size[1], PROBE_RATE) / 1000
    return kbps, min(float(target), abr_buys(points, kbps) - MARGIN)


def abr_buys(points: list[ProbePoint], kbps: float) -> float:
    """The VMAF abr reaches at `kbps`: the curve of crf's settings there (at_target), less the gap between
    that curve and the baseline encode (abr's settings) at the baseline's bitrate. crf's x264 settings
    (ladder.CRF_X264_PARAMS) are worth 0 to 4 VMAF at equal bytes, by content; without the gap the probe
    would take crf's curve for abr's and aim that much higher."""
    return at_target(crf_curve(points), kbps) - settings_gap(points)


def crf_curve(points: list[ProbePoint]) -> list[ProbePoint]:
    """The points at crf's settings (not the baseline), by level."""
    return sorted((p for p in points if not p.baseline), key=lambda p: p.level)


def settings_gap(points: list[ProbePoint]) -> float:
    """How much higher the curve of crf's settings lies than the baseline encode (abr's settings) at the
    baseline's bitrate, in VMAF (0 without a baseline)."""
    base = next((p for p in points if p.baseline), None)
    return at_target(crf_curve(points), base.kbps) - base.vmaf if base else 0.0


def level_for(curve: list[ProbePoint], aim: float) -> float:
    """The level where the curve (sorted by level) falls to `aim`: linear between the probes; past the
    richest one on at its first slope (a level under the lowest probed); the leanest level when even it
    reaches the aim."""
    if len(curve) < 2:
        return curve[0].level
    if curve[0].vmaf < aim:
        per_level = (curve[0].vmaf - curve[1].vmaf) / (curve[1].level - curve[0].level)
        return curve[0].level - (aim - curve[0].vmaf) / per_level if per_level > 0 else -math.inf
    for low, high in zip(curve, curve[1:]):
        if high.vmaf < aim:
            return low.level + (low.vmaf - aim) / (low.vmaf - high.vmaf) * (high.level - low.level)
    return curve[-1].level


def hard_peak(curve: list[ProbePoint]) -> float:
    """Hard content's VBV peak, as a share of the target bitrate: where the curve of its two leanest probes
    (VMAF against log bitrate) loses PEAK_LOSS against the target, from H.264's CRF_CAP up to 1. Its rungs
    ride their peak all through; at CRF_CAP's 0.85x, a Mandelbrot zoom's (a steep curve) lost 2.8 VMAF
    against abr where heavy grain's (a flat one) kept 0.7 more."""
    rich, lean = curve[-2:] if len(curve) > 1 else (curve[0], curve[0])
    span = _log_span(rich, lean)
    slope = (rich.vmaf - lean.vmaf) / span if span > 0.05 else 0.0
    return max(CRF_CAP["h264"], min(1.0, math.exp(-PEAK_LOSS / slope))) if slope > 0 else 1.0


def _log_span(rich: ProbePoint, lean: ProbePoint) -> float:
    """How far apart two probes' bitrates are in log bitrate (0 when one took none)."""
    return math.log(rich.kbps / lean.kbps) if min(rich.kbps, lean.kbps) > 0 else 0.0


def capped_level(curve: list[ProbePoint], kbps: float) -> float:
    """Hard content's level: where the curve takes the target bitrate (on half steps, up, within
    LEVEL_RANGE; past the leanest probe kbps_at carries the curve on), so the rung spends about what abr
    spends instead of riding its cap at the leanest level probed (heavy grain's 720p took 0.89x abr's
    bytes for 3.3 VMAF more where it took 0.97x for 2.9 at level 26, bench/quality.py's 12 s clips). The VBV
    cap alone lets a short video's low level overspend it: its buffer starts nearly full (CRF 16 took
    1.2x abr's bytes on the 4 s animation's 360p)."""
    low, high = LEVEL_RANGE
    level = low
    while level < high and kbps_at(curve, level) > kbps:
        level += 0.5
    return level


def kbps_at(curve: list[ProbePoint], level: float) -> float:
    """The bitrate the curve takes at `level`, linear in log bitrate between the probes and on past them."""
    if len(curve) == 1:
        return curve[0].kbps
    pairs = list(zip(curve, curve[1:]))
    low, high = next(((a, b) for a, b in pairs if level <= b.level), pairs[-1])
    if min(low.kbps, high.kbps) <= 0 or high.level == low.level:
        return low.kbps
    slope = math.log(high.kbps / low.kbps) / (high.level - low.level)
    return low.kbps * math.exp(slope * (level - low.level))


def rung_choice(choices: list[SizeChoice], rung: RenditionSpec, top_box: int = TOP_BOX[1]) -> SizeChoice:
    """The choice a rung takes its level from: the top probe's for the ladder's top rung of the 720p box or
    more; for the others the probe of their own box (the lower of it and the next larger probe's between
    two probe sizes, a 720p rung under a 1080p one included: it is watched scaled up, as the smaller
    probes are scored); one lower than the smallest probe's below it."""
    boxes = [box_height(*c.size) for c in choices]  # largest first
    box = box_height(rung.width, rung.height)
    if box >= TOP_BOX[1] and box >= top_box:
        return choices[0]
    if box < boxes[-1]:
        return dataclasses.replace(choices[-1], level=max(LEVEL_RANGE[0], choices[-1].level - 1.0))
    at = next(i for i, probed in enumerate(boxes) if probed <= box)
    if boxes[at] == box and (at > 0 or box >= top_box):
        return choices[at]
    near = choices[at: at + 2] if at == 0 else choices[at - 1: at + 1]
    return min(near, key=lambda c: c.level)


def probe_sizes(info: ProbeResult) -> list[tuple[int, int]]:
    """The probe's picture sizes for this source: the source fitted to each of PROBE_BOXES, largest first
    (one where they coincide: a source no larger than the 360p box)."""
    return list(dict.fromkeys(fit_box(info.width, info.height, *box) for box in PROBE_BOXES))


def measure(frames: list, sizes: list[tuple[int, int]], opts: PipelineOptions, target: float = 100.0
            ) -> list[ProbePoint]:
    """Encode the samples at each size and probe level: the bitrate each takes in the ladder, and VMAF.
    First at the two lower levels and the baseline (BASELINE_LEVEL at abr's settings, for abr_buys); the
    highest only at the sizes whose choice may lie past the second (pick_level needs it there: the target
    bitrate is below what the second takes, or its VMAF still meets the aim). Easy and middling pictures
    take a quarter less probing."""
    gop = max(1, round(opts.segment_seconds * float(PROBE_RATE)))
    with tempfile.TemporaryDirectory(prefix="sf-pertitle-") as tmp:
        work = Path(tmp)
        write_raw(frames, work / "reference.yuv")
        pictures = {size: scaled(frames, size) for size in sizes}
        first = [(s, level, False) for s in sizes for level in LEVELS[:2]] + [(s, BASELINE_LEVEL, True) for s in sizes]
        points = _measure_runs(work, frames, pictures, first, opts, gop)
        more = [(size, level, False) for size in sizes for level in LEVELS[2:]
                if _past_second(size, [p for p in points if p.size == size], target)]
        if more:
            points += _measure_runs(work, frames, pictures, more, opts, gop, first=len(points))
    return sorted(points, key=lambda p: (sizes.index(p.size), p.baseline, p.level))


def _past_second(size: tuple[int, int], points: list[ProbePoint], target: float) -> bool:
    """Whether this size's choice may lie past the second probe level (pick_level then needs the third)."""
    kbps, aim = aim_at(points, size, target)
    lean = crf_curve(points)[-1]
    return kbps < lean.kbps or lean.vmaf >= aim


def _measure_runs(work: Path, frames: list, pictures: dict, runs: list, opts: PipelineOptions, gop: int,
                  first: int = 0) -> list[ProbePoint]:
    """Encode the samples for each (size, level) as work/N.h264 (N from `first`) and score them. The
    encodes run as many at once as there are cores, the largest pictures first; each size is scored in
    one FFmpeg run as soon as its encodes are done, so one size's scoring overlaps the other's encoding
    (x264 leaves the GIL). On the 30 s bench input the probe took 2.4-2.8 s of wall time where it took
    3.0-3.2 s with a thread per size that encoded its runs one after the other and passed libvmaf every
    picture (the same encodes and scores)."""
    numbered = list(enumerate(runs, start=first))
    by_size: dict[tuple[int, int], list] = {}
    for n, run in numbered:
        by_size.setdefault(run[0], []).append((n, run))
    largest_first = sorted(numbered, key=lambda item: -item[1][0][0] * item[1][0][1])
    with ThreadPoolExecutor(cpu_cores(), thread_name_prefix="probe-x264") as encoders, \
            ThreadPoolExecutor(len(by_size), thread_name_prefix="probe-vmaf") as scorers:
        rates = {n: encoders.submit(_encode_run, work, pictures[run[0]], n, run, opts, gop)
                 for n, run in largest_first}
        scored = [scorers.submit(_score_size, work, frames, group, {n: rates[n] for n, _ in group})
                  for group in by_size.values()]
        points = dict(pair for done in scored for pair in done.result())
    return [points[n] for n in range(first, first + len(runs))]


def _encode_run(work: Path, pictures: list, n: int, run: tuple, opts: PipelineOptions, gop: int) -> float:
    """Encode one probe run (size, level, baseline) as work/N.h264; the bitrate it takes in the ladder."""
    size, level, baseline = run
    data, per_frame = encode_samples(pictures, probe_options(level, opts, size, baseline), gop)
    (work / f"{n}.h264").write_bytes(data)
    return per_frame * float(PROBE_RATE) / 1000


def _score_size(work: Path, frames: list, group: list, rates: dict) -> list[tuple[int, ProbePoint]]:
    """Score one size's encodes once they are done: (N, its ProbePoint) for each run of the group."""
    kbps = {n: rate.result() for n, rate in rates.items()}
    step = ONE_STRETCH_STEP if len(frames) <= SAMPLE_FRAMES else SCORE_STEP
    scores = vmaf_scores(work, [n for n, _ in group], frames[0].width, frames[0].height, step)
    return [(n, ProbePoint(size=size, level=level, kbps=kbps[n], vmaf=score, baseline=baseline))
            for (n, (size, level, baseline)), score in zip(group, scores)]


def at_target(points: list[ProbePoint], kbps: float) -> float:
    """The VMAF the curve reaches at `kbps`, linear in log bitrate between neighbouring levels and on past
    the leanest at its pair's slope: what the target bitrate buys. Past the richest level it goes on up,
    as an encoder with bits to spare keeps refining a still picture or rolling text, but closes on 100:
    its distance from 100 shrinks by the same factor for each factor of bitrate as between the two richest
    probes. Straight on, a camera clip at 1080p (probed at 98.4 and 96.5, its target past both) was judged
    to buy abr 99.3 where abr's 1080p and 720p rungs reached 98.1 and 97.5, and its rungs took 0.80x abr's
    bytes for its VMAF; closing on 100 (98.6) 0.77-0.79x, 0.0 to 0.3 below (bench/README.md, "Eighth
    session"). A pair whose bitrates hardly differ (a still: every level about as small) carries no slope."""
    curve = sorted(points, key=lambda p: p.level)
    if len(curve) == 1:
        return curve[0].vmaf
    pairs = list(zip(curve, curve[1:]))  # each (lower level: more bits, higher level)
    rich, lean = next(((a, b) for a, b in pairs if b.kbps <= kbps <= a.kbps),
                      pairs[0] if kbps > curve[0].kbps else pairs[-1])
    span = _log_span(rich, lean)
    if span < 0.05:
        return min(rich.vmaf, 100.0) if kbps >= lean.kbps else lean.vmaf
    if kbps > rich.kbps and 0 < 100 - rich.vmaf < 100 - lean.vmaf:
        shrink = math.log((100 - lean.vmaf) / (100 - rich.vmaf)) / span
        return 100 - (100 - rich.vmaf) * (kbps / rich.kbps) ** -shrink
    slope = (rich.vmaf - lean.vmaf) / span
    return min(100.0, lean.vmaf + slope * math.log(kbps / lean.kbps))


def scaled(frames: list, size: tuple[int, int]) -> list:
    """The samples at another size (bicubic), or themselves."""
    if (frames[0].width, frames[0].height) == size:
        return frames
    reformatter = VideoReformatter()
    return [reformatter.reformat(f, size[0], size[1], "yuv420p", interpolation=Interpolation.BICUBIC)
            for f in frames]


def probe_options(level: float, opts: PipelineOptions, size: tuple[int, int] = TOP_BOX,
                  baseline: bool = False) -> dict:
    """x264 options of one probe encode: the level at crf's preset, with the settings crf's rungs of this
    size add to it (ladder.crf_x264_params), or without them for the baseline (abr's settings). No VBV:
    the stretches are too short for a buffer to behave as over a whole video; the probe measures the
    content's curve, and the real encode's cap does the capping."""
    preset = encoder_preset("h264", opts)
    params = f"keyint={SAMPLE_FRAMES}:min-keyint={SAMPLE_FRAMES}:scenecut=0:open-gop=0:partitions=i8x8"
    extra = "" if baseline else crf_x264_params(preset, *size)
    params += f":{extra}" if extra else ""
    return {"crf": f"{level:g}", "preset": preset, "x264-params": params, "threads": "2"}


def sample_frames(src: Path, info: ProbeResult, samples: int = SAMPLES) -> list:
    """`samples` stretches of SAMPLE_FRAMES frames spread over the video, scaled to the 720p box.

    Each starts on the first keyframe after its point when that comes before the next point (nothing
    but the stretch is decoded); otherwise (long GOPs, short videos) at the point, decoding from the
    keyframe before it with the frames no later one needs skipped.
    """
    width, height = fit_box(info.width, info.height, *TOP_BOX)
    reformatter = VideoReformatter()
    frames: list = []
    span = SAMPLE_FRAMES / float(PROBE_RATE)
    with open_input(src) as container:
        stream = container.streams[info.video_stream_index]
        stream.thread_type = "AUTO"
        done = -math.inf  # where the previous stretch ended, seconds
        for i in range(samples):
            at = max(done, info.start_time + info.duration * (i + 0.5) / samples)
            until = info.start_time + info.duration * (i + 1) / samples - span
            taken = _stretch(container, stream, at, until, done, forward=True)
            if not taken:
                taken = _stretch(container, stream, at, math.inf, done, forward=False)
            frames += [reformatter.reformat(f, width, height, "yuv420p", interpolation=Interpolation.BICUBIC)
                       for f in taken]
            done = max([done] + [f.time for f in taken if f.time is not None])
    if not frames:
        raise MediaError("no pictures to probe")
    return frames


def _stretch(container, stream, at: float, until: float, done: float, forward: bool) -> list:
    """SAMPLE_FRAMES decoded frames from `at` on: from the keyframe after it (forward; none when that is
    past `until`), or from the keyframe before it, skipping to `at`."""
    try:
        container.seek(int(at / stream.time_base), stream=stream, backward=not forward, any_frame=False)
    except av.FFmpegError:
        return []
    taken: list = []
    try:
        for frame in container.decode(stream):
            if not taken:
                if frame.time is None or (forward and (frame.time > until or frame.time <= done)):
                    return []
                if frame.time <= done or frame.time < at - SEEK_SLACK:
                    stream.codec_context.skip_frame = "NONREF"  # on to the point: only what later frames need
                    continue
                stream.codec_context.skip_frame = "DEFAULT"
            taken.append(frame)
            if len(taken) == SAMPLE_FRAMES:
                break
    finally:
        stream.codec_context.skip_frame = "DEFAULT"
    return taken


def encode_samples(frames: list, options: dict, gop: int) -> tuple[bytes, float]:
    """The samples as an H.264 Annex B stream (an IDR at each stretch's start) and the bits a frame takes
    in the ladder, where a keyframe comes once every `gop` frames instead of once a stretch."""
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
    keys = [p.size for p in packets if p.is_keyframe] or [0]
    others = [p.size for p in packets if not p.is_keyframe] or keys
    per_frame = 8 * (sum(keys) / len(keys) + (gop - 1) * sum(others) / len(others)) / gop
    return b"".join(bytes(p) for p in packets), per_frame


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


def vmaf_scores(work: Path, streams: list[int], width: int, height: int, step: int = SCORE_STEP
                ) -> list[float]:
    """VMAF of each probe stream (work/N.h264 for N in `streams`), scaled up bicubically to the samples'
    size, against work/reference.yuv, in one FFmpeg run, scoring every `step`-th picture."""
    run = subprocess.Popen(_vmaf_command(streams, width, height, step), cwd=work, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        _, err = run.communicate(timeout=VMAF_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        raise
    if run.returncode != 0:
        raise RuntimeError(f"VMAF scoring failed: {err.decode(errors='replace')[-300:]}")
    return [json.loads((work / f"vmaf{i}.json").read_text())["pooled_metrics"]["vmaf"]["mean"] for i in streams]


def _vmaf_command(streams: list[int], width: int, height: int, step: int) -> list[str]:
    """One FFmpeg run scoring pictures 0, step, 2 step, ... of each stream. Only those and their two
    neighbours reach libvmaf, which scores every third picture it gets: its motion feature, which it works
    out on every picture it gets, needs just the neighbours, so the scores are those of every picture
    passed, to the last digit, for fewer CPU seconds (0.3 of 2.7 on the 30 s bench input's probe)."""
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-framerate", "25"]
    args = [ffmpeg_with_vmaf(), "-hide_banner", "-nostats", "-loglevel", "error", *raw, "-i", "reference.yuv"]
    for i in streams:
        args += ["-f", "h264", "-framerate", "25", "-i", f"{i}.h264"]
    pick, subsample = "settb=1/25,setpts=N", step
    if step > 3:  # the pictures n with n mod step in (step - 1, 0, 1)
        pick, subsample = f"{pick},select='lt(mod(n+1\\,{step})\\,3)',setpts=N", 3
    graph = [f"[0:v]{pick},split={len(streams)}" + "".join(f"[r{i}]" for i in streams)]
    for n, i in enumerate(streams):
        graph.append(f"[{n + 1}:v]{pick},scale={width}:{height}:flags=bicubic[d{i}];"
                     f"[d{i}][r{i}]libvmaf=n_threads=1:n_subsample={subsample}:log_fmt=json:log_path=vmaf{i}.json")
    return [*args, "-filter_complex", ";".join(graph), "-f", "null", "-"]
