"""`streamforge import`: files and folders uploaded through the same HTTP API a browser uses.

Each media file goes `POST /api/videos` (with its SHA-256), then a presigned PUT or the multipart
parts straight to the object store, then `POST .../upload/complete`: the bytes never pass through
the app, and the server starts processing exactly as for a browser upload. A file this user
already imported (same name and size, or same SHA-256, found with `GET /api/videos?filename=&size=`
or `?sha256=`) is skipped. Several files go at once, each with its own progress bar; a failed file
is one line, and what it had created on the server is deleted again.
"""
from __future__ import annotations

import hashlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import requests

# What is imported, by extension, and the MIME type it is declared with (video/* and audio/* are
# what the server accepts; a browser would often send no type at all for .mkv or .ts).
VIDEO_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo", ".wmv": "video/x-ms-wmv", ".flv": "video/x-flv",
    ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".m2v": "video/mpeg", ".vob": "video/mpeg",
    ".ts": "video/mp2t", ".mts": "video/mp2t", ".m2ts": "video/mp2t", ".3gp": "video/3gpp",
    ".3g2": "video/3gpp2", ".ogv": "video/ogg", ".mxf": "video/mxf", ".dv": "video/dv",
}
AUDIO_TYPES = {
    ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".m4b": "audio/mp4", ".aac": "audio/aac",
    ".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/opus", ".wma": "audio/x-ms-wma", ".aif": "audio/aiff", ".aiff": "audio/aiff",
    ".mka": "audio/x-matroska", ".ac3": "audio/ac3", ".amr": "audio/amr",
}
MEDIA_TYPES = {**VIDEO_TYPES, **AUDIO_TYPES}
TITLE_FROM = ("name", "filename", "path")
CHUNK = 1 << 20
PART_URL_BATCH = 50
PART_ATTEMPTS = 3


class ImportFailure(Exception):
    """Why one file could not be imported, in one line."""


class Interrupted(ImportFailure):
    """Ctrl-C while the file was being read or sent."""


@dataclass(frozen=True)
class Options:
    """Where to import to and how to describe what is imported."""

    url: str
    token: str
    title_from: str = "name"
    visibility: str | None = None
    tags: list[str] = field(default_factory=list)
    jobs: int = 3
    progress: bool | None = None  # None: bars when stderr is a terminal


@dataclass(frozen=True)
class Candidate:
    """A media file found under one of the given paths."""

    path: Path
    root: Path
    size: int


@dataclass(frozen=True)
class Outcome:
    """What happened to one file: `imported`, `skipped` or `failed`, and the line that says so."""

    path: Path
    state: str
    message: str
    size: int = 0


# ---------- finding the files ----------

def is_media(path: Path) -> bool:
    """True for a video or audio extension (case-insensitive)."""
    return path.suffix.lower() in MEDIA_TYPES


def _walk(root: Path) -> Iterable[Path]:
    """Every file under `root`, sorted, not following directory links, hidden entries left out."""
    for here, dirs, files in os.walk(root, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            yield Path(here) / name


def collect(paths: Iterable[str | os.PathLike]) -> tuple[list[Candidate], int, list[Outcome]]:
    """The media files under `paths` (files and folders, recursively); how many other files were
    passed over; and a failure for each path that cannot be read."""
    found: dict[Path, Candidate] = {}
    other = 0
    failed: list[Outcome] = []
    for given in paths:
        given = Path(given).expanduser()
        if not given.exists() and not given.is_symlink():
            failed.append(Outcome(given, "failed", "no such file or folder"))
            continue
        if given.is_dir():
            root, files = given, _walk(given)
        else:
            root, files = given.parent, [given]
        for path in files:
            if not is_media(path) or path.name.startswith("."):
                other += 1
                continue
            try:
                size = path.stat().st_size
                if not path.is_file():
                    raise ImportFailure("not a regular file")
            except (OSError, ImportFailure) as e:
                failed.append(Outcome(path, "failed", f"cannot read it: {_reason(e)}"))
                continue
            key = path.resolve()
            if key not in found:
                found[key] = Candidate(path, root, size)
    return list(found.values()), other, failed


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def title_for(c: Candidate, title_from: str) -> str:
    """The video's title: the file's name without its extension (`name`), the whole name
    (`filename`), or its path under the imported folder without the extension (`path`)."""
    if title_from == "filename":
        title = c.path.name
    elif title_from == "path":
        try:
            rel = c.path.relative_to(c.root)
        except ValueError:
            rel = Path(c.path.name)
        title = str(rel.with_suffix(""))
    else:
        title = c.path.stem
    return (title.strip() or c.path.name)[:300]


# ---------- reading with progress ----------

class _Window:
    """`length` bytes of a file from `offset`, read in chunks as requests sends them; reports
    progress, stops on Ctrl-C, and fails when the file turns out shorter than it was."""

    def __init__(self, path: Path, offset: int, length: int, progress: Callable[[int], None],
                 cancel: threading.Event):
        self.path, self.offset, self.length = path, offset, length
        self.progress, self.cancel = progress, cancel
        self.left = length
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close(), after requests is done)
        self.file.seek(offset)

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            raise Interrupted("interrupted")
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.file.read(n)
        if not data:
            raise ImportFailure("the file got shorter while it was being sent")
        self.left -= len(data)
        self.progress(len(data))
        return data

    def close(self) -> None:
        self.file.close()


