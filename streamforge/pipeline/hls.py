"""HLS packaging: split a fragmented MP4 stream into init + media segments, write the playlists.

Each track is muxed by FFmpeg's own mp4 muxer (empty_moov, one fragment per keyframe or per
~half second of audio) into a `FragmentSink`. The sink cuts the byte stream at top-level boxes:
ftyp+moov is the init segment, and moof+mdat pairs are grouped into media segments at the
planned boundary times. Parsing tfdt/trun here gives exact durations, sizes and the byte range of
each segment's keyframe (for the I-frame playlists) without reading anything back from disk.
"""
from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PLAYLIST_VERSION = 7
NON_SYNC_SAMPLE = 0x00010000


# ---------------------------------------------------------------------------------------------
# ISO BMFF parsing


def iter_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, offset, size, header_size) for the boxes of data[start:end]."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        yield kind.decode("latin-1"), offset, size, header
        offset += size


def find_box(data: bytes, path: list[str], start: int = 0, end: int | None = None):
    """The (offset, size, header) of the first box along `path` (e.g. ["moov", "trak"]), or None."""
    for kind, offset, size, header in iter_boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return offset, size, header
            found = find_box(data, path[1:], offset + header, offset + size)
            if found:
                return found
    return None


@dataclass
class TrackInfo:
    """What the init segment says about its one track."""

    timescale: int
    codecs: str
    handler: str  # "vide" or "soun"
    default_duration: int = 0
    default_size: int = 0
    default_flags: int = 0


@dataclass
class Fragment:
    """One moof+mdat pair."""

    data: bytes
    decode_time: int  # tfdt, in track ticks
    first_cts: int  # composition offset of the first sample
    durations: list[int]
    sizes: list[int]
    first_sync: bool
    data_offset: int  # from the moof's first byte to the first sample's data


def without_bitrates(init: bytes) -> bytes:
    """An init segment with its btrt box's figures (buffer size, peak and mean bitrate) zeroed: the mp4
    muxer copies them from the encoder's VBV settings, and a rung whose peak the probe raised (hard
    content, pipeline/pertitle.py) goes on with another; players take the rates from the playlists."""
    at = bytes(init).find(b"btrt")
    if at < 4 or at + 16 > len(init):
        return bytes(init)
    return bytes(init[:at + 4]) + bytes(12) + bytes(init[at + 16:])


def parse_init(init: bytes) -> TrackInfo:
    """Read timescale, handler, RFC 6381 codec string and trex defaults from an init segment."""
    mdhd = find_box(init, ["moov", "trak", "mdia", "mdhd"])
    if not mdhd:
        raise ValueError("init segment without mdhd")
    off = mdhd[0] + mdhd[2]
    version = init[off]
    timescale = struct.unpack_from(">I", init, off + (20 if version == 1 else 12))[0]
    hdlr = find_box(init, ["moov", "trak", "mdia", "hdlr"])
    handler = init[hdlr[0] + hdlr[2] + 8: hdlr[0] + hdlr[2] + 12].decode("latin-1") if hdlr else ""
    info = TrackInfo(timescale=timescale, codecs=codec_string(init), handler=handler)
    trex = find_box(init, ["moov", "mvex", "trex"])
    if trex:
        _, _, info.default_duration, info.default_size, info.default_flags = struct.unpack_from(
            ">IIIII", init, trex[0] + trex[2] + 4)
    return info


