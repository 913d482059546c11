"""The ``dedupe`` bolt's memory across batches (its ``store:``): keys seen, with the record
position that first carried each, for ``ttl``.

An event is a duplicate when its key is remembered with *another* record position (stream,
shard, sequence, sub-sequence, as the subscription bolt orders its states, and a line's
fingerprint; a record re-driven by ``squall replay`` is where it was first read). The same record delivered again — after a crash
before the checkpoint, a KCL or Lambda retry, a replay of its dead letter — is not a duplicate
of itself. Keys are staged by ``process`` and written by the engine's commit sequence
(``commit_state``: only those of covered records; on SQL, in the batch's transaction when the
store shares its database), each with its first position and the time it was written; a key
older than ``ttl`` is read as unknown and pruned (SQL: at most once a minute per process, in a
commit; Redis: the key expires). The store holds the keys of one ``ttl`` at most. A key the
commit finds remembered from another record since the batch read it (a copy another process
committed meanwhile) writes nothing of the commit and runs the batch again (``KeyTaken``).

Keys and positions are stored as 128-bit BLAKE2b digests of their text: any key (a long one,
one holding NUL, an object) fits one fixed-size column.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from squall.digests import blake2b
from squall.errors import StaleState
from squall.event import Event, lineage
from squall.exact_json import dumps as json_dumps
from squall.identifiers import check_identifier
from squall.topology import driver_engine
from squall.topology.resources import redis_errors
from squall.topology.sql import begin, store_errors

#: Keys per SELECT … IN (…) (SQLite's parameter limit is 999 on old builds).
CHUNK = 500
#: Milliseconds between two prunes of expired keys by one process (SQL stores).
PRUNE_EVERY_MS = 60_000


class KeyTaken(StaleState):
    """A key this batch passed was remembered meanwhile from another record: a copy committed
    by another process (a batch of another shard) after this batch read the keys. Nothing of
    the commit is written; the batch runs again, and the copy in it is filtered."""

    def __init__(self, count: int):
        super().__init__(
            f"dedupe store write: {count} key(s) remembered from another record since the batch "
            "read them (a copy committed by another process); read again"
        )


def now_ms() -> int:
    """The wall clock in epoch milliseconds (tests replace it)."""
    return time.time_ns() // 1_000_000


def key_digest(key: Any) -> str | None:
    """The stored form of a key as the bolt compares it (``dedupe.compared``'s value, or a plain
    ``str``/``int``): a digest of a typed text, so ``"1"`` and ``1`` stay two keys. None for a
    key equal to no other (a NaN): never remembered."""
    cls = key.__class__
    if isinstance(key, str):
        text = "s" + str.__str__(key)
    elif isinstance(key, bool):
        text = "b" + ("1" if key else "0")
    elif isinstance(key, int):
        text = "i" + int.__repr__(key)
    elif isinstance(key, float):
        if key != key:
            return None
        text = "i" + int.__repr__(int(key)) if key.is_integer() else "f" + float.__repr__(key)
    elif cls is tuple and len(key) == 2:
        # ``compared``'s (bool, value) or (marker, JSON text)
        text = ("b" + ("1" if key[1] else "0")) if key[0] is bool else "j" + key[1]
    elif cls is object:  # ``compared``'s key equal to no other
        return None
    else:
        try:
            text = "j" + json_dumps(key).decode()
        except TypeError:
            text = "r" + repr(key)
    return _digest(text)


def _digest(text: str) -> str:
    # (CPython's own BLAKE2b, the same digests as ``hashlib``'s: no OpenSSL loaded at a Lambda's
    # init for it, tests/deploy/test_lambda_init_imports.py)
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def position_digest(event: Event) -> str:
    """Where ``event``'s record was read, as stored (its event id when it has no position)."""
    meta = event.meta
    seq = meta.sequence_number
    if not seq.isdecimal():
        return _digest(f"e{event.event_id}")
    if meta.replay:  # re-driven by ``squall replay``: where it was first read
        meta = meta._replace(replay=0)
    # A line of a file, stdin or an S3 object: its fingerprint (a digest of the input up to it)
    # too. The lineage names an input by its name and its first line: two inputs of one name
    # starting alike (a day's file, a rewritten object) were one, and a key on line 3 of both
    # passed as the same record read again. Re-read, or appended to, a line keeps its digest.
    where = "" if meta.fingerprint is None else f"/{meta.fingerprint}"
    return _digest(f"p{lineage(meta)}/{int(seq)}/{meta.sub_sequence_number}{where}")


