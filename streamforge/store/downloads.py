"""Downloads: a rendition as a progressive MP4, made on first request and kept beside the HLS output.

The first request for a file inserts its `download_files` row ("making") and remuxes; a request that
finds the row waits for it to turn "ready" instead of making the file again (in any process, on any
host: the row is the lock). A maker that died leaves a row that goes stale and is taken over.
"""
from __future__ import annotations

import datetime
import logging
import posixpath
import shutil
import tempfile
import time
from pathlib import Path

from peewee import IntegrityError

from streamforge.errors import NotFound, StorageError
from streamforge.pipeline.remux import join_track, remux_mp4
from streamforge.store import videos
from streamforge.store.db import DownloadFile, Video, utcnow

log = logging.getLogger("streamforge.downloads")

MAKING, READY = "making", "ready"
STALE_AFTER = datetime.timedelta(minutes=10)
WAIT_SECONDS = 300


def key_for(video: Video, rendition: str) -> str:
    """The object key of a rendition's MP4: beside the HLS output, so a rerun's cleanup removes it."""
    return f"{video.s3_processed_path.rstrip('/')}/downloads/{rendition}.mp4"


def ensure_mp4(store, video: Video, rendition: str, temp_dir: str | None = None) -> str:
    """The key of `rendition`'s progressive MP4, making it first when no one has; NotFound for no such rendition."""
    row = next((r for r in videos.renditions_of(video) if r.name == rendition), None)
    if row is None:
        raise NotFound(f"this video has no rendition named {rendition!r}; use one of its renditions' names or original")
    key = key_for(video, rendition)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        state = _claim(video.id, key)
        if state == READY and store.exists(key):
            return key
        if state == READY:  # the row outlived its object (a cleanup): make it again
            DownloadFile.delete().where(DownloadFile.key == key).execute()
            continue
        if state == "mine":
            return _make(store, video, row, key, temp_dir)
        if time.monotonic() > deadline:
            raise StorageError("the download is still being prepared; try again in a minute")
        time.sleep(0.25)


def _claim(video_id: str, key: str) -> str:
    """"mine" when this request must make the file, READY when it is made, MAKING while another makes it."""
    try:
        DownloadFile.create(key=key, video=video_id, state=MAKING, started_at=utcnow())
        return "mine"
    except IntegrityError:
        pass
    found = DownloadFile.get_or_none(DownloadFile.key == key)
    if found is None:
        return MAKING  # deleted in between: the next round claims it
    if found.state == MAKING and found.started_at < utcnow() - STALE_AFTER:
        # its maker died: take it over, unless another request just did
        taken = DownloadFile.update(started_at=utcnow()).where(
            DownloadFile.key == key, DownloadFile.started_at == found.started_at).execute()
        return "mine" if taken else MAKING
    return found.state


def _make(store, video: Video, rendition, key: str, temp_dir: str | None) -> str:
    work = Path(tempfile.mkdtemp(prefix=f"sf-download-{video.id}-", dir=temp_dir or None))
    try:
        prefix = video.s3_processed_path.rstrip("/")
        tracks = [_fetch_track(store, rendition.s3_key, work / "video")]
        audio_playlist = f"{prefix}/audio/index.m3u8"
        if rendition.s3_key != audio_playlist and store.exists(audio_playlist):
            tracks.append(_fetch_track(store, audio_playlist, work / "audio"))
        out = remux_mp4(tracks, work / "download.mp4")
        store.upload_file(key, str(out), content_type="video/mp4", cache_control="private, max-age=31536000")
        DownloadFile.update(state=READY, size=out.stat().st_size).where(DownloadFile.key == key).execute()
        return key
    except BaseException:
        DownloadFile.delete().where(DownloadFile.key == key).execute()  # the next request tries again
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch_track(store, playlist_key: str, folder: Path) -> Path:
    """Download one HLS track (init + segments of its media playlist) and join it into one fMP4 file."""
    base = posixpath.dirname(playlist_key)
    text = store.get_bytes(playlist_key).decode("utf-8")
    init, segments = None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MAP:") and 'URI="' in line:
            init = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line and not line.startswith("#"):
            segments.append(line)
    if init is None or not segments:
        raise StorageError(f"{playlist_key} lists no init segment or no segments")
    folder.mkdir(parents=True)
    local = []
    for name in [init, *segments]:
        if "/" in name or name.startswith("."):
            raise StorageError(f"{playlist_key} names a file outside its folder: {name!r}")
        store.download(f"{base}/{name}", folder / name)
        local.append(folder / name)
    return join_track(local[0], local[1:], folder.with_suffix(".mp4"))


def download_name(video: Video, rendition: str) -> str:
    """The file name a browser saves a download under."""
    stem = "".join(c if c.isalnum() or c in " -_." else "_" for c in (video.title or video.slug)).strip()[:80] or "video"
    if rendition == "original":
        return video.original_file_name or stem
    return f"{stem} ({rendition}).{'m4a' if rendition == 'audio' else 'mp4'}"
