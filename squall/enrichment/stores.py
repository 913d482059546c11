"""Where subscription states live: Redis hashes, a SQL table, or a SQL table behind a Redis cache.

Every store is used the same way per batch: ``load(keys)`` (one Redis pipeline, or one SELECT
per 500 keys) while the batch is processed, then — in the engine's commit sequence, after the
sinks — ``save(changed, connection)`` (one transaction, one pipeline; a SQL store writes on the
engine's connection when it shares the batch's transaction) and ``flush()`` once that is durable
(``discard()`` when it is not). Writes are guarded
by the state's version in the database itself — a SQL upsert with ``WHERE old.version <
new.version``, a Redis script comparing bytes — so an older or replayed update never overwrites a
newer state, even with two writers; and the bolt's writes name the version each change was
computed from, so a key another process updated meanwhile is not written (``StateMoved``) and
its update is not lost. A dependency failure becomes ``TransientError``.

Size (~840 lines): the three stores (Redis, SQL, SQL behind Redis) share one protocol and one
row format; apart they would each need the other two to be read.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import weakref
from collections.abc import Iterable
from itertools import repeat
from typing import Any, Protocol

import orjson

from squall.enrichment.state import Position, Status, SubscriptionState
from squall.errors import SinkError, StaleState, TransientError
from squall.topology import driver_engine
from squall.topology.resources import redis_errors
from squall.topology.sql import begin, store_errors

log = logging.getLogger("squall.enrichment.stores")


_STATUS = {str(s): s for s in Status}
SELECT_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's bound-parameter limit
SELECT_STEP = 32  # SQLite: a load's keys are padded to a multiple of this (its statement cached)
MAX_KEY_LENGTH = 512  # the key column; the bolt rejects longer keys
UPSERT_DIALECTS = ("sqlite", "postgresql")


class StateStore(Protocol):
    """Subscription states by key. ``load`` then ``save``, per batch, from one thread."""

    def load(self, keys: list[str]) -> dict[str, SubscriptionState]:
        """The stored state of each key that has one."""
        ...

    def save(
        self,
        changed: dict[str, SubscriptionState],
        connection: Any = None,
        base: dict[str, str] | None = None,
    ) -> None:
        """Store new states, never replacing a state with a newer version (SQL: on ``connection``
        when given, inside the caller's transaction). ``base``: per key, the version of the
        state its change was computed from ("" for none); a key whose stored state is neither
        that nor the new one raises ``StateMoved``."""
        ...

    def flush(self) -> None:
        """What was saved is durable: update caches."""
        ...

    def discard(self) -> None:
        """The batch was not committed: forget what load/save kept for it."""
        ...


# -- Redis ------------------------------------------------------------------------------------

# Versions are compared byte by byte: Lua's `<` on strings follows the server's locale.
_NEWER = """
local function newer(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
"""

# KEYS[1]: the hash. ARGV[1]: version ("" marks a key known to be absent from the SQL store),
# ARGV[2]: TTL in seconds (0: none), ARGV[3..]: field, value pairs. A state older than a
# commit's pending marker (``_PENDING``) was read from SQL before that commit: refused.
_GUARDED_WRITE = (
    _NEWER
    + """
local v = ARGV[1]
if v == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'absent', '1')
else
  local cur = redis.call('HGET', KEYS[1], 'version')
  if cur and not newer(v, cur) then return 0 end
  local pending = redis.call('HGET', KEYS[1], 'pending')
  if pending and newer(pending, v) then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'version', v, unpack(ARGV, 3))
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
)

# A store's write of a state computed from the stored version ARGV[3] ("" for none): ARGV[1]:
# version, ARGV[2]: TTL in seconds (0: none), ARGV[4..]: field, value pairs. Returns 1 when
# written (or written already: a retried commit), -1 when the stored version is another.
_CHECKED_WRITE = """
local v = ARGV[1]
local cur = redis.call('HGET', KEYS[1], 'version') or ''
if cur == v then return 1 end
if cur ~= ARGV[3] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', v, unpack(ARGV, 4))
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""

# KEYS[1]: the hash. ARGV[1]: the version a SQL commit is about to store, ARGV[2]: TTL (s).
# Replaces what the cache holds by a marker naming that version (kept if a newer one is
# pending): read as a miss, and no fill older than it lands (see CachedStateStore.save).
_PENDING = (
    _NEWER
    + """
