"""Benchmark: StreamForge's H.264 ladder against ffmpeg's one-process ladder and one ffmpeg per rung.

    python bench/ladder.py [--workdir DIR] [--repeat N] [--cpus 0,1] [--skip-per-rung] [--skip-rss]
                           [--input-height 720]

Makes (once, cached in the workdir) a 30 s and a 120 s 1080p input from ../shared/media's Big Buck
Bunny clip, then on the 30 s input runs, one after the other on the same machine:

  * StreamForge: run_pipeline, 1080/720/480/360, veryfast, 4 s segments (audio and thumbnails included),
    `rate_control = "abr"` (the same target bitrates as ffmpeg's), and beside it the default `"crf"` mode
    (per-title levels, probe included, capped constant quality at x264 veryfast);
  * ffmpeg one process: one decode, `split` into four `scale`s, four libx264 outputs, AAC, HLS fMP4;
  * ffmpeg per rung: four ffmpeg processes one after the other, each decoding the source again.

All three use the same bitrates (StreamForge's ladder plan), VBV limits, preset, partitions, GOP and no
scene-cut keyframes. It prints wall times (best and median of --repeat runs, interleaved) and their
ratios, the PSNR of each 720p rung against the source scaled to 720p, and StreamForge's peak RSS on the
30 s and the 120 s input. --cpus pins everything to those cores (e.g. to measure "two cores" on a bigger
machine).

Also ffmpeg's one-process ladder at the crf run's settings (its per-title levels, the same caps, preset
and VBV start). RESULT: PASS when the median ratios meet the goals (<= 0.85 of ffmpeg one-process, <= 0.60
of per-rung; the crf ladder <= 1.10x the abr ladder and <= 0.85x ffmpeg's at the same settings),
the 720p PSNR is at most 0.2 dB below ffmpeg's and the 120 s peak RSS is within 1.25x of the 30 s one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
HEIGHTS = (1080, 720, 480, 360)
PRESET = "veryfast"
SEGMENT = 4
GOALS = {"one_process": 0.85, "per_rung": 0.60, "psnr_drop": 0.2, "crf_vs_abr": 1.10, "crf_vs_ffmpeg": 0.85}

SF_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from streamforge.pipeline import PipelineOptions, run_pipeline
opts = PipelineOptions(codecs=("h264",), heights={heights!r}, preset={preset!r}, segment_seconds={segment!r},
                       rate_control={rate_control!r}, passthrough=False)
started = time.monotonic()
result = run_pipeline({src!r}, {out!r}, opts)
print(json.dumps({{"wall": time.monotonic() - started,
                  "rungs": [(r.name, r.width, r.height, r.bitrate) for r in result.renditions],
                  "notes": result.notes}}))
"""


