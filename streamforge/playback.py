"""Signed playback: short-lived tokens for a video's output, and playlists rewritten to carry them.

The store keeps `processed/` private. A player gets `/play/{id}/master.m3u8?exp=..&sig=..` from the
app; the app serves playlists (and the timeline WebVTT) with every reference rewritten to carry the same
signature, and answers a media file with a redirect to a presigned store URL that lives two minutes.
A leaked link stops working at `exp`, and at once when the video's visibility changes (the signature
covers it). Public videos behind `[cdn] base_url` are fetched unsigned from the app's `/processed/`
route through the CDN instead (web/play.py).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable

URI_ATTR = re.compile(r'URI="([^"]+)"')


def expiry(ttl: int, now: float | None = None, granularity: int = 600) -> int:
    """An expiry at least `ttl` seconds away, rounded up so URLs stay the same (cacheable) for a while."""
    now = time.time() if now is None else now
    return int((now + ttl) // granularity + 1) * granularity


def sign(secret: str, video_id: str, exp: int, epoch: str = "") -> str:
    """The signature of (video, expiry, epoch) under the app's secret key.

    `epoch` is what must not change for the link to stay good: the video's visibility, so that making
    a video private (or unlisted) revokes every link handed out before, at once."""
    message = f"play:{video_id}:{exp}" + (f":{epoch}" if epoch else "")
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")


def verify(secret: str, video_id: str, exp: str | None, sig: str | None, now: float | None = None,
           epoch: str = "") -> bool:
    """True when `sig` is this video's signature for `exp` and `epoch`, and `exp` has not passed."""
    if not exp or not sig or not exp.isdigit():
        return False
    if int(exp) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sign(secret, video_id, int(exp), epoch), sig)


def _is_absolute(uri: str) -> bool:
    return "://" in uri or uri.startswith("/")


def rewrite_playlist(text: str, resolve: Callable[[str], str]) -> str:
    """Replace every relative URI of an m3u8 playlist (lines and URI="" attributes) by `resolve(uri)`."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(stripped if _is_absolute(stripped) else resolve(stripped))
        elif "URI=\"" in line:
            out.append(URI_ATTR.sub(lambda m: f'URI="{m.group(1) if _is_absolute(m.group(1)) else resolve(m.group(1))}"',
                                    line))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def rewrite_vtt(text: str, resolve: Callable[[str], str]) -> str:
    """Replace the image references of a thumbnail WebVTT (`sprite.jpg#xywh=...`) by `resolve(path)`."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and "-->" not in s and not s.startswith(("WEBVTT", "NOTE")) and not _is_absolute(s) and (
                "#xywh=" in s or s.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png", "webp")):
            path, _, frag = s.partition("#")
            out.append(resolve(path) + (f"#{frag}" if frag else ""))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def join(base_dir: str, ref: str) -> str | None:
    """`ref` resolved against the folder `base_dir` (both relative to a video's output); None if it escapes."""
    parts = [p for p in base_dir.split("/") if p] if base_dir else []
    for piece in ref.split("?")[0].split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(piece)
    return "/".join(parts)
