"""Sharing a video beyond its watch page: the embed player, oEmbed, and the public gallery with search.

- `/embed/{slug}`: the watch page's player alone, for other sites' `<iframe>`s: public and unlisted
  videos only (a private one is never embeddable, not even by its owner); who may frame it is
  `[playback] embed_origins`, sent as CSP `frame-ancestors`.
- `/oembed?url=`: oEmbed 1.0 JSON for a watch or embed URL of a public or unlisted video.
- `/explore` and `GET /api/public/videos?q=&tag=&page=`: everyone's public COMPLETED videos, newest
  first, searched through the full-text index of streamforge.store.search.
"""
from __future__ import annotations

import html
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, g, render_template, request

from streamforge.errors import NotFound, ValidationError
from streamforge.store import search, videos
from streamforge.store.db import ProcessingStatus, Thumbnail, ThumbnailType, Visibility
from streamforge.web.common import (
    app_url,
    cfg,
    error,
    handle_errors,
    last_page,
    media_url,
    page_arg,
    video_json,
)

bp = Blueprint("share", __name__)
api_bp = Blueprint("public_api", __name__, url_prefix="/api/public")
PER_PAGE = 24
PROVIDER = "StreamForge"
DEFAULT_EMBED_WIDTH = 640
PUBLIC_FIELDS = ("id", "slug", "title", "description", "tags", "visibility", "status", "master_playlist_url",
                 "watch_url", "created_at", "processed_at", "views", "watch_seconds")


def embeddable(slug: str):
    """The public or unlisted video with this slug; NotFound for private, deleted or unknown ones."""
    video = videos.get_video_by_slug(slug) if slug else None
    if (video is None or video.status == ProcessingStatus.ARCHIVED
            or video.visibility not in (Visibility.PUBLIC, Visibility.UNLISTED)):
        raise NotFound("no such video")
    return video


def embed_url(video) -> str:
    """The absolute URL of the video's embed player."""
    return f"{app_url()}/embed/{video.slug}"


def frame_size(data: dict, max_width: int | None = None, max_height: int | None = None) -> tuple[int, int]:
    """The player's size for an iframe: 640 wide (or less to fit), in the video's proportions."""
    top = max(data.get("renditions") or [], key=lambda r: r.get("width") or 0, default=None)
    ratio = (top["height"] / top["width"]) if top and top.get("width") and top.get("height") else 9 / 16
    width = min(DEFAULT_EMBED_WIDTH, max_width or DEFAULT_EMBED_WIDTH)
    if max_height and width * ratio > max_height:
        width = max_height / ratio
    return max(1, round(width)), max(1, round(width * ratio))


def iframe_html(video, width: int, height: int) -> str:
    """The `<iframe>` code that embeds the video."""
    return (f'<iframe src="{html.escape(embed_url(video))}" width="{width}" height="{height}" '
            f'title="{html.escape(video.title)}" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" '
            f'allowfullscreen></iframe>')


def share_meta(video, data: dict) -> dict:
    """What the watch page's OpenGraph, Twitter card and oEmbed discovery tags say (public and unlisted only)."""
    if video.visibility == Visibility.PRIVATE:
        return {}
    width, height = frame_size(data)
    cover = next((t for t in data.get("thumbnails", []) if t["type"] == ThumbnailType.COVER), None)
    return {"title": video.title, "description": (video.description or "")[:300], "url": data["watch_url"],
            "image": cover, "embed_url": embed_url(video), "width": width, "height": height,
            "playable": bool(data.get("master_playlist_url")), "iframe": iframe_html(video, width, height),
            "oembed_url": f"{app_url()}/oembed?" + urlencode({"url": data["watch_url"], "format": "json"})}


