"""One processing run of one video: download, probe, transcode + thumbnails, upload, database.

The run holds a lease on the video (a run token and a heartbeat); every write it makes is
conditional on still holding it, so a run the sweeper took back can never overwrite the one
that replaced it. Segments are uploaded while the ladder is still encoding; the master is
published as soon as every rung has its first segment (first runs only: a rerun keeps the old
output visible until the new one is complete).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from peewee import InterfaceError, OperationalError

from streamforge.config import Config
from streamforge.errors import MediaError, StorageError
from streamforge.jobs import heartbeats
from streamforge.store import captions, chapters, videos
from streamforge.store import chunks as chunk_rows
from streamforge.store.connect import object_store
from streamforge.store.db import db
from streamforge.store.objects import ObjectStore

log = logging.getLogger("streamforge.jobs.processing")

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=2"
LIVE = "no-cache"


class LeaseLost(Exception):
    """The sweeper gave this run's video to another run: stop without writing anything."""


class HandBack(Exception):
    """The worker is shutting down: give the video back to the queue for another worker."""


# set by the worker's signal handler; running videos notice it at their next progress report
SHUTDOWN = threading.Event()

# how a run announces `video.playable` / `video.ready` / `video.failed`: (event, video id)
EventSink = Callable[[str, str], None]


def no_events(event: str, video_id: str) -> None:
    """An event sink that drops every event (a run outside the queue)."""


class Outcome(str):
    """What a run did ("completed", "retry", "failed", ...), and when the queue must run the video again:
    `requeue_after` seconds (0: at once), or None when it must not (the run has given it back already)."""

    requeue_after: float | None

    def __new__(cls, status: str, requeue_after: float | None = None) -> Outcome:
        self = super().__new__(cls, status)
        self.requeue_after = requeue_after
        return self


def original_tracks(src: Path, info) -> list:
    """The upload's text subtitle streams (`info` is its probe); [] when it has none or they cannot be read."""
    if not getattr(info, "subtitle_streams", ()):
        return []
    from streamforge.pipeline.captions import extract_subtitles
    try:
        return extract_subtitles(src, start=info.start_time if info.kind == "video" else 0.0)
    except MediaError as e:  # subtitles never fail a video
        log.warning("the subtitle streams of %s could not be read: %s", src.name, e)
        return []


def checked_original(config: Config, store: ObjectStore, video):
    """The original's object info; MediaError when a run may not take it (missing, over the limit, or
    replaced after it was accepted)."""
    info = store.stat(video.original_key)
    if info is None:
        raise MediaError(f"the original {video.original_file_name!r} is not in the store")
    if info.size > config.upload.max_size:
        raise MediaError(f"the original is {info.size} bytes, over the {config.upload.max_size} byte limit")
    if info.size != video.original_file_size or (video.original_etag and info.etag != video.original_etag):
        # the upload URL outlives the upload: refuse bytes swapped in after they were checked
        raise MediaError(f"the original was replaced after its upload was accepted (now {info.size} bytes, "
                         f"{video.original_file_size} were declared and checked); upload the video again")
    return info


def _stage_logger(video_id: str, attempt: int, by: str):
    def stage(name: str):
        return _Stage(video_id, attempt, name, by)
    return stage


def signed(message: str, by: str) -> str:
    """A log message that names who did the stage ("... (by worker host:pid)", "... (by runner desktop)")."""
    return f"{message} (by {by})" if by else message


class _Stage:
    """Context manager writing the started / completed / failed rows of one stage, naming who did it."""

    def __init__(self, video_id: str, attempt: int, name: str, by: str = ""):
        self.video_id, self.attempt, self.name, self.by = video_id, attempt, name, by
        self.message = ""

    def __enter__(self):
        self.t0 = time.monotonic()
        videos.log_stage(self.video_id, self.attempt, self.name, "started", signed(f"{self.name} started", self.by))
        return self

    def __exit__(self, exc_type, exc, tb):
        took = round(time.monotonic() - self.t0, 3)
        if exc is None:
            videos.log_stage(self.video_id, self.attempt, self.name, "completed",
                             signed(self.message or f"{self.name} completed", self.by), took)
        elif not isinstance(exc, (LeaseLost, HandBack)):
            code = getattr(exc, "code", None) or type(exc).__name__
            videos.log_stage(self.video_id, self.attempt, self.name, "failed", signed(describe(exc), self.by), took,
                             error_code=str(code), error_details=repr(exc))
        return False


