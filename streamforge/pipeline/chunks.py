"""Chunked encoding: one long video cut on segment boundaries into chunks that several machines encode at once.

A chunk is a range of output frames [start, end) whose start is a segment boundary of the whole video's
timeline. Its encoder sees exactly the output frames an unchunked run would give those frame numbers
(the same constant-rate clock, fed from a keyframe before the chunk), encodes every rung of them as a
video of its own (so a chunk starts with an IDR frame, as an unchunked run's segment does), and its
fragments are then moved onto the whole video's clock: tfdt and the fragment sequence numbers are
shifted by what comes before the chunk, and the segment files take the whole video's numbers. Joined,
the chunks are the unchunked ladder's segments: the same frames, continuous timestamps, one init
segment per rung (checked: every chunk's must be byte for byte the first chunk's).

The audio is never chunked: one pass over the whole file encodes it (and takes the thumbnails), and
`finish_chunked` writes the playlists and master once every chunk is in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av

from streamforge.errors import MediaError
from streamforge.pipeline import hls
from streamforge.pipeline.aac import AudioAligner, audio_bits, plan_audio
from streamforge.pipeline.ladder import PipelineOptions, RenditionSpec, plan_ladder
from streamforge.pipeline.probe import ProbeResult, open_input
from streamforge.pipeline.segments import Timeline, plan_timeline
from streamforge.pipeline.thumbnails import Thumbnailer
from streamforge.pipeline.transcode import (
    FileCallback,
    PipelineResult,
    RenditionOutput,
    _as_media_error,
    _audio_encoder,
    _encoder_threads,
    _feed,
    _FrameClock,
    _nice_steps,
    _Prefilter,
    _Progress,
    _Run,
    _RungEncoder,
    _Shrinker,
    audio_outputs,
)
from streamforge.pipeline.workers import queue_frames

SEEK_BACK = 2.0  # seconds before a chunk's start where its decoding begins (then from the keyframe before)
PAUSE_MOST = 600.0  # seconds the whole audio waits for the first chunk, at most (its holder lets it go on)


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """One chunk: output frames [start, end) (end None: to the end), and the segments before it."""

    index: int
    start: int
    end: int | None
    first_segment: int

    def seconds(self, rate: Fraction) -> tuple[float, float | None]:
        """(start, end) in seconds."""
        return float(self.start / rate), (float(self.end / rate) if self.end is not None else None)


def chunk_options(opts: PipelineOptions) -> PipelineOptions:
    """The options every part of a chunked run uses: no short first segment, no passthrough copy."""
    return dataclasses.replace(opts, live=False, passthrough=False)


def choose_levels(src: Path, info: ProbeResult, opts: PipelineOptions, live: bool = False) -> tuple[list, str | None]:
    """The run's levels, [[rung name, level], ...], chosen once for every chunk (per title in crf mode: one
    probe of the whole video, pipeline/pertitle.py, as an unchunked run that is `live` or not would probe
    it), and the log line."""
    from streamforge.pipeline import pertitle
    chunked = chunk_options(opts)
    rungs, note = pertitle.choose_levels(src, info, plan_ladder(info, chunked), dataclasses.replace(chunked, live=live))
    return [list(pair) for pair in pertitle.levels_of(rungs)], note


def whole_timeline(info: ProbeResult, opts: PipelineOptions) -> tuple[list[RenditionSpec], Timeline]:
    """The ladder and the whole video's segment timeline, as every chunk computes them."""
    opts = chunk_options(opts)
    rungs = plan_ladder(info, opts)
    return rungs, plan_timeline(rungs[0].frame_rate, opts, info.duration)


