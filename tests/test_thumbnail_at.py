"""A picture of any moment from the HLS output (streamforge.pipeline.frames): the right segment, the
right frame within it, the asked width at the video's proportions; playlist parsing and bounds."""
from __future__ import annotations

import io
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streamforge.errors import ValidationError
from streamforge.pipeline import frames

FPS, SECONDS, W, H = 10, 8, 192, 108
SLOPE, BASE = 25, 20  # frame at t seconds is a flat grey of luma BASE + SLOPE * t (limited range)


def grey_clip(path: Path) -> Path:
    """A clip whose brightness tells the time: frame i is a flat grey of luma BASE + SLOPE * i / FPS."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast"}
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame(W, H, "yuv420p")
            for plane, value in zip(frame.planes, (round(BASE + SLOPE * i / FPS), 128, 128)):
                plane.update(bytes([value]) * plane.buffer_size)
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def hls(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("frames")
    src = grey_clip(tmp / "grey.mp4")
    out = tmp / "hls"
    cli = Path(sys.executable).parent / "streamforge"
    r = subprocess.run([str(cli), "transcode", str(src), str(out), "--heights", "108", "--preset", "ultrafast",
                        "--data-dir", str(tmp / "data")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return next(p.parent for p in out.glob("*/index.m3u8"))


def mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.reformat(format="gray").planes[0]
    data = bytes(plane)
    rows = [data[r * plane.line_size:r * plane.line_size + plane.width] for r in range(plane.height)]
    return sum(sum(row) for row in rows) / (plane.width * plane.height)


def picture(rung: Path, t: float, width: int) -> tuple[bytes, av.VideoFrame]:
    playlist = frames.parse_media_playlist((rung / "index.m3u8").read_text())
    seg = frames.segment_at(playlist, t)
    init = (rung / playlist.init_uri).read_bytes()
    data = frames.jpeg_at(init, (rung / seg.uri).read_bytes(), t - seg.start,
                          frames.scaled_size(W, H, width))
    with av.open(io.BytesIO(data)) as c:
        return data, next(c.decode(video=0))


@pytest.mark.parametrize("t", [0.0, 1.5, 3.9, 4.0, 4.35, 6.2, 7.9])
def test_the_picture_shows_that_moment(hls, t):
    data, frame = picture(hls, t, 96)
    assert data[:3] == b"\xff\xd8\xff"
    luma = mean_luma(frame)  # full range (JPEG)
    shown = BASE + SLOPE * int(t * FPS + 1e-6) / FPS
    want = (shown - 16) * 255 / 219
    assert abs(luma - want) < SLOPE * 255 / 219 / FPS * 1.6, (t, luma, want)


@pytest.mark.parametrize("width, height", [(16, 9), (17, 10), (96, 54), (320, 180), (1920, 1080)])
def test_the_picture_has_the_asked_width_and_the_video_proportions(hls, width, height):
    _, frame = picture(hls, 2.0, width)
    assert (frame.width, frame.height) == (width, height)


def test_playlists_are_parsed_with_their_timeline():
    text = ("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"800@0\"\n"
            "#EXTINF:1.000,\nseg_1.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n#EXTINF:4.0,\nseg_2.m4s\n"
            "#EXTINF:2.5,title\nseg_3.m4s\n#EXT-X-ENDLIST\n")
    p = frames.parse_media_playlist(text)
    assert p.init_uri == "init.mp4" and p.duration == 7.5
    assert [(s.uri, s.start) for s in p.segments] == [("seg_1.m4s", 0.0), ("seg_2.m4s", 1.0), ("seg_3.m4s", 5.0)]
    assert frames.segment_at(p, 0).uri == "seg_1.m4s" and frames.segment_at(p, 1.0).uri == "seg_2.m4s"
    assert frames.segment_at(p, 7.5).uri == "seg_3.m4s" and frames.segment_at(p, 99).uri == "seg_3.m4s"
    assert frames.parse_media_playlist("#EXTM3U\n#EXTINF:2,\na.ts\n").init_uri is None
    with pytest.raises(ValidationError):
        frames.segment_at(frames.parse_media_playlist("#EXTM3U\n"), 0)


@pytest.mark.parametrize("width", [0, 15, 1921, -5])
def test_widths_out_of_range_are_refused(width):
    with pytest.raises(ValidationError):
        frames.scaled_size(640, 360, width)


def test_a_negative_or_endless_offset_is_refused(hls):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            frames.jpeg_at(b"", b"", bad, (64, 36))
