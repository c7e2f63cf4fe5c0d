"""`streamforge backup DIR` and `streamforge restore DIR`: a consistent copy of the database and every
object, taken while the install runs, and its way back into an empty data dir or CONFIG.

DIR holds `database.sqlite` (the snapshot), `objects/<key>` with the index `objects.jsonl` (size, MD5,
the store's ETag, content type) and `backup.json` (what was taken, when, how). The database is
snapshotted first, then the objects copied: the output of a COMPLETED video never changes, so every
COMPLETED row of the snapshot finds its objects, unless a reprocess or a delete removed them
meanwhile; then a fresh snapshot is taken and the copy goes on (a few rounds at most). A rerun copies
only the objects the backup lacks, and never deletes one.

The snapshot is a SQLite file on either backend. SQLite: its online backup API. PostgreSQL: the row
copy `migrate` uses, read in one REPEATABLE READ transaction (one moment of the database), rather
than `pg_dump`: pg_dump must be at least the server's version and is absent from the single-file
release and most app containers, and its output restores only into PostgreSQL, while a SQLite
snapshot restores into either (a PostgreSQL install can come back as the embedded default).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streamforge.commands.migrate import copy_rows, copy_store, refuse_while_serving, verify
from streamforge.config import Config
from streamforge.errors import StreamForgeError

SNAPSHOT = "database.sqlite"
MANIFEST = "backup.json"
ROUNDS = 3


def add_parsers(sub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """`streamforge backup` and `streamforge restore` on the command line."""
    p = sub.add_parser("backup", help="write a consistent copy of the database and every object to DIR",
                       description="Snapshot the database into DIR, then copy every object the backup lacks "
                                   "(a rerun adds only new objects). Safe while the install runs.")
    common(p)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--workers", type=int, default=8, help="objects copied at once (default 8)")
    p = sub.add_parser("restore", help="bring a backup DIR back into an empty data dir (or --config's services)",
                       description="Copy a backup's database and objects into this install, which must be "
                                   "empty (a fresh --data-dir, or the database and store --config names). "
                                   "A rerun copies only what is missing.")
    common(p)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--workers", type=int, default=8, help="objects copied at once (default 8)")


def snapshot_database(cfg: Config, path: Path) -> str:
    """Write a consistent SQLite copy of the install's database to `path`; returns how it was taken."""
    from streamforge.store import db as dbmod
    from streamforge.store import tables
    source = dbmod.make_database(cfg.database_url)
    if tables.is_sqlite(source):
        tables.sqlite_snapshot(source, path)
        return "sqlite online backup"
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    target = tables.make_and_migrate(f"sqlite:///{part}")
    with tables.snapshot_reads(source):
        for model in tables.models():
            tables.copy_table(model, source, target)
    target.close()
    part.replace(path)
    return "row copy in one REPEATABLE READ transaction"


def unplayable(snapshot: Path, held: set[str]) -> list[str]:
    """Ids of the snapshot's COMPLETED videos whose master or rendition playlists the backup lacks."""
    from streamforge.store import db as dbmod
    from streamforge.store import tables
    database = dbmod.make_database(f"sqlite:///{snapshot}")
    try:
        needed = tables.completed_output_keys(database)
    finally:
        database.close()
    return sorted(vid for vid, keys in needed.items() if not keys <= held)


def install_of(cfg: Config) -> str:
    """Which install a backup is of: its database and its store (no password)."""
    store = f"embedded store in {cfg.data_dir}" if cfg.embedded_storage else f"{cfg.storage.endpoint}/{cfg.storage.bucket}"
    return f"{cfg.database_url.split('@')[-1].split('?')[0]} + {store}"


def refuse_other_install(root: Path, cfg: Config) -> None:
    """StreamForgeError when DIR holds a backup of another install (their objects would mix)."""
    try:
        taken_of = json.loads((root / MANIFEST).read_text()).get("install")
    except (OSError, ValueError):
        return
    if taken_of and taken_of != install_of(cfg):
        raise StreamForgeError(f"{root} holds a backup of another install ({taken_of}); give an empty folder")


