"""The ``resources:`` section of a topology: one validated config per named resource.

Model layer: it validates URLs at load time (``squall validate``) and knows no runtime; the
engine's ``Resources`` (``resources.py``) opens the connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squall.redact import MASK, redact_text, redact_url, remember, remembered_heads
from squall.times import Seconds
from squall.topology import pg_url
from squall.topology.references import PLACEHOLDER, is_placeholder

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "redshift", "mysql")
#: The SQL URL schemes squall runs on: SQLite on Python's ``sqlite3``, PostgreSQL on psycopg2 (a
#: bare ``postgresql://`` included: squall opens it on psycopg2, where SQLAlchemy 2.1 would pick
#: psycopg 3). SQLAlchemy knows more (``mysql://``, ``postgresql+pg8000://``): they passed
#: ``squall validate`` and failed at start.
SUPPORTED_SQL = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg2")
REDIS_SCHEMES = ("redis", "rediss", "unix")

#: A reference's stand-in in a URL's port (``db:${ssm:/db/port}/x`` loaded by ``squall package``,
#: ``graph``, ``validate --skip-secrets``): letters and digits, no port; the run reads a number.
_PORT_STAND_IN = re.compile(rf"(?<=[^/:@]):{PLACEHOLDER}[A-Za-z0-9]*(?=[/?#]|$)")


@dataclass(frozen=True)
class ResourceKind:
    """Marks a config field that names a resource of one kind (``sql`` or ``redis``): the loader
    checks the named resource's URL scheme, so `squall validate` refuses a lookup's SQL source on
    a Redis resource as `squall run` does at start (``Resources.sql`` / ``redis``)."""

    kind: str
    #: The option may name a resource whose URL is empty (``"${KIOSK_CACHE_URL:-}"`` unset): the
    #: option is then off (a lookup's ``shared_cache``). Another option naming such a resource,
    #: or none naming it, leaves the empty URL refused at load.
    optional: bool = False

    def accepts(self, scheme: str) -> bool:
        return scheme in (SQL_SCHEMES if self.kind == "sql" else REDIS_SCHEMES)


#: A config field naming a SQL resource (sqlite, postgresql).
SqlResource = Annotated[str, ResourceKind("sql")]
#: A config field naming a Redis resource.
RedisResource = Annotated[str, ResourceKind("redis")]
#: A config field naming a Redis resource that may have an empty URL: then the option is off.
OptionalRedisResource = Annotated[str, ResourceKind("redis", optional=True)]


class ResourceConfig(BaseModel):
    """One named resource."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str = Field(
        description="Connection URL; the scheme picks the kind (sqlite, postgresql, redis)."
    )
    pool_size: int = Field(5, ge=1, description="Connections kept open (SQL).")
    connect_timeout: Seconds = Field(5.0, gt=0, description="Seconds to wait for a connection.")
    options: dict[str, Any] = Field(default_factory=dict, description="Driver-specific options.")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if is_placeholder(url):  # a whole URL in a secret, not read (squall package)
            return url
        if not url:  # refused by the loader unless only options that may be off name it
            return url
        url = as_postgresql(as_redis_reads(url))
        check_url(_PORT_STAND_IN.sub(":1", url))  # a port in a secret: checked by the run
        return url

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.split("+", 1)[0].lower()


#: What Python's URL parser removes wherever it is in a URL (bpo-43882): tabs and line breaks.
_PARSER_REMOVES = str.maketrans("", "", "\t\r\n")


def as_redis_reads(url: str) -> str:
    """A Redis URL without the tabs and line breaks redis-py's parser (``urllib``) removes: a
    ``redis://cache:6379/0`` kept in a variable with its trailing newline connected to database 0
    — refused at load as SQL URLs are (there it named another database, another SQLite file), it
    stopped a working deployment at its upgrade. Kept as the driver reads it, so squall and
    redis-py see one URL. Other URLs are returned as they are."""
    if url.partition("://")[0].lower() in REDIS_SCHEMES:
        return url.translate(_PARSER_REMOVES)
    return url


#: An empty resource URL's problem, at the URL.
EMPTY = "the URL is empty: set its variable, or write a URL (sqlite:///…)"


def as_postgresql(url: str) -> str:
    """A ``postgres://`` URL (``postgres+psycopg2://``, any ``postgres+driver://``) as
    ``postgresql://…``: the scheme Heroku, Render, Supabase and many a ``DATABASE_URL`` write,
    which libpq and psycopg2 read as PostgreSQL but SQLAlchemy (since 1.4) does not know — it was
    refused at load as an unknown SQL driver. Rewritten here, once, every reader of the resource
    (engines, the plain driver, ``squall package``'s driver checks) sees ``postgresql``. A URL
    that was a secret's whole value, or starts with one (``"${ssm:/db}?sslmode=require"``), is
    masked as written and as rewritten."""
    scheme, sep, rest = url.partition("://")
    lower = scheme.lower()
    if not sep or not (lower == "postgres" or lower.startswith("postgres+")):
        return url
    rewritten = f"postgresql{lower[len('postgres') :]}://{rest}"
    for known in remembered_heads(url):
        if len(known) > len(scheme):  # a secret within the scheme is in the rewritten one too
            remember(rewritten[: len(rewritten) - len(url) + len(known)])
    return rewritten


