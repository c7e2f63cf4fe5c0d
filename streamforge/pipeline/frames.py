"""A picture of any moment, made from the HLS output: find the segment, decode it, scale one frame.

The worker's thumbnails come from the one decode pass of the original; a picture of an arbitrary
time asked for later must not touch the original (it may be large, or gone from a cold tier).
One fMP4 segment of a rendition, with its init segment, is a few hundred kilobytes and decodes on
its own (it starts on a keyframe): that is all `jpeg_at` needs. No I/O here: the caller fetches
the playlist and the two segments and stores the JPEG.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
from av.video.reformatter import Interpolation, VideoReformatter

from streamforge.errors import ValidationError
from streamforge.pipeline.thumbnails import encode_jpeg

MIN_WIDTH, MAX_WIDTH = 16, 1920


@dataclass(frozen=True)
class Segment:
    """One media segment of a playlist: its URI (as written) and where it sits on the timeline."""

    uri: str
    start: float
    duration: float


@dataclass(frozen=True)
class MediaPlaylist:
    """What `jpeg_at` needs of a media playlist: the init segment (EXT-X-MAP) and the segments."""

    init_uri: str | None
    segments: tuple[Segment, ...]

    @property
    def duration(self) -> float:
        """The playlist's length in seconds."""
        return sum(s.duration for s in self.segments)


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The init URI and the timed segments of an HLS media playlist (fMP4 or TS)."""
    init, segments, start, pending = None, [], 0.0, None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            attrs = line.split(":", 1)[1]
            for part in attrs.split(","):
                key, _, value = part.partition("=")
                if key.strip() == "URI":
                    init = value.strip().strip('"')
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#") and pending is not None:
            segments.append(Segment(line, start, pending))
            start += pending
            pending = None
    return MediaPlaylist(init, tuple(segments))


def segment_at(playlist: MediaPlaylist, t: float) -> Segment:
    """The segment that shows time `t` (the last one for `t` at or past the end)."""
    if not playlist.segments:
        raise ValidationError("the playlist has no segments")
    for seg in playlist.segments:
        if t < seg.start + seg.duration:
            return seg
    return playlist.segments[-1]


def scaled_size(src_width: int, src_height: int, width: int) -> tuple[int, int]:
    """`width` and the height that keeps the source's proportions (at least 1)."""
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValidationError(f"width must be between {MIN_WIDTH} and {MAX_WIDTH}")
    return width, max(1, round(width * src_height / src_width))


def frame_at(init: bytes, segment: bytes, offset: float) -> av.VideoFrame:
    """The frame shown `offset` seconds after the start of `segment` (decoded with its `init`).

    Times are taken relative to the segment's first picture, so the answer does not depend on
    whether the fragments' decode times (tfdt) start at zero."""
    best, first = None, None
    with av.open(io.BytesIO(init + segment), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sorted(container.decode(stream), key=lambda f: f.pts if f.pts is not None else 0)
    for frame in frames:
        t = float(frame.time) if frame.time is not None else 0.0
        first = t if first is None else first
        if best is None or t - first <= offset + 1e-6:
            best = frame
        else:
            break
    if best is None:
        raise ValidationError("the segment holds no picture")
    return best


def jpeg_at(init: bytes, segment: bytes, offset: float, size: tuple[int, int], quality: int = 3) -> bytes:
    """A JPEG of the frame `offset` seconds into `segment`, scaled to `size` (width, height)."""
    if not math.isfinite(offset) or offset < 0:
        raise ValidationError("the time must be a non-negative number")
    frame = frame_at(init, segment, offset)
    scaled = VideoReformatter().reformat(frame, width=size[0], height=size[1], format="yuvj420p",
                                         interpolation=Interpolation.BICUBIC)
    return encode_jpeg(scaled, quality)
