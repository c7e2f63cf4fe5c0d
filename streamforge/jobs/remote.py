"""The instance's side of remote runners: hand a waiting run to a runner, presign its input and outputs,
take its progress, logs and beats, and publish what it wrote once checked.

Like PeerTube's runners (a token, a long-polling request, updates with progress, success or error), but
one queue for all: a runner claims a video exactly as a local worker does (the guarded PENDING ->
PROCESSING of store/videos.py, with the run's lease token and heartbeat), so local workers and runners
share the work and the sweeper takes back a run whose runner stopped beating. The runner never holds a
credential: it reads its input and writes its output through presigned URLs scoped to its run's keys,
and its encoder settings come with the work. Publishing reuses the local run's own upload and database
stages, after checking every file the runner names is in the store at the size it reported.
"""
from __future__ import annotations

import datetime
import json
import logging
import posixpath
import re
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from streamforge import captiontext
from streamforge.config import Config
from streamforge.errors import MediaError, StorageError, ValidationError
from streamforge.jobs import tasks
from streamforge.jobs.chunkwork import log_chunk_done, options_of
from streamforge.jobs.processing import VideoRun, checked_original, describe, signed
from streamforge.pipeline import PipelineOptions
from streamforge.pipeline.ladder import as_levels
from streamforge.pipeline.result_json import options_to_dict, result_from_dict
from streamforge.store import captions, chunks, runners, videos
from streamforge.store.connect import object_store
from streamforge.store.db import Runner, Video, utcnow

log = logging.getLogger("streamforge.jobs.remote")

INPUT_URL_TTL = 6 * 3600
OUTPUT_URL_TTL = 900
MAX_WAIT = 30.0
STAGES = ("download", "probe", "transcode", "thumbnails", "upload")
SAFE_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*){0,2}$")
CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/iso.segment", ".mp4": "video/mp4",
                 ".jpg": "image/jpeg", ".webp": "image/webp", ".vtt": "text/vtt"}


class JobGone(Exception):
    """The runner no longer holds this work (the sweeper took it back, or it was revoked or finished)."""


def request_work(config: Config, runner: Runner, wait: float) -> dict | None:
    """Long poll: claim the longest-waiting video for `runner` within `wait` seconds; its job, or None."""
    deadline = time.monotonic() + max(0.0, min(MAX_WAIT, wait))
    while True:
        if not runners.active(runner.id):  # revoked while it waited: claim nothing more for it
            return None
        chunk = chunks.claim(f"runner {runner.name}")  # chunks first: they finish videos already started
        if chunk is not None:
            row, lease = chunk
            runners.hold(runner, row.video_id, lease, job_id=row.id, kind="chunk")
            return _chunk_job(config, row, lease)
        for video_id in runners.waiting_videos():
            claim = videos.claim_run(video_id)
            if claim is not None:
                video, token = claim
                runners.hold(runner, video.id, token)
                try:
                    checked_original(config, object_store(config), video)
                    return _job(config, runner, video, token)
                except MediaError as e:  # as a local run's download stage would
                    _run_of(config, runner, video.id, token)._fail(describe(e))
                    runners.drop(runner, video.id, token, "failed")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def _run_of(config: Config, runner: Runner, job_id: str, token: str) -> VideoRun:
    """The run behind a job this runner holds with this token; JobGone when it does not any more."""
    if not isinstance(token, str) or runners.held(runner, job_id, token) is None or not videos.still_mine(job_id,
                                                                                                         token):
        raise JobGone()
    video = Video.get_by_id(job_id)
    return VideoRun(config, object_store(config), video, token, emit=lambda e, v: tasks.emit_event(config, e, v),
                    by=f"runner {runner.name}")


def _job(config: Config, runner: Runner, video: Video, token: str) -> dict:
    run = _run_of(config, runner, video.id, token)
    opts = PipelineOptions.from_config(config.pipeline)
    return {"id": video.id, "token": token, "kind": "run", "video_id": video.id, "attempt": video.attempts,
            "live": run.live, "lease_seconds": config.sweeper.lease_seconds,
            "chunk_seconds": config.pipeline.chunk_seconds,
            "input": {"url": run.store.presigned_get(video.original_key, INPUT_URL_TTL),
                      "filename": video.original_file_name, "size": video.original_file_size},
            "options": options_to_dict(opts)}