def describe(exc: BaseException) -> str:
    """A readable one-line reason for a failure."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the worker's temporary disk while processing; free space and reprocess"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:500]


class Uploader:
    """Uploads output files as the pipeline produces them; playlists only after their segments."""

    def __init__(self, store: ObjectStore, outdir: Path, prefix: str, workers: int = 6):
        self.store, self.outdir, self.prefix = store, outdir, prefix
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sf-upload")
        self.pending: list[Future] = []
        self.lock = threading.Lock()
        self.publish_lock = threading.Lock()
        self.uploaded: set[str] = set()
        self.error: BaseException | None = None

    def key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}"

    def _put(self, relpath: str, cache: str) -> None:
        self.store.upload_file(self.key(relpath), str(self.outdir / relpath), cache_control=cache)
        with self.lock:
            self.uploaded.add(relpath)

    def submit(self, relpath: str) -> None:
        """Upload an immutable file (segment, init, thumbnail) in the background."""
        with self.lock:
            self.pending.append(self.pool.submit(self._put, relpath, IMMUTABLE))

    def barrier(self) -> None:
        """Wait for every background upload so far; re-raise the first failure."""
        with self.lock:
            pending, self.pending = self.pending, []
        for f in pending:
            f.result()

    def put_now(self, relpath: str, cache: str) -> None:
        """Upload a playlist after everything it may reference is in the store."""
        with self.publish_lock:  # one barrier at a time, so none returns before earlier uploads land
            self.barrier()
            self._put(relpath, cache)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class VideoRun:
    """The state of one run: the video, its lease, its temp dir and what it published."""

    def __init__(self, config: Config, store: ObjectStore, video, token: str, emit: EventSink = no_events,
                 by: str = ""):
        self.config, self.store, self.video, self.token = config, store, video, token
        self.emit = emit
        self.video_id = video.id
        self.attempt = video.attempts
        self.by = by or f"worker {heartbeats.worker_name()}"
        self.stage = _stage_logger(video.id, video.attempts, self.by)
        first_run = video.processed_at is None and video.attempts <= 1
        # a rerun writes beside the old output and switches at the end, so no viewer sees a mix
        self.prefix = f"processed/{video.id}" if first_run else f"processed/{video.id}/r-{token[-8:]}"
        self.live = first_run
        self.progress = 0.0
        self.published = False
        self._stop = threading.Event()
        self._lost = threading.Event()
        self.uploader: Uploader | None = None
        self.subtitles: list = []  # the upload's own subtitle streams, read after the probe
        self.info = None  # the probe's result
        self.caption_versions: list[str] = []  # the caption tracks this run's master lists

    def relabel(self, by: str) -> None:
        """Name someone else as who does the stages from now on (the instance publishing a runner's work)."""
        self.by = by
        self.stage = _stage_logger(self.video_id, self.attempt, by)

    # ----- lease -----

    def _heartbeat_loop(self) -> None:
        # the heartbeat also carries progress: often enough for a moving bar, cheap for the database
        every = max(0.5, min(2.0, self.config.sweeper.lease_seconds / 4))
        try:
            while not self._stop.wait(every):
                try:
                    if not videos.heartbeat(self.video_id, self.token, self.progress):
                        self._lost.set()
                        return
                except (OperationalError, InterfaceError) as e:  # a database blip: the next beat may pass
                    log.warning("heartbeat for %s failed: %s", self.video_id, e)
        finally:
            db.close()  # this thread's connection (peewee keeps one per thread)

    def check_lease(self) -> None:
        if self._lost.is_set():
            raise LeaseLost()

    # ----- stages -----

    def download(self, workdir: Path) -> Path:
        with self.stage("download") as st:
            info = checked_original(self.config, self.store, self.video)
            suffix = Path(self.video.original_file_name).suffix[:10]
            src = workdir / f"original{suffix}"
            self.store.download(self.video.original_key, str(src))
            if src.stat().st_size != info.size:
                raise StorageError(f"download of {self.video.original_key} was cut short")
            with open(src, "rb") as f:  # what the uploader declared, if anything, gives way to the bytes
                videos.set_original_sha256(self.video_id, self.token, hashlib.file_digest(f, "sha256").hexdigest())
            st.message = f"downloaded {info.size} bytes"
        return src

    def probe(self, src: Path):
        from streamforge.pipeline import probe
        with self.stage("probe") as st:
            info = probe(src, self.config.pipeline)  # the configured limits fail at this stage
            st.message = (f"{info.width}x{info.height}, {info.duration:.2f} s, "
                          f"audio {_audio_summary(info)}")
            videos.set_original_info(self.video_id, self.token, duration=info.duration, kind=info.kind)
            self.subtitles = original_tracks(src, info)  # text subtitle streams become caption tracks
            chapters.set_container_chapters(self.video_id, _container_chapters(src, info))  # before playable
        return info

    def _on_progress(self, fraction: float, stage: str = "") -> None:
        self.progress = min(0.95, 0.05 + 0.9 * float(fraction))
        self.check_lease()
        if SHUTDOWN.is_set():
            raise HandBack()

    def transcode(self, src: Path, outdir: Path, uploader: Uploader):
        from streamforge.pipeline import PipelineOptions, run_pipeline
        from streamforge.pipeline.chunks import plan_chunks
        opts = dataclasses.replace(PipelineOptions.from_config(self.config.pipeline), live=self.live)
        info = self.info
        plans = plan_chunks(info, opts, self.config.pipeline.chunk_seconds, head=self.live) if info is not None else []
        if plans:  # a long video: chunks that several workers and runners encode at once
            return self.transcode_chunked(src, info, outdir, uploader, plans)
        master_seen = threading.Event()

        def on_file(kind: str, relpath: str) -> None:
            if kind in ("segment", "thumbnail"):
                uploader.submit(relpath)
            elif kind == "playlist" and self.live:
                uploader.put_now(relpath, LIVE)
            elif kind == "master" and self.live and not master_seen.is_set():
                # the master goes up once every rung has a segment; from then on the video plays
                uploader.put_now(relpath, SHORT)
                master_seen.set()
                self.check_lease()
                url = self.store.public_url(uploader.key(relpath))
                if videos.set_playable(self.video_id, self.token, master_url=url, processed_path=self.prefix):
                    self.published = True
                    self.emit("video.playable", self.video_id)

        with self.stage("transcode") as st, self.stage("thumbnails") as th:
            result = run_pipeline(src, outdir, opts, progress=self._on_progress, on_file=on_file)
            st.message = "; ".join([f"{r.name} {r.codec} {r.width}x{r.height} {r.segment_count} segments"
                                    + (" (copied)" if getattr(r, "copied", False) else "")
                                    for r in result.renditions] + list(getattr(result, "notes", [])))
            th.message = f"{len(result.thumbnails)} thumbnail files"
        return result

    def transcode_chunked(self, src: Path, info, outdir: Path, uploader: Uploader, plans: list):
        from streamforge.jobs import chunkwork, tasks
        outdir.mkdir(parents=True, exist_ok=True)
        with self.stage("transcode") as st, self.stage("thumbnails") as th:
            result = chunkwork.coordinate(self, src, info, outdir, uploader, plans, tasks.enqueue_chunk)
            st.message = "; ".join([f"{r.name} {r.codec} {r.width}x{r.height} {r.segment_count} segments"
                                    for r in result.renditions] + list(result.notes))
            th.message = f"{len(result.thumbnails)} thumbnail files"
        return result

    def upload(self, outdir: Path, result, uploader: Uploader) -> int:
        with self.stage("upload") as st:
            caption_files, self.caption_versions = captions.for_run(self.video_id, outdir, result, self.subtitles)
            result.files[:0] = caption_files  # the tracks go up before the master that lists them
            result.files[:0] = chapters.write_local(self.video_id, outdir)
            for rel in result.files:
                if rel not in uploader.uploaded and not rel.endswith(".m3u8"):
                    uploader.submit(rel)
            uploader.barrier()
            playlists = [r.playlist for r in result.renditions] + [a.playlist for a in _audio_tracks(result)]
            rest = [rel for rel in result.files if rel.endswith(".m3u8") and rel != result.master]
            for rel in dict.fromkeys(playlists + rest):
                uploader.put_now(rel, SHORT)
            uploader.put_now(result.master, SHORT)
            st.message = f"{len(result.files)} files under {self.prefix}/"
        return len(result.files)

    def record(self, result, total_files: int) -> None:
        url = self.store.public_url
        with self.stage("database") as st:
            rend_rows = [dict(name=r.name, width=r.width, height=r.height, bitrate=r.bitrate,
                              bandwidth=r.bandwidth, average_bandwidth=r.average_bandwidth, codecs=r.codecs,
                              frame_rate=r.frame_rate, playlist_url=url(f"{self.prefix}/{r.playlist}"),
                              playlist_name=r.playlist, segment_count=r.segment_count,
                              segment_size=r.segment_size, codec=r.codec, s3_key=f"{self.prefix}/{r.playlist}")
                         for r in result.renditions]
            thumb_rows = [dict(url=url(f"{self.prefix}/{t.path}"), s3_key=f"{self.prefix}/{t.path}",
                               timestamp=t.timestamp, width=t.width, height=t.height, type=t.type)
                          for t in result.thumbnails]
            cover = next((r["url"] for r in thumb_rows if r["type"] == "COVER"), None)
            audio_rows = [dict(name=a.name, language=a.language, label=a.label, default=a.default)
                          for a in _audio_tracks(result)]
            ok = videos.finish_run(self.video_id, self.token, master_url=url(f"{self.prefix}/{result.master}"),
                                   processed_path=self.prefix, total_files=total_files,
                                   duration=result.probe.duration, cover_url=cover, renditions=rend_rows,
                                   thumbnails=thumb_rows, audio_tracks=audio_rows)
            if not ok:
                raise LeaseLost()
            self.emit("video.ready", self.video_id)
            st.message = f"{len(rend_rows)} renditions, {len(thumb_rows)} thumbnails"

    def remove_stale_outputs(self) -> None:
        """Delete what older runs left under the video's prefix, keeping this run's output."""
        root = f"processed/{self.video_id}/"
        for obj in self.store.list(root):
            if not obj.key.startswith(self.prefix + "/"):
                self.store.delete(obj.key)

    def remove_own_output(self) -> None:
        """Delete what this run uploaded (a failed run publishes nothing)."""
        if self.uploader is not None:
            self.uploader.close()  # uploads still in flight would land after the delete
        try:
            self.store.delete_prefix(self.prefix + "/")
        except StorageError as e:
            log.warning("could not remove the partial output of %s: %s", self.video_id, e)

    # ----- the run -----

    def execute(self) -> str:
        beat = threading.Thread(target=self._heartbeat_loop, name="sf-heartbeat", daemon=True)
        beat.start()
        workdir = Path(tempfile.mkdtemp(prefix=f"sf-run-{self.video_id}-", dir=self.config.pipeline.temp_dir
                                        or None))
        uploader = self.uploader = Uploader(self.store, workdir / "out", self.prefix)
        try:
            src = self.download(workdir)
            self.info = self.probe(src)
            result = self.transcode(src, workdir / "out", uploader)
            total = self.upload(workdir / "out", result, uploader)
            self.record(result, total)
            captions.after_run(self.store, self.video_id, self.caption_versions)
            chunk_rows.delete_run(self.video_id, self.token)
            chapters.publish(self.store, videos.get_video_by_id(self.video_id))  # a description edited meanwhile
            try:
                self.remove_stale_outputs()
            except StorageError as e:
                log.warning("old outputs of %s stay in the store: %s", self.video_id, e)
            return "completed"
        except LeaseLost:
            if videos.is_archived(self.video_id):
                # deleted mid-run: the API removed the objects, this run may have added some since
                log.info("%s was deleted during its run; removing what the run wrote", self.video_id)
                self.remove_own_output()
                return "deleted"
            log.warning("run of %s lost its lease; another run owns the video", self.video_id)
            return "lease-lost"
        except HandBack:
            self.remove_own_output()
            # given back: the queue runs it again at once (unless the sweeper already took it)
            return Outcome("handed-back", 0 if videos.release_run(self.video_id, self.token, None) else None)
        except MediaError as e:
            self.remove_own_output()
            self._fail(describe(e))
            return "failed"
        except (StorageError, OperationalError, InterfaceError) as e:
            return self._retry_or_fail(e)
        except OSError as e:
            self.remove_own_output()
            self._fail(describe(e))
            return "failed"
        except Exception as e:  # an unexpected failure: FAILED with the reason, and the worker goes on
            log.exception("processing %s failed", self.video_id)
            self.remove_own_output()
            self._fail(f"internal error: {describe(e)}")
            return "failed"
        finally:
            self._stop.set()
            uploader.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _fail(self, message: str) -> None:
        """FAILED with the reason (and nothing of this run published); tell the webhooks."""
        if videos.fail_run(self.video_id, self.token, message, unpublish=self.live):
            self.emit("video.failed", self.video_id)

    def _retry_or_fail(self, exc: BaseException) -> str:
        reason = describe(exc)
        self.remove_own_output()
        for attempt in range(10):  # the database itself may be what failed: keep trying to record it
            try:
                if self.attempt >= self.config.sweeper.max_attempts:
                    self._fail(f"gave up after {self.attempt} attempts: {reason}")
                    return "failed"
                if videos.release_run(self.video_id, self.token, f"retrying: {reason}"):
                    return Outcome("retry", min(300, 5 * 2 ** self.attempt))  # the queue schedules it
                return "retry"
            except (OperationalError, InterfaceError):
                time.sleep(min(30, 2 ** attempt))
        return "retry"  # the sweeper finds the run by its stopped heartbeat


def _container_chapters(src: Path, info) -> list:
    """The upload's own chapters on the output's clock (its first video frame is 0)."""
    from streamforge.pipeline.chapters import from_container
    return from_container(src, start=info.start_time if info.kind == "video" else 0.0)


def _audio_tracks(result) -> list:
    """Every audio track a pipeline result published (older results name only the default one)."""
    return list(getattr(result, "audio_tracks", None) or ([result.audio] if result.audio else []))


def _audio_summary(info) -> str:
    """The probe's audio for the log: "no", or each track's language and title."""
    if not info.has_audio:
        return "no"
    tracks = info.audio_tracks
    if len(tracks) <= 1:
        return "yes" + (f" ({tracks[0].language})" if tracks and tracks[0].language != "und" else "")
    return f"{len(tracks)} tracks: " + ", ".join(
        t.language + (f" {t.title!r}" if t.title else "") + (" default" if t.default else "") for t in tracks)


def run_video(config: Config, video_id: str, task_id: str | None = None, emit: EventSink = no_events) -> Outcome:
    """Process one video if it is waiting for a run; returns what happened (the caller, the queue, acts
    on its `requeue_after`); `emit` receives the run's events."""
    claim = videos.claim_run(video_id)
    if claim is None:
        return Outcome("skipped")
    video, token = claim
    if task_id:
        videos.set_task_id(video_id, task_id)
    outcome = VideoRun(config, object_store(config), video, token, emit).execute()
    return outcome if isinstance(outcome, Outcome) else Outcome(outcome)
