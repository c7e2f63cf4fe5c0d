"""Decode once, encode every rung in parallel, package as fMP4 HLS with thumbnails.

Threads: the caller's thread demuxes and decodes (video and audio), deinterlaces and rotates when
needed, turns the video into a constant frame rate, and hands the same decoded frame to every
rung through a small bounded queue (so memory does not grow with the length of the video). Each
rung thread owns its VideoReformatter, encoder and muxer: `VideoFrame.reformat` caches one
reformatter on the frame and crashed when several threads used it, a reformatter per thread does
not. Keyframes are forced on the same output frame numbers in every rung, so every rung's
segments start at exactly the same times.
"""
from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from streamforge.errors import MediaError
from streamforge.pipeline import hls, levelswitch, passthrough, pertitle
from streamforge.pipeline.aac import AudioAligner, AudioEncoder, AudioPlan, audio_bits, plan_audio
from streamforge.pipeline.ladder import (
    PRESETS,
    PipelineOptions,
    RenditionSpec,
    crf_x264_params,
    encoder_preset,
    plan_ladder,
)
from streamforge.pipeline.placement import FileCallback, publish_built, remove_written
from streamforge.pipeline.probe import ProbeResult, max_pixels, open_input
from streamforge.pipeline.segments import Timeline, plan_timeline
from streamforge.pipeline.thumbnails import Thumbnailer, ThumbnailOutput
from streamforge.pipeline.workers import (
    QUEUE_FRAMES,
    Aborted,
    Worker,
    cpu_cores,
    decoder_threads,
    encode_frames,
    lower_priority,
    picture_bytes,
    queue_frames,
)

ProgressCallback = Callable[[float, str], None]

MAX_DECODE_ERRORS = 500
# sources whose pictures are bigger than this (about 5K and up) are scaled to the top rung as decoded
SHRINK_BYTES = 64 * 1024 * 1024
VIDEO_MOVFLAGS = "empty_moov+default_base_moof+frag_keyframe+negative_cts_offsets"
# x264 preset names mapped onto the other encoders' speed scales
SVTAV1_PRESETS = dict(zip(PRESETS, (12, 11, 10, 9, 8, 7, 6, 5, 4, 3)))
VP9_SPEEDS = dict(zip(PRESETS, (8, 8, 7, 6, 5, 4, 3, 2, 1, 0)))
VBV_INIT = 0.5  # capped CRF: the VBV buffer's fullness at the start
ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
# rough CPU per pixel of each encoder at a given preset, relative to x264
ENCODER_COST = {"h264": 1.0, "hevc": 4.0, "av1": 3.0, "vp9": 1.5}


@dataclass(frozen=True)
class RenditionOutput:
    """One encoded video rung."""

    name: str
    codec: str
    width: int
    height: int
    bitrate: str  # target, e.g. "2800k"
    bandwidth: int  # measured peak bit/s of the variant (video + audio), as in the master
    average_bandwidth: int
    codecs: str  # RFC 6381, video only, e.g. "avc1.64001f"
    playlist: str  # e.g. "720p/index.m3u8"
    segment_count: int
    segment_size: int  # average bytes
    frame_rate: float
    iframe_playlist: str = ""
    copied: bool = False  # passthrough: the upload's own packets, not encoded


@dataclass(frozen=True)
class AudioOutput:
    """One audio rendition of the master's audio group, shared by every video rung."""

    name: str
    playlist: str
    codecs: str
    bitrate: str
    segment_count: int
    bandwidth: int = 0
    language: str = "und"
    label: str = "default"
    default: bool = True


@dataclass(frozen=True)
class PipelineResult:
    """Everything one run wrote, relative to the output directory."""

    probe: ProbeResult
    master: str
    renditions: list[RenditionOutput]
    audio: AudioOutput | None  # the default audio track
    thumbnails: list[ThumbnailOutput]
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the processing log, e.g. which rung was copied
    audio_tracks: list[AudioOutput] = field(default_factory=list)  # every audio track, the default included


def _nice_steps(spec: RenditionSpec, rungs: list[RenditionSpec]) -> int:
    """How much less CPU share a rung's thread should ask for than the most expensive rung's.

    The rungs move in lockstep (bounded queues), so the most expensive rung is the critical path:
    with equal priorities the scheduler splits the cores evenly between runnable threads, the big
    rung gets less than a core while the small ones race ahead and then wait, and a core idles.
    Weighting the threads by their work (one nice step is ~1.25x) keeps both cores busy.
    """
    cost = {id(r): r.width * r.height * ENCODER_COST.get(r.codec, 1.0) for r in rungs}
    ratio = cost[id(spec)] / max(cost.values())
    return max(0, min(10, round(math.log(1 / ratio) / math.log(1.25)))) if ratio > 0 else 0