def parse_fragment(moof: bytes, mdat: bytes, track: TrackInfo) -> Fragment:
    """Parse one moof (and keep its mdat) into a Fragment."""
    traf = find_box(moof, ["moof", "traf"])
    if not traf:
        raise ValueError("moof without traf")
    t_start, t_end = traf[0] + traf[2], traf[0] + traf[1]
    default_duration, default_size, default_flags = track.default_duration, track.default_size, \
        track.default_flags
    decode_time, first_cts, durations, sizes, first_flags, data_offset = 0, 0, [], [], None, 0
    for kind, offset, _size, header in iter_boxes(moof, t_start, t_end):
        body = offset + header
        if kind == "tfhd":
            flags = int.from_bytes(moof[body + 1: body + 4], "big")
            pos = body + 8
            if flags & 0x1:
                pos += 8
            if flags & 0x2:
                pos += 4
            if flags & 0x8:
                default_duration = struct.unpack_from(">I", moof, pos)[0]
                pos += 4
            if flags & 0x10:
                default_size = struct.unpack_from(">I", moof, pos)[0]
                pos += 4
            if flags & 0x20:
                default_flags = struct.unpack_from(">I", moof, pos)[0]
        elif kind == "tfdt":
            if moof[body] == 1:
                decode_time = struct.unpack_from(">Q", moof, body + 4)[0]
            else:
                decode_time = struct.unpack_from(">I", moof, body + 4)[0]
        elif kind == "trun":
            version = moof[body]
            flags = int.from_bytes(moof[body + 1: body + 4], "big")
            count = struct.unpack_from(">I", moof, body + 4)[0]
            pos = body + 8
            if flags & 0x1:
                data_offset = struct.unpack_from(">i", moof, pos)[0]
                pos += 4
            if flags & 0x4:
                first_flags = struct.unpack_from(">I", moof, pos)[0]
                pos += 4
            for i in range(count):
                duration, sample_size, sample_flags, cts = default_duration, default_size, default_flags, 0
                if flags & 0x100:
                    duration = struct.unpack_from(">I", moof, pos)[0]
                    pos += 4
                if flags & 0x200:
                    sample_size = struct.unpack_from(">I", moof, pos)[0]
                    pos += 4
                if flags & 0x400:
                    sample_flags = struct.unpack_from(">I", moof, pos)[0]
                    pos += 4
                if flags & 0x800:
                    cts = struct.unpack_from(">i" if version else ">I", moof, pos)[0]
                    pos += 4
                if i == 0 and not durations:
                    first_cts = cts
                    if first_flags is None:
                        first_flags = sample_flags
                durations.append(duration)
                sizes.append(sample_size)
    first_sync = first_flags is not None and not (first_flags & NON_SYNC_SAMPLE)
    return Fragment(data=moof + mdat, decode_time=decode_time, first_cts=first_cts, durations=durations,
                    sizes=sizes, first_sync=first_sync, data_offset=data_offset)


def codec_string(init: bytes) -> str:
    """The exact RFC 6381 CODECS string of the init segment's track (avc1.64001f, mp4a.40.2, ...)."""
    stsd = find_box(init, ["moov", "trak", "mdia", "minf", "stbl", "stsd"])
    if not stsd:
        raise ValueError("init segment without stsd")
    entry = stsd[0] + stsd[2] + 8
    size, kind = struct.unpack_from(">I4s", init, entry)
    kind = kind.decode("latin-1")
    if kind in ("mp4a",):
        return _aac_string(init, entry + 8 + 28, entry + size)
    children = entry + 8 + 78  # VisualSampleEntry fields precede its child boxes
    boxes = {k: (o + h, o + s) for k, o, s, h in iter_boxes(init, children, entry + size)}
    if kind in ("avc1", "avc3") and "avcC" in boxes:
        b = boxes["avcC"][0]
        return f"{kind}.{init[b + 1]:02x}{init[b + 2]:02x}{init[b + 3]:02x}"
    if kind in ("hvc1", "hev1") and "hvcC" in boxes:
        return kind + "." + _hevc_suffix(init[boxes["hvcC"][0]: boxes["hvcC"][1]])
    if kind == "av01" and "av1C" in boxes:
        b = boxes["av1C"][0]
        profile, level = init[b + 1] >> 5, init[b + 1] & 0x1F
        tier = "H" if init[b + 2] & 0x80 else "M"
        high, twelve = init[b + 2] & 0x40, init[b + 2] & 0x20
        depth = 12 if (high and twelve) else 10 if high else 8
        return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
    if kind == "vp09" and "vpcC" in boxes:
        b = boxes["vpcC"][0] + 4  # full box
        profile, level, depth = init[b], init[b + 1], init[b + 2] >> 4
        return f"vp09.{profile:02d}.{level:02d}.{depth:02d}"
    return kind


