"""Downloads: a rendition as a progressive MP4, made once by a worker and kept beside the HLS output.

A request that finds no file inserts its `download_files` row ("making") and has the worker side make
it (streamforge/jobs/downloads.py: fetch the HLS track from here, remux, put it back here); requests
that find the row wait or answer 202 until it turns "ready" (in any process, on any host: the row is
the lock). A maker that died leaves a row that goes stale and is claimed again.
"""
from __future__ import annotations

import datetime
import logging
import posixpath
from pathlib import Path

from peewee import IntegrityError

from streamforge.errors import NotFound, StorageError
from streamforge.store import videos
from streamforge.store.db import DownloadFile, Video, utcnow

log = logging.getLogger("streamforge.downloads")

MAKING, READY = "making", "ready"
STALE_AFTER = datetime.timedelta(minutes=10)


def key_for(video: Video, rendition: str) -> str:
    """The object key of a rendition's MP4: beside the HLS output, so a rerun's cleanup removes it."""
    return f"{video.s3_processed_path.rstrip('/')}/downloads/{rendition}.mp4"


def rendition_of(video: Video, rendition: str):
    """The rendition row named `rendition`; NotFound for no such rendition."""
    row = next((r for r in videos.renditions_of(video) if r.name == rendition), None)
    if row is None:
        raise NotFound(f"this video has no rendition named {rendition!r}; use one of its renditions' names or original")
    return row


def request(store, video: Video, rendition: str) -> tuple[str, str]:
    """(state, key) of `rendition`'s MP4: READY (it exists), MAKING (someone makes it) or "mine" (the caller
    must have it made: its row is claimed); NotFound for no such rendition."""
    rendition_of(video, rendition)
    key = key_for(video, rendition)
    for _ in range(3):
        state = _claim(video.id, key)
        if state == READY and not store.exists(key):  # the row outlived its object (a cleanup): make it again
            DownloadFile.delete().where(DownloadFile.key == key).execute()
            continue
        return state, key
    return MAKING, key


def state_of(key: str) -> str | None:
    """The row's state for `key`, None when it has none (a failed maker removed it)."""
    row = DownloadFile.get_or_none(DownloadFile.key == key)
    return row.state if row else None


def claim_for_job(video_id: str, key: str) -> bool:
    """A download job takes the row over (true unless the file is ready or the video gone)."""
    n = DownloadFile.update(state=MAKING, started_at=utcnow()).where(
        DownloadFile.key == key, DownloadFile.state == MAKING).execute()
    if n:
        return True
    try:
        DownloadFile.create(key=key, video=video_id, state=MAKING, started_at=utcnow())
        return True
    except IntegrityError:
        return False


def mark_ready(key: str, size: int) -> None:
    """The file is in the store."""
    DownloadFile.update(state=READY, size=size).where(DownloadFile.key == key).execute()


def forget(key: str) -> None:
    """Making the file failed: drop its row, so the next request tries again."""
    DownloadFile.delete().where(DownloadFile.key == key).execute()


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


def fetch_track(store, playlist_key: str, folder: Path) -> list[Path]:
    """Download one HLS track (init + segments of its media playlist) into `folder`; returns their paths."""
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
    return local


def download_name(video: Video, rendition: str) -> str:
    """The file name a browser saves a download under."""
    stem = "".join(c if c.isalnum() or c in " -_." else "_" for c in (video.title or video.slug)).strip()[:80] or "video"
    if rendition == "original":
        return video.original_file_name or stem
    return f"{stem} ({rendition}).{'m4a' if rendition == 'audio' else 'mp4'}"
