"""Putting a finished run in place: built aside and moved in with the master last, or, for a failed live
run, everything it wrote removed, the master first."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

FileCallback = Callable[[str, str], None]


def publish_built(work: Path, outdir: Path, files: list[str], emit: FileCallback) -> None:
    """Move a run built aside into place (no master left behind if that fails), then announce its files."""
    try:
        move_into_place(work, outdir)
    except OSError:
        (outdir / "master.m3u8").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
    for relpath in files:
        emit(kind_of(relpath), relpath)


def kind_of(relpath: str) -> str:
    """What a file of the output is, as on_file reports it: master, thumbnail, playlist or segment."""
    if relpath == "master.m3u8":
        return "master"
    if relpath.startswith("thumbnails/"):
        return "thumbnail"
    return "playlist" if relpath.endswith(".m3u8") else "segment"


def remove_written(root: Path, files: list[str], folders: list[str]) -> None:
    """Live run failed: remove the master first, then everything else it wrote, then its emptied folders."""
    (root / "master.m3u8").unlink(missing_ok=True)
    for relpath in files:
        (root / relpath).unlink(missing_ok=True)
    for folder in (root / name for name in folders):
        if folder.is_dir():
            for stray in folder.glob(".*.tmp"):  # a file being written when the run failed
                stray.unlink(missing_ok=True)
            try:
                folder.rmdir()  # only if empty: never a folder holding files we did not write
            except OSError:
                pass


def move_into_place(work: Path, outdir: Path) -> None:
    """Replace outdir's entries by the finished ones; the master goes last."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "master.m3u8").unlink(missing_ok=True)
    entries = sorted(work.iterdir(), key=lambda p: p.name == "master.m3u8")
    for entry in entries:
        target = outdir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
    work.rmdir()
