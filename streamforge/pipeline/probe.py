"""Probe an upload safely: only real media demuxers, only the local file, limits enforced.

FFmpeg will follow whatever an HLS playlist, a concat script or an image-sequence pattern names
(local files, URLs), so those demuxers are never allowed: the format whitelist below lists only
demuxers that read nothing but the file itself, and `protocol_whitelist=file` keeps even those
on the local file.

Still images (PNG, JPEG, WebP, BMP, TIFF, a one-frame GIF) are refused with a clear MediaError:
a video platform has nothing useful to make of one picture. An animated GIF is accepted and
becomes a short silent video. Audio-only files (MP3, M4A, FLAC, WAV, Ogg/Opus; cover art is not
a video stream) probe as `kind="audio"` with no picture: streamforge.pipeline.audio packages them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streamforge.errors import MediaError
from streamforge.pipeline.languages import normalise_language
from streamforge.pipeline.workers import decoder_threads

# Demuxers that read only the one file they are given. Notably absent: hls, concat, image2,
# dash, tee, subfile, ffmetadata, sdp, rtsp, and every network or "playlist" format.
MEDIA_DEMUXERS = (
    "mov", "matroska", "avi", "mpegts", "flv", "ogg", "asf", "mpeg", "mxf", "dv", "nut", "ivf",
    "gif", "h264", "hevc", "m4v", "mpegvideo", "yuv4mpegpipe", "mjpeg", "rm",
    "wav", "w64", "aiff", "mp3", "aac", "flac",
)
# Single-picture demuxers: opened only so that a still image gets a clear message.
IMAGE_DEMUXERS = ("png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe", "jpegls_pipe",
                  "pgm_pipe", "ppm_pipe", "qoi_pipe", "j2k_pipe")
FORMAT_WHITELIST = ",".join(MEDIA_DEMUXERS + IMAGE_DEMUXERS)

# Passed to every av.open of an upload: the whitelists, and no dref/absolute-path following in mov.
OPEN_OPTIONS = {
    "format_whitelist": FORMAT_WHITELIST,
    "protocol_whitelist": "file",
    "enable_drefs": "0",
    "use_absolute_path": "0",
}
# Formats whose header duration we trust enough to call a much shorter decode "truncated".
TRUSTED_DURATION_FORMATS = ("mov", "mp4")
MAX_AUDIO_TRACKS = 8
# handler names muxers write on every track: not a title
_GENERIC_HANDLERS = {"soundhandler", "sound handler", "core media audio", "isomedia file produced by google",
                     "mono", "stereo", "audio"}
STANDARD_RATES = tuple(Fraction(n, d) for n, d in (
    (24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (48, 1), (50, 1), (60000, 1001), (60, 1),
    (15, 1), (12, 1), (10, 1), (20, 1), (120, 1), (100, 1)))


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of an upload: its language as BCP 47, its title, whether it plays by default."""

    index: int
    language: str  # "und" when the file does not say
    title: str
    default: bool
    channels: int = 2


@dataclass(frozen=True)
class ProbeResult:
    """What the pipeline needs to know about an upload before decoding it."""

    path: str
    format_name: str
    duration: float  # seconds, from the first video frame to the end
    width: int  # display width: after sample aspect ratio and rotation
    height: int  # display height: after sample aspect ratio and rotation
    coded_width: int
    coded_height: int
    sample_aspect_ratio: Fraction
    fps: float
    frame_rate: Fraction  # the source's nominal (average) rate
    rotation: int  # degrees counter-clockwise the picture must be turned: 0, 90, 180 or 270
    video_codec: str
    pix_fmt: str
    interlaced: bool
    start_time: float  # seconds: the first video frame's timestamp in the file
    has_audio: bool
    audio_codec: str | None = None
    audio_channels: int = 0
    audio_sample_rate: int = 0
    audio_layout: str | None = None
    stream_count: int = 0
    video_stream_index: int = 0
    audio_stream_index: int | None = None
    bit_rate: int = 0
    kind: str = "video"  # "audio": an audio-only file (width, height and the video fields are 0/empty)
    # text subtitle streams: (stream index, codec name, language tag from the file or "")
    subtitle_streams: tuple = ()
    # every decodable audio stream (up to MAX_AUDIO_TRACKS), in the file's order; the default one's
    # index is audio_stream_index, and the audio_* fields above describe it
    audio_tracks: tuple[AudioTrack, ...] = ()

    @property
    def trusted_duration(self) -> bool:
        """True when the duration comes from a container index we can hold the decode to."""
        return any(name in TRUSTED_DURATION_FORMATS for name in self.format_name.split(","))


