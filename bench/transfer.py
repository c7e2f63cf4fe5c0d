"""Issue 23: how fast `streamforge migrate` and `streamforge backup` move an install.

An embedded install (its own SeaweedFS) is filled with --originals originals of --original-mb MB (sent
in 16 MiB parts, so their ETags are multipart ones) and --segments segments of --segment-kb KB, about
what a few hours of family video leave; then, each as a user runs it:
- `streamforge migrate --to CONFIG` to PostgreSQL and a second SeaweedFS, then a rerun (nothing to copy);
- `streamforge backup DIR`, then a rerun (nothing new);
- the baseline: the same objects copied one at a time with get_bytes/put_bytes (no streaming, no checks).
Prints MB/s and objects/s of each; PASS when every command exits 0 (their checks all held).
"""
from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamforge.config import load_config  # noqa: E402
from streamforge.store.embedded import EmbeddedStore  # noqa: E402


def cli(*args: str) -> tuple[float, str]:
    """Run a streamforge command; (seconds, its stdout); exits the bench when it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "streamforge.commands.main", *args], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        print(out.stdout[-3000:], out.stderr[-3000:])
        print("RESULT: FAIL")
        sys.exit(1)
    return time.monotonic() - t0, out.stdout


def fill(store, originals: int, original_mb: int, segments: int, segment_kb: int) -> tuple[int, int]:
    """Put the objects; (count, bytes)."""
    total = 0
    for i in range(originals):
        data = os.urandom(original_mb * 1000 * 1000)
        store.put_stream(f"originals/v{i}/movie {i}.mp4", io.BytesIO(data), len(data), "video/mp4",
                         part_size=16 * 1024 * 1024)
        total += len(data)
    block = os.urandom(segment_kb * 1000)
    for i in range(segments):
        data = block[i % 97:] + i.to_bytes(4, "big")
        store.put_bytes(f"processed/v{i % max(1, originals)}/r-1/720p/seg-{i:05d}.m4s", data)
        total += len(data)
    return originals + segments, total


def baseline(src, dst) -> float:
    """Seconds to copy every object one at a time through memory."""
    t0 = time.monotonic()
    for o in src.list(""):
        dst.put_bytes(o.key, src.get_bytes(o.key))
    return time.monotonic() - t0


def main() -> int:
    """Run the bench; 0 on PASS."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--originals", type=int, default=4)
    p.add_argument("--original-mb", type=int, default=60)
    p.add_argument("--segments", type=int, default=400)
    p.add_argument("--segment-kb", type=int, default=250)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sf-bench-transfer-"))
    db = f"sf_bench_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {db}"], check=True)
    (work / "home.toml").write_text(f'[server]\ndata_dir = "{work / "home"}"\n')
    (work / "big.toml").write_text(
        f'[server]\ndata_dir = "{work / "big"}"\nsecret_key = "{secrets.token_hex(16)}"\n'
        f'[database]\nurl = "postgresql://postgres@127.0.0.1:5432/{db}"\n')
    home, big = load_config(work / "home.toml", env={}), load_config(work / "big.toml", env={})
    try:
        with EmbeddedStore(home) as a, EmbeddedStore(big) as b:
            count, size = fill(a.object_store(), args.originals, args.original_mb, args.segments, args.segment_kb)
            print(f"{count} objects, {size / 1e6:.0f} MB")
            rows = []
            secs, _ = cli("migrate", "--config", str(work / "home.toml"), "--to", str(work / "big.toml"))
            rows.append(("migrate", secs))
            rows.append(("migrate rerun", cli("migrate", "--config", str(work / "home.toml"),
                                              "--to", str(work / "big.toml"))[0]))
            rows.append(("backup", cli("backup", "--config", str(work / "home.toml"), str(work / "backup"))[0]))
            rows.append(("backup rerun", cli("backup", "--config", str(work / "home.toml"), str(work / "backup"))[0]))
            b.object_store().delete_prefix("originals/")
            b.object_store().delete_prefix("processed/")
            rows.append(("baseline (serial get/put)", baseline(a.object_store(), b.object_store())))
        print(f"{'what':28} {'seconds':>8} {'MB/s':>7} {'objects/s':>10}")
        for name, secs in rows:
            print(f"{name:28} {secs:8.1f} {size / 1e6 / secs:7.1f} {count / secs:10.1f}")
        print("(whole commands: start-up, database, listing and checks included; reruns copy nothing)")
        print("RESULT: PASS")
        return 0
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
