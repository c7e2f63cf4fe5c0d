"""Pure media code: probe, plan the ladder, transcode once into HLS with thumbnails.

No Flask, peewee or minio here: files in, files out, progress through a callback.
"""
from streamforge.pipeline.ladder import PipelineOptions, RenditionSpec, plan_ladder
from streamforge.pipeline.probe import ProbeResult, probe
from streamforge.pipeline.run import run_pipeline
from streamforge.pipeline.thumbnails import ThumbnailOutput
from streamforge.pipeline.transcode import AudioOutput, PipelineResult, RenditionOutput

__all__ = [
    "AudioOutput", "PipelineOptions", "PipelineResult", "ProbeResult", "RenditionOutput", "RenditionSpec",
    "ThumbnailOutput", "plan_ladder", "probe", "run_pipeline",
]
