"""A picture of any moment of a video, made on first request from its HLS output and kept in the store.

The smallest rendition at least as wide as asked (else the widest) is read: its media playlist
names the segment that shows the time; that segment and its init segment are fetched and decoded
(streamforge.pipeline.frames), the frame scaled and stored as a JPEG under the video's output
prefix, so a rerun's new output (a new prefix) gets new pictures and the old ones go with it.
"""
from __future__ import annotations

import math
import posixpath

from streamforge.errors import Conflict, NotFound, StreamForgeError, ValidationError
from streamforge.pipeline import frames
from streamforge.store import videos
from streamforge.store.db import ProcessingStatus
from streamforge.store.frames import count_frames, find_frame, save_frame
from streamforge.store.objects import ObjectStore

TIME_STEP_MS = 100  # pictures are made for tenths of a second: at most ten per second per width
MAX_FRAMES_PER_OUTPUT = 2000  # pictures kept per video output: anyone may ask for a public video's


class TooManyFrames(StreamForgeError):
    """The video already has as many made pictures as are kept; the ones made are still served."""

    code = "rate_limited"


def parse_request(time: str | None, width: str | None) -> tuple[float, int]:
    """`time` (seconds, default 0) and `width` (pixels, default 640) from a query string, checked."""
    try:
        t = float(time) if time not in (None, "") else 0.0
    except ValueError:
        raise ValidationError("time must be a number of seconds") from None
    if not math.isfinite(t) or t < 0:
        raise ValidationError("time must be a number of seconds, 0 or more")
    try:
        w = int(width) if width not in (None, "") else 640
    except ValueError:
        raise ValidationError(f"width must be an integer from {frames.MIN_WIDTH} to {frames.MAX_WIDTH}") from None
    if not frames.MIN_WIDTH <= w <= frames.MAX_WIDTH:
        raise ValidationError(f"width must be an integer from {frames.MIN_WIDTH} to {frames.MAX_WIDTH}")
    return t, w


def _source(video, width: int):
    if video.status != ProcessingStatus.COMPLETED:
        raise Conflict("this video has no pictures yet: it is not processed")
    rungs = [r for r in videos.renditions_of(video) if r.width and r.height]
    if not rungs:
        raise Conflict("this video has no pictures: it has no video rendition (audio only)")
    rungs.sort(key=lambda r: (r.width, r.codec != "h264"))
    fit = next((r for r in rungs if r.width >= width), rungs[-1])
    return fit, rungs[-1]


def thumbnail_at(store: ObjectStore, video, t: float, width: int) -> str:
    """The store key of a JPEG of the frame at `t` seconds, `width` wide: made now unless made before."""
    duration = float(video.original_duration or 0)
    if duration and t > duration + 0.05:
        raise ValidationError(f"time must be between 0 and {duration:.2f} (the video's length in seconds)")
    time_ms = int(round(t * 1000 / TIME_STEP_MS)) * TIME_STEP_MS
    known = find_frame(video, time_ms, width)
    if known is not None:
        return known.s3_key
    if count_frames(video) >= MAX_FRAMES_PER_OUTPUT:
        raise TooManyFrames(f"this video has {MAX_FRAMES_PER_OUTPUT} pictures of moments already; ask for one of "
                            f"those (times in tenths of a second, the same widths)")
    rung, top = _source(video, width)
    size = frames.scaled_size(top.width, top.height, width)
    folder = posixpath.dirname(rung.s3_key)
    playlist = frames.parse_media_playlist(store.get_bytes(rung.s3_key).decode("utf-8", "replace"))
    if not playlist.segments:
        raise NotFound("this video's playlist has no segments")
    if time_ms / 1000 > playlist.duration + 0.05:
        raise ValidationError(f"time must be between 0 and {playlist.duration:.2f} (the video's length in seconds)")
    seg = frames.segment_at(playlist, time_ms / 1000)
    init = store.get_bytes(posixpath.join(folder, playlist.init_uri)) if playlist.init_uri else b""
    data = frames.jpeg_at(init, store.get_bytes(posixpath.join(folder, seg.uri)),
                          max(0.0, time_ms / 1000 - seg.start), size)
    key = f"{video.s3_processed_path}/thumbnails/at/{time_ms}-{width}.jpg"
    store.put_bytes(key, data, "image/jpeg")
    save_frame(video, time_ms, width, size[1], key)
    return key