def write_manifest(root: Path, cfg: Config, method: str, rows: dict[str, int], objects: int, size: int) -> None:
    """backup.json: what this backup holds and how it was taken."""
    from streamforge.store import db as dbmod
    body = {"format": 1, "install": install_of(cfg), "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "database": {"from": "sqlite" if cfg.database_url.startswith("sqlite") else "postgresql",
                         "method": method, "schema_version": dbmod.SCHEMA_VERSION, "rows": rows},
            "objects": {"count": objects, "bytes": size, "bucket": cfg.storage.bucket}}
    tmp = root / (MANIFEST + ".part")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(root / MANIFEST)


def cmd_backup(args, cfg: Config) -> int:
    """Snapshot the database, then copy the objects the backup lacks; repeat while the snapshot's
    COMPLETED videos miss objects (removed meanwhile by a reprocess or a delete)."""
    from streamforge.store import transfer
    from streamforge.store.connect import running_object_store
    root = Path(args.dir).expanduser().resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds every user's data and token hashes
    refuse_other_install(root, cfg)
    started = time.monotonic()
    target = transfer.DirSide(root)
    with running_object_store(cfg) as store:
        source = transfer.BucketSide(store)
        for attempt in range(1, ROUNDS + 1):
            t0 = time.monotonic()
            method = snapshot_database(cfg, root / SNAPSHOT)
            print(f"database: snapshot ({method}) in {time.monotonic() - t0:.1f} s", flush=True)
            stats = copy_store(source, target, args.workers, "backup")
            held = set(target.inventory())
            missing = unplayable(root / SNAPSHOT, held)
            if not missing:
                break
            print(f"{len(missing)} COMPLETED video(s) of the snapshot lost objects meanwhile (e.g. {missing[0]}); "
                  + ("taking a fresh snapshot" if attempt < ROUNDS else "giving up"), flush=True)
    rows = _rows(root)
    inventory = target.inventory()
    write_manifest(root, cfg, method, rows, len(inventory), sum(o.size for o in inventory.values()))
    print(f"backup in {root}: {sum(rows.values())} rows, {len(inventory)} objects "
          f"({sum(o.size for o in inventory.values()) / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s", flush=True)
    if stats.failed or missing:
        print("streamforge backup: incomplete; run it again", file=sys.stderr)
        return 1
    return 0


def _rows(root: Path) -> dict[str, int]:
    """Rows per table of the snapshot, read without changing it."""
    from streamforge.store import db as dbmod
    from streamforge.store import tables
    database = dbmod.make_database(f"sqlite:///{root / SNAPSHOT}")
    try:
        return tables.count_rows(database)
    finally:
        database.close()


def _working_copy(snapshot: Path, where: Path) -> Path:
    """A copy of the backup's database to read (and bring up to this version's schema) without touching it."""
    copy = where / "restore-source.sqlite"
    src, dst = sqlite3.connect(str(snapshot)), sqlite3.connect(str(copy))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return copy


def cmd_restore(args, cfg: Config) -> int:
    """Copy a backup's database and objects into this (empty) install, then verify both sides."""
    from streamforge.store import tables, transfer
    from streamforge.store.connect import running_object_store
    root = Path(args.dir).expanduser().resolve()
    if not (root / SNAPSHOT).is_file():
        raise StreamForgeError(f"{root} is not a backup: it has no {SNAPSHOT} (see `streamforge backup DIR`)")
    refuse_while_serving(cfg)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sf-restore-") as tmp:
        source_db = tables.make_and_migrate(f"sqlite:///{_working_copy(root / SNAPSHOT, Path(tmp))}")
        target_db = tables.make_and_migrate(cfg.database_url)
        print(f"database: {root / SNAPSHOT} -> {cfg.database_url.split('@')[-1]}", flush=True)
        copy_rows(source_db, target_db)
        with running_object_store(cfg, create_bucket=True) as store:
            source, target = transfer.DirSide(root), transfer.BucketSide(store)
            stats = copy_store(source, target, args.workers, "restore")
            print(f"restored in {time.monotonic() - started:.1f} s; verifying", flush=True)
            ok = verify(source_db, target_db, source, target) and not stats.failed
        source_db.close()
    if not ok:
        print("streamforge restore: incomplete; run it again to copy what is missing", file=sys.stderr)
        return 1
    return 0
