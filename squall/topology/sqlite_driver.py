"""SQLite files on the plain ``sqlite3`` driver, for components that need no SQLAlchemy.

SQLAlchemy costs ~100 ms to import — a third of a Lambda init — and a little on every statement.
The SQLite work of the warehouse sink, the subscription store and the engine's batch transaction
is plain driver SQL already, so for a SQLite file those components run on ``SqliteEngine``: the
part of SQLAlchemy's ``Engine``/``Connection`` interface they use (``begin``, ``connect``,
``exec_driver_sql``, ``dialect.name``, ``dialect.identifier_preparer.quote``), with the same
connection settings as the SQLAlchemy engine squall creates (WAL, ``synchronous=FULL``, the
resource's ``connect_timeout`` as the busy timeout, the driver's default transaction handling,
connections pooled and rolled back when returned). A component that builds SQLAlchemy Core
statements asks ``Resources.sql`` and gets a SQLAlchemy engine; ``Resources.database`` hands
out this one only while no component of the process asked for SQLAlchemy on the same database,
so the batch's one transaction always runs on a connection every component in it can use.

Tables are created with the same DDL SQLAlchemy emits for SQLite (``create_table_sql``; a test
compares both), so a table created by either is the table the other expects.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Connections kept open when returned (SQLAlchemy's QueuePool default for a SQLite file).
POOL_SIZE = 5


class _Cursor(sqlite3.Cursor):
    """A driver cursor with ``scalar()``, as SQLAlchemy's results have."""

    def scalar(self) -> Any:
        row = self.fetchone()
        return None if row is None else row[0]


def quote(name: str) -> str:
    """A double-quoted identifier (always quoted: keeps its case, reserved words work)."""
    return '"' + name.replace('"', '""') + '"'


class _Preparer:
    quote = staticmethod(quote)


@dataclass(frozen=True)
class _Dialect:
    name: str = "sqlite"
    paramstyle: str = "qmark"
    identifier_preparer: _Preparer = _Preparer()


DIALECT = _Dialect()


class _Fairy:
    """What ``Connection.connection`` gives in SQLAlchemy: the driver's connection."""

    __slots__ = ("dbapi_connection", "driver_connection")

    def __init__(self, raw: sqlite3.Connection):
        self.dbapi_connection = self.driver_connection = raw


class SqliteConnection:
    """One pooled driver connection, used as a SQLAlchemy ``Connection`` is by squall's SQLite code."""

    invalidated = False  # a SQLite file cannot lose its connection

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw
        self.connection = _Fairy(raw)

    def exec_driver_sql(self, sql: str, params: Any = None) -> _Cursor:
        """``params``: a tuple (one statement) or a list of tuples (executemany), as in SQLAlchemy."""
        cursor = self.raw.cursor(_Cursor)
        if isinstance(params, list):
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params or ())
        return cursor

    def execute(self, statement: Any, *args: Any) -> Any:
        raise TypeError(
            "a plain SQLite connection runs driver SQL only (exec_driver_sql); a component that "
            "builds SQLAlchemy statements opens its database with Resources.sql()"
        )


class SqliteEngine:
    """A SQLite file with a small pool of driver connections (thread-safe checkout)."""

    dialect = DIALECT

    def __init__(self, path: str, timeout: float, pool_size: int = POOL_SIZE):
        self.path = path
        self.timeout = timeout
        self.pool_size = pool_size  # idle connections kept (the resource's ``pool_size``)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteEngine({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the pool may hand a connection to another thread (as
        # SQLAlchemy's pool does for SQLite files); a connection is used by one thread at a time.
        raw = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")
        return raw

    def _checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _checkin(self, raw: sqlite3.Connection) -> None:
        try:
            if raw.in_transaction:
                raw.rollback()  # reset on return, as SQLAlchemy's pool does
        except sqlite3.Error:
            raw.close()
            return
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(raw)
                return
        raw.close()

    @contextmanager
    def connect(self) -> Iterator[SqliteConnection]:
        """A connection; what it leaves uncommitted is rolled back when it is returned."""
        raw = self._checkout()
        try:
            yield SqliteConnection(raw)
        finally:
            self._checkin(raw)

    @contextmanager
    def begin(self) -> Iterator[SqliteConnection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        raw = self._checkout()
        try:
            try:
                yield SqliteConnection(raw)
            except BaseException:
                raw.rollback()
                raise
            raw.commit()
        finally:
            self._checkin(raw)

    def dispose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for raw in idle:
            raw.close()


def plain_path(url: str, options: dict[str, Any]) -> str | None:
    """The file of a SQLite URL this module can open as SQLAlchemy would, else None.

    ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``, with no driver options:
    a query string, ``%``-escapes, ``:memory:`` or ``options:`` (which only SQLAlchemy knows) keep
    the resource on SQLAlchemy.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("sqlite", "sqlite+pysqlite") or options:
        return None
    if not rest.startswith("/") or "?" in rest or "%" in rest:
        return None
    path = rest[1:]
    if not path or path == ":memory:":
        return None
    return path


# -- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as SQLAlchemy compiles the column's type for SQLite: TEXT, BIGINT, VARCHAR(16), …
    nullable: bool = True
    primary_key: bool = False
    index: bool = False


def create_table_sql(table: str, columns: Sequence[Column]) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` and its ``CREATE INDEX IF NOT EXISTS`` statements, as
    SQLAlchemy writes them for SQLite (same types, NOT NULL, a table-level primary key, indexes
    named ``ix_<table>_<column>``)."""
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


def create_table(
    engine: SqliteEngine, table: str, columns: Sequence[Column], *, indexes: bool = True
) -> None:
    """Create ``table`` and its indexes unless they exist (no check first: processes starting
    together on one file would all see no table). ``indexes=False``: the table only (the
    indexes once columns an existing table lacks are added: ``create_indexes``)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(create_table_sql(table, columns)[0])
    if indexes:
        create_indexes(engine, table, columns)


def create_indexes(engine: SqliteEngine, table: str, columns: Sequence[Column]) -> None:
    """``CREATE INDEX IF NOT EXISTS`` for each indexed column."""
    with engine.begin() as conn:
        for statement in create_table_sql(table, columns)[1:]:
            conn.exec_driver_sql(statement)


def table_columns(engine: SqliteEngine, table: str) -> list[str]:
    """The table's column names as the file has them now ([] when there is no such table)."""
    with engine.connect() as conn:
        return [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({quote(table)})")]


def unique_keys(engine: SqliteEngine, table: str) -> list[set[str]]:
    """The column sets the table's primary key and unique indexes make unique."""
    with engine.connect() as conn:
        info = conn.exec_driver_sql(f"PRAGMA table_info({quote(table)})").fetchall()
        keys = [{row[1] for row in info if row[5]}]
        for row in conn.exec_driver_sql(f"PRAGMA index_list({quote(table)})").fetchall():
            if row[2]:  # unique (a primary key's own index is one too)
                cols = conn.exec_driver_sql(f"PRAGMA index_info({quote(row[1])})").fetchall()
                keys.append({c[2] for c in cols})
    return keys
