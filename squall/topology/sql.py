"""The one place where squall opens, commits and rolls back SQL transactions, and where a
database failure becomes a squall error (used by the engine's commit, the sinks, the state
stores and the checkpoint store).

A failure that may pass — the connection was lost or killed, the server restarts, a statement
timed out, a deadlock or serialization failure — is a ``TransientError``: the engine retries the
whole batch with backoff, and nothing is acknowledged until a transaction commits. A failure
caused by one row's data — a value too long or out of range, bad encoding, a constraint, an
index row too large — is a ``RecordError``: the engine finds the row's record and dead-letters
it. Everything else (a missing table, no rights) is a ``SinkError``. PostgreSQL failures are told
apart by SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html), never by
message text — but one exception: a connection the server refuses at its start carries no SQLSTATE
(libpq reports it as text, psycopg2 as ``OperationalError`` without ``pgcode``), and a database
that does not exist, an unknown role, a failed password or certificate or a missing
``pg_hba.conf`` entry are misconfigurations, not outages (``refused_for_good``): a ``SinkError``,
never retried. Any other connection failure (refused, timed out, the server starting, too many
clients, an LDAP/RADIUS/PAM/GSSAPI/Ident refusal — its service may be down —, a message in
another language) stays transient.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from squall.errors import RecordError, SinkError, SquallError, TransientError

#: SQLSTATE classes that are transient as a whole: connection exception, insufficient resources.
TRANSIENT_CLASSES = ("08", "53")
#: Single transient SQLSTATEs.
TRANSIENT_CODES = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, a fast shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting or in recovery
        "57P05",  # idle_session_timeout
        "57014",  # query_canceled: statement_timeout, pg_cancel_backend
        "55P03",  # lock_not_available: lock_timeout
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "40003",  # statement_completion_unknown
        "25P03",  # idle_in_transaction_session_timeout
        "25006",  # read_only_sql_transaction: a failover (the writer's address on a standby)
    }
)
#: SQLSTATE classes caused by the data of a row: data exception, integrity constraint violation.
RECORD_CLASSES = ("22", "23")
#: Single SQLSTATEs caused by one row: program_limit_exceeded (an index row or a value too large).
RECORD_CODES = frozenset({"54000"})
#: SQLSTATEs after which the session is gone: the pool must drop the connection. A read-only
#: server too: the next connection resolves the writer's address again (after a failover).
DISCONNECT_CODES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03", "25006"})


class _NoSqlAlchemy:
    """Stands for ``sqlalchemy.exc`` in a process that never imported SQLAlchemy (a SQLite file
    on the plain driver): no SQLAlchemy error can exist there, so no ``isinstance`` matches."""

    class _Never(Exception):
        pass

    SQLAlchemyError = DBAPIError = DisconnectionError = TimeoutError = _Never
    OperationalError = InterfaceError = DataError = IntegrityError = _Never


def _sa_exc() -> Any:
    """``sqlalchemy.exc`` when SQLAlchemy is imported, else a stand-in no error is an instance of."""
    sa = sys.modules.get("sqlalchemy")
    return sa.exc if sa is not None else _NoSqlAlchemy


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg2 ``pgcode``), also under a SQLAlchemy wrapper."""
    orig = getattr(exc, "orig", None)
    return getattr(orig if orig is not None else exc, "pgcode", None)


def _driver_error(exc: BaseException) -> BaseException:
    orig = getattr(exc, "orig", None)
    return orig if orig is not None else exc