def check_url(url: str) -> None:
    """Refuse at load time what would fail (or silently mean something else) when the resource opens.

    Messages show the URL with its password masked. An empty URL (``"${WAREHOUSE_URL:-}"`` with
    the variable unset) is refused here (``EMPTY``) and by the loader for a resource (which lets
    it through when only options that may be off name it: a lookup's ``shared_cache``): every
    other component that names the resource, and a Kinesis spout's default checkpoint, would
    refuse it at start; a ``${VAR}`` left unset is reported by the substitution once, not again.
    """
    if not url:
        raise ValueError(EMPTY)
    if any(ord(c) < 32 or ord(c) == 127 for c in url):  # `…/db\n`: database "db\n" not found
        raise ValueError(
            "the URL holds a line break or another control character (a secret or variable "
            "stored with its trailing newline?): remove it"
        )
    if "://" not in url:  # `user:pw@host/db` without its scheme, `postgresql:/…`: no URL parser
        # would find the password in it, so it is masked here, up to the last '@'.
        head, colon, rest = url.partition(":")
        shown = f"{head}:{MASK}@{rest.rpartition('@')[2]}" if colon and "@" in rest else url
        raise ValueError(
            f"'{shown}' is not a URL: write scheme://…, e.g. sqlite:///out/db.sqlite, "
            "postgresql://user@host/db, redis://host:6379/0"
        )
    if url.partition("://")[0].lower() in pg_url.SCHEMES:
        try:  # read as SQLAlchemy reads it (a '/' in a password is no port), without its import
            args = pg_url.connect_args(url)
        except ValueError as exc:
            raise ValueError(f"'{redact_url(url)}' is not a valid URL: {exc}") from None
        if args is not None:
            _check_host(url, pg_url.netloc_host(url))  # a '?host=' socket path may hold '@'
            if not 0 <= args.get("port", 0) <= 65535:  # `:543200`: libpq refuses it at start
                raise ValueError(
                    f"'{pg_url.shown(args)}' is not a valid URL: the port is not in 0-65535"
                )
            return
    if url.partition("://")[0].lower() in ("redis", "rediss"):  # before the port is read
        _check_userinfo_ends(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"'{redact_url(url)}' is not a valid URL: {exc}") from None
    written = url.split("://", 1)[0] if "://" in url else parts.scheme  # as written, for messages
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme in SQL_SCHEMES:
        if written.lower() in ("sqlite", "sqlite+pysqlite") and not parts.netloc:
            return  # sqlite:///path: nothing SQLAlchemy would refuse (and no 100 ms import)
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            sa.make_url(url).get_dialect()
        except NoSuchModuleError:
            if scheme == "redshift":  # the sqlalchemy-redshift dialect is not installed
                raise _unsupported(written, url) from None
            raise ValueError(
                f"unknown SQL driver '{written}' in '{redact_url(url)}' (e.g. sqlite, "
                "postgresql, postgresql+psycopg2)"
            ) from None
        except (ArgumentError, ValueError) as exc:
            raise ValueError(
                f"'{redact_url(url)}' is not a valid SQLAlchemy URL: {redact_text(str(exc))}"
            ) from None
        _check_host(url, sa.make_url(url).host)
        if written.lower() not in SUPPORTED_SQL:
            raise _unsupported(written, url)
    elif scheme in REDIS_SCHEMES:
        db = parts.path.strip("/") if scheme != "unix" else ""
        for key, value in parse_qsl(parts.query):
            if key == "db":
                db = value
        if db and not db.isdigit():
            raise ValueError(
                f"'{redact_url(url)}': Redis database '{db}' is not a number (redis://host:port/0)"
            )
    else:
        raise ValueError(
            f"unknown URL scheme '{written}' in '{redact_url(url)}': use one of "
            f"{', '.join(SQL_SCHEMES + REDIS_SCHEMES)}"
        )


def _unsupported(written: str, url: str) -> ValueError:
    """A SQL URL SQLAlchemy may know but squall does not run on: what is supported instead."""
    hint = (
        " (Amazon Redshift is not supported yet: docs/warehouse.md)"
        if written.lower().split("+")[0] == "redshift"
        else ""
    )
    return ValueError(
        f"squall does not support '{written}' URLs ('{redact_url(url)}'){hint}: use "
        "sqlite:///path.db (Python's sqlite3) or postgresql://… or postgresql+psycopg2://… "
        "(psycopg2, the postgres extra)"
    )


def _check_host(url: str, host: str | None) -> None:
    """An unescaped '@' in a password ends it there (as SQLAlchemy reads the URL): the rest of the
    password would become the host name, which drivers quote in their connection errors."""
    if host and "@" in host:
        raise ValueError(
            f"'{redact_url(url)}': the user or password contains an '@': write it as %40 "
            "(URL-encode the password)"
        )


def _check_userinfo_ends(url: str) -> None:
    """An unescaped '/', '?' or '#' in a password (a Redis URL's) ends the URL's host part there:
    the password's start became the port (quoted by the URL parser's error: "Port could not be
    cast to integer value as '<the password's start>'"), or the host, where a client connected
    (localhost, or another host) with no password or with its end. An '@' after the host part is
    the sign; the message names the characters, never the URL's text around them."""
    rest = url.partition("://")[2]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[cut:]:
        raise ValueError(
            f"'{url.partition('://')[0]}://…': the user or password contains a '/', '?' or '#' "
            "(the URL's host part ends at it): URL-encode the password ('/' is %2F, '?' is %3F, "
            "'#' is %23), or keep the whole URL in the secret, encoded"
        )