def _hevc_suffix(hvcc: bytes) -> str:
    """The part after "hvc1." per ISO/IEC 14496-15 Annex E, e.g. "1.6.L93.B0"."""
    space = "ABC"[(hvcc[1] >> 6) - 1] if hvcc[1] >> 6 else ""
    tier = "H" if hvcc[1] & 0x20 else "L"
    profile = hvcc[1] & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"{space}{profile}", f"{reversed_compat:X}", f"{tier}{hvcc[12]}"]
    parts += [f"{c:X}" for c in constraints]
    return ".".join(parts)


def _aac_string(init: bytes, start: int, end: int) -> str:
    """mp4a.40.N from the esds descriptor's object type and AudioSpecificConfig."""
    esds = find_box(init, ["esds"], start, end)
    if not esds:
        return "mp4a.40.2"
    data = init[esds[0] + esds[2] + 4: esds[0] + esds[1]]
    pos = 0

    def descriptor(pos):
        tag = data[pos]
        pos += 1
        length = 0
        for _ in range(4):
            b = data[pos]
            pos += 1
            length = (length << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        return tag, pos, length

    try:
        _tag, pos, _ = descriptor(pos)  # ES_Descriptor
        flags = data[pos + 2]
        pos += 3
        if flags & 0x80:
            pos += 2
        if flags & 0x40:
            pos += 1 + data[pos]
        if flags & 0x20:
            pos += 2
        _tag, pos, _ = descriptor(pos)  # DecoderConfigDescriptor
        object_type = data[pos]
        pos += 13
        _tag, pos, _ = descriptor(pos)  # DecoderSpecificInfo
        audio_object_type = data[pos] >> 3
        return f"mp4a.{object_type:x}.{audio_object_type}"
    except IndexError:
        return "mp4a.40.2"


# ---------------------------------------------------------------------------------------------
# Segmenting


@dataclass
class Segment:
    """One media segment as written to disk."""

    index: int  # 1-based, as in the file name
    filename: str
    duration: float
    size: int
    iframe_size: int  # bytes from the segment's start through its first (key)frame; 0 if none


@dataclass
class TrackOutput:
    """A rendition's folder as it grows: init segment, segments, and what the playlists need."""

    name: str  # folder
    kind: str  # "video" or "audio"
    target_duration: int
    frame_duration: float = 0.0  # video: seconds per frame, so EXTINF is exact in frames
    init: str = "init.mp4"
    codecs: str = ""
    segments: list[Segment] = field(default_factory=list)
    finished: bool = False

    @property
    def playlist(self) -> str:
        """The media playlist's path relative to the output root."""
        return f"{self.name}/index.m3u8"

    @property
    def iframe_playlist(self) -> str:
        """The I-frame playlist's path relative to the output root."""
        return f"{self.name}/iframes.m3u8"

    def peak_bandwidth(self) -> int:
        """The largest segment bitrate, bit/s (the spec's BANDWIDTH)."""
        rates = [s.size * 8 / s.duration for s in self.segments if s.duration > 0]
        return math.ceil(max(rates)) if rates else 0

    def average_bandwidth(self) -> int:
        """Total bits over total duration, bit/s (the spec's AVERAGE-BANDWIDTH)."""
        total = sum(s.duration for s in self.segments)
        return math.ceil(sum(s.size for s in self.segments) * 8 / total) if total > 0 else 0

    def iframe_bandwidth(self) -> int:
        """Peak bitrate of the I-frame playlist, bit/s."""
        rates = [s.iframe_size * 8 / s.duration for s in self.segments if s.duration > 0 and s.iframe_size]
        return math.ceil(max(rates)) if rates else 0

    def duration(self) -> float:
        """Seconds covered by the segments so far."""
        return sum(s.duration for s in self.segments)


class FragmentSink:
    """A write-only file for FFmpeg's mp4 muxer that turns its fragments into HLS segment files.

    `boundary(k)` is the planned start time in seconds of segment k (k >= 1; segment 0 starts at 0).
    A fragment that starts within `tolerance` seconds before a boundary (or later) opens the next
    segment.
    """

    def __init__(self, track: TrackOutput, directory: Path, boundary: Callable[[int], float], tolerance: float,
                 on_segment: Callable[[TrackOutput, Segment], None], on_init: Callable[[TrackOutput], None]):
        self.track = track
        self.directory = directory
        self.boundary = boundary
        self.discard = False  # set when the run failed: write nothing more
        self.error: Exception | None = None
        self.tolerance = tolerance
        self.on_segment = on_segment
        self.on_init = on_init
        self._buffer = bytearray()
        self._init = bytearray()
        self._info: TrackInfo | None = None
        self._moof: bytes | None = None
        self._origin: int | None = None
        self._pending: list[Fragment] = []
        self._next_boundary = 1  # index into boundaries of the next segment's start
        self._ticks = 0  # decode time the fragments taken so far cover, and how many there were
        self._fragments = 0
        self._resumed: tuple[int, int, bytearray] | None = None  # a second muxer's shift and its init

    def resume(self) -> None:
        """A second muxer takes over after the first was closed (a rung going on at another level,
        pipeline/levelswitch.py): its init segment must be the first one's, byte for byte (it is not
        written again; only the bitrates it declares may differ, without_bitrates), and its fragments are
        moved onto the first one's clock and numbering."""
        self.check()
        self._resumed = (self._ticks, self._fragments, bytearray())

    def write(self, data) -> int:
        """Take bytes from the muxer; cut complete top-level boxes out of them."""
        if self.discard:
            return len(data)
        try:
            self._take(data)
        except Exception as e:  # noqa: BLE001 - FFmpeg's write callback would swallow it; the encoder re-raises
            self.error = e
            self.discard = True
        return len(data)

    def check(self) -> None:
        """Raise what went wrong while writing (a full disk, a failing callback), if anything did."""
        if self.error is not None:
            raise self.error

    def _take(self, data) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            size, kind = struct.unpack_from(">I4s", self._buffer, 0)
            if size == 1:
                if len(self._buffer) < 16:
                    break
                size = struct.unpack_from(">Q", self._buffer, 8)[0]
            if size < 8:
                raise ValueError("the mp4 muxer wrote an unbounded box; fragmented output expected")
            if len(self._buffer) < size:
                break
            box = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._box(kind.decode("latin-1"), box)

    def _box(self, kind: str, box: bytes) -> None:
        if self._resumed is not None:
            ticks, fragments, init = self._resumed
            if kind in ("ftyp", "moov"):
                init += box
                if kind == "moov" and without_bitrates(init) != without_bitrates(self._init):
                    raise ValueError(f"{self.track.name}: the second encoder's init segment differs from the first's")
                return
            if kind == "moof":
                box = shift_fragments(box, ticks, fragments)
        if kind in ("ftyp", "moov"):
            self._init += box
            if kind == "moov":
                self._info = parse_init(bytes(self._init))
                self.track.codecs = self._info.codecs
                _write_atomic(self.directory / self.track.init, bytes(self._init))
                self.on_init(self.track)
        elif kind == "moof":
            self._moof = box
        elif kind == "mdat" and self._moof is not None:
            self._fragment(parse_fragment(self._moof, box, self._info))
            self._moof = None
        # mfra, sidx and free boxes are not part of any HLS segment

    def _fragment(self, fragment: Fragment) -> None:
        self._ticks = fragment.decode_time + sum(fragment.durations)
        self._fragments += 1
        start = fragment.decode_time + fragment.first_cts
        if self._origin is None:
            self._origin = start
        t = (start - self._origin) / self._info.timescale
        limit = self.boundary(self._next_boundary) - self.tolerance
        if t >= limit:  # starts the next segment (the previous one ended short of its boundary)
            if self._pending:
                self._flush()
            while t >= self.boundary(self._next_boundary) - self.tolerance:
                self._next_boundary += 1
        self._pending.append(fragment)
        # publish a segment as soon as its last fragment is in, not when the next one arrives: the
        # muxer writes a fragment only once the following keyframe is encoded, and waiting for yet
        # another fragment would delay every segment (and a live master) by a whole segment
        end = t + sum(fragment.durations) / self._info.timescale
        if end >= self.boundary(self._next_boundary) - self.tolerance:
            self._flush()
            while end >= self.boundary(self._next_boundary) - self.tolerance:
                self._next_boundary += 1

    def close(self) -> None:
        """Write the last segment; called after the muxer is closed."""
        self.check()
        if self._pending and not self.discard:
            self._flush()

    def _flush(self) -> None:
        fragments, self._pending = self._pending, []
        data = b"".join(f.data for f in fragments)
        if self.track.kind == "video" and self.track.frame_duration:
            duration = sum(len(f.durations) for f in fragments) * self.track.frame_duration
        else:
            duration = sum(sum(f.durations) for f in fragments) / self._info.timescale
        first = fragments[0]
        iframe_size = first.data_offset + first.sizes[0] if first.first_sync and first.sizes else 0
        index = len(self.track.segments) + 1
        segment = Segment(index=index, filename=f"seg_{index:05d}.m4s", duration=duration, size=len(data),
                          iframe_size=iframe_size)
        _write_atomic(self.directory / segment.filename, data)
        self.track.segments.append(segment)
        self.on_segment(self.track, segment)


def shift_fragments(data: bytes, ticks: int, fragments_before: int) -> bytes:
    """The segment's moof boxes with tfdt + `ticks` and mfhd sequence numbers + `fragments_before`."""
    out = bytearray(data)
    for kind, offset, size, header in iter_boxes(data):
        if kind != "moof":
            continue
        for sub, sub_off, sub_size, sub_header in iter_boxes(data, offset + header, offset + size):
            body = sub_off + sub_header
            if sub == "mfhd":
                seq = struct.unpack_from(">I", data, body + 4)[0]
                struct.pack_into(">I", out, body + 4, seq + fragments_before)
            elif sub == "traf":
                for leaf, leaf_off, _leaf_size, leaf_header in iter_boxes(data, body, sub_off + sub_size):
                    if leaf != "tfdt":
                        continue
                    pos = leaf_off + leaf_header
                    if data[pos] == 1:
                        struct.pack_into(">Q", out, pos + 4, struct.unpack_from(">Q", data, pos + 4)[0] + ticks)
                    else:
                        value = struct.unpack_from(">I", data, pos + 4)[0] + ticks
                        if value >= 2 ** 32:
                            raise ValueError("the timestamps overflow a 32-bit tfdt")
                        struct.pack_into(">I", out, pos + 4, value)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Playlists


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def media_playlist(track: TrackOutput, final: bool) -> str:
    """A media playlist: VOD with ENDLIST when final, else a growing EVENT playlist."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
             f"#EXT-X-TARGETDURATION:{_target(track)}", "#EXT-X-MEDIA-SEQUENCE:0",
             f"#EXT-X-PLAYLIST-TYPE:{'VOD' if final else 'EVENT'}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if not final:
        # players otherwise join an EVENT playlist at its live edge; start from the beginning
        lines.append("#EXT-X-START:TIME-OFFSET=0,PRECISE=YES")
    lines.append(f'#EXT-X-MAP:URI="{track.init}"')
    for segment in track.segments:
        lines += [f"#EXTINF:{segment.duration:.6f},", segment.filename]
    if final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def iframe_playlist(track: TrackOutput, final: bool) -> str:
    """An I-frame playlist: one byte range per segment, over its moof and its keyframe's data."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
             f"#EXT-X-TARGETDURATION:{_target(track)}", "#EXT-X-MEDIA-SEQUENCE:0",
             f"#EXT-X-PLAYLIST-TYPE:{'VOD' if final else 'EVENT'}", "#EXT-X-INDEPENDENT-SEGMENTS",
             "#EXT-X-I-FRAMES-ONLY", f'#EXT-X-MAP:URI="{track.init}"']
    for segment in track.segments:
        if segment.iframe_size:
            lines += [f"#EXTINF:{segment.duration:.6f},", f"#EXT-X-BYTERANGE:{segment.iframe_size}@0",
                      segment.filename]
    if final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _target(track: TrackOutput) -> int:
    longest = max((round(s.duration) for s in track.segments), default=0)
    return max(1, track.target_duration, longest)


