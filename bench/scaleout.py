"""Benchmark: one long video encoded by one worker or by two (issue 24), unchunked and chunked, in one run.

    .venv/bin/python bench/scaleout.py [--seconds 600] [--chunk-seconds 60] [--heights 1080,720,480,360]
        [--vmaf-subsample 5] [--keep]

Makes a `--seconds` (600) 1080p25 input in code (testsrc2 with film-like noise and a tone, x264 at high
quality), starts SeaweedFS and `streamforge web` (SQLite and a SQLite queue), and runs four rounds on
the same upload, each on a fresh video: one `streamforge worker` pinned to one core (`taskset`), two
workers pinned to a core each, first with `[pipeline] chunk_seconds = 0` (never chunk), then with
`--chunk-seconds`. A round's time is from starting its workers to the video being COMPLETED (their
start-up included). Then the chunked output against the unchunked (both made by two workers): bytes of
every rung, and the 720p rung's VMAF against the input scaled to 720p (imageio-ffmpeg's FFmpeg has
libvmaf: the `bench` extra), each rung joined into one file first.

Goals: two one-core workers finish the chunked video in <= 0.6x of one worker's (unchunked) time; the
chunked bytes within 2 % of the unchunked; the 720p VMAF within 0.3. On a machine shared with other
work the times move with it; the script prints how busy the machine was.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ff  # noqa: E402
from webhook import Stack, _exit_on_sigterm, api_session  # noqa: E402


def make_input(path: Path, seconds: int) -> Path:
    """A 1080p25 input with moving detail and noise (so the encoders work as on film), and a tone."""
    if path.exists():
        return path
    ff(["-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}", "-f", "lavfi", "-i",
        f"sine=frequency=330:sample_rate=48000:duration={seconds}", "-vf", "noise=alls=4:allf=t",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", "50", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)])
    return path


def upload(stack: Stack, token: str, path: Path, title: str) -> str:
    """Create the video and PUT its bytes (multipart above the threshold is not needed: one PUT)."""
    s = api_session(token)
    size = path.stat().st_size
    r = s.post(f"{stack.url}/api/videos", json={"title": title, "filename": path.name, "size": size,
                                                 "content_type": "video/mp4"}, timeout=60)
    r.raise_for_status()
    body = r.json()
    up = body["upload"]
    if up["method"] == "PUT":
        with open(path, "rb") as f:
            requests.put(up["url"], data=f, headers=up.get("headers") or {}, timeout=600).raise_for_status()
        s.post(f"{stack.url}/api/videos/{body['video']['id']}/upload/complete", json={}, timeout=60).raise_for_status()
    else:
        parts, etags = up["part_count"], []
        urls = s.post(f"{stack.url}/api/videos/{body['video']['id']}/upload/parts",
                      json={"part_numbers": list(range(1, parts + 1))}, timeout=60).json()["urls"]
        with open(path, "rb") as f:
            for n in range(1, parts + 1):
                put = requests.put(urls[str(n)], data=f.read(up["part_size"]), timeout=600)
                put.raise_for_status()
                etags.append({"part_number": n, "etag": put.headers["ETag"]})
        s.post(f"{stack.url}/api/videos/{body['video']['id']}/upload/complete", json={"parts": etags},
               timeout=120).raise_for_status()
    return body["video"]["id"]


def start_pinned(stack: Stack, name: str, core: int, env: dict) -> subprocess.Popen:
    """`streamforge worker --concurrency 1` pinned to one core."""
    log = open(stack.tmp / f"{name}.log", "w")
    stack.logs[name] = log
    proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", "streamforge.commands.main", "worker",
                             "--concurrency", "1", "--data-dir", str(stack.data_dir)],
                            env={**stack.env, **env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    stack.procs[name] = proc
    return proc


def run_round(stack: Stack, token: str, src: Path, label: str, workers: int, chunk_seconds: float,
              timeout: float) -> tuple[str, float]:
    """Upload, start the pinned workers, wait for COMPLETED; (video id, seconds)."""
    vid = upload(stack, token, src, label)
    env = {"STREAMFORGE_PIPELINE_CHUNK_SECONDS": str(chunk_seconds)}
    names = [f"{label}-w{i}" for i in range(workers)]
    t0 = time.monotonic()
    for i, name in enumerate(names):
        start_pinned(stack, name, i % max(1, os.cpu_count() or 1), env)
    s = api_session(token)
    try:
        while time.monotonic() - t0 < timeout:
            v = s.get(f"{stack.url}/api/videos/{vid}", timeout=30).json()
            if v["status"] in ("COMPLETED", "FAILED"):
                if v["status"] == "FAILED":
                    raise SystemExit(f"{label}: FAILED: {v['error_message']}")
                return vid, time.monotonic() - t0
            time.sleep(1.0)
        raise SystemExit(f"{label}: not done after {timeout:.0f} s")
    finally:
        for name in names:
            stack.stop(name, signal.SIGTERM, grace=40)


def rung_file(token: str, stack: Stack, vid: str, name: str, out: Path) -> tuple[Path, int]:
    """The rung's init and segments joined into one file; (path, bytes of its segments and init)."""
    s = api_session(token)
    v = s.get(f"{stack.url}/api/videos/{vid}", timeout=30).json()
    rung = next(r for r in v["renditions"] if r["name"] == name)
    text = requests.get(rung["playlist_url"], timeout=30).text.splitlines()
    init = next(x for x in text if x.startswith("#EXT-X-MAP")).split('URI="')[1].split('"')[0]
    total = 0
    with open(out, "wb") as f:
        for part in [init] + [x for x in text if x and not x.startswith("#")]:
            data = requests.get(urljoin(rung["playlist_url"], part), timeout=120).content
            total += len(data)
            f.write(data)
    return out, total


