"""Whole-database copies between two databases of StreamForge's schema (`migrate`, `backup`, `restore`).

Every table of `db.MODELS` is copied in foreign-key order, ids kept, in primary-key pages so a
table of millions of rows never sits in memory. Rows are upserted by primary key (`INSERT ... ON
CONFLICT (pk) DO UPDATE`): a rerun adds the rows the target lacks and brings the others up to date
(a video that completed since the first run), so an interrupted copy resumes. A target that holds
users or videos the source has not (another install's data) is refused before anything is written:
mixing two installs would be worse than stopping. On PostgreSQL, the sequences of integer primary
keys are moved past the copied ids.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from peewee import (
    AutoField,
    BigAutoField,
    Database,
    DatabaseProxy,
    IntegrityError,
    PostgresqlDatabase,
    SqliteDatabase,
    sort_models,
)

from streamforge.errors import StreamForgeError
from streamforge.store import db as dbmod

PAGE = 1000


class TransferError(StreamForgeError):
    """A copy between two installs cannot go on (the target holds other data, a count differs...)."""


def models() -> list:
    """Every table of the schema, parents before children."""
    return sort_models(list(dbmod.MODELS))


def _real(database: Database) -> Database:
    return database.obj if isinstance(database, DatabaseProxy) else database


@contextlib.contextmanager
def bound(database: Database) -> Iterator[Database]:
    """Point every model (and schema_version) at `database` for the block, and hold one connection."""
    database = _real(database)
    opened = database.is_closed()
    if opened:
        database.connect()
    try:
        with database.bind_ctx([*dbmod.MODELS, dbmod.SchemaVersion], bind_refs=False, bind_backrefs=False):
            yield database
    finally:
        if opened:
            database.close()


def make_and_migrate(url: str) -> Database:
    """make_database(url) with its schema created or brought up to SCHEMA_VERSION."""
    database = dbmod.make_database(url)
    with bound(database):
        dbmod.migrate(database)
    return database


def count_rows(database: Database) -> dict[str, int]:
    """{table: rows} of every table of the schema."""
    with bound(database):
        return {m._meta.table_name: m.select().count() for m in models()}


def _pk_values(model, database: Database) -> set:
    with bound(database):
        pk = model._meta.primary_key
        return {row[0] for row in model.select(pk).tuples().iterator()}


def refuse_foreign_rows(source: Database, target: Database) -> None:
    """TransferError when the target holds users or videos (by primary key) the source has not (the
    other tables hold passing state, e.g. worker heartbeats, that the source may have dropped since)."""
    for model in (dbmod.User, dbmod.Video):
        theirs = _pk_values(model, target)
        if not theirs:
            continue
        extra = theirs - _pk_values(model, source)
        if extra:
            raise TransferError(
                f"the target database already holds {len(extra)} row(s) of {model._meta.table_name} that this "
                f"install does not have (e.g. id {sorted(map(str, extra))[0]!r}): it belongs to another install; "
                "give an empty database")


def _pages(model, database: Database, page: int) -> Iterator[list[tuple]]:
    """The rows of `model` in `database` as tuples of its fields, PAGE at a time, in primary-key order."""
    pk = model._meta.primary_key
    fields = model._meta.sorted_fields
    index = fields.index(pk)
    last = None
    while True:
        with bound(database):
            query = model.select(*fields).order_by(pk).limit(page)
            if last is not None:
                query = query.where(pk > last)
            rows = list(query.tuples())
        if not rows:
            return
        yield rows
        last = rows[-1][index]


def drop_stale(model, source: Database, target: Database) -> int:
    """Delete the target's rows of `model` that an earlier copy brought and the source has dropped since
    (a reprocess's replaced renditions): they would collide with their successors. Users and videos are
    never stale: extra ones mean another install (refuse_foreign_rows)."""
    if model in (dbmod.User, dbmod.Video):
        return 0
    theirs = _pk_values(model, target)
    stale = sorted(theirs - _pk_values(model, source)) if theirs else []
    pk = model._meta.primary_key
    with bound(target) as database, database.atomic():
        for start in range(0, len(stale), 500):
            model.delete().where(pk.in_(stale[start:start + 500])).execute()
    return len(stale)


def copy_table(model, source: Database, target: Database, page: int = PAGE) -> tuple[int, int]:
    """Make the target's table the source's: stale rows out, every row upserted; (rows read, rows new)."""
    fields = model._meta.sorted_fields
    pk = model._meta.primary_key
    others = [f for f in fields if f is not pk]
    drop_stale(model, source, target)
    with bound(target):
        before = model.select().count()
    read = 0
    for rows in _pages(model, source, page):
        with bound(target) as database, database.atomic():
            query = model.insert_many(rows, fields=fields)
            query = query.on_conflict(conflict_target=[pk], preserve=others) if others else query.on_conflict_ignore()
            try:
                query.execute()
            except IntegrityError as e:
                raise TransferError(f"{model._meta.table_name}: the target refused a row: {e}") from e
        read += len(rows)
    with bound(target):
        return read, model.select().count() - before


def fix_sequences(target: Database) -> list[str]:
    """On PostgreSQL, move each integer primary key's sequence past the largest id; the tables fixed."""
    target = _real(target)
    if not isinstance(target, PostgresqlDatabase):
        return []
    fixed = []
    with bound(target):
        for model in [*models(), dbmod.SchemaVersion]:
            pk = model._meta.primary_key
            if not isinstance(pk, (AutoField, BigAutoField)):
                continue
            table, column = model._meta.table_name, pk.column_name
            target.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false) "
                f"WHERE pg_get_serial_sequence('{table}', '{column}') IS NOT NULL")
            fixed.append(table)
    return fixed


