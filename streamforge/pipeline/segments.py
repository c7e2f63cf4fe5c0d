"""Where segments start: the same output frame numbers in every rung, so every rung's segments line up."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

from streamforge.pipeline.ladder import PipelineOptions


@dataclass(frozen=True)
class Timeline:
    """Output frame rate and the frame numbers where segments start (identical in every rung)."""

    rate: Fraction
    gop: int  # frames per segment
    first: int  # frames in the first segment
    # boundaries in (skip_after, skip_until] are dropped: a sliver of a last segment would be merged
    skip_after: int = -1
    skip_until: int = -1
    # explicit segment starts (frames of segments 2, 3, ...): a copied rung's keyframes, maybe none
    starts: tuple[int, ...] = ()
    explicit: bool = False  # False: a segment every gop frames
    keyint: int = 0  # the longest segment in frames, where it is longer than gop

    def _planned(self, n: int) -> bool:
        if self.explicit:
            return n == 0 or n in self._start_set
        return n == 0 or (n >= self.first and (n - self.first) % self.gop == 0)

    @property
    def _start_set(self) -> frozenset:
        return _frozen(self.starts)

    def is_boundary(self, n: int) -> bool:
        """True when output frame n starts a segment (and so must be a keyframe)."""
        return self._planned(n) and not (self.skip_after < n <= self.skip_until)

    def boundary_time(self, k: int) -> float:
        """Start time in seconds of segment k (k >= 1), skipped boundaries left out."""
        if self.explicit:
            return self.starts[k - 1] / self.rate if k <= len(self.starts) else math.inf
        n = self.first + (k - 1) * self.gop
        if self.skip_after < n <= self.skip_until:
            n += self.gop
        return n / self.rate

    @property
    def frame_duration(self) -> float:
        """Seconds per output frame."""
        return float(1 / self.rate)


@functools.lru_cache(maxsize=8)
def _frozen(starts: tuple[int, ...]) -> frozenset:
    return frozenset(starts)


def plan_timeline(rate: Fraction, opts: PipelineOptions, duration: float,
                  starts: tuple[int, ...] | None = None) -> Timeline:
    """The segment boundaries of a run: every segment_seconds (a short first one in live runs), or on
    `starts`, the keyframes of a copied rung."""
    if starts is not None:  # segments start on the copied rung's keyframes (none: one segment)
        lengths = [max(1, b - a) for a, b in zip((0, *starts), (*starts, round(duration * rate)))]
        gop = min(lengths[:-1] or lengths)
        return Timeline(rate=rate, gop=gop, first=starts[0] if starts else gop, starts=starts, explicit=True,
                         keyint=max(lengths))
    gop = max(1, round(float(opts.segment_seconds) * rate))
    first = gop
    if opts.live:
        first = max(1, min(gop, round(float(opts.first_segment_seconds) * rate)))
    # a last segment shorter than half a second only inflates the peak bitrate and costs a request:
    # leave out the boundary before it (the merged segment still rounds to the target duration)
    expected = round(duration * rate)
    tail = max(1, math.ceil(rate / 2))
    return Timeline(rate=rate, gop=gop, first=first, skip_after=expected - tail, skip_until=expected)
