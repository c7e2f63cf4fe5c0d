"""Plan the rendition ladder: which sizes, codecs, frame rate and bitrates to encode."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

CODECS = ("h264", "hevc", "av1", "vp9")
# x264's preset names; the other encoders' speeds are mapped from them
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
           "placebo")
# Target bitrate of a 1920x1080 30 fps picture in each codec, kbit/s; other sizes scale from it.
REFERENCE_KBPS = {"h264": 5000, "hevc": 3300, "av1": 2800, "vp9": 3400}
REFERENCE_PIXELS = 1920 * 1080
RATE_CONTROLS = ("crf", "abr")
# Constant-quality level of the 720p and larger rungs, in each encoder's own scale (x264/x265 CRF 0-51,
# SVT-AV1 and VP9 CRF 0-63), and how much lower a smaller rung goes: a small rung is watched scaled up,
# so its pixels count more. Measured with bench/quality.py (the curves are in bench/README.md): per rung,
# the levels with the fewest corpus bytes whose VMAF stayed within 1.5 of the target bitrate's on every clip.
# H.264's are the fixed levels: in crf mode each title's are chosen by pipeline/pertitle.py's probe, and
# these (x264 veryfast's safe level, bench/README.md's preset table) serve only with target_quality = 0
# or when the probe cannot run.
DEFAULT_QUALITY = {"h264": 18.0, "hevc": 20.0, "av1": 33.0, "vp9": 23.0}
# (rungs at least this tall, minus), tall as in box_height; < 360 extrapolated
QUALITY_OFFSETS = ((720, 0.0), (480, 1.0), (360, 2.0), (0, 3.0))
# The encoder preset when [pipeline] preset is left empty, per rate control and codec. x264 "faster" gave
# 1.5 to 3 VMAF more than "veryfast" at equal bytes, but took 1.45x the abr ladder's time; the default
# ladder must stay within 1.1x of it, probe included, so crf encodes at "veryfast" too and the per-title
# levels (pipeline/pertitle.py) take the bytes where the picture allows (bench/README.md).
DEFAULT_PRESETS = {"crf": {"h264": "veryfast"}, "abr": {}}
FALLBACK_PRESET = "veryfast"
# Capped CRF's x264 settings on top of a preset, for rungs under and from the LARGE_BOX (box_height) up.
# At veryfast, trellis quantisation and a 20-frame lookahead gave 1.9 VMAF more at abr's bytes on the
# quality bench's tuning half, for 18-28 % more CPU per frame; subme 1 on the large rungs pays that back
# there (8 % less CPU than plain veryfast, VMAF as high) but cost 1-3 VMAF on 480p and 360p rungs, which
# keep subme 2 (bench/README.md, "Fourth session: crf's own x264 settings"). abr keeps the preset alone.
# x264's adaptive quantisation at 0.7 of its strength (aq-strength) gave 0.2 to 0.7 VMAF more at equal bytes
# on the tuning half's clips at 720p and 360p, 0.5 more yet, 1.3 less (its default, 1.0, moves bits to flat
# areas, which VMAF weighs less); 0.7 leaves flat gradients some of them (bench/README.md, "Seventh session").
CRF_X264_PARAMS = {"veryfast": ("rc-lookahead=20:trellis=1:aq-strength=0.7",
                                "rc-lookahead=20:trellis=1:subme=1:aq-strength=0.7")}
LARGE_BOX = 720
# Capped CRF's VBV peak as a share of the target bitrate, per codec (1.0 when not listed). H.264 rungs whose
# pictures take more than their level's bits (heavy grain; a 1080p animation whose probe saw easier
# seconds than the rest) rode a cap at the target with 1.5 to 3.3 VMAF more than abr's at about its bytes.
# At 0.85 the tuning half's bytes fell from 0.75x abr's to 0.71x with its worst rung unchanged (1.20 below
# abr's); grain kept 1.0 to 2.6 more, the 1080p animation -0.6 to +0.9 (bench/quality.py, 12 s clips,
# bench/README.md "Fifth session"). The per-title levels and crf's x264 settings are what make up for it.
CRF_CAP = {"h264": 0.85}
# crf mode: the VMAF a title's probe aims at (pipeline/pertitle.py), unless what the target bitrate buys
# is lower; 0 turns the per-title choice off
DEFAULT_TARGET_QUALITY = 100.0


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the pipeline needs from the configuration, as one immutable value."""

    codecs: tuple[str, ...] = ("h264",)
    heights: tuple[int, ...] = (1080, 720, 480, 360)
    preset: str = ""  # "": the measured default of each codec and rate control (encoder_preset)
    segment_seconds: float = 4
    max_duration: float = 6 * 3600.0
    max_width: int = 8192
    max_height: int = 8192
    max_streams: int = 32
    max_fps: int = 60
    run_timeout: int = 4 * 3600
    # publish EVENT playlists while encoding, with a short first segment (see run_pipeline)
    live: bool = False
    first_segment_seconds: float = 0.5  # (1.0 put a 30 s upload's first playable 0.7 s later)
    audio_bitrate: str = "128k"
    preview_count: int = 5
    # extra encoder options per codec, e.g. {"h264": {"tune": "film"}}; they override the defaults
    encoder_options: dict = field(default_factory=dict, compare=False)
    # "crf": constant quality capped at each rung's peak; "abr": the target bitrates (see plan_ladder)
    rate_control: str = "crf"
    # constant-quality level per codec in the encoder's own scale, for the 720p and larger rungs (the
    # smaller rungs get QUALITY_OFFSETS below it); codecs left out get DEFAULT_QUALITY
    quality: dict = field(default_factory=dict, compare=False)
    # keep an H.264 upload's own pictures for the rung of its size (see pipeline/passthrough.py)
    passthrough: bool = True
    # crf mode: the VMAF the top rungs aim at, each title's levels chosen by a probe encode
    # (pipeline/pertitle.py); 0: the fixed levels above
    target_quality: float = DEFAULT_TARGET_QUALITY
    # levels already chosen for this title, ((rung name, level), ...): a chunked run's, chosen once by the
    # run and used by every chunk (plan_ladder applies them; no probe then)
    levels: tuple = ()

    @classmethod
    def from_config(cls, config) -> PipelineOptions:
        """Build options from the [pipeline] config section (duck-typed: any object with its attributes)."""
        defaults = cls()
        values = {}
        for name in ("preset", "segment_seconds", "max_duration", "max_width", "max_height", "max_streams",
                     "max_fps", "run_timeout", "live", "first_segment_seconds", "audio_bitrate",
                     "preview_count", "rate_control", "passthrough", "target_quality"):
            value = getattr(config, name, None)
            if value is not None:
                values[name] = value
        codecs = getattr(config, "codecs", None)
        heights = getattr(config, "heights", None)
        values["codecs"] = tuple(str(c).lower() for c in codecs) if codecs else defaults.codecs
        values["heights"] = tuple(int(h) for h in heights) if heights else defaults.heights
        encoder_options = getattr(config, "encoder_options", None)
        if encoder_options:
            values["encoder_options"] = {k: dict(v) for k, v in dict(encoder_options).items()}
        quality = getattr(config, "quality", None)
        if quality:
            values["quality"] = {str(k).lower(): float(v) for k, v in dict(quality).items()}
        return cls(**values)