local cur = redis.call('HGET', KEYS[1], 'pending')
if cur and newer(cur, ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'pending', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

#: Seconds a commit's pending marker lasts at least (a cache TTL below it does not shorten it),
#: and, with the cache's TTL when shorter (the state that replaces the marker lives that long),
#: the bound of the age beyond which a batch's fills of what it read are dropped: a fill read
#: before a commit arrives while that commit's marker, or its state, still refuses it.
PENDING_TTL = 900


class StateMoved(StaleState):
    """A key's stored state is no longer the one the batch computed its change from: another
    process committed an update of the key meanwhile. Nothing of the key is written; the batch
    runs again from the stored states, so both updates count."""

    def __init__(self, key: str):
        super().__init__(
            f"state store write: the state of key {key[:80]!r} moved since it was read "
            "(another process committed an update of it); read again"
        )
        self.key = key


ABSENT: Any = object()  # a cached "the SQL store has no state for this key"


def position_to_text(position: Position | None) -> str:
    """``shard/sequence/sub-sequence`` ("" when unknown)."""
    return "" if position is None else f"{position[0]}/{position[1]}/{position[2]}"


def position_from_text(text: str | None) -> Position | None:
    if not text:
        return None
    shard, seq, sub = text.rsplit("/", 2)
    return shard, int(seq), int(sub)


def history_to_text(state: SubscriptionState) -> str:
    """A state's history as stored: its encoded states, one per line (JSON escapes newlines)."""
    return "\n".join(state.history)


def history_from_text(text: str | None) -> tuple[str, ...]:
    return tuple(text.split("\n")) if text else ()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _from_hash(h: dict) -> SubscriptionState | None:
    if not h:
        return None
    h = {_text(k): _text(v) for k, v in h.items()}
    if "version" not in h:
        return None if "pending" in h else ABSENT  # a commit's marker: a miss
    return SubscriptionState(
        status=Status(h["status"]),
        subscribed=h["subscribed"] == "1",
        topics=tuple(json.loads(h["topics"])),
        registered_at=int(h["registered_at"]) if h.get("registered_at") else None,
        changed_at=int(h["changed_at"]) if h.get("changed_at") else None,
        version=h["version"],
        event_id=h.get("event_id", ""),
        position=position_from_text(h.get("position")),
        history=history_from_text(h.get("history")),
    )


def _to_fields(state: SubscriptionState) -> list[str]:
    return [
        "status",
        str(state.status),
        "subscribed",
        "1" if state.subscribed else "0",
        "topics",
        json.dumps(list(state.topics)),
        "registered_at",
        "" if state.registered_at is None else str(state.registered_at),
        "changed_at",
        "" if state.changed_at is None else str(state.changed_at),
        "event_id",
        state.event_id,
        "position",
        position_to_text(state.position),
        "history",
        history_to_text(state),
    ]


class RedisStateStore:
    """States as Redis hashes named ``<prefix><key>``; with ``ttl``, a cache that forgets."""

    def __init__(self, client: Any, prefix: str = "squall:subscription:", ttl: int | None = None):
        self.client = client
        self.prefix = prefix
        self.ttl = ttl or 0
        self._write = client.register_script(_GUARDED_WRITE)
        self._pending = client.register_script(_PENDING)
        self._checked = client.register_script(_CHECKED_WRITE)

    def read(self, keys: list[str]) -> dict[str, SubscriptionState | Any]:
        """Cached entries: a state, or ``ABSENT``; keys Redis knows nothing about are left out."""
        if not keys:
            return {}
        with redis_errors("redis read"):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self.prefix + key)
            replies = pipe.execute()
        found = {}
        for key, reply in zip(keys, replies, strict=True):
            state = _from_hash(reply)
            if state is not None:
                found[key] = state
        return found

    def write(self, states: dict[str, SubscriptionState | Any], forget: Iterable[str] = ()) -> None:
        """Store states (or ``ABSENT`` markers) where not older than Redis's; delete ``forget``."""
        forget = list(forget)
        if not states and not forget:
            return
        with redis_errors("redis write"):
            pipe = self.client.pipeline(transaction=False)
            for key, state in states.items():
                if state is ABSENT:
                    self._write(keys=[self.prefix + key], args=["", self.ttl], client=pipe)
                else:
                    args = [state.version, self.ttl, *_to_fields(state)]
                    self._write(keys=[self.prefix + key], args=args, client=pipe)
            for key in forget:
                pipe.delete(self.prefix + key)
            pipe.execute()

    def mark_pending(self, versions: dict[str, str]) -> None:
        """Before a SQL commit of these keys' states (key -> version): the cache holds, for
        each, a marker of that version instead (``_PENDING``) until the state itself is written."""
        if not versions:
            return
        ttl = max(self.ttl, PENDING_TTL)
        with redis_errors("redis write"):
            pipe = self.client.pipeline(transaction=False)
            for key, v in versions.items():
                self._pending(keys=[self.prefix + key], args=[v, ttl], client=pipe)
            pipe.execute()

    def load(self, keys: list[str]) -> dict[str, SubscriptionState]:
        return {k: s for k, s in self.read(keys).items() if s is not ABSENT}

    def save(
        self,
        changed: dict[str, SubscriptionState],
        connection: Any = None,
        base: dict[str, str] | None = None,
    ) -> None:
        if base is None:
            self.write(changed)
            return
        if not changed:
            return
        # One script per key, atomic each: a key that moved is not written, the others are
        # (the batch running again finds their updates applied, and changes nothing of them).
        with redis_errors("redis write"):
            pipe = self.client.pipeline(transaction=False)
            for key, state in changed.items():
                args = [state.version, self.ttl, base.get(key, ""), *_to_fields(state)]
                self._checked(keys=[self.prefix + key], args=args, client=pipe)
            answers = pipe.execute()
        for key, answer in zip(changed, answers, strict=True):
            if answer == -1:
                raise StateMoved(key)

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        pass


