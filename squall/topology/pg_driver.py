"""PostgreSQL on the plain ``psycopg2`` driver, for components that write driver SQL only
(``driver_engine.py`` says why and what is shared with ``sqlite_driver.py``).

The same connection as the SQLAlchemy engine squall creates for a ``postgresql://`` URL:
psycopg2, libpq's reading of the URL (host, port, user, password, database and query parameters
such as ``sslmode``), the resource's ``connect_timeout``, the server's default isolation level
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

from squall.redact import redact_url
from squall.topology.driver_engine import Dialect, DriverEngine

DIALECT = Dialect("postgresql", "psycopg2", "pyformat")
#: URL schemes opened on this driver (``postgres://`` is refused when the topology loads).
SCHEMES = ("postgresql", "postgresql+psycopg2")


class _Cursor(psycopg2.extensions.cursor):
    """A driver cursor with ``scalar()``, as SQLAlchemy's results have."""

    def scalar(self) -> Any:
        row = self.fetchone()
        return None if row is None else row[0]


class PgEngine(DriverEngine):
    """A PostgreSQL database with a small pool of psycopg2 connections."""

    dialect = DIALECT
    driver_error = psycopg2.Error

    def __init__(self, dsn: str, connect_timeout: float, pool_size: int, shown: str):
        super().__init__(pool_size)
        self.dsn = dsn
        self.connect_timeout = max(1, int(connect_timeout))  # libpq takes whole seconds
        self.shown = shown  # the URL with its password masked, for messages

    def __repr__(self) -> str:
        return f"PgEngine({self.shown!r})"

    def _connect(self) -> Any:
        return psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout)

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


def plain_dsn(url: str, options: dict[str, Any]) -> str | None:
    """The libpq URL of a PostgreSQL resource this module opens as SQLAlchemy would, else None
    (another driver, or ``options:`` — engine settings only SQLAlchemy knows)."""
    scheme, sep, rest = url.partition("://")
    if not sep or options or scheme.lower() not in SCHEMES:
        return None
    return "postgresql://" + rest


def engine_for(url: str, options: dict[str, Any], connect_timeout: float, pool_size: int):
    """A ``PgEngine`` for the resource, or None when it stays on SQLAlchemy."""
    dsn = plain_dsn(url, options)
    if dsn is None:
        return None
    return PgEngine(dsn, connect_timeout, pool_size, redact_url(url))
