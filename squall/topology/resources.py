"""Shared resources (warehouse, state store, Redis): opened once per process, used by many components.

In YAML: ``resources: {warehouse: {url: "sqlite:///pistats.db"}}``. The URL scheme picks the
kind: ``sqlite``/``postgresql`` give a SQLAlchemy engine, ``redis``/``rediss`` a Redis client.
Connections open lazily on first use (in Lambda: during init, outside the handler). A SQLite
file or a PostgreSQL database used only by components that write driver SQL (warehouse,
subscription state, the batch's transaction, the run lock) opens on its plain driver instead
(``database``; ``driver_engine.py``): no SQLAlchemy import in such a process.

Size (~565 lines): the resource registry and, beside it, the one rule every Redis user shares
for what a Redis error is (an outage, a misconfiguration, a record's), kept with the clients.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from squall.errors import (
    Problem,
    SinkError,
    SquallError,
    TopologyError,
    TransientError,
    cannot_write,
)
from squall.redact import redact_url
from squall.topology.driver_engine import DriverEngine
from squall.topology.resource_config import REDIS_SCHEMES, SQL_SCHEMES, ResourceConfig
from squall.topology.sqlite_driver import CONNECTION_PRAGMAS, SqliteEngine, plain_path

if TYPE_CHECKING:
    from squall.topology.model import Topology

T = TypeVar("T")

#: The driver each kind of resource opens on, and the extra that installs it.
_DRIVERS = {"postgresql": ("psycopg2", "postgres"), "redis": ("redis", "redis")}


class WrongResourceKind(SquallError):
    """A component named a resource of another kind (a Redis URL for a SQL warehouse): the
    engine places it at the option naming the resource."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)


