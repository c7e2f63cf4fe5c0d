"""`streamforge runner`: process videos for an instance over its HTTP API alone.

The runner's machine holds no database, queue or store credentials: a runner token (from `streamforge
runner-token create` or `POST /api/admin/runners`) is all it has. Each slot (`--jobs N`) long-polls
`/api/runners/jobs/request`, downloads the job's input through its presigned URL, runs the pipeline with the
instance's own encoder settings (they come with the job), writes every output file through presigned PUT
URLs scoped to that run, beats with its progress and stage rows, and reports success or error. A runner
that loses its work (the instance gave it to someone else) drops it; one whose token is refused (revoked)
stops at once; SIGTERM gives running work back; an instance that restarts is waited for.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import requests

from streamforge.errors import MediaError

log = logging.getLogger("streamforge.runner")
POLL_WAIT = 10  # seconds a claim waits at the instance for work to come (a long poll)
RETRY_MAX = 10.0


class Lost(Exception):
    """The instance no longer gives this work to this runner: drop it without reporting."""


class Stopping(Exception):
    """The runner is shutting down: give the work back."""


class Revoked(Exception):
    """The instance refuses the runner's token: stop the whole runner."""


class Client:
    """The instance's runners API, with the runner token."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict, timeout: float = 60) -> requests.Response:
        """POST JSON; Revoked on 401, Lost on 409."""
        r = self.session.post(f"{self.url}{path}", json=body, timeout=timeout)
        if r.status_code == 401:
            raise Revoked(r.text[:200])
        if r.status_code == 409:
            raise Lost()
        return r


class Uploads:
    """Puts output files through presigned URLs the instance gives for this job alone."""

    def __init__(self, job: RemoteJob, outdir: Path):
        self.job, self.outdir = job, outdir
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sf-runner-put")
        self.pending: list[Future] = []
        self.done: set[str] = set()
        self.lock = threading.Lock()

    def _put(self, rel: str) -> None:
        r = self.job.call("uploads", {"files": [rel]})
        r.raise_for_status()
        target = r.json()["urls"][rel]
        with open(self.outdir / rel, "rb") as f:
            put = requests.put(target["url"], data=f, headers=target.get("headers") or {}, timeout=300)
        put.raise_for_status()
        with self.lock:
            self.done.add(rel)

    def submit(self, rel: str) -> None:
        """Upload a finished immutable file in the background."""
        with self.lock:
            self.pending.append(self.pool.submit(self._put, rel))

    def barrier(self) -> None:
        """Wait for every upload so far; re-raise the first failure."""
        with self.lock:
            pending, self.pending = self.pending, []
        for f in pending:
            f.result()

    def put_now(self, rel: str) -> None:
        """Upload a playlist once everything before it is in."""
        self.barrier()
        self._put(rel)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RemoteJob:
    """One piece of work: download, probe, transcode, upload, report."""

    def __init__(self, client: Client, job: dict, stop: threading.Event, temp_dir: str | None = None):
        self.client, self.job, self.stop = client, job, stop
        self.id, self.token = job["id"], job["token"]
        self.temp_dir = temp_dir
        self.progress = 0.0
        self.rows: list[dict] = []
        self.original: dict = {}
        self.playable = False
        self.lost = threading.Event()
        self.revoked = threading.Event()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.src: Path | None = None  # a chunk of the run this runner holds: its input is here already
        self.info = None

    def call(self, action: str, body: dict, timeout: float = 120) -> requests.Response:
        """POST to this job's endpoint `action`, with its lease token."""
        return self.client.post(f"/api/runners/jobs/{self.id}/{action}", {"token": self.token, **body}, timeout)

    # ----- beats -----

    def flush(self) -> None:
        """Send progress and the stage rows so far (a beat)."""
        with self.lock:
            rows, self.rows = self.rows, []
            body = {"progress": self.progress, "log": rows}
            if self.original:
                body["original"], self.original = self.original, {}
            if self.playable:
                body["playable"], self.playable = "master.m3u8", False
        try:
            self.call("update", body, timeout=30).raise_for_status()
        except (requests.ConnectionError, requests.Timeout) as e:  # the instance may be restarting
            with self.lock:
                self.rows[:0] = rows
            log.warning("job %s: update failed (%s); trying again", self.id, e)

    def _beat_loop(self) -> None:
        every = max(0.5, min(5.0, float(self.job.get("lease_seconds") or 60) / 4))
        while not self.done.wait(every):
            try:
                self.flush()
            except Lost:
                self.lost.set()
                return
            except Revoked:
                self.revoked.set()
                self.lost.set()
                return
            except requests.HTTPError as e:
                log.warning("job %s: update refused: %s", self.id, e)

    def check(self) -> None:
        """Raise when the work was lost, the token revoked, or the runner is stopping."""
        if self.revoked.is_set():
            raise Revoked("the runner's token was revoked")
        if self.lost.is_set():
            raise Lost()
        if self.stop.is_set():
            raise Stopping()

    def row(self, stage: str, status: str, message: str = "", duration: float | None = None,
            error_code: str | None = None) -> None:
        """Queue a processing-log row for the next beat (a chunk's rows are the instance's to write)."""
        if self.job.get("kind") == "chunk":
            return
        with self.lock:
            self.rows.append({"stage": stage, "status": status, "message": message, "duration": duration,
                              "error_code": error_code})

    def stage(self, name: str):
        """Context manager: the started / completed / failed rows of one stage."""
        return _Stage(self, name)

    # ----- the work -----

    def run(self) -> str:
        """Do the work and report it; returns what happened."""
        beat = threading.Thread(target=self._beat_loop, name=f"sf-runner-beat-{self.id}", daemon=True)
        beat.start()
        work = Path(tempfile.mkdtemp(prefix=f"sf-runner-{self.id}-", dir=self.temp_dir))
        uploads = Uploads(self, work / "out")
        try:
            return self._run(work, uploads)
        finally:
            self.done.set()
            uploads.close()
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, work: Path, uploads: Uploads) -> str:
        try:
            if self.job.get("kind") == "chunk":
                return self._chunk(work, uploads)
            src = self.download(work)
            info, subtitles = self.probe(src)
            plans = self._plans(info)
            if plans:  # a long video: chunks that this runner, others and the instance's workers encode at once
                return self._coordinate(src, info, subtitles, work, uploads, plans)
            result = self.transcode(src, work / "out", uploads)
            sizes = self.upload(work / "out", result, uploads)
            self.check()
            self.flush()
            from streamforge.pipeline.result_json import result_to_dict
            r = self.call("success", {"result": result_to_dict(result), "sizes": sizes, "subtitles": subtitles},
                          timeout=600)
            r.raise_for_status()
            return r.json().get("outcome", "completed")
        except Lost:
            log.warning("job %s: the instance took the work back; dropped", self.id)
            return "lost"
        except Revoked:
            raise
        except Stopping:
            return self._report("abort", {})
        except MediaError as e:
            return self._report("error", {"message": str(e), "retry": False})
        except Exception as e:  # anything else may pass on another machine: back to the queue
            log.exception("job %s failed", self.id)
            return self._report("error", {"message": f"runner error: {e}"[:500], "retry": True})

    def _plans(self, info) -> list:
        from streamforge.pipeline.chunks import plan_chunks
        from streamforge.pipeline.result_json import options_from_dict
        return plan_chunks(info, options_from_dict(self.job["options"]), float(self.job.get("chunk_seconds") or 0),
                           head=bool(self.job.get("live")))

    def _coordinate(self, src: Path, info, subtitles: list, work: Path, uploads: Uploads, plans: list) -> str:
        """Hold a chunked run: record its chunks, encode the audio and thumbnails whole, encode chunks while
        others do too, and hand the whole pass to the instance, which finishes once every chunk is in."""
        import dataclasses

        from streamforge.pipeline.chunks import WholeAudio, choose_levels, encode_thumbnails
        from streamforge.pipeline.result_json import options_from_dict
        opts = options_from_dict(self.job["options"])
        with self.stage("probe") as lv:  # the title's levels, chosen once here for every chunk
            levels, note = choose_levels(src, info, opts, live=bool(self.job.get("live")))
            lv.message = note or "the fixed levels"
        self.call("chunks", {"plan": [dataclasses.asdict(p) for p in plans], "levels": levels}).raise_for_status()
        emitted: list[str] = []

        def on_file(kind: str, rel: str) -> None:
            emitted.append(rel)
            uploads.submit(rel)

        def thumbnails() -> None:  # the whole file decoded once more: done while others finish their chunks
            with self.stage("thumbnails") as th:
                whole.update(encode_thumbnails(src, work / "out", info, opts, None, on_file))
                uploads.barrier()
                th.message = f"{len(whole['thumbnails'])} thumbnail files"

        whole: dict = {}
        with self.stage("transcode") as st:
            # the audio, whole, beside the chunks; the first chunk's master takes its head (WholeAudio)
            audio = WholeAudio(src, work / "out", info, opts, on_file, plans[0].end or 0)
            mine = self._chunks_here(src, info, whole, thumbnails, audio, uploads)
            st.message = f"chunked: {len(plans)} chunks, {mine} of them encoded here"
        if "thumbnails" not in whole:
            thumbnails()
        whole.update(audio.whole())
        uploads.barrier()
        sizes = {rel: (work / "out" / rel).stat().st_size for rel in dict.fromkeys(emitted)}
        self.flush()
        body = {"chunked": {"whole": whole, "audio_bitrate": opts.audio_bitrate, "duration": float(info.duration)},
                "sizes": sizes, "subtitles": subtitles}
        r = self.call("success", body, timeout=600)
        r.raise_for_status()
        return r.json().get("outcome", "completed")

    def _chunks_here(self, src: Path, info, whole: dict, idle, audio, uploads: Uploads) -> int:
        """Encode this run's waiting chunks until every chunk is done (calling `idle` once when none is left to
        take); returns how many were encoded here. The claims carry the audio once it covers the first chunk
        (the instance publishes the first chunk's master with it)."""
        mine, announced = 0, None
        while True:
            self.check()
            head = audio.head_now()
            if head is not None and head is not announced:  # its files in the store before the instance hears of it
                uploads.barrier()
                announced = head
            r = self.call("chunks/claim", {"whole": {**whole, **head}} if head is not None else {})
            r.raise_for_status()
            answer = r.json()
            if answer["job"]:
                sub = RemoteJob(self.client, answer["job"], self.stop, self.temp_dir)
                sub.src, sub.info = src, info
                if sub.run() == "completed":
                    mine += 1
                continue
            if answer["total"] and answer["done"] == answer["total"]:
                return mine
            if "thumbnails" not in whole:
                idle()
                continue
            self.progress = answer["done"] / max(1, answer["total"])
            self.stop.wait(0.5)

    def _chunk(self, work: Path, uploads: Uploads) -> str:
        """One chunk of a chunked run: every rung of its frames, its files up, its result to the instance."""
        from streamforge.pipeline import probe
        from streamforge.pipeline.chunks import ChunkPlan, encode_chunk
        from streamforge.pipeline.result_json import options_from_dict
        opts = options_from_dict(self.job["options"])
        src = self.src or self.download(work)
        info = self.info or probe(src, opts)
        c = self.job["chunk"]
        plan = ChunkPlan(index=c["index"], start=c["start"], end=c["end"], first_segment=c["first_segment"])
        out = work / "out"
        result = encode_chunk(src, out, info, opts, plan, progress=self._on_progress,
                              on_file=lambda kind, rel: uploads.submit(rel))
        uploads.barrier()
        self.check()
        r = self.call("success", {"result": result}, timeout=600)
        r.raise_for_status()
        return r.json().get("outcome", "completed")

    def _report(self, action: str, body: dict) -> str:
        try:
            self.flush()
            r = self.call(action, body)
            return r.json().get("outcome", action) if r.ok else action
        except (Lost, requests.RequestException):
            return "lost"

    def download(self, work: Path) -> Path:
        """Fetch the input through its presigned URL, checking its size; note its SHA-256."""
        spec = self.job["input"]
        suffix = Path(spec.get("filename") or "").suffix[:10]
        src = work / f"original{suffix}"
        with self.stage("download") as st:
            digest = hashlib.sha256()
            with requests.get(spec["url"], stream=True, timeout=60) as r, open(src, "wb") as f:
                r.raise_for_status()
                for chunk in r.iter_content(1024 * 1024):
                    self.check()
                    f.write(chunk)
                    digest.update(chunk)
            size = src.stat().st_size
            if spec.get("size") and size != int(spec["size"]):
                raise MediaError(f"the original is {size} bytes, {spec['size']} were declared")
            self.original = {"sha256": digest.hexdigest()}
            st.message = f"downloaded {size} bytes"
        return src

    def probe(self, src: Path):
        """Probe the input with the instance's limits; read its text subtitle streams."""
        from streamforge.captiontext import to_webvtt
        from streamforge.pipeline import probe
        from streamforge.pipeline.captions import extract_subtitles
        from streamforge.pipeline.result_json import options_from_dict
        opts = options_from_dict(self.job["options"])
        with self.stage("probe") as st:
            info = probe(src, opts)
            st.message = (f"{info.width}x{info.height}, {info.duration:.2f} s, "
                          f"audio {'yes' if info.has_audio else 'no'}")
            self.original.update(duration=float(info.duration), kind=info.kind)
        subtitles = []
        if info.subtitle_streams:
            try:
                tracks = extract_subtitles(src, start=info.start_time if info.kind == "video" else 0.0)
                subtitles = [{"index": t.index, "language": t.language, "label": t.label,
                              "webvtt": to_webvtt(t.cues)} for t in tracks]
            except MediaError as e:  # subtitles never fail a video
                log.warning("the subtitle streams could not be read: %s", e)
        return info, subtitles

    def _on_progress(self, fraction: float, stage: str = "") -> None:
        self.progress = float(fraction)
        self.check()

    def transcode(self, src: Path, outdir: Path, uploads: Uploads):
        """The pipeline with the instance's settings; segments go up as they are written."""
        import dataclasses

        from streamforge.pipeline import run_pipeline
        from streamforge.pipeline.result_json import options_from_dict
        opts = dataclasses.replace(options_from_dict(self.job["options"]), live=bool(self.job.get("live")))
        master_sent = threading.Event()

        def on_file(kind: str, rel: str) -> None:
            if kind in ("segment", "thumbnail"):
                uploads.submit(rel)
            elif kind == "playlist" and opts.live:
                uploads.put_now(rel)
            elif kind == "master" and opts.live and not master_sent.is_set():
                uploads.put_now(rel)  # every rung has a segment: the instance publishes it (playable early)
                master_sent.set()
                with self.lock:
                    self.playable = True
                self.flush()

        with self.stage("transcode") as st, self.stage("thumbnails") as th:
            result = run_pipeline(src, outdir, opts, progress=self._on_progress, on_file=on_file)
            st.message = "; ".join([f"{r.name} {r.codec} {r.width}x{r.height} {r.segment_count} segments"
                                    + (" (copied)" if r.copied else "") for r in result.renditions]
                                   + list(result.notes))
            th.message = f"{len(result.thumbnails)} thumbnail files"
        return result

    def upload(self, outdir: Path, result, uploads: Uploads) -> dict[str, int]:
        """Every output file up (playlists after their segments, the master last); returns their sizes."""
        with self.stage("upload") as st:
            for rel in result.files:
                if rel not in uploads.done and not rel.endswith(".m3u8"):
                    uploads.submit(rel)
            uploads.barrier()
            for rel in [f for f in result.files if f.endswith(".m3u8") and f != result.master] + [result.master]:
                self.check()
                uploads.put_now(rel)
            st.message = f"{len(result.files)} files uploaded through presigned URLs"
        return {rel: (outdir / rel).stat().st_size for rel in result.files}


