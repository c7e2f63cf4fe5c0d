"""Audio-only uploads (MP3, M4A/AAC, FLAC, WAV, Ogg/Opus): an AAC HLS rendition per stream and a cover image.

The audio is decoded once, resampled to stereo 48 kHz and encoded to AAC by the same encoder thread
a video's audio rendition uses; the master lists that rendition as its only variant
(`CODECS="mp4a.40.2"`). The cover is the file's embedded artwork (an attached picture), or else a
waveform drawn from the decoded samples' peaks.
"""
from __future__ import annotations

import array
import shutil
import tempfile
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from streamforge.errors import MediaError
from streamforge.pipeline import hls
from streamforge.pipeline.aac import AudioAligner, AudioEncoder, audio_bits, plan_audio
from streamforge.pipeline.ladder import PipelineOptions, fit_box
from streamforge.pipeline.placement import publish_built
from streamforge.pipeline.probe import ProbeResult, open_input
from streamforge.pipeline.segments import Timeline
from streamforge.pipeline.thumbnails import COVER, ThumbnailOutput, encode_jpeg
from streamforge.pipeline.transcode import PipelineResult, RenditionOutput, audio_outputs
from streamforge.pipeline.workers import Aborted

COVER_PATH = "thumbnails/cover.jpg"
WAVE_SIZE = (640, 360)
WAVE_BACKGROUND = (17, 24, 39)
WAVE_COLOUR = (96, 165, 250)