class KeyMemory:
    """Remembered keys on a store (``SqlKeys`` or ``RedisKeys``), with one batch's staging."""

    def __init__(self, store: Any, ttl_ms: int):
        self.store = store
        self.ttl_ms = ttl_ms
        #: key digest -> (position digest, an event carrying it), staged by this batch
        self._staged: dict[str, tuple[str, Event]] = {}

    def process(self, batch: list[Event], keys: list[Any], out: Any) -> None:
        """Emit the events of ``batch`` that are no duplicate to ``out``, drop the others;
        ``keys``: each event's compared key (None: no key, it passes)."""
        digests = [None if k is None else key_digest(k) for k in keys]
        wanted = sorted({d for d in digests if d is not None and d not in self._staged})
        stored = self.store.load(wanted, now_ms() - self.ttl_ms) if wanted else {}
        local: dict[str, tuple[str, Event]] = {}
        passed: list[Event] = []
        kept: set[str] = set()  # keys passed by this call: a later event of one is dropped
        for event, digest in zip(batch, digests, strict=True):
            if digest is None:
                passed.append(event)
                continue
            if digest in kept:  # (as without a store: the first in the batch wins)
                out.drop(event)
                continue
            at = position_digest(event)
            first = self._staged.get(digest)
            known = first[0] if first is not None else stored.get(digest)
            if known is None:
                local[digest] = (at, event)
            elif known != at:
                out.drop(event)
                continue
            kept.add(digest)
            passed.append(event)
        out.emit_all(passed)
        self._staged.update(local)  # (only once the call returns: one that raises stages nothing)

    def commit(self, covered: Callable[[Event], bool], connection: Any = None) -> None:
        rows = {d: at for d, (at, event) in self._staged.items() if covered(event)}
        self.store.save(rows, now_ms(), self.ttl_ms, connection)

    def clear(self) -> None:
        self._staged = {}


