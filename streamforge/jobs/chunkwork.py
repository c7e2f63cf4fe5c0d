"""Chunked runs on the worker side: the run that holds a long video plans its chunks, encodes the audio and
thumbnails in one whole pass, encodes chunks itself while other workers (a queue task per chunk) and
remote runners take the others, takes back a chunk whose holder stopped beating, and finishes once every
chunk is in: it checks each chunk's files in the store, writes the playlists and the master (first the
first chunk's, playable early), and the run's own upload and database stages publish them.

Only the run that holds the video (its lease token) finishes it, once; a chunk is recorded done once,
by the holder of its lease (store/chunks.py), so neither two finishers nor a chunk done twice can mix.
"""
from __future__ import annotations

import atexit
import dataclasses
import datetime
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from streamforge.config import Config
from streamforge.errors import MediaError, StorageError
from streamforge.jobs.processing import LIVE, SHORT, SHUTDOWN, HandBack, Uploader, signed
from streamforge.pipeline import PipelineOptions, levelswitch, pertitle
from streamforge.pipeline import chunks as pchunks
from streamforge.pipeline.ladder import as_levels, plan_ladder
from streamforge.store import chunks, videos
from streamforge.store.db import utcnow

log = logging.getLogger("streamforge.jobs.chunkwork")


class ChunkLost(Exception):
    """The chunk is no longer this holder's (taken back, or its run ended)."""


def plan_of(row) -> pchunks.ChunkPlan:
    """The pipeline's plan of a chunk row."""
    return pchunks.ChunkPlan(index=row.index, start=row.start_frame, end=row.end_frame, first_segment=row.first_segment)


def options_of(config: Config, row) -> PipelineOptions:
    """The encoder settings of a chunk: the instance's, with the levels its run chose for the title."""
    opts = PipelineOptions.from_config(config.pipeline)
    return dataclasses.replace(opts, levels=as_levels(json.loads(row.levels) if row.levels else []))


def describe_chunk(row, result: dict) -> str:
    """The processing log's message for a finished chunk (who encoded it is added by `signed`)."""
    rate = result["rate"][0] / result["rate"][1]
    end = f"{row.end_frame / rate:.1f}" if row.end_frame is not None else "end"
    rungs = ", ".join(f"{r['name']} {len(r['segments'])} segments" for r in result["rungs"])
    return f"chunk {row.index + 1}/{row.count} ({row.start_frame / rate:.1f}-{end} s): {rungs}"


def log_chunk_done(row, result: dict, took: float, by: str) -> None:
    """The `transcode` row of one chunk, naming it and who encoded it."""
    video = videos.get_video_by_id(row.video_id)
    videos.log_stage(row.video_id, video.attempts if video else 0, "transcode", "completed",
                     signed(describe_chunk(row, result), by), round(took, 3))


def encode_here(config: Config, store, row, lease: str, src: Path, info, by: str,
                stop: threading.Event | None = None) -> dict:
    """Encode a claimed chunk on this machine, its files straight into the store; record it done (once)."""
    opts = options_of(config, row)
    work = Path(tempfile.mkdtemp(prefix=f"sf-chunk-{row.index}-", dir=config.pipeline.temp_dir or None))
    uploader = Uploader(store, work, row.prefix)
    lost = threading.Event()
    done = threading.Event()

    def beat() -> None:
        every = max(0.5, min(2.0, config.sweeper.lease_seconds / 4))
        while not done.wait(every):
            try:
                if not chunks.beat(row.id, lease):
                    lost.set()
                    return
            except Exception as e:  # a database blip: the next beat may pass
                log.warning("chunk %s: beat failed: %s", row.id, e)

    def progress(fraction: float, stage: str = "") -> None:
        if lost.is_set():
            raise ChunkLost()
        if SHUTDOWN.is_set() or (stop is not None and stop.is_set()):
            raise HandBack()

    threading.Thread(target=beat, name=f"sf-chunk-beat-{row.index}", daemon=True).start()
    t0 = time.monotonic()
    try:
        result = pchunks.encode_chunk(src, work, info, opts, plan_of(row), progress=progress,
                                      on_file=lambda kind, rel: uploader.submit(rel))
        uploader.barrier()
        if not chunks.complete(row.id, lease, result):
            raise ChunkLost()
        log_chunk_done(row, result, time.monotonic() - t0, by)
        return result
    except (ChunkLost, HandBack, MediaError, StorageError, OSError):
        chunks.release(row.id, lease)
        raise
    finally:
        done.set()
        uploader.close()
        shutil.rmtree(work, ignore_errors=True)