class Resources:
    """Named resources of one process. Thread-safe lazy opening; ``close`` releases all."""

    def __init__(
        self,
        configs: dict[str, ResourceConfig],
        base_dir: Path | None = None,
        locate: Callable[[str, str], Problem] | None = None,
    ):
        """``locate(name, message)``: the problem at resource ``name``'s URL in the topology file
        (``Topology.resource_problem``; ``for_topology`` passes it)."""
        self.configs = dict(configs)
        self.base_dir = base_dir
        self._locate = locate or (
            lambda name, text: Problem("", 0, 0, f"resources.{name}.url", text)
        )
        self._open: dict[str, Any] = {}
        self._retired: list[Any] = []  # driver engines a SQLAlchemy engine replaced (closed last)
        self._lock = threading.Lock()

    @classmethod
    def for_topology(cls, topology: Topology) -> Resources:
        """The resources of ``topology``, their problems located in its file."""
        return cls(topology.resources, topology.base_dir, topology.resource_problem)

    def no_folder(self, name: str, exc: OSError) -> TopologyError:
        """The folder of a SQLite file cannot be created (`sqlite:////data/x.db` on a laptop), or
        the file cannot be created in it (a read-only folder: `sqlite:///state.db` beside a
        topology mounted from a ConfigMap): at the resource's URL, not a bare FileNotFoundError
        naming the folder alone, nor sqlite3's "unable to open database file" naming nothing."""
        cfg = self.config(name)
        written = plain_path(cfg.url, cfg.options)
        folder = Path(exc.filename) if exc.filename else None
        if folder is not None and folder.is_dir():
            what = f"cannot create its SQLite file in the folder {folder}"
        else:
            what = f"cannot create the folder{f' {folder}' if folder else ''} of its SQLite file"
        return TopologyError(
            self._locate(name, f"resource '{name}': {what}: {cannot_write(exc, written)}")
        )

    def missing_driver(self, name: str, exc: ImportError) -> TopologyError:
        """A resource's driver cannot be imported (its extra is not installed): at the resource's
        URL, with the ``pip install`` that adds it — not a bare ``ModuleNotFoundError`` from
        whichever component opened the resource first (the run lock, a sink, a bolt's store).
        A driver that is installed but fails to import (a module inside it, its libpq) is said
        as such: the extra's ``pip install`` would answer "already satisfied"."""
        kind = "redis" if self.config(name).scheme in REDIS_SCHEMES else self.config(name).scheme
        module, extra = _DRIVERS.get(kind, (exc.name or "its driver", None))
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == module:
            install = f"pip install 'squall[{extra}]'" if extra else "install it"
            if module in ("sqlalchemy", "redis"):  # a zip holds them when the topology declares
                install += (
                    f"; a zip of `squall package` holds {module} only when the topology declares "
                    f"it: package with --with {module}, or have your component's "
                    f"packages(config) return {{'{module}'}}"
                )
            text = f"needs the {module} driver, which cannot be imported here ({exc}): {install}"
        else:  # installed, but a module inside it (its libpq, a C extension) does not load
            text = (
                f"needs the {module} driver, which is installed but fails to import here ({exc}): "
                "repair that install (what the error names), not a pip install of the extra"
            )
        return TopologyError(self._locate(name, f"resource '{name}' {text}"))

    def config(self, name: str) -> ResourceConfig:
        try:
            return self.configs[name]
        except KeyError:
            raise SquallError(
                f"no resource named '{name}' (defined: {', '.join(self.configs) or 'none'})"
            ) from None

    def sql(self, name: str):  # -> sqlalchemy.Engine
        """The SQLAlchemy engine of a SQL resource, created once; resources with the same
        settings (e.g. ``warehouse`` and ``state`` on one database) share one engine."""
        cfg = self._sql_config(name)
        key = self.identity(name)
        with self._lock:
            opened = self._open.get(key)
            if opened is None or isinstance(opened, DriverEngine):
                # A driver engine handed out before stays with its components (two pools on one
                # database, as two processes); from now on ``database`` gives this one, so the batch's
                # transaction runs on a connection that SQLAlchemy components can use too.
                try:
                    self._open[key] = _sql_engine(cfg, self.base_dir)
                except ImportError as exc:  # SQLAlchemy imports the dialect's driver here
                    raise self.missing_driver(name, exc) from None
                except OSError as exc:  # the SQLite file's folder cannot be made
                    raise self.no_folder(name, exc) from None
                if opened is not None:
                    self._retired.append(opened)
            return self._open[key]

    def database(self, name: str):  # -> sqlalchemy.Engine | DriverEngine
        """The lightest engine of a SQL resource for code that writes driver SQL only (``begin``,
        ``connect``, ``exec_driver_sql``, ``dialect``): the plain driver (``sqlite3`` for a
        SQLite file, ``psycopg2`` for PostgreSQL) while no component asked ``sql`` for SQLAlchemy
        on that database, else ``sql``'s engine."""
        cfg = self._sql_config(name)
        key = self.identity(name)
        with self._lock:
            opened = self._open.get(key)
        if opened is not None:
            return opened
        path = plain_path(cfg.url, cfg.options)
        if path is not None:
            try:
                return self._get(
                    key,
                    lambda: SqliteEngine(
                        _sqlite_file(path, self.base_dir), cfg.connect_timeout, cfg.pool_size
                    ),
                )
            except OSError as exc:
                raise self.no_folder(name, exc) from None
        if cfg.scheme == "postgresql":
            try:
                from squall.topology import pg_driver
            except ImportError as exc:  # no psycopg2 (the `postgres` extra)
                raise self.missing_driver(name, exc) from None
            engine = pg_driver.engine_for(cfg.url, cfg.options, cfg.connect_timeout, cfg.pool_size)
            if engine is not None:
                return self._get(key, lambda: engine)
        return self.sql(name)

    def _sql_config(self, name: str) -> ResourceConfig:
        cfg = self.config(name)
        if cfg.scheme not in SQL_SCHEMES:
            raise WrongResourceKind(
                name, f"resource '{name}' is not a SQL database ({redact_url(cfg.url)})"
            )
        return cfg

    def identity(self, name: str) -> str:
        """Equal for resources that reach the same database with the same settings: the engine
        puts the rows, states and checkpoints of such resources in one transaction."""
        return "resource:" + self.config(name).model_dump_json()

    def redis(self, name: str):  # -> redis.Redis
        """The Redis client of a Redis resource, created once."""
        cfg = self.config(name)
        if cfg.scheme not in REDIS_SCHEMES:
            raise WrongResourceKind(name, f"resource '{name}' is not Redis ({redact_url(cfg.url)})")
        try:
            return self._get(name, lambda: _redis_client(cfg))
        except ImportError as exc:  # no redis-py (the `redis` extra)
            raise self.missing_driver(name, exc) from None

    def open_store(
        self,
        name: str,
        where: tuple[str, str],
        *,
        sql: Callable[[Any], T],
        redis: Callable[[Any], T],
        driver_sql: bool = False,
    ) -> T:
        """A component's store on resource ``name``: ``sql(engine)`` or ``redis(client)`` by the
        resource's kind (``driver_sql``: the store writes driver SQL only, and gets
        ``database``'s engine, else ``sql``'s). Any problem (no such resource, another kind, a ``ValueError`` of the
        callables) is a ``TopologyError`` at ``where`` (topology name, ``<component>.<field>``)."""
        try:
            kind = self.kind(name)
            if kind == "redis":
                return redis(self.redis(name))
            if kind == "sql":
                return sql(self.database(name) if driver_sql else self.sql(name))
            raise ValueError(f"store resource '{name}' is neither SQL nor Redis")
        except TopologyError:  # located already (a driver not installed: at the resource's URL)
            raise
        except (SquallError, ValueError) as exc:
            raise TopologyError(Problem(where[0], 0, 0, where[1], str(exc))) from exc

    def kind(self, name: str) -> str:
        scheme = self.config(name).scheme
        if scheme in SQL_SCHEMES:
            return "sql"
        if scheme in REDIS_SCHEMES:
            return "redis"
        return scheme

    def _get(self, name: str, factory):
        with self._lock:
            if name not in self._open:
                self._open[name] = factory()
            return self._open[name]

    def disconnect(self) -> None:
        """Close every idle pooled connection and keep the engines and clients usable: their
        next use connects again. For a process about to be snapshotted (Lambda SnapStart), whose
        copies must not share, or find dead, the sockets of the original."""
        with self._lock:
            opened = [*self._open.values(), *self._retired]
        for obj in opened:
            if hasattr(obj, "dispose"):  # SQLAlchemy's engine or a plain driver's
                obj.dispose()
            elif hasattr(obj, "connection_pool"):  # a redis client
                obj.connection_pool.disconnect()

    def close(self) -> None:
        with self._lock:
            for obj in [*self._open.values(), *self._retired]:
                if hasattr(obj, "dispose"):
                    obj.dispose()
                elif hasattr(obj, "close"):
                    obj.close()
            self._open.clear()
            self._retired.clear()


