"""Where the window bolt's state lives: a SQL table (SQLite, PostgreSQL) or Redis.

Two kinds of entries per bolt (``name``):

- a *cell* per (window start, key): the aggregation states (JSON), a revision number bumped at
  every write, and ``closed`` (its final result was emitted and committed);
- a *shard mark* per shard: the shard's watermark (the highest event time it delivered) and the
  position of the last record whose changes are in the cells (so a batch delivered again after
  its state was committed is not counted twice).

Per batch the bolt calls ``shards()`` and ``load(cells)`` / ``closable(before)`` while it
processes, and ``commit(...)`` in the engine's commit sequence. ``commit`` re-reads the cells it
writes under a lock (PostgreSQL ``FOR UPDATE``; SQLite locks the database; Redis ``WATCH``) and
folds the batch's deltas into what it finds, so two processes adding to one window (two shards
under Lambda) never lose an update. When every aggregate has a merge the store can do itself
(window_aggs' ``store_merge``: count, sum, mean, min, max), ``commit_merged`` instead lets the
store merge the deltas (SQL ``ON CONFLICT DO UPDATE`` expressions, a Redis Lua script): no read,
no lock before the write. SQLite and PostgreSQL share one code path: a ``_Dialect`` row says
what their SQL spells differently. A cell is marked closed only when the revision it read
while processing is still the revision at commit: else someone added to it meanwhile, and it
is closed (and emitted again, complete) by a later batch. Dependency failures →
``TransientError``.

Size (~810 lines): the same window-state protocol on SQL (SQLite and PostgreSQL, one path and a
table of their differences) and Redis, kept side by side so that their locking and merge rules
can be compared; the Redis merge is a Lua script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from squall.errors import TransientError
from squall.topology.resources import redis_errors, redis_transient_errors
from squall.topology.sql import store_errors

#: Redis errors that may pass: connection lost or refused, timeouts, a replica being promoted.
REDIS_TRANSIENT = redis_transient_errors()  # shared with every Redis user


CellId = tuple[int, str]  # (window start ms, key as JSON text)


@dataclass(slots=True)
class Cell:
    """One window and key as stored."""

    states: list[Any]
    rev: int = 0
    closed: bool = False


@dataclass(slots=True)
class ShardMark:
    """A shard's watermark (ms) and the position of its last record counted in the cells."""

    watermark: int
    sequence: int
    sub: int = 0


@dataclass(slots=True)
class CellWrite:
    """What a commit does to one cell: fold ``delta`` in (None: nothing to add); close it if the
    stored revision is still ``close_if_rev``; ``window_end`` for the index."""

    delta: list[Any] | None
    window_end: int
    close_if_rev: int | None = None