class _Sources:
    """The originals this process downloaded for chunk tasks, kept while their run lasts: a worker that
    encodes several chunks of one video downloads it once. The least recently used unused one goes when a
    third video comes; all of them when the process ends."""

    def __init__(self, keep: int = 2):
        self.keep, self.lock = keep, threading.Lock()
        self.entries: dict[tuple, dict] = {}  # (video id, size, etag) -> {"dir", "path", "users", "used"}

    def acquire(self, config: Config, store, video) -> tuple[tuple, Path]:
        """The original of `video` on local disk (downloaded unless it is here already)."""
        key = (video.id, video.original_file_size, video.original_etag)
        with self.lock:  # one download at a time; a second task for the same video waits for it
            entry = self.entries.get(key)
            if entry is None or not entry["path"].exists():
                self._evict()
                folder = Path(tempfile.mkdtemp(prefix="sf-chunk-src-", dir=config.pipeline.temp_dir or None))
                path = folder / f"original{Path(video.original_file_name or '').suffix[:10]}"
                try:
                    store.download(video.original_key, str(path))
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                entry = self.entries[key] = {"dir": folder, "path": path, "users": 0}
            entry["users"] += 1
            entry["used"] = time.monotonic()
            return key, entry["path"]

    def release(self, key: tuple) -> None:
        """A task is done with the original."""
        with self.lock:
            if key in self.entries:
                self.entries[key]["users"] -= 1

    def _evict(self) -> None:
        idle = sorted((e["used"], k) for k, e in self.entries.items() if e["users"] == 0)
        while len(self.entries) >= self.keep and idle:
            _, key = idle.pop(0)
            shutil.rmtree(self.entries.pop(key)["dir"], ignore_errors=True)

    def clear(self) -> None:
        """Remove every kept original (the process is ending)."""
        with self.lock:
            for entry in self.entries.values():
                shutil.rmtree(entry["dir"], ignore_errors=True)
            self.entries.clear()


SOURCES = _Sources()
atexit.register(SOURCES.clear)


def run_chunk_task(config: Config, chunk_id: str, by: str) -> str:
    """A queue task: encode one chunk if it is still waiting (another worker or runner may have taken it)."""
    from streamforge.pipeline import probe
    from streamforge.store.connect import object_store
    claim = chunks.claim(by, chunk=chunk_id)
    if claim is None:
        return "skipped"
    row, lease = claim
    video = videos.get_video_by_id(row.video_id)
    store = object_store(config)
    key = None
    try:
        key, src = SOURCES.acquire(config, store, video)
        info = probe(src, config.pipeline)
        encode_here(config, store, row, lease, src, info, by)
        return "done"
    except ChunkLost:
        return "lost"
    except HandBack:
        return "handed-back"
    except (MediaError, StorageError, OSError) as e:
        log.warning("chunk %s failed here: %s", chunk_id, e)
        chunks.release(row.id, lease)
        return "released"
    finally:
        if key is not None:
            SOURCES.release(key)


def coordinate(run, src: Path, info, outdir: Path, uploader: Uploader, plans: list, enqueue) -> object:
    """The chunked transcode of a run (see the module's docstring); returns the finished PipelineResult.
    `enqueue(chunk_id)` puts a chunk's task on the queue for the local workers."""
    config = run.config
    opts = PipelineOptions.from_config(config.pipeline)
    rows = [{"index": p.index, "start": p.start, "end": p.end, "first_segment": p.first_segment} for p in plans]
    on_file = lambda kind, rel: uploader.submit(rel)  # noqa: E731
    head_first = run.live and levelswitch.switchable(opts)
    audio = pchunks.WholeAudio(src, outdir, info, opts, on_file, plans[0].end or 0, pause=head_first)
    if head_first:
        levels_note = _head_first(run, src, info, outdir, uploader, rows, opts, audio, enqueue)
    else:
        levels, levels_note = pchunks.choose_levels(src, info, opts, live=run.live)
        for cid in chunks.create(run.video_id, run.token, run.prefix, rows, levels):
            enqueue(cid)
    whole: dict = {}

    def thumbnails() -> None:  # the whole file decoded once more: done while others finish their chunks
        whole.update(pchunks.encode_thumbnails(src, outdir, info, opts, on_file=on_file))
        uploader.barrier()

    results = _collect(run, src, info, outdir, uploader, whole, opts, thumbnails, enqueue, audio.head)
    if "thumbnails" not in whole:
        thumbnails()
    whole.update(audio.whole())
    uploader.barrier()
    result = pchunks.finish_chunked(outdir, results, whole, opts.audio_bitrate, info.duration)
    if levels_note:
        result.notes.insert(0, levels_note)
    uploader.uploaded.update(f for f in result.files if not f.endswith(".m3u8"))
    return result


