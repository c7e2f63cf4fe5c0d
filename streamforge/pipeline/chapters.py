"""Chapters: read from a container (MP4 and Matroska chapters) or from description timestamps, written as WebVTT.

A description gives chapters the way viewers write them: lines that begin with a timestamp
(`0:00 Intro`, `12:05 Demo`, `1:02:03 Outro`), the first at 0:00, at least two, each later than the
one before; anything else is not a chapter list and gives none.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av

from streamforge.pipeline.captions import safe_text
from streamforge.pipeline.thumbnails import vtt_time

MAX_CHAPTERS = 500
MAX_TITLE = 200
# a line's leading timestamp, then an optional separator (" - ", " – ", ": ", " | "), then the title
DESCRIPTION_LINE = re.compile(r"^\s*(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\s*(?:[-–—:|]\s*)?(\S.*)$")


@dataclass(frozen=True)
class Chapter:
    """One chapter: where it starts in the output (seconds) and its title."""

    start: float
    title: str

    def as_json(self) -> dict:
        """The chapter as VIDEO.chapters lists it."""
        return {"start": self.start, "title": self.title}


def _title(text: str) -> str:
    return " ".join((text or "").split())[:MAX_TITLE]


def from_container(path: str | Path, start: float = 0.0) -> list[Chapter]:
    """The file's own chapters moved by `start` (the file's time that the output's 0 is); [] when none."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            raw = container.chapters()
    except (av.FFmpegError, AttributeError):
        return []
    chapters = []
    for i, item in enumerate(sorted(raw, key=lambda c: c["start"] * c["time_base"])[:MAX_CHAPTERS]):
        at = max(0.0, float(item["start"] * item["time_base"]) - start)
        title = _title((item.get("metadata") or {}).get("title", "")) or f"Chapter {i + 1}"
        if chapters and at <= chapters[-1].start:
            continue  # two chapters at one instant: the first is kept
        chapters.append(Chapter(round(at, 3), title))
    return chapters


def from_description(text: str | None) -> list[Chapter]:
    """Chapters from lines of the description that begin with a timestamp; [] unless they form a list."""
    chapters = []
    for line in (text or "").splitlines():
        m = DESCRIPTION_LINE.match(line)
        if not m:
            continue
        h, mnt, sec, title = m.groups()
        if int(sec) >= 60 or (h is not None and int(mnt) >= 60):
            continue
        at = int(h or 0) * 3600 + int(mnt) * 60 + int(sec)
        if chapters and at <= chapters[-1].start:
            return []  # not increasing: a list of times that is not a chapter list
        chapters.append(Chapter(float(at), _title(title)))
    if len(chapters) < 2 or chapters[0].start != 0 or len(chapters) > MAX_CHAPTERS:
        return []
    return chapters


def to_webvtt(chapters: list[Chapter], duration: float) -> str:
    """A WebVTT chapters file: one cue per chapter, ending where the next begins (the last at `duration`)."""
    out = ["WEBVTT", ""]
    for i, chapter in enumerate(chapters):
        end = chapters[i + 1].start if i + 1 < len(chapters) else max(float(duration), chapter.start + 1.0)
        out += [f"{i + 1}", f"{vtt_time(chapter.start)} --> {vtt_time(end)}", safe_text(chapter.title) or "-", ""]
    return "\n".join(out)
