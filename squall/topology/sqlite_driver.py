"""SQLite files on the plain ``sqlite3`` driver, for components that write driver SQL only
(``driver_engine.py`` says why and what is shared with ``pg_driver.py``).

Same connection settings as the SQLAlchemy engine squall creates for a file
(``CONNECTION_PRAGMAS``: WAL, ``synchronous=FULL``, a checkpoint every 10,000 pages), the resource's ``connect_timeout`` as the busy timeout, the driver's default
transaction handling, connections pooled and rolled back when returned.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from squall.topology.driver_engine import (
    Column,
    Dialect,
    DriverConnection,
    DriverEngine,
    create_indexes,
    create_table,
    create_table_sql,
    quote,
)

__all__ = [
    "CONNECTION_PRAGMAS",
    "DIALECT",
    "POOL_SIZE",
    "Column",
    "SqliteConnection",
    "SqliteEngine",
    "create_indexes",
    "create_table",
    "create_table_sql",
    "own_adapter",
    "plain_path",
    "quote",
    "table_columns",
    "unique_keys",
]

#: Connections kept open when returned (SQLAlchemy's QueuePool default for a SQLite file).
POOL_SIZE = 5
#: Every connection to a SQLite file, on this driver and on SQLAlchemy's (``resources.py``):
#: write-ahead log with an fsync of the log at each commit (durable, readers never block the
#: writer), and the log copied back into the database every 10,000 pages (~40 MB) instead of
#: SQLite's 1,000: a warehouse index with random keys dirties the same pages batch after batch,
#: and each checkpoint copies a page once however often it changed since the last one.
CONNECTION_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA wal_autocheckpoint=10000",
)

#: Values ``sqlite3`` binds only after "adapting" them: without an adapter registered for their
#: type it asks the ``PrepareProtocol`` type for ``__adapt__`` — an AttributeError formatted and
#: cleared per parameter (~2.5k instructions; a third of the example's row values are None or a
#: bool). These adapters give what the driver binds anyway (None stays NULL, a bool its
#: integer), found in the registry first. Registered only where none is: an application's,
#: registered before or after, is used as it would be without these.
_SAME_VALUE_ADAPTERS = ((type(None), {}.get), (bool, int))
for _type, _adapter in _SAME_VALUE_ADAPTERS:
    if (_type, sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(_type, _adapter)


def own_adapter(type_: type) -> bool:
    """Whether ``sqlite3`` binds values of ``type_`` (None's, bool; int, float) through the
    driver's adapter above (or none): then what it stores for them is the driver's, not an
    application's."""
    found = sqlite3.adapters.get((type_, sqlite3.PrepareProtocol))
    return found is None or any(found is a for t, a in _SAME_VALUE_ADAPTERS if t is type_)


class _Cursor(sqlite3.Cursor):
    """A driver cursor with ``scalar()``, as SQLAlchemy's results have."""

    def scalar(self) -> Any:
        row = self.fetchone()
        return None if row is None else row[0]


DIALECT = Dialect("sqlite", "pysqlite", "qmark")

#: A connection of ``SqliteEngine`` (a SQLite file cannot lose its connection).
SqliteConnection = DriverConnection


class SqliteEngine(DriverEngine):
    """A SQLite file with a small pool of driver connections (thread-safe checkout)."""

    dialect = DIALECT
    driver_error = sqlite3.Error

    def __init__(self, path: str, timeout: float, pool_size: int = POOL_SIZE):
        super().__init__(pool_size)
        self.path = path
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SqliteEngine({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the pool may hand a connection to another thread (as
        # SQLAlchemy's pool does for SQLite files); a connection is used by one thread at a time.
        raw = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        for pragma in CONNECTION_PRAGMAS:
            raw.execute(pragma)
        return raw

    def _cursor(self, raw: sqlite3.Connection) -> _Cursor:
        return raw.cursor(_Cursor)

    def _reset(self, raw: sqlite3.Connection) -> None:
        if raw.in_transaction:
            raw.rollback()  # reset on return, as SQLAlchemy's pool does


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


# -- tables (inspection; creation is driver_engine's) ---------------------------------------


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