def _encoder_threads(spec: RenditionSpec, rungs: list[RenditionSpec]) -> int:
    """Encoder threads for a rung: its share of all the ladder's pixels, in cores (at least one).

    Rungs already run in parallel, so a four-rung ladder gets one thread per encoder: x264 with one
    thread spends the least CPU per frame (no frame-threading overhead), and the operating system
    spreads the rung threads over the cores. A lone rung gets every core.
    """
    cores = cpu_cores()
    total = sum(r.width * r.height for r in rungs)
    share = spec.width * spec.height / total if total else 1
    return max(1, min(cores, round(share * cores)))


def encoder_settings(spec: RenditionSpec, opts: PipelineOptions, gop: int, threads: int) -> tuple[str, dict]:
    """The FFmpeg encoder name and its options for one rung (keyframes only where we force them).

    A rung with `crf` set is encoded at that constant quality, capped by VBV at its maxrate/bufsize
    (x264/x265 crf + vbv, SVT-AV1 capped CRF with mbr, VP9 constrained quality); otherwise at its
    target bitrate, as `rate_control = "abr"` always did.
    """
    if spec.codec not in ENCODERS:
        raise ValueError(f"unknown codec {spec.codec!r}")
    options = _RATE_OPTIONS[spec.codec](spec, encoder_preset(spec.codec, opts), gop, threads)
    for key, value in (opts.encoder_options or {}).get(spec.codec, {}).items():
        if key in ("x264-params", "x265-params", "svtav1-params") and key in options:
            # appended: the encoder applies them in order, so these override ours one by one while
            # the keyframe settings the alignment depends on stay unless named
            options[key] = f"{options[key]}:{value}"
        else:
            options[key] = str(value)
    return ENCODERS[spec.codec], options


def _vbv(spec: RenditionSpec) -> dict:
    return {"maxrate": str(spec.maxrate), "bufsize": str(spec.bufsize)}


def _x264_options(spec: RenditionSpec, preset: str, gop: int, threads: int) -> dict:
    # keyint=gop and no scenecut: x264's own keyframes fall exactly on our forced ones, never between.
    # partitions=i8x8 skips the 4x4 intra and 8x8 inter partition searches: about 18% less CPU for
    # 0.05 dB of PSNR at 720p veryfast (measured with bench/ladder.py's input); override it in
    # [pipeline] encoder_options if you would rather spend the CPU.
    rate = {"crf": _level(spec.crf)} if spec.crf is not None else {"b": str(spec.bitrate)}
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:partitions=i8x8"
    if spec.crf is not None:
        # a half-full VBV buffer at the start: at x264's 0.9 a short clip of heavy grain took 1.11x the
        # target's bytes, at 0.5 0.97x (bench/quality.py); ABR's own rate control does not need it.
        # stitchable: headers that do not depend on the level, so a rung may go on at another one with the
        # same init segment (pipeline/levelswitch.py)
        params += f":vbv-init={VBV_INIT}:stitchable=1"
        extra = crf_x264_params(preset, spec.width, spec.height)
        params += f":{extra}" if extra else ""
    return {**rate, **_vbv(spec), "preset": preset, "forced-idr": "1", "threads": str(threads),
            "x264-params": params}


def _x265_options(spec: RenditionSpec, preset: str, gop: int, threads: int) -> dict:
    max_kbps, buf_kbps = spec.maxrate // 1000, spec.bufsize // 1000
    rate = f"crf={_level(spec.crf)}:vbv-init={VBV_INIT}" if spec.crf is not None else f"bitrate={spec.bitrate // 1000}"
    options = {"preset": preset, "forced-idr": "1",
               "x265-params": (f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:"
                               f"vbv-maxrate={max_kbps}:vbv-bufsize={buf_kbps}:{rate}:"
                               f"frame-threads={threads}:pools={threads}:log-level=error")}
    return options if spec.crf is not None else {"b": str(spec.bitrate), **_vbv(spec), **options}


