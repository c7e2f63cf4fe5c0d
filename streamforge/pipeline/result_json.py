"""A pipeline result and options as plain JSON, for the remote runner: the work's settings go out with it and
what the runner wrote comes back (the instance rebuilds the result to publish it)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from streamforge.pipeline.ladder import PipelineOptions, as_levels
from streamforge.pipeline.thumbnails import ThumbnailOutput
from streamforge.pipeline.transcode import AudioOutput, PipelineResult, RenditionOutput

PROBE_FIELDS = ("duration", "width", "height", "kind", "start_time", "has_audio")


def options_to_dict(opts: PipelineOptions) -> dict:
    """The encoder settings as JSON: every field of PipelineOptions."""
    return json_safe(dataclasses.asdict(opts))


def options_from_dict(data: dict) -> PipelineOptions:
    """PipelineOptions from `options_to_dict`'s output; unknown fields (a newer instance) are left out."""
    known = {f.name for f in dataclasses.fields(PipelineOptions)}
    values = {k: v for k, v in data.items() if k in known}
    for name in ("codecs", "heights"):
        if name in values:
            values[name] = tuple(values[name])
    if "levels" in values:
        values["levels"] = as_levels(values["levels"])
    return PipelineOptions(**values)


def result_to_dict(result: PipelineResult) -> dict:
    """What a run wrote, as JSON (the probe reduced to what publishing needs)."""
    probe = {name: getattr(result.probe, name, None) for name in PROBE_FIELDS}
    return json_safe({"probe": probe, "master": result.master,
                      "renditions": [dataclasses.asdict(r) for r in result.renditions],
                      "audio": dataclasses.asdict(result.audio) if result.audio else None,
                      "audio_tracks": [dataclasses.asdict(a) for a in getattr(result, "audio_tracks", [])],
                      "thumbnails": [dataclasses.asdict(t) for t in result.thumbnails],
                      "files": list(result.files), "notes": list(result.notes)})


def result_from_dict(data: dict) -> PipelineResult:
    """A PipelineResult from `result_to_dict`'s output; KeyError or TypeError when it is malformed."""
    return PipelineResult(
        probe=SimpleNamespace(**{name: data["probe"].get(name) for name in PROBE_FIELDS}),
        master=str(data["master"]),
        renditions=[_build(RenditionOutput, r) for r in data["renditions"]],
        audio=_build(AudioOutput, data["audio"]) if data.get("audio") else None,
        audio_tracks=[_build(AudioOutput, a) for a in data.get("audio_tracks") or []],
        thumbnails=[_build(ThumbnailOutput, t) for t in data["thumbnails"]],
        files=[str(f) for f in data["files"]], notes=[str(n) for n in data.get("notes", [])])


def _build(cls, values: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def json_safe(value):
    """Tuples as lists, Fractions as floats: what json.dumps takes."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return float(value)