def sha256_of(path: Path, progress: Callable[[int], None], cancel: threading.Event) -> str:
    """The file's SHA-256 in hex, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if cancel.is_set():
                raise Interrupted("interrupted")
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()


# ---------- the HTTP API ----------

class Api:
    """The StreamForge HTTP API with a bearer token; one requests session per thread."""

    def __init__(self, url: str, token: str, timeout: float = 300.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._local = threading.local()

    def session(self) -> requests.Session:
        """This thread's session."""
        import requests
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "streamforge-import"
        return s

    def call(self, method: str, path: str, **kw) -> dict | None:
        """One API call; its JSON answer, or ImportFailure with the server's message."""
        import requests
        try:
            r = self.session().request(method, self.url + path, timeout=(10, self.timeout),
                                       headers={"Authorization": f"Bearer {self.token}"}, **kw)
        except requests.RequestException as e:
            raise ImportFailure(f"cannot reach {self.url}: {type(e).__name__}") from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                detail = f"{err['message']} ({err['code']})"
            except (ValueError, KeyError, TypeError):
                detail = r.reason or "error"
            raise ImportFailure(f"{method} {path.split('?')[0]}: HTTP {r.status_code}: {detail}")
        return r.json() if r.content else None

    def find(self, **match) -> list[dict]:
        """The user's videos whose original matches (filename and size, or sha256)."""
        return (self.call("GET", "/api/videos", params={**match, "per_page": 100}) or {}).get("items", [])

    def check(self) -> dict:
        """Who the token belongs to (also proves the URL and token are right)."""
        return self.call("GET", "/api/videos", params={"per_page": 1}) or {}


# ---------- one file ----------

class _Run:
    """What the files of one import share: the API, the options, the bars and the claimed hashes."""

    def __init__(self, api: Api, options: Options, out: TextIO, err: TextIO):
        self.api, self.options, self.out, self.err = api, options, out, err
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.hashes: dict[str, Path] = {}
        self.slots: queue.Queue[int] = queue.Queue()
        for i in range(options.jobs):
            self.slots.put(i)
        self.bars = options.progress if options.progress is not None else err.isatty()

    def say(self, line: str, failed: bool = False) -> None:
        """One line about one file, above the progress bars."""
        from tqdm import tqdm
        with self.lock:
            tqdm.write(line, file=self.err if failed else self.out)
            (self.err if failed else self.out).flush()

    def bar(self, slot: int, c: Candidate):
        """A progress bar for the file (a no-op when bars are off)."""
        from tqdm import tqdm
        return tqdm(total=c.size, desc=_short(c.path.name), unit="B", unit_scale=True, unit_divisor=1024,
                    position=slot, leave=False, file=self.err, disable=not self.bars, dynamic_ncols=True,
                    mininterval=0.2)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _already(run: _Run, c: Candidate, sha: str | None) -> str | None:
    """Why the file needs no upload (this user has it already), or None."""
    from streamforge.store.videos import safe_filename
    if sha is None:
        name = safe_filename(c.path.name)
        for v in run.api.find(filename=c.path.name, size=c.size):
            o = v.get("original") or {}
            if v.get("upload_status") == "UPLOADED" and o.get("filename") == name and o.get("size") == c.size:
                return f"already imported (same name and size): {v.get('watch_url')}"
        return None
    for v in run.api.find(sha256=sha):
        o = v.get("original") or {}
        if v.get("upload_status") == "UPLOADED" and o.get("sha256") == sha:
            return f"already imported (same content as {o.get('filename')!r}): {v.get('watch_url')}"
    with run.lock:
        first = run.hashes.setdefault(sha, c.path)
    if first != c.path:
        return f"same content as {str(first)!r} in this import"
    return None


def _put(run: _Run, c: Candidate, upload: dict, progress: Callable[[int], None]) -> None:
    import requests
    body = _Window(c.path, 0, c.size, progress, run.cancel)
    try:
        r = run.api.session().put(upload["url"], data=body, headers=upload.get("headers") or {},
                                  timeout=(10, run.api.timeout))
    except requests.RequestException as e:
        raise ImportFailure(f"the store refused the upload: {type(e).__name__}") from None
    finally:
        body.close()
    if r.status_code >= 300:
        raise ImportFailure(f"the store refused the upload: HTTP {r.status_code} {r.text[:200]}")