def _svtav1_options(spec: RenditionSpec, preset: str, gop: int, threads: int) -> dict:
    speed = preset if preset.isdigit() else str(SVTAV1_PRESETS.get(preset, 10))
    if spec.crf is not None:
        # capped CRF: SVT-AV1 takes a maximum bitrate (mbr, kbit/s) only in CRF mode
        return {"crf": _level(spec.crf), "preset": speed, "g": str(gop),
                "svtav1-params": f"scd=0:lp={threads}:rc=0:mbr={spec.maxrate // 1000}"}
    # VBR; scene detection off
    return {"b": str(spec.bitrate), "preset": speed, "g": str(gop),
            "svtav1-params": f"scd=0:lp={threads}:rc=1:tbr={spec.bitrate // 1000}"}


def _vp9_options(spec: RenditionSpec, preset: str, gop: int, threads: int) -> dict:
    speed = VP9_SPEEDS.get(preset, 7)
    # constrained quality: crf with b as the ceiling of the average
    rate = {"crf": _level(spec.crf), "b": str(spec.maxrate)} if spec.crf is not None else {"b": str(spec.bitrate)}
    return {**rate, **_vbv(spec), "g": str(gop), "keyint_min": str(gop), "row-mt": "1", "threads": str(threads),
            "deadline": "realtime" if speed >= 6 else "good", "cpu-used": str(speed),
            "lag-in-frames": "0" if speed >= 6 else "16", "auto-alt-ref": "0" if speed >= 6 else "1"}


def _level(crf: float) -> str:
    """A CRF as the encoders take it: "23" or "22.5"."""
    return f"{crf:g}"


_RATE_OPTIONS = {"h264": _x264_options, "hevc": _x265_options, "av1": _svtav1_options, "vp9": _vp9_options}


class _RungEncoder(Worker):
    """Scales and encodes one rung, and muxes it into HLS segments."""

    def __init__(self, spec: RenditionSpec, opts: PipelineOptions, timeline: Timeline, threads: int,
                 track: hls.TrackOutput, root: Path, publisher: hls.Publisher, abort: threading.Event,
                 nice: int = 0, queue_size: int = QUEUE_FRAMES, levels: levelswitch.LevelsLater | None = None):
        super().__init__(f"rung-{spec.name}", abort, maxsize=queue_size)
        self.spec, self.opts, self.timeline, self.threads = spec, opts, timeline, threads
        self.nice = nice
        self.levels = levels  # per-title levels still being chosen: switch to this rung's at the first boundary
        self._context = None  # the open encoder's codec context
        self._colors: dict | None = None  # the source's colour description, from its first picture
        self.track, self.root, self.publisher = track, root, publisher
        (root / track.name).mkdir(parents=True, exist_ok=True)
        self.sink = hls.FragmentSink(track, root / track.name, timeline.boundary_time,
                                     tolerance=timeline.frame_duration / 2,
                                     on_segment=publisher.on_segment, on_init=publisher.on_init)

    def work(self) -> None:
        lower_priority(self.nice)
        if self.spec.codec == "av1":
            # SVT-AV1 prints its banner and warnings straight to stderr unless told otherwise
            os.environ.setdefault("SVT_LOG", "1")
        try:
            if self.levels is None:
                self._encode(self.spec, self._pictures())
            else:
                self._encode_switching(self._pictures())
        except Aborted:
            return  # another thread failed while this one waited for the levels: its error is the run's
        if not self.abort.is_set():
            self.sink.close()

    def _encode_switching(self, pictures) -> None:
        """The first segment at the planned level and the rest at the level the probe chose for the rung:
        two encoders and muxers, one after the other, into the same sink (pipeline/levelswitch.py). The
        first encoder is flushed at the boundary, so the first segment is out before the probe is done."""
        pictures, held = iter(pictures), []

        def first_segment():
            for frame in pictures:
                if frame.pts >= self.timeline.first:
                    held.append(frame)
                    return
                yield frame

        self._encode(self.spec, first_segment())
        if not held or self.abort.is_set():
            return  # the video ended within its first segment, or the run failed
        chosen = self.levels.wait(self.abort).get(self.spec.name, self.spec)
        self.sink.resume()
        self._encode(replace(self.spec, crf=chosen.crf, maxrate=chosen.maxrate), itertools.chain(held, pictures))

    def _encode(self, spec: RenditionSpec, pictures) -> None:
        """Encode `pictures` as `spec` says through one mp4 muxer into the rung's sink."""
        rate = self.timeline.rate
        keyint = max(self.timeline.gop, self.timeline.keyint)
        codec_name, options = encoder_settings(spec, self.opts, keyint, self.threads)
        time_base = Fraction(1, 1) / rate
        with av.open(self.sink, "w", format="mp4", options={"movflags": VIDEO_MOVFLAGS}) as container:
            stream = container.add_stream(codec_name, rate=rate)
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.codec_context.bit_rate = spec.bitrate if spec.crf is None else 0
            stream.codec_context.options = options
            if spec.codec == "hevc":
                stream.codec_tag = "hvc1"  # Apple players refuse hev1
            self._context = stream.codec_context
            if self._colors is not None:
                _tag_colors(self._context, self._colors)
            encode_frames(stream, container, pictures, self.sink, self.abort)

    def _pictures(self):
        """The queued frames scaled to the rung, numbered, keyframes forced on the segment boundaries."""
        spec, reformatter = self.spec, VideoReformatter()
        time_base = Fraction(1, 1) / self.timeline.rate
        for frame, n, src_range in self.items():
            if self._colors is None:  # before the encoder opens on the first picture
                self._colors = _colors_of(frame)
                _tag_colors(self._context, self._colors)
            out = reformatter.reformat(frame, spec.width, spec.height, "yuv420p",
                                       interpolation=Interpolation.BICUBIC, threads=1,
                                       src_color_range=src_range, dst_color_range=1)
            out.pts = n
            out.time_base = time_base
            out.pict_type = PictureType.I if self.timeline.is_boundary(n) else PictureType.NONE
            yield out


