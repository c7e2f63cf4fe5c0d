"""The pipeline's threads: a worker fed through a bounded queue, how a failed run stops them all, and
how many cores and how much priority they get."""
from __future__ import annotations

import os
import queue
import threading

QUEUE_FRAMES = 6  # per rung: enough to ride out jitter between threads, small enough to keep RSS flat
# decoded source pictures: what one queue (a rung's, the thumbnailer's) and the decoder's threads may
# hold, in bytes; a huge picture gets a shorter queue and fewer decoder threads, never fewer than one
QUEUE_BYTES = 128 * 1024 * 1024
DECODE_BYTES = 256 * 1024 * 1024


def picture_bytes(width: int, height: int) -> int:
    """At most how many bytes one decoded picture of width x height takes (3 a pixel: 10-bit 4:2:0, 4:4:4)."""
    return max(1, width * height * 3)


def queue_frames(width: int, height: int, most: int = QUEUE_FRAMES) -> int:
    """How many width x height pictures a queue holds: `most`, fewer when they are huge, at least one."""
    return max(1, min(most, QUEUE_BYTES // picture_bytes(width, height)))


def decoder_threads(width: int, height: int) -> int:
    """Decoder threads for width x height pictures: one per core, fewer for huge pictures (frame threading
    keeps a picture per thread in flight), at least one."""
    return max(1, min(cpu_cores(), DECODE_BYTES // picture_bytes(width, height)))


class Aborted(Exception):
    """Another thread of the run failed; its error is the one to report."""


class Worker(threading.Thread):
    """A thread fed through a bounded queue; a failure is kept for the decode thread to raise."""

    def __init__(self, name: str, abort: threading.Event, maxsize: int = QUEUE_FRAMES):
        super().__init__(name=name, daemon=True)
        self.abort = abort
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None

    def put(self, item) -> None:
        """Decode thread: queue an item, waiting while the queue is full; raise if the run failed."""
        while True:
            if self.abort.is_set():
                raise Aborted()
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish_input(self) -> None:
        """Decode thread: tell the worker there is no more input, after everything queued."""
        self.put(None)

    def stop(self) -> None:
        """Decode thread, on failure: tell the worker to stop now, dropping what is queued (never blocks)."""
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass

    def items(self):
        """Worker thread: yield queued items until the end marker or an abort."""
        while not self.abort.is_set():
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item

    def run(self) -> None:
        try:
            self.work()
        except Exception as e:  # noqa: BLE001 - re-raised in the decode thread, never swallowed
            self.error = e
            self.abort.set()

    def work(self) -> None:
        raise NotImplementedError


def encode_frames(stream, container, frames, sink, abort: threading.Event) -> None:
    """An encoding worker's loop: encode and mux every frame, flush the encoder at the end; after an
    abort the sink (an hls.FragmentSink) discards what it holds."""
    try:
        for frame in frames:
            for packet in stream.encode(frame):
                container.mux(packet)
            sink.check()
        if not abort.is_set():
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        if abort.is_set():
            sink.discard = True


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def lower_priority(steps: int) -> None:
    """Raise this thread's nice value by `steps` (Linux: a thread is a task with its own nice value)."""
    if steps <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:
        pass