def _put_part(run: _Run, c: Candidate, number: int, url: str, offset: int, length: int, bar) -> str:
    """One part, tried up to PART_ATTEMPTS times; returns its ETag."""
    import requests
    for attempt in range(1, PART_ATTEMPTS + 1):
        final = False
        body = _Window(c.path, offset, length, bar.update, run.cancel)
        try:
            r = run.api.session().put(url, data=body, timeout=(10, run.api.timeout))
            if r.status_code < 300 and r.headers.get("ETag"):
                return r.headers["ETag"].strip('"')
            problem = f"HTTP {r.status_code} {r.text[:200]}"
            final = r.status_code in (400, 403, 404)  # refused or expired: trying again will not help
        except requests.RequestException as e:
            problem = type(e).__name__
        finally:
            body.close()
        bar.update(body.left - length)  # the bar goes back by what this try had sent
        if final or attempt == PART_ATTEMPTS:
            raise ImportFailure(f"the store refused part {number}: {problem}")
        time.sleep(0.5 * attempt)
    raise AssertionError("not reached")


def _multipart(run: _Run, c: Candidate, video_id: str, upload: dict, bar) -> list[dict]:
    size, count = int(upload["part_size"]), int(upload["part_count"])
    parts = []
    for first in range(1, count + 1, PART_URL_BATCH):
        numbers = list(range(first, min(count, first + PART_URL_BATCH - 1) + 1))
        urls = run.api.call("POST", f"/api/videos/{video_id}/upload/parts", json={"part_numbers": numbers})["urls"]
        for n in numbers:
            offset = (n - 1) * size
            etag = _put_part(run, c, n, urls[str(n)], offset, min(size, c.size - offset), bar)
            parts.append({"part_number": n, "etag": etag})
    return parts


def _upload(run: _Run, c: Candidate, sha: str, bar) -> dict:
    """Create the video, send the bytes, complete; returns the VIDEO (deleted again on failure)."""
    o = run.options
    body = {"title": title_for(c, o.title_from), "filename": c.path.name, "size": c.size,
            "content_type": MEDIA_TYPES[c.path.suffix.lower()], "sha256": sha}
    if o.tags:
        body["tags"] = o.tags
    if o.visibility:
        body["visibility"] = o.visibility
    created = run.api.call("POST", "/api/videos", json=body)
    video_id, upload = created["video"]["id"], created["upload"]
    try:
        bar.reset(total=c.size)
        bar.set_description_str(_short(c.path.name), refresh=False)
        if upload["method"] == "PUT":
            _put(run, c, upload, bar.update)
            done = run.api.call("POST", f"/api/videos/{video_id}/upload/complete", json={})
        else:
            parts = _multipart(run, c, video_id, upload, bar)
            done = run.api.call("POST", f"/api/videos/{video_id}/upload/complete", json={"parts": parts})
        if done.get("upload_status") != "UPLOADED":
            raise ImportFailure(f"the server did not accept the upload: {done.get('error_message') or done.get('status')}")
        return done
    except BaseException:
        try:  # nothing half-written stays behind: the video and its upload go
            run.api.call("DELETE", f"/api/videos/{video_id}")
        except ImportFailure:
            pass
        raise


def import_one(run: _Run, c: Candidate) -> Outcome:
    """Skip, or upload, one file; every problem becomes a failed Outcome."""
    slot = run.slots.get()
    bar = run.bar(slot, c)
    try:
        reason = _already(run, c, None)
        if reason is None:
            bar.set_description_str("hash " + _short(c.path.name, 23), refresh=False)
            sha = sha256_of(c.path, bar.update, run.cancel)
            reason = _already(run, c, sha)
        if reason is not None:
            return Outcome(c.path, "skipped", reason, c.size)
        video = _upload(run, c, sha, bar)
        return Outcome(c.path, "imported", video["watch_url"], c.size)
    except ImportFailure as e:
        return Outcome(c.path, "failed", str(e), c.size)
    except OSError as e:
        return Outcome(c.path, "failed", f"cannot read it: {_reason(e)}", c.size)
    finally:
        bar.close()
        run.slots.put(slot)


# ---------- the whole import ----------

def _report(run: _Run, o: Outcome) -> None:
    word = {"imported": "imported", "skipped": "skipped ", "failed": "FAILED  "}[o.state]
    run.say(f"{word} {o.path}: {o.message}", failed=o.state == "failed")