class _CopiedRung(Worker):
    """Remuxes the source's own H.264 packets into one rung's HLS segments (passthrough: no decode)."""

    def __init__(self, src: Path, info: ProbeResult, timeline: Timeline, track: hls.TrackOutput, root: Path,
                 publisher: hls.Publisher, abort: threading.Event):
        super().__init__(f"copy-{track.name}", abort)
        self.src, self.info = src, info
        self.track = track
        (root / track.name).mkdir(parents=True, exist_ok=True)
        self.sink = hls.FragmentSink(track, root / track.name, timeline.boundary_time,
                                     tolerance=timeline.frame_duration / 2,
                                     on_segment=publisher.on_segment, on_init=publisher.on_init)

    def work(self) -> None:
        try:
            with av.open(self.sink, "w", format="mp4", options={"movflags": VIDEO_MOVFLAGS}) as container:
                passthrough.remux(self.src, self.info, container, self.abort.is_set)
                self.sink.check()
        finally:
            if self.abort.is_set():
                self.sink.discard = True
        if not self.abort.is_set():
            self.sink.close()


def _colors_of(frame: av.VideoFrame) -> dict:
    """The source's colour description as the encoder takes it (unspecified ones left out)."""
    unspecified = 2
    values = {name: int(getattr(frame, name, 0) or 0) for name in ("colorspace", "color_primaries", "color_trc")}
    return {name: value for name, value in values.items() if value and value != unspecified}


def _tag_colors(ctx, colors: dict) -> None:
    """Carry the source's colour description into the encoder (players guess wrong without it)."""
    for name, value in colors.items():
        setattr(ctx, name, value)
    ctx.color_range = 1  # rungs are always converted to limited ("TV") range


# ---------------------------------------------------------------------------------------------
# Decoding side