@cache
def _psycopg2() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(all psycopg2 errors, its connection-level errors); empty when psycopg2 is not installed."""
    try:
        import psycopg2
    except ImportError:
        return (), ()
    return (psycopg2.Error,), (psycopg2.OperationalError, psycopg2.InterfaceError)


def _lost_connection(exc: BaseException) -> bool:
    """A driver error with no SQLSTATE from a connection-level class (socket closed, EOF, closed)."""
    return sqlstate(exc) is None and isinstance(_driver_error(exc), _psycopg2()[1])


def is_disconnect(exc: BaseException, dbapi_connection: object | None = None) -> bool:
    """True when the connection the error came from cannot be used again."""
    if getattr(dbapi_connection, "closed", 0):  # psycopg2: nonzero once the connection is closed
        return True
    if isinstance(exc, _sa_exc().DBAPIError) and exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    if code is not None:
        return code.startswith("08") or code in DISCONNECT_CODES
    return _lost_connection(exc)


#: What the server answers (FATAL, at connection start) when the connection's own settings are
#: wrong: the same answer on every retry. libpq passes it on as text, without its SQLSTATE
#: (3D000, 28000, 28P01, 42501); ``fe_sendauth: no password supplied`` is libpq's own. Only the
#: methods the server checks alone (password, md5 and scram say "password"; certificate; peer):
#: an LDAP, RADIUS, PAM, GSSAPI, SSPI or Ident refusal is all the client is told also when that
#: service is down or unreachable — an outage, waited for.
_REFUSED_FOR_GOOD = re.compile(
    r'FATAL:\s+(?:database "[^"]*" does not exist|role "[^"]*" does not exist'
    r"|(?:password|certificate|Peer) authentication failed for user"
    r"|no pg_hba\.conf entry for|permission denied for database)"
    r"|fe_sendauth: no password supplied"
)


def refused_for_good(exc: BaseException) -> bool:
    """True when the server refused the connection for a reason a retry cannot change (a database
    that does not exist, an unknown role, a failed authentication, no ``pg_hba.conf`` entry, no
    CONNECT right): a misconfiguration. Only connection errors without SQLSTATE are read."""
    if sqlstate(exc) is not None:
        return False
    err = _driver_error(exc)
    if not isinstance(err, _psycopg2()[1]):
        return False
    return _REFUSED_FOR_GOOD.search(str(err)) is not None


def is_transient(exc: BaseException) -> bool:
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(TRANSIENT_CLASSES) or code in TRANSIENT_CODES
    if refused_for_good(exc):
        return False
    sa_exc = _sa_exc()
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):  # pool checkout timed out
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    busy = _sqlite_busy(exc)
    if busy is not None:
        return busy
    # Connection-level failures without a SQLSTATE.
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or _lost_connection(exc)


def is_record_error(exc: BaseException) -> bool:
    """True when the database refused a row for its data (the row's record is to blame, not the batch)."""
    code = sqlstate(exc)
    if code is not None:
        return code.startswith(RECORD_CLASSES) or code in RECORD_CODES
    err = _driver_error(exc)
    if isinstance(err, sqlite3.DataError | sqlite3.IntegrityError):
        return True
    if isinstance(err, sqlite3.Error):  # "string or blob too big" has no class of its own
        code = getattr(err, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in (
            SQLITE_TOOBIG,
            SQLITE_MISMATCH,
            SQLITE_CONSTRAINT,
        )
    sa_exc = _sa_exc()
    return isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError)


#: SQLite primary result codes that may pass: another connection holds a lock.
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
#: SQLite primary result codes caused by a row: too big, constraint, datatype mismatch.
SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH = 18, 19, 20


def _sqlite_busy(exc: BaseException) -> bool | None:
    """For a SQLite error: True when the database is busy or locked, False for anything else
    (no such table, constraint, disk I/O); None when the error is not SQLite's."""
    err = _driver_error(exc)
    if not isinstance(err, sqlite3.Error):
        return None
    code = getattr(err, "sqlite_errorcode", None)  # extended code; the primary code is its low byte
    return code is not None and (code & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)


def describe(exc: BaseException) -> str:
    """First line of the driver's message, with its SQLSTATE."""
    err = _driver_error(exc)
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    code = sqlstate(exc)
    return f"{text} (SQLSTATE {code})" if code else text


def database_errors() -> tuple[type[BaseException], ...]:
    """Every database error class squall can meet: SQLAlchemy's (when imported), sqlite3's and
    psycopg2's (when installed)."""
    return (_sa_exc().SQLAlchemyError, sqlite3.Error, *_psycopg2()[0])


def as_squall_error(exc: BaseException, where: str) -> BaseException:
    """The squall error for a database failure; other exceptions are returned unchanged."""
    if isinstance(exc, SquallError):
        return exc
    if not isinstance(exc, database_errors()):
        return exc
    if is_transient(exc):
        return TransientError(f"{where}: database unavailable: {describe(exc)}")
    if is_record_error(exc):
        return RecordError(f"{where}: {describe(exc)}")
    return SinkError(f"{where}: {describe(exc)}")


@contextmanager
def sql_errors(where: str) -> Iterator[None]:
    """Re-raise database failures as ``TransientError`` (retried by the engine) or ``SinkError``."""
    try:
        yield
    except Exception as exc:
        mapped = as_squall_error(exc, where)
        if mapped is exc:
            raise
        raise mapped from exc


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """For state stores: failures that may pass → ``TransientError``; every other database error
    → ``SinkError`` (a broken store fails the batch; it is never one record's fault)."""
    try:
        yield
    except database_errors() as exc:
        if is_transient(exc):
            raise TransientError(f"{what}: {describe(exc)}") from exc
        raise SinkError(f"{what}: {describe(exc)}") from exc


@contextmanager
def transaction(engine: Any) -> Iterator[Any]:
    """One transaction on a pooled connection: commit on success, roll back on any failure.

    ``engine``: a SQLAlchemy engine, or a plain driver's (``driver_engine``). When the failure
    lost the connection (killed, server restarted), the connection is invalidated so the pool
    never hands it out again — also when the failure came from the raw driver connection (COPY),
    which SQLAlchemy does not see.

    A SQLAlchemy engine made autocommit by the resource's ``options`` (``isolation_level:
    AUTOCOMMIT``) would commit each statement alone (a batch's rows without its checkpoint, a
    ``SET LOCAL`` ignored): ``begin`` takes a transaction there too.
    """
    with begin(engine) as conn:
        try:
            yield conn
        except BaseException as exc:
            dbapi = conn.connection.dbapi_connection if not conn.invalidated else None
            if not conn.invalidated and is_disconnect(exc, dbapi):
                conn.invalidate(exc)
            raise


@contextmanager
def begin(engine: Any) -> Iterator[Any]:
    """``engine.begin()``: one transaction, committed when the block ends, rolled back when it
    raises — also on a SQLAlchemy engine made autocommit by the resource's ``options``, where
    ``begin()`` opens none: the connection takes the database's default isolation level for the
    block (SQLAlchemy sets it back when the connection returns to the pool). A driver engine is
    never autocommit (``options:`` keep a resource on SQLAlchemy)."""
    if not hasattr(engine, "execution_options"):  # a driver engine (driver_engine.py)
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        if is_autocommit(conn):
            conn.execution_options(isolation_level=conn.default_isolation_level)
        with conn.begin():
            yield conn


def is_autocommit(conn: Any) -> bool:
    """True when ``conn`` (SQLAlchemy's) commits each statement alone: its driver connection is
    in autocommit mode (psycopg2, psycopg; ``sqlite3``: no isolation level, or ``autocommit``)."""
    if not hasattr(conn, "execution_options"):  # a driver engine's connection: never
        return False
    raw = conn.connection.dbapi_connection
    if getattr(raw, "autocommit", None) is True:  # (sqlite3's is an int: -1 in legacy mode)
        return True
    return type(raw).__module__ == "sqlite3" and raw.isolation_level is None


def create_table(engine: Any, table: Any, *, indexes: bool = True) -> None:
    """Create ``table`` (a SQLAlchemy ``Table``) and its indexes unless they exist, without a check
    first: processes starting together on one database (a KCL worker's record processors, one
    per shard; Lambda containers) would all see no table, and all but one would fail with
    "already exists". ``indexes=False``: the table only (``create_indexes`` once columns an
    existing table lacks are added)."""
    import sqlalchemy as sa

    from squall.topology.driver_engine import lock_ddl

    with engine.begin() as conn:
        lock_ddl(conn, engine.dialect.name, table.name)  # (IF NOT EXISTS alone: see lock_ddl)
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
    if indexes:
        create_indexes(engine, table)


def create_indexes(engine: Any, table: Any) -> None:
    """``CREATE INDEX IF NOT EXISTS`` for each index of ``table``."""
    import sqlalchemy as sa

    from squall.topology.driver_engine import lock_ddl

    with engine.begin() as conn:
        lock_ddl(conn, engine.dialect.name, table.name)
        for index in table.indexes:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
