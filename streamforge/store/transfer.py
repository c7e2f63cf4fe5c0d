"""Copies of every object between two places: an S3 bucket or a backup directory (`migrate`, `backup`, `restore`).

Objects are streamed (never whole in memory, never through a temp file), several at a time, and
checked: the bytes read must be the size the listing gave and, where the source's ETag is a plain
MD5, hash to it; the target's answer must be the ETag of exactly those bytes (an MD5, or S3's MD5 of
the parts' MD5s when the copy went up in parts of PART_SIZE). A copy is known by its size and the
source's ETag (kept on the copy as `x-amz-meta-sf-source-etag`, or in the backup's index), so a rerun
copies only what is missing or changed. An object that vanishes between the listing and its copy (a
live install deleted it) is counted, not failed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from streamforge.errors import StorageError
from streamforge.store.objects import ObjectInfo, ObjectStore, content_type_for

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024
CHUNK = 1024 * 1024
SOURCE_ETAG = "sf-source-etag"
INDEX = "objects.jsonl"
_MD5 = re.compile(r"[0-9a-f]{32}")


class CopyError(StorageError):
    """One object's copy did not arrive whole."""


def is_plain_md5(etag: str) -> bool:
    """True when an ETag is the MD5 of the object's bytes (a single-part upload)."""
    return bool(_MD5.fullmatch(etag or ""))


class HashingReader:
    """A file-like wrapper that counts and hashes what is read: MD5 of the whole and of each part."""

    def __init__(self, stream, part_size: int = PART_SIZE, on_bytes: Callable[[int], None] | None = None) -> None:
        self.stream = stream
        self.part_size = part_size
        self.on_bytes = on_bytes
        self.size = 0
        self.whole = hashlib.md5()
        self.parts: list[bytes] = []
        self._part = hashlib.md5()
        self._in_part = 0

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes from the stream, hashing them."""
        data = self.stream.read(n if n is not None and n >= 0 else CHUNK)
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._in_part)
            self._part.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part_size:
                self.parts.append(self._part.digest())
                self._part, self._in_part = hashlib.md5(), 0
        self.whole.update(data)
        self.size += len(data)
        if self.on_bytes and data:
            self.on_bytes(len(data))
        return data

    @property
    def md5(self) -> str:
        """The MD5 of everything read."""
        return self.whole.hexdigest()

    def s3_etag(self) -> str:
        """The ETag S3 gives these bytes uploaded in parts of `part_size` (one PUT when they fit in one)."""
        parts = self.parts + ([self._part.digest()] if self._in_part else [])
        if len(parts) <= 1:
            return self.md5
        return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


@dataclass
class CopyStats:
    """What a copy did."""

    copied: int = 0
    copied_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    vanished: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def rates(self) -> str:
        """MB/s and objects/s of what was copied."""
        secs = max(self.seconds, 1e-6)
        return f"{self.copied_bytes / 1e6 / secs:.1f} MB/s, {self.copied / secs:.1f} objects/s"


@dataclass(frozen=True)
class Opened:
    """A source object being read, with what must travel with it."""

    stream: object
    content_type: str
    cache_control: str | None


class BucketSide:
    """One bucket of an S3 store as a source or a target of a copy."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store.patient()

    def __str__(self) -> str:
        return f"s3://{self.store.endpoint}/{self.store.bucket}"

    def inventory(self) -> dict[str, ObjectInfo]:
        """Every object, by key."""
        return {o.key: o for o in self.store.list("")}

    @contextlib.contextmanager
    def open(self, info: ObjectInfo) -> Iterator[Opened]:
        """Stream one object with its Content-Type and Cache-Control."""
        with self.store.open_read(info.key) as response:
            headers = response.headers
            yield Opened(response, headers.get("Content-Type") or content_type_for(info.key),
                         headers.get("Cache-Control"))

    def holds(self, info: ObjectInfo, mine: ObjectInfo | None) -> bool:
        """True when this bucket already has a whole copy of the source object `info`."""
        if mine is None or mine.size != info.size:
            return False
        if mine.etag == info.etag:
            return True
        meta = self.store.user_metadata(info.key) or {}
        return meta.get(SOURCE_ETAG) == info.etag

    def write(self, info: ObjectInfo, reader: HashingReader, opened: Opened) -> None:
        """Upload one object from `reader`; CopyError unless the store got exactly those bytes."""
        metadata = {SOURCE_ETAG: info.etag}
        if opened.cache_control:
            metadata["Cache-Control"] = opened.cache_control
        etag = self.store.put_stream(info.key, reader, info.size, opened.content_type, part_size=reader.part_size,
                                     metadata=metadata)
        _check_read(info, reader)
        if etag != reader.s3_etag():
            raise CopyError(f"{info.key}: the target's checksum {etag} is not the copy's {reader.s3_etag()}")