class _Prefilter:
    """Deinterlace (bwdif) and rotate (transpose/flip) with an FFmpeg filter graph, only when needed."""

    def __init__(self, info: ProbeResult):
        self.filters = []
        if info.interlaced:
            self.filters.append(("bwdif", "mode=send_frame:parity=auto:deint=all"))
        if info.rotation == 90:
            self.filters.append(("transpose", "cclock"))
        elif info.rotation == 270:
            self.filters.append(("transpose", "clock"))
        elif info.rotation == 180:
            self.filters += [("hflip", ""), ("vflip", "")]
        self.graph = None
        self.key = None

    @property
    def active(self) -> bool:
        """False when frames pass through untouched."""
        return bool(self.filters)

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        node = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                time_base=frame.time_base or Fraction(1, 90000))
        first = node
        for name, args in self.filters:
            nxt = graph.add(name, args) if args else graph.add(name)
            node.link_to(nxt)
            node = nxt
        sink = graph.add("buffersink")
        node.link_to(sink)
        graph.configure()
        self.graph, self.source = graph, first
        self.key = (frame.width, frame.height, frame.format.name)

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Filter one frame (None flushes); returns the frames ready so far."""
        out = []
        if frame is not None and (self.graph is None or self.key != (frame.width, frame.height,
                                                                       frame.format.name)):
            if self.graph is not None:
                out += self.push(None)
            self._build(frame)
        if self.graph is None:
            return out
        self.source.push(frame)
        while True:
            try:
                out.append(self.graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                break
        if frame is None:
            self.graph = None
        return out


class _Shrinker:
    """A huge source picture is scaled once, on the decode thread, to the largest encoded rung's size:
    the pending frame, the rungs' queues and the thumbnailer then hold pictures of that size, not the
    source's (an 8192x8192 picture is 100 MB; its 2160-line rung is 7 MB). Other sources pass untouched."""

    def __init__(self, info: ProbeResult, encoders: list):
        top = max((e.spec for e in encoders), key=lambda s: s.width * s.height, default=None)
        self.size = None
        if (top is not None and picture_bytes(info.width, info.height) > SHRINK_BYTES
                and info.width * info.height >= 2 * top.width * top.height):
            self.size = (top.width, top.height)
            self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self.size is None:
            return frame
        # keeps pts, time base, duration and colour range; the rungs scale from this one
        return self.reformatter.reformat(frame, width=self.size[0], height=self.size[1],
                                         interpolation=Interpolation.AREA)


class _Progress:
    """Calls the progress callback at most ten times a second (and always for the last call)."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.last = 0.0

    def __call__(self, fraction: float, stage: str, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if force or now - self.last >= 0.1:
            self.last = now
            self.callback(max(0.0, min(1.0, fraction)), stage)


# ---------------------------------------------------------------------------------------------
# The run


def run_video_pipeline(src: Path, outdir: Path, info: ProbeResult, opts: PipelineOptions,
                       report: _Progress, emit: FileCallback) -> PipelineResult:
    """The ladder of a probed video under `outdir` (see pipeline/run.py's run_pipeline for the contract)."""
    report(0.0, "levels", force=True)
    later = None  # a live run of a long enough video chooses its levels while its first segment encodes
    if levelswitch.switches(info, opts):
        rungs, levels_note = plan_ladder(info, opts), None
        later = levelswitch.LevelsLater(src, info, rungs, opts).start()
    else:
        rungs, levels_note = pertitle.choose_levels(src, info, plan_ladder(info, opts), opts)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    if opts.live:
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "master.m3u8").unlink(missing_ok=True)  # a stale master would point at files we overwrite
        work = outdir
    else:
        work = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    live_emit = emit if opts.live else (lambda kind, relpath: None)
    publisher = hls.Publisher(work, opts.live, live_emit)
    result = None
    try:
        result = _transcode(src, work, info, rungs, opts, publisher, report, later)
    finally:
        if later is not None:
            levels_note = later.join()
        if result is None:  # failed (or interrupted): leave nothing behind, above all no master
            if opts.live:
                folders = [spec.name for spec in rungs] + [a.name for a in plan_audio(info)]
                folders += ["thumbnails"]
                remove_written(work, publisher.files, folders)
            else:
                shutil.rmtree(work, ignore_errors=True)
    if levels_note:
        result.notes.insert(0, levels_note)
    if not opts.live:
        publish_built(work, outdir, result.files, emit)
    report(1.0, "done", force=True)
    return result


@dataclass
class _Run:
    """The threads of one run: a worker per video rung (encoder or copier), audio, thumbnails."""

    rungs: list[RenditionSpec]
    video: list[Worker]  # one per rung, in the ladder's order
    audio: dict[int, AudioEncoder]  # by the source's stream index
    thumbnailer: Thumbnailer
    abort: threading.Event

    @property
    def encoders(self) -> list[_RungEncoder]:
        """The rungs fed with decoded frames."""
        return [w for w in self.video if isinstance(w, _RungEncoder)]

    @property
    def workers(self) -> list[Worker]:
        """Every thread to start, stop and join."""
        return self.video + list(self.audio.values())


