"""Where the window bolt's state lives: an append-only log of deltas per window, in SQL or Redis.

Per bolt (``name``) and window (its start), the store holds *rows*:

- *deltas*: one per batch (and writer) that added to the window — a JSON body ``{key: states}``
  of the batch's partial aggregates, under a fresh random id. Appending never conflicts with
  another writer: no read and no lock before it;
- the *snapshot* (id ``s``): every key's states as of the window's last close, i.e. the final
  results already emitted;
- the *head* (id ``h``): a revision number, bumped by every *replace*.

A window is *open* while it has deltas. A **replace** swaps rows the bolt read for one row it
folded from them: closing a window folds the snapshot, its deltas and the batch's own delta
into a new snapshot and deletes those deltas; a *compaction* folds many deltas (and the batch's
own) into one. A replace happens only if the head's revision is still the one read (every
replacer bumps it, so two replacers of one window never both win, and a delta read is still
there); else the batch's own delta is appended instead, and the window stays open and is
emitted again, complete, later. A delta appended by another writer meanwhile is not in the
replace: it stays, so the window is open again — the rule the cells' revisions kept before.

A commit (one transaction, or one Redis script) saves the shard marks (watermark and last
counted position per shard; the bolt keeps its highest watermark among them, under a name no
shard has) — only if each is still as the batch read it, else it writes nothing (``MarkMoved``:
another process counted records of that shard meanwhile) —, the appends, the replaces and the commit's token (a retry of a commit that went
through, its answer lost, writes nothing), deletes windows closed long ago (never one this
commit touched) and the shard marks the bolt found prunable (only while still as low as it saw
them), and saves or deletes the *decisions* of a partial commit (how the records that come
again were decided: ``<table>_decided``, a hash in Redis).
SQLite and PostgreSQL share one path (SQLAlchemy Core); the head's conditional bump is their
serialization point (PostgreSQL's row lock, SQLite's database lock). Redis: a hash per window
and one Lua script per commit (atomic: it checks before it writes). Dependency failures →
``TransientError``.

Size (~875 lines): the same log protocol on SQL (SQLite and PostgreSQL, one path) and Redis
(its commit a Lua script), kept side by side so that their replace rules can be compared.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from squall.errors import StaleState, TransientError
from squall.topology.resources import redis_errors
from squall.topology.sql import begin, store_errors

HEAD, SNAPSHOT = "h", "s"
#: The shard-mark rows of the SQL stores' commit tokens: this prefix, then a process's store id.
TOKEN_ROW = "~token:"


class MarkMoved(StaleState):
    """A lineage's mark moved since the batch read it: another process (a KCL worker whose lease
    this one took, an SQS message delivered twice at once) committed records of it meanwhile.
    Nothing of the commit is written; the batch runs again from the marks as they are, so what
    the other counted is recognised as replays, not counted twice."""

    def __init__(self, lineage: str):
        super().__init__(
            f"window store write: the mark of {lineage.replace(chr(31), ' ')!r} moved since it "
            "was read (another process committed its records); read again"
        )
        self.lineage = lineage


@dataclass(slots=True)
class ShardMark:
    """A shard's watermark (ms) and the position of its last record counted in the state."""

    watermark: int
    sequence: int
    sub: int = 0


@dataclass(slots=True)
class WindowRows:
    """A window's rows as read: the head's revision (None: no head yet), the snapshot's body and
    the deltas' ids and bodies (JSON text: the bolt parses them)."""

    rev: int | None = None
    snapshot: str | None = None
    ids: list[str] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Replace:
    """Swap the deltas ``ids`` (read at head revision ``rev``) for ``snapshot`` (a new snapshot,
    on a close) and/or ``delta`` (one folded delta, on a compaction), if the head is unchanged;
    else append ``fallback`` (the batch's own delta) as a delta — or, on a close that lost to
    another close whose snapshot differs from this one's (what this close emitted may be an older
    view), ``stale`` (the fallback naming every key emitted, so they are emitted again)."""

    window_end: int
    rev: int | None
    ids: list[str]
    snapshot: str | None
    delta: str | None
    fallback: str | None
    stale: str | None = None