def as_levels(entries) -> tuple:
    """PipelineOptions.levels from [[rung name, level, peak], ...] as JSON carries them (the peak, the VBV
    peak as a share of the target, may be left out: the codec's CRF_CAP)."""
    return tuple((str(name), float(level), *(float(peak) for peak in rest[:1])) for name, level, *rest in entries)


@dataclass(frozen=True)
class RenditionSpec:
    """One video rung to encode."""

    name: str  # "720p" for h264, "720p-hevc" for the others; also the rung's folder
    codec: str
    width: int
    height: int
    bitrate: int  # target, bit/s
    maxrate: int  # VBV peak, bit/s
    bufsize: int  # VBV buffer, bits
    frame_rate: Fraction
    crf: float | None = None  # constant-quality level (rate_control "crf"); None: the target bitrate

    @property
    def bitrate_text(self) -> str:
        """The target bitrate as people write it, e.g. "2800k"."""
        return f"{round(self.bitrate / 1000)}k"


def output_frame_rate(source_rate: Fraction, max_fps: int) -> Fraction:
    """The constant output rate: the source's, halved until it is at most max_fps (120 -> 60, 100 -> 50)."""
    rate = Fraction(source_rate) if source_rate and source_rate > 0 else Fraction(25)
    max_fps = max(1, int(max_fps or 60))
    while rate > max_fps:
        rate /= 2
    return max(rate, Fraction(1))


def even(value: float) -> int:
    """The nearest even integer, at least 2 (4:2:0 chroma needs even sizes)."""
    return max(2, round(value / 2.0) * 2)


def fit_box(width: int, height: int, box_long: int, box_short: int) -> tuple[int, int]:
    """Scale width x height down (never up) to fit an orientation-free box; even dimensions.

    Rounded to the nearest even size, but never past the source (an odd 321 becomes 320, not 322).
    """
    long_side, short_side = max(width, height), min(width, height)
    scale = min(1.0, box_long / long_side, box_short / short_side)
    return (max(2, min(even(width * scale), width - width % 2)),
            max(2, min(even(height * scale), height - height % 2)))