def _transcode(src: Path, work: Path, info: ProbeResult, rungs: list[RenditionSpec], opts: PipelineOptions,
               publisher: hls.Publisher, report: _Progress, later: levelswitch.LevelsLater | None = None
               ) -> PipelineResult:
    plan, why_not = passthrough.plan_passthrough(src, info, rungs, opts)
    notes = [_passthrough_note(plan, why_not)] if plan or why_not else []
    timeline = plan_timeline(rungs[0].frame_rate, opts, info.duration, plan.starts if plan else None)
    run = _prepare(src, work, info, rungs, opts, publisher, timeline, plan, later)
    frames = _feed(src, info, timeline, opts, run, report)
    report(0.98, "package", force=True)
    _publish(src, work, run, frames, publisher)
    return _result(info, run, opts, publisher, timeline, notes)


def _passthrough_note(plan: passthrough.PassthroughPlan | None, why_not: str) -> str:
    if plan is None:
        return f"passthrough: not used, encoded as usual: {why_not}"
    return (f"passthrough: {plan.rung.name} copied from the upload (H.264 {plan.rung.width}x{plan.rung.height}, "
            f"keyframes every {plan.keyframe_interval:.2f} s, peak {plan.peak // 1000} kbit/s); the other rungs "
            f"start their segments on its keyframes")


def _prepare(src: Path, work: Path, info: ProbeResult, rungs: list[RenditionSpec], opts: PipelineOptions,
             publisher: hls.Publisher, timeline: Timeline, plan: passthrough.PassthroughPlan | None,
             later: levelswitch.LevelsLater | None = None) -> _Run:
    """Register every track with the publisher and build (not start) its thread."""
    rate = timeline.rate
    target = max(1, round(max(timeline.gop, timeline.keyint) / rate))
    abort = threading.Event()
    video: list[Worker] = []
    encoded = [spec for spec in rungs if plan is None or spec is not plan.rung]
    depth = queue_frames(info.coded_width, info.coded_height)  # source pictures each queue may hold
    for spec in rungs:
        track = hls.TrackOutput(name=spec.name, kind="video", target_duration=target,
                                frame_duration=timeline.frame_duration)
        publisher.add_variant(hls.VariantInfo(track=track, width=spec.width, height=spec.height,
                                              frame_rate=float(rate),
                                              planned_peak=max(spec.maxrate, int(spec.bitrate * 1.5))))
        if plan is not None and spec is plan.rung:
            video.append(_CopiedRung(src, info, timeline, track, work, publisher, abort))
        else:
            switch = later if spec.codec == "h264" and spec.crf is not None else None
            video.append(_RungEncoder(spec, opts, timeline, _encoder_threads(spec, encoded), track, work,
                                      publisher, abort, nice=_nice_steps(spec, encoded), queue_size=depth,
                                      levels=switch))
    first = timeline.first / rate
    fragment = max(0.1, float(min(Fraction(1, 2), first / 2, Fraction(timeline.gop, 4) / rate)))
    audio = {plan.stream_index: _audio_encoder(plan, opts, timeline, target, work, publisher, fragment, abort)
             for plan in plan_audio(info)}
    thumbnailer = Thumbnailer(work, info.width, info.height, info.duration, opts.preview_count,
                              publisher.announce, on_start=lambda: lower_priority(5),
                              queue_size=queue_frames(info.coded_width, info.coded_height, most=4))
    return _Run(rungs=rungs, video=video, audio=audio, thumbnailer=thumbnailer, abort=abort)


def _audio_encoder(plan: AudioPlan, opts: PipelineOptions, timeline: Timeline, target: int, work: Path,
                   publisher: hls.Publisher, fragment: float, abort: threading.Event) -> AudioEncoder:
    """Register one audio track with the publisher and build its encoder thread."""
    track = hls.TrackOutput(name=plan.name, kind="audio", target_duration=target)
    publisher.add_audio(hls.AudioRendition(track=track, planned_peak=int(audio_bits(opts.audio_bitrate) * 1.2),
                                           language=plan.language, name=plan.label, default=plan.default))
    return AudioEncoder(opts.audio_bitrate, timeline, track, work, publisher, fragment, abort)


def _feed(src: Path, info: ProbeResult, timeline: Timeline, opts: PipelineOptions, run: _Run,
          report: _Progress, decode: Callable[..., int] | None = None) -> int:
    """Start the threads, decode into them (with `decode`, a chunk's decoder, else the whole file), wait for
    them; raise the first failure. Returns output frames."""
    for worker in run.workers:
        worker.start()
    decoded = False
    frames = 0
    try:
        frames = (decode or _decode)(src, info, timeline, opts, run, report)
        decoded = True
    except Aborted:
        pass  # a worker failed: its error is raised below
    except av.FFmpegError as e:
        raise _as_media_error(e) from e
    finally:
        if not decoded:  # also for what the callbacks raise (even BaseException): stop every thread first
            run.abort.set()
            for worker in run.workers:
                worker.stop()
            for worker in run.workers:
                worker.join()
            run.thumbnailer.abort()
    for worker in run.workers:
        worker.join()
    failed = next((w.error for w in run.workers if w.error is not None), None)
    if failed is not None:
        run.thumbnailer.abort()
        raise _as_media_error(failed) from failed
    if not decoded:
        raise MediaError(f"{src.name}: processing was aborted")
    return frames


