"""The body of `streamforge transcode INPUT OUTDIR`: the pipeline offline, with a progress bar."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import av

from streamforge.errors import MediaError
from streamforge.pipeline.ladder import CODECS, PRESETS, PipelineOptions
from streamforge.pipeline.run import run_pipeline
from streamforge.pipeline.transcode import PipelineResult

PROG = "streamforge transcode"


def _fail(reason: str) -> int:
    print(f"{PROG}: error: {' '.join(str(reason).split())}", file=sys.stderr)
    return 2


def _split(values) -> list[str]:
    """Accept ["h264,hevc"], ["h264", "hevc"] or "h264,hevc"."""
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def transcode_command(src: str, outdir: str, pipeline_config, codecs: list | None = None,
                      heights: list | None = None, preset: str | None = None) -> int:
    """Run the pipeline on one file; 0 on success, 2 with one line on stderr on bad input."""
    try:
        opts = PipelineOptions.from_config(pipeline_config)
        changes = {}
        if codecs:
            names = [c.lower() for c in _split(codecs)]
            unknown = [c for c in names if c not in CODECS]
            if unknown or not names:
                return _fail(f"unknown codec {', '.join(unknown)!s}; choose from {', '.join(CODECS)}")
            changes["codecs"] = tuple(dict.fromkeys(names))
        if heights:
            try:
                values = tuple(int(h) for h in _split(heights))
            except ValueError:
                return _fail(f"--heights takes whole numbers, e.g. 1080,720 (got {heights!r})")
            if not values or any(h < 16 or h > 4320 for h in values):
                return _fail("--heights must be between 16 and 4320")
            changes["heights"] = values
        if preset:
            changes["preset"] = preset
        if changes.get("preset", opts.preset) not in ("", *PRESETS):
            return _fail(f"unknown preset {changes.get('preset', opts.preset)!r}; choose from {', '.join(PRESETS)}")
        opts = dataclasses.replace(opts, **changes)
    except (TypeError, ValueError) as e:
        return _fail(f"invalid pipeline settings: {e}")

    source, target = Path(src), Path(outdir)
    if not source.exists():
        return _fail(f"{src}: no such file")
    if not source.is_file():
        return _fail(f"{src}: not a file")
    if target.exists() and not target.is_dir():
        return _fail(f"{outdir}: exists and is not a directory")

    bar = _progress_bar()
    try:
        result = run_pipeline(source, target, opts, progress=bar.update if bar else None)
    except MediaError as e:
        return _fail(str(e))
    except av.FFmpegError as e:
        return _fail(f"{source.name}: {e}")
    except OSError as e:
        name = e.filename or outdir
        return _fail(f"{name}: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - a command prints one line, never a traceback
        print(f"{PROG}: error: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if bar:
            bar.close()
    print(_summary(result, target))
    return 0


def _summary(result: PipelineResult, outdir: Path) -> str:
    p = result.probe
    lines = [f"{outdir / result.master}  ({p.duration:.1f} s, source {p.width}x{p.height} {p.video_codec})"]
    for r in result.renditions:
        lines.append(f"  {r.name:<12} {r.width}x{r.height} {r.codec:<5} {r.bitrate:>6}  peak "
                     f"{r.bandwidth / 1000:.0f} kbit/s  {r.segment_count} segments")
    if result.audio:
        lines.append(f"  {result.audio.name:<12} {result.audio.codecs} {result.audio.bitrate}  "
                     f"{result.audio.segment_count} segments")
    lines.append(f"  thumbnails   {len(result.thumbnails)} files")
    return "\n".join(lines)


class _Bar:
    """A tqdm bar on stderr driven by the pipeline's (fraction, stage) callback."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm = tqdm(total=1000, file=sys.stderr, unit="‰", bar_format="{desc:<10} {percentage:3.0f}%|{bar}| "
                         "[{elapsed}<{remaining}]", leave=False)
        self.done = 0

    def update(self, fraction: float, stage: str) -> None:
        """Move the bar to `fraction` and show the stage."""
        value = int(fraction * 1000)
        if stage != self.tqdm.desc:
            self.tqdm.set_description_str(stage, refresh=False)
        if value > self.done:
            self.tqdm.update(value - self.done)
            self.done = value

    def close(self) -> None:
        """Remove the bar."""
        self.tqdm.close()


def _progress_bar() -> _Bar | None:
    """A progress bar only when a person watches stderr."""
    try:
        return _Bar() if sys.stderr.isatty() else None
    except ImportError:
        return None
