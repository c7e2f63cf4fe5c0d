"""Full-text search of public videos by the words of their title, description, tags and what is said in them.

A real index on each backend, never a scan of the videos table:
- SQLite: an FTS5 table `video_search` (unicode61 tokenizer: case and accents folded) that triggers
  on `videos` keep in step with every insert, edit and delete;
- PostgreSQL: a generated `videos.search_vector` tsvector (the `simple` configuration: no stemming,
  any language) with a GIN index.

A query's words match as prefixes ("lake" finds "Lakeside"); videos where every word is a whole
word come first, then the better-ranked (title above tags above description), then the newest.
"""
from __future__ import annotations

import re

from peewee import DatabaseProxy, SqliteDatabase

from streamforge.store.db import ProcessingStatus, Video, Visibility, db

MAX_TERMS = 8
MAX_TERM_LENGTH = 40
_WORD = re.compile(r"[^\W_]+")

def _sqlite_schema(spoken: bool) -> tuple[str, ...]:
    """The FTS5 table and its triggers; `spoken`: with the transcript column (migration 12 on)."""
    cols = "title, tags, description" + (", transcript" if spoken else "")
    vals = "new.id, new.title, new.tags, coalesce(new.description, '')" + (
        ", coalesce(new.transcript, '')" if spoken else "")
    return (
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS video_search USING fts5(
             video_id UNINDEXED, {cols}, tokenize = 'unicode61 remove_diacritics 2')""",
        f"""CREATE TRIGGER IF NOT EXISTS video_search_insert AFTER INSERT ON videos BEGIN
             INSERT INTO video_search (video_id, {cols}) VALUES ({vals});
           END""",
        f"""CREATE TRIGGER IF NOT EXISTS video_search_update AFTER UPDATE OF {cols} ON videos BEGIN
             DELETE FROM video_search WHERE video_id = old.id;
             INSERT INTO video_search (video_id, {cols}) VALUES ({vals});
           END""",
        """CREATE TRIGGER IF NOT EXISTS video_search_delete AFTER DELETE ON videos BEGIN
             DELETE FROM video_search WHERE video_id = old.id;
           END""",
    )


def _postgres_schema(spoken: bool) -> tuple[str, ...]:
    """The generated tsvector and its GIN index; `spoken`: with the transcript (weight D)."""
    said = " ||\n         setweight(to_tsvector('simple', coalesce(transcript, '')), 'D')" if spoken else ""
    return (
        f"""ALTER TABLE videos ADD COLUMN IF NOT EXISTS search_vector tsvector GENERATED ALWAYS AS (
         setweight(to_tsvector('simple', coalesce(title, '')), 'A') ||
         setweight(to_tsvector('simple', coalesce(tags, '')), 'B') ||
         setweight(to_tsvector('simple', coalesce(description, '')), 'C'){said}) STORED""",
        "CREATE INDEX IF NOT EXISTS videos_search_vector ON videos USING GIN (search_vector)",
    )


def _is_sqlite(database) -> bool:
    target = database.obj if isinstance(database, DatabaseProxy) else database
    return isinstance(target, SqliteDatabase)


def _has_transcript(database) -> bool:
    return "transcript" in {c.name for c in database.get_columns("videos")}


def install(database) -> None:
    """Create the index (and, on SQLite, its triggers), filled from the videos already there."""
    spoken = _has_transcript(database)
    if not _is_sqlite(database):
        for sql in _postgres_schema(spoken):
            database.execute_sql(sql)
        return
    fresh = not database.table_exists("video_search")
    for sql in _sqlite_schema(spoken):
        database.execute_sql(sql)
    if fresh:
        cols = "title, tags, description" + (", transcript" if spoken else "")
        said = ", coalesce(transcript, '')" if spoken else ""
        database.execute_sql(f"INSERT INTO video_search (video_id, {cols}) "
                             f"SELECT id, title, tags, coalesce(description, ''){said} FROM videos")


def indexes_transcript(database) -> bool:
    """True when the index already covers videos.transcript."""
    if _is_sqlite(database):
        return "transcript" in {c.name for c in database.get_columns("video_search")}
    row = database.execute_sql("SELECT generation_expression FROM information_schema.columns "
                               "WHERE table_name = 'videos' AND column_name = 'search_vector'").fetchone()
    return bool(row and "transcript" in (row[0] or ""))


def rebuild(database) -> None:
    """Drop the index and create it again from the videos (after a column joined it)."""
    if _is_sqlite(database):
        for name in ("insert", "update", "delete"):
            database.execute_sql(f"DROP TRIGGER IF EXISTS video_search_{name}")
        database.execute_sql("DROP TABLE IF EXISTS video_search")
    else:
        database.execute_sql("DROP INDEX IF EXISTS videos_search_vector")
        database.execute_sql("ALTER TABLE videos DROP COLUMN IF EXISTS search_vector")
    install(database)


def terms(q: str | None) -> list[str]:
    """The words of a query, lower-cased, as both indexes split text (letters and digits)."""
    words = [w.lower()[:MAX_TERM_LENGTH] for w in _WORD.findall(q or "")]
    return list(dict.fromkeys(words))[:MAX_TERMS]


def _fts(words: list[str], prefix: bool, column: str | None = None) -> str:
    star = "*" if prefix else ""
    expr = " ".join(f'"{w}"{star}' for w in words)
    return f"{column} : ({expr})" if column else expr


class _Plan:
    """The search's share of the SQL: a join, conditions and an ordering, each with its parameters."""

    def __init__(self, join: str = "", join_params=(), where=(), where_params=(), order: str = "", order_params=()):
        self.join, self.join_params = join, list(join_params)
        self.where, self.where_params = list(where), list(where_params)
        self.order, self.order_params = order, list(order_params)


def _sqlite_plan(words: list[str], tag_words: list[str]) -> _Plan:
    if not words and not tag_words:
        return _Plan()
    parts = ([_fts(words, True)] if words else []) + ([_fts(tag_words, False, "tags")] if tag_words else [])
    join = ("JOIN (SELECT video_id, bm25(video_search, 0.0, 10.0, 5.0, 2.0, 1.0) AS score FROM video_search "
            "WHERE video_search MATCH ?) AS hit ON hit.video_id = v.id")
    if not words:
        return _Plan(join, [" AND ".join(f"({x})" for x in parts)])
    order = "(v.id IN (SELECT video_id FROM video_search WHERE video_search MATCH ?)) DESC, hit.score, "
    return _Plan(join, [" AND ".join(f"({x})" for x in parts)], order=order, order_params=[_fts(words, False)])


def _postgres_plan(words: list[str], tag_words: list[str]) -> _Plan:
    plan = _Plan()
    prefix = " & ".join(f"{w}:*" for w in words)
    if words:
        plan.where.append("v.search_vector @@ to_tsquery('simple', %s)")
        plan.where_params.append(prefix)
        plan.order = ("(v.search_vector @@ to_tsquery('simple', %s)) DESC, "
                      "ts_rank(v.search_vector, to_tsquery('simple', %s)) DESC, ")
        plan.order_params = [" & ".join(words), prefix]
    if tag_words:
        plan.where.append("v.search_vector @@ to_tsquery('simple', %s)")
        plan.where_params.append(" <-> ".join(tag_words))
    return plan


def _public_where(q: str | None, tag: str | None) -> tuple[_Plan, str, list]:
    """The plan of a public search, its FROM ... WHERE part and that part's parameters."""
    words, tag = terms(q), (tag or "").strip()[:50]
    sqlite = _is_sqlite(db)
    p = "?" if sqlite else "%s"
    plan = (_sqlite_plan if sqlite else _postgres_plan)(words, terms(tag))
    where = [f"v.visibility = {p}", f"v.status = {p}", *plan.where]
    params = [*plan.join_params, Visibility.PUBLIC, ProcessingStatus.COMPLETED, *plan.where_params]
    if tag:  # the index finds the tag's words; this keeps only videos with exactly that tag
        where.append("EXISTS (SELECT 1 FROM json_each(v.tags) AS t WHERE lower(t.value) = lower(?))" if sqlite else
                     "EXISTS (SELECT 1 FROM json_array_elements_text(v.tags::json) AS t WHERE lower(t) = lower(%s))")
        params.append(tag)
    return plan, f"FROM videos AS v {plan.join} WHERE {' AND '.join(where)}", params


def public_videos(q: str | None, tag: str | None, page: int, per_page: int) -> tuple[list[Video], bool]:
    """One page of public COMPLETED videos matching the query words and the tag; and whether more exist."""
    plan, where, params = _public_where(q, tag)
    sql = (f"SELECT v.* {where} "
           f"ORDER BY {plan.order}v.created_at DESC, v.id DESC "
           f"LIMIT {int(per_page) + 1} OFFSET {(max(1, int(page)) - 1) * int(per_page)}")
    rows = list(Video.raw(sql, *params, *plan.order_params))
    return rows[:per_page], len(rows) > per_page


def count_public(q: str | None, tag: str | None) -> int:
    """How many public COMPLETED videos match (the explore page's last page comes from it)."""
    _plan, where, params = _public_where(q, tag)
    return int(db.execute_sql(f"SELECT COUNT(*) {where}", params).fetchone()[0])