# -- SQL --------------------------------------------------------------------------------------


def subscriptions_table(name: str, metadata: Any = None) -> Any:  # -> sqlalchemy.Table
    """The SQL table of subscription states. Times are epoch milliseconds (UTC)."""
    import sqlalchemy as sa

    # Versions compare byte by byte: PostgreSQL needs the "C" collation for that.
    # (sa.Text, not the PostgreSQL dialect's TEXT: that dialect's import costs a SQLite topology
    # ~70 ms of Lambda init.)
    version_type = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subscribed", sa.Boolean, nullable=False),
        sa.Column("topics", sa.Text, nullable=False),  # a JSON array of strings
        sa.Column("registered_at_ms", sa.BigInteger),
        sa.Column("changed_at_ms", sa.BigInteger),
        sa.Column("version", version_type, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column(
            "position", sa.Text, nullable=False
        ),  # shard/sequence/sub-sequence of the last update
        sa.Column("history", sa.Text, nullable=False),  # earlier states, for re-deliveries (JSON)
    )


COLUMNS = (
    "key",
    "status",
    "subscribed",
    "topics",
    "registered_at_ms",
    "changed_at_ms",
    "version",
    "event_id",
    "position",
    "history",
)


def _driver_columns(version_type: str) -> tuple[driver_engine.Column, ...]:
    """``subscriptions_table`` as SQLAlchemy creates it, for the plain drivers (tests check that
    both create the same table on SQLite and on PostgreSQL)."""
    col = driver_engine.Column
    return (
        col("key", f"VARCHAR({MAX_KEY_LENGTH})", primary_key=True),
        col("status", "VARCHAR(16)", nullable=False),
        col("subscribed", "BOOLEAN", nullable=False),
        col("topics", "TEXT", nullable=False),
        col("registered_at_ms", "BIGINT"),
        col("changed_at_ms", "BIGINT"),
        col("version", version_type, nullable=False),
        col("event_id", "TEXT", nullable=False),
        col("position", "TEXT", nullable=False),
        col("history", "TEXT", nullable=False),
    )


