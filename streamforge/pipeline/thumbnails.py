"""Thumbnails from the one decode pass: a cover, evenly spaced previews, a timeline sprite + WebVTT.

The decode thread offers every constant-rate output frame to `Thumbnailer.offer`, which only
checks a timestamp against a sorted list of wanted times and hands the few wanted frames to a
thread of its own; scaling and JPEG encoding never hold up the decoder.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import Interpolation, VideoReformatter

from streamforge.captiontext import vtt_time
from streamforge.pipeline.ladder import fit_box

COVER, PREVIEW, TIMELINE = "COVER", "PREVIEW", "TIMELINE"
SPRITE_COLUMNS, SPRITE_ROWS = 10, 10
# a frame darker than this mean luma, or flatter than this spread, is not a cover (fades, black)
COVER_MIN_MEAN, COVER_MIN_STDDEV = 40.0, 12.0


@dataclass(frozen=True)
class ThumbnailOutput:
    """One thumbnail file, relative to the output root."""

    type: str  # COVER, PREVIEW or TIMELINE
    path: str
    timestamp: float
    width: int
    height: int


def encode_jpeg(frame: av.VideoFrame, quality: int = 3) -> bytes:
    """Encode one yuvj420p frame as a JPEG file (quality: 2 best .. 31 worst, as ffmpeg's -q:v)."""
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.width, frame.height, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    # mjpeg takes its quantiser from qmin/qmax when QSCALE is on and the frame carries no quality
    ctx.qscale = True
    ctx.qmin = ctx.qmax = quality
    return b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))


