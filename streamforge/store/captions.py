"""Caption tracks: the rows (one per video and language) and their WebVTT in the store beside the HLS.

Each track is two objects under the video's output, named by the content's hash so a replaced
track never overwrites a file a player may be reading: `subs/{language}-{version}.vtt` and its
media playlist `subs/{language}-{version}.m3u8`. `publish` writes the current tracks' objects,
then the master that lists them, and only then deletes the objects no row names any more: the
master never lists a playlist that is not there.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from peewee import IntegrityError

from streamforge import captiontext as vtt
from streamforge.errors import StorageError
from streamforge.store.db import (
    Caption,
    ProcessingLog,
    ProcessingStatus,
    Video,
    db,
    utcnow,
    write_transaction,
)

log = logging.getLogger("streamforge.captions")

UPLOAD, ORIGINAL, AUTO = "upload", "original", "auto"
MAX_TRANSCRIPT = 500_000  # characters of caption text the search indexes per video
MASTER_CACHE = "public, max-age=2"
IMMUTABLE = "public, max-age=31536000, immutable"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(video_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(video_id, threading.Lock())


def version_of(content: str) -> str:
    """The short content hash that names a track's objects."""
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def tracks_of(video_id: str) -> list[Caption]:
    """The video's caption tracks, by language."""
    return list(Caption.select().where(Caption.video == video_id).order_by(Caption.language))


def relpaths(track: Caption) -> tuple[str, str]:
    """(WebVTT, media playlist) paths of a track, relative to the video's output."""
    stem = f"subs/{track.language}-{track.version}"
    return f"{stem}.vtt", f"{stem}.m3u8"


def label_of(track: Caption) -> str:
    """The name a player shows for the track."""
    return track.label or track.language


def save_track(video_id: str, language: str, label: str, content: str, source: str = UPLOAD) -> Caption:
    """Create or replace the video's track for `language` with normalised WebVTT `content`."""
    now = utcnow()
    fields = dict(label=label, source=source, content=content, version=version_of(content), updated_at=now)
    with write_transaction(db):
        updated = Caption.update(**fields).where(Caption.video == video_id, Caption.language == language).execute()
        if not updated:
            try:
                with db.atomic():
                    Caption.create(video=video_id, language=language, created_at=now, **fields)
            except IntegrityError:  # created at the same moment by another request: replace that one
                Caption.update(**fields).where(Caption.video == video_id, Caption.language == language).execute()
    refresh_transcript(video_id)
    return Caption.get(Caption.video == video_id, Caption.language == language)


def save_auto_track(video_id: str, language: str, content: str) -> Caption | None:
    """Store a transcription as the `auto` track of its language, unless an uploaded or original one is there."""
    existing = Caption.get_or_none(Caption.video == video_id, Caption.language == language)
    if existing is not None and existing.source != AUTO:
        return None
    from streamforge.languages import language_name
    return save_track(video_id, language, f"{language_name(language) or language} (auto)", content, source=AUTO)


def delete_track(video_id: str, language: str) -> bool:
    """Remove the video's track for `language`; False when there is none."""
    gone = Caption.delete().where(Caption.video == video_id, Caption.language == language).execute() > 0
    refresh_transcript(video_id)
    return gone


def refresh_transcript(video_id: str) -> None:
    """Put the plain text of every caption track of the video where the full-text search finds it."""
    parts = []
    for track in tracks_of(video_id):
        try:
            parts.append(vtt.plain_text(vtt.parse_captions(track.content)))
        except vtt.CaptionFormatError:  # stored tracks are normalised WebVTT; an odd one is left out
            continue
    text = "\n".join(p for p in parts if p)[:MAX_TRANSCRIPT] or None
    Video.update(transcript=text).where(Video.id == video_id).execute()


def has_auto_track(video_id: str) -> bool:
    """True when the video has a caption track made by transcription."""
    return Caption.select().where(Caption.video == video_id, Caption.source == AUTO).exists()


def set_original_tracks(video_id: str, tracks: list[vtt.SubtitleTrack]) -> None:
    """Make the upload's own subtitle streams the video's `original` tracks (an uploaded one wins)."""
    taken = {t.language: t.source for t in tracks_of(video_id)}
    wanted = {}
    for track in tracks:
        if track.language not in wanted:  # one track per language: the first stream of each
            wanted[track.language] = track
    for language, source in taken.items():
        if source == ORIGINAL and language not in wanted:
            Caption.delete().where(Caption.video == video_id, Caption.language == language,
                                   Caption.source == ORIGINAL).execute()
    for language, track in wanted.items():
        if taken.get(language) != UPLOAD:
            save_track(video_id, language, track.label, vtt.to_webvtt(track.cues), source=ORIGINAL)
    refresh_transcript(video_id)