def max_pixels(limits) -> int:
    """The decoder's `max_pixels` for `limits` (0: no limit): a picture larger than the [pipeline] box,
    with room for coded sizes and stride alignment, is refused before its buffers are allocated."""
    max_w, max_h = getattr(limits, "max_width", 0), getattr(limits, "max_height", 0)
    return (max_w + 128) * (max_h + 128) if max_w and max_h else 0


def open_input(path: str | Path, pixels: int = 0) -> av.container.InputContainer:
    """Open an upload for reading with the demuxer and protocol whitelists; MediaError if refused.

    `pixels` (see max_pixels) also bounds the decoders, those av.open runs to find the streams'
    parameters (it decodes up to seven H.264 frames) included: a larger picture is never allocated."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty")
    try:
        # "file:" keeps a name such as "http:x" or "concat:a|b" from being read as a protocol
        options = dict(OPEN_OPTIONS, **({"max_pixels": str(pixels)} if pixels else {}))
        return av.open("file:" + str(path.resolve()), options=options)
    except av.FFmpegError as e:
        # a demuxer outside the whitelist is refused with EINVAL: say what that means
        reason = "unknown or unsupported format" if getattr(e, "errno", None) == 22 else _short(e)
        raise MediaError(f"{path.name}: not a video file we can read ({reason})") from None


def probe(path: str | Path, limits=None) -> ProbeResult:
    """Inspect `path` and return a ProbeResult; raise MediaError for anything that is not a usable video.

    `limits` is duck-typed: any object with max_duration, max_width, max_height and max_streams
    (PipelineOptions or the [pipeline] config); None skips the limits.
    """
    path = Path(path)
    with open_input(path, max_pixels(limits)) as container:
        result = _inspect(path, container, limits)
    if limits is not None:
        check_limits(result, limits)
    return result


def _check_size(width: int, height: int, limits) -> None:
    """MediaError when a width x height picture does not fit the [pipeline] box (either orientation)."""
    max_w, max_h = getattr(limits, "max_width", 0), getattr(limits, "max_height", 0)
    long_side, short_side = max(width, height), min(width, height)
    # the limit is an orientation-free box: an 8192x4320 limit accepts a 4320x8192 portrait video
    if max_w and max_h and (long_side > max(max_w, max_h) or short_side > min(max_w, max_h)):
        raise MediaError(f"the picture is too large: {width}x{height} (the limit is {max_w}x{max_h})")


def check_header(container, video, limits) -> None:
    """The limits a stream's header already tells (picture size, stream count), before any frame is decoded."""
    max_streams = getattr(limits, "max_streams", 0)
    if max_streams and len(container.streams) > max_streams:
        raise MediaError(f"too many streams: {len(container.streams)} (the limit is {max_streams})")
    ctx = video.codec_context
    sar = ctx.sample_aspect_ratio or video.sample_aspect_ratio
    sar = Fraction(sar) if sar and Fraction(1, 4) <= sar <= 4 else Fraction(1)
    # the coded size (a display width from the SAR may only be larger)
    _check_size(max(ctx.width, round(ctx.width * sar)), ctx.height, limits)


def check_limits(result: ProbeResult, limits) -> None:
    """Raise MediaError when the probe exceeds the configured duration, size or stream count."""
    max_streams = getattr(limits, "max_streams", 0)
    if max_streams and result.stream_count > max_streams:
        raise MediaError(f"too many streams: {result.stream_count} (the limit is {max_streams})")
    _check_size(result.width, result.height, limits)
    max_duration = getattr(limits, "max_duration", 0)
    if max_duration and result.duration > max_duration:
        raise MediaError(f"the video is too long: {result.duration:.0f} s (the limit is {max_duration:.0f} s)")


