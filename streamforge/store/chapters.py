"""A video's chapters: the upload's own (kept on the row), else its description's, and their WebVTT in the store.

The chapters file is `chapters-{version}.vtt` beside the HLS output, named by its content's hash so
a player never reads a file that changes under it; editing the description writes the new file and
removes the old one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from streamforge.errors import StorageError
from streamforge.pipeline import chapters as chap
from streamforge.store.captions import IMMUTABLE, version_of
from streamforge.store.db import Video

log = logging.getLogger("streamforge.chapters")

PREFIX = "chapters-"


def chapters_of(video: Video) -> list[chap.Chapter]:
    """The chapters a viewer sees: the upload's own, else those its description lists."""
    if video.container_chapters:
        try:
            return [chap.Chapter(float(c["start"]), str(c["title"])) for c in json.loads(video.container_chapters)]
        except (ValueError, KeyError, TypeError):
            log.warning("video %s has unreadable container chapters; using its description", video.id)
    return chap.from_description(video.description)


def webvtt_of(video: Video) -> str | None:
    """The chapters file's text, or None when the video has no chapters."""
    found = chapters_of(video)
    return chap.to_webvtt(found, float(video.original_duration or 0)) if found else None


def relpath(video: Video) -> str | None:
    """The chapters file's path relative to the video's output, or None when it has no chapters."""
    text = webvtt_of(video)
    return f"{PREFIX}{version_of(text)}.vtt" if text else None


def set_container_chapters(video_id: str, found: list[chap.Chapter]) -> None:
    """Record the upload's own chapters (an empty list: it has none)."""
    value = json.dumps([c.as_json() for c in found]) if found else None
    Video.update(container_chapters=value).where(Video.id == video_id).execute()


def write_local(video_id: str, outdir: Path) -> list[str]:
    """A run's output: write the chapters file under `outdir`; returns its relative path ([] when none)."""
    video = Video.get(Video.id == video_id)
    text, rel = webvtt_of(video), relpath(video)
    if not text:
        return []
    (outdir / rel).write_text(text, encoding="utf-8")
    return [rel]


def publish(store, video: Video | None) -> None:
    """Bring the store in line with the row: the current chapters file there, older ones gone."""
    if video is None:
        return
    prefix = (video.s3_processed_path or "").rstrip("/")
    if not video.master_playlist_url or not prefix:
        return  # no output yet: the run writes the file
    text, rel = webvtt_of(video), relpath(video)
    try:
        if text and store.stat(f"{prefix}/{rel}") is None:
            store.put_bytes(f"{prefix}/{rel}", text.encode(), content_type="text/vtt", cache_control=IMMUTABLE)
        for obj in store.list(f"{prefix}/{PREFIX}"):
            if obj.key != f"{prefix}/{rel}":
                store.delete(obj.key)
    except StorageError as e:  # the API still lists the chapters; the next edit or run writes the file
        log.warning("the chapters file of %s could not be published: %s", video.id, e)