def on_plain_driver(cfg: ResourceConfig) -> bool:
    """Whether ``Resources.database`` opens this SQL resource on its plain driver (``sqlite3``,
    psycopg2) rather than SQLAlchemy's engine: a SQLite file or a PostgreSQL URL ``pg_url`` reads,
    without ``options:``. ``squall package`` keeps SQLAlchemy for a resource that is not."""
    if plain_path(cfg.url, cfg.options) is not None:
        return True
    if cfg.scheme != "postgresql" or cfg.options:
        return False
    from squall.topology import pg_url

    try:
        return pg_url.connect_args(cfg.url) is not None
    except ValueError:  # SQLAlchemy's engine says what is wrong
        return False


def _sql_engine(cfg: ResourceConfig, base_dir: Path | None):
    import sqlalchemy as sa

    kwargs: dict[str, Any] = {}
    url = sa.make_url(cfg.url)
    # A scheme is case-insensitive (`POSTGRESQL://` validates and opens on the plain drivers);
    # SQLAlchemy looks its dialect up by the name as written.
    url = url.set(drivername=url.drivername.lower())
    if cfg.scheme == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=_sqlite_file(url.database, base_dir))
    if url.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 defaults to psycopg 3; squall ships psycopg2 (the `postgres` extra).
        url = url.set(drivername="postgresql+psycopg2")
    if cfg.scheme == "sqlite":
        kwargs["connect_args"] = {"timeout": cfg.connect_timeout}
        if url.database and url.database != ":memory:":  # a file: SQLAlchemy's QueuePool
            kwargs["pool_size"] = cfg.pool_size
    else:
        kwargs.update(pool_size=cfg.pool_size, pool_pre_ping=True)
        if cfg.scheme in ("postgresql", "postgres"):
            kwargs["connect_args"] = {"connect_timeout": max(1, int(cfg.connect_timeout))}
    options = dict(cfg.options)
    if "connect_args" in options:  # merge, so connect_timeout survives
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), **options.pop("connect_args")}
    kwargs.update(options)
    engine = sa.create_engine(url, **kwargs)
    if cfg.scheme == "sqlite" and url.database and url.database != ":memory:":
        sa.event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_file(database: str, base_dir: Path | None) -> str:
    """A SQLite file's path: relative paths resolve against the topology file, like every other
    path in it; its folder is created."""
    path = Path(database).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not os.access(path.parent, os.W_OK):
        # SQLite would say only "unable to open database file" at the first connection
        code = errno.EROFS if os.statvfs(path.parent).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(path.parent))
    return str(path)