@dataclass(slots=True)
class Prune:
    """Shard marks to delete at a commit: each of ``shards`` only while its stored watermark is
    at most ``cutoff`` — another process may have raised it since the bolt read it (a newer
    mark, which must stay). The bolt chooses them (window.py: idle, and their windows closed)."""

    cutoff: int
    shards: list[str]
    #: saved decisions to delete (lineage → the body read: deleted only while still the same)
    decided: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Retire:
    """Marks and decisions saved under a shard id alone (before lineages named their stream),
    to delete at a commit that saves the mark of the lineage taking them over (window.py
    ``_inherit``): each only while still as read (an older squall still running may have
    written it since)."""

    marks: dict[str, ShardMark] = field(default_factory=dict)
    decided: dict[str, str] = field(default_factory=dict)


class WindowStore(Protocol):
    def shards(self) -> dict[str, ShardMark]: ...

    def read_marks(self) -> tuple[dict[str, ShardMark], dict[str, str]]:
        """The shard marks, and the *decisions* saved by partial commits: lineage → JSON list of
        ``[sequence, sub, closed_before]`` of its records to come again (see window.py)."""
        ...

    def open_windows(self) -> dict[int, tuple[int, int]]:
        """Windows holding deltas: start → (end, number of deltas)."""
        ...

    def read(self, windows: list[int]) -> dict[int, WindowRows]: ...

    def commit(
        self,
        appends: dict[int, tuple[int, str]],
        replaces: dict[int, Replace],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
        token: str | None = None,
        prune: Prune | None = None,
        decided: dict[str, str | None] | None = None,
        retire: Retire | None = None,
        expect: dict[str, tuple[int, int] | None] | None = None,
    ) -> None:
        """Atomically: append a delta per window (start → (end, body)), do the replaces, save the
        shard marks, delete windows without deltas that ended before ``expire_before``, and delete
        the marks ``prune`` names whose stored watermark is still at most its ``cutoff``. ``token``
        names the staged batch; ``decided`` sets (or, None, deletes) lineages' decisions; ``retire``
        deletes old names' marks and decisions while unchanged. A commit retried with the same token after the first went through
        (its reply or its COMMIT's acknowledgment lost) changes nothing. ``expect``: per lineage
        whose mark this commit moves, its (sequence, sub) as the batch read it (None: no mark);
        if another process moved or created it since (pruning it is no move), nothing is written
        and ``MarkMoved`` is raised — that process counted records the batch did not know of."""
        ...


def new_id() -> str:
    """A delta's id: the time (ns, hex) then random bits — read in this order, deltas fold in the
    order they were written."""
    return f"{time.time_ns():x}{uuid.uuid4().hex[:16]}"


def first_rev() -> int:
    """A new head's revision: random, so a writer holding a read of an earlier head of the same
    window (deleted as expired meanwhile, then created again) cannot match it by chance (1 in 2³⁰)."""
    return random.randrange(1, 2**30)


# -- SQL ------------------------------------------------------------------------------------------