def all_bytes(token: str, stack: Stack, vid: str, work: Path) -> dict[str, int]:
    """Bytes per rung (init + segments)."""
    v = api_session(token).get(f"{stack.url}/api/videos/{vid}", timeout=30).json()
    return {r["name"]: rung_file(token, stack, vid, r["name"], work / f"{vid}-{r['name']}.mp4")[1]
            for r in v["renditions"]}


def vmaf_720p(distorted: Path, src: Path, subsample: int) -> float:
    """VMAF of a 720p rung against the input scaled to 1280x720."""
    graph = ("[1:v]scale=1280:720:flags=bicubic,setpts=PTS-STARTPTS[r];[0:v]setpts=PTS-STARTPTS[d];"
             f"[d][r]libvmaf=n_threads=2:n_subsample={subsample}")
    text = ff(["-i", str(distorted), "-i", str(src), "-lavfi", graph, "-f", "null", "-"])
    match = re.search(r"VMAF score: ([0-9.]+)", text)
    if not match:
        raise SystemExit(f"no VMAF score:\n{text[-1500:]}")
    return float(match[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600, help="length of the input (default 600: 10 minutes)")
    ap.add_argument("--input", type=Path, help="use this file instead of making one (e.g. a kept run's input)")
    ap.add_argument("--chunk-seconds", type=float, default=60)
    ap.add_argument("--heights", default="1080,720,480,360")
    ap.add_argument("--vmaf-subsample", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing (util-linux)")
    _exit_on_sigterm()
    load0 = os.getloadavg()[0]
    # no auto captions: their task would run after COMPLETED, on the next round's workers
    stack = Stack(env={"STREAMFORGE_PIPELINE_HEIGHTS": args.heights, "STREAMFORGE_UPLOAD_MAX_SIZE": str(20 * 2 ** 30),
                       "STREAMFORGE_CAPTIONS_AUTO": "false"},
                  keep=args.keep, tag="scaleout")
    try:
        src = args.input or make_input(stack.tmp / "input-1080p.mp4", args.seconds)
        print(f"input: {src.name}, {src.stat().st_size} bytes; ladder {args.heights}", flush=True)
        stack.prepare_backends()
        stack.start_store(stack.hook_url)
        stack.start_web()
        token = stack.cli("token", "create", "--email", "scaleout@bench.example")
        times, ids = {}, {}
        for chunk in (0.0, args.chunk_seconds):
            for workers in (1, 2):
                label = f"{'chunked' if chunk else 'whole'}-{workers}w"
                print(f"== {label}: {workers} worker(s), one core each, chunk_seconds {chunk:g}", flush=True)
                ids[label], times[label] = run_round(stack, token, src, label, workers, chunk, args.timeout)
                print(f"   COMPLETED after {times[label]:.1f} s ({time.strftime('%H:%M:%S')})", flush=True)
        base = times["whole-1w"]
        print("\n| workers | unchunked | chunked |\n| --- | --- | --- |")
        for w in (1, 2):
            print(f"| {w} x 1 core | {times[f'whole-{w}w']:.1f} s ({times[f'whole-{w}w'] / base:.2f}x) | "
                  f"{times[f'chunked-{w}w']:.1f} s ({times[f'chunked-{w}w'] / base:.2f}x) |")
        whole_b = all_bytes(token, stack, ids["whole-2w"], stack.tmp)
        chunk_b = all_bytes(token, stack, ids["chunked-2w"], stack.tmp)
        ratio = sum(chunk_b.values()) / sum(whole_b.values())
        for name in whole_b:
            print(f"   {name}: unchunked {whole_b[name]} bytes, chunked {chunk_b[name]} bytes "
                  f"({chunk_b[name] / whole_b[name]:.4f}x)")
        v_whole = vmaf_720p(stack.tmp / f"{ids['whole-2w']}-720p.mp4", src, args.vmaf_subsample)
        v_chunk = vmaf_720p(stack.tmp / f"{ids['chunked-2w']}-720p.mp4", src, args.vmaf_subsample)
        speed = times["chunked-2w"] / base
        goals = [(f"two one-core workers, chunked: {speed:.2f}x of one worker's time (goal <= 0.60)", speed <= 0.6),
                 (f"bytes chunked / unchunked: {ratio:.4f} (goal within 2 %)", abs(ratio - 1) <= 0.02),
                 (f"720p VMAF chunked {v_chunk:.2f} vs unchunked {v_whole:.2f} (goal within 0.3)",
                  abs(v_chunk - v_whole) <= 0.3)]
        for text, ok in goals:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        print(f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
              f"(other work on the machine moves the times)")
        ok = all(g for _, g in goals)
        print(f"RESULT: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