def _short(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.split(":")[0].strip().rstrip(".") or type(error).__name__


def _declared_size(path: Path, index: int) -> tuple[int, int]:
    """The picture size stream `index`'s header declares, read without decoding a frame (0, 0 if none)."""
    try:
        with av.open("file:" + str(path.resolve()), options=dict(OPEN_OPTIONS, skip_frame="all")) as container:
            ctx = container.streams[index].codec_context
            return ctx.width or 0, ctx.height or 0
    except (av.FFmpegError, IndexError):
        return 0, 0


def _inspect(path: Path, container, limits=None) -> ProbeResult:
    name = path.name
    fmt = container.format.name
    if fmt in IMAGE_DEMUXERS:
        raise MediaError(f"{name}: a still image ({fmt.removesuffix('_pipe')}), not a video")
    videos = [s for s in container.streams.video
              if not (s.disposition & av.stream.Disposition.attached_pic)]
    audios = list(container.streams.audio)
    subtitles = tuple((s.index, s.codec_context.name if s.codec_context else "", (s.metadata or {}).get("language", ""))
                      for s in container.streams.subtitles)
    if not videos:
        if audios:
            return _inspect_audio(path, container, audios, subtitles)
        raise MediaError(f"{name}: no video stream")
    video = videos[0]
    # the audio streams we can decode, if any: a track in an unknown codec is no reason to fail
    tracks = audio_tracks(audios)
    audio = _default_stream(audios, tracks)
    vctx = video.codec_context
    if not vctx.width or not vctx.height:
        if limits is not None:  # the decoder dropped a size over max_pixels: say so, from the header
            _check_size(*_declared_size(path, video.index), limits)
        raise MediaError(f"{name}: the video stream has no picture size")
    if limits is not None:
        check_header(container, video, limits)

    # a huge picture is decoded on one thread (each frame thread holds a picture of its own)
    video.codec_context.thread_count = decoder_threads(vctx.width, vctx.height)
    first, count = _first_frames(container, video)
    if first is None:
        raise MediaError(f"{name}: no video frame could be decoded")
    if fmt == "gif" and count < 2:
        raise MediaError(f"{name}: a still image (gif), not a video")

    rotation = round(first.rotation or 0) % 360
    rotation = min((0, 90, 180, 270, 360), key=lambda r: abs(r - rotation)) % 360
    sar = vctx.sample_aspect_ratio or video.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar > 0 else Fraction(1)
    # absurd SARs (broken headers) would make absurd ladders; treat them as square
    if not Fraction(1, 4) <= sar <= 4:
        sar = Fraction(1)
    coded_w, coded_h = first.width, first.height
    display_w, display_h = max(2, round(coded_w * sar)), coded_h
    if rotation in (90, 270):
        display_w, display_h = display_h, display_w

    start = first.time if first.time is not None else 0.0
    duration = _duration(container, video, start)
    if duration <= 0:
        duration = _scan_duration(path, video.index, start, max_pixels(limits))
    if not duration or duration <= 0 or not math.isfinite(duration):
        raise MediaError(f"{name}: the video has no duration")

    interlaced = bool(first.interlaced_frame) or str(getattr(vctx, "field_order", "") or "").lower() in (
        "tt", "bb", "tb", "bt")
    return ProbeResult(
        path=str(path),
        format_name=fmt,
        duration=float(duration),
        width=int(display_w),
        height=int(display_h),
        coded_width=coded_w,
        coded_height=coded_h,
        sample_aspect_ratio=sar,
        fps=float(_nominal_rate(video, duration)),
        frame_rate=_nominal_rate(video, duration),
        rotation=rotation,
        video_codec=vctx.name,
        pix_fmt=first.format.name,
        interlaced=interlaced,
        start_time=float(start),
        has_audio=audio is not None,
        audio_codec=audio.codec_context.name if audio else None,
        audio_channels=audio.codec_context.channels if audio else 0,
        audio_sample_rate=audio.codec_context.sample_rate if audio else 0,
        audio_layout=audio.codec_context.layout.name if audio else None,
        stream_count=len(container.streams),
        video_stream_index=video.index,
        audio_stream_index=audio.index if audio else None,
        bit_rate=int(container.bit_rate or 0),
        subtitle_streams=subtitles,
        audio_tracks=tracks,
    )


def _inspect_audio(path: Path, container, audios: list, subtitles: tuple) -> ProbeResult:
    """An audio-only file: its decodable audio streams (the default one first in the fields) and its duration."""
    tracks = audio_tracks(audios)
    audio = _default_stream(audios, tracks)
    if audio is None:
        raise MediaError(f"{path.name}: no audio stream that can be decoded")
    tb = audio.time_base
    start = float(audio.start_time * tb) if audio.start_time is not None and tb else 0.0
    duration = float(audio.duration * tb) if audio.duration and tb else 0.0
    if duration <= 0 and container.duration:
        duration = container.duration / av.time_base
    if duration <= 0:
        duration = _scan_duration(path, audio.index, start)
    if not duration or duration <= 0 or not math.isfinite(duration):
        raise MediaError(f"{path.name}: the audio has no duration")
    ctx = audio.codec_context
    return ProbeResult(
        path=str(path), format_name=container.format.name, duration=float(duration), width=0, height=0,
        coded_width=0, coded_height=0, sample_aspect_ratio=Fraction(1), fps=0.0, frame_rate=Fraction(0),
        rotation=0, video_codec="", pix_fmt="", interlaced=False, start_time=start, has_audio=True,
        audio_codec=ctx.name, audio_channels=ctx.channels, audio_sample_rate=ctx.sample_rate,
        audio_layout=ctx.layout.name, stream_count=len(container.streams), video_stream_index=-1,
        audio_stream_index=audio.index, bit_rate=int(container.bit_rate or 0), kind="audio",
        subtitle_streams=subtitles, audio_tracks=tracks)


def audio_tracks(streams: list) -> tuple[AudioTrack, ...]:
    """The decodable audio streams (at most MAX_AUDIO_TRACKS) with BCP 47 languages; exactly one default:
    the first stream the file flags default, else the first."""
    usable = [s for s in streams if _decodable(s)][:MAX_AUDIO_TRACKS]
    flagged = next((s.index for s in usable if s.disposition & av.stream.Disposition.default),
                   usable[0].index if usable else None)
    tracks = []
    for s in usable:
        meta = s.metadata or {}
        title = " ".join(str(meta.get("title") or meta.get("handler_name") or "").split())[:100]
        if title.lower() in _GENERIC_HANDLERS:
            title = ""  # muxers' placeholder handler names say nothing to a viewer
        tracks.append(AudioTrack(index=s.index, language=normalise_language(meta.get("language")),
                                 title=title, default=s.index == flagged,
                                 channels=s.codec_context.channels))
    return tuple(tracks)


def _default_stream(streams: list, tracks: tuple[AudioTrack, ...]):
    """The stream of the default track, or None when no audio stream decodes."""
    index = next((t.index for t in tracks if t.default), None)
    return next((s for s in streams if s.index == index), None)


def _decodable(stream) -> bool:
    try:
        return stream.codec_context is not None and bool(stream.codec_context.name) and \
            stream.codec_context.channels > 0
    except (av.FFmpegError, AttributeError, ValueError):
        return False


def _first_frames(container, video, limit: int = 2):
    """Decode the first frame (and count up to `limit` frames); (None, 0) when nothing decodes."""
    first, count, errors = None, 0, 0
    try:
        for packet in container.demux(video):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                if errors > 50:
                    break
                continue
            for frame in frames:
                first = first or frame
                count += 1
            if count >= limit:
                break
    except av.FFmpegError:
        pass
    return first, count


def _duration(container, video, start: float) -> float:
    """Seconds from the first frame to the end of the video (0 if nothing says).

    MP4's stream header is exact. Elsewhere the container's duration means different things (the
    end time in Matroska, end minus start in MPEG-TS), so read the last packets' timestamps instead.
    """
    tb = video.time_base
    if container.format.name.startswith("mov") and video.duration and tb:
        stream_start = float(video.start_time * tb) if video.start_time is not None else 0.0
        return stream_start + float(video.duration * tb) - start
    end = _end_by_seeking(container, video)
    if end > start:
        return end - start
    if container.duration and container.start_time is not None:
        return container.duration / av.time_base
    return 0.0


def _end_by_seeking(container, video) -> float:
    """The end time of the video stream from the packets after a seek to the end (0 if that fails)."""
    tb = video.time_base
    if not tb:
        return 0.0
    try:
        container.seek(2**62, stream=video, backward=True, any_frame=False)
    except (av.FFmpegError, OverflowError):
        try:
            container.seek(int(1e12), backward=True)
        except av.FFmpegError:
            return 0.0
    end = 0.0
    try:
        for count, packet in enumerate(container.demux(video)):
            if packet.pts is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
            if count > 100_000:
                break
    except av.FFmpegError:
        pass
    return end


def _scan_duration(path: Path, index: int, start: float, pixels: int = 0) -> float:
    """Read every packet (no decoding) when no header states the duration.

    Raw elementary streams (.h264, .hevc, .m4v) carry no timestamps at all: count their packets.
    """
    end, count = 0.0, 0
    with open_input(path, pixels) as container:
        stream = container.streams[index]
        tb = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                if packet.pts is not None and tb:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
        except av.FFmpegError:
            pass
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if end > start:
        return end - start
    return count / float(rate) if count and rate else 0.0


def _nominal_rate(video, duration: float) -> Fraction:
    """The source's frame rate as a Fraction, snapped to a standard rate when it is within 1%."""
    rate = video.average_rate or video.guessed_rate or video.base_rate
    if (not rate or rate <= 0 or rate > 1000) and video.frames and duration > 0:
        rate = Fraction(video.frames / duration).limit_denominator(1001)
    if not rate or rate <= 0 or rate > 1000:
        rate = Fraction(25)
    rate = Fraction(rate)
    # variable-rate phone clips average 29.87 or 24.6 fps: call those 30000/1001 and 25
    nearest = min(STANDARD_RATES, key=lambda standard: abs(rate - standard) / standard)
    if abs(rate - nearest) / nearest < 0.03:
        return nearest
    return Fraction(round(rate)) if rate >= 10 else rate.limit_denominator(1001)