def run(cmd: list[str], cpus: str | None, quiet: bool = True) -> tuple[float, int, str]:
    """Run a command; return (wall seconds, peak RSS in MiB of the largest child so far, stdout)."""
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True)
    out, err = proc.communicate()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{(err or '')[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return wall, rss, out


def make_inputs(workdir: Path, cpus: str | None) -> dict[int, Path]:
    """The 30 s and 120 s 1080p inputs (the recipe of shared/media/README.md), made once."""
    workdir.mkdir(parents=True, exist_ok=True)
    src30, src120 = workdir / "src30.mp4", workdir / "src120.mp4"
    if not src30.exists():
        print("making the 30 s 1080p input (once)...", flush=True)
        tmp = workdir / "src30.tmp.mp4"
        run([FFMPEG, "-v", "error", "-y", "-stream_loop", "5", "-i", str(MEDIA / "bigbuckbunny-720p-5s.mp4"),
             "-t", "30", "-vf", "scale=1920:1080", "-c:v", "libx264", "-preset", "fast", "-crf", "18",
             "-c:a", "aac", str(tmp)], cpus)
        tmp.rename(src30)
    if not src120.exists():
        tmp = workdir / "src120.tmp.mp4"
        run([FFMPEG, "-v", "error", "-y", "-stream_loop", "3", "-i", str(src30), "-c", "copy", str(tmp)], cpus)
        tmp.rename(src120)
    return {30: src30, 120: src120}


def scaled_input(src: Path, height: int, cpus: str | None) -> Path:
    """The 30 s input at another height (e.g. 720: a ladder without the 1080p rung), made once."""
    out = src.with_name(f"src30-{height}p.mp4")
    if not out.exists():
        tmp = out.with_suffix(".tmp.mp4")
        run([FFMPEG, "-v", "error", "-y", "-i", str(src), "-vf", f"scale=-2:{height}", "-c:v", "libx264",
             "-preset", "fast", "-crf", "18", "-c:a", "copy", str(tmp)], cpus)
        tmp.rename(out)
    return out


def plan(src: Path):
    """StreamForge's ladder for the input: the bitrates every contender uses."""
    from streamforge.pipeline import PipelineOptions, plan_ladder, probe

    opts = PipelineOptions(codecs=("h264",), heights=HEIGHTS, preset=PRESET, segment_seconds=SEGMENT,
                           rate_control="abr")
    info = probe(src)
    return plan_ladder(info, opts), round(SEGMENT * float(info.frame_rate))


def x264_args(rung, index: int | None = None) -> list[str]:
    """The same encoder settings StreamForge uses, as ffmpeg options."""
    s = f":v:{index}" if index is not None else ":v"
    return [f"-b{s}", str(rung.bitrate), f"-maxrate{s}", str(rung.maxrate), f"-bufsize{s}", str(rung.bufsize)]


# the x264 settings StreamForge's rungs add to the preset and GOP (pipeline/transcode.py's _x264_options);
# partitions=i8x8 saves about a sixth of x264's CPU, so ffmpeg without it was not at the same settings
FFMPEG_X264_PARAMS = "open-gop=0:partitions=i8x8"


def common_x264(gop: int) -> list[str]:
    return ["-c:v", "libx264", "-preset", PRESET, "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-x264-params", FFMPEG_X264_PARAMS]


def hls_args(segment: int) -> list[str]:
    return ["-f", "hls", "-hls_time", str(segment), "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod"]


def ffmpeg_one_process(src: Path, out: Path, rungs, gop: int) -> list[str]:
    """One decode, split, four scales, four encoders, one audio, one HLS muxer."""
    labels = "".join(f"[s{i}]" for i in range(len(rungs)))
    graph = f"[0:v]split={len(rungs)}{labels};" + ";".join(
        f"[s{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(rungs))
    cmd = [FFMPEG, "-v", "error", "-y", "-i", str(src), "-filter_complex", graph]
    for i in range(len(rungs)):
        cmd += ["-map", f"[o{i}]"]
    cmd += ["-map", "0:a"] + common_x264(gop)
    for i, r in enumerate(rungs):
        cmd += x264_args(r, i)
    cmd += ["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000"] + hls_args(SEGMENT)
    streams = " ".join(f"v:{i},agroup:aud" for i in range(len(rungs))) + " a:0,agroup:aud"
    cmd += ["-var_stream_map", streams, "-master_pl_name", "master.m3u8", str(out / "%v" / "index.m3u8")]
    return cmd


def ffmpeg_per_rung(src: Path, out: Path, rung, gop: int) -> list[str]:
    """One rung in its own process, with its own decode and its own audio (as PeerTube does it)."""
    return [FFMPEG, "-v", "error", "-y", "-i", str(src), "-vf", f"scale={rung.width}:{rung.height}",
            *common_x264(gop), *x264_args(rung), "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000",
            *hls_args(SEGMENT), str(out / rung.name / "index.m3u8")]


def concat_rendition(playlist: Path, target: Path) -> Path:
    """init + every segment of a media playlist into one playable MP4."""
    text = playlist.read_text()
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)[1]
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    with open(target, "wb") as f:
        for name in [init, *names]:
            f.write((playlist.parent / name).read_bytes())
    return target


def psnr(encoded: Path, src: Path, width: int, height: int) -> float:
    """Average PSNR of `encoded` against the source scaled to its size (bicubic), frames matched by order."""
    graph = (f"[0:v]setpts=PTS-STARTPTS[a];[1:v]scale={width}:{height}:flags=bicubic,setpts=PTS-STARTPTS[b];"
             "[a][b]psnr")
    proc = subprocess.run([FFMPEG, "-hide_banner", "-i", str(encoded), "-i", str(src), "-lavfi", graph, "-f", "null",
                           "-"], capture_output=True, text=True, check=False)
    match = re.search(r"average:([0-9.]+|inf)", proc.stderr)
    if not match:
        raise SystemExit(f"no PSNR from ffmpeg:\n{proc.stderr[-2000:]}")
    return float(match[1])


def streamforge(src: Path, out: Path, cpus: str | None, rate_control: str = "abr") -> tuple[float, dict]:
    """Run the pipeline in a fresh process (the interpreter's start included): wall seconds, and the
    per-title levels it chose (rung name -> level; empty in abr mode)."""
    shutil.rmtree(out, ignore_errors=True)
    # crf runs at its own default preset (pipeline/ladder.py's DEFAULT_PRESETS), as `serve` would
    preset = PRESET if rate_control == "abr" else ""
    code = SF_CHILD.format(root=str(ROOT), heights=HEIGHTS, preset=preset, segment=SEGMENT, src=str(src),
                           out=str(out), rate_control=rate_control)
    wall, _, stdout = run([sys.executable, "-c", code], cpus)
    notes = json.loads(stdout.strip().splitlines()[-1])["notes"]
    levels = next((n for n in notes if n.startswith("per-title levels: ")), "")
    if levels:
        print(f"  crf run: {levels[:160]}...", flush=True)
    return wall, {name: float(level) for name, level in re.findall(r"(\w+) ([0-9.]+)", levels.split(";")[0][18:])}


def ffmpeg_crf_one_process(src: Path, out: Path, rungs, gop: int, levels: dict) -> list[str]:
    """ffmpeg's one-process ladder at the crf default's settings: each rung's level (per title, as the
    StreamForge run chose it), capped as StreamForge caps it (ladder.CRF_CAP of the target bitrate) with a
    2x buffer half full, crf's preset and the x264 settings crf's rungs add to it (ladder.crf_x264_params,
    per rung)."""
    from streamforge.pipeline.ladder import CRF_CAP, PipelineOptions, crf_x264_params, encoder_preset

    cmd = ffmpeg_one_process(src, out, rungs, gop)
    preset = encoder_preset("h264", PipelineOptions())
    cmd[cmd.index("-preset") + 1] = preset
    at = cmd.index("-x264-params")
    del cmd[at:at + 2]
    for i, r in enumerate(rungs):
        at = cmd.index(f"-b:v:{i}")
        extra = crf_x264_params(preset, r.width, r.height)
        peak = int(r.bitrate * CRF_CAP.get("h264", 1.0))
        cmd[at:at + 6] = [f"-crf:v:{i}", f"{levels.get(r.name, 18.0):g}", f"-maxrate:v:{i}", str(peak),
                          f"-bufsize:v:{i}", str(r.bitrate * 2),
                          f"-x264-params:v:{i}", f"{FFMPEG_X264_PARAMS}:vbv-init=0.5" + (f":{extra}" if extra else "")]
    return cmd


def rss_of(src: Path, out: Path, cpus: str | None) -> int:
    """Peak RSS (MiB) of one StreamForge run, measured with /proc's VmHWM of that very process."""
    shutil.rmtree(out, ignore_errors=True)
    code = SF_CHILD.format(root=str(ROOT), heights=HEIGHTS, preset=PRESET, segment=SEGMENT, src=str(src),
                           out=str(out), rate_control="abr")
    code += "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    _, _, stdout = run([sys.executable, "-c", code], cpus)
    return int(stdout.strip().splitlines()[-1]) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.environ.get("STREAMFORGE_BENCH_DIR", "/tmp/streamforge-bench"))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender; the median is reported")
    parser.add_argument("--cpus", default=None, help="pin every process to these cores, e.g. 0,1")
    parser.add_argument("--skip-per-rung", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--input-height", type=int, default=1080,
                        help="run on the 30 s input scaled to this height (720: no 1080p rung)")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    inputs = make_inputs(workdir, args.cpus)
    src = inputs[30] if args.input_height == 1080 else scaled_input(inputs[30], args.input_height, args.cpus)
    rungs, gop = plan(src)
    print(f"input {src} | ladder " + ", ".join(f"{r.name} {r.width}x{r.height} {r.bitrate_text}" for r in rungs)
          + f" | {PRESET}, {SEGMENT} s segments, GOP {gop} | ffmpeg {FFMPEG} | cores {args.cpus or os.cpu_count()}",
          flush=True)
    times: dict[str, list[float]] = {"streamforge": [], "one_process": [], "per_rung": [], "crf": [],
                                     "ffmpeg_crf": []}
    sf_out, one_out, rung_out = workdir / "out-streamforge", workdir / "out-ffmpeg-one", workdir / "out-ffmpeg-rung"
    for attempt in range(args.repeat):
        # interleaved, so a noisy neighbour hurts every contender alike
        times["streamforge"].append(streamforge(src, sf_out, args.cpus)[0])
        wall, levels = streamforge(src, workdir / "out-streamforge-crf", args.cpus, rate_control="crf")
        times["crf"].append(wall)
        shutil.rmtree(one_out, ignore_errors=True)
        one_out.mkdir(parents=True)
        wall, _, _ = run(ffmpeg_crf_one_process(src, one_out, rungs, gop, levels), args.cpus)
        times["ffmpeg_crf"].append(wall)
        shutil.rmtree(one_out, ignore_errors=True)
        (one_out).mkdir(parents=True)
        wall, _, _ = run(ffmpeg_one_process(src, one_out, rungs, gop), args.cpus)
        times["one_process"].append(wall)
        if not args.skip_per_rung:
            shutil.rmtree(rung_out, ignore_errors=True)
            total = 0.0
            for rung in rungs:
                (rung_out / rung.name).mkdir(parents=True)
                wall, _, _ = run(ffmpeg_per_rung(src, rung_out, rung, gop), args.cpus)
                total += wall
            times["per_rung"].append(total)
        print(f"run {attempt + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), flush=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    best = {k: min(v) for k, v in times.items() if v}
    r720 = next(r for r in rungs if r.height == 720)
    sf_psnr = psnr(concat_rendition(sf_out / "720p" / "index.m3u8", workdir / "sf-720p.mp4"), src, 1280, 720)
    one_index = rungs.index(r720)
    ff_psnr = psnr(concat_rendition(one_out / str(one_index) / "index.m3u8", workdir / "ff-720p.mp4"), src,
                   1280, 720)
    results = {"wall": med, "runs": times, "psnr_720p": {"streamforge": sf_psnr, "ffmpeg_one_process": ff_psnr}}
    print()
    print(f"wall time on the 30 s 1080p input, {args.repeat} run(s) each; best (least disturbed by neighbours) "
          f"and median:")
    print(f"  StreamForge           {best['streamforge']:7.1f} s  {med['streamforge']:7.1f} s")
    for key, label in (("one_process", "ffmpeg one process"), ("per_rung", "ffmpeg per rung")):
        if key in med:
            print(f"  {label:<21} {best[key]:7.1f} s  {med[key]:7.1f} s   ratio best "
                  f"{best['streamforge'] / best[key]:.2f}, median {med['streamforge'] / med[key]:.2f}"
                  f"  (goal <= {GOALS[key]})")
    results["best"] = best
    print(f"  StreamForge crf mode  {best['crf']:7.1f} s  {med['crf']:7.1f} s   ratio to abr best "
          f"{best['crf'] / best['streamforge']:.2f}, median {med['crf'] / med['streamforge']:.2f}  "
          f"(the default ladder, probe included; goal <= {GOALS['crf_vs_abr']}); levels {levels}")
    print(f"  ffmpeg crf one process{best['ffmpeg_crf']:7.1f} s  {med['ffmpeg_crf']:7.1f} s   crf ratio best "
          f"{best['crf'] / best['ffmpeg_crf']:.2f}, median {med['crf'] / med['ffmpeg_crf']:.2f}  "
          f"(same levels, caps and preset; goal <= {GOALS['crf_vs_ffmpeg']})")
    print(f"PSNR 720p vs source: StreamForge {sf_psnr:.2f} dB, ffmpeg {ff_psnr:.2f} dB, "
          f"difference {sf_psnr - ff_psnr:+.2f} dB (goal >= -{GOALS['psnr_drop']})")
    if not args.skip_rss:
        rss30 = rss_of(inputs[30], workdir / "out-rss30", args.cpus)
        rss120 = rss_of(inputs[120], workdir / "out-rss120", args.cpus)
        results["rss_mib"] = {"30s": rss30, "120s": rss120}
        print(f"peak RSS StreamForge: 30 s input {rss30} MiB, 120 s input {rss120} MiB "
              f"(x{rss120 / rss30:.2f}; flat means memory does not grow with length)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    # the verdict on the medians: one lucky or unlucky run of either side does not decide it
    ok = sf_psnr - ff_psnr >= -GOALS["psnr_drop"]
    ok &= all(med["streamforge"] / med[key] <= GOALS[key] for key in ("one_process", "per_rung") if key in med)
    ok &= med["crf"] / med["streamforge"] <= GOALS["crf_vs_abr"]
    ok &= med["crf"] / med["ffmpeg_crf"] <= GOALS["crf_vs_ffmpeg"]
    if "rss_mib" in results:
        ok &= results["rss_mib"]["120s"] <= 1.25 * results["rss_mib"]["30s"]
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
