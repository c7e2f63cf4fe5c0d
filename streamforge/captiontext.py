"""Caption text: parse and validate WebVTT or SRT, write safe WebVTT, caption playlists and master lines.

Pure text, no media library: the web side (validating an upload), the store (writing tracks) and the
pipeline (subtitle streams of an upload, in streamforge/pipeline/captions.py) all use it.

Everything a viewer's browser gets is WebVTT written here, never the uploaded bytes: cue text keeps
only WebVTT's own inline tags (b, i, u, c, v, lang, ruby, rt) and everything else that looks like
markup is escaped, so a cue such as `<img src=x onerror=...>` shows as text. Timing is made valid
(an end before its start gets a short cue) and cues are sorted by start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from streamforge.languages import normalise_language, valid_language  # noqa: F401 (re-exported)

MAX_CUES = 20000
# text subtitle codecs FFmpeg decodes into ASS dialogue (bitmap ones such as PGS or DVD are skipped)
TEXT_CODECS = ("subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text")
ALLOWED_TAGS = ("b", "i", "u", "c", "v", "lang", "ruby", "rt")
TIMESTAMP = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
TIMING = re.compile(rf"^\s*{TIMESTAMP}\s*-->\s*{TIMESTAMP}(.*)$")
TAG = re.compile(r"<(/?)([a-zA-Z]+)((?:\.[\w-]+)*)(?:\s+([^<>]*))?>")
SETTING = re.compile(r"^(vertical|line|position|size|align|region):[\w.%,:-]+$")
ASS_OVERRIDE = re.compile(r"\{[^}]*\}")


def vtt_time(seconds: float) -> str:
    """WebVTT timestamp HH:MM:SS.mmm."""
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


class CaptionFormatError(ValueError):
    """A caption file that is neither WebVTT nor SRT; `line` is where reading stopped (1-based)."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line


@dataclass(frozen=True)
class Cue:
    """One caption cue: seconds, safe WebVTT cue text, optional cue settings."""

    start: float
    end: float
    text: str
    settings: str = ""


@dataclass(frozen=True)
class SubtitleTrack:
    """A text subtitle stream found in an upload."""

    index: int
    language: str
    label: str
    cues: list[Cue]


def _seconds(h, m, s, ms) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def safe_text(text: str) -> str:
    """Cue text with only WebVTT's inline tags kept and every other `<`, `>`, `&` escaped."""
    out, pos = [], 0
    for m in TAG.finditer(text):
        out.append(_escape(text[pos:m.start()]))
        closing, name, classes, annotation = m.group(1), m.group(2).lower(), m.group(3) or "", m.group(4)
        if name in ALLOWED_TAGS:
            note = ""
            if annotation and name in ("v", "lang") and not closing:
                note = " " + _escape(annotation.strip())
            out.append(f"<{closing}{name}{classes}{note}>")
        # any other tag (font, script, img, ...) is dropped: its text content stays, as text
        pos = m.end()
    out.append(_escape(text[pos:]))
    lines = [line.strip() for line in "".join(out).replace("-->", "--&gt;").splitlines()]
    return "\n".join(line for line in lines if line)  # a blank line would end the cue