def audio_master(audios: list[hls.AudioRendition], final: bool) -> str:
    """The master of an audio-only upload: one variant, the default AAC rendition; with several tracks the
    others are the alternatives of its audio group (the default one is carried by the variant itself)."""
    main = next(a for a in audios if a.default)
    track = main.track
    peak, average = hls.audio_bandwidth(audios, final)
    attrs = f'BANDWIDTH={max(1, peak)},AVERAGE-BANDWIDTH={max(1, average)},CODECS="{track.codecs or "mp4a.40.2"}"'
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{hls.PLAYLIST_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if len(audios) > 1:
        lines += hls.audio_media_lines(audios, in_variant=track.playlist)
        attrs += ',AUDIO="audio"'
    return "\n".join(lines + [f"#EXT-X-STREAM-INF:{attrs}", track.playlist]) + "\n"


class AudioPublisher(hls.Publisher):
    """hls.Publisher whose master lists the default audio rendition as the variant."""

    def _master(self, final: bool) -> str:
        return audio_master(self.audios, final)


class _Peaks:
    """The loudest sample of every 1024-sample frame (channel 0): enough to draw a waveform."""

    def __init__(self):
        self.values = array.array("f")

    def add(self, frame: av.AudioFrame) -> None:
        samples = array.array("f", bytes(frame.planes[0])[:frame.samples * 4])
        self.values.append(max(max(samples, default=0.0), -min(samples, default=0.0)))


def run_audio_pipeline(src: Path, outdir: Path, info: ProbeResult, opts: PipelineOptions,
                       report: Callable[..., None], emit: Callable[[str, str], None]) -> PipelineResult:
    """Package an audio-only file under `outdir` (built aside, moved into place), announcing every file."""
    outdir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    try:
        result = _package(src, work, info, opts, report)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    publish_built(work, outdir, result.files, emit)
    report(1.0, "done", force=True)
    return result


def _package(src: Path, work: Path, info: ProbeResult, opts: PipelineOptions, report) -> PipelineResult:
    seconds = max(1, round(float(opts.segment_seconds)))
    timeline = Timeline(rate=Fraction(1), gop=seconds, first=seconds)
    publisher = AudioPublisher(work, live=False, emit=lambda kind, relpath: None)
    abort = threading.Event()
    encoders = {}
    for plan in plan_audio(info):
        track = hls.TrackOutput(name=plan.name, kind="audio", target_duration=seconds)
        publisher.add_audio(hls.AudioRendition(track=track, planned_peak=int(audio_bits(opts.audio_bitrate) * 1.2),
                                               language=plan.language, name=plan.label, default=plan.default))
        encoders[plan.stream_index] = AudioEncoder(opts.audio_bitrate, timeline, track, work, publisher, 0.5, abort)
    peaks = _Peaks()
    _encode(src, info, encoders, peaks, report, abort)
    for index, encoder in encoders.items():
        if not encoder.track.segments and index != info.audio_stream_index:
            publisher.drop_audio(encoder.track.name)  # a broken extra track is left out, not fatal
            shutil.rmtree(work / encoder.track.name, ignore_errors=True)
    track = encoders[info.audio_stream_index].track
    if not track.segments:
        raise MediaError(f"{src.name}: no audio could be decoded")
    publisher.finish()
    cover = write_cover(src, work, peaks.values)
    sizes = [s.size for s in track.segments]
    rendition = RenditionOutput(
        name="audio", codec="aac", width=0, height=0, bitrate=opts.audio_bitrate,
        bandwidth=track.peak_bandwidth(), average_bandwidth=track.average_bandwidth(), codecs=track.codecs,
        playlist=track.playlist, segment_count=len(track.segments), segment_size=int(sum(sizes) / len(sizes)),
        frame_rate=0.0)
    tracks = audio_outputs(publisher.audios, opts.audio_bitrate)
    files = [f for f in publisher.files if f != "master.m3u8"] + [cover.path, "master.m3u8"]
    return PipelineResult(probe=info, master="master.m3u8", renditions=[rendition],
                          audio=next(a for a in tracks if a.default), audio_tracks=tracks,
                          thumbnails=[cover], files=files)


def _encode(src: Path, info: ProbeResult, encoders: dict[int, AudioEncoder], peaks: _Peaks, report,
            abort: threading.Event) -> None:
    """Run the encoder threads over the decoded streams; MediaError when decoding or encoding fails."""
    for encoder in encoders.values():
        encoder.start()
    try:
        _decode(src, info, encoders, peaks, report)
    except BaseException as e:
        abort.set()
        for encoder in encoders.values():
            encoder.stop()
        for encoder in encoders.values():
            encoder.join()
        failed = next((enc.error for enc in encoders.values() if enc.error is not None), None)
        if isinstance(e, Aborted) and failed is not None:
            raise MediaError(f"encoding the audio failed: {failed}") from failed
        if isinstance(e, av.FFmpegError):
            raise MediaError(f"{src.name}: the audio could not be decoded ({e})") from e
        raise
    for encoder in encoders.values():
        encoder.join()
    failed = next((enc.error for enc in encoders.values() if enc.error is not None), None)
    if failed is not None:
        raise MediaError(f"encoding the audio failed: {failed}") from failed


def _decode(src: Path, info: ProbeResult, encoders: dict[int, AudioEncoder], peaks: _Peaks, report) -> None:
    """Decode the audio streams into their encoders, collecting the default one's peaks; progress by its clock."""
    main = info.audio_stream_index

    def out(frame: av.AudioFrame) -> None:
        peaks.add(frame)
        encoders[main].put(frame)

    aligners: dict[int, AudioAligner] = {}
    with open_input(src) as container:
        errors = 0
        for packet in container.demux([container.streams[index] for index in encoders]):
            index = packet.stream.index
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                if errors > 500:
                    raise MediaError(f"{src.name}: too many damaged audio packets") from None
                continue
            for frame in frames:
                if index not in aligners:
                    # the default track starts at its first sample; the others keep their offset from it
                    t0 = frame.time if index == main and frame.time is not None else info.start_time
                    aligners[index] = AudioAligner(t0, out if index == main else encoders[index].put)
                aligners[index].push(frame)
                if index == main and frame.time is not None:
                    report(0.05 + 0.9 * min(1.0, (frame.time - info.start_time) / max(info.duration, 0.001)),
                           "transcode")
        for aligner in aligners.values():
            aligner.push(None)
    for encoder in encoders.values():
        encoder.finish_input()


def write_cover(src: Path, work: Path, peaks) -> ThumbnailOutput:
    """thumbnails/cover.jpg: the embedded artwork when the file has one, else a waveform of `peaks`."""
    (work / "thumbnails").mkdir(parents=True, exist_ok=True)
    frame = embedded_art(src)
    if frame is None:
        frame = waveform(peaks, *WAVE_SIZE)
    else:
        width, height = fit_box(frame.width, frame.height, 1280, 1280)
        frame = frame.reformat(width=width, height=height, format="yuvj420p")
    (work / COVER_PATH).write_bytes(encode_jpeg(frame))
    return ThumbnailOutput(type=COVER, path=COVER_PATH, timestamp=0.0, width=frame.width, height=frame.height)


def embedded_art(src: Path) -> av.VideoFrame | None:
    """The decoded attached picture (ID3 APIC, MP4 covr, FLAC/Vorbis picture), or None."""
    try:
        with open_input(src) as container:
            pictures = [s for s in container.streams.video if s.disposition & av.stream.Disposition.attached_pic]
            if not pictures:
                return None
            for packet in container.demux(pictures[0]):
                for frame in packet.decode():
                    return frame.reformat(format="yuvj420p") if frame.width >= 2 and frame.height >= 2 else None
    except (av.FFmpegError, MediaError):
        return None
    return None


def waveform(peaks, width: int, height: int) -> av.VideoFrame:
    """A waveform picture: one bar per column, as tall as the loudest sample in its share of the audio."""
    values = list(peaks) or [0.0]
    loudest = max(values) or 1.0
    columns = []
    for x in range(width):
        lo, hi = x * len(values) // width, max(x * len(values) // width + 1, (x + 1) * len(values) // width)
        level = max(values[lo:hi]) / loudest
        half = max(1, round(level * height * 0.42))
        columns.append((height // 2 - half, height // 2 + half))
    background, colour = bytes(WAVE_BACKGROUND), bytes(WAVE_COLOUR)
    frame = av.VideoFrame(width, height, "rgb24")
    plane = frame.planes[0]
    view, stride = memoryview(plane), plane.line_size
    for y in range(height):
        row = b"".join(colour if top <= y <= bottom else background for top, bottom in columns)
        view[y * stride: y * stride + width * 3] = row
    return frame.reformat(format="yuvj420p")


__all__ = ["AudioPublisher", "audio_master", "run_audio_pipeline", "waveform", "write_cover"]
