"""PostgreSQL on the plain ``psycopg2`` driver, for components that write driver SQL only
(``driver_engine.py`` says why and what is shared with ``sqlite_driver.py``).

The same connection as the SQLAlchemy engine squall creates for a ``postgresql://`` URL:
psycopg2, the URL read as SQLAlchemy reads it (``pg_url.py``: host, port, user, password,
database, query parameters such as ``sslmode``), the resource's ``connect_timeout``, at most
``pool_size`` + 10 connections at once, the server's default isolation level
(READ COMMITTED), transactions begun by the driver, and a pool that checks an idle connection
with ``SELECT 1`` before handing it out (SQLAlchemy's ``pool_pre_ping``) and rolls a connection
back when it is returned. A connection the server dropped is never handed out again: a failed
check empties the pool (a server restart dropped them all), and a failure that lost the
connection inside a transaction invalidates it (``sql.transaction``).
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from squall.topology import pg_url
from squall.topology.driver_engine import Dialect, DriverEngine

DIALECT = Dialect("postgresql", "psycopg2", "pyformat")


class _Cursor(psycopg2.extensions.cursor):
    """A driver cursor with ``scalar()``, as SQLAlchemy's results have."""

    def scalar(self) -> Any:
        row = self.fetchone()
        return None if row is None else row[0]


class PgEngine(DriverEngine):
    """A PostgreSQL database with a small pool of psycopg2 connections."""

    dialect = DIALECT
    driver_error = psycopg2.Error

    def __init__(self, args: dict[str, Any], connect_timeout: float, pool_size: int, shown: str):
        """``args``: ``psycopg2.connect``'s keywords (``pg_url.connect_args``)."""
        super().__init__(pool_size)
        # connect_timeout: libpq takes whole seconds; the resource's wins over the URL's
        self.args = {**args, "connect_timeout": max(1, int(connect_timeout))}
        self.shown = shown  # the URL with its password masked, for messages

    def __repr__(self) -> str:
        return f"PgEngine({self.shown!r})"

    def _connect(self) -> Any:
        return psycopg2.connect(**self.args)

    def _cursor(self, raw: Any) -> _Cursor:
        return raw.cursor(cursor_factory=_Cursor)

    def _alive(self, raw: Any) -> bool:
        if raw.closed:
            return False
        try:
            raw.autocommit = True  # the check opens no transaction
            with raw.cursor() as cur:
                cur.execute("SELECT 1")
            raw.autocommit = False
        except psycopg2.Error:
            return False
        return True


def engine_for(url: str, options: dict[str, Any], connect_timeout: float, pool_size: int):
    """A ``PgEngine`` for the resource, or None when it stays on SQLAlchemy: another driver, a
    URL form ``pg_url`` leaves to SQLAlchemy, or ``options:`` (engine settings only SQLAlchemy
    knows)."""
    if options:
        return None
    try:
        args = pg_url.connect_args(url)
    except ValueError:
        return None  # SQLAlchemy's engine says what is wrong (also refused at load)
    if args is None:
        return None
    return PgEngine(args, connect_timeout, pool_size, pg_url.shown(args))
