"""Per-title levels chosen while a live run's first segment encodes (first playable within seconds).

A live run of a video at least SWITCH_MIN_SECONDS long does not wait for the per-title probe
(pipeline/pertitle.py, about a second and a half of two cores) before it encodes: its H.264 rungs start
at the fixed levels, the probe runs beside them at a lower priority, and at the first segment boundary
each rung waits for the probe's levels and goes on at its own. The first segment (first_segment_seconds,
a few percent of such a video) keeps the fixed levels; every later segment has the per-title ones.

The switch (transcode._RungEncoder) flushes the first encoder at the boundary and closes its muxer, so
the first segment is out before the probe is done, then opens a second encoder and muxer at the new level
with every other setting the same, writing into the same sink: x264's `stitchable` keeps the sequence and
picture parameter sets free of the level, so both init segments are byte for byte the same and one serves
the whole rung (hls.FragmentSink.resume checks it, and the run fails if not). The boundary is a forced
IDR, so no picture after it refers to one before it. Shorter videos probe first, as non-live runs do:
their first segment would be a large share of the bytes at levels not chosen for them. A chunked first
run does the same with its first chunk (jobs/chunkwork.py), when `switchable`.
"""
from __future__ import annotations

import threading
from pathlib import Path

from streamforge.pipeline import pertitle
from streamforge.pipeline.ladder import PipelineOptions, RenditionSpec
from streamforge.pipeline.probe import ProbeResult
from streamforge.pipeline.workers import Aborted, lower_priority

SWITCH_MIN_SECONDS = 10.0  # shorter live runs probe before they encode (the first segment is >5 % of them)
PROBE_NICE = 10  # the probe thread's priority below the encoders' while they encode the first segment


class LevelsLater:
    """The per-title levels of a live run, chosen by a probe thread while the rungs encode."""

    def __init__(self, src: Path, info: ProbeResult, rungs: list[RenditionSpec], opts: PipelineOptions):
        self.rungs: dict[str, RenditionSpec] = {}  # the rungs at their chosen levels and peaks, by name
        self.note: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._choose, args=(src, info, rungs, opts),
                                        name="per-title-probe", daemon=True)

    def start(self) -> LevelsLater:
        self._thread.start()
        return self

    def _choose(self, src: Path, info: ProbeResult, rungs: list[RenditionSpec], opts: PipelineOptions) -> None:
        lower_priority(PROBE_NICE)  # x264's threads and the VMAF processes it starts inherit it
        try:
            chosen, note = pertitle.choose_levels(src, info, rungs, opts)
            self.rungs = {r.name: r for r in chosen}
            self.note = note
        except Exception as e:  # noqa: BLE001 - the run goes on at the fixed levels, and says why
            self.note = f"per-title levels: not measured ({type(e).__name__}: {e}); the fixed levels"
        finally:
            self._done.set()

    @property
    def chosen(self) -> tuple:
        """pertitle.levels_of the chosen rungs (empty: the fixed levels)."""
        return pertitle.levels_of(list(self.rungs.values()))

    def wait(self, abort: threading.Event) -> dict[str, RenditionSpec]:
        """The rungs at their chosen levels and peaks by name (empty: keep the fixed ones); raise Aborted if
        the run fails."""
        while not self._done.wait(0.1):
            if abort.is_set():
                raise Aborted()
        return self.rungs

    def join(self, first: str = "the first segment") -> str | None:
        """Wait for the probe (it is bounded by its own timeouts); its processing-log line, saying that
        `first` was encoded at the fixed levels meanwhile."""
        self._thread.join()
        if self.note and "not measured" not in self.note:
            return f"{self.note}; {first} at the fixed levels while the probe ran"
        return self.note


def switches(info: ProbeResult, opts: PipelineOptions) -> bool:
    """Whether this run encodes its first segment while the probe runs: a live run of a long enough video
    whose levels are still to choose."""
    return opts.live and info.duration >= SWITCH_MIN_SECONDS and switchable(opts)


def switchable(opts: PipelineOptions) -> bool:
    """Whether a run with these options may encode at the fixed levels until its per-title ones are chosen:
    levels still to choose, with x264's options as ours (an admin's own could make the headers depend on
    the level)."""
    return (not opts.levels and bool(opts.target_quality) and opts.rate_control == "crf"
            and not (opts.encoder_options or {}).get("h264"))