def _sqlite_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite files in write-ahead-log mode with ``synchronous=FULL``: every commit is durable
    (fsync of the log) with one fsync instead of the rollback journal's several, and readers
    never block the writer."""
    cursor = dbapi_connection.cursor()
    try:
        for pragma in CONNECTION_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _redis_client(cfg: ResourceConfig):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The engine retries transient errors with its own bounded backoff; redis-py's default
    # (10 retries) would hide an outage for seconds per call on top of that.
    options = {"retry": Retry(NoBackoff(), 0), **cfg.options}
    single = options.pop("single_connection_client", False)  # the client's, as from_url's
    pool = _failover_pool().from_url(
        cfg.url,
        socket_timeout=cfg.connect_timeout,
        socket_connect_timeout=cfg.connect_timeout,
        **options,
    )
    client = redis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True  # as Redis.from_url's: close() closes the pool
    if single:  # the client's one connection, never released: dropped before its next command
        client.connection.squall_held = True
    return client


@functools.cache
def _failover_pool() -> type:
    """A connection pool that drops a connection answered ``READONLY`` when it comes back.

    Such a connection is to a primary demoted by a failover: redis-py keeps it (an error
    answer, not a lost connection), so every retry would ask the old primary again while the
    endpoint's name already leads to the new one. Dropped, the next use connects anew.

    Not by adding ``ReadOnlyError`` to the client's ``Retry``: redis-py turns an error its
    ``Retry`` handles into a ``WatchError`` in a ``WATCH``ed transaction, which
    ``Redis.transaction`` (and the usual ``WATCH`` loop) runs again at once — on the demoted
    primary, for as long as the endpoint leads to it: a batch spinning, a connection a try.
    The answer is noted as it is read (a pipeline reads on past it) and acted on at release;
    a ``single_connection_client``'s connection, never released, before it sends again (only
    it: a pooled one sends again before release in a ``WATCH``, whose watch a new connection
    would silently lose).
    """
    import redis

    read_only = redis.exceptions.ReadOnlyError

    @functools.cache
    def dropping(connection_class: type) -> type:
        def read_response(self, *args, **kwargs):
            try:
                return connection_class.read_response(self, *args, **kwargs)
            except read_only:
                self.squall_demoted = True
                raise

        def send_packed_command(self, *args, **kwargs):
            if getattr(self, "squall_held", False) and getattr(self, "squall_demoted", False):
                self.squall_demoted = False
                self.disconnect()  # the send connects anew
            return connection_class.send_packed_command(self, *args, **kwargs)

        methods = {"read_response": read_response, "send_packed_command": send_packed_command}
        return type(connection_class.__name__, (connection_class,), methods)

    class FailoverPool(redis.ConnectionPool):
        def __init__(self, connection_class: type = redis.Connection, **kwargs: Any):
            super().__init__(connection_class=dropping(connection_class), **kwargs)

        def release(self, connection: Any) -> None:
            if getattr(connection, "squall_demoted", False):
                connection.squall_demoted = False
                connection.disconnect()
            super().release(connection)

    return FailoverPool


@functools.cache
def redis_transient_errors() -> tuple[type[Exception], ...]:
    """Redis errors that may pass: connection lost or refused, timeouts, a replica being promoted
    (shared by every component that talks to Redis; redis is imported only when asked)."""
    import redis

    e = redis.exceptions
    return (
        e.ConnectionError,
        e.TimeoutError,
        e.BusyLoadingError,
        e.ReadOnlyError,
        e.TryAgainError,
        e.ClusterDownError,
        e.MasterDownError,
    )


@functools.cache
def redis_refused_for_good() -> tuple[type[Exception], ...]:
    """Redis errors a retry cannot change: a wrong or missing password (``AuthenticationError``,
    which redis-py makes a ``ConnectionError``: it must be told apart from an outage first) and an
    ACL that does not allow the command or key (``NOPERM``). A misconfiguration: ``SinkError``,
    never waited for, never one record's fault."""
    import redis

    e = redis.exceptions
    return (e.AuthenticationError, e.AuthorizationError, e.NoPermissionError)