def _publish(src: Path, work: Path, run: _Run, frames: int, publisher: hls.Publisher) -> None:
    """Check every rung has segments, drop an audio track that never got any, write the final playlists."""
    empty = [w.track.name for w in run.video if not w.track.segments]
    if empty or frames == 0:
        raise MediaError(f"{src.name}: no video could be encoded")
    for encoder in run.audio.values():
        if not encoder.track.segments:
            # the header promised this track but nothing decodable came: publish the video without it
            publisher.drop_audio(encoder.track.name)
            shutil.rmtree(work / encoder.track.name, ignore_errors=True)
    publisher.finish()


def _result(info: ProbeResult, run: _Run, opts: PipelineOptions, publisher: hls.Publisher,
            timeline: Timeline, notes: list[str]) -> PipelineResult:
    """What the run wrote: rungs with their measured peak and mean bandwidth, audio, thumbnails, files."""
    audio_peak, audio_average = hls.audio_bandwidth(publisher.audios, final=True)
    renditions = []
    for spec, worker in zip(run.rungs, run.video):
        track = worker.track
        sizes = [s.size for s in track.segments]
        renditions.append(RenditionOutput(
            name=spec.name, codec=spec.codec, width=spec.width, height=spec.height, bitrate=spec.bitrate_text,
            bandwidth=track.peak_bandwidth() + audio_peak,
            average_bandwidth=track.average_bandwidth() + audio_average,
            codecs=track.codecs, playlist=track.playlist, segment_count=len(track.segments),
            segment_size=int(sum(sizes) / len(sizes)) if sizes else 0, frame_rate=float(timeline.rate),
            iframe_playlist=track.iframe_playlist, copied=isinstance(worker, _CopiedRung)))
    tracks = audio_outputs(publisher.audios, opts.audio_bitrate)
    files = [f for f in publisher.files if f != "master.m3u8"] + ["master.m3u8"]
    return PipelineResult(probe=info, master="master.m3u8", renditions=renditions,
                          audio=next((a for a in tracks if a.default), None), audio_tracks=tracks,
                          thumbnails=list(run.thumbnailer.outputs), files=files, notes=notes)


def audio_outputs(audios: list[hls.AudioRendition], bitrate: str) -> list[AudioOutput]:
    """The published audio tracks as the run's result lists them."""
    return [AudioOutput(name=a.track.name, playlist=a.track.playlist, codecs=a.track.codecs, bitrate=bitrate,
                        segment_count=len(a.track.segments), bandwidth=a.track.peak_bandwidth(),
                        language=a.language, label=a.name, default=a.default) for a in audios]


def _as_media_error(error: BaseException) -> BaseException:
    if isinstance(error, MediaError):
        return error
    if isinstance(error, av.FFmpegError):
        return MediaError(f"encoding failed: {error}")
    return error