class WindowStore(Protocol):
    def shards(self) -> dict[str, ShardMark]: ...

    def load(self, cells: list[CellId]) -> dict[CellId, Cell]: ...

    def closable(self, end_before: int) -> dict[CellId, Cell]:
        """Cells not closed whose window ends at or before ``end_before``."""
        ...

    def commit(
        self,
        writes: dict[CellId, CellWrite],
        marks: dict[str, ShardMark],
        expire_before: int,
        merge: Any,
        connection: Any = None,
    ) -> None:
        """Fold deltas, close cells, save shard marks, delete closed cells of windows ending
        before ``expire_before``, atomically. ``merge(stored_states, delta) -> states``."""
        ...

    def commit_merged(
        self,
        deltas: dict[CellId, list[Any]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """``commit`` when every aggregate has a store merge (the store was made with
        ``merges``): the store merges the deltas itself, without the cells being read first;
        ``size``: the window length (a cell's end is its start plus it); ``closes``: cell →
        revision read when its result was emitted."""
        ...


def _apply(stored: Cell | None, w: CellWrite, merge: Any) -> Cell:
    if stored is None:
        cell = Cell(list(w.delta) if w.delta is not None else [], 0, False)
    else:
        cell = Cell(stored.states, stored.rev, stored.closed)
        if w.delta is not None:
            cell.states = merge(stored.states, w.delta)
    closing = w.close_if_rev is not None and (stored.rev if stored else 0) == w.close_if_rev
    if closing:
        cell.closed = True
    elif w.delta is not None:
        cell.closed = False  # added to after a close (a concurrent writer): emit it again later
    cell.rev += 1
    return cell


# -- SQL ------------------------------------------------------------------------------------------


def tables(prefix: str) -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    cells = sa.Table(
        prefix,
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("rev", sa.Integer, nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False),
        sa.Index(f"{prefix}_open", "name", "closed", "window_end"),
        # SQLite: the rows in the primary key's B-tree, not in a rowid table plus a copy of the key
        # in an index — one B-tree fewer to rewrite per cell (tables made before keep their rowid)
        sqlite_with_rowid=False,
    )
    shards = sa.Table(
        f"{prefix}_shards",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("shard", sa.String(200), primary_key=True),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("sequence", sa.String(64), nullable=False),
        sa.Column("sub", sa.Integer, nullable=False),
    )
    return cells, shards


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What the window store's SQL says differently on SQLite and PostgreSQL.

    Every bulk write sends its rows as one JSON array (one parameter, serialized by orjson in
    one call) that ``rows`` turns back into a table of elements; ``integer``/``text``/``json`` read
    the value at a path of indexes in an element. A merging upsert combines, per aggregate, the
    stored (``state("o", …)``) and new (``state("n", …)``) states with ``add``/``least``/``greatest``,
    each giving JSON that ``pack`` puts in an array; ``merged`` wraps the array into the SET."""

    name: str
    insert: Callable[..., Any]  # SQLAlchemy's insert, with on_conflict_do_update
    param: str  # the driver's placeholder
    lock_rows: bool  # SELECT … FOR UPDATE (PostgreSQL); SQLite locks the whole database instead
    chunk: int  # keys per SELECT: one array parameter (PostgreSQL), IN (…) under SQLite's limit
    rows: str
    integer: Callable[[tuple[int, ...]], str]
    text: Callable[[tuple[int, ...]], str]
    json: Callable[[tuple[int, ...]], str]
    state: Callable[[str, tuple[int, ...]], str]
    add: Callable[[str, str], str]
    least: Callable[[str, str], str]
    greatest: Callable[[str, str], str]
    pack: Callable[[list[str]], str]
    merged: Callable[[str], str]


def _path(path: tuple[int, ...]) -> str:
    return "'$" + "".join(f"[{i}]" for i in path) + "'"


def _sqlite_json(value: str) -> str:
    """A SQLite value as JSON text; a real with 17 digits (SQLite's JSON writes 15, which need not
    give back the same double)."""
    return f"(CASE typeof({value}) WHEN 'real' THEN printf('%!.17g', {value}) ELSE json_quote({value}) END)"


def _pg_pick(a: str, b: str, op: str) -> str:
    """PostgreSQL: ``b`` when it comes ``op`` ``a`` in window_aggs' order of min/max (JSON null:
    none yet; numbers before text; numbers by value; text by code point, COLLATE "C"), else ``a``."""
    ta, tb = f"json_typeof({a})", f"json_typeof({b})"
    text = "#>> '{}') COLLATE \"C\""
    return (
        f"(CASE WHEN {ta} = 'null' THEN {b} WHEN {tb} = 'null' THEN {a} "
        f"WHEN {ta} <> {tb} THEN (CASE WHEN {tb} {'=' if op == '<' else '<>'} 'number' THEN {b} ELSE {a} END) "
        f"WHEN {ta} = 'number' THEN (CASE WHEN ({b} #>> '{{}}')::numeric {op} ({a} #>> '{{}}')::numeric "
        f"THEN {b} ELSE {a} END) "
        f"ELSE (CASE WHEN ({b} {text} {op} ({a} {text} THEN {b} ELSE {a} END) END)"
    )


SQLITE = _Dialect(
    name="sqlite",
    insert=sqlite.insert,
    param="?",
    lock_rows=False,
    chunk=500,
    rows="json_each(?) AS j",
    integer=lambda path: f"json_extract(j.value, {_path(path)})",
    text=lambda path: f"json_extract(j.value, {_path(path)})",
    json=lambda path: f"json_extract(j.value, {_path(path)})",  # an array comes back as its text
    state=lambda side, path: "json_extract({}, {})".format(
        "c.state" if side == "o" else "excluded.state", _path(path)
    ),
    # SQLite orders numbers before text and text by its bytes: window_aggs' order; min() of a
    # NULL is NULL, hence the coalesce
    add=lambda a, b: _sqlite_json(f"({a} + {b})"),
    least=lambda a, b: _sqlite_json(f"coalesce(min({a}, {b}), {a}, {b})"),
    greatest=lambda a, b: _sqlite_json(f"coalesce(max({a}, {b}), {a}, {b})"),
    pack=lambda items: "('[' || " + " || ',' || ".join(items) + " || ']')",
    merged=lambda packed: packed,
)

POSTGRESQL = _Dialect(
    name="postgresql",
    insert=postgresql.insert,
    param="%s",
    lock_rows=True,
    chunk=10_000,
    rows="json_array_elements(%s::json) AS j(e)",
    integer=lambda path: f"({POSTGRESQL.text(path)})::bigint",
    text=lambda path: "e" + "".join(f"->{i}" for i in path[:-1]) + f"->>{path[-1]}",
    json=lambda path: "(e" + "".join(f"->{i}" for i in path) + ")::text",  # json: the text as sent
    state=lambda side, path: "(" + side + "".join(f"->{i}" for i in path) + ")",
    # integers (JSON text of digits) added as numeric, exact at any size; other numbers as
    # doubles, as Python does (json, not jsonb, all along: jsonb would write 1e300 in 301 digits)
    add=lambda a, b: (
        f"(CASE WHEN ({a} #>> '{{}}') ~ '^-?[0-9]+$' AND ({b} #>> '{{}}') ~ '^-?[0-9]+$' "
        f"THEN to_json(({a} #>> '{{}}')::numeric + ({b} #>> '{{}}')::numeric) "
        f"ELSE to_json(({a} #>> '{{}}')::float8 + ({b} #>> '{{}}')::float8) END)"
    ),
    least=lambda a, b: _pg_pick(a, b, "<"),
    greatest=lambda a, b: _pg_pick(a, b, ">"),
    pack=lambda items: "json_build_array(" + ", ".join(items) + ")",
    # the stored and new states parsed once per row
    merged=lambda packed: (
        f"(SELECT ({packed})::text FROM (SELECT c.state::json AS o, excluded.state::json AS n) AS s)"
    ),
)


def _merged_state_sql(d: _Dialect, merges: list[str]) -> str:
    """The merged state: aggregate i by ``merges[i]`` (window_aggs' store_merge: ``add``,
    ``pair`` — two numbers added element by element, a mean's sum and count —, ``min``, ``max``)."""
    items = []
    for i, kind in enumerate(merges):
        if kind == "pair":
            items.append(
                d.pack([d.add(d.state("o", (i, j)), d.state("n", (i, j))) for j in (0, 1)])
            )
        else:
            fn = {"add": d.add, "min": d.least, "max": d.greatest}[kind]
            items.append(fn(d.state("o", (i,)), d.state("n", (i,))))
    return d.merged(d.pack(items))


class SqlWindowStore:
    """Cells and shard marks in two SQL tables (created if missing)."""

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        table: str = "squall_windows",
        merges: list[str] | None = None,
    ):
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the window store needs SQLite or PostgreSQL, not {dialect}")
        self.engine, self.name = engine, name
        self.cells, self.marks = tables(table)
        d = self.dialect = SQLITE if dialect == "sqlite" else POSTGRESQL
        self._created = False
        t, p = self.cells.name, d.param
        rows = d.rows
        # (WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT; ORDER BY: every
        # writer locks rows in one order, so writers never deadlock on PostgreSQL)
        self._write_sql = (
            f'INSERT INTO "{t}" AS c (name, window_start, key, window_end, state, rev, closed) '
            f"SELECT {p}, {d.integer((0, 0))}, {d.text((0, 1))}, {d.integer((2,))}, {d.json((1,))}, "
            f"{d.integer((3,))}, {d.integer((4,))} <> 0 FROM {rows} WHERE true ORDER BY 2, 3 "
            "ON CONFLICT (name, window_start, key) DO UPDATE SET state = excluded.state, "
            "rev = excluded.rev, closed = excluded.closed, window_end = excluded.window_end"
        )
        self._close_sql = (
            f'UPDATE "{t}" SET closed = true, rev = rev + 1 WHERE name = {p} AND '
            f"(window_start, key, rev) IN (SELECT {d.integer((0,))}, {d.text((1,))}, "
            f"{d.integer((2,))} FROM {rows})"
        )
        #: every aggregate merged by the store (window_aggs' store_merge): a commit folds the
        #: deltas in SQL, without reading the cells (see ``commit_merged``)
        self.merges = merges
        if merges:
            self._merge_sql = (
                f'INSERT INTO "{t}" AS c (name, window_start, key, window_end, state, rev, closed) '
                f"SELECT {p}, {d.integer((0, 0))}, {d.text((0, 1))}, {d.integer((0, 0))} + {p}, "
                f"{d.json((1,))}, 1, false FROM {rows} WHERE true ORDER BY 2, 3 "
                "ON CONFLICT (name, window_start, key) DO UPDATE SET "
                f"state = {_merged_state_sql(d, merges)}, rev = c.rev + 1"
            )
            # A cell added to after it was closed (by a writer whose watermark was further) is open
            # again. Not in the upsert's SET: SQLite rewrites an index whose column a SET names,
            # even to the same value — the open-cells index, for every cell (measured: 13 → 7-9 µs
            # per row); instead, per window, only when it has closed cells (rarely).
            self._has_closed_sql = (
                f'SELECT 1 FROM "{t}" WHERE name = {p} AND closed AND window_end = {p} LIMIT 1'
            )
            self._reopen_sql = (
                f'UPDATE "{t}" SET closed = false WHERE name = {p} AND closed AND window_end = {p} '
                f"AND key IN (SELECT {d.text((1,))} FROM {rows})"
            )

    def _ensure(self) -> None:
        if not self._created:
            # IF NOT EXISTS, not check-then-create: two writers starting together (Lambda cold
            # starts, shards in parallel) would both see no table and one would fail. PostgreSQL
            # can still refuse the loser of a truly simultaneous CREATE: try again.
            for attempt in range(3):
                try:
                    with self.engine.begin() as conn:
                        for table in self.cells.metadata.sorted_tables:
                            conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                            for index in table.indexes:
                                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
                    break
                except sa.exc.DatabaseError:
                    if attempt == 2:
                        raise
            self._created = True

    def shards(self) -> dict[str, ShardMark]:
        m = self.marks
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(m.c.shard, m.c.watermark, m.c.sequence, m.c.sub).where(
                        m.c.name == self.name
                    )
                )
                return {s: ShardMark(w, int(q), sub) for s, w, q, sub in rows}

    def load(self, cells: list[CellId]) -> dict[CellId, Cell]:
        if not cells:
            return {}
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                return self._select(conn, cells, lock=False)

    def _select(
        self, conn: sa.Connection, cells: Iterable[CellId], lock: bool
    ) -> dict[CellId, Cell]:
        t, d = self.cells, self.dialect
        by_window: dict[int, list[str]] = {}
        for ws, key in cells:
            by_window.setdefault(ws, []).append(key)
        found: dict[CellId, Cell] = {}
        for ws, keys in sorted(by_window.items()):
            keys.sort()  # one lock order for every writer: no deadlocks between shards
            for i in range(0, len(keys), d.chunk):
                part = keys[i : i + d.chunk]
                match = (
                    t.c.key
                    == sa.any_(sa.bindparam("keys", part, type_=postgresql.ARRAY(sa.String)))
                    if d.lock_rows
                    else t.c.key.in_(part)
                )
                q = (
                    sa.select(t.c.key, t.c.state, t.c.rev, t.c.closed)
                    .where(t.c.name == self.name, t.c.window_start == ws, match)
                    .order_by(t.c.key)
                )
                if lock and d.lock_rows:
                    q = q.with_for_update()
                for key, state, rev, closed in conn.execute(q):
                    found[(ws, key)] = Cell(orjson.loads(state), rev, bool(closed))
        return found

    def closable(self, end_before: int) -> dict[CellId, Cell]:
        t = self.cells
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                q = sa.select(t.c.window_start, t.c.key, t.c.state, t.c.rev).where(
                    t.c.name == self.name, t.c.closed == sa.false(), t.c.window_end <= end_before
                )
                return {
                    (ws, key): Cell(orjson.loads(state), rev, False)
                    for ws, key, state, rev in conn.execute(q)
                }

    def commit(
        self,
        writes: dict[CellId, CellWrite],
        marks: dict[str, ShardMark],
        expire_before: int,
        merge: Any,
        connection: Any = None,
    ) -> None:
        with self._writing(connection) as conn:
            if writes:
                stored = self._select(conn, writes, lock=True)
                rows = []
                for cid, w in writes.items():
                    cell = _apply(stored.get(cid), w, merge)
                    rows.append((cid, cell.states, w.window_end, cell.rev, int(cell.closed)))
                conn.exec_driver_sql(self._write_sql, (self.name, orjson.dumps(rows).decode()))
            self._finish(conn, marks, expire_before)

    @contextmanager
    def _writing(self, connection: sa.Connection | None) -> Iterator[sa.Connection]:
        """The connection of a commit: the engine's transaction when it shares it, else ours."""
        with store_errors("window store write"):
            self._ensure()
            if connection is not None:
                yield connection
            else:
                with self.engine.begin() as conn:
                    yield conn

    def _reopen(self, conn: sa.Connection, deltas: dict[CellId, list[Any]], size: int) -> None:
        """Cells of the deltas that were closed: open again (see ``_reopen_sql``)."""
        windows = {ws for ws, _ in deltas}
        for ws in sorted(windows):
            if conn.exec_driver_sql(self._has_closed_sql, (self.name, ws + size)).first():
                cells = list(deltas) if len(windows) == 1 else [c for c in deltas if c[0] == ws]
                conn.exec_driver_sql(
                    self._reopen_sql, (self.name, ws + size, orjson.dumps(cells).decode())
                )

    def _finish(self, conn: sa.Connection, marks: dict[str, ShardMark], expire_before: int) -> None:
        """The end of every commit: the shard marks, and closed cells past their time deleted."""
        t, m = self.cells, self.marks
        if marks:
            stmt = self.dialect.insert(m)
            stmt = stmt.on_conflict_do_update(
                index_elements=[m.c.name, m.c.shard],
                set_={c: stmt.excluded[c] for c in ("watermark", "sequence", "sub")},
            )
            conn.execute(
                stmt,
                [
                    {
                        "name": self.name,
                        "shard": s,
                        "watermark": k.watermark,
                        "sequence": str(k.sequence),
                        "sub": k.sub,
                    }
                    for s, k in sorted(marks.items())
                ],
            )
        conn.execute(
            sa.delete(t).where(
                t.c.name == self.name, t.c.closed == sa.true(), t.c.window_end < expire_before
            )
        )

    def commit_merged(
        self,
        deltas: dict[CellId, list[Any]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """``commit`` when every aggregate has a store merge: the database folds the deltas into
        the stored states itself (one upsert; no read, no lock taken before: each row is locked
        by its own upsert, which merges into whatever another writer committed). Then each window
        in ``closes`` (cell → the revision read when its result was emitted) is closed if its
        revision is still that one (plus one when this commit added to it)."""
        assert self.merges, "commit_merged needs the aggregates' merges"
        with self._writing(connection) as conn:
            if deltas:  # rows [[start, key], delta]: the dict's items as they are, one orjson call
                payload = orjson.dumps(list(deltas.items())).decode()
                conn.exec_driver_sql(self._merge_sql, (self.name, size, payload))
                self._reopen(conn, deltas, size)
            if closes:
                shut = [(ws, k, rev + ((ws, k) in deltas)) for (ws, k), rev in closes.items()]
                conn.exec_driver_sql(self._close_sql, (self.name, orjson.dumps(shut).decode()))
            self._finish(conn, marks, expire_before)


# -- Redis ----------------------------------------------------------------------------------------


class RedisWindowStore:
    """Cells in one hash per window (``{prefix}{name}:w:{start}``: key → ``rev|closed|states``),
    a sorted set of the windows holding cells not closed (score: window end), a sorted set of
    every window (for expiry) and a hash of shard marks. ``commit`` is one MULTI/EXEC under WATCH
    of the hashes it rewrites (retried when another writer got there first)."""

    ATTEMPTS = 20

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        prefix: str = "squall:window:",
        merges: list[str] | None = None,
    ):
        self.r = client
        self.merges = merges
        self.base = f"{prefix}{name}:"
        self.open_key, self.all_key, self.marks_key = (
            self.base + "open",
            self.base + "all",
            self.base + "shards",
        )
        self._add_script: Any = None

    def _h(self, ws: int) -> str:
        return f"{self.base}w:{ws}"

    def shards(self) -> dict[str, ShardMark]:
        with redis_errors("window store read"):
            raw = self.r.hgetall(self.marks_key)
        out = {}
        for shard, value in raw.items():
            w, q, sub = orjson.loads(value)
            out[shard.decode() if isinstance(shard, bytes) else shard] = ShardMark(w, int(q), sub)
        return out

    def load(self, cells: list[CellId]) -> dict[CellId, Cell]:
        if not cells:
            return {}
        with redis_errors("window store read"):
            return self._get(self.r, cells)

    def _get(self, client: Any, cells: Iterable[CellId]) -> dict[CellId, Cell]:
        by_window: dict[int, list[str]] = {}
        for ws, key in cells:
            by_window.setdefault(ws, []).append(key)
        pipe = client.pipeline(transaction=False)
        order = list(by_window.items())
        for ws, keys in order:
            pipe.hmget(self._h(ws), keys)
        found: dict[CellId, Cell] = {}
        for (ws, keys), values in zip(order, pipe.execute(), strict=True):
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    found[(ws, key)] = _decode(value)
        return found

    def closable(self, end_before: int) -> dict[CellId, Cell]:
        with redis_errors("window store read"):
            starts = self.r.zrangebyscore(self.open_key, "-inf", end_before)
            if not starts:
                return {}
            pipe = self.r.pipeline(transaction=False)
            for ws in starts:
                pipe.hgetall(self._h(int(ws)))
            found: dict[CellId, Cell] = {}
            for ws, cells in zip(starts, pipe.execute(), strict=True):
                for key, value in cells.items():
                    cell = _decode(value)
                    if not cell.closed:
                        found[(int(ws), key.decode() if isinstance(key, bytes) else key)] = cell
            return found

    def commit(
        self,
        writes: dict[CellId, CellWrite],
        marks: dict[str, ShardMark],
        expire_before: int,
        merge: Any,
        connection: Any = None,
    ) -> None:
        windows = sorted({ws for ws, _ in writes})
        ends = {ws: w.window_end for (ws, _), w in writes.items()}
        with redis_errors("window store write"):
            for _ in range(self.ATTEMPTS):
                with self.r.pipeline(transaction=True) as pipe:
                    try:
                        # always WATCH something: it puts the pipeline in immediate mode for the reads
                        # (a key nobody writes, so that writers of other windows do not conflict)
                        pipe.watch(self.base + "immediate", *[self._h(ws) for ws in windows])
                        stored = self._get(pipe, writes) if writes else {}
                        new: dict[int, dict[str, bytes]] = {}
                        opened: set[int] = set()
                        for cid, w in writes.items():
                            cell = _apply(stored.get(cid), w, merge)
                            new.setdefault(cid[0], {})[cid[1]] = _encode(cell)
                            if not cell.closed:
                                opened.add(cid[0])
                        expired = [
                            int(ws)
                            for ws in pipe.zrangebyscore(self.all_key, "-inf", f"({expire_before}")
                            if pipe.zscore(self.open_key, ws) is None and int(ws) not in new
                        ]
                        pipe.multi()
                        for ws, fields in new.items():
                            pipe.hset(self._h(ws), mapping=fields)
                            pipe.zadd(self.all_key, {str(ws): ends[ws]})
                            if ws in opened:
                                pipe.zadd(self.open_key, {str(ws): ends[ws]})
                        if marks:
                            pipe.hset(
                                self.marks_key,
                                mapping={
                                    s: orjson.dumps([k.watermark, str(k.sequence), k.sub])
                                    for s, k in marks.items()
                                },
                            )
                        for ws in expired:
                            pipe.delete(self._h(ws))
                            pipe.zrem(self.all_key, str(ws))
                        pipe.execute()
                    except redis.WatchError:
                        continue
                try:
                    self._tidy_open([ws for ws in windows if ws not in opened])
                except REDIS_TRANSIENT:
                    pass  # best effort: a stale entry in the open set only costs a look later
                return
        raise TransientError("window store write: another writer kept changing the same windows")

    def commit_merged(
        self,
        deltas: dict[CellId, list[Any]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """Every aggregate with a store merge: one Lua script (atomic, so no WATCH and no retry)
        merges the deltas into the cells, closes the windows emitted whose revision is unchanged (plus one when it added to
        them), saves the shard marks and expires old windows — the layout ``commit`` writes."""
        by_window: dict[int, list[Any]] = {}
        last, keys, ds = None, [], []
        for (ws, key), d in deltas.items():
            if ws != last:  # cells come grouped by window, mostly: one lookup per run
                w = by_window.get(ws)
                if w is None:
                    w = by_window[ws] = [str(ws), str(ws + size), [], [], [], []]
                last, keys, ds = ws, w[2], w[3]
            keys.append(key)
            ds.append(d)
        for cid, rev in closes.items():
            w = by_window.get(cid[0])
            if w is None:
                w = by_window[cid[0]] = [str(cid[0]), str(cid[0] + size), [], [], [], []]
            w[4].append(cid[1])
            w[5].append(rev + (cid in deltas))
        payload = orjson.dumps(
            {
                "k": self.merges,
                "w": list(by_window.values()),
                "m": [
                    [s, orjson.dumps([k.watermark, str(k.sequence), k.sub]).decode()]
                    for s, k in marks.items()
                ],
            }
        )
        with redis_errors("window store write"):
            if self._add_script is None:
                self._add_script = self.r.register_script(_MERGE)
            self._add_script(args=[self.base, str(expire_before), payload])
        closed = [ws for ws, w in by_window.items() if w[4] and not w[2]]
        try:
            self._tidy_open(closed)
        except REDIS_TRANSIENT:
            pass  # best effort: a stale entry in the open set only costs a look later

    def _tidy_open(self, windows: list[int]) -> None:
        """Drop windows whose cells are all closed from the open set, each under WATCH of its
        hash (a writer adding an open cell meanwhile re-adds the window itself)."""
        for ws in windows:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self._h(ws))
                    cells = pipe.hvals(self._h(ws))
                    if cells and not all(_closed(v) for v in cells):
                        continue
                    pipe.multi()
                    pipe.zrem(self.open_key, str(ws))
                    pipe.execute()
                except redis.WatchError:
                    continue  # someone wrote the window: it stays in the open set, checked again later


#: ``RedisWindowStore.commit_merged``: ARGV = key base, expire before (ms), JSON payload
#: ``{"k": merges, "w": [[start, end, add_keys, add_deltas, close_keys, close_revs], …],
#: "m": [[shard, mark]]}``. A cell is ``[rev, closed, states]`` (JSON) as ``_encode`` writes it.
#: Numbers are doubles here: integers exact up to 2^53; other numbers written with 17 digits
#: (cjson's encoder keeps 14), so they come back as the same double — an integral float sum comes
#: back as an integer. Text compares by its bytes (Lua's ``<`` follows the server's locale).
_MERGE = """
local base, expire = ARGV[1], tonumber(ARGV[2])
local p = cjson.decode(ARGV[3])
local kinds, null = p.k, cjson.null
local function before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == 'number' end
  if ta == 'number' then return a < b end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function merge(st, d)
  for j, kind in ipairs(kinds) do
    local a, b = st[j], d[j]
    if kind == 'add' then
      st[j] = a + b
    elseif kind == 'pair' then
      a[1], a[2] = a[1] + b[1], a[2] + b[2]
    elseif b ~= null and (a == null or (kind == 'min' and before(b, a))
                          or (kind == 'max' and before(a, b))) then
      st[j] = b
    end
  end
end
local function enc(v)
  local t = type(v)
  if t == 'number' then
    if v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format('%d', v) end
    return string.format('%.17g', v)
  elseif t == 'table' then
    local parts = {}
    for j = 1, #v do parts[j] = enc(v[j]) end
    return '[' .. table.concat(parts, ',') .. ']'
  elseif v == null then
    return 'null'
  end
  return cjson.encode(v)
end
local function plain(v)  -- what cjson writes exactly: integers below 1e14, text, null
  local t = type(v)
  if t == 'number' then return v == math.floor(v) and v > -1e14 and v < 1e14 end
  if t == 'table' then
    for j = 1, #v do if not plain(v[j]) then return false end end
  end
  return true
end
local function put(h, key, cell)
  if plain(cell[3]) then  -- cjson's encoder in C: counts, whole sums
    redis.call('HSET', h, key, cjson.encode(cell))
  else
    redis.call('HSET', h, key, '[' .. enc(cell[1]) .. ',' .. tostring(cell[2]) .. ',' .. enc(cell[3]) .. ']')
  end
end
local written = {}
for _, w in ipairs(p.w) do
  local ws, we, keys, ds, cks, crevs = w[1], w[2], w[3], w[4], w[5], w[6]
  local h = base .. 'w:' .. ws
  written[ws] = true
  for i, key in ipairs(keys) do
    local raw = redis.call('HGET', h, key)
    local cell
    if raw then
      cell = cjson.decode(raw)
      merge(cell[3], ds[i])
      cell[1] = cell[1] + 1
      cell[2] = false
    else
      cell = {1, false, ds[i]}
    end
    put(h, key, cell)
  end
  for i, key in ipairs(cks) do
    local raw = redis.call('HGET', h, key)
    if raw then
      local cell = cjson.decode(raw)
      if cell[1] == crevs[i] then
        cell[1] = cell[1] + 1
        cell[2] = true
        put(h, key, cell)
      end
    end
  end
  redis.call('ZADD', base .. 'all', we, ws)
  if #keys > 0 then redis.call('ZADD', base .. 'open', we, ws) end
end
for _, m in ipairs(p.m) do redis.call('HSET', base .. 'shards', m[1], m[2]) end
for _, ws in ipairs(redis.call('ZRANGEBYSCORE', base .. 'all', '-inf', '(' .. expire)) do
  if not written[ws] and not redis.call('ZSCORE', base .. 'open', ws) then
    redis.call('DEL', base .. 'w:' .. ws)
    redis.call('ZREM', base .. 'all', ws)
  end
end
return 1
"""


def _encode(cell: Cell) -> bytes:
    return orjson.dumps([cell.rev, cell.closed, cell.states])


def _closed(value: bytes) -> bool:
    """A stored cell's closed flag without decoding its states: ``[rev,true,…`` (orjson and the
    Lua script's cjson both write it so)."""
    return value.split(b",", 2)[1] == b"true"


def _decode(value: bytes) -> Cell:
    rev, closed, states = orjson.loads(value)
    return Cell(states, rev, closed)
