"""The stereo 48 kHz AAC tracks, one per audio stream of the upload: kept on the video's clock,
encoded and muxed into HLS segments."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streamforge.pipeline import hls
from streamforge.pipeline.languages import language_name
from streamforge.pipeline.probe import AudioTrack, ProbeResult
from streamforge.pipeline.segments import Timeline
from streamforge.pipeline.workers import Worker, encode_frames, lower_priority

AUDIO_RATE = 48000
AUDIO_MOVFLAGS = "empty_moov+default_base_moof"


class AudioEncoder(Worker):
    """Encodes the stereo 48 kHz frames into AAC and muxes them into HLS segments."""

    def __init__(self, bitrate: str, timeline: Timeline, track: hls.TrackOutput, root: Path,
                 publisher: hls.Publisher, fragment_seconds: float, abort: threading.Event):
        super().__init__("audio", abort, maxsize=64)
        self.bitrate = bitrate
        self.track = track
        self.fragment_seconds = fragment_seconds
        (root / track.name).mkdir(parents=True, exist_ok=True)
        # an audio fragment opens the next segment when it starts within half a fragment of a video boundary
        self.sink = hls.FragmentSink(track, root / track.name, timeline.boundary_time,
                                     tolerance=fragment_seconds / 2 + 1024 / AUDIO_RATE,
                                     on_segment=publisher.on_segment, on_init=publisher.on_init)

    def work(self) -> None:
        lower_priority(5)  # a trickle of work that must never hold up a video rung
        options = {"movflags": AUDIO_MOVFLAGS, "frag_duration": str(int(self.fragment_seconds * 1_000_000))}
        with av.open(self.sink, "w", format="mp4", options=options) as container:
            stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            stream.codec_context.bit_rate = audio_bits(self.bitrate)
            stream.time_base = Fraction(1, AUDIO_RATE)
            encode_frames(stream, container, self.items(), self.sink, self.abort)
        if not self.abort.is_set():
            self.sink.close()


def audio_bits(text: str) -> int:
    text = str(text).strip().lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


class AudioAligner:
    """Resamples to stereo 48 kHz and keeps audio on the video's clock: silence for gaps, trims overlap."""

    def __init__(self, t0: float, out: Callable[[av.AudioFrame], None]):
        self.t0 = t0
        self.out = out
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self.fifo = av.AudioFifo()
        self.written = 0  # samples written into the fifo (the audio clock)
        self.sent = 0  # samples sent to the encoder
        self.drop = 0

    def push(self, frame: av.AudioFrame | None) -> None:
        """Take one decoded frame (None at the end)."""
        if frame is not None:
            if not frame.layout.channels or frame.layout.name.startswith("unknown"):
                return
            if frame.time is not None:
                expected = self.t0 + self.written / AUDIO_RATE
                gap = frame.time - expected
                if self.written == 0 and self.drop == 0 and gap < 0:
                    self.drop = round(-gap * AUDIO_RATE)  # audio that starts before the first picture
                elif gap > 0.05:
                    self._silence(round(gap * AUDIO_RATE))
        for resampled in self.resampler.resample(frame):
            resampled.pts = None
            if self.drop:
                skip = min(self.drop, resampled.samples)
                self.drop -= skip
                if skip == resampled.samples:
                    continue
                self.fifo.write(resampled)
                self.fifo.read(skip)
                self.written += resampled.samples - skip
            else:
                self.fifo.write(resampled)
                self.written += resampled.samples
        self._drain(final=frame is None)

    def _silence(self, samples: int) -> None:
        while samples > 0:
            n = min(samples, 4800)
            silent = av.AudioFrame(format="fltp", layout="stereo", samples=n)
            for plane in silent.planes:
                memoryview(plane)[:] = bytes(plane.buffer_size)
            silent.sample_rate = AUDIO_RATE
            self.fifo.write(silent)
            self.written += n
            samples -= n

    def _drain(self, final: bool) -> None:
        while self.fifo.samples >= 1024 or (final and self.fifo.samples):
            frame = self.fifo.read(min(1024, self.fifo.samples))
            frame.pts = self.sent
            frame.time_base = Fraction(1, AUDIO_RATE)
            self.sent += frame.samples
            self.out(frame)


@dataclass(frozen=True)
class AudioPlan:
    """Where one audio stream of the upload goes: its folder under the output and its label."""

    stream_index: int
    name: str  # the folder: "audio" for the default track, "audio-N" for the Nth other one
    language: str
    label: str
    default: bool


def plan_audio(info: ProbeResult) -> list[AudioPlan]:
    """One AudioPlan per audio track, in the file's order; labels unique (the stream's title, else the
    language's name, else "Audio N")."""
    if not info.has_audio or info.audio_stream_index is None:
        return []
    tracks = info.audio_tracks or (AudioTrack(index=info.audio_stream_index, language="und", title="",
                                              default=True),)
    plans, seen = [], set()
    for n, t in enumerate(tracks, start=1):
        base = t.title or language_name(t.language) or ("Audio" if len(tracks) == 1 else f"Audio {n}")
        label, k = base, 2
        while label.lower() in seen:
            label, k = f"{base} ({k})", k + 1
        seen.add(label.lower())
        plans.append(AudioPlan(stream_index=t.index, name="audio" if t.default else f"audio-{n}",
                               language=t.language, label=label, default=t.default))
    return plans