#: The table's columns per database, for the plain drivers.
DRIVER_COLUMNS = {
    "sqlite": _driver_columns("TEXT"),
    "postgresql": _driver_columns('TEXT COLLATE "C"'),
}
WRITE_PAGE = 500  # rows per INSERT … VALUES page: 5,000 parameters (PostgreSQL allows 65,535)
#: SQLite's bound-parameter limit when its driver cannot say: 999 before SQLite 3.32 (2020).
SQLITE_OLD_LIMIT = 999


def _pg_any(keys: list[str]) -> tuple[str, tuple]:
    """PostgreSQL: ``= ANY(…)`` of the keys, and its parameters. The keys go as one text the
    server splits at newlines: psycopg2 adapts a list item by item (~0.6 µs of CPU a key: ~190 µs
    for a load of 300 keys, the one text ~16 µs). The list itself when a key holds a newline, or
    when the text would be empty (``string_to_array('', …)`` is no key, not one empty key)."""
    text = "\n".join(keys)
    if text and text.count("\n") == len(keys) - 1:
        return "= ANY(string_to_array(%s, %s))", (text, "\n")
    return "= ANY(%s)", (keys,)


class SqlStateStore:
    """States in a SQL table (SQLite or PostgreSQL), created if missing on first use.

    Reads and writes are driver SQL built once from the table's quoted names (the table itself is
    created from its SQLAlchemy model): building and compiling a Core statement per batch cost
    more than the database work on small batches. Reads select the batch's keys with ``IN (?, …)``
    (SQLite) or ``= ANY(…)`` (PostgreSQL, one parameter: ``_pg_any``); writes are pages of rows
    (PostgreSQL: one JSON text a page, ``_rows``; SQLite: one row's statement, ``executemany``,
    or ``VALUES`` pages when the written keys are asked for) with the version-guarded
    ``ON CONFLICT … DO UPDATE``.
    """

    def __init__(self, engine: Any, table: str = "squall_subscriptions"):
        """``engine``: a SQLAlchemy engine, or a plain driver's (``driver_engine``)."""
        dialect = engine.dialect.name
        if dialect not in UPSERT_DIALECTS:
            raise ValueError(f"the subscription store needs SQLite or PostgreSQL, not {dialect}")
        self.engine = engine
        self.name = table
        self._plain = isinstance(engine, driver_engine.DriverEngine)
        self.table = None if self._plain else subscriptions_table(table)
        self._created = False
        self._sqlite = dialect == "sqlite"
        self._autocommit_reads = self._plain and not self._sqlite  # (``load``)
        self._page = None if self._sqlite else WRITE_PAGE  # SQLite: read from the connection
        q = engine.dialect.identifier_preparer.quote
        name, cols = q(table), [q(c) for c in COLUMNS]
        self._select = f"SELECT {', '.join(cols)} FROM {name} WHERE {cols[0]} "
        self._selects: dict[int, str] = {}  # SQLite: the load's statement by number of keys
        self._mark = "?" if self._sqlite else "%s"
        self._row_marks = "(" + ", ".join([self._mark] * len(COLUMNS)) + ")"
        self._insert = f"INSERT INTO {name} ({', '.join(cols)}) VALUES "
        # PostgreSQL: a page of rows as one JSON text, in its order (``_rows``)
        values = [f"squall_row->>{i}" for i in range(len(COLUMNS))]
        for i, name_ in enumerate(COLUMNS):
            if name_ == "subscribed":
                values[i] = f"({values[i]})::boolean"
            elif name_.endswith("_ms"):
                values[i] = f"({values[i]})::bigint"
        self._insert_json = (
            f"INSERT INTO {name} ({', '.join(cols)}) SELECT {', '.join(values)} "
            f"FROM json_array_elements(%s::json) WITH ORDINALITY AS squall_rows(squall_row, n) "
            f"ORDER BY n"
        )
        self._upsert_tail = (
            f" ON CONFLICT ({cols[0]}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
            + f" WHERE {name}.{q('version')} < excluded.{q('version')}"
        )
        # SQLite: where and when the batch's first load read (``_unmoved``); reset by ``save``.
        self._read_from: tuple[Any, int, int] | None = None
        #: Whether the ``base`` versions given to ``save`` are those ``load`` read (not so
        #: behind a Redis cache, whose entries may be older than this store's reads).
        self.bases_from_load = True

    def _select_in(self, size: int) -> str:
        """SQLite: the load's statement for ``size`` keys (cached: the texts are few)."""
        sql = self._selects.get(size)
        if sql is None:
            sql = self._selects[size] = self._select + "IN (" + ",".join("?" * size) + ")"
        return sql

    def _ensure_table(self) -> None:
        # IF NOT EXISTS, not check-then-create: writers starting together (Lambda shards in
        # parallel) would both see no table, and one would fail with "already exists".
        if not self._created:
            if self._plain:
                driver_engine.create_table(
                    self.engine, self.name, DRIVER_COLUMNS[self.engine.dialect.name]
                )
            else:
                import sqlalchemy as sa

                with self.engine.begin() as conn:
                    conn.execute(sa.schema.CreateTable(self.table, if_not_exists=True))
            self._created = True

    def load(self, keys: list[str]) -> dict[str, SubscriptionState]:
        if not keys:
            return {}
        with store_errors("state store read"):
            self._ensure_table()
            with self.engine.connect() as conn:
                if self._sqlite and self.bases_from_load:
                    self._note_read(conn.connection.driver_connection)
                # PostgreSQL, plain driver, one SELECT: read outside a transaction (autocommit).
                # One statement sees one snapshot either way, and the BEGIN before it and the
                # ROLLBACK when the connection is returned were two round trips per batch.
                raw = conn.connection.driver_connection if self._autocommit_reads else None
                if raw is not None and len(keys) <= SELECT_CHUNK:
                    raw.autocommit = True
                else:
                    raw = None
                try:
                    found = self._read(conn, keys)
                finally:
                    if raw is not None and not raw.closed:
                        raw.autocommit = False
        return found

    def _read(self, conn: Any, keys: list[str]) -> dict[str, SubscriptionState]:
        found: dict[str, SubscriptionState] = {}
        for i in range(0, len(keys), SELECT_CHUNK):
            chunk = keys[i : i + SELECT_CHUNK]
            if self._sqlite:
                # The keys padded with the last one to a multiple of SELECT_STEP: one
                # statement text per size, so sqlite3's statement cache finds it
                # prepared (a new size is a new text; each batch's number of keys
                # varies, and preparing ~250 parameters cost ~1k instructions an event
                # of the example). A key twice in IN selects its row once.
                pad = -len(chunk) % SELECT_STEP
                sql = self._select_in(len(chunk) + pad)
                params: tuple = (*chunk, *repeat(chunk[-1], pad))
            else:
                where, params = _pg_any(chunk)
                sql = self._select + where
            for (
                key,
                status,
                subscribed,
                topics,
                reg,
                changed,
                version,
                event_id,
                position,
                history,
            ) in conn.exec_driver_sql(sql, params):
                # position_from_text and history_from_text inline (a row per key)
                if position:
                    shard, seq, sub = position.rsplit("/", 2)
                    at: Position | None = (shard, int(seq), int(sub))
                else:
                    at = None
                found[key] = SubscriptionState(
                    _STATUS[status],
                    bool(subscribed),
                    tuple(orjson.loads(topics)),
                    reg,
                    changed,
                    version,
                    event_id,
                    at,
                    tuple(history.split("\n")) if history else (),
                )
        return found

    def save(
        self,
        changed: dict[str, SubscriptionState],
        connection: Any = None,
        base: dict[str, str] | None = None,
        *,
        report: bool = False,
    ) -> set[str]:
        """Upsert in one transaction (``connection``'s, when given), never over a newer version;
        with ``base``, only over the version each change was computed from (``StateStore.save``).

        With ``report``, returns the keys whose row was written (RETURNING costs a little).
        """
        read_from, self._read_from = self._read_from, None
        if not changed:
            return set()
        rows = []
        for key, s in changed.items():
            p = s.position  # position_to_text and history_to_text inline (a row per key)
            rows.append(
                (
                    key,
                    s.status._value_,
                    s.subscribed,
                    orjson.dumps(s.topics).decode(),
                    s.registered_at,
                    s.changed_at,
                    s.version,
                    s.event_id,
                    "" if p is None else f"{p[0]}/{p[1]}/{p[2]}",
                    "\n".join(s.history),
                )
            )
        with store_errors("state store write"):
            self._ensure_table()
            if connection is not None:
                return self._checked_upsert(connection, rows, report, changed, base, read_from)
            with begin(self.engine) as conn:  # a transaction also on an autocommit engine
                return self._checked_upsert(conn, rows, report, changed, base, read_from)

    def _checked_upsert(
        self,
        conn: Any,
        rows: list[tuple],
        report: bool,
        changed: dict[str, SubscriptionState],
        base: dict[str, str] | None,
        read_from: tuple[Any, int, int] | None = None,
    ) -> set[str]:
        """``_upsert``, after checking (``base``) that each existing row is still the state its
        change was computed from — locked until the commit (PostgreSQL ``FOR UPDATE``; SQLite
        has one writer, and refuses a write from a transaction whose reads are stale) — and, on
        PostgreSQL, that each row missing then was inserted by this write. SQLite: the stored
        versions are not read again when nothing can have moved them (``_unmoved``)."""
        if base is None:
            return self._upsert(conn, rows, report)
        if self._sqlite:
            # The check's read in the write's transaction: the driver begins one only at the
            # first write, so a read outside it let another process commit between the check
            # and the write, which then replaced that commit's state (an update lost). BEGIN
            # IMMEDIATE takes the write lock first; inside a transaction already (the
            # warehouse's), WAL refuses a write from a snapshot gone stale.
            raw = conn.connection.driver_connection
            if not raw.in_transaction:
                raw.execute("BEGIN IMMEDIATE")
            if self._unmoved(raw, read_from):
                return self._upsert(conn, rows, report)
        # Keys in one order (code points) in every process: two commits locking (FOR UPDATE)
        # or inserting overlapping keys in opposite orders deadlocked (PostgreSQL broke it
        # after its deadlock_timeout, and the batch ran again).
        stored = self._versions(conn, sorted(changed))
        for key, new in changed.items():
            have = stored.get(key, "")
            if have != base.get(key, "") and have != new.version:
                raise StateMoved(key)
        if self._sqlite:
            return self._upsert(conn, rows, report)
        # PostgreSQL: a row missing when read is only inserted, never updated — another
        # process may insert it meanwhile (ON CONFLICT waits for that insert's commit).
        fresh = sorted((row for row in rows if row[0] not in stored), key=lambda row: row[0])
        written = self._upsert(conn, [row for row in rows if row[0] in stored], True)
        tail = f" ON CONFLICT ({self._quoted_key}) DO NOTHING RETURNING {self._quoted_key}"
        for i in range(0, len(fresh), WRITE_PAGE):
            sql, params = self._rows(fresh[i : i + WRITE_PAGE])
            result = conn.exec_driver_sql(sql + tail, params)
            written.update(r[0] for r in result)
        for row in fresh:
            if row[0] not in written and self._versions(conn, [row[0]]).get(row[0]) != row[6]:
                raise StateMoved(row[0])  # (row[6]: the version)
        return written

    def _note_read(self, raw: Any) -> None:
        """Before a load's reads on SQLite connection ``raw``: the batch's first load keeps the
        connection, its ``PRAGMA data_version`` and the number of the engine's last state write;
        a later load of the batch on another connection leaves nothing to compare
        (``_unmoved``)."""
        if self._read_from is None:
            version = raw.execute("PRAGMA data_version").fetchone()[0]
            self._read_from = (raw, version, _STATE_WRITES.get(self.engine, 0))
        elif self._read_from[0] is not raw:
            self._read_from = (None, -1, -1)

    def _unmoved(self, raw: Any, read_from: tuple[Any, int, int] | None) -> bool:
        """Whether no stored state can have changed since the batch's loads read the ``base``
        versions, so that the check need not read them again (the read is a B-tree lookup per
        changed key, ~0.4 µs an event of the example). Called in the write's transaction, the
        write lock held: no other connection can commit before this one does. True only when
        the loads and this write are on one SQLite connection ``raw``, whose ``PRAGMA
        data_version`` has not changed since the first load (SQLite changes it when any other
        connection, of this process or another, commits to the database), and no state store
        wrote on a connection of this engine meanwhile (its writes on the same connection do not
        change ``data_version``). Else the versions are read, as on PostgreSQL."""
        return (
            self.bases_from_load
            and read_from is not None
            and read_from[0] is raw
            and read_from[2] == _STATE_WRITES.get(self.engine, 0)
            and raw.execute("PRAGMA data_version").fetchone()[0] == read_from[1]
        )

    def _versions(self, conn: Any, keys: list[str]) -> dict[str, str]:
        """The stored version of each key that has a row (PostgreSQL: the rows locked)."""
        q = self.engine.dialect.identifier_preparer.quote
        head = f"SELECT {q('key')}, {q('version')} FROM {q(self.name)} WHERE {q('key')} "
        found: dict[str, str] = {}
        for i in range(0, len(keys), SELECT_CHUNK):
            chunk = keys[i : i + SELECT_CHUNK]
            if self._sqlite:
                sql, params = head + "IN (" + ",".join("?" * len(chunk)) + ")", tuple(chunk)
            else:
                # COLLATE "C": byte order, which is code point order in UTF-8 — the keys'
                # (sorted) order across chunks, whatever the database's collation
                order = f'ORDER BY {q("key")} COLLATE "C" FOR UPDATE'
                where, params = _pg_any(chunk)
                sql = head + where + " " + order
            found.update((k, v) for k, v in conn.exec_driver_sql(sql, params))
        return found

    def _upsert(self, conn: Any, rows: list[tuple], report: bool) -> set[str]:
        if self._sqlite:  # (before the write: a write that fails may still have changed rows)
            # Counted for the engine of the connection written on (that of the loads it may
            # move), not the store's own: the batch's transaction may be another engine's (a
            # store's engine retired by ``Resources.sql``). A number never stored before, taken
            # atomically: a count read and written back by two threads could end where a
            # store's load left it, a write between them unseen.
            _STATE_WRITES[conn.engine] = next(_WRITE_NUMBERS)
        if self._sqlite and not report:
            # SQLite: one prepared one-row statement, executemany (parsing a page of VALUES, new
            # text for each page size, cost more than stepping the statement per row).
            conn.exec_driver_sql(self._insert + self._row_marks + self._upsert_tail, rows)
            return set()
        written: set[str] = set()
        tail = self._upsert_tail + (f" RETURNING {self._quoted_key}" if report else "")
        size = self._page or self._sqlite_page(conn)
        for i in range(0, len(rows), size):
            sql, params = self._rows(rows[i : i + size])
            result = conn.exec_driver_sql(sql + tail, params)
            if report:
                written.update(r[0] for r in result)
        return written

    def _rows(self, page: list[tuple]) -> tuple[str, tuple]:
        """An INSERT of ``page``'s rows (without its ON CONFLICT) and its parameters.

        PostgreSQL: the rows as one JSON text the server takes apart (``json_array_elements``,
        in the page's order): psycopg2 adapts each parameter of a ``VALUES`` list on its own,
        ~7 µs of CPU a state row, the JSON text ~0.3 µs. ``VALUES`` when the JSON cannot carry
        the rows as psycopg2 would (a NUL, which PostgreSQL's ``->>`` refuses; what orjson
        cannot write: a lone surrogate, an integer beyond 64 bits), so those fail as before."""
        if not self._sqlite:
            try:
                text = orjson.dumps(page).decode()
            except orjson.JSONEncodeError:
                text = "\\u0000"
            if "\\u0000" not in text:
                return self._insert_json, (text,)
        sql = self._insert + ", ".join([self._row_marks] * len(page))
        return sql, tuple(v for row in page for v in row)

    def _sqlite_page(self, conn: Any) -> int:
        """Rows per page within the SQLite library's bound-parameter limit (999 before 3.32,
        32,766 since), read once from the connection."""
        import sqlite3

        getlimit = getattr(conn.connection.driver_connection, "getlimit", None)
        limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else SQLITE_OLD_LIMIT
        self._page = max(1, min(WRITE_PAGE, limit // len(COLUMNS)))
        return self._page

    @property
    def _quoted_key(self) -> str:
        return self.engine.dialect.identifier_preparer.quote("key")

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        self._read_from = None


#: SQLite: per engine, the number of the last state write on one of its connections
#: (``SqlStateStore._unmoved``): a store's write on the connection another store's loads read
#: from moves stored states without changing that connection's ``PRAGMA data_version``.
_STATE_WRITES: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_WRITE_NUMBERS = itertools.count(1)


# -- SQL behind a Redis cache -------------------------------------------------------------------


class CachedStateStore:
    """A SQL store with Redis in front: read-through (a miss populates Redis with a TTL) and write-through.

    Keys the SQL store does not know are cached as absent, so anonymous or new keys do not hit
    SQL every batch. ``save`` writes SQL and, before that write can commit, replaces the changed
    keys' entries by markers of the versions written (read as misses, so Redis never serves a
    state older than SQL's, even if the process dies right after the commit; and no process
    fills in a state older than the marker, read before the commit); ``flush`` — after the
    commit — populates Redis with the batch's misses and new states in one pipeline. A failed
    population, or a marker whose commit did not happen, only costs misses (for at least
    ``PENDING_TTL``).
    """

    def __init__(self, cache: RedisStateStore, store: SqlStateStore):
        self.cache = cache
        self.store = store
        store.bases_from_load = False  # a cached state may be older than the store's rows
        self._fill: dict[str, SubscriptionState | Any] = {}
        self._read_at: float | None = None  # (monotonic) when the batch's first miss was read
        self._pending: tuple[dict[str, SubscriptionState | Any], list[str]] | None = None
        self.hits = self.misses = 0  # Redis cache lookups (read by the metrics recorder)

    def load(self, keys: list[str]) -> dict[str, SubscriptionState]:
        cached = self.cache.read(keys)
        misses = [k for k in keys if k not in cached]
        self.hits += len(keys) - len(misses)
        self.misses += len(misses)
        if misses and self._read_at is None:
            self._read_at = time.monotonic()
        from_sql = self.store.load(misses) if misses else {}
        self._fill.update({k: from_sql.get(k, ABSENT) for k in misses})
        states = {k: s for k, s in cached.items() if s is not ABSENT}
        states.update(from_sql)
        return states

    def save(
        self,
        changed: dict[str, SubscriptionState],
        connection: Any = None,
        base: dict[str, str] | None = None,
    ) -> None:
        # Before the SQL write can commit, the changed keys' cache entries become markers of the
        # versions written: read as misses (Redis never serves a state older than SQL's, even
        # if this process dies right after the commit), and another process's fill of a state
        # it read from SQL before this commit — older than the marker — is refused. Forgetting
        # the keys let such a fill land after the commit: the next batch of the key started from
        # it, and its newer version replaced the committed state in SQL (an update lost).
        self.cache.mark_pending({k: s.version for k, s in changed.items()})
        written = self.store.save(changed, connection, base, report=True)
        fill = dict(self._fill)
        read_at, self._read_at = self._read_at, None
        # Read so long ago that a commit's marker may have expired since — or the state that
        # replaced it (a commit's fill, living the cache's ttl, which may be the shorter): no
        # fill of misses.
        lasts = min(PENDING_TTL, self.cache.ttl or PENDING_TTL)
        if read_at is not None and time.monotonic() - read_at > lasts * 2 / 3:
            fill = {}
        for key, state in changed.items():
            if key in written:
                fill[key] = state
            else:
                # SQL refused the change: another writer stored a newer state; leave it uncached.
                fill.pop(key, None)
        self._pending = (fill, [])
        if connection is None:
            self.flush()

    def flush(self) -> None:
        pending, self._pending, self._fill = self._pending, None, {}
        if pending is None:
            return
        import redis  # the cache is Redis: already imported by its client

        try:
            self.cache.write(*pending)
        except (TransientError, SinkError, redis.exceptions.RedisError) as exc:
            # After the commit: the SQL store is right; the cache just misses later. A Redis that
            # refuses writes (OOM under noeviction, MISCONF), or that cannot serve the script
            # (redis_unservable: a SinkError, which the markers before the commit would have
            # met first), must not fail a committed batch.
            log.warning("subscription cache not populated: %s", exc)

    def discard(self) -> None:
        self._pending, self._fill, self._read_at = None, {}, None