def tables(prefix: str) -> tuple[sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData()
    log = sa.Table(
        f"{prefix}_log",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("rev", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
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
    # (added 6 December: created when missing, like the others — a store of an earlier version
    # gets it at its first use)
    decided = sa.Table(
        f"{prefix}_decided",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("shard", sa.String(200), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    return log, shards, decided


class SqlWindowStore:
    """The log and the shard marks in two SQL tables (``<table>_log``, ``<table>_shards``;
    created if missing), on SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine, name: str, table: str = "squall_windows"):
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the window store needs SQLite or PostgreSQL, not {dialect}")
        self.engine, self.name = engine, name
        self.log, self.marks, self.decided = tables(table)
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        self._greatest = sa.func.max if dialect == "sqlite" else sa.func.greatest
        self._created = False
        self.new_token_row()
        self._commits = 0

    def new_token_row(self) -> None:
        """This store's own row of its last commit's token, among the shard marks (see commit).
        Also after a restore from a snapshot (Lambda SnapStart): copies of one snapshot sharing
        the row would overwrite each other's token (a commit retried after another copy's
        commit would be written twice) and wait on each other's row lock."""
        self._token_row = TOKEN_ROW + uuid.uuid4().hex

    def _ensure(self) -> None:
        if not self._created:
            # IF NOT EXISTS, not check-then-create: two writers starting together (Lambda cold
            # starts, shards in parallel) would both see no table and one would fail. PostgreSQL
            # can still refuse the loser of a truly simultaneous CREATE: try again.
            for attempt in range(3):
                try:
                    with self.engine.begin() as conn:
                        for table in self.log.metadata.sorted_tables:
                            conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                    break
                except sa.exc.DatabaseError:
                    if attempt == 2:
                        raise
            self._created = True

    def shards(self) -> dict[str, ShardMark]:
        return self.read_marks()[0]

    def read_marks(self) -> tuple[dict[str, ShardMark], dict[str, str]]:
        m, d = self.marks, self.decided
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(m.c.shard, m.c.watermark, m.c.sequence, m.c.sub).where(
                        m.c.name == self.name
                    )
                )
                marks = {
                    s: ShardMark(w, int(q), sub)
                    for s, w, q, sub in rows
                    if not s.startswith(TOKEN_ROW)
                }
                q = sa.select(d.c.shard, d.c.body).where(d.c.name == self.name)
                return marks, dict(conn.execute(q).all())

    def _is_delta(self) -> Any:
        return self.log.c.id.not_in([HEAD, SNAPSHOT])

    def open_windows(self) -> dict[int, tuple[int, int]]:
        t = self.log
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                q = (
                    sa.select(t.c.window_start, sa.func.max(t.c.window_end), sa.func.count())
                    .where(t.c.name == self.name, self._is_delta())
                    .group_by(t.c.window_start)
                )
                return {ws: (end, n) for ws, end, n in conn.execute(q)}

    def read(self, windows: list[int]) -> dict[int, WindowRows]:
        t = self.log
        out = {ws: WindowRows() for ws in windows}
        if not windows:
            return out
        with store_errors("window store read"):
            self._ensure()
            with self.engine.connect() as conn:
                q = (
                    sa.select(t.c.window_start, t.c.id, t.c.rev, t.c.body)
                    .where(t.c.name == self.name, t.c.window_start.in_(windows))
                    .order_by(t.c.window_start, t.c.id)
                )
                for ws, id_, rev, body in conn.execute(q):
                    _add(out[ws], id_, rev, body)
        return out

    def commit(
        self,
        appends: dict[int, tuple[int, str]],
        replaces: dict[int, Replace],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
        token: str | None = None,
        prune: Prune | None = None,
        decided: dict[str, str | None] | None = None,
        retire: Retire | None = None,
        expect: dict[str, tuple[int, int] | None] | None = None,
    ) -> None:
        t, m, name = self.log, self.marks, self.name
        with self._writing(connection) as conn:
            if token is not None:
                # This store's last committed token: equal when a commit went through but its
                # acknowledgment was lost and the engine retries it — nothing to write again.
                last = conn.execute(
                    sa.select(m.c.sequence).where(m.c.name == name, m.c.shard == self._token_row)
                ).scalar()
                if last == token:
                    return
            if expect:
                self._check_marks(conn, expect, marks)
            rows = [
                {"name": name, "window_start": ws, "id": new_id(), "window_end": end, "rev": 0,
                 "body": body}
                for ws, (end, body) in appends.items()
            ]  # fmt: skip
            # windows in one order: two replacers of several windows never wait on each other in a cycle
            for ws, r in sorted(replaces.items()):
                if self._bump(conn, ws, r):
                    if r.ids:
                        gone = conn.execute(
                            sa.delete(t).where(
                                t.c.name == name, t.c.window_start == ws, t.c.id.in_(r.ids)
                            )
                        ).rowcount
                        if gone != len(r.ids):  # (only after the window expired meanwhile)
                            raise TransientError("window store write: deltas gone; read again")
                    if r.snapshot is not None:
                        stmt = self._insert(t).values(
                            name=name,
                            window_start=ws,
                            id=SNAPSHOT,
                            window_end=r.window_end,
                            rev=0,
                            body=r.snapshot,
                        )
                        conn.execute(
                            stmt.on_conflict_do_update(
                                index_elements=[t.c.name, t.c.window_start, t.c.id],
                                set_={"body": stmt.excluded.body},
                            )
                        )
                    body = r.delta
                else:
                    body = r.fallback
                    if r.stale is not None and r.snapshot is not None:
                        # lost to another close: its keys' results differ from what this close
                        # emitted only if the snapshot it left differs (no snapshot: the window
                        # expired since — nothing to emit again)
                        stored = conn.execute(
                            sa.select(t.c.body).where(
                                t.c.name == name, t.c.window_start == ws, t.c.id == SNAPSHOT
                            )
                        ).scalar()
                        if stored is not None and stored != r.snapshot:
                            body = r.stale
                if body is not None:
                    rows.append(
                        {"name": name, "window_start": ws, "id": new_id(),
                         "window_end": r.window_end, "rev": 0, "body": body}
                    )  # fmt: skip
            if rows:
                conn.execute(sa.insert(t), rows)
            if marks:
                m = self.marks
                stmt = self._insert(m)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[m.c.name, m.c.shard],
                    # a watermark never goes back (another process's older view commits later)
                    set_={
                        "watermark": self._greatest(m.c.watermark, stmt.excluded.watermark),
                        "sequence": stmt.excluded.sequence,
                        "sub": stmt.excluded.sub,
                    },
                )
                conn.execute(
                    stmt,
                    [
                        {"name": name, "shard": s, "watermark": k.watermark,
                         "sequence": str(k.sequence), "sub": k.sub}
                        for s, k in sorted(marks.items())
                    ],
                )  # fmt: skip
            if prune is not None:
                # Conditional: a mark another process raised above the cutoff since it was read
                # stays (PostgreSQL re-checks the condition on the row a concurrent commit wrote,
                # after waiting for it; SQLite has one writer at a time).
                for i in range(0, len(prune.shards), 500):
                    conn.execute(
                        sa.delete(m).where(
                            m.c.name == name,
                            m.c.shard.in_(prune.shards[i : i + 500]),
                            m.c.watermark <= prune.cutoff,
                        )
                    )
            d = self.decided
            for shard, k in sorted(retire.marks.items() if retire is not None else ()):
                conn.execute(
                    sa.delete(m).where(
                        m.c.name == name,
                        m.c.shard == shard,
                        m.c.watermark == k.watermark,
                        m.c.sequence == str(k.sequence),
                        m.c.sub == k.sub,
                    )
                )
            for shard, body in sorted(_decided_gone(prune, retire).items()):
                conn.execute(
                    sa.delete(d).where(d.c.name == name, d.c.shard == shard, d.c.body == body)
                )
            for shard, body in sorted((decided or {}).items()):
                if body is None:
                    conn.execute(sa.delete(d).where(d.c.name == name, d.c.shard == shard))
                else:
                    stmt = self._insert(d).values(name=name, shard=shard, body=body)
                    conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=[d.c.name, d.c.shard], set_={"body": body}
                        )
                    )
            if token is not None:
                now = int(time.time() * 1000)
                stmt = self._insert(m)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[m.c.name, m.c.shard],
                        set_={"watermark": stmt.excluded.watermark, "sequence": token},
                    ),
                    {"name": name, "shard": self._token_row, "watermark": now,
                     "sequence": token, "sub": 0},
                )  # fmt: skip
                if self._commits % 1000 == 0:  # rows of processes gone for a day (Lambda)
                    conn.execute(
                        sa.delete(m).where(
                            m.c.name == name,
                            m.c.shard.startswith(TOKEN_ROW),
                            m.c.watermark < now - 86_400_000,
                        )
                    )
                self._commits += 1
            # Never a window this commit touched (as the Redis script): a window closed here keeps
            # its snapshot at least until a later commit, so a delta another writer appends
            # meanwhile (its view of the watermark older) is folded with it, not alone.
            still_open = sa.select(t.c.window_start).where(t.c.name == name, self._is_delta())
            touched = sorted(replaces.keys() | appends.keys())
            conn.execute(
                sa.delete(t).where(
                    t.c.name == name,
                    t.c.window_end < expire_before,
                    t.c.window_start.not_in(still_open),
                    *([t.c.window_start.not_in(touched)] if touched else []),
                )
            )

    def _check_marks(
        self,
        conn: sa.Connection,
        expect: dict[str, tuple[int, int] | None],
        marks: dict[str, ShardMark],
    ) -> None:
        """Raise ``MarkMoved`` unless every lineage's mark is still as read (``expect``) or
        gone (pruned meanwhile: a prune counts nothing): the marks held are locked (PostgreSQL
        re-reads a row another transaction changed, after waiting for it; SQLite has one writer
        at a time), and the missing ones are inserted only where none exists yet — two first
        commits of one lineage never both go through."""
        m, name = self.marks, self.name
        held = sorted(s for s, k in expect.items() if k is not None)
        new = sorted(s for s, k in expect.items() if k is None)
        for i in range(0, len(held), 500):
            part = held[i : i + 500]
            q = (
                sa.select(m.c.shard, m.c.sequence, m.c.sub)
                .where(m.c.name == name, m.c.shard.in_(part))
                .order_by(m.c.shard)
                .with_for_update()
            )
            stored = {s: (int(q_), sub) for s, q_, sub in conn.execute(q)}
            for s in part:
                if s not in stored:
                    new.append(s)
                elif stored[s] != expect[s]:
                    raise MarkMoved(s)
        for i in range(0, len(new), 500):
            part = new[i : i + 500]
            rows = [
                {"name": name, "shard": s, "watermark": marks[s].watermark,
                 "sequence": str(marks[s].sequence), "sub": marks[s].sub}
                for s in part
            ]  # fmt: skip
            stmt = (
                self._insert(m)
                .values(rows)
                .on_conflict_do_nothing(index_elements=[m.c.name, m.c.shard])
            )
            made = set(conn.execute(stmt.returning(m.c.shard)).scalars())
            for s in part:
                if s not in made:
                    raise MarkMoved(s)

    def _bump(self, conn: sa.Connection, ws: int, r: Replace) -> bool:
        """Bump the window's head if it is still at revision ``r.rev``: this replace wins. (On
        PostgreSQL the statement waits for another replacer's transaction, then sees its bump.)"""
        t = self.log
        if r.rev is None:
            stmt = self._insert(t).values(
                name=self.name,
                window_start=ws,
                id=HEAD,
                window_end=r.window_end,
                rev=first_rev(),
                body="",
            )
            return conn.execute(stmt.on_conflict_do_nothing()).rowcount == 1
        return (
            conn.execute(
                sa.update(t)
                .where(
                    t.c.name == self.name,
                    t.c.window_start == ws,
                    t.c.id == HEAD,
                    t.c.rev == r.rev,
                )
                .values(rev=t.c.rev + 1)
            ).rowcount
            == 1
        )

    @contextmanager
    def _writing(self, connection: sa.Connection | None) -> Iterator[sa.Connection]:
        """The connection of a commit: the engine's transaction when it shares it, else ours."""
        with store_errors("window store write"):
            self._ensure()
            if connection is not None:
                self._write_lock(connection)
                yield connection
            else:
                with begin(self.engine) as conn:  # a transaction also on an autocommit engine
                    self._write_lock(conn)
                    yield conn

    def _write_lock(self, conn: sa.Connection) -> None:
        """SQLite: the commit's reads (its token, the marks it checks) in the write's
        transaction. The driver begins one only at the first write, so a read before it let
        another process commit the same lineage's mark between the check and the write: both
        commits went through (records counted twice). BEGIN IMMEDIATE takes the write lock
        first; inside a transaction already, WAL refuses a write from a stale snapshot."""
        if conn.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            if not raw.in_transaction:
                raw.execute("BEGIN IMMEDIATE")


