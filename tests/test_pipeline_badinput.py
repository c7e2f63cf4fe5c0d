"""The bad-input corpus through `streamforge transcode`'s body: odd but valid media gives a correct
ladder; broken or hostile files give one line on stderr, exit 2, no master, and open nothing they name."""
from __future__ import annotations

import http.server
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import media_factory as mf
import pytest

from streamforge.pipeline.command import transcode_command


class Config:
    """The [pipeline] section as the CLI gets it, with a tiny ladder so the corpus runs in seconds."""

    codecs = ["h264"]
    heights = [240, 144]
    preset = "ultrafast"
    segment_seconds = 1
    max_duration = 3600.0
    max_width = 8192
    max_height = 8192
    max_streams = 32
    max_fps = 60
    run_timeout = 600


def transcode(src: Path, outdir: Path, capsys, **overrides) -> tuple[int, str, str]:
    """Run the command body; (exit status, stdout, stderr)."""
    code = transcode_command(str(src), str(outdir), Config(), overrides.get("codecs"), overrides.get("heights"),
                             overrides.get("preset"))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, outdir: Path, *words: str) -> None:
    """Exit 2, exactly one line naming the problem, and no master anywhere near outdir."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamforge transcode: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0].lower(), lines[0]
    assert not (outdir / "master.m3u8").exists()
    assert not list(outdir.parent.rglob("master.m3u8"))
    # nothing half-written is left in outdir's parent either (the run works in a temporary sibling)
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(f".{outdir.name}.")]


# ---------------------------------------------------------------------------------------------
# Valid but awkward media


VALID = {
    # name: (maker, expected seconds, expected (width, height) of each rung, audio expected)
    "plain.mp4": (lambda p: mf.make_video(p), 1.0, [(320, 240), (192, 144)], True),
    "rotated-phone.mp4": (lambda p: mf.make_video(p, rotation=90, marker=True), 1.0, [(240, 320), (144, 192)], True),
    "upside-down.mp4": (lambda p: mf.make_video(p, rotation=180, marker=True), 1.0, [(320, 240), (192, 144)], True),
    "odd-dims-444.mp4": (lambda p: mf.make_video(p, width=321, height=241, pix_fmt="yuv444p", audio=None),
                         1.0, [(320, 240), (192, 144)], False),
    "vfr.mp4": (lambda p: mf.make_video(p, vfr=True, frames=40), 1.6, [(320, 240), (192, 144)], True),
    "60fps.mp4": (lambda p: mf.make_video(p, fps=Fraction(60000, 1001)), 1.0, [(320, 240), (192, 144)], True),
    "120fps.mkv": (lambda p: mf.make_video(p, fps=120, seconds=0.5), 0.5, [(320, 240), (192, 144)], True),
    "hevc-10bit.mp4": (lambda p: mf.make_video(p, codec="libx265", pix_fmt="yuv420p10le"), 1.0,
                       [(320, 240), (192, 144)], True),
    "yuv444.mp4": (lambda p: mf.make_video(p, pix_fmt="yuv444p"), 1.0, [(320, 240), (192, 144)], True),
    "mjpeg-pcm.avi": (lambda p: mf.make_video(p, codec="mjpeg", pix_fmt="yuvj420p", audio_codec="pcm_s16le"),
                      1.0, [(320, 240), (192, 144)], True),
    "surround-5.1.mp4": (lambda p: mf.make_video(p, audio="5.1"), 1.0, [(320, 240), (192, 144)], True),
    "no-audio.mp4": (lambda p: mf.make_video(p, audio=None), 1.0, [(320, 240), (192, 144)], False),
    "64x64.mp4": (lambda p: mf.make_video(p, width=64, height=64), 1.0, [(64, 64)], True),
    "five-frames.mp4": (lambda p: mf.make_video(p, frames=5), 0.2, [(320, 240), (192, 144)], True),
    "starts-at-10s.ts": (lambda p: mf.make_video(p, start=10.0), 1.0, [(320, 240), (192, 144)], True),
    "starts-at-10s.mkv": (lambda p: mf.make_video(p, start=10.0), 1.0, [(320, 240), (192, 144)], True),
    "interlaced-ntsc.ts": (lambda p: mf.make_video(p, codec="mpeg2video", width=720, height=480,
                                                   fps=Fraction(30000, 1001), interlaced=True, sar=Fraction(8, 9),
                                                   audio_codec="mp2"),
                           1.0, [(320, 240), (192, 144)], True),
    "8k.mkv": (lambda p: mf.make_video(p, width=7680, height=4320, frames=2, codec="mjpeg", pix_fmt="yuvj420p",
                                       audio=None), 0.08, [(426, 240), (256, 144)], False),
    "animated.gif": (lambda p: mf.make_gif(p, frames=10), 1.0, [(64, 48)], False),
    "raw-elementary.h264": (lambda p: mf.make_video(p, audio=None), 1.0, [(320, 240), (192, 144)], False),
    "vp9-opus.webm": (lambda p: mf.make_video(p, codec="libvpx-vp9", audio_codec="libopus"), 1.0,
                      [(320, 240), (192, 144)], True),
    "program-stream.mpg": (lambda p: mf.make_video(p, codec="mpeg2video", audio_codec="mp2"), 1.0,
                           [(320, 240), (192, 144)], True),
    "non-square-pixels.mp4": (lambda p: mf.make_video(p, width=352, height=288, sar=Fraction(12, 11)), 1.0,
                              [(320, 240), (192, 144)], True),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_input_gives_a_correct_ladder(name, tmp_path, capsys):
    maker, seconds, sizes, audio = VALID[name]
    src = maker(tmp_path / name)
    outdir = tmp_path / "out"
    code, out, err = transcode(src, outdir, capsys)
    assert code == 0, err
    assert "master.m3u8" in out
    facts = mf.check_hls(outdir, expected_duration=seconds)
    assert [(v["width"], v["height"]) for v in facts["variants"]] == sizes
    assert (facts["audio"] is not None) == audio
    if audio:
        assert abs(facts["audio"]["seconds"] - seconds) < 0.15
    for variant in facts["variants"]:
        assert float(variant["attrs"]["FRAME-RATE"]) <= 60.0
    assert (outdir / "thumbnails" / "cover.jpg").read_bytes()[:2] == b"\xff\xd8"


def _first_frame_luma(outdir: Path, folder: str):
    init = (outdir / folder / "init.mp4").read_bytes()
    frame = mf.decode_segment(init, (outdir / folder / "seg_00001.m4s").read_bytes())[0]
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    data = bytes(plane)

    def at(x, y):
        return data[y * plane.line_size + x]
    w, h = frame.width, frame.height
    return {"top-left": at(4, 4), "top-right": at(w - 5, 4), "bottom-left": at(4, h - 5),
            "bottom-right": at(w - 5, h - 5)}


@pytest.mark.parametrize("rotation,corner", [(90, "bottom-left"), (180, "bottom-right"), (0, "top-left")])
def test_rotation_turns_the_picture_not_just_its_size(rotation, corner, tmp_path, capsys):
    """The marker drawn top-left of the coded picture ends where a player showing the display matrix puts it."""
    src = mf.make_video(tmp_path / "phone.mp4", rotation=rotation, marker=True, audio=None, frames=3)
    code, _, err = transcode(src, tmp_path / "out", capsys)
    assert code == 0, err
    corners = _first_frame_luma(tmp_path / "out", "240p")
    assert max(corners, key=corners.get) == corner, corners


def test_interlaced_input_is_deinterlaced_and_square(tmp_path):
    from streamforge.pipeline import probe

    src = mf.make_video(tmp_path / "ntsc.ts", codec="mpeg2video", width=720, height=480, fps=Fraction(30000, 1001),
                        interlaced=True, sar=Fraction(8, 9), audio=None, frames=6)
    info = probe(src)
    assert info.interlaced and (info.width, info.height) == (640, 480)


# ---------------------------------------------------------------------------------------------
# Broken input


def _truncated_mp4(p: Path) -> Path:
    full = mf.make_video(p.with_name("full-" + p.name), seconds=2)
    return mf.truncate(full, p)


def _truncated_faststart_mp4(p: Path) -> Path:
    full = mf.make_video(p.with_name("full-" + p.name), seconds=2, container_options={"movflags": "faststart"})
    return mf.truncate(full, p, keep=0.6)


BROKEN = {
    "zero-bytes.mp4": (lambda p: p.write_bytes(b"") or p, "empty"),
    "random-bytes.mp4": (lambda p: mf.random_bytes(p), "not a video"),
    "prose.txt": (lambda p: mf.write_text(p, "Dear StreamForge, this is not a video.\n" * 40), "not a video"),
    "prose-named.mp4": (lambda p: mf.write_text(p, "<html><body>hello</body></html>\n" * 40), "not a video"),
    "still.png": (lambda p: mf.make_image(p, "png"), "still image"),
    "still.jpg": (lambda p: mf.make_image(p, "mjpeg"), "still image"),
    "still.gif": (lambda p: mf.make_gif(p, frames=1), "still image"),
    "truncated.mp4": (_truncated_mp4, "not a video"),
    "truncated-faststart.mp4": (_truncated_faststart_mp4, "truncated"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_input_is_refused_with_one_line(name, tmp_path, capsys):
    maker, words = BROKEN[name]
    src = maker(tmp_path / name)
    outdir = tmp_path / "out"
    code, _, err = transcode(src, outdir, capsys)
    assert_refused(code, err, outdir, words)


def test_corrupted_middle_gives_a_valid_ladder_or_a_clean_refusal(tmp_path, capsys):
    src = mf.corrupt_middle(mf.make_video(tmp_path / "good.mp4", seconds=2), tmp_path / "corrupt.mp4")
    outdir = tmp_path / "out"
    code, _, err = transcode(src, outdir, capsys)
    if code == 0:
        mf.check_hls(outdir, expected_duration=2.0)
    else:
        assert_refused(code, err, outdir)


def test_missing_file_and_unwritable_outdir(tmp_path, capsys):
    code, _, err = transcode(tmp_path / "nope.mp4", tmp_path / "out", capsys)
    assert_refused(code, err, tmp_path / "out", "no such file")
    src = mf.make_video(tmp_path / "ok.mp4", frames=3, audio=None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = transcode(src, blocker / "out", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = transcode(src, locked / "out", capsys)
        assert code == 2 and "Traceback" not in err


def test_limits_are_enforced(tmp_path, capsys):
    src = mf.make_video(tmp_path / "wide.mp4", width=640, height=360, frames=3, audio=None)

    class Small(Config):
        max_width, max_height = 320, 240

    code = transcode_command(str(src), str(tmp_path / "out"), Small(), None, None, None)
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", "too large")

    class Short(Config):
        max_duration = 0.05

    code = transcode_command(str(src), str(tmp_path / "out"), Short(), None, None, None)
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", "too long")


def test_a_picture_over_the_limits_is_refused_from_its_header(tmp_path, capsys):
    """Issue 20, hole 7: the probe decoded frames (a 16000x16000 one is 384 MB, seven of them in av.open
    alone) before the size check. The header's size is refused before any frame is decoded: here the
    frames hold no picture at all, and the refusal still names the size."""
    for width, height in ((16000, 16000), (16000, 480), (480, 9000)):
        src = mf.make_header_only(tmp_path / f"huge-{width}x{height}.mov", width, height)
        code, _, err = transcode(src, tmp_path / "out", capsys)
        assert_refused(code, err, tmp_path / "out", "too large", f"{width}x{height}", "8192x8192")


def test_huge_pictures_are_held_a_few_at_a_time():
    """Issue 20, hole 7: each rung's queue held six source pictures (an 8192x8192 one is 100 MB) and the
    decoder one per core; huge pictures get one queued picture and one decoder thread."""
    from streamforge.pipeline.workers import QUEUE_FRAMES, decoder_threads, queue_frames
    assert queue_frames(1920, 1080) == QUEUE_FRAMES and queue_frames(3840, 2160) == 5
    assert queue_frames(8192, 8192) == queue_frames(16000, 16000) == 1
    assert queue_frames(8192, 8192, most=4) == 1 and queue_frames(640, 360, most=4) == 4
    assert decoder_threads(8192, 8192) == 1 and decoder_threads(1920, 1080) >= 1


def test_a_huge_source_is_scaled_to_the_top_rung_as_it_is_decoded(tmp_path, capsys, monkeypatch):
    """The pictures the queues hold are the top rung's size once the source is huge (the threshold is
    lowered here so that a small clip takes that path): the ladder is the same, frame for frame."""
    import sys
    tc = sys.modules["streamforge.pipeline.transcode"]
    src = mf.make_video(tmp_path / "src.mp4", width=640, height=480, seconds=2, audio=None, marker=True)
    ladders = []
    for shrink, out in ((64 << 20, tmp_path / "plain"), (0, tmp_path / "shrunk")):
        monkeypatch.setattr(tc, "SHRINK_BYTES", shrink)
        code, _, err = transcode(src, out, capsys)
        assert code == 0, err
        facts = mf.check_hls(out, expected_duration=2.0)
        ladders.append([(v["width"], v["height"], v["segments"], round(v["duration"], 3)) for v in facts["variants"]])
    assert ladders[0] == ladders[1] and sorted(h for _, h, _, _ in ladders[0]) == [144, 240]


def test_bad_flags_are_one_line(tmp_path, capsys):
    src = mf.make_video(tmp_path / "ok.mp4", frames=3, audio=None)
    code, _, err = transcode(src, tmp_path / "out", capsys, codecs=["h266"])
    assert_refused(code, err, tmp_path / "out", "unknown codec")
    code, _, err = transcode(src, tmp_path / "out", capsys, heights=["big"])
    assert_refused(code, err, tmp_path / "out", "heights")
    code, _, err = transcode(src, tmp_path / "out", capsys, preset="warp9")
    assert_refused(code, err, tmp_path / "out", "unknown preset")


# ---------------------------------------------------------------------------------------------
# Hostile input: files that name other files or URLs


class Watched:
    """A local HTTP server that counts requests, and FIFOs that notice being opened for reading.

    A FIFO opened for reading blocks until a writer comes; the watcher keeps trying a non-blocking
    open for writing, which only succeeds while someone is reading, so no opening can go unseen
    (and the reader is released at once with an empty file)."""

    def __init__(self, root: Path):
        counter = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                counter.requests.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.fifos: dict[Path, bool] = {}
        self.stopped = False
        self.root = root
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def fifo(self, name: str) -> Path:
        path = self.root / name
        os.mkfifo(path)
        self.fifos[path] = False
        return path

    def _watch(self):
        while not self.stopped:
            for path in list(self.fifos):
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                self.fifos[path] = True
                os.close(fd)
            time.sleep(0.005)

    def close(self):
        time.sleep(0.05)
        self.stopped = True
        self.thread.join()
        self.server.shutdown()

    @property
    def opened(self) -> list:
        return [str(p) for p, seen in self.fifos.items() if seen]


@pytest.fixture
def watched(tmp_path):
    w = Watched(tmp_path)
    yield w
    w.close()


def _hls(w: Watched, local: Path, video: Path) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:1.0,\n{w.url}/remote.ts\n#EXTINF:1.0,\nfile://{local}\n#EXTINF:1.0,\n{local}\n"
            f"#EXTINF:1.0,\n{video}\n#EXT-X-ENDLIST\n")


def _master(w: Watched, local: Path, video: Path) -> str:
    return (f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\n{w.url}/variant.m3u8\n"
            f"#EXT-X-STREAM-INF:BANDWIDTH=200000\n{local}\n")


def _concat(w: Watched, local: Path, video: Path) -> str:
    return f"ffconcat version 1.0\nfile '{local}'\nfile '{video}'\nfile '{w.url}/remote.mp4'\n"


HOSTILE = {
    "playlist.m3u8": _hls,
    "playlist-named.mp4": _hls,
    "master-named.mov": _master,
    "concat.txt": _concat,
    "concat-named.mkv": _concat,
    "sdp.sdp": lambda w, local, video: ("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                                        "m=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_open_nothing_they_name(name, tmp_path, capsys, watched):
    local = watched.fifo("secret.ts")
    video = mf.make_video(tmp_path / "real-video.mp4", frames=3)
    src = mf.write_text(tmp_path / name, HOSTILE[name](watched, local, video))
    outdir = tmp_path / "out"
    code, _, err = transcode(src, outdir, capsys)
    assert_refused(code, err, outdir)
    watched.close()
    assert watched.requests == []
    assert watched.opened == []


def test_image_sequence_pattern_is_not_expanded(tmp_path, capsys, watched):
    """A file named like an image2 pattern is read as itself; its would-be siblings stay untouched."""
    sibling = watched.fifo("frame002.png")
    src = mf.make_image(tmp_path / "frame%03d.png", "png")
    mf.make_image(tmp_path / "frame001.png", "png")
    code, _, err = transcode(src, tmp_path / "out", capsys)
    assert_refused(code, err, tmp_path / "out")  # FFmpeg calls it image2 (refused) rather than png_pipe
    watched.close()
    assert watched.opened == [], sibling


def test_the_watchers_do_notice_ffmpeg_following_a_playlist(tmp_path, watched):
    """Control experiment: plain FFmpeg (no whitelists) reads what the playlist names, and we see it."""
    import av

    local = watched.fifo("secret.ts")
    src = mf.write_text(tmp_path / "playlist.m3u8", _hls(watched, local, tmp_path / "none.mp4"))
    try:
        with av.open(str(src), options={"protocol_whitelist": "file,http,tcp"}) as container:
            for _ in container.demux():
                pass
    except av.FFmpegError:
        pass
    watched.close()
    assert watched.requests or watched.opened