@bp.route("/embed/<slug>")
def embed(slug: str):
    """The player alone, for an `<iframe>` on a site `[playback] embed_origins` allows."""
    try:
        video = embeddable(slug)
    except NotFound:
        return render_template("not_found.html"), 404
    data = video_json(video)
    timeline = next((t["url"] for t in data.get("thumbnails", [])
                     if t["type"] == ThumbnailType.TIMELINE and t["url"].split("?")[0].endswith(".vtt")), None)
    g.frame_ancestors = " ".join(cfg().playback.embed_origins) or "'none'"
    return render_template("embed.html", video=data, timeline_vtt=timeline, embed_url=embed_url(video))


def _slug_of(url: str) -> str | None:
    parts = urlsplit(url or "")
    hosts = {urlsplit(app_url()).netloc, request.host}
    pieces = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or parts.netloc not in hosts:
        return None
    if len(pieces) == 2 and pieces[0] in ("watch", "embed"):
        return pieces[1]
    return None


def _positive(name: str) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(f"{name} must be a positive integer")
    return int(value)


@bp.route("/oembed")
def oembed():
    """oEmbed 1.0 (JSON) for a watch or embed URL of a public or unlisted video."""
    fmt = request.args.get("format", "json")
    if fmt != "json":
        return error(501, "not_implemented", "only format=json is served")
    try:
        max_width, max_height = _positive("maxwidth"), _positive("maxheight")
    except ValidationError as e:
        return error(400, e.code, str(e))
    slug = _slug_of(request.args.get("url", ""))
    try:
        video = embeddable(slug or "")
    except NotFound:
        return error(404, "not_found", "no public or unlisted video has this URL")
    data = video_json(video)
    width, height = frame_size(data, max_width, max_height)
    out = {"version": "1.0", "type": "video", "provider_name": PROVIDER, "provider_url": app_url() + "/",
           "title": video.title, "html": iframe_html(video, width, height), "width": width, "height": height,
           "cache_age": max(60, cfg().playback.signed_url_ttl // 2)}
    cover = next((t for t in data.get("thumbnails", []) if t["type"] == ThumbnailType.COVER), None)
    if cover:
        out.update(thumbnail_url=cover["url"], thumbnail_width=cover["width"], thumbnail_height=cover["height"])
    return out


def public_json(rows) -> list[dict]:
    """The public form of each video: what anyone may know of a public video (no original, no errors)."""
    covers = {}
    if rows:
        for t in Thumbnail.select().where(Thumbnail.video.in_([v.id for v in rows])
                                          & (Thumbnail.type == ThumbnailType.COVER)):
            covers[t.video_id] = t
    out = []
    for v in rows:
        full = video_json(v, full=False)
        item = {k: full.get(k) for k in PUBLIC_FIELDS}
        cover = covers.get(v.id)
        item.update(duration=v.original_duration or None, embed_url=embed_url(v),
                    cover_url=media_url(v, cover.s3_key) if cover else None)
        out.append(item)
    return out


@api_bp.route("/videos")
def public_videos():
    """Everyone's public COMPLETED videos, newest first (?q= words, ?tag= one tag, ?page=)."""
    page = page_arg()
    q, tag = request.args.get("q", ""), request.args.get("tag", "")
    if len(q) > 200 or len(tag) > 50:
        raise ValidationError("q is at most 200 characters, tag at most 50")
    rows, more = search.public_videos(q, tag, page, PER_PAGE)
    return {"items": public_json(rows), "next": page + 1 if more else None}


@bp.route("/explore")
def explore():
    """The public gallery: search box, tag links, a page of public videos."""
    page = page_arg(lenient=True)
    q, tag = request.args.get("q", "")[:200], request.args.get("tag", "")[:50]
    rows, more = search.public_videos(q, tag, page, PER_PAGE)
    if not rows and page > 1:  # past the end: the last page
        page = last_page(page, search.count_public(q, tag), PER_PAGE)
        rows, more = search.public_videos(q, tag, page, PER_PAGE)
    return render_template("explore.html", videos=public_json(rows), q=q, tag=tag, page=page, more=more)


def init_app(app) -> None:
    """Register the sharing pages and the public API."""
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)


handle_errors(api_bp)