class _FrameClock:
    """Turns decoded frames (any timestamps) into the constant-rate output frames every rung receives."""

    def __init__(self, info: ProbeResult, timeline: Timeline, opts: PipelineOptions, run: _Run,
                 report: _Progress):
        self.info, self.opts, self.run, self.report = info, opts, run, report
        self.frame_duration = timeline.frame_duration
        self.expected = max(1, round(info.duration / self.frame_duration))
        # frames beyond this are a broken timestamp, not video (it would make us emit duplicates forever)
        self.horizon = info.duration * 1.5 + 10
        self.n = 0
        self.pending: av.VideoFrame | None = None
        self.pending_t = 0.0
        self.pending_duration = 0.0
        self.last_t: float | None = None

    def emit_until(self, limit: float) -> None:
        """Send the pending frame as every output frame n with n + 1/2 frame before `limit` (seconds)."""
        pending = self.pending
        src_range = int(pending.color_range or 0) or None
        while (self.n + 0.5) * self.frame_duration < limit:
            item = (pending, self.n, src_range)
            for encoder in self.run.encoders:
                encoder.put(item)
            self.run.thumbnailer.offer(pending, self.n * self.frame_duration, self.frame_duration)
            self.n += 1
        self.report(0.97 * min(1.0, self.n / self.expected), "transcode")

    def take(self, frame: av.VideoFrame) -> None:
        """A decoded frame: the previous one is shown until this one's time."""
        if frame.time is not None:
            t = frame.time - self.info.start_time
        elif self.last_t is not None:
            t = self.last_t + float(1 / self.info.frame_rate)
        else:
            t = 0.0
        if self.last_t is not None and t <= self.last_t:
            return  # a repeated or backward timestamp: keep the frame we have
        if t > self.horizon:
            return
        if self.opts.max_duration and t > self.opts.max_duration + 1:
            raise MediaError(f"the video is longer than the limit of {self.opts.max_duration:.0f} s")
        if self.pending is None:
            t = max(t, 0.0)
        else:
            self.emit_until(t)
        # read before the frame is queued: a rung whose size equals the source's encodes this very frame
        # object and rewrites its pts and time base
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        self.pending, self.pending_t, self.last_t = frame, t, t
        self.pending_duration = duration

    def finish(self, src: Path) -> None:
        """The input ended: show the last frame for its duration; fail a truncated file."""
        if self.pending is None:
            raise MediaError(f"{src.name}: no video frame could be decoded")
        info, last_duration = self.info, self.pending_duration
        end = self.pending_t + (last_duration if 0 < last_duration < 1 else float(1 / info.frame_rate))
        self.emit_until(max(end, self.frame_duration))
        if info.trusted_duration and end < info.duration * 0.95 - 2 * self.frame_duration:
            raise MediaError(f"{src.name}: the file is truncated or damaged: only {end:.1f} s of "
                             f"{info.duration:.1f} s could be decoded")


def _decode(src: Path, info: ProbeResult, timeline: Timeline, opts: PipelineOptions, run: _Run,
            report: _Progress) -> int:
    """Demux and decode the source once, feeding every worker; returns the number of output frames."""
    clock = _FrameClock(info, timeline, opts, run, report)
    prefilter, shrink = _Prefilter(info), _Shrinker(info, run.encoders)
    aligners = {index: AudioAligner(info.start_time, encoder.put) for index, encoder in run.audio.items()}

    def take(frame: av.VideoFrame) -> None:
        for filtered in prefilter.push(frame) if prefilter.active else (frame,):
            clock.take(shrink(filtered))

    _demux(src, info, opts, take, aligners)
    if prefilter.active:
        for filtered in prefilter.push(None):
            clock.take(shrink(filtered))
    clock.finish(src)
    for aligner in aligners.values():
        aligner.push(None)
    for encoder in run.encoders:
        encoder.finish_input()
    for audio in run.audio.values():
        audio.finish_input()
    run.thumbnailer.finish(clock.pending, max(0.0, (clock.n - 1) * clock.frame_duration))
    return clock.n


def _demux(src: Path, info: ProbeResult, opts: PipelineOptions, take: Callable[[av.VideoFrame], None],
           aligners: dict[int, AudioAligner]) -> None:
    """Read the source's video (and audio) packets, decode them, pass the frames on; skip concealable damage."""
    started = time.monotonic()
    errors = 0
    with open_input(src, max_pixels(opts)) as container:
        video = container.streams[info.video_stream_index]
        video.thread_type = "AUTO"
        video.codec_context.thread_count = decoder_threads(info.coded_width, info.coded_height)
        streams = [video] + [container.streams[index] for index in aligners]
        try:
            for packet in container.demux(streams):
                if opts.run_timeout and time.monotonic() - started > opts.run_timeout:
                    raise MediaError(f"processing took longer than {opts.run_timeout} s")
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    # concealable damage in the middle of a file: skip the packet, keep the rest;
                    # broken sound alone never fails a video (the audio is dropped if none decodes)
                    if packet.stream.index in aligners:
                        continue
                    errors += 1
                    if errors > MAX_DECODE_ERRORS:
                        raise MediaError(f"{src.name}: too many decoding errors") from None
                    continue
                aligner = aligners.get(packet.stream.index)
                for frame in decoded:
                    if aligner is not None:
                        aligner.push(frame)
                    else:
                        take(frame)
        except av.FFmpegError:
            pass  # a damaged tail ends the input; the length check decides if that is acceptable
