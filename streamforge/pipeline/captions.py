"""Text subtitle streams of an upload as caption cues (the media side of captions).

The text side (parsing, safe WebVTT, playlists, the master's SUBTITLES group) is streamforge/captiontext.py,
which this module re-exports so `pipeline.captions` keeps offering the whole of it.
"""
from __future__ import annotations

from pathlib import Path

import av

from streamforge.captiontext import (  # noqa: F401 (re-exported)
    MAX_CUES,
    TEXT_CODECS,
    CaptionFormatError,
    Cue,
    SubtitleTrack,
    _timed,
    ass_text,
    master_with_subtitles,
    normalise,
    normalise_language,
    parse_captions,
    plain_text,
    safe_text,
    subtitle_playlist,
    to_webvtt,
    valid_language,
)


def extract_subtitles(path: str | Path, start: float = 0.0) -> list[SubtitleTrack]:
    """Every text subtitle stream of an upload as cues (SRT, ASS/SSA as plain text, mov_text, WebVTT).

    `start` is the file's time that the output's 0 is (its first video frame): cue times are moved by it."""
    from streamforge.pipeline.probe import open_input
    tracks = []
    with open_input(path) as container:
        streams = [s for s in container.streams.subtitles if s.codec_context and s.codec_context.name in TEXT_CODECS]
        if not streams:
            return []
        raw: dict[int, list[tuple[float, float | None, str]]] = {s.index: [] for s in streams}
        try:
            for packet in container.demux(*streams):
                _take_packet(packet, raw[packet.stream.index])
        except av.FFmpegError:
            pass  # a damaged subtitle stream keeps what was read before the damage
        for s in streams:
            cues = _timed([(t - start, d, text) for t, d, text in raw[s.index] if t + (d or 0) > start])
            if cues:
                meta = s.metadata or {}
                tracks.append(SubtitleTrack(index=s.index, language=normalise_language(meta.get("language")),
                                            label=(meta.get("title") or "").strip()[:100], cues=cues))
    return tracks


def _take_packet(packet, into: list) -> None:
    if packet.pts is None or not packet.size:
        return
    tb = packet.time_base or packet.stream.time_base
    start = float(packet.pts * tb)
    duration = float(packet.duration * tb) if packet.duration else None
    try:
        subtitles = packet.decode()
    except av.FFmpegError:
        return
    for sub in subtitles:
        dialogue = getattr(sub, "dialogue", None)
        text = dialogue.decode("utf-8", "replace") if isinstance(dialogue, bytes) else ""
        into.append((start, duration, ass_text(text)))