def _head_first(run, src: Path, info, outdir: Path, uploader: Uploader, rows: list[dict], opts, audio,
                enqueue) -> str | None:
    """A first run: its first chunk (the first segment alone) is encoded here at the fixed levels while the
    title's probe runs beside it at a lower priority, and the early master goes out as soon as it is in;
    then the other chunks are recorded at the chosen levels, for every worker and runner to take. Returns
    the levels' log line. (The chunks join: x264's headers do not depend on the level.)"""
    try:  # the paused audio goes on once the first chunk is in, or whatever stopped it
        chunked = pchunks.chunk_options(opts)
        ladder = plan_ladder(info, chunked)
        later = levelswitch.LevelsLater(src, info, ladder, dataclasses.replace(chunked, live=True)).start()
        fixed = [list(pair) for pair in pertitle.levels_of(ladder)]
        (head,) = chunks.create(run.video_id, run.token, run.prefix, rows[:1], fixed, count=len(rows))
        claim = chunks.claim(run.by, chunk=head)
        if claim is not None:  # (a runner asking for chunk work may have taken it: then _collect waits for it)
            try:
                result = encode_here(run.config, run.store, claim[0], claim[1], src, info, run.by)
                _publish_early(run, outdir, uploader, result, audio.head(), opts)
            except ChunkLost:
                run.check_lease()
    finally:
        audio.go()
    note = later.join("the first chunk (the first segment)")
    levels = [list(entry) for entry in later.chosen]
    for cid in chunks.create(run.video_id, run.token, run.prefix, rows[1:], levels, count=len(rows)):
        enqueue(cid)
    return note


def _collect(run, src: Path, info, outdir: Path, uploader: Uploader, whole: dict, opts, idle, enqueue,
             audio_head) -> list[dict]:
    """Encode waiting chunks here, take back stale ones, publish the first chunk early (with the audio
    `audio_head()` gives), call `idle` once (the thumbnails) after this worker's first chunk or when no chunk
    is left to take; every chunk's result."""
    lease = datetime.timedelta(seconds=run.config.sweeper.lease_seconds)
    published = not run.live or run.published

    def rows_now() -> list:
        nonlocal published
        rows = chunks.of_run(run.video_id, run.token)
        run.progress = min(0.95, 0.1 + 0.85 * sum(r.state == chunks.DONE for r in rows) / max(1, len(rows)))
        if not published and rows and rows[0].state == chunks.DONE:
            _publish_early(run, outdir, uploader, json.loads(rows[0].result), audio_head(), opts)
            published = True
        return rows

    while True:
        run.check_lease()
        if SHUTDOWN.is_set():
            raise HandBack()
        rows = rows_now()
        claim = chunks.claim(run.by, video_id=run.video_id)
        if claim is not None:
            try:
                encode_here(run.config, run.store, claim[0], claim[1], src, info, run.by)
            except ChunkLost:
                run.check_lease()
            if "thumbnails" not in whole:
                rows_now()  # the first chunk's master first (playable early)
                idle()  # then the thumbnails, while the other workers go on with their chunks
            continue
        done = [r for r in rows if r.state == chunks.DONE]
        if rows and len(done) == len(rows):
            results = [json.loads(r.result) for r in rows]
            _check_in_store(run, results)
            return results
        if "thumbnails" not in whole:
            idle()
            continue
        if any(r.attempts >= run.config.sweeper.max_attempts + 2 and r.state == chunks.WAITING for r in rows):
            raise MediaError("a chunk failed on every worker that tried it")
        for cid in chunks.reclaim_stale(run.video_id, run.token, utcnow() - lease):
            enqueue(cid)  # its holder stopped beating: the next worker or runner takes it
        time.sleep(0.3)


def _publish_early(run, outdir: Path, uploader: Uploader, first: dict, whole: dict, opts) -> None:
    files = pchunks.first_chunk_master(outdir, first, whole, opts.audio_bitrate)
    for rel in files:
        uploader.put_now(rel, SHORT if rel == "master.m3u8" else LIVE)
    if "master.m3u8" in files:
        run.check_lease()
        url = run.store.public_url(uploader.key("master.m3u8"))
        if videos.set_playable(run.video_id, run.token, master_url=url, processed_path=run.prefix):
            run.published = True
            run.emit("video.playable", run.video_id)


def _check_in_store(run, results: list[dict]) -> None:
    """Every segment and init a chunk reported is in the store at the size it reported."""
    listed = {o.key: o.size for o in run.store.list(run.prefix + "/")}
    for result in results:
        for rung in result["rungs"]:
            for seg in rung["segments"]:
                key = f"{run.prefix}/{rung['name']}/{seg['filename']}"
                if listed.get(key) != seg["size"]:
                    raise StorageError(f"chunk {result['index'] + 1}: {rung['name']}/{seg['filename']} is not in "
                                       f"the store as its encoder reported it")
            if f"{run.prefix}/{rung['name']}/{rung['init']}" not in listed:
                raise StorageError(f"chunk {result['index'] + 1}: {rung['name']}/{rung['init']} is missing")