class _Stage:
    def __init__(self, job: RemoteJob, name: str):
        self.job, self.name, self.message = job, name, ""

    def __enter__(self):
        self.t0 = time.monotonic()
        self.job.row(self.name, "started", f"{self.name} started")
        return self

    def __exit__(self, exc_type, exc, tb):
        took = round(time.monotonic() - self.t0, 3)
        if exc is None:
            self.job.row(self.name, "completed", self.message or f"{self.name} completed", took)
        elif not isinstance(exc, (Lost, Stopping, Revoked)):
            self.job.row(self.name, "failed", str(exc).strip().splitlines()[0][:500] if str(exc).strip()
                         else type(exc).__name__, took, error_code=getattr(exc, "code", None) or type(exc).__name__)
        return False


class Runner:
    """`--jobs` slots, each claiming and doing one piece of work at a time."""

    def __init__(self, url: str, token: str, name: str = "", jobs: int = 1, temp_dir: str | None = None):
        self.client = Client(url, token)
        self.name, self.jobs, self.temp_dir = name, max(1, jobs), temp_dir
        self.stop = threading.Event()
        self.revoked = threading.Event()
        self.active = 0  # pieces of work running now
        self.lock = threading.Lock()

    def slot(self) -> None:
        """Claim work until stopped; wait for an instance that does not answer."""
        delay = 1.0
        while not self.stop.is_set():
            try:
                body = {"wait": POLL_WAIT, **({"name": self.name} if self.name else {})}
                asked = time.monotonic()
                r = self.client.post("/api/runners/jobs/request", body, timeout=POLL_WAIT + 30)
                r.raise_for_status()
                delay = 1.0
                if r.status_code == 204:
                    if time.monotonic() - asked < 1.0:  # the instance did not let this poll wait: do not spin
                        self.stop.wait(2.0)
                    continue
                job = r.json()["job"]
                if self.stop.is_set():  # claimed while stopping: straight back to the queue
                    self.client.post(f"/api/runners/jobs/{job['id']}/abort", {"token": job["token"]}, timeout=30)
                    continue
                log.info("job %s (video %s): claimed", job["id"], job["video_id"])
                with self.lock:
                    self.active += 1
                try:
                    outcome = RemoteJob(self.client, job, self.stop, self.temp_dir).run()
                finally:
                    with self.lock:
                        self.active -= 1
                log.info("job %s: %s", job["id"], outcome)
            except Revoked as e:
                log.error("the instance refuses this runner's token (revoked?): %s", e)
                self.revoked.set()
                self.stop.set()
            except (requests.RequestException, ValueError, KeyError) as e:
                log.warning("the instance did not answer (%s); trying again in %.0f s", e, delay)
                self.stop.wait(delay)
                delay = min(RETRY_MAX, delay * 2)

    def run(self) -> int:
        """Run the slots until SIGTERM/SIGINT (running work is given back) or the token is refused."""
        def on_signal(signum, frame):
            log.info("stopping: giving running work back")
            self.stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        threads = [threading.Thread(target=self.slot, name=f"sf-runner-{i}", daemon=True) for i in range(self.jobs)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if self.stop.is_set() and not self.active:
                break  # idle slots may sit in a long poll: nothing to give back, so do not wait for it
            for t in threads:
                t.join(0.2)
        return 3 if self.revoked.is_set() else 0


def add_parser(sub, common) -> None:
    """`streamforge runner ...` and `streamforge runner-token create`."""
    p = sub.add_parser("runner", help="process videos for an instance over its HTTP API (no credentials)")
    common(p)
    p.add_argument("--url", required=True, help="the instance's base URL")
    p.add_argument("--token", required=True, help="a runner token (streamforge runner-token create)")
    p.add_argument("--name", default="", help="the name the instance shows for this runner")
    p.add_argument("--jobs", type=int, default=1, help="pieces of work at a time (default 1)")
    p = sub.add_parser("runner-token", help="remote runners' tokens")
    tsub = p.add_subparsers(dest="runner_token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="create a runner and print its token alone on stdout")
    common(t)
    t.add_argument("--name", default="", help="the runner's name")


def cmd_runner(args) -> int:
    """The remote runner: HTTP only, no configuration or credentials beyond its token."""
    if args.jobs < 1:
        print("streamforge runner: error: --jobs must be 1 or more", flush=True)
        return 2
    return Runner(args.url, args.token, args.name, args.jobs).run()
