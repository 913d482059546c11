"""Shared resources (warehouse, state store, Redis): opened once per process, used by many components.

In YAML: ``resources: {warehouse: {url: "sqlite:///pistats.db"}}``. The URL scheme picks the
kind: ``sqlite``/``postgresql`` give a SQLAlchemy engine, ``redis``/``rediss`` a Redis client.
Connections open lazily on first use (in Lambda: during init, outside the handler).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squall.errors import SquallError
from squall.redact import redact_text, redact_url

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "redshift", "mysql")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class ResourceConfig(BaseModel):
    """One named resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Connection URL; the scheme picks the kind (sqlite, postgresql, redis).")
    pool_size: int = Field(5, ge=1, description="Connections kept open (SQL).")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a connection.")
    options: dict[str, Any] = Field(default_factory=dict, description="Driver-specific options.")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        check_url(url)
        return url

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.split("+", 1)[0].lower()


redact = redact_url  # the name this module always exported


def check_url(url: str) -> None:
    """Refuse at load time what would fail (or silently mean something else) when the resource opens.

    Messages show the URL with its password masked. An empty URL is left to the substitution
    that emptied it (``${VAR}`` unset is reported there) or to the component that needs it.
    """
    if not url:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"'{redact_url(url)}' is not a valid URL: {exc}") from None
    written = url.split("://", 1)[0] if "://" in url else parts.scheme  # as written, for messages
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme in SQL_SCHEMES:
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            sa.make_url(url).get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown SQL driver '{written}' in '{redact_url(url)}' (e.g. sqlite, "
                             "postgresql, postgresql+psycopg2)") from None
        except (ArgumentError, ValueError) as exc:
            raise ValueError(f"'{redact_url(url)}' is not a valid SQLAlchemy URL: {redact_text(str(exc))}") from None
    elif scheme in REDIS_SCHEMES:
        db = parts.path.strip("/") if scheme != "unix" else ""
        for key, value in parse_qsl(parts.query):
            if key == "db":
                db = value
        if db and not db.isdigit():
            raise ValueError(f"'{redact_url(url)}': Redis database '{db}' is not a number (redis://host:port/0)")
    else:
        raise ValueError(f"unknown URL scheme '{written}' in '{redact_url(url)}': use one of "
                         f"{', '.join(SQL_SCHEMES + REDIS_SCHEMES)}")


class Resources:
    """Named resources of one process. Thread-safe lazy opening; ``close`` releases all."""

    def __init__(self, configs: dict[str, ResourceConfig], base_dir: Path | None = None):
        self.configs = dict(configs)
        self.base_dir = base_dir
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def config(self, name: str) -> ResourceConfig:
        try:
            return self.configs[name]
        except KeyError:
            raise SquallError(f"no resource named '{name}' (defined: {', '.join(self.configs) or 'none'})") from None

    def sql(self, name: str):  # -> sqlalchemy.Engine
        """The SQLAlchemy engine of a SQL resource, created once; resources with the same
        settings (e.g. ``warehouse`` and ``state`` on one database) share one engine."""
        cfg = self.config(name)
        if cfg.scheme not in SQL_SCHEMES:
            raise SquallError(f"resource '{name}' is not a SQL database ({redact(cfg.url)})")
        return self._get(self.identity(name), lambda: _sql_engine(cfg, self.base_dir))

    def identity(self, name: str) -> str:
        """Equal for resources that reach the same database with the same settings: the engine
        puts the rows, states and checkpoints of such resources in one transaction."""
        return "resource:" + self.config(name).model_dump_json()

    def redis(self, name: str):  # -> redis.Redis
        """The Redis client of a Redis resource, created once."""
        cfg = self.config(name)
        if cfg.scheme not in REDIS_SCHEMES:
            raise SquallError(f"resource '{name}' is not Redis ({redact(cfg.url)})")
        return self._get(name, lambda: _redis_client(cfg))

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

    def close(self) -> None:
        with self._lock:
            for obj in self._open.values():
                if hasattr(obj, "dispose"):
                    obj.dispose()
                elif hasattr(obj, "close"):
                    obj.close()
            self._open.clear()


def _sql_engine(cfg: ResourceConfig, base_dir: Path | None):
    import sqlalchemy as sa

    kwargs: dict[str, Any] = {}
    url = sa.make_url(cfg.url)
    if cfg.scheme == "sqlite" and url.database and url.database != ":memory:":
        # Relative SQLite paths resolve against the topology file, like every other path in it.
        path = Path(url.database).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        url = url.set(database=str(path))
    if url.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 defaults to psycopg 3; squall ships psycopg2 (the `postgres` extra).
        url = url.set(drivername="postgresql+psycopg2")
    if cfg.scheme == "sqlite":
        kwargs["connect_args"] = {"timeout": cfg.connect_timeout}
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


def _sqlite_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite files in write-ahead-log mode with ``synchronous=FULL``: every commit is durable
    (fsync of the log) with one fsync instead of the rollback journal's several, and readers
    never block the writer."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _redis_client(cfg: ResourceConfig):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The engine retries transient errors with its own bounded backoff; redis-py's default
    # (10 retries) would hide an outage for seconds per call on top of that.
    options = {"retry": Retry(NoBackoff(), 0), **cfg.options}
    return redis.Redis.from_url(
        cfg.url, socket_timeout=cfg.connect_timeout, socket_connect_timeout=cfg.connect_timeout, **options
    )
