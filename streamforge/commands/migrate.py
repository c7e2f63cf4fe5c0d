"""`streamforge migrate --to CONFIG`: move this install (database and objects) to the database and store
CONFIG names, e.g. from the embedded default to PostgreSQL and MinIO, or back.

Tables go first (parents before children, ids kept), then the objects (streamed, 8 at a time, each
checked); a rerun copies only what is missing. It refuses while this install's `serve` runs (a
copy of a moving install is not a copy), and ends with a count of rows and objects on both sides.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from streamforge.config import Config, load_config
from streamforge.errors import ConfigError, StreamForgeError

HELP = """Copy this install (its database and every object of its store) into the database and
store the TOML file CONFIG names: ids, slugs, tokens and captions are kept, so
`streamforge serve|web|worker --config CONFIG` serves the same library. CONFIG is read
alone (STREAMFORGE_* variables apply to this install, not to the target). A rerun copies
only what is missing. Stop `streamforge serve` first."""


def add_parser(sub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """`streamforge migrate` on the command line."""
    p = sub.add_parser("migrate", help="copy this install's database and objects to another config's",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("--to", required=True, metavar="CONFIG", help="the target's TOML config file")
    p.add_argument("--to-data-dir", metavar="DIR", help="the target's data dir (when it keeps the embedded "
                                                        "database or store; default: CONFIG's [server] data_dir)")
    p.add_argument("--workers", type=int, default=8, help="objects copied at once (default 8)")


def target_config(path: str, data_dir: str | None) -> Config:
    """The target's Config: the file alone, no STREAMFORGE_* variables. Only what the copy needs must be
    there (the database, the store and its keys); an embedded target's keys are made in its data dir."""
    cfg = load_config(path, data_dir, env={}, fill_secrets=False)
    if cfg.embedded_storage:
        return load_config(path, data_dir, env={})
    if not (cfg.storage.access_key and cfg.storage.secret_key):
        raise ConfigError(f"{path}: [storage] access_key and secret_key are needed to copy the objects to "
                          f"{cfg.storage.endpoint}")
    return cfg


def refuse_while_serving(cfg: Config) -> None:
    """StreamForgeError when `serve` runs on this data dir."""
    from streamforge.commands.local_serve import find_local_serve
    url = find_local_serve(cfg)
    if url:
        raise StreamForgeError(f"`streamforge serve` is running on {cfg.data_dir} ({url}): stop it first; "
                               "a copy of an install that is changing is not a copy")


def refuse_same_place(source: Config, target: Config) -> None:
    """StreamForgeError when the target is this install itself."""
    if source.database_url == target.database_url:
        raise StreamForgeError(f"the target's database is this install's own ({_where(target.database_url)})")
    if (source.embedded_storage and target.embedded_storage and source.data_dir == target.data_dir) or (
            not source.embedded_storage and (source.storage.endpoint, source.storage.bucket)
            == (target.storage.endpoint, target.storage.bucket)):
        raise StreamForgeError("the target's store is this install's own")


def _where(url: str) -> str:
    return url.split("@")[-1].split("?")[0]


@contextlib.contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar of bytes on a terminal (nothing otherwise); yields its thread-safe update."""
    from tqdm import tqdm
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, disable=None,
              file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update


def copy_rows(source_db, target_db) -> float:
    """Copy every table, one line per table; returns the seconds it took."""
    from streamforge.store import tables
    started = time.monotonic()

    def line(table: str, read: int, inserted: int) -> None:
        print(f"  {table}: {read} rows, {inserted} new", flush=True)
    tables.copy_database(source_db, target_db, on_table=line)
    return time.monotonic() - started


def copy_store(source, target, workers: int, what: str):
    """Copy every object the target lacks under a progress bar; returns the CopyStats."""
    from streamforge.store import transfer
    todo, done = transfer.plan(source, target)
    print(f"objects: {len(todo)} to copy ({sum(o.size for o in todo) / 1e6:.1f} MB), {len(done)} already there",
          flush=True)
    with progress_bar(sum(o.size for o in todo), what) as update:
        stats = transfer.copy_objects(source, target, workers=workers, on_bytes=update, todo=todo, done=done)
    print(f"objects: {stats.copied} copied ({stats.copied_bytes / 1e6:.1f} MB in {stats.seconds:.1f} s, "
          f"{stats.rates()}), {stats.skipped} already there, {stats.vanished} gone meanwhile, "
          f"{len(stats.failed)} failed", flush=True)
    for key, reason in stats.failed[:10]:
        print(f"  FAIL {key}: {reason}", flush=True)
    return stats


def verify(source_db, target_db, source, target) -> bool:
    """The doctor-style check: rows per table and objects on both sides; True when all match."""
    from streamforge.store import tables, transfer
    ok = True
    mine, theirs = tables.count_rows(source_db), tables.count_rows(target_db)
    for table, n in mine.items():
        good = theirs.get(table) == n
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {table}: {n} rows here, {theirs.get(table)} there")
    here, there, missing = transfer.compare(source, target)
    ok &= not missing
    print(f"{'ok  ' if not missing else 'FAIL'} objects: {here} here, {there} there"
          + (f", {len(missing)} missing there (first {missing[0]})" if missing else ""))
    return ok


def cmd_migrate(args, cfg: Config) -> int:
    """Copy this install into CONFIG's database and store, then verify both sides."""
    from streamforge.store import tables, transfer
    from streamforge.store.connect import running_object_store
    refuse_while_serving(cfg)
    target_cfg = target_config(args.to, args.to_data_dir)
    refuse_same_place(cfg, target_cfg)
    started = time.monotonic()
    source_db = tables.make_and_migrate(cfg.database_url)
    target_db = tables.make_and_migrate(target_cfg.database_url)
    print(f"database: {_where(cfg.database_url)} -> {_where(target_cfg.database_url)}", flush=True)
    row_seconds = copy_rows(source_db, target_db)
    with running_object_store(cfg) as src, running_object_store(target_cfg, create_bucket=True) as dst:
        source, target = transfer.BucketSide(src), transfer.BucketSide(dst)
        print(f"store: {source} -> {target}", flush=True)
        stats = copy_store(source, target, args.workers, "migrate")
        print(f"migrated in {time.monotonic() - started:.1f} s (tables {row_seconds:.1f} s); verifying", flush=True)
        ok = verify(source_db, target_db, source, target) and not stats.failed
    if not ok:
        print("streamforge migrate: the copy is incomplete; run it again to copy what is missing", file=sys.stderr)
        return 1
    print(f"done: start it with `streamforge serve --config {args.to}` (or web and worker)")
    return 0