def _decided_gone(prune: Prune | None, retire: Retire | None) -> dict[str, str]:
    """Decisions to delete while still as read: the prune's, and old names' (``retire``)."""
    return {**(prune.decided if prune else {}), **(retire.decided if retire else {})}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _add(rows: WindowRows, id_: str, rev: Any, body: Any) -> None:
    if isinstance(body, bytes):
        body = body.decode()
    if id_ == HEAD:
        rows.rev = int(rev)
    elif id_ == SNAPSHOT:
        rows.snapshot = body
    else:
        rows.ids.append(id_)
        rows.deltas.append(body)


# -- Redis ----------------------------------------------------------------------------------------


class RedisWindowStore:
    """A hash per window (``{prefix}{name}:w:{start}``: row id → body; the head's body is its
    revision), a sorted set of the windows holding deltas (score: window end), one of every
    window (for expiry) and a hash of shard marks. A commit is one Lua script: atomic, so it
    checks the heads before it writes anything (a script is not rolled back on an error)."""

    def __init__(self, client: redis.Redis, name: str, prefix: str = "squall:window:"):
        self.r = client
        self.base = f"{prefix}{name}:"
        self.open_key, self.marks_key = self.base + "open", self.base + "shards"
        self.decided_key = self.base + "decided"
        self._script: Any = None
        self._layout_checked = False

    def _h(self, ws: int) -> str:
        return f"{self.base}w:{ws}"

    def _set_aside_cells(self) -> None:
        """Once per process, before the first read: move the cells squall kept before the log
        layout (same ``w:<start>`` hashes, a field per key) to ``cells:<start>``, unread, as the
        SQL stores leave the old ``<table>``; read as log rows, they failed every batch."""
        if not self._layout_checked:
            with redis_errors("window store read", keys_are_records=False):
                self.r.eval(_SET_ASIDE_CELLS, 0, self.base)
            self._layout_checked = True

    def shards(self) -> dict[str, ShardMark]:
        return self.read_marks()[0]

    def read_marks(self) -> tuple[dict[str, ShardMark], dict[str, str]]:
        self._set_aside_cells()
        with redis_errors("window store read", keys_are_records=False):
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.marks_key)
            pipe.hgetall(self.decided_key)
            raw, dec = pipe.execute()
        out = {}
        for shard, value in raw.items():
            w, q, sub = orjson.loads(value)
            out[shard.decode() if isinstance(shard, bytes) else shard] = ShardMark(w, int(q), sub)
        return out, {_text(k): _text(v) for k, v in dec.items()}

    def open_windows(self) -> dict[int, tuple[int, int]]:
        self._set_aside_cells()
        with redis_errors("window store read", keys_are_records=False):
            found = self.r.zrange(self.open_key, 0, -1, withscores=True)
            if not found:
                return {}
            pipe = self.r.pipeline(transaction=False)
            for ws, _ in found:
                pipe.hlen(self._h(int(ws)))
                pipe.hexists(self._h(int(ws)), HEAD)
                pipe.hexists(self._h(int(ws)), SNAPSHOT)
            n = pipe.execute()
            return {
                int(ws): (int(end), n[3 * i] - n[3 * i + 1] - n[3 * i + 2])
                for i, (ws, end) in enumerate(found)
            }

    def read(self, windows: list[int]) -> dict[int, WindowRows]:
        out = {ws: WindowRows() for ws in windows}
        if not windows:
            return out
        self._set_aside_cells()
        with redis_errors("window store read", keys_are_records=False):
            pipe = self.r.pipeline(transaction=False)
            for ws in windows:
                pipe.hgetall(self._h(ws))
            for ws, fields in zip(windows, pipe.execute(), strict=True):
                for id_, body in sorted(fields.items()):
                    id_ = id_.decode() if isinstance(id_, bytes) else id_
                    _add(out[ws], id_, body if id_ == HEAD else None, body)
        return out

    def commit(
        self,
        appends: dict[int, tuple[int, str]],
        replaces: dict[int, Replace],
        marks: dict[str, ShardMark],
        expire_before: int,
        connection: Any = None,
        token: str | None = None,
        prune: Prune | None = None,
        decided: dict[str, str | None] | None = None,
        retire: Retire | None = None,
        expect: dict[str, tuple[int, int] | None] | None = None,
    ) -> None:
        # bodies travel as their own arguments (never inside the JSON header: no escaping)
        args: list[Any] = [self.base, str(expire_before), "", token or ""]

        def arg(body: str | None) -> int:
            if body is None:
                return 0
            args.append(body)
            return len(args)

        header = {
            "a": [[str(ws), end, new_id(), arg(body)] for ws, (end, body) in appends.items()],
            "r": [
                [
                    str(ws),
                    r.window_end,
                    -1 if r.rev is None else r.rev,
                    r.ids,
                    arg(r.snapshot),
                    arg(r.delta),
                    arg(r.fallback),
                    new_id(),
                    first_rev(),
                    arg(r.stale if r.snapshot is not None else None),
                ]
                for ws, r in replaces.items()
            ],  # fmt: skip
            "m": [
                [s, orjson.dumps([k.watermark, str(k.sequence), k.sub]).decode()]
                for s, k in marks.items()
            ],
            "p": [
                prune.cutoff if prune is not None else 0,
                prune.shards if prune is not None else [],
                [[s, arg(b)] for s, b in _decided_gone(prune, retire).items()],
            ],
            "x": [
                [s, k.watermark, str(k.sequence), k.sub]
                for s, k in (retire.marks.items() if retire is not None else ())
            ],
            "d": [[s, arg(body)] for s, body in (decided or {}).items()],
            "e": [
                [s, "" if k is None else str(k[0]), 0 if k is None else k[1]]
                for s, k in (expect or {}).items()
            ],
        }
        args[2] = orjson.dumps(header)
        with redis_errors("window store write", keys_are_records=False):
            if self._script is None:
                self._script = self.r.register_script(_COMMIT)
            moved = self._script(args=args)
        if isinstance(moved, bytes | str):
            raise MarkMoved(_text(moved))


