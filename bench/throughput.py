"""Benchmark: processing throughput with 1, 2 and 4 worker processes, and a worker killed mid-run.

    .venv/bin/python bench/throughput.py [--count 100] [--heights 240] [--workers 1,2,4]
        [--kill-count 10] [--lease 10] [--interval 2] [--redis-db 14] [--keep]

The scale-out stack as separate processes, as issue 7 describes it: PostgreSQL (a database
created and dropped here), Redis (its own db number, flushed before and after), an external
SeaweedFS whose own filer webhook calls the web app, `streamforge web` (gunicorn) and
`streamforge worker` processes (each `--concurrency 1`). Every process is stopped on exit, also on
Ctrl-C or SIGTERM.

For each worker count it uploads `--count` copies of ../shared/media/bigbuckbunny-720p-5s.mp4
through the API (presigned PUT; the store's notification marks them UPLOADED and queues them) with
no worker running, then starts the workers and times them until every video is COMPLETED or
FAILED. It reports videos per minute over the wall time from starting the workers (their start-up
included) and over the busy window (first `download` started to last `database` completed), and
the mean time of one run. The ladder is `--heights` (default 240, H.264 only) so a 2-core machine
gets through it.

Then the kill round: `--kill-count` uploads, two workers; when both are mid-run one is killed with
SIGKILL (no hand-back). With `[sweeper] lease_seconds` = `--lease` and `interval_seconds` =
`--interval` the survivor's sweeper notices the dead run and the survivor finishes it.

Checks, for every round: every video COMPLETED; exactly one completed run each (one `database`
stage completed in GET /api/videos/{id}/logs); one run started per video (two for the killed
one, whose completed run is attempt 2); nothing left in the queue. Exit 0 only when all hold.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook import ROOT, Stack, _exit_on_sigterm, all_videos, api_session, parallel  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
if not MEDIA.exists():
    MEDIA = Path(os.environ.get("STREAMFORGE_TEST_MEDIA", "/work/shared/media"))
CLIP = MEDIA / "bigbuckbunny-720p-5s.mp4"
DONE = ("COMPLETED", "FAILED", "ARCHIVED")


def ts(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.rstrip("Z"))


class Round:
    """One batch of uploads for one user, processed by some workers."""

    def __init__(self, stack: Stack, name: str, count: int, data: bytes):
        self.stack, self.name, self.count, self.data = stack, name, count, data
        self.token = stack.cli("token", "create", "--email", f"{name}@bench.example")
        self.ids: list[str] = []
        self.workers: list[str] = []

    def upload(self) -> float:
        """Create the videos and PUT their bytes; wait until the store's webhook marked them
        UPLOADED (the sweeper of the workers catches any notification lost on the way)."""
        t0 = time.monotonic()
        local = threading.local()

        def one(i: int) -> str:
            if not hasattr(local, "session"):
                local.session = api_session(self.token)
            r = local.session.post(f"{self.stack.url}/api/videos", json={
                "title": f"{self.name} {i}", "filename": f"bbb {i}.mp4", "size": len(self.data),
                "content_type": "video/mp4"}, timeout=60)
            if r.status_code != 201:
                raise SystemExit(f"POST /api/videos answered {r.status_code}: {r.text[:300]}")
            body = r.json()
            put = requests.put(body["upload"]["url"], data=self.data, headers=body["upload"].get("headers") or {},
                               timeout=120)
            if put.status_code not in (200, 204):
                raise SystemExit(f"presigned PUT answered {put.status_code}: {put.text[:300]}")
            return body["video"]["id"]

        self.ids = parallel(one, list(range(self.count)), threads=4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(v["upload_status"] == "UPLOADED" for v in self.videos()) == self.count:
                break
            time.sleep(0.5)
        return time.monotonic() - t0

    def videos(self, status: str | None = None) -> list[dict]:
        if status is None:
            return all_videos(self.stack.url, self.token)
        r = api_session(self.token).get(f"{self.stack.url}/api/videos",
                                        params={"status": status, "per_page": 100}, timeout=30)
        r.raise_for_status()
        return r.json()["items"]

    def start_workers(self, n: int) -> None:
        for i in range(n):
            name = f"{self.name}-worker{i}"
            self.stack.start(name, "worker", "--concurrency", "1")
            self.workers.append(name)

    def stop_workers(self) -> None:
        for name in self.workers:
            if self.stack.procs[name].poll() is None:
                self.stack.stop(name, signal.SIGTERM, grace=40)

    def wait_done(self, timeout: float, progress_every: float = 30) -> float:
        """Poll until every video is COMPLETED or FAILED; returns when it saw that."""
        t0 = last = time.monotonic()
        while time.monotonic() - t0 < timeout:
            # only the unfinished ones are listed: cheap for the web app while the workers run
            left = len(self.videos("PENDING")) + len(self.videos("PROCESSING"))
            done = self.count - left
            if left == 0:
                return time.monotonic()
            if time.monotonic() - last > progress_every:
                last = time.monotonic()
                print(f"    ... {done}/{self.count} done after {last - t0:.0f} s", flush=True)
            dead = [n for n in self.workers if self.stack.procs[n].poll() not in (None, -9)]
            if dead:
                raise SystemExit(f"worker {dead[0]} exited: {self.stack.tail(dead[0])}")
            time.sleep(1.0)
        raise SystemExit(f"{self.name}: not done after {timeout:.0f} s")

    def task_counts(self) -> tuple[int, int]:
        """From the workers' logs: process_video tasks executed, videos the sweepers requeued."""
        executed = requeued = 0
        for name in self.workers:
            text = (self.stack.tmp / f"{name}.log").read_text(errors="replace")
            executed += text.count("Executing streamforge.jobs.tasks.process_video")
            requeued += sum(int(n) for n in re.findall(r"'requeued': (\d+)", text))
        return executed, requeued

    def audit(self) -> dict:
        """Per video: status, completed runs (database completed), runs started, timings."""
        session = api_session(self.token)

        def one(vid: str) -> dict:
            v = session.get(f"{self.stack.url}/api/videos/{vid}", timeout=30).json()
            logs = session.get(f"{self.stack.url}/api/videos/{vid}/logs", timeout=30).json()["items"]
            started = [x for x in logs if x["stage"] == "download" and x["status"] == "started"]
            completed = [x for x in logs if x["stage"] == "database" and x["status"] == "completed"]
            return {"id": vid, "status": v["status"], "error": v.get("error_message"), "attempts": v.get("attempts"),
                    "runs": len(started), "completed": len(completed),
                    "completed_attempts": [x.get("attempt") for x in completed],
                    "first_start": min((ts(x["created_at"]) for x in started), default=None),
                    "last_start": max((ts(x["created_at"]) for x in started), default=None),
                    "done_at": max((ts(x["created_at"]) for x in completed), default=None)}

        rows = parallel(one, self.ids, threads=4)
        starts = [r["first_start"] for r in rows if r["first_start"]]
        ends = [r["done_at"] for r in rows if r["done_at"]]
        busy = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
        run_s = [(r["done_at"] - r["last_start"]).total_seconds() for r in rows if r["done_at"] and r["last_start"]]
        return {"rows": rows, "busy": busy, "mean_run": statistics.mean(run_s) if run_s else float("nan"),
                "statuses": collections.Counter(r["status"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100, help="uploads per worker count")
    ap.add_argument("--clip", type=Path, default=CLIP, help="the video uploaded (default: the 5 s 720p clip)")
    ap.add_argument("--heights", default="240", help="ladder heights, comma-separated ([pipeline] heights)")
    ap.add_argument("--codecs", default="h264")
    ap.add_argument("--workers", default="1,2,4", help="worker process counts to measure")
    ap.add_argument("--kill-count", type=int, default=10, help="uploads in the kill round (0: skip it)")
    ap.add_argument("--lease", type=int, default=10, help="[sweeper] lease_seconds")
    ap.add_argument("--interval", type=int, default=2, help="[sweeper] interval_seconds")
    ap.add_argument("--redis-db", type=int, default=14)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one round may take")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    data = args.clip.read_bytes()
    _exit_on_sigterm()
    env = {"STREAMFORGE_PIPELINE_HEIGHTS": args.heights, "STREAMFORGE_PIPELINE_CODECS": args.codecs,
           "STREAMFORGE_SWEEPER_LEASE_SECONDS": str(args.lease),
           "STREAMFORGE_SWEEPER_INTERVAL_SECONDS": str(args.interval)}
    stack = Stack(db="postgres", queue="redis", redis_db=args.redis_db, bucket="throughput", env=env,
                  keep=args.keep, tag="throughput")
    table, checks, notes = [], [], []

    def check(text: str, ok: bool) -> None:
        checks.append((text, ok))
        print(f"    {'PASS' if ok else 'FAIL'}  {text}", flush=True)

    def audit_round(rnd: Round, label: str, killed: set[str] | None = None) -> dict:
        a = rnd.audit()
        rows = a["rows"]
        not_done = [r for r in rows if r["status"] != "COMPLETED"]
        check(f"{label}: every video COMPLETED ({a['statuses'].get('COMPLETED', 0)}/{rnd.count})"
              + (f"; first other: {not_done[0]['status']} {not_done[0]['error']}" if not_done else ""),
              not not_done)
        check(f"{label}: exactly one completed run each (database stage completed: "
              f"{dict(collections.Counter(r['completed'] for r in rows))})",
              all(r["completed"] == 1 for r in rows))
        expect_two = killed or set()
        wrong = [r for r in rows if r["runs"] != (2 if r["id"] in expect_two else 1)]
        check(f"{label}: runs started per video {dict(collections.Counter(r['runs'] for r in rows))}"
              f" (expected 1{', 2 for the killed run' if killed else ''})", not wrong)
        executed, requeued = rnd.task_counts()
        left = len(stack.pending_tasks())
        runs = sum(r["runs"] for r in rows)
        a.update(executed=executed, noop=executed - runs, requeued=requeued, left=left)
        # not a failure of "processed once" (a no-op task claims nothing), but work the queue did for nothing
        note = (f"{label}: {executed} process_video tasks executed for {runs} runs ({executed - runs} no-ops), "
                f"{requeued} requeued by the sweepers, {left} left in the queue after the round")
        notes.append(note)
        print(f"    NOTE  {note}", flush=True)
        from streamforge.jobs import tasks
        tasks.huey.storage.flush_queue()  # the next round starts from an empty queue
        return a

    try:
        stack.prepare_backends()
        print(f"starting SeaweedFS (filer webhook -> {stack.hook_url}), PostgreSQL db, Redis db {args.redis_db}...",
              flush=True)
        stack.start_store(stack.hook_url)
        stack.start_web()
        print(f"web at {stack.url}; ladder {args.codecs} {args.heights}; clip {args.clip.name} "
              f"({len(data)} bytes); lease {args.lease} s, sweep every {args.interval} s", flush=True)

        for n in counts:
            rnd = Round(stack, f"w{n}", args.count, data)
            print(f"\n== {n} worker process(es): uploading {args.count} videos...", flush=True)
            up = rnd.upload()
            queued = sum(1 for name, _ in stack.pending_tasks() if name.endswith("process_video"))
            print(f"    uploaded and notified in {up:.1f} s; {queued} process_video tasks queued", flush=True)
            t0 = time.monotonic()
            rnd.start_workers(n)
            try:
                t1 = rnd.wait_done(args.timeout)
            finally:
                rnd.stop_workers()
            a = audit_round(rnd, f"{n} worker(s)")
            wall = t1 - t0
            table.append((f"{n}", rnd.count, wall, 60 * rnd.count / wall, a["busy"], 60 * rnd.count / a["busy"],
                          a["mean_run"], a["statuses"].get("COMPLETED", 0), a["executed"], a["requeued"]))
            print(f"    {rnd.count} videos in {wall:.1f} s = {60 * rnd.count / wall:.1f} videos/min "
                  f"(busy window {a['busy']:.1f} s, mean run {a['mean_run']:.1f} s)", flush=True)

        kill_note = None
        if args.kill_count:
            rnd = Round(stack, "kill", args.kill_count, data)
            print(f"\n== kill round: {args.kill_count} videos, 2 workers, one killed with SIGKILL mid-run...",
                  flush=True)
            rnd.upload()
            t0 = time.monotonic()
            rnd.start_workers(2)
            victim, held, t_kill = rnd.workers[0], set(), None
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    running = rnd.videos("PROCESSING")
                    # both workers hold a run that began a moment ago and is far from done: the
                    # victim is surely mid-run (progress is reported with the heartbeat)
                    if len(running) >= 2 and all((v["progress"] or 0) < 0.5 for v in running):
                        time.sleep(1.0)
                        again = rnd.videos("PROCESSING")
                        if {v["id"] for v in again} == {v["id"] for v in running}:
                            held = {v["id"] for v in running}
                            stack.stop(victim, signal.SIGKILL, grace=10)
                            t_kill = time.monotonic()
                            break
                    time.sleep(0.1)
                if t_kill is None:
                    raise SystemExit("never saw both workers mid-run")
                print(f"    killed {victim} at {t_kill - t0:.1f} s while these were PROCESSING: {sorted(held)}",
                      flush=True)
                t1 = rnd.wait_done(args.timeout)
            finally:
                rnd.stop_workers()
            a = rnd.audit()
            rows = {r["id"]: r for r in a["rows"]}
            rescued = {vid for vid in held if rows[vid]["runs"] == 2}
            check(f"kill: exactly one of the runs held at the kill was started again ({len(rescued)})",
                  len(rescued) == 1)
            for vid in rescued:
                r = rows[vid]
                check(f"kill: the killed run ({vid}) finished by the surviving worker: {r['status']}, "
                      f"completed attempt {r['completed_attempts']}, "
                      f"{(r['done_at'] - r['first_start']).total_seconds():.1f} s from its first start",
                      r["status"] == "COMPLETED" and r["completed_attempts"] == [2])
            a = audit_round(rnd, "kill", killed=rescued)
            wall = t1 - t0
            kill_note = (f"kill round: {rnd.count} videos on 2 workers (one SIGKILLed at {t_kill - t0:.1f} s) "
                         f"in {wall:.1f} s")
            table.append(("2, 1 killed", rnd.count, wall, 60 * rnd.count / wall, a["busy"],
                          60 * rnd.count / a["busy"], a["mean_run"], a["statuses"].get("COMPLETED", 0),
                          a["executed"], a["requeued"]))

        print("\n=== StreamForge throughput bench ===")
        print(f"PostgreSQL + Redis + external SeaweedFS (its webhook -> web), `streamforge web` (gunicorn), "
              f"workers `--concurrency 1`; {args.codecs} ladder {args.heights}; 5 s 720p clip; "
              f"{os.cpu_count()} CPUs")
        print(f"{'workers':<12} {'videos':>6} {'wall s':>8} {'videos/min':>10} {'busy s':>8} {'v/min busy':>10} "
              f"{'mean run s':>10} {'COMPLETED':>9} {'tasks run':>9} {'requeued':>8}")
        for w, n, wall, vpm, busy, vpm_busy, mean_run, done, executed, requeued in table:
            print(f"{w:<12} {n:>6} {wall:>8.1f} {vpm:>10.1f} {busy:>8.1f} {vpm_busy:>10.1f} {mean_run:>10.1f} "
                  f"{done:>9} {executed:>9} {requeued:>8}")
        if kill_note:
            print(kill_note)
        print("(wall: from starting the workers to the poll that saw every video done; busy: first download "
              "started to last database completed, from the processing logs; tasks run: process_video tasks the "
              "workers executed; requeued: videos the sweepers put on the queue again)")
        print("\nchecks:")
        for text, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")
        print("\nnotes (not pass/fail):")
        for text in notes:
            print(f"  NOTE  {text}")
        ok = all(c for _, c in checks)
        print(f"\nRESULT: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
