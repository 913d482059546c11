"""A database on its plain DB-API driver, for components that write driver SQL only.

SQLAlchemy costs 100–160 ms to import (a third to a half of a Lambda init, and as much in every
`squall run`) and a little on every statement. The warehouse sink, the subscription store, the
dead-letter table, the engine's batch transaction and the run lock write driver SQL, so a SQLite file
(``sqlite_driver.py``) or a PostgreSQL database (``pg_driver.py``) used only by them runs on a
``DriverEngine``: the part of SQLAlchemy's ``Engine``/``Connection`` interface squall uses
(``begin``, ``connect``, ``exec_driver_sql``, ``commit``, ``invalidate``, ``dialect.name``,
``dialect.identifier_preparer.quote``, ``connection.dbapi_connection``), with a small pool that
rolls a connection back when it is returned, as SQLAlchemy's does.

``Resources.database`` hands one out only while no component of the process asked ``Resources.sql``
for SQLAlchemy on the same database, so the batch's one transaction always runs on a connection
every component in it can use.

Tables are created with the DDL SQLAlchemy emits for the database (``create_table_sql``; tests
compare both), so a table created by either is the table the other expects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from squall.errors import TransientError

#: Connections a pool opens beyond its size while all are in use (SQLAlchemy's QueuePool default),
#: and the seconds a checkout then waits for one to come back.
MAX_OVERFLOW = 10
POOL_TIMEOUT = 30.0


def quote(name: str) -> str:
    """A double-quoted identifier (always quoted: keeps its case, reserved words work)."""
    return '"' + name.replace('"', '""') + '"'


class _Preparer:
    quote = staticmethod(quote)


@dataclass(frozen=True)
class Dialect:
    """What squall's driver SQL asks of ``engine.dialect``."""

    name: str
    driver: str
    paramstyle: str
    identifier_preparer: _Preparer = _Preparer()


class _Fairy:
    """What ``Connection.connection`` gives in SQLAlchemy: the driver's connection."""

    __slots__ = ("dbapi_connection", "driver_connection")

    def __init__(self, raw: Any):
        self.dbapi_connection = self.driver_connection = raw