class DirSide:
    """A backup directory's objects: `objects/<key>` files and an append-only index `objects.jsonl`
    (one line per copy: key, size, md5, the source's etag, content type, cache control)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self._lock = threading.Lock()
        self._entries: dict[str, dict] | None = None

    def __str__(self) -> str:
        return str(self.root)

    def path_for(self, key: str) -> Path:
        """The file of `key`; CopyError for a key that would leave the objects folder."""
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in key:
            raise CopyError(f"{key!r}: not a key that can be kept as a file")
        return self.objects.joinpath(*parts)

    def entries(self) -> dict[str, dict]:
        """The index: the last line of each key."""
        if self._entries is None:
            self._entries = {}
            with contextlib.suppress(FileNotFoundError), open(self.root / INDEX) as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry
        return self._entries

    def inventory(self) -> dict[str, ObjectInfo]:
        """Every object of the index whose file is there whole, by key (its etag: the file's MD5)."""
        out = {}
        for key, e in self.entries().items():
            with contextlib.suppress(OSError, CopyError):
                if self.path_for(key).stat().st_size == e["size"]:
                    out[key] = ObjectInfo(key=key, size=e["size"], etag=e["md5"], content_type=e.get("content_type"),
                                          last_modified=None, cache_control=e.get("cache_control"))
        return out

    @contextlib.contextmanager
    def open(self, info: ObjectInfo) -> Iterator[Opened]:
        """Read one file with the type and cache control the index recorded."""
        with open(self.path_for(info.key), "rb") as f:
            yield Opened(f, info.content_type or content_type_for(info.key), info.cache_control)

    def holds(self, info: ObjectInfo, mine: ObjectInfo | None) -> bool:
        """True when the backup already has a whole copy of the source object `info`."""
        entry = self.entries().get(info.key)
        return (mine is not None and mine.size == info.size and entry is not None
                and info.etag in (entry.get("etag"), entry.get("md5")))

    def write(self, info: ObjectInfo, reader: HashingReader, opened: Opened) -> None:
        """Write one file beside its place, check it, rename it in, then index it."""
        path = self.path_for(info.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".part")
        done = False
        try:
            with os.fdopen(fd, "wb") as f:
                while data := reader.read(CHUNK):
                    f.write(data)
            _check_read(info, reader)
            os.replace(tmp, path)
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        entry = {"key": info.key, "size": reader.size, "md5": reader.md5, "etag": info.etag,
                 "content_type": opened.content_type, "cache_control": opened.cache_control}
        with self._lock, open(self.root / INDEX, "a") as f:
            f.write(json.dumps(entry) + "\n")
            self.entries()[info.key] = entry


def _check_read(info: ObjectInfo, reader: HashingReader) -> None:
    if reader.size != info.size:
        raise CopyError(f"{info.key}: read {reader.size} bytes, the listing said {info.size}")
    if is_plain_md5(info.etag) and reader.md5 != info.etag:
        raise CopyError(f"{info.key}: the bytes read hash to {reader.md5}, the source's checksum is {info.etag}")


def _missing(error: Exception) -> bool:
    return getattr(error, "s3_code", None) in ("NoSuchKey", "NotFound", "NoSuchObject") or isinstance(
        error, FileNotFoundError)


def plan(source, target) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """(to copy, already there) of the source's objects, in key order."""
    theirs = target.inventory()
    todo, done = [], []
    for info in sorted(source.inventory().values(), key=lambda o: o.key):
        (done if target.holds(info, theirs.get(info.key)) else todo).append(info)
    return todo, done


def copy_objects(source, target, workers: int = 8, on_bytes: Callable[[int], None] | None = None,
                 todo: list[ObjectInfo] | None = None, done: list[ObjectInfo] | None = None) -> CopyStats:
    """Copy every object of `source` that `target` lacks, `workers` at a time; failures are listed, not raised."""
    started = time.monotonic()
    if todo is None or done is None:
        todo, done = plan(source, target)
    stats = CopyStats(skipped=len(done), skipped_bytes=sum(o.size for o in done))
    lock = threading.Lock()
    stop = threading.Event()

    def one(info: ObjectInfo) -> None:
        if stop.is_set():
            return
        try:
            with source.open(info) as opened:
                target.write(info, HashingReader(opened.stream, PART_SIZE, on_bytes), opened)
        except (StorageError, OSError, urllib3.exceptions.HTTPError) as e:  # a read cut mid-stream is urllib3's
            with lock:
                if _missing(e) or _missing(e.__cause__ or e):
                    stats.vanished += 1
                else:
                    log.warning("copy of %s failed: %s", info.key, e)
                    stats.failed.append((info.key, str(e)))
            return
        with lock:
            stats.copied += 1
            stats.copied_bytes += info.size

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="copy")
    try:
        for future in [pool.submit(one, info) for info in todo]:
            future.result()
    finally:
        stop.set()  # Ctrl-C: the copies under way finish (or are cleaned up), no new one starts
        pool.shutdown(wait=True, cancel_futures=True)
    stats.seconds = time.monotonic() - started
    return stats


def compare(source, target) -> tuple[int, int, list[str]]:
    """(objects in source, objects in target, keys of the source missing or of another size in the target)."""
    mine, theirs = source.inventory(), target.inventory()
    missing = sorted(k for k, o in mine.items() if k not in theirs or theirs[k].size != o.size)
    return len(mine), len(theirs), missing