class Thumbnailer:
    """Picks and renders the thumbnails of one video while it is being decoded."""

    def __init__(self, root: Path, width: int, height: int, duration: float, preview_count: int = 5,
                 emit=None, on_start=None, queue_size: int = 4):
        self.root = root
        self.directory = root / "thumbnails"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.duration = max(duration, 0.001)
        self.emit = emit or (lambda kind, path: None)
        self.on_start = on_start or (lambda: None)
        self.cover_size = fit_box(width, height, 1280, 720)
        self.preview_size = fit_box(width, height, 640, 360)
        self.tile_size = fit_box(width, height, 160, 90)
        self.interval = min(10.0, max(1.0, self.duration / 100))
        self.outputs: list[ThumbnailOutput] = []
        self.cover_done = False
        self._best_cover = None  # (score, frame, t): the least black candidate seen so far
        self._tiles: list[tuple[float, av.VideoFrame]] = []
        self._sheets: list[tuple[str, int, int]] = []
        self._cues: list[tuple[float, str, int, int]] = []
        requests = []
        step = max(0.5, self.duration / 50)
        t = 0.1 * self.duration
        while t <= 0.6 * self.duration and len([r for r in requests if r[1] == COVER]) < 40:
            requests.append((t, COVER, 0))
            t += step
        for i in range(max(0, preview_count)):
            requests.append(((i + 1) * self.duration / (preview_count + 1), PREVIEW, i + 1))
        for k in range(max(1, math.ceil(self.duration / self.interval))):
            requests.append((k * self.interval, TIMELINE, k))
        self._requests = sorted(requests)
        self._next = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)  # source pictures: fewer when huge
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="thumbnails", daemon=True)
        self._reformatter = None
        self._thread.start()

    def offer(self, frame: av.VideoFrame, t: float, frame_duration: float) -> None:
        """Decode thread: hand over `frame` (output time t) if a thumbnail wants it."""
        wanted = []
        while self._next < len(self._requests) and self._requests[self._next][0] < t + frame_duration / 2:
            request = self._requests[self._next]
            self._next += 1
            if request[1] != COVER or not self.cover_done:
                wanted.append(request)
        if wanted:
            self._put((frame, t, wanted))

    def next_wanted(self) -> float | None:
        """The output time of the next picture a thumbnail still wants; None when none is left."""
        return self._requests[self._next][0] if self._next < len(self._requests) else None

    def finish(self, last_frame: av.VideoFrame | None, t: float) -> list[ThumbnailOutput]:
        """Serve what is left with the last frame, wait for the thread, write sprite sheets and VTT."""
        rest = self._requests[self._next:]
        self._next = len(self._requests)
        if last_frame is not None and rest:
            self._put((last_frame, t, rest))
        self._put(None)
        self._thread.join()
        if self._error:
            raise self._error
        if not self.cover_done and self._best_cover is not None:
            _, frame, when = self._best_cover
            self._write_cover(frame, when)
        if self._tiles:
            self._write_sheet()
        if self._cues:
            self._write_vtt()
        return list(self.outputs)

    def abort(self) -> None:
        """Stop the thread without writing anything more (the run failed)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self._error = self._error or RuntimeError("aborted")
        self._thread.join(timeout=5)

    def _put(self, item) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        if self._error:
            raise self._error

    def _run(self) -> None:
        self.on_start()
        self._reformatter = VideoReformatter()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                frame, _t, wanted = item
                for when, kind, index in wanted:
                    if kind == COVER:
                        self._consider_cover(frame, when)
                    elif kind == PREVIEW:
                        self._write_preview(frame, when, index)
                    else:
                        self._add_tile(frame, when)
        except Exception as e:  # noqa: BLE001 - handed to the decode thread, which raises it
            self._error = e
            while True:  # keep draining so the decode thread never blocks on a dead consumer
                try:
                    if self._queue.get(timeout=1) is None:
                        return
                except queue.Empty:
                    return

    def _scaled(self, frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
        return self._reformatter.reformat(frame, size[0], size[1], "yuvj420p",
                                          interpolation=Interpolation.AREA, threads=1)

    def _save(self, relpath: str, data: bytes) -> None:
        path = self.root / relpath
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.emit("thumbnail", relpath)

    def _consider_cover(self, frame: av.VideoFrame, t: float) -> None:
        if self.cover_done:
            return
        small = self._reformatter.reformat(frame, 64, 36, "gray", interpolation=Interpolation.AREA, threads=1)
        plane = small.planes[0]
        data = bytes(plane)
        values = [data[r * plane.line_size + c] for r in range(36) for c in range(64)]
        mean = sum(values) / len(values)
        stddev = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if mean >= COVER_MIN_MEAN and stddev >= COVER_MIN_STDDEV:
            self._write_cover(frame, t)
            return
        score = min(mean, 128) + stddev * 2
        if self._best_cover is None or score > self._best_cover[0]:
            self._best_cover = (score, frame, t)

    def _write_cover(self, frame: av.VideoFrame, t: float) -> None:
        self.cover_done = True
        self._best_cover = None
        self._save("thumbnails/cover.jpg", encode_jpeg(self._scaled(frame, self.cover_size), 3))
        self.outputs.append(ThumbnailOutput(COVER, "thumbnails/cover.jpg", round(t, 3), *self.cover_size))

    def _write_preview(self, frame: av.VideoFrame, t: float, index: int) -> None:
        relpath = f"thumbnails/preview_{index:02d}.jpg"
        self._save(relpath, encode_jpeg(self._scaled(frame, self.preview_size), 3))
        self.outputs.append(ThumbnailOutput(PREVIEW, relpath, round(t, 3), *self.preview_size))

    def _add_tile(self, frame: av.VideoFrame, t: float) -> None:
        self._tiles.append((t, self._scaled(frame, self.tile_size)))
        if len(self._tiles) == SPRITE_COLUMNS * SPRITE_ROWS:
            self._write_sheet()

    def _write_sheet(self) -> None:
        tiles, self._tiles = self._tiles, []
        tw, th = self.tile_size
        columns = min(SPRITE_COLUMNS, len(tiles))
        rows = math.ceil(len(tiles) / SPRITE_COLUMNS)
        sheet = av.VideoFrame(tw * columns, th * rows, "yuvj420p")
        for plane, fill in zip(sheet.planes, (0, 128, 128)):
            memoryview(plane)[:] = bytes([fill]) * plane.buffer_size
        number = len(self._sheets) + 1
        name = "sprite.jpg" if number == 1 else f"sprite_{number}.jpg"
        for i, (t, tile) in enumerate(tiles):
            x, y = (i % SPRITE_COLUMNS) * tw, (i // SPRITE_COLUMNS) * th
            for p, (dst, src) in enumerate(zip(sheet.planes, tile.planes)):
                shift = 0 if p == 0 else 1  # 4:2:0 chroma planes are half size
                w, h = tw >> shift, th >> shift
                d, s = memoryview(dst), memoryview(src)
                x0, y0 = x >> shift, y >> shift
                for row in range(h):
                    d[(y0 + row) * dst.line_size + x0:(y0 + row) * dst.line_size + x0 + w] = \
                        s[row * src.line_size:row * src.line_size + w]
            self._cues.append((t, name, x, y))
        relpath = f"thumbnails/{name}"
        self._save(relpath, encode_jpeg(sheet, 5))
        self._sheets.append((name, sheet.width, sheet.height))
        self.outputs.append(ThumbnailOutput(TIMELINE, relpath, round(tiles[0][0], 3), sheet.width, sheet.height))

    def _write_vtt(self) -> None:
        tw, th = self.tile_size
        lines = ["WEBVTT", ""]
        for i, (t, name, x, y) in enumerate(self._cues):
            end = self._cues[i + 1][0] if i + 1 < len(self._cues) else max(self.duration, t + 0.001)
            lines += [f"{vtt_time(t)} --> {vtt_time(end)}", f"{name}#xywh={x},{y},{tw},{th}", ""]
        self._save("thumbnails/timeline.vtt", "\n".join(lines).encode())
        self.outputs.append(ThumbnailOutput(TIMELINE, "thumbnails/timeline.vtt", 0.0, tw, th))
