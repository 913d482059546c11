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
under Lambda) never lose an update. When every aggregate is a count, ``commit_counts`` instead
lets the store add the deltas itself (SQL ``ON CONFLICT DO UPDATE``, a Redis Lua script): no
read, no lock before the write. A cell is marked closed only when the revision it read
while processing is still the revision at commit: else someone added to it meanwhile, and it
is closed (and emitted again, complete) by a later batch. Dependency failures →
``TransientError``.

Size (~730 lines): the same window-state protocol on three stores (SQLite, PostgreSQL, Redis),
kept side by side so that their locking and merge rules can be compared.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from squall.errors import TransientError
from squall.topology.resources import redis_errors, redis_transient_errors
from squall.topology.sql import store_errors

SELECT_CHUNK = 500
#: PostgreSQL: the temporary table (per connection, emptied at commit) count deltas are COPYed to
STAGE = "squall_window_delta"
ARRAY_CHUNK = 10_000
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

    def commit_counts(
        self,
        deltas: dict[CellId, list[int]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """``commit`` when every aggregate is a count: the store adds the deltas itself, without
        the cells being read first; ``size``: the window length (a cell's end is its start plus
        it); ``closes``: cell → revision read when its result was emitted."""
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


class SqlWindowStore:
    """Cells and shard marks in two SQL tables (created if missing)."""

    def __init__(
        self, engine: sa.Engine, name: str, table: str = "squall_windows", counts: int = 0
    ):
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the window store needs SQLite or PostgreSQL, not {dialect}")
        self.engine, self.name = engine, name
        self.cells, self.marks = tables(table)
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        self._lock = dialect == "postgresql"
        self._created = False
        #: every aggregate is a count (``counts`` of them): a commit adds the deltas in SQL,
        #: without reading the cells (see ``_add``)
        self.counts = counts
        if counts:
            self._add_sql, self._close_sql = self._additive_sql(dialect == "postgresql")

    def _additive_sql(self, pg: bool) -> tuple[str, str]:
        """The upsert adding count deltas to the stored states, and the conditional close."""
        t = self.cells.name
        if pg:
            sums = ", ".join(
                f"(c.state::json->>{i})::bigint + (excluded.state::json->>{i})::bigint"
                for i in range(self.counts)
            )
            self._stage_sql = (
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} (window_start bigint, key text, "
                "window_end bigint, state text) ON COMMIT DELETE ROWS"
            )
            add = (
                f'INSERT INTO "{t}" AS c (name, window_start, key, window_end, state, rev, closed) '
                f"SELECT %(name)s, window_start, key, window_end, state, 1, false FROM {STAGE} "
                "ORDER BY window_start, key ON CONFLICT (name, window_start, key) DO UPDATE SET "
                f"state = json_build_array({sums})::text, rev = c.rev + 1, closed = false"
            )
            close = (
                f'UPDATE "{t}" AS c SET closed = true, rev = c.rev + 1 FROM (VALUES %s) '
                "AS v(name, window_start, key, rev) WHERE c.name = v.name AND "
                "c.window_start = v.window_start AND c.key = v.key AND c.rev = v.rev"
            )
            return add, close
        sums = ", ".join(
            f"json_extract(\"{t}\".state, '$[{i}]') + json_extract(excluded.state, '$[{i}]')"
            for i in range(self.counts)
        )
        add = (
            f'INSERT INTO "{t}" (name, window_start, key, window_end, state, rev, closed) '
            "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (name, window_start, key) DO UPDATE SET "
            f'state = json_array({sums}), rev = "{t}".rev + 1, closed = excluded.closed'
        )
        close = (
            f'UPDATE "{t}" SET closed = 1, rev = rev + 1 '
            "WHERE name = ? AND window_start = ? AND key = ? AND rev = ?"
        )
        return add, close

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
        t = self.cells
        by_window: dict[int, list[str]] = {}
        for ws, key in cells:
            by_window.setdefault(ws, []).append(key)
        found: dict[CellId, Cell] = {}
        for ws, keys in sorted(by_window.items()):
            keys.sort()  # one lock order for every writer: no deadlocks between shards
            # PostgreSQL: one array parameter per 10,000 keys; SQLite: IN (…) under its parameter limit
            chunk = ARRAY_CHUNK if self._lock else SELECT_CHUNK
            for i in range(0, len(keys), chunk):
                part = keys[i : i + chunk]
                match = (
                    t.c.key
                    == sa.any_(sa.bindparam("keys", part, type_=postgresql.ARRAY(sa.String)))
                    if self._lock
                    else t.c.key.in_(part)
                )
                q = (
                    sa.select(t.c.key, t.c.state, t.c.rev, t.c.closed)
                    .where(t.c.name == self.name, t.c.window_start == ws, match)
                    .order_by(t.c.key)
                )
                if lock and self._lock:
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
        with store_errors("window store write"):
            self._ensure()
            if connection is not None:
                self._commit(connection, writes, marks, expire_before, merge)
            else:
                with self.engine.begin() as conn:
                    self._commit(conn, writes, marks, expire_before, merge)

    def _commit(
        self,
        conn: sa.Connection,
        writes: dict[CellId, CellWrite],
        marks: dict[str, ShardMark],
        expire_before: int,
        merge: Any,
    ) -> None:
        t, m = self.cells, self.marks
        if writes:
            stored = self._select(conn, writes, lock=True)
            rows = []
            for cid in sorted(writes):
                w = writes[cid]
                cell = _apply(stored.get(cid), w, merge)
                rows.append(
                    {
                        "name": self.name,
                        "window_start": cid[0],
                        "key": cid[1],
                        "window_end": w.window_end,
                        "state": orjson.dumps(cell.states).decode(),
                        "rev": cell.rev,
                        "closed": cell.closed,
                    }
                )
            if (
                not self._lock
            ):  # SQLite: the driver's executemany, without SQLAlchemy's per-row work
                conn.exec_driver_sql(
                    f'INSERT INTO "{t.name}" (name, window_start, key, window_end, state, rev, closed) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, window_start, key) DO UPDATE SET "
                    "state = excluded.state, rev = excluded.rev, closed = excluded.closed, "
                    "window_end = excluded.window_end",
                    [
                        (
                            r["name"],
                            r["window_start"],
                            r["key"],
                            r["window_end"],
                            r["state"],
                            r["rev"],
                            int(r["closed"]),
                        )
                        for r in rows
                    ],
                )
            else:  # PostgreSQL: multi-row VALUES pages (psycopg2's executemany sends one row at a time)
                from psycopg2.extras import execute_values

                with conn.connection.driver_connection.cursor() as cur:
                    execute_values(
                        cur,
                        f'INSERT INTO "{t.name}" (name, window_start, key, window_end, state, rev, closed) '
                        "VALUES %s ON CONFLICT (name, window_start, key) DO UPDATE SET "
                        "state = excluded.state, rev = excluded.rev, closed = excluded.closed, "
                        "window_end = excluded.window_end",
                        [
                            (
                                r["name"],
                                r["window_start"],
                                r["key"],
                                r["window_end"],
                                r["state"],
                                r["rev"],
                                r["closed"],
                            )
                            for r in rows
                        ],
                        page_size=1000,
                    )
        if marks:
            stmt = self._insert(m)
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

    def commit_counts(
        self,
        deltas: dict[CellId, list[int]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """``commit`` when every aggregate is a count: the deltas are *added* to the stored
        states by the database (one upsert; no read, no lock taken before: each row is locked by
        its own upsert, which adds to whatever another writer committed). Then each window in
        ``closes`` (cell → the revision read when its result was emitted) is closed if its
        revision is still that one (plus one when this commit added to it)."""
        with store_errors("window store write"):
            self._ensure()
            if connection is not None:
                self._commit_counts(connection, deltas, size, closes)
                self._commit(connection, {}, marks, expire_before, None)
            else:
                with self.engine.begin() as conn:
                    self._commit_counts(conn, deltas, size, closes)
                    self._commit(conn, {}, marks, expire_before, None)

    def _commit_counts(
        self,
        conn: sa.Connection,
        deltas: dict[CellId, list[int]],
        size: int,
        closes: dict[CellId, int],
    ) -> None:
        name, dumps = self.name, orjson.dumps
        shut = [(name, ws, key, rev + ((ws, key) in deltas)) for (ws, key), rev in closes.items()]
        if not self._lock:  # SQLite: the driver's executemany (the database lock orders writers)
            if deltas:
                conn.exec_driver_sql(
                    self._add_sql,
                    [
                        (name, cid[0], cid[1], cid[0] + size, dumps(d).decode(), 0)
                        for cid, d in deltas.items()
                    ],
                )
            if shut:
                conn.exec_driver_sql(self._close_sql, shut)
            return
        # PostgreSQL: COPY the deltas into a temporary table, then one INSERT … SELECT in key order
        # (one lock order for every writer: no deadlocks between shards)
        from psycopg2.extras import execute_values

        with conn.connection.driver_connection.cursor() as cur:
            if deltas:
                cur.execute(self._stage_sql)
                buf = io.StringIO()
                write = buf.write
                for cid, d in deltas.items():
                    ws, key = cid
                    if "\\" in key:  # COPY's text format: JSON text has no tab or newline, only \
                        key = key.replace("\\", "\\\\")
                    write(f"{ws}\t{key}\t{ws + size}\t{dumps(d).decode()}\n")
                buf.seek(0)
                cur.copy_expert(f"COPY {STAGE} FROM STDIN", buf)
                cur.execute(self._add_sql, {"name": name})
            if shut:
                execute_values(cur, self._close_sql, shut, page_size=2000)


# -- Redis ----------------------------------------------------------------------------------------


class RedisWindowStore:
    """Cells in one hash per window (``{prefix}{name}:w:{start}``: key → ``rev|closed|states``),
    a sorted set of the windows holding cells not closed (score: window end), a sorted set of
    every window (for expiry) and a hash of shard marks. ``commit`` is one MULTI/EXEC under WATCH
    of the hashes it rewrites (retried when another writer got there first)."""

    ATTEMPTS = 20

    def __init__(self, client: redis.Redis, name: str, prefix: str = "squall:window:"):
        self.r = client
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

    def commit_counts(
        self,
        deltas: dict[CellId, list[int]],
        size: int,
        closes: dict[CellId, int],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
    ) -> None:
        """Counts only: one Lua script (atomic, so no WATCH and no retry) adds the deltas to the
        cells, closes the windows emitted whose revision is unchanged (plus one when it added to
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
                "w": list(by_window.values()),
                "m": [
                    [s, orjson.dumps([k.watermark, str(k.sequence), k.sub]).decode()]
                    for s, k in marks.items()
                ],
            }
        )
        with redis_errors("window store write"):
            if self._add_script is None:
                self._add_script = self.r.register_script(_ADD_COUNTS)
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


#: ``RedisWindowStore.commit_counts``: ARGV = key base, expire before (ms), JSON payload
#: ``{"w": [[start, end, add_keys, add_deltas, close_keys, close_revs], …], "m": [[shard, mark]]}``.
#: A cell is ``[rev, closed, states]`` (JSON) as ``_encode`` writes it; counts stay exact below 1e14
#: (cjson writes numbers with 14 significant digits).
_ADD_COUNTS = """
local base, expire = ARGV[1], tonumber(ARGV[2])
local p = cjson.decode(ARGV[3])
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
      local st, d = cell[3], ds[i]
      for j = 1, #d do st[j] = st[j] + d[j] end
      cell[1] = cell[1] + 1
      cell[2] = false
    else
      cell = {1, false, ds[i]}
    end
    redis.call('HSET', h, key, cjson.encode(cell))
  end
  for i, key in ipairs(cks) do
    local raw = redis.call('HGET', h, key)
    if raw then
      local cell = cjson.decode(raw)
      if cell[1] == crevs[i] then
        cell[1] = cell[1] + 1
        cell[2] = true
        redis.call('HSET', h, key, cjson.encode(cell))
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