class SqlKeys:
    """Keys in a SQL table (SQLite or PostgreSQL): key digest, position digest, written at (ms)."""

    def __init__(self, engine: Any, table: str):
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the dedupe store needs SQLite or PostgreSQL, not {dialect}")
        self.engine = engine
        self.name = check_identifier(table, "table name")
        self._sqlite = dialect == "sqlite"
        self._created = False
        self._pruned_at = 0
        q = engine.dialect.identifier_preparer.quote
        t = self._table = q(table)
        self._mark = "?" if self._sqlite else "%s"
        self._select = f"SELECT key, position FROM {t} WHERE seen_ms > {self._mark} AND key IN "
        # A key already remembered keeps its first position, unless that has expired.
        self._upsert = (
            f"INSERT INTO {t} (key, position, seen_ms) VALUES ({', '.join([self._mark] * 3)}) "
            f"ON CONFLICT (key) DO UPDATE SET position = excluded.position, "
            f"seen_ms = excluded.seen_ms WHERE {t}.seen_ms <= {self._mark}"
        )
        self._prune = f"DELETE FROM {t} WHERE seen_ms <= {self._mark}"

    def _ensure_table(self, connection: Any = None) -> None:
        """The table, made unless this process made (or found) it; ``connection``: in the
        batch's transaction, not on a connection of its own, which would wait for the write lock
        of a SQLite file the batch holds ("database is locked"); not marked made, as that
        transaction may roll back (the next ``load`` makes it again, a no-op if it is there)."""
        if self._created:
            return
        col = driver_engine.Column
        columns = (
            col("key", "VARCHAR(32)", primary_key=True),
            col("position", "VARCHAR(32)", nullable=False),
            col("seen_ms", "BIGINT", nullable=False, index=True),
        )
        dialect = self.engine.dialect.name
        if connection is not None:
            # (PostgreSQL: one creator at a time, see ``driver_engine.lock_ddl``)
            driver_engine.lock_ddl(connection, dialect, self.name)
            for statement in driver_engine.create_table_sql(self.name, columns):
                connection.exec_driver_sql(statement)
            return
        if isinstance(self.engine, driver_engine.DriverEngine):
            driver_engine.create_table(self.engine, self.name, columns)
        else:
            with begin(self.engine) as conn:
                driver_engine.lock_ddl(conn, dialect, self.name)
                for statement in driver_engine.create_table_sql(self.name, columns):
                    conn.exec_driver_sql(statement)
        self._created = True

    def load(self, keys: list[str], after_ms: int) -> dict[str, str]:
        """Each key's first position, for keys written after ``after_ms``."""
        found: dict[str, str] = {}
        with store_errors("dedupe store read"):
            self._ensure_table()
            with self.engine.connect() as conn:
                for i in range(0, len(keys), CHUNK):
                    chunk = keys[i : i + CHUNK]
                    sql = self._select + "(" + ", ".join([self._mark] * len(chunk)) + ")"
                    # (pairs, not the result: SQLAlchemy's has ``keys()``, which ``update``
                    # takes for a mapping's — a resource on SQLAlchemy failed every key)
                    found.update((k, at) for k, at in conn.exec_driver_sql(sql, (after_ms, *chunk)))
        return found

    def save(self, rows: dict[str, str], now: int, ttl_ms: int, connection: Any = None) -> None:
        prune = now - self._pruned_at >= PRUNE_EVERY_MS
        if not rows and not prune:
            return
        expired = now - ttl_ms
        # In key order: two processes writing overlapping keys take their row locks in one order
        # (no deadlock between them on PostgreSQL), as the subscription store does.
        params = [(k, at, now, expired) for k, at in sorted(rows.items())]
        with store_errors("dedupe store write"):
            if connection is not None:
                # (a batch whose events had no key read none: the table not yet made here)
                self._ensure_table(connection)
                self._write(connection, params, prune, expired)
            else:
                self._ensure_table()
                with begin(self.engine) as conn:
                    self._write(conn, params, prune, expired)
        if prune:
            self._pruned_at = now

    def _write(self, conn: Any, params: list[tuple], prune: bool, expired: int) -> None:
        if prune:
            conn.exec_driver_sql(self._prune, (expired,))
        if params:
            written = conn.exec_driver_sql(self._upsert, params).rowcount
            if written == len(params):  # each row inserted, or over an expired key: none kept
                return
            # Read back in the same transaction: a key another process wrote since this batch
            # read the keys kept its first position (the upsert waited for that commit); a key
            # kept with this batch's position is a record delivered again.
            ours = {k: at for k, at, _, _ in params}
            keys = list(ours)
            taken = 0
            for i in range(0, len(keys), CHUNK):
                chunk = keys[i : i + CHUNK]
                sql = self._select + "(" + ", ".join([self._mark] * len(chunk)) + ")"
                rows = conn.exec_driver_sql(sql, (expired, *chunk))
                taken += sum(1 for k, at in rows if at != ours[k])
            if taken:
                raise KeyTaken(taken)


class RedisKeys:
    """Keys as Redis strings ``<prefix><key digest>`` holding the position digest, expiring
    after the ttl (``SET … NX PX``: a key remembered keeps its first position)."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix

    def load(self, keys: list[str], after_ms: int) -> dict[str, str]:
        with redis_errors("dedupe store read"):
            values = self.client.mget([self.prefix + k for k in keys])
        return {
            k: v.decode() if isinstance(v, bytes) else v
            for k, v in zip(keys, values, strict=True)
            if v is not None
        }

    def save(self, rows: dict[str, str], now: int, ttl_ms: int, connection: Any = None) -> None:
        if not rows:
            return
        with redis_errors("dedupe store write"):
            pipe = self.client.pipeline(transaction=False)
            for k, at in rows.items():
                pipe.set(self.prefix + k, at, nx=True, px=ttl_ms)
            done = pipe.execute()
            # A key not set was there: this record's (delivered again), or another's, written
            # by another process since the batch read the keys.
            kept = [k for k, ok in zip(rows, done, strict=True) if not ok]
            if not kept:
                return
            found = self.client.mget([self.prefix + k for k in kept])
        taken = sum(
            1
            for k, v in zip(kept, found, strict=True)
            if v is not None and (v.decode() if isinstance(v, bytes) else v) != rows[k]
        )
        if taken:
            raise KeyTaken(taken)