def write_local(video_id: str, outdir: Path, master: str, duration: float) -> tuple[list[str], list[str]]:
    """A run's output: write every track's files under `outdir` and add them to its master.

    Returns (the new files' relative paths, the versions listed) for the caller to upload before the master."""
    tracks = tracks_of(video_id)
    written = []
    for track in tracks:
        vtt_path, playlist = relpaths(track)
        (outdir / vtt_path).parent.mkdir(parents=True, exist_ok=True)
        (outdir / vtt_path).write_text(track.content, encoding="utf-8")
        (outdir / playlist).write_text(vtt.subtitle_playlist(Path(vtt_path).name, duration), encoding="utf-8")
        written += [vtt_path, playlist]
    text = (outdir / master).read_text(encoding="utf-8")
    (outdir / master).write_text(_master(text, tracks), encoding="utf-8")
    return written, [t.version for t in tracks]


def _master(text: str, tracks: list[Caption]) -> str:
    return vtt.master_with_subtitles(text, [(t.language, label_of(t), relpaths(t)[1]) for t in tracks])


def publish(store, video: Video, attempts: int = 5) -> None:
    """Bring the store in line with the rows: each track's objects, the master listing them, stale ones gone."""
    prefix = (video.s3_processed_path or "").rstrip("/")
    if not video.master_playlist_url or not prefix:
        return  # no output yet: the run writes the tracks with its master
    duration = float(video.original_duration or 0)
    with _lock(video.id):
        for _ in range(attempts):
            tracks = tracks_of(video.id)
            for track in tracks:
                vtt_path, playlist = relpaths(track)
                store.put_bytes(f"{prefix}/{vtt_path}", track.content.encode(), content_type="text/vtt",
                                cache_control=IMMUTABLE)
                store.put_bytes(f"{prefix}/{playlist}", vtt.subtitle_playlist(Path(vtt_path).name, duration).encode(),
                                content_type="application/vnd.apple.mpegurl", cache_control=IMMUTABLE)
            master_key = f"{prefix}/master.m3u8"
            text = store.get_bytes(master_key).decode("utf-8")
            store.put_bytes(master_key, _master(text, tracks).encode(), content_type="application/vnd.apple.mpegurl",
                            cache_control=MASTER_CACHE)
            if [t.version for t in tracks_of(video.id)] == [t.version for t in tracks]:
                break  # nobody changed the tracks meanwhile: the master is current
        _remove_stale(store, prefix, tracks_of(video.id))


def _remove_stale(store, prefix: str, tracks: list[Caption]) -> None:
    keep = {f"{prefix}/{p}" for t in tracks for p in relpaths(t)}
    try:
        for obj in store.list(f"{prefix}/subs/"):
            if obj.key not in keep:
                store.delete(obj.key)
    except StorageError as e:  # a stale file costs a little space, nothing else
        log.warning("could not remove old caption files under %s: %s", prefix, e)


def republish_if_changed(store, video_id: str, versions: list[str]) -> None:
    """After a run: when tracks changed while it ran (an upload, a delete), publish them again."""
    if [t.version for t in tracks_of(video_id)] != versions:
        video = Video.get_or_none(Video.id == video_id)
        if video is not None:
            publish(store, video)


def for_run(video_id: str, outdir: Path, result, tracks: list[vtt.SubtitleTrack]) -> tuple[list[str], list[str]]:
    """A run's upload stage: record the upload's own tracks, write every track beside its output and into
    its master. Returns (files to upload before the master, the track versions the master lists)."""
    set_original_tracks(video_id, tracks)
    return write_local(video_id, outdir, result.master, result.probe.duration)


def after_run(store, video_id: str, versions: list[str]) -> None:
    """A run is recorded: publish the tracks again if they changed while it ran."""
    try:
        republish_if_changed(store, video_id, versions)
    except StorageError as e:
        log.warning("caption tracks of %s changed during its run and could not be republished: %s", video_id, e)


def lost_transcriptions(done_after, done_before, started_before, limit: int = 50) -> list[str]:
    """COMPLETED videos (processed between `done_after` and `done_before`) with no `auto` track whose
    transcription never ended: no `captions` row since their processing, or only a `started` one from
    before `started_before` (a worker that died mid-way; one that failed said so and is left alone)."""
    auto = Caption.select(Caption.video).where(Caption.source == AUTO)
    found = []
    for video in (Video.select(Video.id, Video.processed_at)
                  .where(Video.status == ProcessingStatus.COMPLETED, Video.processed_at > done_after,
                         Video.processed_at < done_before, Video.id.not_in(auto))
                  .order_by(Video.processed_at).limit(limit)):
        last = (ProcessingLog.select(ProcessingLog.status, ProcessingLog.created_at)
                .where(ProcessingLog.video_id == video.id, ProcessingLog.stage == "captions",
                       ProcessingLog.created_at >= video.processed_at)
                .order_by(ProcessingLog.created_at.desc(), ProcessingLog.id.desc()).first())
        if last is None or (last.status == "started" and last.created_at < started_before):
            found.append(video.id)
    return found