def _chunk_job(config: Config, row, lease: str) -> dict:
    video = Video.get_by_id(row.video_id)
    store = object_store(config)
    return {"id": row.id, "token": lease, "kind": "chunk", "video_id": video.id, "attempt": video.attempts,
            "lease_seconds": config.sweeper.lease_seconds,
            "chunk": {"index": row.index, "count": row.count, "start": row.start_frame, "end": row.end_frame,
                      "first_segment": row.first_segment},
            "input": {"url": store.presigned_get(video.original_key, INPUT_URL_TTL),
                      "filename": video.original_file_name, "size": video.original_file_size},
            "options": options_to_dict(options_of(config, row))}


def _chunk_of(runner: Runner, job_id: str, token: str):
    """The chunk behind a chunk job this runner holds with this lease; JobGone when it does not any more."""
    row = chunks.get(job_id)
    if (not isinstance(token, str) or row is None or row.state != chunks.RUNNING or row.lease != token
            or runners.held(runner, job_id, token) is None):
        raise JobGone()
    return row


def _is_chunk(job_id: str) -> bool:
    return "." in job_id  # a chunk's id is "{video}.{run}.{index}"; a run's is its video's id


def presign_outputs(config: Config, runner: Runner, job_id: str, token: str, files: list) -> dict:
    """Presigned PUT URLs for output files of the run or chunk (paths under its output, nothing else)."""
    if _is_chunk(job_id):
        run = SimpleNamespace(prefix=_chunk_of(runner, job_id, token).prefix, store=object_store(config))
    else:
        run = _run_of(config, runner, job_id, token)
    if not isinstance(files, list) or not files or len(files) > 200:
        raise ValidationError("files: a list of 1 to 200 relative paths")
    urls = {}
    for rel in files:
        if not isinstance(rel, str) or not SAFE_PATH.match(rel) or ".." in rel or rel.startswith("downloads/"):
            raise ValidationError(f"not an output path: {rel!r}")
        kind = CONTENT_TYPES.get(posixpath.splitext(rel)[1], "application/octet-stream")
        urls[rel] = run.store.presign_put(f"{run.prefix}/{rel}", kind, OUTPUT_URL_TTL)
    return {"urls": urls}