def plan_chunks(info: ProbeResult, opts: PipelineOptions, chunk_seconds: float, head: bool = False
                ) -> list[ChunkPlan]:
    """Chunks of about `chunk_seconds` on segment boundaries; [] when the video is not longer than two of
    them, `chunk_seconds` is 0, or the input cannot be cut (interlaced: its deinterlacer needs neighbours).
    With `head` (a run published while it encodes) the first chunk is a short first segment alone
    (first_segment_seconds, as an unchunked live run's) and the second the rest of the first segment: the
    master goes out once the first is in, a second after the start instead of a whole chunk later."""
    if chunk_seconds <= 0 or info.kind != "video" or info.duration <= 2 * chunk_seconds or info.interlaced:
        return []
    _, timeline = whole_timeline(info, opts)
    per_chunk = max(1, round(chunk_seconds / float(timeline.gop / timeline.rate))) * timeline.gop
    total = round(info.duration * timeline.rate)
    short = round(float(opts.first_segment_seconds) * timeline.rate) if head else 0
    short = short if 0 < short < timeline.gop else 0
    heads = ([0, short] if short else [0]) if head else []
    # a short tail joins the last chunk
    starts = heads + list(range(timeline.gop if head else 0, total - per_chunk // 2, per_chunk))
    if len(starts) < 2:
        return []
    return [ChunkPlan(index=i, start=s, end=starts[i + 1] if i + 1 < len(starts) else None,
                      first_segment=i if i < len(heads) else s // timeline.gop + max(0, len(heads) - 1))
            for i, s in enumerate(starts)]


# ---------------------------------------------------------------------------------------------
# One chunk


class _ChunkClock(_FrameClock):
    """The run's frame clock, emitting only output frames [start, end), renumbered from 0."""

    def __init__(self, *args, start: int, end: int | None):
        super().__init__(*args)
        self.start, self.end = start, end
        self.n = start

    def emit_until(self, limit: float) -> None:
        pending = self.pending
        src_range = int(pending.color_range or 0) or None
        while (self.n + 0.5) * self.frame_duration < limit and (self.end is None or self.n < self.end):
            for encoder in self.run.encoders:
                encoder.put((pending, self.n - self.start, src_range))
            self.n += 1
        if self.end is not None and self.n >= self.end:
            raise _ChunkDone()
        self.report(0.97 * min(1.0, (self.n - self.start) / max(1, (self.end or self.expected) - self.start)),
                    "transcode")


class _ChunkDone(Exception):
    """Every frame of the chunk went to the encoders: stop decoding."""


def _decode_chunk(src: Path, info: ProbeResult, timeline: Timeline, opts: PipelineOptions, run: _Run,
                  report: _Progress, chunk: ChunkPlan) -> int:
    clock = _ChunkClock(info, timeline, opts, run, report, start=chunk.start, end=chunk.end)
    prefilter, shrink = _Prefilter(info), _Shrinker(info, run.encoders)
    with open_input(src) as container:
        video = container.streams[info.video_stream_index]
        video.thread_type = "AUTO"
        begin = chunk.start / timeline.rate - SEEK_BACK
        if chunk.start > 0 and begin > 0:
            container.seek(int((begin + info.start_time) / video.time_base), stream=video, backward=True,
                           any_frame=False)
        try:
            for frame in container.decode(video):
                for filtered in prefilter.push(frame) if prefilter.active else (frame,):
                    t = (filtered.time or 0.0) - info.start_time
                    if chunk.start > 0 and clock.pending is None and t > (chunk.start + 0.5) / timeline.rate:
                        raise MediaError("the chunk's first picture could not be found: its keyframe is too far back")
                    clock.take(shrink(filtered))
            if prefilter.active:
                for filtered in prefilter.push(None):
                    clock.take(shrink(filtered))
            clock.finish(src)
        except _ChunkDone:
            pass
    for encoder in run.encoders:
        encoder.finish_input()
    return clock.n - chunk.start


def encode_chunk(src: str | Path, outdir: str | Path, info: ProbeResult, opts: PipelineOptions, chunk: ChunkPlan,
                 progress=None, on_file: FileCallback | None = None) -> dict:
    """Encode every rung of one chunk under `outdir` (segment files named as in the whole video); returns
    what `finish_chunked` needs, as JSON: {"frames", "rungs": [{"name", "init", "init_sha256", "codecs",
    "segments": [{"index", "filename", "duration", "size", "iframe_size"}]}]}."""
    src, outdir = Path(src), Path(outdir)
    rungs, timeline = whole_timeline(info, opts)
    report = _Progress(progress)
    emit = on_file or (lambda kind, relpath: None)
    local = _local_timeline(timeline, chunk)
    publisher = hls.Publisher(outdir, False, lambda kind, relpath: None)
    abort = threading.Event()
    target = max(1, round(timeline.gop / timeline.rate))
    encoders = []
    for spec in rungs:
        track = hls.TrackOutput(name=spec.name, kind="video", target_duration=target,
                                frame_duration=timeline.frame_duration, init=f"init_c{chunk.index:04d}.mp4")
        encoders.append(_RungEncoder(spec, chunk_options(opts), local, _encoder_threads(spec, rungs), track, outdir,
                                     publisher, abort, nice=_nice_steps(spec, rungs)))
    thumbs = _NoThumbnails()
    run = _Run(rungs=rungs, video=encoders, audio={}, thumbnailer=thumbs, abort=abort)
    frames = _feed(src, info, local, opts, run, report,
                   decode=lambda *a: _decode_chunk(src, info, timeline, opts, run, report, chunk))
    out = {"index": chunk.index, "frames": frames, "rate": [timeline.rate.numerator, timeline.rate.denominator],
           "gop": timeline.gop, "rungs": []}
    for spec, encoder in zip(rungs, encoders):
        rung = _shift_rung(outdir, encoder.track, timeline, chunk, emit)
        rung.update(codec=spec.codec, width=spec.width, height=spec.height, bitrate=spec.bitrate_text,
                    planned_peak=max(spec.maxrate, int(spec.bitrate * 1.5)))
        out["rungs"].append(rung)
    report(1.0, "done", force=True)
    return out


def _local_timeline(timeline: Timeline, chunk: ChunkPlan) -> Timeline:
    """The whole timeline seen from the chunk's first frame (its boundaries fall on the same pictures)."""
    return dataclasses.replace(timeline, first=timeline.gop, skip_after=timeline.skip_after - chunk.start,
                               skip_until=timeline.skip_until - chunk.start)


class _NoThumbnails:
    def offer(self, *args) -> None:
        pass

    def abort(self) -> None:
        pass


def _shift_rung(outdir: Path, track: hls.TrackOutput, timeline: Timeline, chunk: ChunkPlan, emit) -> dict:
    """Move the rung's segments onto the whole video's clock and numbering; announce them."""
    folder = outdir / track.name
    init = (folder / track.init).read_bytes()
    info = hls.parse_init(init)
    ticks = Fraction(info.timescale) * chunk.start / timeline.rate
    if ticks.denominator != 1:
        raise MediaError(f"{track.name}: the chunk's start is not a whole number of ticks")
    segments = []
    # from the last: a segment's new number is higher than its own, so it never lands on one not yet moved
    for seg in reversed(track.segments):
        index = seg.index + chunk.first_segment
        name = f"seg_{index:05d}.m4s"
        try:
            data = hls.shift_fragments((folder / seg.filename).read_bytes(), int(ticks), chunk.first_segment)
        except ValueError as e:
            raise MediaError(f"{track.name}: a chunk's segment cannot be moved: {e}") from e
        (folder / seg.filename).unlink()
        (folder / name).write_bytes(data)
        segments.insert(0, {"index": index, "filename": name, "duration": seg.duration, "size": len(data),
                            "iframe_size": seg.iframe_size})
    emit("segment", f"{track.name}/{track.init}")
    for seg in segments:
        emit("segment", f"{track.name}/{seg['filename']}")
    digest = hashlib.sha256(hls.without_bitrates(init)).hexdigest()  # a hard rung's chunks may declare other peaks
    return {"name": track.name, "init": track.init, "init_sha256": digest, "codecs": track.codecs,
            "segments": segments}


# ---------------------------------------------------------------------------------------------
# The audio and the thumbnails, whole


def encode_audio(src: str | Path, outdir: str | Path, info: ProbeResult, opts: PipelineOptions,
                 on_file: FileCallback | None = None, early: Callable[[dict], None] | None = None,
                 early_frames: int = 0) -> dict:
    """Every audio track of the whole file (never chunked: no click at a seam), reading only the audio
    streams, so it takes seconds even for an hour. {"audio": [{"name", "language", "label", "default",
    "codecs", "init", "segments"}, ...]} as JSON ([] for a silent video). `early(the same, so far)` is
    called once, from an encoder thread, when every track's segments cover the first `early_frames`
    output frames (a first chunk's master need not wait for the rest)."""
    src, outdir = Path(src), Path(outdir)
    plans = plan_audio(info)
    if not plans:
        return {"audio": []}
    _, timeline = whole_timeline(info, opts)
    early_lock, early_seconds = threading.Lock(), early_frames / timeline.rate if early else None

    def emitted(kind: str, relpath: str) -> None:
        if on_file is not None:
            on_file(kind, relpath)
        nonlocal early_seconds
        with early_lock:
            if early_seconds is not None and kind == "segment" and all(
                    a.track.duration() >= early_seconds - 0.05 for a in publisher.audios):
                early_seconds = None
                early(_audio_json(publisher.audios))

    publisher = hls.Publisher(outdir, False, emitted)
    abort = threading.Event()
    target = max(1, round(timeline.gop / timeline.rate))
    fragment = max(0.1, float(min(Fraction(1, 2), Fraction(timeline.gop, 4) / timeline.rate)))
    encoders = {plan.stream_index: _audio_encoder(plan, opts, timeline, target, outdir, publisher, fragment, abort)
                for plan in plans}
    aligners = {index: AudioAligner(info.start_time, encoder.put) for index, encoder in encoders.items()}
    for encoder in encoders.values():
        encoder.start()
    fed = False
    try:
        _demux_audio(src, aligners)
        for index, encoder in encoders.items():
            aligners[index].push(None)
            encoder.finish_input()
        fed = True
    finally:
        if not fed:  # also for what a callback raised: stop the encoder threads first
            abort.set()
            for encoder in encoders.values():
                encoder.stop()
        for encoder in encoders.values():
            encoder.join()
    failed = next((e.error for e in encoders.values() if e.error is not None), None)
    if failed is not None:
        raise MediaError(f"the audio could not be encoded: {failed}")
    for encoder in encoders.values():
        if not encoder.track.segments:
            publisher.drop_audio(encoder.track.name)
    return _audio_json(publisher.audios)


def _audio_json(audios: list[hls.AudioRendition]) -> dict:
    """Audio tracks as encode_audio returns them (their segments so far)."""
    return {"audio": [{"name": a.track.name, "language": a.language, "label": a.name, "default": a.default,
                       "codecs": a.track.codecs, "init": a.track.init,
                       "segments": [dataclasses.asdict(x) for x in list(a.track.segments)]} for a in audios]}


class WholeAudio:
    """The audio, whole (only its streams are read: 8 s for 10 minutes), encoded beside the chunks: the first
    chunk's master takes its first segments as soon as they cover that chunk (its first `head_frames`
    frames). With `pause`, the encoding then stops until `go()`, so that the first chunk has the cores
    (a first run's; 10 minutes of AAC took one core for the whole of it). A run that fails or is handed
    back does not wait for the rest."""

    def __init__(self, src: Path, outdir: Path, info, opts, on_file, head_frames: int, pause: bool = False):
        self._head: dict = {}
        self._ready, self._go = threading.Event(), threading.Event()
        if not pause:
            self._go.set()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sf-audio")
        self._future = pool.submit(encode_audio, src, outdir, info, opts, on_file, self._early, head_frames)
        pool.shutdown(wait=False)

    def _early(self, audio: dict) -> None:
        self._head.update(audio)
        self._ready.set()
        self._go.wait(PAUSE_MOST)

    def go(self) -> None:
        """Let the encoding go on after the head."""
        self._go.set()

    def head(self) -> dict:
        """The audio so far, once it covers the first chunk (all of it if it ended first)."""
        while True:
            ready = self.head_now()
            if ready is not None:
                return ready
            self._ready.wait(0.1)

    def head_now(self) -> dict | None:
        """head(), or None while the audio does not cover the first chunk yet."""
        if self._future.done():
            return self._future.result()
        return self._head if self._ready.is_set() else None

    def whole(self) -> dict:
        """All of it; raises what its encoding raised."""
        return self._future.result()


def _demux_audio(src: Path, aligners: dict) -> None:
    """Decode the audio streams alone into their aligners; broken sound never fails a video."""
    with open_input(src) as container:
        streams = [container.streams[index] for index in aligners]
        try:
            for packet in container.demux(streams):
                try:
                    for frame in packet.decode():
                        aligners[packet.stream.index].push(frame)
                except av.FFmpegError:
                    continue
        except av.FFmpegError:
            pass


def encode_thumbnails(src: str | Path, outdir: str | Path, info: ProbeResult, opts: PipelineOptions,
                      progress=None, on_file: FileCallback | None = None) -> dict:
    """The thumbnails (cover, previews, timeline sprites) of the whole file: {"thumbnails": [...]}, as JSON.
    Only the keyframe intervals that hold a wanted picture are decoded (thumbnail_pictures)."""
    src, outdir = Path(src), Path(outdir)
    publisher = hls.Publisher(outdir, False, on_file or (lambda kind, relpath: None))
    thumbnailer = Thumbnailer(outdir, info.width, info.height, info.duration, opts.preview_count, publisher.announce,
                              queue_size=queue_frames(info.coded_width, info.coded_height, most=4))
    try:
        last, t = thumbnail_pictures(src, info, thumbnailer, _Progress(progress))
    except BaseException as e:
        thumbnailer.abort()
        if isinstance(e, av.FFmpegError):
            raise _as_media_error(e) from e
        raise
    thumbnailer.finish(last, t)
    return {"thumbnails": [dataclasses.asdict(t) for t in thumbnailer.outputs]}


def thumbnail_pictures(src: Path, info: ProbeResult, thumbnailer: Thumbnailer, report) -> tuple:
    """Offer `thumbnailer` the pictures it wants, decoding only the keyframe intervals that hold one: an
    interval whose next keyframe (at most the longest interval seen so far away) comes before the next
    wanted picture is skipped unread (its packets never reach the decoder). A 10-minute video's thumbnails
    take a fraction of a whole decode, which a chunked run's holder would otherwise do alone at the end.
    Returns the last picture offered and its output time."""
    prefilter = _Prefilter(info)
    step = 1 / float(info.frame_rate) if info.frame_rate else 0.04
    last, last_t, key_at, longest, skipping = None, 0.0, None, 0.0, False

    def offer(frames) -> None:
        nonlocal last, last_t
        for frame in frames:
            last, last_t = frame, (frame.time or 0.0) - info.start_time
            thumbnailer.offer(frame, last_t, step)

    with open_input(src) as container:
        stream = container.streams[info.video_stream_index]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                t = float(packet.pts * stream.time_base) - info.start_time
                longest = max(longest, t - key_at) if key_at is not None else longest
                key_at = t
                wanted = thumbnailer.next_wanted()
                if wanted is None:
                    break
                skipping = longest > 0 and t + longest <= wanted + step / 2  # the next keyframe still comes first
                report(min(0.99, t / max(info.duration, 0.001)), "thumbnails")
            if skipping and packet.size:
                continue
            for frame in stream.codec_context.decode(packet):
                offer(prefilter.push(frame) if prefilter.active else (frame,))
        if prefilter.active:
            offer(prefilter.push(None))
    return last, last_t


def encode_audio_and_thumbnails(src: str | Path, outdir: str | Path, info: ProbeResult, opts: PipelineOptions,
                                progress=None, on_file: FileCallback | None = None) -> dict:
    """Both whole passes: {"audio": ..., "thumbnails": [...]}."""
    return {**encode_audio(src, outdir, info, opts, on_file),
            **encode_thumbnails(src, outdir, info, opts, progress, on_file)}


# ---------------------------------------------------------------------------------------------
# Finishing


def finish_chunked(outdir: str | Path, chunks: list[dict], whole: dict, audio_bitrate: str,
                   duration: float) -> PipelineResult:
    """Write every rung's playlists and the master over the chunks' segments (in chunk order) and the whole
    pass's audio; MediaError when a chunk is missing or its rungs do not join the first chunk's."""
    outdir = Path(outdir)
    chunks = sorted(chunks, key=lambda c: c["index"])
    if not chunks or [c["index"] for c in chunks] != list(range(len(chunks))):
        raise MediaError("a chunk is missing: the ladder cannot be finished")
    publisher = _publisher(outdir, False, chunks, whole, audio_bitrate, lambda kind, relpath: None)
    for track in publisher._tracks():
        (outdir / track.name).mkdir(parents=True, exist_ok=True)
    publisher.finish()
    rate = Fraction(*chunks[0]["rate"])
    audio_peak, audio_avg = hls.audio_bandwidth(publisher.audios, final=True)
    renditions = []
    for rung, v in zip(chunks[0]["rungs"], publisher.variants):
        sizes = [s.size for s in v.track.segments]
        renditions.append(RenditionOutput(
            name=rung["name"], codec=rung["codec"], width=rung["width"], height=rung["height"], bitrate=rung["bitrate"],
            bandwidth=v.track.peak_bandwidth() + audio_peak, average_bandwidth=v.track.average_bandwidth() + audio_avg,
            codecs=v.track.codecs, playlist=v.track.playlist, segment_count=len(sizes),
            segment_size=int(sum(sizes) / max(1, len(sizes))), frame_rate=float(rate),
            iframe_playlist=v.track.iframe_playlist))
    tracks = audio_outputs(publisher.audios, audio_bitrate)
    thumbnails = [_thumbnail(t) for t in whole.get("thumbnails", [])]
    files = [f"{t.name}/{t.init}" for t in publisher._tracks()]
    files += [f"{t.name}/{s.filename}" for t in publisher._tracks() for s in t.segments] + [t.path for t in thumbnails]
    files += [f for f in publisher.files if f != "master.m3u8"] + ["master.m3u8"]
    notes = [f"chunked: {len(chunks)} chunks of about {math.ceil(chunks[0]['frames'] / rate)} s, joined into one "
             f"track per rung"]
    return PipelineResult(probe=SimpleNamespace(duration=duration), master="master.m3u8", renditions=renditions,
                          audio=next((a for a in tracks if a.default), None), audio_tracks=tracks,
                          thumbnails=thumbnails, files=list(dict.fromkeys(files)), notes=notes)


def _publisher(outdir: Path, live: bool, chunks: list[dict], whole: dict, audio_bitrate: str, emit) -> hls.Publisher:
    """A publisher over the chunks' video segments (each rung joined in chunk order) and the whole audio."""
    publisher = hls.Publisher(outdir, live, emit)
    rate = Fraction(*chunks[0]["rate"])
    target = max(1, round(chunks[0]["gop"] / rate))
    for i, first in enumerate(chunks[0]["rungs"]):
        parts = [c["rungs"][i] for c in chunks]
        if any(p["name"] != first["name"] or p["init_sha256"] != first["init_sha256"] for p in parts):
            raise MediaError(f"{first['name']}: the chunks' init segments differ; they cannot be joined into one track")
        track = hls.TrackOutput(name=first["name"], kind="video", target_duration=target,
                                frame_duration=float(1 / rate), init=first["init"], codecs=first["codecs"])
        if not live:
            track.segments = [hls.Segment(**s) for p in parts for s in p["segments"]]
        publisher.add_variant(hls.VariantInfo(track=track, width=first["width"], height=first["height"],
                                              frame_rate=float(rate), planned_peak=first["planned_peak"]))
    for a in whole.get("audio") or []:
        track = hls.TrackOutput(name=a["name"], kind="audio", target_duration=target, init=a["init"],
                                codecs=a["codecs"])
        if not live:
            track.segments = [hls.Segment(**s) for s in a["segments"]]
        publisher.add_audio(hls.AudioRendition(track=track, planned_peak=int(audio_bits(audio_bitrate) * 1.2),
                                               language=a["language"], name=a["label"], default=a["default"]))
    return publisher


def _thumbnail(values: dict):
    from streamforge.pipeline.thumbnails import ThumbnailOutput
    return ThumbnailOutput(**values)


def first_chunk_master(outdir: str | Path, first: dict, whole: dict, audio_bitrate: str) -> list[str]:
    """Playable early: EVENT playlists over the first chunk's segments and the audio, and the master; returns
    the files written (playlists first, master last)."""
    outdir = Path(outdir)
    written: list[str] = []
    publisher = _publisher(outdir, True, [first], whole, audio_bitrate, lambda kind, relpath: written.append(relpath))
    feed = [(v.track, first["rungs"][i]["segments"]) for i, v in enumerate(publisher.variants)]
    feed += [(a.track, w["segments"]) for a, w in zip(publisher.audios, whole.get("audio") or [])]
    for track, segments in feed:
        (outdir / track.name).mkdir(parents=True, exist_ok=True)
        for s in segments:
            track.segments.append(hls.Segment(**s))
            publisher.on_segment(track, track.segments[-1])
    files = [f for f in dict.fromkeys(written) if f != "master.m3u8" and not f.endswith(".m4s") and
             not f.endswith(".mp4")]
    return files + (["master.m3u8"] if "master.m3u8" in written else [])
