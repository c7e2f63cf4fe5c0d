"""Auto captions: after a run completes, transcribe the video's default audio track into an `auto` track.

It is its own queue task, enqueued once the run has recorded COMPLETED, so neither playable nor
COMPLETED ever waits for it; it writes the stage `captions` to the processing log, and a failure
there only says why (the video stays COMPLETED). An uploaded or original track of the spoken
language wins over the transcription.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from streamforge.config import Config
from streamforge.errors import MediaError, StorageError
from streamforge.jobs.processing import SHUTDOWN, HandBack, _Stage
from streamforge.pipeline import speech
from streamforge.pipeline.captions import to_webvtt
from streamforge.store import captions, videos
from streamforge.store.connect import object_store
from streamforge.store.db import ProcessingStatus

log = logging.getLogger("streamforge.jobs.captioning")


def options(config: Config) -> speech.SpeechOptions:
    """The transcription settings from `[captions]`."""
    c = config.captions
    return speech.SpeechOptions(model=c.model, language=c.language, threads=c.threads)


def caption_video(config: Config, video_id: str) -> str:
    """Transcribe a COMPLETED video into its `auto` caption track; returns what happened."""
    video = videos.get_video_by_id(video_id)
    if video is None or video.status != ProcessingStatus.COMPLETED:
        return "skipped"
    store = object_store(config)
    workdir = Path(tempfile.mkdtemp(prefix=f"sf-captions-{video_id}-", dir=config.pipeline.temp_dir or None))
    try:
        with _Stage(video_id, video.attempts, "captions") as stage:
            stage.message = _transcribe(config, store, video, workdir)
        return "captioned"
    except HandBack:  # the worker is stopping: the task goes back on the queue
        return "handed-back"
    except (MediaError, StorageError, OSError) as e:  # logged by the stage; the video stays COMPLETED
        log.warning("auto captions of %s failed: %s", video_id, e)
        return "captions-failed"
    except Exception:  # the same, for a failure nobody foresaw
        log.exception("auto captions of %s failed", video_id)
        return "captions-failed"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stop_at_shutdown(seconds_done: float) -> None:
    if SHUTDOWN.is_set():
        raise HandBack()


def _transcribe(config: Config, store, video, workdir: Path) -> str:
    """Download the original, transcribe it, store and publish the track; returns the log message."""
    from streamforge.pipeline import probe
    src = workdir / f"original{Path(video.original_file_name).suffix[:10]}"
    store.download(video.original_key, str(src))
    info = probe(src)  # the output's 0 is the first video frame, as for every track
    if not info.has_audio:
        return "no audio track: nothing to transcribe"
    t0 = time.monotonic()
    result = speech.transcribe(src, options(config), start=info.start_time if info.kind == "video" else 0.0,
                               progress=_stop_at_shutdown)
    took = time.monotonic() - t0
    rate = f"{took:.1f} s for {result.audio_seconds:.1f} s of audio"
    if not result.cues:
        return f"no speech found ({rate})"
    if videos.is_archived(video.id):  # deleted meanwhile: its objects are gone and must stay gone
        return f"the video was deleted during its transcription ({rate})"
    if captions.save_auto_track(video.id, result.language, to_webvtt(result.cues)) is None:
        return f"the {result.language} track that is there was kept ({len(result.cues)} cues transcribed, {rate})"
    captions.publish(store, videos.get_video_by_id(video.id))
    return f"{len(result.cues)} cues in {result.language} ({rate})"