def update(config: Config, runner: Runner, job_id: str, token: str, body: dict) -> None:
    """A beat with progress, the stage rows the runner finished, what it learnt of the original, or the master
    it published (playable early)."""
    if _is_chunk(job_id):
        if not chunks.beat(_chunk_of(runner, job_id, token).id, token):
            raise JobGone()
        return
    run = _run_of(config, runner, job_id, token)
    progress = body.get("progress")
    progress = min(0.95, 0.05 + 0.9 * float(progress)) if isinstance(progress, (int, float)) else None
    if not videos.heartbeat(job_id, token, progress):
        raise JobGone()
    for row in body.get("log") or []:
        _log_row(run, row)
    original = body.get("original")
    if isinstance(original, dict):
        if isinstance(original.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", original["sha256"]):
            videos.set_original_sha256(job_id, token, original["sha256"])
        if isinstance(original.get("duration"), (int, float)) and original.get("kind") in ("video", "audio"):
            videos.set_original_info(job_id, token, duration=float(original["duration"]), kind=original["kind"])
    if body.get("playable") == "master.m3u8" and run.live:
        key = f"{run.prefix}/master.m3u8"
        if run.store.exists(key) and videos.set_playable(job_id, token, master_url=run.store.public_url(key),
                                                         processed_path=run.prefix):
            run.emit("video.playable", job_id)


def _log_row(run: VideoRun, row) -> None:
    if not isinstance(row, dict) or row.get("stage") not in STAGES or row.get("status") not in (
            "started", "completed", "failed"):
        raise ValidationError("log rows are {stage, status, message, duration}")
    duration = row.get("duration")
    videos.log_stage(run.video_id, run.attempt, row["stage"], row["status"],
                     signed(str(row.get("message") or f"{row['stage']} {row['status']}")[:1500], run.by),
                     float(duration) if isinstance(duration, (int, float)) else None,
                     error_code=str(row["error_code"])[:100] if row.get("error_code") else None)


def succeed(config: Config, runner: Runner, job_id: str, token: str, body: dict) -> str:
    """The runner finished: check its files, then publish (upload and database stages); returns the outcome."""
    if _is_chunk(job_id):
        return _chunk_done(config, runner, _chunk_of(runner, job_id, token), token, body)
    run = _run_of(config, runner, job_id, token)
    try:
        if body.get("chunked"):
            result = sizes = None
        else:
            result = result_from_dict(body["result"])
            sizes = {str(k): int(v) for k, v in body["sizes"].items()}
        tracks = _tracks(body)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValidationError(f"the result is malformed: {e}") from None
    try:
        if body.get("chunked"):
            outcome = finish_chunked_run(run, body)
        else:
            outcome = _publish(run, result, sizes, tracks)
    except MediaError as e:
        run.remove_own_output()
        run._fail(describe(e))
        outcome = "failed"
    except StorageError as e:
        outcome = str(run._retry_or_fail(e))
    runners.drop(runner, job_id, token, "done" if outcome == "completed" else "failed")
    if outcome == "retry":
        tasks.enqueue_processing(job_id, delay=5)
    if outcome == "completed" and config.captions.auto and not captions.has_auto_track(job_id):
        tasks.enqueue_captions(job_id)  # as after a local run: the transcription is a worker's task of its own
    return outcome


def _upload_and_record(run: VideoRun, outdir: Path, result, tracks: list, then=None) -> str:
    """The upload and database stages of a run whose files a runner wrote (checked and now under `outdir`)."""
    uploader = run.uploader = _uploaded(run, outdir, result)
    run.subtitles = tracks
    total = run.upload(outdir, result, uploader)
    run.record(result, total)
    captions.after_run(run.store, run.video_id, run.caption_versions)
    if then is not None:
        then()
    try:
        run.remove_stale_outputs()
    except StorageError as e:
        log.warning("old outputs of %s stay in the store: %s", run.video_id, e)
    return "completed"


def _publish(run: VideoRun, result, sizes: dict[str, int], tracks: list) -> str:
    run.relabel(f"the instance, for {run.by}")  # upload and database: the web side publishes what the runner wrote
    work = Path(tempfile.mkdtemp(prefix=f"sf-remote-{run.video_id}-", dir=run.config.pipeline.temp_dir or None))
    try:
        outdir = work / "out"
        _check_written(run, result, sizes, outdir)
        return _upload_and_record(run, outdir, result, tracks)
    finally:
        run._stop.set()
        if run.uploader is not None:
            run.uploader.close()
        shutil.rmtree(work, ignore_errors=True)


def _uploaded(run: VideoRun, outdir: Path, result):
    from streamforge.jobs.processing import Uploader
    uploader = Uploader(run.store, outdir, run.prefix)
    uploader.uploaded.update(f for f in result.files if not f.endswith(".m3u8"))
    return uploader


def _check_written(run: VideoRun, result, sizes: dict[str, int], outdir: Path) -> None:
    """Every file the result names is in the store at the size the runner reported, and every playlist
    (fetched into `outdir`, where the upload stage finishes the master) names only those files."""
    files = set(result.files)
    if set(sizes) != files or result.master not in files or not (result.renditions or result.audio):
        raise MediaError("the runner's result does not match the files it reported")
    for rel in sorted(files):
        if not SAFE_PATH.match(rel):
            raise MediaError(f"the runner named a file outside its output: {rel!r}")
        info = run.store.stat(f"{run.prefix}/{rel}")
        if info is None or info.size != sizes[rel]:
            raise StorageError(f"{rel} is not in the store as the runner reported it "
                               f"({'missing' if info is None else f'{info.size} bytes, not {sizes[rel]}'})")
        if rel.endswith(".m3u8"):
            local = outdir / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            run.store.download(f"{run.prefix}/{rel}", local)
            _check_playlist(rel, local.read_text(encoding="utf-8"), files)


def _check_playlist(rel: str, text: str, files: set[str]) -> None:
    base = posixpath.dirname(rel)
    for line in text.splitlines():
        uri = line.split('URI="', 1)[1].split('"', 1)[0] if 'URI="' in line else (
            line.strip() if line.strip() and not line.startswith("#") else None)
        if uri is None:
            continue
        target = posixpath.normpath(posixpath.join(base, uri))
        if target not in files:
            raise MediaError(f"{rel} names {uri}, which the runner did not write")


def _chunk_done(config: Config, runner: Runner, row, lease: str, body: dict) -> str:
    """A runner's chunk: every file it reports is in the store at its size, then it is done (once)."""
    result = body.get("result")
    try:
        store = object_store(config)
        listed = {o.key: o.size for o in store.list(f"{row.prefix}/")}
        for rung in result["rungs"]:
            if f"{row.prefix}/{rung['name']}/{rung['init']}" not in listed:
                raise StorageError(f"{rung['name']}/{rung['init']} is missing")
            for seg in rung["segments"]:
                if listed.get(f"{row.prefix}/{rung['name']}/{seg['filename']}") != int(seg["size"]):
                    raise StorageError(f"{rung['name']}/{seg['filename']} is not in the store as reported")
    except (KeyError, TypeError, ValueError) as e:
        raise ValidationError(f"the chunk's result is malformed: {e}") from None
    except StorageError as e:
        chunks.release(row.id, lease)
        runners.drop(runner, row.id, lease, "failed")
        return f"released: {e}"
    if not chunks.complete(row.id, lease, result):
        raise JobGone()
    job = runners.held(runner, row.id, lease)
    took = (time.time() - job.started_at.replace(tzinfo=datetime.timezone.utc).timestamp()) if job else 0.0
    log_chunk_done(row, result, took, f"runner {runner.name}")
    runners.drop(runner, row.id, lease, "done")
    return "completed"


def fail(config: Config, runner: Runner, job_id: str, token: str, body: dict) -> str:
    """The runner could not process the video: FAILED with its reason (bad input), or back to the queue."""
    if _is_chunk(job_id):
        row = _chunk_of(runner, job_id, token)
        chunks.release(row.id, token)
        runners.drop(runner, job_id, token, "failed")
        return "released"
    run = _run_of(config, runner, job_id, token)
    message = str(body.get("message") or "the runner failed")[:500]
    if body.get("retry"):
        outcome = str(run._retry_or_fail(StorageError(message)))
        if outcome == "retry":
            tasks.enqueue_processing(job_id, delay=5)
    else:
        run.remove_own_output()
        run._fail(signed(message, run.by))
        outcome = "failed"
    runners.drop(runner, job_id, token, "failed")
    return outcome


def give_back(config: Config, runner: Runner, job_id: str, token: str) -> str:
    """The runner is stopping: the run goes back to the queue at once, for another worker or runner."""
    if _is_chunk(job_id):
        chunks.release(_chunk_of(runner, job_id, token).id, token)
        runners.drop(runner, job_id, token, None)
        return "handed-back"
    run = _run_of(config, runner, job_id, token)
    run.remove_own_output()
    handed = videos.release_run(job_id, token, None)
    runners.drop(runner, job_id, token, None)
    if handed:
        tasks.enqueue_processing(job_id)
    return "handed-back"


def revoke(config: Config, runner_id: str) -> None:
    """Revoke a runner: its token stops working and its runs go back to the queue."""
    for video_id in runners.revoke_runner(runner_id):
        tasks.enqueue_processing(video_id)


# ---------- a runner that holds a chunked run ----------

def plan_chunks(config: Config, runner: Runner, job_id: str, token: str, plan, levels=None) -> dict:
    """The runner that holds a run cut it into chunks: record them (waiting for any worker or runner), with the
    levels it chose for the title ([[rung name, level, peak], ...]), which every chunk's job then carries."""
    run = _run_of(config, runner, job_id, token)
    levels = _levels(levels)
    try:
        rows = [{"index": int(p["index"]), "start": int(p["start"]),
                 "end": None if p["end"] is None else int(p["end"]), "first_segment": int(p["first_segment"])}
                for p in plan]
    except (KeyError, TypeError, ValueError):
        raise ValidationError("plan: a list of {index, start, end, first_segment}") from None
    ok = rows and [r["index"] for r in rows] == list(range(len(rows))) and rows[0]["start"] == 0 and all(
        a["end"] == b["start"] and a["start"] < b["start"] for a, b in zip(rows, rows[1:])) and rows[-1]["end"] is None
    if not ok or len(rows) > 10000:
        raise ValidationError("plan: chunks must follow each other from frame 0 to the end")
    ids = chunks.create(run.video_id, run.token, run.prefix, rows, levels)
    for cid in ids:
        tasks.enqueue_chunk(cid)
    return {"ids": ids}


def _levels(levels) -> list:
    """A chunked run's levels as a runner sent them: [[rung name, level 0-63, peak], ...], the peak (the VBV
    peak as a share of the target bitrate, 0.1-4) optional (none: the fixed levels)."""
    if levels is None:
        return []
    form = "levels: a list of [rung name, level] or [rung name, level, peak]"
    try:
        if not all(len(entry) in (2, 3) for entry in levels):
            raise ValueError("two or three figures an entry")
        entries = [list(entry) for entry in as_levels(levels)]
    except (TypeError, ValueError):
        raise ValidationError(form) from None
    if len(entries) > 64 or not all(0 <= level <= 63 and 0 < len(name) <= 40 and all(0.1 <= p <= 4 for p in peak)
                                    for name, level, *peak in entries):
        raise ValidationError(f"{form}, each level 0-63 and peak 0.1-4")
    return entries


def claim_own_chunk(config: Config, runner: Runner, job_id: str, token: str, whole: dict | None = None) -> dict:
    """The run's holder asks for one of its own waiting chunks; also takes back stale ones and publishes the
    first chunk's master (playable early). {"job": chunk job or None, "done", "total"}."""
    run = _run_of(config, runner, job_id, token)
    if not videos.heartbeat(job_id, token, None):
        raise JobGone()
    lease = datetime.timedelta(seconds=config.sweeper.lease_seconds)
    for cid in chunks.reclaim_stale(run.video_id, run.token, utcnow() - lease):
        tasks.enqueue_chunk(cid)
    rows = chunks.of_run(run.video_id, run.token)
    done = sum(1 for r in rows if r.state == chunks.DONE)
    if whole is not None and rows and rows[0].state == chunks.DONE and run.live and not run.video.playable_at:
        _publish_first_chunk(run, rows[0], whole)
    claim = chunks.claim(f"runner {runner.name}", video_id=run.video_id)
    job = None
    if claim is not None:
        row, chunk_lease = claim
        runners.hold(runner, row.video_id, chunk_lease, job_id=row.id, kind="chunk")
        job = _chunk_job(config, row, chunk_lease)
    return {"job": job, "done": done, "total": len(rows)}


def _publish_first_chunk(run: VideoRun, first, whole: dict) -> None:
    from streamforge.jobs.processing import LIVE, SHORT
    from streamforge.pipeline import chunks as pchunks
    work = Path(tempfile.mkdtemp(prefix=f"sf-early-{run.video_id}-"))
    try:
        files = pchunks.first_chunk_master(work, json.loads(first.result), whole, run.config.pipeline.audio_bitrate)
        for rel in files:
            run.store.upload_file(f"{run.prefix}/{rel}", str(work / rel), cache_control=SHORT if rel == "master.m3u8"
                                  else LIVE)
        if "master.m3u8" in files and videos.set_playable(
                run.video_id, run.token, master_url=run.store.public_url(f"{run.prefix}/master.m3u8"),
                processed_path=run.prefix):
            run.emit("video.playable", run.video_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def finish_chunked_run(run: VideoRun, body: dict) -> str:
    """Publish a chunked run a runner held: every chunk done and in the store, the whole pass's files in the
    store at their sizes, then the playlists and master, and the upload and database stages."""
    from streamforge.jobs.chunkwork import _check_in_store
    from streamforge.pipeline import chunks as pchunks
    run.relabel(f"the instance, for {run.by}")
    chunked = body["chunked"]
    rows = chunks.of_run(run.video_id, run.token)
    if not rows or any(r.state != chunks.DONE for r in rows):
        raise ValidationError("not every chunk is done yet")
    results = [json.loads(r.result) for r in rows]
    _check_in_store(run, results)
    for rel, size in {str(k): int(v) for k, v in body["sizes"].items()}.items():
        info = run.store.stat(f"{run.prefix}/{rel}") if SAFE_PATH.match(rel) else None
        if info is None or info.size != size:
            raise StorageError(f"{rel} is not in the store as the runner reported it")
    work = Path(tempfile.mkdtemp(prefix=f"sf-remote-{run.video_id}-", dir=run.config.pipeline.temp_dir or None))
    try:
        outdir = work / "out"
        result = pchunks.finish_chunked(outdir, results, chunked["whole"], chunked["audio_bitrate"],
                                        float(chunked["duration"]))
        return _upload_and_record(run, outdir, result, _tracks(body),
                                  then=lambda: chunks.delete_run(run.video_id, run.token))
    finally:
        run._stop.set()
        if run.uploader is not None:
            run.uploader.close()
        shutil.rmtree(work, ignore_errors=True)


def _tracks(body: dict) -> list:
    return [captiontext.SubtitleTrack(index=int(t["index"]), language=captiontext.normalise_language(
        t.get("language")), label=str(t.get("label") or "")[:100], cues=captiontext.parse_captions(t["webvtt"]))
        for t in body.get("subtitles") or []]