@dataclass
class VariantInfo:
    """What the master needs of one video rung."""

    track: TrackOutput
    width: int
    height: int
    frame_rate: float
    planned_peak: int  # bit/s, used until segments exist to measure


@dataclass
class AudioRendition:
    """One audio track of the master's audio group: its playlist, language and name."""

    track: TrackOutput
    planned_peak: int  # bit/s, used until segments exist to measure
    language: str = "und"
    name: str = "default"
    default: bool = True


def _quoted(value: str) -> str:
    return value.replace('"', "'").replace("\n", " ").replace("\r", " ")


def audio_media_lines(audios: list[AudioRendition], in_variant: str = "") -> list[str]:
    """The EXT-X-MEDIA lines of the audio group: exactly one DEFAULT=YES; a rendition whose playlist is
    `in_variant` is carried by the variant itself, so it has no URI (RFC 8216 4.3.4.1)."""
    lines = []
    for a in audios:
        uri = "" if a.track.playlist == in_variant else f',URI="{a.track.playlist}"'
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="{_quoted(a.name)}",'
                     f'LANGUAGE="{_quoted(a.language)}",DEFAULT={"YES" if a.default else "NO"},'
                     f'AUTOSELECT=YES,CHANNELS="2"{uri}')  # every track is encoded as stereo
    return lines