def run_import(paths: list[str], options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Import `paths`; prints a line per file and a summary; 0 when nothing failed, 1 otherwise,
    130 on Ctrl-C."""
    started = time.monotonic()
    candidates, other, failures = collect(paths)
    run = _Run(Api(options.url, options.token), options, out, err)
    if candidates:
        try:
            run.api.check()
        except ImportFailure as e:
            print(f"streamforge import: error: {e}", file=err)
            return 1
    outcomes = list(failures)
    for o in failures:
        _report(run, o)
    pool = ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="sf-import")
    interrupted = False
    try:
        for fut in as_completed([pool.submit(import_one, run, c) for c in candidates]):
            outcomes.append(fut.result())
            _report(run, outcomes[-1])
    except KeyboardInterrupt:
        interrupted = True
        run.cancel.set()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    count = {s: sum(1 for o in outcomes if o.state == s) for s in ("imported", "skipped", "failed")}
    from streamforge.units import human_size
    sent = human_size(sum(o.size for o in outcomes if o.state == "imported"))
    print(f"{count['imported']} imported ({sent}), {count['skipped']} skipped (already imported), "
          f"{other} not media, {count['failed']} failed, in {time.monotonic() - started:.1f} s"
          + (" (interrupted)" if interrupted else ""), file=out, flush=True)
    if interrupted:
        return 130
    return 1 if count["failed"] else 0


# ---------- the command line ----------

HELP = """\
Upload video and audio files, and folders of them (recursively), to StreamForge through its HTTP
API, as the upload page does: each file is created with POST /api/videos, sent straight to the
object store (one presigned PUT, or multipart parts above [upload] multipart_threshold) and
completed, which starts its processing. Other files are passed over and counted.

A file this user already imported, with the same name and size or the same content (SHA-256), is
skipped and said so, so running the same import again uploads only what is new. A file that fails
is one line on stderr and the others go on; the exit status is 0 when every file was imported or
skipped, 1 when any failed.

Where to: without --url, the `streamforge serve` running on this data dir (--data-dir, or the
config's [server] data_dir; it records its URL in <data_dir>/serve.json), as the user of the
sign-in link serve prints: the videos show up in the library that link opens. For that a token is
made in the data dir's database for this run and revoked when it ends; pass --token to use your
own. With --url, --token is required (`streamforge token create --email ...` on the server, or
/tokens in the browser); $STREAMFORGE_URL and $STREAMFORGE_TOKEN are read when the flags are
absent.
"""


def add_arguments(p) -> None:
    """The `import` subcommand's arguments (the parser comes from cli.py)."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to import")
    p.add_argument("--url", default=os.environ.get("STREAMFORGE_URL") or None,
                   help="the StreamForge app, e.g. https://videos.example.com (default: the local serve)")
    p.add_argument("--token", default=os.environ.get("STREAMFORGE_TOKEN") or None,
                   help="an API token (default for the local serve: one made for this run)")
    p.add_argument("--title-from", choices=TITLE_FROM, default="name",
                   help="title: the file name without extension (name, default), with it (filename), or "
                        "the path under the imported folder (path)")
    p.add_argument("--visibility", choices=("private", "unlisted", "public"),
                   help="visibility of the new videos (default: the server's [playback] default_visibility)")
    p.add_argument("--tags", help="comma-separated tags for every imported video, e.g. holiday,2024")
    p.add_argument("--jobs", type=int, default=3, help="files uploaded at once (default 3)")


def import_command(args, cfg) -> int:
    """`streamforge import`: resolve where to, run the import, revoke a token made for it."""
    if args.jobs < 1 or args.jobs > 32:
        print("streamforge import: error: --jobs must be between 1 and 32", file=sys.stderr)
        return 2
    if args.url and not args.token:
        print("streamforge import: error: --url needs --token (make one with `streamforge token create "
              "--email YOU` on the server, or on its /tokens page)", file=sys.stderr)
        return 2
    from streamforge.commands import local_serve
    url, revoke = args.url, None
    if not url:
        url = local_serve.find_local_serve(cfg)
        if url is None:
            print(f"streamforge import: error: no `streamforge serve` is running on data dir {cfg.data_dir} "
                  f"(start it, pass --data-dir, or pass --url and --token)", file=sys.stderr)
            return 1
        if not local_serve.wait_healthy(url):  # it may still be starting
            print(f"streamforge import: warning: {url}/healthz does not answer 200; trying anyway", file=sys.stderr)
    token = args.token
    if not token:
        token, revoke = local_serve.mint_token(cfg)
    tags = [t.strip() for t in (args.tags or "").split(",") if t.strip()]
    options = Options(url=url, token=token, title_from=args.title_from, visibility=args.visibility, tags=tags,
                      jobs=args.jobs)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C (SIGINT) stops the import and takes back what it started, also when the parent started us
        # with SIGINT ignored (a shell's background job does): Python then leaves it ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_import(args.paths, options)
    finally:
        if revoke is not None:
            revoke()