@functools.cache
def _redis_failures() -> tuple[type[Exception], ...]:
    return (*redis_refused_for_good(), *redis_transient_errors())


@functools.cache
def _redis_response_error() -> type[Exception]:
    import redis

    return redis.exceptions.ResponseError


def redis_busy(answer: object) -> bool:
    """Redis running a script past its time limit answers ``BUSY`` to every command until the
    script ends (anyone's script, on a shared server): an outage, though redis-py gives it no
    class of its own (a plain ``ResponseError``). A pipeline that raises puts the command first:
    ``Command # 1 (HGETALL k) of pipeline caused error: BUSY …``. So does ``MISCONF``: a server
    whose snapshot failed (``stop-writes-on-bgsave-error``) refuses every write until one works;
    and ``NOREPLICAS``: a server short of the replicas ``min-replicas-to-write`` asks for (a
    replica's link down) refuses every write until it is back."""
    if not isinstance(answer, _redis_response_error()):
        return False
    return (
        str(answer)
        .rsplit(" of pipeline caused error: ", 1)[-1]
        .startswith(("BUSY ", "MISCONF ", "NOREPLICAS "))
    )


@functools.cache
def _redis_full() -> type[Exception]:
    import redis

    return redis.exceptions.OutOfMemoryError


def redis_outage(answer: object) -> bool:
    """Whether a Redis error (raised, or a pipeline's answer) is the server's or the
    connection's — it may pass, or is refused for good — never one key's or record's. A server
    refusing every write (``OOM`` under ``maxmemory``/``noeviction``, ``MISCONF``) is one too: a
    user's bolt that let it escape dead-lettered every event of it. (The shared lookup cache's
    write keeps its own rule: such a refusal is logged and the batch served.)"""
    return isinstance(answer, (*_redis_failures(), _redis_full())) or redis_busy(answer)


