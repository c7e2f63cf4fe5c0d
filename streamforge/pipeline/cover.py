"""A cover picture from an image file someone uploaded: decoded (JPEG, PNG, WebP, ...) and re-encoded as a
JPEG no wider than asked, so what is served is always our own encoder's output, never the sent bytes."""
from __future__ import annotations

import io

import av

from streamforge.errors import ValidationError
from streamforge.pipeline.thumbnails import encode_jpeg

MAX_PIXELS = 40_000_000  # a larger picture is refused from its header, before it is decoded


def image_to_jpeg(data: bytes, max_width: int = 1280) -> tuple[bytes, int, int]:
    """The image in `data` as a JPEG at most `max_width` wide (even sides); its bytes, width and height."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise ValidationError("the file is not a picture")
            ctx = stream.codec_context
            if ctx.width and ctx.height and ctx.width * ctx.height > MAX_PIXELS:
                raise ValidationError(f"the picture is {ctx.width}x{ctx.height}: at most {MAX_PIXELS} pixels")
            frame = next(container.decode(stream), None)
    except (av.FFmpegError, StopIteration, UnicodeDecodeError):
        raise ValidationError("the file is not a picture this server can read (JPEG, PNG or WebP)") from None
    if frame is None:
        raise ValidationError("the file is not a picture")
    width = min(max_width, frame.width)
    height = max(2, round(frame.height * width / frame.width))
    width, height = width - width % 2, height - height % 2
    return encode_jpeg(frame.reformat(width=width, height=height, format="yuvj420p")), width, height