class DriverConnection:
    """One pooled driver connection, used as a SQLAlchemy ``Connection`` is by squall's driver
    SQL; returned to the pool (rolled back) by ``close`` or at the end of a ``with`` block."""

    def __init__(self, engine: DriverEngine, raw: Any):
        self.engine = engine
        self.raw = raw
        self.connection = _Fairy(raw)
        self.invalidated = False
        self._closed = False

    def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        """``params``: a tuple (one statement) or a list of tuples (executemany), as in SQLAlchemy;
        none: the statement is sent as written (no ``%`` escaping needed)."""
        cursor = self.engine._cursor(self.raw)
        if isinstance(params, list):
            cursor.executemany(sql, params)
        elif params:
            cursor.execute(sql, params)
        else:
            cursor.execute(sql)
        return cursor

    def execute(self, statement: Any, *args: Any) -> Any:
        raise TypeError(
            f"a plain {self.engine.dialect.name} connection runs driver SQL only "
            "(exec_driver_sql); a component that builds SQLAlchemy statements opens its database "
            "with Resources.sql()"
        )

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def invalidate(self, exception: BaseException | None = None) -> None:
        """The connection is lost: close it; the pool never hands it out again."""
        if not self.invalidated:
            self.invalidated = True
            self.engine._discard(self.raw)

    def close(self) -> None:
        """Give the connection back (rolled back), or its place when it was invalidated."""
        if not self._closed:
            self._closed = True
            try:
                if not self.invalidated:
                    self.engine._checkin(self.raw)
            finally:
                self.engine._slots.release()

    def __del__(self) -> None:
        # Dropped without close(), as SQLAlchemy's pool allows: the connection's state is unknown,
        # so it is closed rather than pooled, and its place among the pool's in-use connections
        # comes back (else pool_size + 10 such drops would block every later checkout).
        if not getattr(self, "_closed", True):
            self._closed = True
            try:
                if not self.invalidated:
                    self.engine._discard(self.raw)
                self.engine._slots.release()
            except Exception:  # noqa: BLE001,S110 - interpreter shutdown: nothing left to release
                pass

    def __enter__(self) -> DriverConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DriverEngine:
    """A database with a small pool of driver connections (thread-safe checkout; a connection is
    used by one thread at a time). Subclasses connect, make cursors and say how to reset and
    check a connection."""

    dialect: Dialect
    #: The driver's base error class: a failed reset or check drops the connection.
    driver_error: type[BaseException] = Exception

    def __init__(self, pool_size: int, max_overflow: int = MAX_OVERFLOW):
        self.pool_size = pool_size  # idle connections kept (the resource's ``pool_size``)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        # connections in use at once: at most pool_size + max_overflow; more threads wait
        self.max_overflow = max_overflow
        self._slots = threading.BoundedSemaphore(pool_size + max_overflow)
        self.pool_timeout = POOL_TIMEOUT

    # -- what a driver provides ------------------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def _cursor(self, raw: Any) -> Any:
        raise NotImplementedError

    def _reset(self, raw: Any) -> None:
        """Leave no transaction open (raises the driver's error when the connection is broken)."""
        raw.rollback()

    def _alive(self, raw: Any) -> bool:
        """Whether an idle connection can be handed out (SQLAlchemy's ``pool_pre_ping``)."""
        return True

    # -- the pool --------------------------------------------------------------------------------

    def _checkout(self) -> Any:
        while True:
            with self._lock:
                raw = self._idle.pop() if self._idle else None
            if raw is None:
                return self._connect()
            if self._alive(raw):
                return raw
            # A dead idle connection (the server restarted): the others are from before too.
            self._discard(raw)
            self.dispose()

    def _checkin(self, raw: Any) -> None:
        try:
            self._reset(raw)
        except self.driver_error:
            self._discard(raw)
            return
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(raw)
                return
        self._discard(raw)

    def _discard(self, raw: Any) -> None:
        try:
            raw.close()
        except self.driver_error:
            pass

    def connect(self) -> DriverConnection:
        """A connection; what it leaves uncommitted is rolled back when it is returned."""
        if not self._slots.acquire(timeout=self.pool_timeout):
            raise TransientError(
                f"{self!r}: all {self.pool_size} + {self.max_overflow} connections in use, none "
                f"returned within {self.pool_timeout:g} s"
            )
        try:
            return DriverConnection(self, self._checkout())
        except BaseException:
            self._slots.release()
            raise

    @contextmanager
    def begin(self) -> Iterator[DriverConnection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        conn = self.connect()
        try:
            try:
                yield conn
            except BaseException:
                if not conn.invalidated:
                    try:
                        conn.raw.rollback()
                    except self.driver_error:
                        conn.invalidate()
                raise
            conn.raw.commit()
        finally:
            conn.close()

    def dispose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for raw in idle:
            self._discard(raw)


# -- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as SQLAlchemy compiles the column's type for the database: TEXT, BIGINT, …
    nullable: bool = True
    primary_key: bool = False
    index: bool = False


def create_table_sql(table: str, columns: Sequence[Column]) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` and its ``CREATE INDEX IF NOT EXISTS`` statements, as
    SQLAlchemy writes them (same types, NOT NULL, a table-level primary key, indexes named
    ``ix_<table>_<column>``)."""
    parts = [
        f"{quote(c.name)} {c.type}" + ("" if c.nullable and not c.primary_key else " NOT NULL")
        for c in columns
    ]
    key = [quote(c.name) for c in columns if c.primary_key]
    if key:
        parts.append(f"PRIMARY KEY ({', '.join(key)})")
    statements = [f"CREATE TABLE IF NOT EXISTS {quote(table)} (\n\t" + ", \n\t".join(parts) + "\n)"]
    statements += [
        f"CREATE INDEX IF NOT EXISTS {quote(f'ix_{table}_{c.name}')} ON {quote(table)} ({quote(c.name)})"
        for c in columns
        if c.index
    ]
    return statements


def lock_ddl(conn: Any, dialect: str, table: str) -> None:
    """PostgreSQL: wait for any other process creating ``table`` (or its indexes) now, until its
    transaction ends (an advisory lock, released with this transaction). ``IF NOT EXISTS`` alone
    does not serialize: two processes starting together on a new database both found no table,
    and the later failed with a unique violation on ``pg_type_typname_nsp_index`` (23505) once
    the first committed — the batch failed and ``squall run`` stopped. SQLite: nothing (its
    writers are serialized by the file's lock)."""
    if dialect == "postgresql":
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"squall.create_table:{table}",)
        )


def create_table(
    engine: DriverEngine, table: str, columns: Sequence[Column], *, indexes: bool = True
) -> None:
    """Create ``table`` and its indexes unless they exist (no check first: processes starting
    together on one database would all see no table). ``indexes=False``: the table only (the
    indexes once columns an existing table lacks are added: ``create_indexes``)."""
    with engine.begin() as conn:
        lock_ddl(conn, engine.dialect.name, table)
        conn.exec_driver_sql(create_table_sql(table, columns)[0])
    if indexes:
        create_indexes(engine, table, columns)


def create_indexes(engine: DriverEngine, table: str, columns: Sequence[Column]) -> None:
    """``CREATE INDEX IF NOT EXISTS`` for each indexed column."""
    with engine.begin() as conn:
        lock_ddl(conn, engine.dialect.name, table)
        for statement in create_table_sql(table, columns)[1:]:
            conn.exec_driver_sql(statement)
