"""Test media generated in code with PyAV: tiny clips of every awkward kind, and hostile non-media.

Pictures are moving diagonal stripes built from slices of one precomputed row (no per-pixel Python),
sound is a sine tone, so every clip is a few kilobytes and takes milliseconds to make.
"""
from __future__ import annotations

import math
import os
import struct
from array import array
from fractions import Fraction
from pathlib import Path

import av

_PATTERN = bytes((x * 3) % 220 + 16 for x in range(4096 + 8192))


def _picture(width: int, height: int, index: int, black: bool = False, marker: bool = False) -> av.VideoFrame:
    """A yuv420p frame of diagonal stripes moving with `index` (or black); `marker`: a white top-left block."""
    frame = av.VideoFrame(width, height, "yuv420p")
    y, u, v = frame.planes
    if black:
        memoryview(y)[:] = bytes([16]) * y.buffer_size
        memoryview(u)[:] = bytes([128]) * u.buffer_size
        memoryview(v)[:] = bytes([128]) * v.buffer_size
        return frame
    rows = bytearray()
    for r in range(height):
        start = (r + index * 4) % 4096
        rows += _PATTERN[start:start + width] + bytes(y.line_size - width)
    memoryview(y)[:] = rows[:y.buffer_size]
    memoryview(u)[:] = bytes([(96 + index * 5) % 256]) * u.buffer_size
    memoryview(v)[:] = bytes([(160 - index * 3) % 256]) * v.buffer_size
    if marker:
        size = max(2, min(width, height) // 6)
        for r in range(size):
            memoryview(y)[r * y.line_size:r * y.line_size + size] = bytes([235]) * size
    return frame


def _tone(samples: int, channels: int, rate: int, start: int, fmt: str):
    """A 440 Hz sine as packed s16 bytes or planar float32 bytes per channel."""
    values = [math.sin(2 * math.pi * 440 * (start + i) / rate) * 0.3 for i in range(samples)]
    if fmt == "s16":
        ints = array("h", (int(v * 32767) for v in values for _ in range(channels)))
        return [ints.tobytes()]
    plane = array("f", values).tobytes()
    return [plane] * channels


def make_video(path: str | Path, *, width: int = 320, height: int = 240, fps: float | Fraction = 25,
               seconds: float = 1.0, frames: int | None = None, codec: str = "libx264",
               pix_fmt: str = "yuv420p", audio: str | None = "stereo", audio_codec: str = "aac",
               audio_rate: int = 48000, rotation: int = 0, vfr: bool = False, interlaced: bool = False,
               start: float = 0.0, sar: Fraction | None = None, black_seconds: float = 0.0,
               options: dict | None = None, container_options: dict | None = None,
               audio_seconds: float | None = None, marker: bool = False) -> Path:
    """Write a small clip; the container comes from the file extension (mp4, mkv, avi, ts, mov, gif...)."""
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    count = frames if frames is not None else max(1, round(seconds * rate))
    with av.open(str(path), "w", options=container_options or {}) as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        tb = Fraction(1, 1000) if vfr else 1 / rate
        video.codec_context.time_base = tb
        opts = {"preset": "ultrafast"} if codec in ("libx264", "libx265") else {}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        if interlaced and codec == "libx264":
            opts["x264-params"] = "interlaced=1:tff=1"
        if interlaced and codec == "mpeg2video":
            opts["flags"] = "+ildct+ilme"
            opts["top"] = "1"
        opts.update(options or {})
        video.codec_context.options = opts
        if sar is not None:
            video.codec_context.sample_aspect_ratio = sar
        if rotation:
            video.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream(audio_codec, rate=audio_rate, layout=audio)
        t = start
        for i in range(count):
            frame = _picture(width, height, i, black=i / float(rate) < black_seconds, marker=marker)
            if pix_fmt != "yuv420p":
                frame = frame.reformat(format=pix_fmt)
            if vfr:
                # irregular gaps between 20 and 60 ms, a phone's variable frame rate
                frame.pts = round(t * 1000)
                t += (20 + (i * 37) % 41) / 1000
            else:
                frame.pts = i + round(start * rate)
            frame.time_base = tb
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if astream is not None:
            _write_audio(out, astream, audio_seconds if audio_seconds is not None else count / float(rate),
                         start)
    return path


def _write_audio(out, stream, seconds: float, start: float) -> None:
    ctx = stream.codec_context
    rate = ctx.sample_rate
    fmt = ctx.format.name
    packed = fmt in ("s16",)
    channels = ctx.layout.nb_channels if hasattr(ctx.layout, "nb_channels") else ctx.channels
    chunk = ctx.frame_size or 1024
    total = int(seconds * rate)
    offset = int(start * rate)
    done = 0
    while done < total:
        n = min(chunk, total - done)
        frame = av.AudioFrame(format=fmt if fmt in ("s16", "fltp") else "fltp", layout=ctx.layout.name, samples=n)
        frame.sample_rate = rate
        for plane, data in zip(frame.planes, _tone(n, channels, rate, done, "s16" if packed else "flt")):
            memoryview(plane)[:len(data)] = data
        frame.pts = offset + done
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        done += n
    for packet in stream.encode(None):
        out.mux(packet)


def make_multi_audio(path: str | Path, tracks: list[dict], *, seconds: float = 2.0, video: bool = True) -> Path:
    """A clip with several audio streams, each `{"language"?, "title"?, "default"?, "layout"?}` (the
    container from the extension: mkv keeps languages, titles and default flags)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        vstream = None
        if video:
            vstream = out.add_stream("libx264", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 320, 240, "yuv420p"
            vstream.codec_context.options = {"preset": "ultrafast"}
        streams = []
        for t in tracks:
            stream = out.add_stream("aac", rate=48000, layout=t.get("layout", "stereo"))
            for key in ("language", "title"):
                if t.get(key):
                    stream.metadata[key] = t[key]
            stream.disposition = av.stream.Disposition.default if t.get("default") else av.stream.Disposition(0)
            streams.append(stream)
        if vstream is not None:
            for i in range(round(seconds * 25)):
                frame = _picture(320, 240, i)
                frame.pts = i
                for packet in vstream.encode(frame):
                    out.mux(packet)
            for packet in vstream.encode(None):
                out.mux(packet)
        for stream in streams:
            _write_audio(out, stream, seconds, 0.0)
    return path


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An AAC-in-MP4 file with no video."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000, layout="stereo")
        _write_audio(out, stream, seconds, 0.0)
    return path


def make_gif(path: str | Path, frames: int = 10, width: int = 64, height: int = 48) -> Path:
    """An animated GIF (frames=1: a still one)."""
    path = Path(path)
    with av.open(str(path), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb8"
        for i in range(frames):
            frame = _picture(width, height, i * 3).reformat(format="rgb8")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_image(path: str | Path, codec: str = "png", width: int = 64, height: int = 48) -> Path:
    """A single still picture (png or mjpeg), as a file of that image format."""
    path = Path(path)
    ctx = av.CodecContext.create(codec, "w")
    fmt = {"png": "rgb24", "mjpeg": "yuvj420p"}[codec]
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, fmt, Fraction(1, 25)
    frame = _picture(width, height, 0).reformat(format=fmt)
    path.write_bytes(b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None)))
    return path


def corrupt_middle(src: Path, dst: Path, fraction: float = 0.1) -> Path:
    """Copy src with a run of garbage bytes in its middle (the container index left intact)."""
    data = bytearray(src.read_bytes())
    size = max(64, int(len(data) * fraction))
    start = len(data) // 2 - size // 2
    data[start:start + size] = os.urandom(size)
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """Copy the first `keep` of src."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def write_text(path: Path, text: str) -> Path:
    """A text file (playlists, concat scripts, plain prose)."""
    path.write_text(text)
    return path


def random_bytes(path: Path, size: int = 65536, seed: int = 7) -> Path:
    """Deterministic noise."""
    state = seed
    out = bytearray()
    while len(out) < size:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        out += struct.pack(">Q", state)
    path.write_bytes(bytes(out[:size]))
    return path


# ---------------------------------------------------------------------------------------------
# Checking an HLS output tree the way a player (and the acceptance checker) sees it


def parse_attributes(text: str) -> dict:
    """EXT-X attribute list -> dict (quoted values unquoted)."""
    import re

    return {m[1]: m[2].strip('"') for m in re.finditer(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def read_master(outdir: Path) -> dict:
    """The master playlist as {"variants": [(attrs, uri)], "iframes": [attrs], "media": [attrs], "lines": [...]}."""
    lines = (Path(outdir) / "master.m3u8").read_text().splitlines()
    variants, iframes, media = [], [], []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            variants.append((parse_attributes(line.split(":", 1)[1]), lines[i + 1]))
        elif line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            iframes.append(parse_attributes(line.split(":", 1)[1]))
        elif line.startswith("#EXT-X-MEDIA:"):
            media.append(parse_attributes(line.split(":", 1)[1]))
    return {"variants": variants, "iframes": iframes, "media": media, "lines": lines}


def read_media_playlist(path: Path) -> dict:
    """A media playlist as {"map", "segments": [(duration, uri, byterange)], "tags": set, "target"}."""
    lines = Path(path).read_text().splitlines()
    segments, tags, init, target, duration, byterange = [], set(), None, None, None, None
    for line in lines:
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-BYTERANGE:"):
            length, _, offset = line.split(":", 1)[1].partition("@")
            byterange = (int(length), int(offset or 0))
        elif line.startswith("#EXT-X-MAP:"):
            init = parse_attributes(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#"):
            tags.add(line.split(":", 1)[0])
        elif line.strip():
            segments.append((duration, line.strip(), byterange))
            duration, byterange = None, None
    return {"map": init, "segments": segments, "tags": tags, "target": target, "lines": lines}


def decode_segment(init: bytes, segment: bytes) -> list:
    """Decode init + one segment as the acceptance checker does; returns the frames."""
    import io

    with av.open(io.BytesIO(init + segment)) as container:
        return list(container.decode(container.streams[0]))


def check_hls(outdir: Path, expected_duration: float | None = None, decode: bool = True) -> dict:
    """Assert everything a player needs of an output tree; returns facts for further asserts."""
    outdir = Path(outdir)
    master = read_master(outdir)
    assert master["lines"][0] == "#EXTM3U"
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in master["lines"]
    assert any(line.startswith("#EXT-X-VERSION:") for line in master["lines"])
    assert master["variants"], "no variants"
    facts = {"variants": [], "audio": None, "master": master}
    extinf_lists = []
    for attrs, uri in master["variants"]:
        for key in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "FRAME-RATE", "CODECS"):
            assert key in attrs, f"{uri}: {key} missing"
        width, height = (int(v) for v in attrs["RESOLUTION"].split("x"))
        assert width % 2 == 0 and height % 2 == 0
        playlist = read_media_playlist(outdir / uri)
        assert "#EXT-X-ENDLIST" in playlist["tags"]
        assert playlist["map"]
        folder = (outdir / uri).parent
        init = (folder / playlist["map"]).read_bytes()
        peak = 0.0
        for duration, name, _ in playlist["segments"]:
            assert round(duration) <= playlist["target"]
            data = (folder / name).read_bytes()
            peak = max(peak, len(data) * 8 / duration)
            if decode:
                frames = decode_segment(init, data)
                assert frames, f"{name} decodes to nothing"
                assert frames[0].key_frame, f"{folder.name}/{name} does not start with a keyframe"
                assert {(f.width, f.height) for f in frames} == {(width, height)}
        assert int(attrs["BANDWIDTH"]) >= peak
        extinf_lists.append([round(d, 3) for d, _, _ in playlist["segments"]])
        facts["variants"].append({"attrs": attrs, "uri": uri, "width": width, "height": height,
                                  "duration": sum(d for d, _, _ in playlist["segments"]),
                                  "segments": len(playlist["segments"]), "folder": folder})
    assert all(lst == extinf_lists[0] for lst in extinf_lists), f"unaligned segments: {extinf_lists}"
    if expected_duration is not None:
        total = facts["variants"][0]["duration"]
        assert abs(total - expected_duration) <= 0.05 * expected_duration + 0.05, (total, expected_duration)
    audio_groups = [m for m in master["media"] if m.get("TYPE") == "AUDIO"]
    if audio_groups:
        uri = audio_groups[0]["URI"]
        playlist = read_media_playlist(outdir / uri)
        folder = (outdir / uri).parent
        init = (folder / playlist["map"]).read_bytes()
        samples = 0
        for _, name, _ in playlist["segments"]:
            frames = decode_segment(init, (folder / name).read_bytes())
            assert frames and frames[0].sample_rate == 48000 and frames[0].layout.nb_channels == 2
            samples += sum(f.samples for f in frames)
        facts["audio"] = {"uri": uri, "seconds": samples / 48000, "segments": len(playlist["segments"])}
        for attrs, _ in master["variants"]:
            assert attrs.get("AUDIO") == audio_groups[0]["GROUP-ID"]
            assert attrs["CODECS"].endswith(",mp4a.40.2")
    else:
        assert not (outdir / "audio").exists()
        for attrs, _ in master["variants"]:
            assert "mp4a" not in attrs["CODECS"] and "AUDIO" not in attrs
    return facts


def make_header_only(path: str | Path, width: int, height: int, frames: int = 25) -> Path:
    """A MOV whose header declares a width x height MJPEG stream and whose packets hold no picture:
    what a probe makes of it before decoding anything (a huge size costs nothing to write)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(frames):
            packet = av.Packet(b"\xff\xd8\xff\xdb" + bytes(40) + b"\xff\xd9")
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base, packet.is_keyframe = Fraction(1, 25), True
            out.mux(packet)
    return path
