"""Last step of `make release`: make the bootloader's noexec failure one clear line naming TMPDIR.

A --onefile program unpacks itself into $TMPDIR (default /tmp) and loads libpython from there, in
the bootloader, before any Python runs: on a `noexec` /tmp the only message is the dynamic
loader's "failed to map segment from shared object". The bootloader's format string for that
failure is replaced, in place and no longer than the original, by one that says what to do.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ORIGINAL = b"Failed to load Python shared library '%s': %s\n\0"
# the same two arguments (the library, then dlerror, which names the library again)
REPLACEMENT = b"%.0s%s (noexec? set TMPDIR to an exec dir)\n"


def patch(path: Path) -> None:
    """Rewrite the bootloader's message in `path` (the bootloader is the file's first part)."""
    data = path.read_bytes()
    head = data[: 4 * 1024 * 1024]
    if REPLACEMENT in head:
        return
    if head.count(ORIGINAL) != 1:
        raise SystemExit(f"finish: the bootloader message was not found exactly once in {path}")
    assert len(REPLACEMENT) < len(ORIGINAL)
    at = head.index(ORIGINAL)
    new = REPLACEMENT.ljust(len(ORIGINAL), b"\0")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data[:at] + new + data[at + len(ORIGINAL):])
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/streamforge")
    patch(target)
    print(f"{target}: {target.stat().st_size / 1e6:.0f} MB")
