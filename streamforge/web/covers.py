"""`PUT /api/videos/{id}/cover`: its owner chooses the cover picture, `{"time": seconds}` (that frame of the
video) or `{"image": "<base64 JPEG, PNG or WebP>"}` (at most 4 MiB); 200 VIDEO."""
from __future__ import annotations

import base64
import binascii
import hashlib
import math

from flask import Blueprint
from flask_login import current_user

from streamforge.errors import Conflict, ValidationError
from streamforge.jobs import moments
from streamforge.pipeline.cover import image_to_jpeg
from streamforge.store import covers, users, videos
from streamforge.store.db import ProcessingStatus
from streamforge.web.api import _body
from streamforge.web.common import handle_errors, role_required, store, video_json

bp = Blueprint("covers", __name__, url_prefix="/api")
MAX_IMAGE_BYTES = 4 * 1024 * 1024
COVER_WIDTH = 1280


def _frame_cover(video, t) -> tuple[str, int, int, float]:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValidationError("time must be a number of seconds, 0 or more")
    top = max((r.width for r in videos.renditions_of(video) if r.width), default=0)
    if not top:
        raise Conflict("this video has no picture to choose from (audio only)")
    width = min(COVER_WIDTH, top)
    key = moments.thumbnail_at(store(), video, float(t), width)
    height = next(r.height * width // r.width for r in videos.renditions_of(video) if r.width == top)
    return key, width, height, float(t)


def _image_cover(video, text) -> tuple[str, int, int, float]:
    if not isinstance(text, str):
        raise ValidationError("image must be the picture's bytes in base64")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValidationError(f"the picture is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    try:
        data = base64.b64decode(text.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("image must be the picture's bytes in base64") from None
    jpeg, width, height = image_to_jpeg(data, COVER_WIDTH)
    key = f"{video.s3_processed_path}/thumbnails/cover-{hashlib.sha256(jpeg).hexdigest()[:16]}.jpg"
    store().put_bytes(key, jpeg, "image/jpeg")
    return key, width, height, 0.0


@bp.route("/videos/<video_id>/cover", methods=["PUT"])
@role_required(*users.CAN_UPLOAD)
def choose_cover(video_id: str):
    """Set the cover from a moment of the video or an uploaded picture."""
    video = videos.get_video(current_user.row, video_id)
    if video.status != ProcessingStatus.COMPLETED:
        raise Conflict("the cover can be chosen once the video is processed")
    body = _body()
    if ("time" in body) == ("image" in body):
        raise ValidationError('give either {"time": seconds} or {"image": "<base64>"}')
    key, width, height, t = _frame_cover(video, body["time"]) if "time" in body else _image_cover(video, body["image"])
    covers.set_cover(video, key, store().public_url(key), width, height, t)
    return video_json(videos.get_video(current_user.row, video_id))


def init_app(app) -> None:
    """Register the cover route."""
    app.register_blueprint(bp)


handle_errors(bp)