def audio_bandwidth(audios: list[AudioRendition], final: bool) -> tuple[int, int]:
    """(peak, average) bit/s a variant adds for its audio: the most demanding track of the group."""
    peak = average = 0
    for a in audios:
        peak = max(peak, a.track.peak_bandwidth() if final else max(a.track.peak_bandwidth(), a.planned_peak))
        average = max(average, a.track.average_bandwidth() if final else a.planned_peak)
    return peak, average


def master_playlist(variants: list[VariantInfo], audios: list[AudioRendition], final: bool) -> str:
    """The master playlist: every variant with measured bandwidth, exact CODECS, audio group, I-frames."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if not final:
        lines.append("#EXT-X-START:TIME-OFFSET=0,PRECISE=YES")
    lines += audio_media_lines(audios)
    audio_peak, audio_average = audio_bandwidth(audios, final)
    audio_codecs = next((a.track.codecs for a in audios if a.track.codecs), "mp4a.40.2") if audios else ""
    for v in variants:
        # BANDWIDTH counts everything a player downloads for the variant: video plus its audio
        peak = v.track.peak_bandwidth() if final else max(v.track.peak_bandwidth(), v.planned_peak)
        average = v.track.average_bandwidth() if final else v.planned_peak
        codecs = v.track.codecs + (f",{audio_codecs}" if audios else "")
        attrs = [f"BANDWIDTH={peak + audio_peak}", f"AVERAGE-BANDWIDTH={average + audio_average}",
                 f"RESOLUTION={v.width}x{v.height}", f"FRAME-RATE={v.frame_rate:.3f}", f'CODECS="{codecs}"']
        if audios:
            attrs.append('AUDIO="audio"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), v.track.playlist]
    for v in variants:
        bandwidth = max(1, v.track.iframe_bandwidth())
        lines.append(f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={v.width}x{v.height},"
                     f'CODECS="{v.track.codecs}",URI="{v.track.iframe_playlist}"')
    return "\n".join(lines) + "\n"


class Publisher:
    """Writes playlists as segments appear and tells the caller about every finished file.

    Thread-safe: each track's muxer thread reports its segments here. In live mode media playlists
    are EVENT playlists rewritten per segment, and the master is written as soon as every track
    has one segment; `finish` rewrites them all as VOD.
    """

    def __init__(self, root: Path, live: bool, emit: Callable[[str, str], None]):
        self.root = root
        self.live = live
        self.emit = emit
        self.variants: list[VariantInfo] = []
        self.audios: list[AudioRendition] = []
        self.master_written = False
        self.files: list[str] = []
        self._lock = threading.Lock()
        # tracks whose playlist has been published with at least one segment; a track's segment list
        # grows in its muxer thread before on_segment runs, so it cannot tell what is published
        self._published: set[str] = set()

    def add_variant(self, variant: VariantInfo) -> None:
        """Register a video rung before encoding starts."""
        self.variants.append(variant)

    def add_audio(self, rendition: AudioRendition) -> None:
        """Register an audio track before encoding starts."""
        self.audios.append(rendition)

    @property
    def audio(self) -> TrackOutput | None:
        """The default audio track, if any."""
        return next((a.track for a in self.audios if a.default), None)

    def drop_audio(self, name: str) -> None:
        """Forget an audio track that got no segments (and its files); another becomes the default."""
        dropped = [a for a in self.audios if a.track.name == name]
        self.audios = [a for a in self.audios if a.track.name != name]
        self.files[:] = [f for f in self.files if not f.startswith(f"{name}/")]
        if dropped and dropped[0].default and self.audios:
            self.audios[0].default = True

    def _tracks(self) -> list[TrackOutput]:
        return [v.track for v in self.variants] + [a.track for a in self.audios]

    def _file(self, kind: str, relpath: str) -> None:
        if relpath not in self.files:
            self.files.append(relpath)
        self.emit(kind, relpath)

    def _write(self, kind: str, relpath: str, text: str) -> None:
        _write_atomic(self.root / relpath, text.encode())
        self._file(kind, relpath)

    def announce(self, kind: str, relpath: str) -> None:
        """Another writer (the thumbnailer) finished a file: record it and pass it on."""
        with self._lock:
            self._file(kind, relpath)

    def on_init(self, track: TrackOutput) -> None:
        """The track's init segment is on disk."""
        with self._lock:
            self._file("segment", f"{track.name}/{track.init}")

    def on_segment(self, track: TrackOutput, segment: Segment) -> None:
        """A media segment is on disk: announce it and, live, republish the playlists."""
        with self._lock:
            self._file("segment", f"{track.name}/{segment.filename}")
            if not self.live:
                return
            self._write("playlist", track.playlist, media_playlist(track, final=False))
            if track.kind == "video":
                self._write("playlist", track.iframe_playlist, iframe_playlist(track, final=False))
            self._published.add(track.name)
            if not self.master_written and all(t.name in self._published and t.codecs for t in self._tracks()):
                self._write("master", "master.m3u8", self._master(final=False))
                self.master_written = True

    def finish(self) -> None:
        """Write every playlist as VOD, then the master (last, so it only exists over complete files)."""
        with self._lock:
            for track in self._tracks():
                self._write("playlist", track.playlist, media_playlist(track, final=True))
                if track.kind == "video":
                    self._write("playlist", track.iframe_playlist, iframe_playlist(track, final=True))
            self._write("master", "master.m3u8", self._master(final=True))
            self.master_written = True

    def _master(self, final: bool) -> str:
        return master_playlist(self.variants, self.audios, final)