def copy_database(source: Database, target: Database,
                  on_table: Callable[[str, int, int], None] | None = None) -> dict[str, tuple[int, int]]:
    """Copy every table (parents first) the target lacks; {table: (read, inserted)}."""
    refuse_foreign_rows(source, target)
    result = {}
    for model in models():
        read, inserted = copy_table(model, source, target)
        result[model._meta.table_name] = (read, inserted)
        if on_table:
            on_table(model._meta.table_name, read, inserted)
    fix_sequences(target)
    return result


def is_sqlite(database: Database) -> bool:
    """True for a SQLite database."""
    return isinstance(_real(database), SqliteDatabase)


def sqlite_path(database: Database) -> Path:
    """The file of a SQLite database."""
    return Path(_real(database).database)


def sqlite_snapshot(source: Database, path: Path) -> None:
    """A consistent copy of a live SQLite database into `path` through SQLite's online backup API."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(str(sqlite_path(source)), timeout=30)
    try:
        dst = sqlite3.connect(str(tmp))
        try:
            # pages=0: one step, so the copy is one snapshot even while writers commit meanwhile
            src.backup(dst, pages=0)
        finally:
            dst.close()
    finally:
        src.close()
    tmp.replace(path)


@contextlib.contextmanager
def snapshot_reads(database: Database) -> Iterator[None]:
    """Reads of the block all see one moment: a REPEATABLE READ transaction on PostgreSQL."""
    database = _real(database)
    if not isinstance(database, PostgresqlDatabase):
        yield
        return
    with database.connection_context():
        database.execute_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            database.execute_sql("ROLLBACK")


def completed_output_keys(database: Database) -> dict[str, set[str]]:
    """{video id: the keys of its master and rendition playlists} of every COMPLETED video."""
    Video, Rendition = dbmod.Video, dbmod.Rendition
    with bound(database):
        keys = {vid: {f"{prefix}/master.m3u8"} for vid, prefix in
                Video.select(Video.id, Video.s3_processed_path)
                .where(Video.status == dbmod.ProcessingStatus.COMPLETED).tuples()}
        for vid, key in (Rendition.select(Rendition.video, Rendition.s3_key).join(Video)
                         .where(Video.status == dbmod.ProcessingStatus.COMPLETED).tuples()):
            keys[vid].add(key)
    return keys
