"""A download job: a rendition's HLS output remuxed into one progressive MP4 (no second encode), on the worker side.

The web side only claims the file's row (streamforge/store/downloads.py) and enqueues this job; an hour of
1080p is gigabytes copied, which belongs in a worker, never in a request thread.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from streamforge.config import Config
from streamforge.errors import NotFound
from streamforge.pipeline.remux import join_track, remux_mp4
from streamforge.store import downloads
from streamforge.store.connect import object_store
from streamforge.store.db import Video

log = logging.getLogger("streamforge.jobs.downloads")


def make_download(config: Config, video_id: str, rendition: str) -> str:
    """Make `rendition`'s MP4 of the video unless it is made already; returns "ready", "skipped" or "gone"."""
    video = Video.get_or_none(Video.id == video_id)
    if video is None or not video.s3_processed_path:
        return "gone"
    try:
        row = downloads.rendition_of(video, rendition)
    except NotFound:
        return "gone"
    key = downloads.key_for(video, rendition)
    if not downloads.claim_for_job(video.id, key):
        return "skipped"
    store = object_store(config)
    work = Path(tempfile.mkdtemp(prefix=f"sf-download-{video.id}-", dir=config.pipeline.temp_dir or None))
    try:
        prefix = video.s3_processed_path.rstrip("/")
        tracks = [_track(store, row.s3_key, work / "video")]
        audio_playlist = f"{prefix}/audio/index.m3u8"
        if row.s3_key != audio_playlist and store.exists(audio_playlist):
            tracks.append(_track(store, audio_playlist, work / "audio"))
        out = remux_mp4(tracks, work / "download.mp4")
        store.upload_file(key, str(out), content_type="video/mp4", cache_control="private, max-age=31536000")
        downloads.mark_ready(key, out.stat().st_size)
        return "ready"
    except BaseException:
        downloads.forget(key)  # the next request tries again
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _track(store, playlist_key: str, folder: Path) -> Path:
    """One HLS track fetched from the store and joined into one fragmented MP4 file."""
    local = downloads.fetch_track(store, playlist_key, folder)
    return join_track(local[0], local[1:], folder.with_suffix(".mp4"))