def redis_failure(what: str, exc: BaseException) -> SquallError:
    """The squall error of a Redis error that may pass or is refused for good (the driver's
    message names the host and port, never the password). A pipeline's error quotes its command
    first (``Command # 1 (SET k <record>) of pipeline caused error: READONLY …``): only the
    server's reason is kept — the record, whatever it holds, went to the logs and the error."""
    reason = str(exc).rsplit(" of pipeline caused error: ", 1)[-1]
    # `unknown command 'MGET', with args beginning with: <key> <record>`: the command's name only
    reason = reason.split(", with args beginning with", 1)[0]
    text = f"{what}: {type(exc).__name__}: {reason}"
    if isinstance(exc, redis_refused_for_good()) or not redis_outage(exc):  # redis_unservable
        return SinkError(f"{text} (a misconfiguration, not an outage: not retried)")
    return TransientError(text)


def redis_unservable(answer: object, wrong_type: bool = False) -> bool:
    """Whether a Redis error (raised, or a pipeline's answer) is a server unable to serve
    squall's commands — a command renamed away or not offered (a proxy), a Cluster endpoint
    (``MOVED``, ``CROSSSLOT``): a misconfiguration, never a record's (squall's commands are its
    own; a record is only an argument stored as it is). Only ``WRONGTYPE`` can be a key's (a
    record's own key that another program wrote) — unless ``wrong_type`` (no record's keys)."""
    if not isinstance(answer, _redis_response_error()) or redis_outage(answer):
        return False
    reason = str(answer).rsplit(" of pipeline caused error: ", 1)[-1]
    return wrong_type or not reason.startswith("WRONGTYPE ")


#: Answers no record can cause, whoever sent the command: the server does not offer it (renamed
#: away, a proxy; called from a Lua script, Redis 7 answers ``Unknown Redis command called from
#: script``). A user's own component's command can fail for a record
#: (``INCRBY`` of a key holding text, ``WRONGTYPE``, a script's own error), so only these count
#: for code squall did not write.
#: (``MOVED``/``ASK``/``CROSSSLOT`` as text: a client or version without their classes below.)
_NEVER_A_RECORDS = (
    "unknown command ",
    "Unknown Redis command called from ",
    *("MOVED ", "ASK ", "CROSSSLOT "),
)


@functools.cache
def _never_a_records() -> tuple[type[Exception], ...]:
    """The classes redis-py gives answers no record can cause, the error code stripped from their
    text (``MOVED 12182 host:port`` is ``MovedError('12182 host:port')``): a Cluster node that does
    not hold the key (``MOVED``, ``ASK``, ``CROSSSLOT``: a client that is not cluster-aware) and a
    script the server does not hold (``NOSCRIPT``: its cache emptied by a restart or a failover;
    the same call fails until the script is loaded again)."""
    import redis

    e = redis.exceptions
    return (e.AskError, e.ClusterCrossSlotError, e.NoScriptError)  # MovedError is an AskError


def redis_cannot_serve(answer: object) -> bool:
    """Whether a Redis error is a server that cannot serve the command at all (``unknown command``,
    ``MOVED``, ``ASK``, ``CROSSSLOT``, ``NOSCRIPT``): a misconfiguration whoever sent it, never a
    record's."""
    if not isinstance(answer, _redis_response_error()):
        return False
    if isinstance(answer, _never_a_records()):
        return True
    reason = str(answer).rsplit(" of pipeline caused error: ", 1)[-1]
    return reason.startswith(_NEVER_A_RECORDS)


@contextlib.contextmanager
def redis_errors(what: str, *, keys_are_records: bool = True) -> Iterator[None]:
    """Redis failures (``redis_outage``) that may pass → ``TransientError``; refused for good or
    ``redis_unservable`` → ``SinkError``. A key's WRONGTYPE passes unchanged (the record's, when
    ``keys_are_records``)."""
    try:
        yield
    except Exception as exc:
        if redis_outage(exc) or redis_unservable(exc, wrong_type=not keys_are_records):
            raise redis_failure(what, exc) from exc
        raise
