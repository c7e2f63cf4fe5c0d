"""Quantities as people read them (shared by the pages, the admin view and the command line)."""
from __future__ import annotations


def human_size(n: int) -> str:
    """Bytes as a short text: 20 GiB, 512 MiB."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"