#: ``RedisWindowStore._set_aside_cells``: ARGV = key base. A field of a window hash whose name
#: is a JSON list is a cell of the layout before the log (a key's text; log rows are ``h``, ``s``
#: and hex ids): it moves to ``cells:<start>``, and a window left without a delta leaves ``open``.
#: Every window of ``all`` and ``open`` (kept until a window's size after its close: few): a
#: window the old layout had closed (a flush at the end of an input) is read too when records
#: come for it.
_SET_ASIDE_CELLS = """
local base = ARGV[1]
local moved = 0
local seen = {}
local windows = redis.call('ZRANGE', base .. 'all', 0, -1)
for _, ws in ipairs(redis.call('ZRANGE', base .. 'open', 0, -1)) do table.insert(windows, ws) end
for _, ws in ipairs(windows) do
 if not seen[ws] then
  seen[ws] = true
  local h = base .. 'w:' .. ws
  local deltas = 0
  for _, f in ipairs(redis.call('HKEYS', h)) do
    if string.sub(f, 1, 1) == '[' then
      redis.call('HSET', base .. 'cells:' .. ws, f, redis.call('HGET', h, f))
      redis.call('HDEL', h, f)
      moved = moved + 1
    elseif f ~= 'h' and f ~= 's' then
      deltas = deltas + 1
    end
  end
  if deltas == 0 then redis.call('ZREM', base .. 'open', ws) end
 end
end
return moved
"""


