"""One ``squall run`` per topology and store at a time: a lock the second process cannot take.

Two local runs of the same topology against the same stores would each read every record and
race on checkpoints and dead letters (every dead letter was written twice). The local runner
takes a lock at start and refuses to run when another process holds it:

- a PostgreSQL **advisory lock** (session level, on a connection held for the run) when the
  checkpoint or warehouse resource is PostgreSQL — it covers processes on other hosts too, and
  the server releases it when the holder dies;
- otherwise an exclusive ``fcntl`` lock on a file next to the SQLite database, or next to the
  topology file when it has no SQL store — the kernel releases it when the holder dies.

The key is the topology name: two different topologies may share a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from squall.errors import SquallError, TransientError
from squall.redact import redact_url, remembered_heads
from squall.topology.model import Topology
from squall.topology.resources import SQL_SCHEMES, Resources
from squall.topology.sqlite_driver import SqliteEngine

log = logging.getLogger("squall.lock")


class AlreadyRunning(SquallError):
    """Another process runs this topology against the same store."""


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` from the topology name."""
    return int.from_bytes(
        hashlib.blake2b(f"squall:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


class RunLock:
    """A held lock; ``release`` gives it back (also done by the OS or server if the process dies)."""

    def __init__(self, where: str, release: Any):
        self.where = where
        self._release = release

    def release(self) -> None:
        if self._release is not None:
            with contextlib.suppress(Exception):  # releasing must not hide the run's own outcome
                self._release()
            self._release = None


def lock_resource(topology: Topology) -> str | None:
    """The SQL resource whose database the run's state lives in: the checkpoint store's, else the warehouse's."""
    sql = {name for name, cfg in topology.resources.items() if cfg.scheme in SQL_SCHEMES}
    cp = getattr(topology.spout, "checkpoint", None)
    if getattr(cp, "store", None) == "sql":
        name = getattr(cp, "resource", None) or "warehouse"
        if name in sql:
            return name
    if "warehouse" in sql:
        return "warehouse"
    for sink in topology.sinks:
        name = getattr(sink, "resource", None)
        if name in sql:
            return name
    return None


def acquire(topology: Topology, resources: Resources) -> RunLock:
    """Take the run lock of ``topology``; raises ``AlreadyRunning`` when another process holds it."""
    name = lock_resource(topology)
    if name is not None:
        engine = resources.database(name)  # a SQLite file: the plain driver's (no SQLAlchemy)
        if engine.dialect.name == "postgresql":
            return _advisory(topology.name, engine, topology.resources[name].url)
        database = engine.path if isinstance(engine, SqliteEngine) else engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            path = Path(database)
            return _file(topology.name, path.with_name(f"{path.name}.{topology.name}.lock"))
    return _file(topology.name, topology.base_dir / f".{topology.name}.squall.lock")


#: Seconds to wait for the lock before refusing to start (a killed run's session closing).
LOCK_WAIT = 3.0
LOCK_POLL = 0.1
#: Per-session server keepalive: a dead client's session ends after ~30 + 3 x 10 seconds.
KEEPALIVE = (
    "SET tcp_keepalives_idle = 30",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 3",
)


def _advisory(name: str, engine: Any, url: str) -> RunLock:
    """``engine``: psycopg2's plain engine (``pg_driver``) or SQLAlchemy's; both run driver SQL.
    ``url``: the resource's, shown masked whole when a secret is the whole URL or its start (the
    engine's rendering of it holds no such secret to mask: its user, host and database showed)."""
    from squall.topology.sql import database_errors, describe, is_transient

    shown = getattr(engine, "shown", None)  # the plain engine's URL, its password masked
    if remembered_heads(url):
        where = redact_url(url)
    else:
        where = redact_url(shown or engine.url.render_as_string(hide_password=True))
    key = (advisory_key(name),)
    conn = None
    try:
        conn = engine.connect()
        # The server drops the session (and the lock) of a host that died without closing it
        # after about a minute, not after the operating system's two-hour keepalive default.
        for setting in KEEPALIVE:
            conn.exec_driver_sql(setting)
        got = False
        deadline = time.monotonic() + LOCK_WAIT
        while True:  # a run killed a moment ago: its session may still be on its way out
            got = conn.exec_driver_sql("select pg_try_advisory_lock(%s)", key).scalar()
            conn.commit()  # the lock is session level: it outlives this transaction
            if got or time.monotonic() >= deadline:
                break
            time.sleep(LOCK_POLL)
    except database_errors() as exc:
        if conn is not None:
            with contextlib.suppress(*database_errors()):
                conn.close()
        error = TransientError if is_transient(exc) else SquallError  # no such database: refused
        raise error(
            f"cannot take the run lock of topology '{name}' in {where}: {describe(exc)}"
        ) from None
    if not got:
        conn.close()
        raise AlreadyRunning(
            f"topology '{name}' is already running against {where} (PostgreSQL advisory lock "
            f"{advisory_key(name)} is held): stop the other `squall run` first"
        )

    def release() -> None:
        try:
            conn.exec_driver_sql("select pg_advisory_unlock(%s)", key)
            conn.commit()
        finally:
            conn.close()

    log.debug("run lock: PostgreSQL advisory lock %s in %s", advisory_key(name), where)
    return RunLock(where, release)


def _file(name: str, path: Path) -> RunLock:
    try:
        # Never through a symlink: the lock sits next to the database, often in a shared
        # directory such as /tmp, where another user's planted link would have this run
        # truncate and overwrite the file it points to.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:  # a read-only directory: run unlocked rather than not at all
        log.warning(
            "cannot create the run lock %s (%s): two runs of '%s' would not be detected",
            path,
            exc.strerror,
            name,
        )
        return RunLock(str(path), None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"topology '{name}' is already running (pid {holder}, lock {path}): "
            "stop the other `squall run` first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    log.debug("run lock: %s", path)
    return RunLock(str(path), release)