def plan_ladder(probe, opts: PipelineOptions) -> list[RenditionSpec]:
    """Plan every codec's rungs for a source: never upscaled, even sizes, orientation kept.

    A rung "720p" is the source scaled to fit a 1280x720 box (720x1280 for a portrait source), so a
    1920x800 film still gets a 1920x800 "1080p". A source smaller than a box in both directions is
    encoded at its own size, once, under the smallest box it fits in (or its own height).
    """
    rate = output_frame_rate(probe.frame_rate, opts.max_fps)
    sizes = ladder_sizes(int(probe.width), int(probe.height), opts.heights)
    if opts.rate_control not in RATE_CONTROLS:
        raise ValueError(f"unknown rate_control {opts.rate_control!r}; choose from {', '.join(RATE_CONTROLS)}")
    rungs = []
    chosen = {name: rest for name, *rest in as_levels(opts.levels)}  # name: [level] or [level, peak]
    for codec in opts.codecs:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
        for name, w, h in sizes:
            bitrate = target_bitrate(codec, w, h, rate)
            name = name if codec == "h264" else f"{name}-{codec}"
            if opts.rate_control == "abr":
                rungs.append(RenditionSpec(name=name, codec=codec, width=w, height=h, bitrate=bitrate,
                                           maxrate=int(bitrate * 1.5), bufsize=int(bitrate * 2), frame_rate=rate))
            else:
                # capped at the target (H.264: CRF_CAP of it), as PeerTube caps at the target: pictures no
                # CRF is met on (heavy grain) then take no more; a 1.5x cap would let them average up to 1.5x
                level, *peak = chosen.get(name, [rung_quality(codec, box_height(w, h), opts)])
                rungs.append(RenditionSpec(name=name, codec=codec, width=w, height=h, bitrate=bitrate,
                                           maxrate=int(bitrate * (peak or [CRF_CAP.get(codec, 1.0)])[0]),
                                           bufsize=int(bitrate * 2), frame_rate=rate, crf=level))
    return rungs


def target_bitrate(codec: str, width: int, height: int, rate: Fraction) -> int:
    """A rung's target bitrate in bit/s: the codec's 1080p30 reference scaled by pixels^0.75 and frame rate."""
    kbps = REFERENCE_KBPS[codec] * (width * height / REFERENCE_PIXELS) ** 0.75
    kbps *= min(1.5, max(0.6, math.sqrt(float(rate) / 30)))
    return int(round(max(kbps, 64) / 10) * 10) * 1000


def encoder_preset(codec: str, opts: PipelineOptions) -> str:
    """The preset a rung of this codec is encoded with: [pipeline] preset, or the measured default."""
    if opts.preset:
        return opts.preset
    return DEFAULT_PRESETS.get(opts.rate_control, {}).get(codec, FALLBACK_PRESET)


def crf_x264_params(preset: str, width: int, height: int) -> str:
    """x264 options a capped-CRF rung of this size adds to its preset ("" when none are measured for it)."""
    small, large = CRF_X264_PARAMS.get(preset, ("", ""))
    return large if box_height(width, height) >= LARGE_BOX else small


def box_height(width: int, height: int) -> int:
    """The height of the 16:9 box a picture of this size fills, whatever its shape or orientation: 720
    for 1280x720, for a 1280x544 film and for a 720x1280 phone video alike (they are watched at the same
    scale, so they take the same level)."""
    return max(min(width, height), round(max(width, height) * 9 / 16))


def rung_quality(codec: str, height: int, opts: PipelineOptions) -> float:
    """The constant-quality level of a rung of this codec filling a 16:9 box `height` tall (box_height)."""
    base = float((opts.quality or {}).get(codec, DEFAULT_QUALITY[codec]))
    offset = next(minus for tall, minus in QUALITY_OFFSETS if height >= tall)
    return max(0.0, base - offset)


def ladder_sizes(src_w: int, src_h: int, heights) -> list[tuple[str, int, int]]:
    """The (name, width, height) of every rung for a source of this size, largest first."""
    sizes: list[tuple[str, int, int]] = []
    own_size_done = False
    for p in sorted({int(h) for h in heights}, reverse=True):
        box_long, box_short = even(p * 16 / 9), p
        fits = max(src_w, src_h) <= box_long and min(src_w, src_h) <= box_short
        if fits:
            smaller = [h for h in heights if h < p]
            fits_smaller = any(max(src_w, src_h) <= even(h * 16 / 9) and min(src_w, src_h) <= h
                               for h in smaller)
            if fits_smaller or own_size_done:
                continue
            own_size_done = True
        w, h = fit_box(src_w, src_h, box_long, box_short)
        if any((w, h) == (sw, sh) for _, sw, sh in sizes):
            continue
        bounded = min(w, h) == p or abs(max(w, h) - box_long) <= 2
        name = f"{p if bounded else min(w, h)}p"
        if any(name == taken for taken, _, _ in sizes):
            name = f"{min(w, h)}p" if all(f"{min(w, h)}p" != t for t, _, _ in sizes) else f"{w}x{h}"
        sizes.append((name, w, h))
    if not sizes:  # only when heights is empty
        w, h = fit_box(src_w, src_h, max(src_w, src_h), min(src_w, src_h))
        sizes.append((f"{min(w, h)}p", w, h))
    return sizes