#: ``RedisWindowStore.commit``: ARGV = key base, expire before (ms), JSON header, bodies…; the
#: header's ``a``: appends [start, end, id, body arg]; ``r``: replaces [start, end, revision read
#: (-1: no head), delta ids, snapshot arg, delta arg, fallback arg, new id, a new head's revision, stale fallback arg] (arg 0: none);
#: ``m``: shard marks; ``e``: the marks as read [lineage, sequence ("": none), sub] — one
#: moved (or made) since returns its lineage, nothing written (one gone, pruned, is no move); ``d``: decisions [lineage, body arg (0: delete)]; ``p``: [cutoff, marks to delete while their watermark is ≤ cutoff, decisions to delete while unchanged: [lineage, body arg]]; ``x``: old names' marks to delete while unchanged [name, watermark, sequence, sub]; then the commit's token ("": none). Every check is made before the first
#: write; a token seen in the last hour (retries come within seconds) means this commit went through already (a retry after a
#: lost reply): nothing is written again.
_COMMIT = """
local base, expire, token = ARGV[1], tonumber(ARGV[2]), ARGV[4]
if token ~= '' and redis.call('EXISTS', base .. 't:' .. token) == 1 then return 0 end
local p = cjson.decode(ARGV[3])
for _, e in ipairs(p.e or {}) do  -- marks as the batch read them ('': none), else nothing is written
  local old = redis.call('HGET', base .. 'shards', e[1])
  if e[2] == '' then
    if old then return e[1] end
  elseif old then  -- (gone: pruned meanwhile, which counts nothing)
    local o = cjson.decode(old)
    if tostring(o[2]) ~= e[2] or o[3] ~= e[3] then return e[1] end
  end
end
local touched = {}
local wins = {}
for i, r in ipairs(p.r) do
  local h = base .. 'w:' .. r[1]
  local head = redis.call('HGET', h, 'h')
  local ok = (r[3] == -1 and not head) or (head and tonumber(head) == r[3])
  if ok then
    for _, id in ipairs(r[4]) do
      if redis.call('HEXISTS', h, id) == 0 then ok = false end
    end
  end
  wins[i] = ok
end
for i, r in ipairs(p.r) do
  local h = base .. 'w:' .. r[1]
  local body = r[7]
  if wins[i] then
    redis.call('HSET', h, 'h', r[3] == -1 and r[9] or r[3] + 1)
    for _, id in ipairs(r[4]) do redis.call('HDEL', h, id) end
    if r[5] > 0 then redis.call('HSET', h, 's', ARGV[r[5]]) end
    body = r[6]
  elseif r[10] > 0 then
    local stored = redis.call('HGET', h, 's')
    if stored and stored ~= ARGV[r[5]] then body = r[10] end
  end
  if body > 0 then redis.call('HSET', h, r[8], ARGV[body]) end
  touched[r[1]] = r[2]
end
for _, a in ipairs(p.a) do
  redis.call('HSET', base .. 'w:' .. a[1], a[3], ARGV[a[4]])
  touched[a[1]] = a[2]
end
for ws, we in pairs(touched) do
  local h = base .. 'w:' .. ws
  local n = redis.call('HLEN', h) - redis.call('HEXISTS', h, 'h') - redis.call('HEXISTS', h, 's')
  redis.call('ZADD', base .. 'all', we, ws)
  if n > 0 then redis.call('ZADD', base .. 'open', we, ws) else redis.call('ZREM', base .. 'open', ws) end
end
for _, m in ipairs(p.m) do
  local old = redis.call('HGET', base .. 'shards', m[1])
  local mark = m[2]
  if old then  -- a watermark never goes back (another process's older view commits later)
    local o, n = cjson.decode(old), cjson.decode(mark)
    if o[1] > n[1] then mark = cjson.encode({o[1], n[2], n[3]}) end
  end
  redis.call('HSET', base .. 'shards', m[1], mark)
end
for _, s in ipairs(p.p[2]) do  -- marks to prune, while their watermark is still at most the cutoff
  local old = redis.call('HGET', base .. 'shards', s)
  if old and cjson.decode(old)[1] <= p.p[1] then redis.call('HDEL', base .. 'shards', s) end
end
for _, x in ipairs(p.x) do  -- old names' marks taken over, while still the ones the bolt read
  local old = redis.call('HGET', base .. 'shards', x[1])
  if old then
    local o = cjson.decode(old)
    if o[1] == x[2] and tostring(o[2]) == x[3] and o[3] == x[4] then
      redis.call('HDEL', base .. 'shards', x[1])
    end
  end
end
for _, d in ipairs(p.p[3]) do  -- decisions to prune, while still the ones the bolt read
  if redis.call('HGET', base .. 'decided', d[1]) == ARGV[d[2]] then
    redis.call('HDEL', base .. 'decided', d[1])
  end
end
for _, d in ipairs(p.d) do  -- decisions of records to come again (a partial commit)
  if d[2] > 0 then redis.call('HSET', base .. 'decided', d[1], ARGV[d[2]])
  else redis.call('HDEL', base .. 'decided', d[1]) end
end
for _, ws in ipairs(redis.call('ZRANGEBYSCORE', base .. 'all', '-inf', '(' .. expire)) do
  if not touched[ws] and not redis.call('ZSCORE', base .. 'open', ws) then
    redis.call('DEL', base .. 'w:' .. ws)
    redis.call('ZREM', base .. 'all', ws)
  end
end
if token ~= '' then redis.call('SET', base .. 't:' .. token, 1, 'EX', 3600) end
return 1
"""