def _escape(text: str) -> str:
    text = re.sub(r"&(?!(amp|lt|gt|nbsp|lrm|rlm|#\d+|#x[0-9a-fA-F]+);)", "&amp;", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cue(start: float, end: float, text: str, settings: str = "") -> Cue | None:
    text = safe_text(text)
    if not text:
        return None
    if end <= start:  # odd timing: an end before the start becomes a short cue instead of an invalid one
        end = start + 1.0
    keep = " ".join(s for s in settings.split() if SETTING.match(s))
    return Cue(start=round(start, 3), end=round(end, 3), text=text, settings=keep)


def parse_captions(text: str) -> list[Cue]:
    """Parse WebVTT or SRT text into sorted, safe cues; CaptionFormatError names the line that is wrong."""
    if "\x00" in text:
        raise CaptionFormatError(text[:text.index("\x00")].count("\n") + 1, "the file holds binary data")
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise CaptionFormatError(1, "the file is empty")
    head = lines[first].strip()
    if head == "WEBVTT" or head.startswith(("WEBVTT ", "WEBVTT\t")):
        cues = _parse_blocks(lines, first + 1, vtt=True)
    elif head.isdigit() or TIMING.match(head):
        cues = _parse_blocks(lines, first, vtt=False)
    else:
        raise CaptionFormatError(first + 1, "neither WebVTT (no WEBVTT header) nor SRT (no cue number or "
                                            "timing line such as 00:00:01,000 --> 00:00:04,000)")
    if not cues and not (head.startswith("WEBVTT")):
        raise CaptionFormatError(first + 1, "no cues")
    return sorted(cues, key=lambda c: (c.start, c.end))


def _parse_blocks(lines: list[str], start: int, vtt: bool) -> list[Cue]:
    """Read blank-line separated blocks: [identifier] timing text... (WebVTT NOTE/STYLE/REGION skipped)."""
    cues: list[Cue] = []
    i, n = start, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        block_start = i
        while i < n and lines[i].strip():
            i += 1
        block = [line.strip() for line in lines[block_start:i]]
        if vtt and block[0].split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            continue
        timing_at = 0 if "-->" in block[0] else 1
        m = TIMING.match(block[timing_at]) if timing_at < len(block) else None
        if m is None:
            raise CaptionFormatError(block_start + timing_at + 1,
                                     "expected a timing line such as 00:00:01.000 --> 00:00:04.000")
        g = m.groups()
        cue = _cue(_seconds(*g[0:4]), _seconds(*g[4:8]), "\n".join(block[timing_at + 1:]), g[8] if vtt else "")
        if cue:
            cues.append(cue)
        if len(cues) > MAX_CUES:
            raise CaptionFormatError(block_start + 1, f"more than {MAX_CUES} cues")
    return cues


def to_webvtt(cues: list[Cue]) -> str:
    """The cues as a WebVTT file."""
    out = ["WEBVTT", ""]
    for cue in cues:
        timing = f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}"
        out += [timing + (f" {cue.settings}" if cue.settings else ""), cue.text, ""]
    return "\n".join(out)


def plain_text(cues: list[Cue]) -> str:
    """The words of the cues without markup, one cue a line (what the search indexes)."""
    import html
    return "\n".join(" ".join(html.unescape(TAG.sub("", c.text)).split()) for c in cues)


def normalise(text: str) -> str:
    """WebVTT or SRT text as safe WebVTT; CaptionFormatError when it is neither."""
    return to_webvtt(parse_captions(text))


def ass_text(dialogue: str) -> str:
    """The plain text of an ASS dialogue: override blocks removed, hard spaces as spaces."""
    return ASS_OVERRIDE.sub("", dialogue).replace("\\h", " ").replace("\\N", "\n").replace("\\n", "\n")


def _timed(raw: list[tuple[float, float | None, str]]) -> list[Cue]:
    """Cues from (start, duration or None, text): a missing duration lasts until the next cue (at most 5 s)."""
    raw = sorted(raw, key=lambda r: r[0])
    cues = []
    for i, (start, duration, text) in enumerate(raw):
        if duration is None:
            nxt = raw[i + 1][0] if i + 1 < len(raw) else start + 5.0
            duration = min(5.0, max(0.5, nxt - start))
        cue = _cue(max(0.0, start), start + duration, text)
        if cue:
            cues.append(cue)
    return cues[:MAX_CUES]


def subtitle_playlist(vtt_name: str, duration: float) -> str:
    """A WebVTT media playlist with the whole track as its one segment."""
    seconds = max(1.0, float(duration))
    return "\n".join(["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(seconds) + 1}",
                      "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", f"#EXTINF:{seconds:.3f},",
                      vtt_name, "#EXT-X-ENDLIST"]) + "\n"


def _quoted(value: str) -> str:
    return value.replace('"', "'").replace("\n", " ").replace("\r", " ")


def master_with_subtitles(master: str, renditions: list[tuple[str, str, str]]) -> str:
    """The master with its SUBTITLES group replaced by `renditions` (language, name, playlist URI).

    Every EXT-X-STREAM-INF names SUBTITLES="subs" when there is at least one track, none otherwise."""
    media = [f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="{_quoted(lang)}",NAME="{_quoted(name)}",'
             f'DEFAULT=NO,AUTOSELECT={"YES" if i == 0 else "NO"},URI="{_quoted(uri)}"'
             for i, (lang, name, uri) in enumerate(renditions)]
    out, placed = [], False
    for line in master.splitlines():
        if line.startswith("#EXT-X-MEDIA:") and "TYPE=SUBTITLES" in line:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            if not placed:
                out += media
                placed = True
            line = re.sub(r',SUBTITLES="[^"]*"', "", line)
            if renditions:
                line += ',SUBTITLES="subs"'
        out.append(line)
    if not placed:
        out += media
    return "\n".join(out) + "\n"
