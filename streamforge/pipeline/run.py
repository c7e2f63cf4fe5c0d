"""The pipeline's entry point: probe the input, then encode the video ladder or package the audio."""
from __future__ import annotations

import os
from pathlib import Path

from streamforge.pipeline.audio import run_audio_pipeline
from streamforge.pipeline.ladder import PRESETS, PipelineOptions
from streamforge.pipeline.probe import probe
from streamforge.pipeline.transcode import (
    FileCallback,
    PipelineResult,
    ProgressCallback,
    _Progress,
    run_video_pipeline,
)


def run_pipeline(src: str | os.PathLike, outdir: str | os.PathLike, opts: PipelineOptions,
                 progress: ProgressCallback | None = None, on_file: FileCallback | None = None) -> PipelineResult:
    """Turn `src` into an HLS ladder with thumbnails under `outdir`; raise MediaError on bad input.

    With opts.live the files are written straight into outdir and announced through on_file as
    they are finished (EVENT playlists, the master once every track has a segment); otherwise
    everything is built in a temporary sibling directory and moved into place at the end. A failed
    run removes what it wrote and never leaves a master.m3u8.
    """
    src, outdir = Path(src), Path(outdir)
    if opts.preset and opts.preset not in PRESETS:
        raise ValueError(f"unknown preset {opts.preset!r}; choose from {', '.join(PRESETS)}")
    report = _Progress(progress)
    emit = on_file or (lambda kind, relpath: None)
    report(0.0, "probe", force=True)
    info = probe(src, opts)
    if info.kind == "audio":  # an audio-only file: one AAC rendition and a cover
        return run_audio_pipeline(src, outdir, info, opts, report, emit)
    return run_video_pipeline(src, outdir, info, opts, report, emit)
