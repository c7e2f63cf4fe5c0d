"""A rendition as one progressive MP4 (moov first) with its audio, remuxed from the HLS output.

The HLS tracks are fragmented MP4 (an init segment and moof+mdat segments); an init segment
followed by its segments is itself a valid fragmented MP4 file, which PyAV reads as is. The
packets are copied into a plain mp4 (no re-encode) and `faststart` moves the moov box before the
media, so a browser can start playing the download while it is still arriving.
"""
from __future__ import annotations

import os
from pathlib import Path

import av

from streamforge.errors import MediaError

MOVFLAGS = "+faststart"


def join_track(init: Path, segments: list[Path], out: Path) -> Path:
    """Concatenate an init segment and its media segments into one fragmented MP4 file."""
    with open(out, "wb") as f:
        for part in [init, *segments]:
            with open(part, "rb") as src:
                while chunk := src.read(1024 * 1024):
                    f.write(chunk)
    return out


def remux_mp4(tracks: list[Path], out: Path) -> Path:
    """Copy the first stream of every fragmented MP4 in `tracks` into a progressive MP4 at `out`.

    Written to a temporary name and renamed, so `out` exists only when it is complete."""
    if not tracks:
        raise MediaError("nothing to remux")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    inputs = []
    try:
        inputs = [av.open(str(path)) for path in tracks]
        with av.open(str(tmp), "w", format="mp4", options={"movflags": MOVFLAGS}) as output:
            pairs = []
            for container in inputs:
                source = container.streams[0]
                pairs.append((container, source, output.add_stream_from_template(source)))
            for packet, target in _interleaved(pairs):
                packet.stream = target
                output.mux(packet)
        os.replace(tmp, out)
    except av.FFmpegError as e:
        raise MediaError(f"remuxing into MP4 failed: {e}") from e
    finally:
        for container in inputs:
            container.close()
        if tmp.exists():
            tmp.unlink()
    return out


def _interleaved(pairs):
    """(packet, target stream) of every input in time order, holding one packet per input (not a whole track)."""
    def packets(container, source):
        for packet in container.demux(source):
            if packet.dts is not None or packet.pts is not None:  # not the demuxer's flush packet
                yield packet

    def when(packet) -> float:
        ts = packet.dts if packet.dts is not None else packet.pts
        return float(ts * packet.time_base)

    heads = []
    for container, source, target in pairs:
        it = packets(container, source)
        first = next(it, None)
        if first is not None:
            heads.append([first, it, target])
    while heads:
        head = min(heads, key=lambda h: when(h[0]))
        yield head[0], head[2]
        head[0] = next(head[1], None)
        if head[0] is None:
            heads.remove(head)


def top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """The types of the file's top-level ISO BMFF boxes, in order (ftyp, moov, mdat...)."""
    out = []
    size_total = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size_total and len(out) < limit:
            f.seek(offset)
            head = f.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            out.append(kind)
            offset += size
    return out
