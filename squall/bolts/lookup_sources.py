"""Where the ``lookup`` bolt finds its records: a SQL table, Redis, an HTTP JSON endpoint.

Every source answers a batch of distinct keys at once with ``fetch(keys) -> Fetched``: the records
found, and the keys whose own value made the query fail (that key's events fail, nobody else's).
A key in neither is missing. A dependency outage raises ``TransientError`` and nothing else; the
bolt changes no event before every fetch of the batch returned.

A key is a tuple of text parts (one part per key path): integer keys are looked up as their
decimal text, which PostgreSQL casts to the column's type and SQLite compares by column affinity.

Size (~1,130 lines): three sources behind one interface, kept together so the interface and its
three implementations (SQL, Redis, HTTP; ~150-300 lines each) read side by side.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import sqlite3
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import redis
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squall import exact_json
from squall.component import HeaderValue, check_request_url
from squall.errors import SinkError, TransientError, quoted
from squall.identifiers import check_identifier
from squall.redact import mask_request_urls, redact_text
from squall.times import Seconds
from squall.topology.references import is_stand_in_url
from squall.topology.resource_config import RedisResource, SqlResource
from squall.topology.resources import (
    redis_errors,
    redis_failure,
    redis_outage,
    redis_refused_for_good,
    redis_transient_errors,
    redis_unservable,
)
from squall.topology.sql import (
    describe,
    is_record_error,
    is_transient,
    refused_for_good,
    sqlstate,
)

Key = tuple[str, ...]
log = logging.getLogger("squall.bolts.lookup")

#: Keys per ``SELECT … IN (…)``: well under SQLite's bound-parameter limit (999 before 3.32).
SQL_CHUNK = 500
#: Keys per ``UNION ALL`` of one-key queries (a key column compared otherwise than by text).
LOOSE_CHUNK = 100
#: Keys per MGET / pipeline.
REDIS_CHUNK = 1000
#: PostgreSQL SQLSTATEs a key's own value can cause: data exceptions (class 22: a text key for an
#: integer column). Not "operator does not exist" (42883) nor "datatype mismatch" (42804): keys
#: are sent as untyped literals, so those are the key column's type (json, point), every key's.
KEY_SQLSTATE_CLASSES = ("22",)
#: HTTP statuses about the endpoint's availability, never about one key: too many requests
#: (its quota), a bad gateway, unavailable (overload, maintenance), a gateway timeout. Only
#: other 5xx (500: the handler failed) may be one key's: ``Fetched.unanswered``.
AVAILABILITY_STATUSES = frozenset({429, 502, 503, 504})
#: HTTP statuses about the request's configuration, never about one key: unauthorized, method
#: not allowed, proxy authentication required. Bad credentials do not mend by waiting: a
#: ``SinkError`` (the batch fails at once, not retried; a KCL worker stops as misconfigured).
CONFIG_STATUSES = frozenset({401, 405, 407})
#: Forbidden: a key the credentials may not read (another tenant's record) in per-key GETs, or
#: a batch POST of that key alone; the credentials' own refusal when each of several keys of
#: the fetch is forbidden, or for a batch POST of several keys.
FORBIDDEN = 403
#: Statuses of a batch POST that one of its keys may cause (bad request, payload too large,
#: unprocessable): the keys are split to find it. Any other (404: a wrong `batch_url`, a
#: redirect) is the endpoint's, even for a batch of one key.
BATCH_KEY_STATUSES = frozenset({400, 413, 422})
#: Redis errors that are the source's, never a key's: those that may pass (connection lost,
#: timeouts, failover) and those refused for good (password, ACL); shared with every Redis user.
REDIS_FAILURES = (*redis_refused_for_good(), *redis_transient_errors())


@dataclass(frozen=True)
class Unanswered:
    """A key an HTTP endpoint answered 500 (another 5xx but 502-504) while it answered others:
    ``reason`` names the endpoint, the key (quoted) and the status; the bolt retries the batch
    and, after repeated attempts, fails that key's events with it."""

    reason: str
    retry_after: float | None = None


@dataclass
class Fetched:
    """What a source answered for a batch of keys."""

    found: dict[Key, Any] = field(default_factory=dict)
    failed: dict[Key, str] = field(default_factory=dict)
    #: HTTP only: keys answered 500 (not 502-504) by an endpoint that answers other keys.
    unanswered: dict[Key, Unanswered] = field(default_factory=dict)


class OptionError(ValueError):
    """A source's option names what the source does not have (a table, a column): ``option`` is
    its path in the bolt's configuration (``source.table``), for a located start-up error."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class KeyProblem(Exception):
    """A query over several keys failed in a way one of the keys may have caused: split and retry.

    ``certain``: the error says it is about a value (a PostgreSQL data exception), so even every
    key failing is the keys' fault — a whole batch of malformed keys is dead-lettered, not retried.
    """

    def __init__(self, reason: str, *, certain: bool = False):
        super().__init__(reason)
        self.certain = certain


def wait_bound(
    timeout: float | None, time_left: Callable[[], float | None] | None, where: str
) -> float | None:
    """The longest a source waits for an answer: its ``timeout`` (None: none), or the runner's
    time left when that is shorter (a Lambda invocation's remaining time less its margin: past
    it the invocation would be killed mid-batch instead of failing the batch cleanly). With no
    time left, nothing is sent: a ``TransientError`` (the engine makes no retry past the time
    left, so the batch fails and comes again)."""
    left = time_left() if time_left is not None else None
    if left is None:
        return timeout
    if left <= 0:
        raise TransientError(f"{where}: no time left before the runner's time limit")
    return left if timeout is None else min(timeout, left)


def isolate(
    keys: list[Key], query: Callable[[list[Key]], dict[Key, Any]], fetched: Fetched
) -> None:
    """Run ``query`` over ``keys``; when it raises ``KeyProblem``, bisect to the keys that cause it.

    When every key of a failing set fails on its own too, the problem is not the keys (a dropped
    table, a revoked grant): that is the dependency's failure, raised as ``TransientError`` so the
    batch is retried and, if it persists, stops without a checkpoint — never a mass dead letter.
    """
    failed: dict[Key, str] = {}
    certain = False

    def run(part: list[Key]) -> None:
        nonlocal certain
        try:
            fetched.found.update(query(part))
        except KeyProblem as exc:
            if len(part) == 1:
                failed[part[0]] = str(exc)
                certain = certain or exc.certain
                return
            mid = len(part) // 2
            run(part[:mid])
            run(part[mid:])

    run(keys)
    if len(keys) > 1 and len(failed) == len(keys) and not certain:
        raise TransientError(
            f"the lookup fails for every key ({len(keys)} keys): {next(iter(failed.values()))}"
        )
    fetched.failed.update(failed)


#: Longest driver message in a key's reason.
MAX_DRIVER_MESSAGE = 300


def key_reason(exc: BaseException) -> str:
    """The driver's message for a key that made the query fail: it quotes the key whole
    (`invalid input syntax for type integer: "…"`: an e-mail address, a URL with its password,
    20,000 characters), so it is masked and cut as a quoted key is; the SQLSTATE is kept."""
    text, code = describe(exc), sqlstate(exc)
    suffix = f" (SQLSTATE {code})" if code else ""
    body = text.removesuffix(suffix)
    shown = redact_text(body[: 4 * MAX_DRIVER_MESSAGE])
    if len(shown) > MAX_DRIVER_MESSAGE or len(body) > 4 * MAX_DRIVER_MESSAGE:
        shown = f"{shown[:MAX_DRIVER_MESSAGE]}… [{len(body)} chars]"
    return shown + suffix


def _unpadded(text: str) -> str:
    return text.rstrip(" ")


def _uuid_text(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def _canonical_form(column_type: Any) -> Callable[[str], str] | None:
    """How a key column's values compare in the database, when not as their exact text."""
    if isinstance(column_type, sa.CHAR | sa.NCHAR):
        return _unpadded
    if isinstance(column_type, sa.Uuid):
        return _uuid_text
    return None


def _folded(key: Key) -> Key:
    """The key as a loose comparison may read it: without case, accents or surrounding blanks,
    a number without its leading or trailing zeros (`K1` → `k1`, `Émile` → `emile`, `01` → `1`)."""
    parts = []
    for part in key:
        text = unicodedata.normalize("NFKD", part.strip()).casefold()
        text = "".join(c for c in text if not unicodedata.combining(c))
        try:  # `1e9999999` overflows normalize(): text as it is
            number = decimal.Decimal(text)
            parts.append(str(number.normalize()) if number.is_finite() else text)
        except (ArithmeticError, ValueError):
            parts.append(text)
    return tuple(parts)


def every_key_failed(keys: list[Key], fetched: Fetched) -> None:
    """Raise ``TransientError`` when each of several keys failed: the source is broken (see
    ``isolate``), and a mass dead letter would checkpoint past all of its traffic. Keys an
    endpoint left unanswered count as failed beside refused ones (not alone: the endpoint that
    answered for them is up)."""
    failed = len(fetched.failed)
    if len(keys) > 1 and failed and failed + len(fetched.unanswered) == len(keys):
        raise TransientError(
            f"the lookup fails for every key ({len(keys)} keys): "
            f"{next(iter(fetched.failed.values()))}"
        )


#: Values copied as they are (a float is checked: NaN and infinities are not JSON).
_PLAIN = frozenset({str, int, bool, type(None)})


def jsonable(value: Any) -> Any:
    """A database value in the JSON shape events carry (and the shared cache stores)."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):  # NaN, ±Infinity: null, as every JSON writer of squall has them
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):  # numeric 'NaN', 'Infinity' (PostgreSQL 14+) too
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def key_text(value: Any) -> str:
    """A database key value as the text the bolt looks keys up by."""
    if (
        isinstance(value, decimal.Decimal)
        and value.is_finite()
        and value == value.to_integral_value()
    ):
        return str(int(value))
    return value if isinstance(value, str) else str(value)


# -- SQL --------------------------------------------------------------------------------------


class SqlSourceConfig(BaseModel):
    """A SQL table, queried with the batch's distinct keys (``IN (…)`` in chunks of 500)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    type: Literal["sql"] = "sql"
    resource: SqlResource = Field(description="SQL resource (sqlite:///…, postgresql://…).")
    table: str = Field(description="Table (or view) to read.")
    db_schema: str | None = Field(None, alias="schema", description="Database schema of the table.")
    key_columns: list[str] | None = Field(
        None,
        description="Column(s) matched against the key path(s), in order (default: the last part of "
        "each key path).",
    )
    columns: list[str] | None = Field(
        None, description="Columns copied into the target (default: every column of the table)."
    )
    timeout: Seconds | None = Field(
        30.0,
        gt=0,
        description="PostgreSQL: seconds a lookup query may take, a wait for a lock included "
        "(`SET LOCAL statement_timeout`); a slower one is cancelled and the batch retried, as "
        "for a source that is down. Null: no bound (a table locked by a migration held the "
        "batch for as long). In Lambda, never longer than the invocation's time left less "
        "squall's margin.",
    )

    @field_validator("table", "db_schema")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        return check_identifier(v, "table name") if v else v

    @field_validator("key_columns", "columns")
    @classmethod
    def _columns(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("list at least one column")
            for name in v:
                check_identifier(name, "column name")
        return v


class SqlSource:
    """``SELECT columns FROM table WHERE key IN (…)`` through the resource's SQLAlchemy engine."""

    def __init__(
        self,
        engine: sa.Engine,
        config: SqlSourceConfig,
        key_columns: list[str],
        time_left: Callable[[], float | None] | None = None,
    ):
        self.engine = engine
        self.config = config
        self.where = f"table {config.db_schema + '.' if config.db_schema else ''}{config.table}"
        try:
            table = sa.Table(
                config.table, sa.MetaData(), schema=config.db_schema, autoload_with=engine
            )
        except sa.exc.NoSuchTableError:
            raise OptionError("source.table", f"{self.where} does not exist") from None
        except sa.exc.SQLAlchemyError as exc:
            if is_transient(exc):
                raise TransientError(f"{self.where}: {describe(exc)}") from exc
            raise ValueError(f"{self.where}: {describe(exc)}") from exc
        # Plain str: reflected names are SQLAlchemy's quoted_name, which orjson refuses as a key
        # (a shared cache's JSON failed every record).
        wanted = list(config.columns) if config.columns else [str(c.name) for c in table.columns]
        unknown = [c for c in (*key_columns, *wanted) if c not in table.columns]
        if unknown:
            if any(c not in table.columns for c in key_columns):  # the defaults: the key paths
                option = "source.key_columns" if config.key_columns else "key"
            else:
                option = "source.columns"
            raise OptionError(
                option, f"{self.where} has no column(s) {', '.join(dict.fromkeys(unknown))}"
            )
        self._table = table
        self.key_columns = [table.c[c] for c in key_columns]
        # Rows are matched back to keys by text; where the database compares otherwise, both
        # sides are brought to one form: CHAR(n) pads with blanks (`k1` comes back `k1      `),
        # a UUID column finds `550E8400-E29B-…` (iOS writes them in capitals) and returns it
        # in small letters.
        self._canon = tuple(_canonical_form(c.type) for c in self.key_columns)
        self._any_canon = any(self._canon)
        self.names = wanted
        # Key columns are selected too (to match rows back to keys); only ``columns`` reach events.
        selected = [table.c[c] for c in dict.fromkeys((*key_columns, *wanted))]
        self._selected = [str(c.name) for c in selected]
        # Built and compiled once; the expanding parameter takes each chunk's keys at execution.
        keys_param = sa.bindparam("keys", expanding=True)
        if len(self.key_columns) == 1:
            match = self.key_columns[0].in_(keys_param)
            self._params = lambda keys: {"keys": [k[0] for k in keys]}
        else:
            match = sa.tuple_(*self.key_columns).in_(keys_param)
            self._params = lambda keys: {"keys": keys}
        self._statement = sa.select(*selected).where(match)
        self.chunk = max(1, SQL_CHUNK // len(key_columns))
        # PostgreSQL's statement_timeout for the query's transaction: the shorter of `timeout`
        # and the runner's time left (a Lambda invocation's, less its margin), read per query.
        self._pg = engine.dialect.name == "postgresql"
        self._time_left = time_left
        #: The table returned a row for a key that is not its text (citext, COLLATE NOCASE):
        #: from then on, keys no row matched by text are asked one at a time (``_query``).
        self.loose = False

    def fetch(self, keys: list[Key]) -> Fetched:
        fetched = Fetched()
        for i in range(0, len(keys), self.chunk):
            isolate(keys[i : i + self.chunk], self._query, fetched)
        return fetched

    def _query(self, keys: list[Key]) -> dict[Key, Any]:
        wanted = set(keys)
        nkeys = len(self.key_columns)
        out: dict[Key, Any] = {}
        rows = self._rows(self._statement, self._params(keys))
        names = self._selected
        plain = _PLAIN
        values: list[tuple[Key, Any]] = []
        strays: list[tuple[Key, Any]] = []  # rows whose key text is no key asked
        for row in rows:
            key = tuple(v if v.__class__ is str else key_text(v) for v in row[:nkeys])
            if key in out:
                continue
            if key not in wanted:
                strays.append((key, row))
                if not self._any_canon:
                    continue
            record = dict(zip(names, row, strict=True))
            value = {
                n: v if (v := record[n]).__class__ in plain else jsonable(v) for n in self.names
            }
            if key in wanted:
                out[key] = value
            if self._any_canon:
                values.append((key, value))
        if self._any_canon and len(out) < len(wanted):
            # A CHAR(n) or UUID column: the keys not found by their exact text get the row of
            # their form (exact matches first: SQLite keeps `k1` and `k1 ` apart).
            canonical: dict[Key, list[Key]] = {}
            for k in keys:
                if k not in out:
                    canonical.setdefault(self._canonical(k), []).append(k)
            for key, value in values:
                for k in canonical.pop(self._canonical(key), ()):
                    out[k] = value
        if strays and self._any_canon:  # those of a key's CHAR(n) or UUID form are explained
            forms = {self._canonical(k) for k in keys}
            strays = [(key, row) for key, row in strays if self._canonical(key) not in forms]
        if strays:
            self.loose = True
        if len(out) < len(wanted) and (self.loose or out):
            # The database compares the key column otherwise than by exact text (PostgreSQL
            # citext, SQLite COLLATE NOCASE, an integer column asked "01"): it returned a row
            # whose key reads otherwise than any key asked (a stray). The keys left are asked
            # again, each in its own arm of one UNION ALL (``_each``): the database itself says
            # which asked key each row is for. A row of a one-key query is that key's. On a table
            # not yet seen to stray, `K1` and `k1` asked together return the row `k1` alone, no
            # stray, and `K1` was reported missing (before 7 December's second review): keys
            # left that read as a found one once case, accents, blanks and a number's zeros are
            # set aside are asked again too (a table compared by text pays nothing more).
            rest = [k for k in keys if k not in out]
            if not self.loose:
                folds = {_folded(k) for k in out}
                rest = [k for k in rest if _folded(k) in folds]
            if len(keys) == 1:
                if strays:
                    record = dict(zip(names, strays[0][1], strict=True))
                    out[keys[0]] = {n: jsonable(record[n]) for n in self.names}
            elif rest:
                for i in range(0, len(rest), LOOSE_CHUNK):
                    out.update(self._each(rest[i : i + LOOSE_CHUNK]))
        return out

    def _each(self, keys: list[Key]) -> dict[Key, Any]:
        """Each key's row, asked by the key alone: ``SELECT i, columns WHERE key = :key_i`` for
        each key ``i``, in one ``UNION ALL`` (a key several rows match: the first one's)."""
        selected = [self._table.c[n] for n in self._selected]
        arms = []
        params: dict[str, str] = {}
        for i, key in enumerate(keys):
            match = []
            for j, (column, part) in enumerate(zip(self.key_columns, key, strict=True)):
                name = f"k{i}_{j}"
                params[name] = part
                match.append(column == sa.bindparam(name, type_=column.type))
            arms.append(
                sa.select(sa.literal_column(str(i)).label("squall_asked"), *selected).where(*match)
            )
        statement = arms[0] if len(arms) == 1 else sa.union_all(*arms)
        names = self._selected
        out: dict[Key, Any] = {}
        for row in self._rows(statement, params):
            key = keys[int(row[0])]
            if key not in out:
                self.loose = True
                record = dict(zip(names, row[1:], strict=True))
                out[key] = {n: jsonable(record[n]) for n in self.names}
        return out

    def _rows(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """The rows of one lookup query; the source's failures raised as the bolt needs them."""
        seconds = wait_bound(self.config.timeout, self._time_left, self.where)
        timeout = (
            f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000))}"
            if seconds is not None and self._pg
            else None
        )
        try:
            with self.engine.connect() as conn:
                if timeout is not None:  # for this transaction only (rolled back at exit)
                    if getattr(conn.connection.dbapi_connection, "autocommit", False):
                        # An engine made autocommit (the resource's `options`): SET LOCAL outside
                        # a transaction is ignored. This connection takes one for the query (its
                        # level is set back when it returns to the pool).
                        conn.execution_options(isolation_level=conn.default_isolation_level)
                    conn.exec_driver_sql(timeout)
                return list(conn.execute(statement, params).all())
        except sa.exc.SQLAlchemyError as exc:
            code = sqlstate(exc)
            if refused_for_good(exc):  # no such database or role, authentication: no key's fault
                raise SinkError(f"{self.where}: {describe(exc)}") from exc
            if is_transient(exc):
                raise TransientError(f"{self.where}: {describe(exc)}") from exc
            if code is not None and not code.startswith(KEY_SQLSTATE_CLASSES):
                # A known SQLSTATE no key can cause (no table, no rights, a key column without
                # equality): the source is broken.
                raise TransientError(f"{self.where}: {describe(exc)}") from exc
            orig = getattr(exc, "orig", None)
            if (
                isinstance(orig, sqlite3.Error)
                and getattr(orig, "sqlite_errorcode", None) is not None
                and not is_record_error(exc)
            ):
                # SQLite gives no SQLSTATE, and a key bound as text causes none of its errors but
                # a value too big or mismatched: no such table or column (dropped or renamed
                # after start), a file unreadable or malformed are the source's. A batch of one
                # key dead-lettered its events for it (several keys: "fails for every key").
                # Python's own error decoding a row's text (invalid UTF-8, no SQLite code) is
                # that row's: its key's events fail, as before.
                raise TransientError(f"{self.where}: {describe(exc)}") from exc
            raise KeyProblem(key_reason(exc), certain=code is not None) from exc
        except ValueError as exc:  # refused by the driver before it is sent (psycopg2: a NUL)
            raise KeyProblem(f"{self.where}: {exc}", certain=True) from exc

    def _canonical(self, key: Key) -> Key:
        """The key with its CHAR(n) and UUID parts in the form the database compares them in."""
        return tuple(f(p) if f else p for p, f in zip(key, self._canon, strict=True))

    def close(self) -> None:
        """The engine belongs to the resource: nothing to release here."""


# -- Redis ------------------------------------------------------------------------------------


class RedisSourceConfig(BaseModel):
    """Redis hashes (pipelined HGETALL) or string values (MGET) named ``key_prefix`` + key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["redis"] = "redis"
    resource: RedisResource = Field(description="Redis resource.")
    key_prefix: str = Field("", description="Prefix of the Redis key names (the key follows it).")
    separator: str = Field(
        ":", description="Joins the parts of a composite key in the Redis key name."
    )
    data: Literal["hash", "json", "text"] = Field(
        "hash",
        description="hash: a Redis hash (its fields become the record); json: a string holding JSON; "
        "text: a string, set as it is.",
    )


#: Marks the reason of a key holding another kind of value than `data` reads (WRONGTYPE).
_WRONG_TYPE = "wrong kind of value: "


class RedisSource:
    """One pipeline of HGETALL (hashes) or one MGET (strings) per 1,000 keys."""

    def __init__(self, client: redis.Redis, config: RedisSourceConfig):
        self.client = client
        self.config = config

    def name(self, key: Key) -> str:
        return self.config.key_prefix + self.config.separator.join(key)

    def fetch(self, keys: list[Key]) -> Fetched:
        fetched = Fetched()
        for i in range(0, len(keys), REDIS_CHUNK):
            chunk = keys[i : i + REDIS_CHUNK]
            names = [self.name(k) for k in chunk]
            with redis_errors("redis source"):
                if self.config.data == "hash":
                    pipe = self.client.pipeline(transaction=False)
                    for n in names:
                        pipe.hgetall(n)
                    answers = pipe.execute(raise_on_error=False)
                else:
                    answers = self.client.mget(names)
            for key, answer in zip(chunk, answers, strict=True):
                self._settle(key, answer, fetched)
        # `data: hash` over strings (WRONGTYPE for every key): the source is misread, not the
        # keys. Values that are not JSON stay each key's own problem (dead letters), or a batch
        # of them would be retried for ever and stall its shard.
        wrong_type = Fetched()
        wrong_type.failed = {k: r for k, r in fetched.failed.items() if _WRONG_TYPE in r}
        every_key_failed(keys, wrong_type)
        return fetched

    def _settle(self, key: Key, answer: Any, fetched: Fetched) -> None:
        # The source's, not the key's: down, refused, or unable to serve (HGETALL renamed away,
        # a Cluster endpoint's MOVED): each key's "wrong kind of value" before, dead-lettered.
        if redis_outage(answer) or redis_unservable(answer):
            raise redis_failure("redis source", answer)
        if isinstance(answer, Exception):  # WRONGTYPE: this key holds another kind of value
            fetched.failed[key] = f"redis key {quoted(self.name(key))}: {_WRONG_TYPE}{answer}"
        elif answer is None or answer == {}:
            return
        elif self.config.data == "hash":
            fetched.found[key] = {
                k.decode(errors="replace"): v.decode(errors="replace") for k, v in answer.items()
            }
        elif self.config.data == "text":
            fetched.found[key] = answer.decode(errors="replace")
        else:
            try:
                value = exact_json.loads(answer)
            except ValueError as exc:  # not JSON; an integer over Python's digit limit
                fetched.failed[key] = (
                    f"redis key {quoted(self.name(key))} does not hold JSON: {exc}"
                )
                return
            if value is not None:  # JSON null: missing, as from an HTTP source
                fetched.found[key] = value

    def close(self) -> None:
        """The client belongs to the resource."""


# -- HTTP -------------------------------------------------------------------------------------


class HttpSourceConfig(BaseModel):
    """An HTTP JSON endpoint: one GET per key (bounded concurrency), or a batch POST when it has one."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["http"] = "http"
    url: str | None = Field(
        None,
        description="GET URL of one record, with {key} where the key goes (URL-encoded); "
        "200 → the JSON record, 404 → missing. Required unless `batch_url` is set.",
    )
    batch_url: str | None = Field(
        None,
        description='POST URL answering many keys: the body is {"keys": [...]}, the answer a JSON object '
        "key → record (absent or null: missing). Used instead of `url` when set.",
    )
    batch_size: int = Field(100, ge=1, description="Keys per batch POST.")
    concurrency: int = Field(8, ge=1, le=256, description="GETs in flight at once (per-key mode).")
    timeout: Seconds = Field(
        5.0,
        gt=0,
        description="Seconds per request; a timeout is a transient error. In Lambda, never longer "
        "than the invocation's time left less squall's margin.",
    )
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        description="Request headers (e.g. an API key from ${ENV}); secret: never logged, "
        "never shown in an error or in the configuration's repr.",
    )
    separator: str = Field(":", description="Joins the parts of a composite key.")
    fail_key_after: int = Field(
        3,
        ge=1,
        description="Attempts in a row a key may be answered 500 while the endpoint answers "
        "other keys before its events fail (dead letter); until then the batch is retried. "
        "Counted per process: keep it at most settings.retry.attempts.",
    )

    @field_validator("url")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        # A whole URL in a secret, not read (squall package, validate --skip-secrets): its
        # stand-in holds no {key}; the run that reads it checks it.
        if v is not None and "{key}" not in v and not is_stand_in_url(v):
            raise ValueError("url needs a {key} placeholder")
        return v if v is None else check_request_url(v)

    @field_validator("batch_url")
    @classmethod
    def _batch_url(cls, v: str | None) -> str | None:
        return v if v is None else check_request_url(v)

    @model_validator(mode="after")
    def _an_endpoint(self) -> HttpSourceConfig:
        if self.url is None and not self.batch_url:
            raise ValueError("an http source needs a url (with {key}) or a batch_url")
        # An option of the other mode would be accepted and do nothing.
        if self.batch_url and "concurrency" in self.model_fields_set:
            raise ValueError(
                "concurrency is for per-key GETs (url); with batch_url the keys go in POSTs of "
                "batch_size keys, one at a time: remove concurrency"
            )
        if not self.batch_url and "batch_size" in self.model_fields_set:
            raise ValueError("batch_size is for batch_url's POSTs: remove it, or set batch_url")
        return self


#: Keys that, put in a URL's path, name another resource: empty, or a dot segment.
_OTHER_RESOURCE = frozenset({"", ".", ".."})


def shown_url(url: str) -> str:
    """A URL for messages: no query string, no credentials (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets (else its port reads as part of it)
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _NoAnswer(Exception):
    """A request the endpoint answered 500 (or another 5xx but 502, 503, 504): the key's, or an
    outage — ``HttpSource`` decides which (``_up``)."""

    def __init__(self, shown: str, what: str, retry_after: float | None = None):
        super().__init__(f"lookup endpoint {shown}: {what}")
        self.shown, self.what, self.retry_after = shown, what, retry_after

    def outage(self) -> TransientError:
        return TransientError(str(self), retry_after=self.retry_after)


class HttpSource:
    """httpx, one client per process; 404 is missing, 429/502/503/504, timeouts and connection
    errors are transient, 401/405/407 (and 403 for each of several keys) a misconfiguration,
    other 4xx the key's. Another 5xx (500) for some keys while the endpoint answers others is
    reported as ``Fetched.unanswered``; for every key asked, it is an outage (transient)."""

    def __init__(
        self, config: HttpSourceConfig, time_left: Callable[[], float | None] | None = None
    ):
        import httpx

        self.httpx = httpx
        self.config = config
        self._time_left = time_left  # the runner's: each request waits no longer (wait_bound)
        mask_request_urls()  # httpx logs each request's URL: a webhook's path is its secret
        self.client = httpx.Client(
            timeout=config.timeout,
            headers={k: v.get_secret_value() for k, v in config.headers.items()},
            limits=httpx.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            ),
        )
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="squall-lookup")
        # Only a key in the URL's path can name another resource; in the query string
        # (`?id={key}`) an empty or dot key is a value like any other.
        url = config.url or ""
        self._key_in_path = "{key}" in url.split("?", 1)[0].split("#", 1)[0]
        #: The endpoint in messages: the per-key URL keeps its `{key}` placeholder (a key in the
        #: path is a record's value: quoted and masked where a message names it, never raw).
        self.shown = shown_url(config.batch_url or url)
        #: The last key the endpoint answered (a record, or 404): asked again to tell an outage
        #: from a key the endpoint cannot answer when every key of a fetch got a 500.
        self._good: Key | None = None

    def text(self, key: Key) -> str:
        return self.config.separator.join(key)

    def fetch(self, keys: list[Key], probes: Iterable[Key] = ()) -> Fetched:
        """``probes``: keys of the batch the caches answered, asked when no key of this fetch
        was answered and the endpoint may be down (see ``_up``)."""
        fetched = Fetched()
        if self.config.batch_url:
            size = self.config.batch_size
            state = _Probe(probes)
            for i in range(0, len(keys), size):
                isolate(keys[i : i + size], lambda part: self._ask(part, fetched, state), fetched)
            return fetched
        forbidden = 0
        answered = False
        unanswered: dict[Key, _NoAnswer] = {}
        for key, (kind, value) in zip(keys, self._pool.map(self._one, keys), strict=True):
            if kind == "unanswered":
                unanswered[key] = value
                continue
            answered = True
            if kind == "found":
                fetched.found[key] = value
                self._good = key
            elif kind == "missing":
                self._good = key
            elif kind == "failed":
                fetched.failed[key] = value
            elif kind == "forbidden":
                fetched.failed[key] = value
                forbidden += 1
        if unanswered:
            first = next(iter(unanswered.values()))
            # No key of the fetch answered: an outage, unless the fetch asked one key and the
            # probe is answered (the only miss of warm caches). Several keys all answered 500
            # while a key answered before still is: the endpoint answering what it holds (its
            # cache, a healthy partition of its backend) and nothing new — a partial outage.
            if not answered and (len(keys) > 1 or not self._up(_Probe(probes), unanswered)):
                raise first.outage()
            for key, no in unanswered.items():
                fetched.unanswered[key] = self._unanswered(key, no)
        # Not one of several keys allowed: the credentials' refusal. A key asked alone is often
        # the only miss of a warm cache (another tenant's record among cached ones): its 403 is
        # its own, as ``every_key_failed`` counts one failed key as the key's, not the source's.
        if len(keys) > 1 and forbidden == len(keys):
            raise _refused(self.shown, FORBIDDEN, every_key=len(keys))
        every_key_failed(keys, fetched)  # every key refused: the endpoint, not the keys
        return fetched

    def _unanswered(self, key: Key, no: _NoAnswer) -> Unanswered:
        return Unanswered(
            f"lookup endpoint {no.shown} answered {no.what} for key {quoted(self.text(key))}",
            no.retry_after,
        )

    def _up(self, probe: _Probe, asked: Iterable[Key]) -> bool | None:
        """Whether the endpoint answers now: it answered another request of this fetch, or the
        probe — the last key it answered (else a key of the batch the caches answered) — asked
        again. None: no such key to ask (a cold process, a batch of these keys alone)."""
        if probe.up is None:
            skip = set(asked)
            key = next((k for k in (self._good, *probe.keys) if k and k not in skip), None)
            if key is None:
                return None
            if self.config.batch_url:
                try:
                    self._batch([key])
                    probe.up = True
                except KeyProblem:  # refused, but answered
                    probe.up = True
                except _NoAnswer:
                    probe.up = False
            else:
                probe.up = self._one(key)[0] != "unanswered"
        return probe.up

    def _request(self, method: str, url: str, **kwargs: Any):
        bound = wait_bound(self.config.timeout, self._time_left, f"lookup endpoint {self.shown}")
        if bound != self.config.timeout:  # the runner's time left is shorter
            kwargs["timeout"] = bound
        try:
            response = self.client.request(method, url, **kwargs)
        except self.httpx.RequestError as exc:  # connect, timeouts, protocol, a body not decoded
            # A timeout too: an endpoint slowing under load times out keys at random, and a
            # strike per timeout would dead-letter them — an outage, never a key's fault.
            raise TransientError(
                f"lookup endpoint {self.shown}: {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if status in CONFIG_STATUSES:  # no key causes these: the source's configuration is wrong
            raise _refused(self.shown, status)
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status in AVAILABILITY_STATUSES:  # never one key's: the endpoint's quota or capacity
            raise TransientError(
                f"lookup endpoint {self.shown}: HTTP {status}", retry_after=retry_after
            )
        if status >= 500:
            raise _NoAnswer(self.shown, f"HTTP {status}", retry_after)
        return response

    def _one(self, key: Key) -> tuple[str, Any]:
        text = self.text(key)
        if text in _OTHER_RESOURCE and self._key_in_path:
            # Such a key would GET another resource: `/kiosks/{key}` → `/kiosks/` (the list of
            # every kiosk), and httpx resolves `/kiosks/..` to `/` — taken for this key's record.
            return "missing", None
        url = self.config.url.replace("{key}", quote(text, safe=""))  # set: no batch_url
        try:
            response = self._request("GET", url)
        except _NoAnswer as no:
            return "unanswered", no
        if response.status_code == 404:
            return "missing", None
        if response.status_code == FORBIDDEN:
            return "forbidden", f"lookup endpoint answered HTTP 403 for key {quoted(text)}"
        if response.status_code != 200:
            return (
                "failed",
                f"lookup endpoint answered HTTP {response.status_code} for key {quoted(self.text(key))}",
            )
        try:
            value = exact_json.loads(response.content)
        except ValueError as exc:
            return (
                "failed",
                f"lookup endpoint answered invalid JSON for key {quoted(self.text(key))}: {exc}",
            )
        return ("missing", None) if value is None else ("found", value)

    def _ask(self, keys: list[Key], fetched: Fetched, probe: _Probe) -> dict[Key, Any]:
        """``_posted`` for ``isolate``: a POST no answer of the fetch explains is an outage."""
        try:
            return self._posted(keys, fetched, probe)
        except _NoAnswer as no:
            raise no.outage() from no

    def _posted(self, keys: list[Key], fetched: Fetched, probe: _Probe) -> dict[Key, Any]:
        """A POST answered 500 (not 502-504) is split in halves to find the keys the endpoint
        cannot answer (``Fetched.unanswered``) only when one half is answered: a POST of several
        keys neither half of which is answered is an outage (the POST, the probe when there is
        a key to probe with, the halves: at most four requests), whatever the probe says — an
        endpoint answering what it answered before and nothing new is down for new keys, not
        given bad ones. A POST of one key (the only miss of warm caches) is that key's when the
        probe is answered, an outage when it is not or there is no key to probe with."""
        try:
            found = self._batch(keys)
        except KeyProblem:
            probe.up = True
            raise
        except _NoAnswer as no:
            up = self._up(probe, keys)
            if up is False:
                raise no.outage() from no
            if len(keys) == 1:
                if up is None:
                    raise no.outage() from no
                fetched.unanswered[keys[0]] = self._unanswered(keys[0], no)
                return {}
            mid = len(keys) // 2
            found, unknown = {}, []
            for half in (keys[:mid], keys[mid:]):
                try:
                    found.update(self._answered(half))
                except _NoAnswer as again:
                    unknown.append((half, again))
            if len(unknown) == 2:  # neither half answered: the endpoint's, not the keys'
                raise no.outage() from no
            for half, again in unknown:  # its sibling was answered: the endpoint answers
                found.update(self._split(half, again, fetched))
            return found
        probe.up = True
        self._good = next(iter(found), self._good)
        return found

    def _answered(self, keys: list[Key]) -> dict[Key, Any]:
        """One POST (``_batch``) that, answered, shows the endpoint up for the fetch."""
        found = self._batch(keys)
        self._good = next(iter(found), self._good)
        return found

    def _split(self, keys: list[Key], no: _NoAnswer, fetched: Fetched) -> dict[Key, Any]:
        """``keys``: a POST answered 500 while the endpoint answered another POST of the same
        fetch: halved down to the keys it cannot answer (two requests a level)."""
        if len(keys) == 1:
            fetched.unanswered[keys[0]] = self._unanswered(keys[0], no)
            return {}
        mid = len(keys) // 2
        found: dict[Key, Any] = {}
        for half in (keys[:mid], keys[mid:]):
            try:
                found.update(self._answered(half))
            except _NoAnswer as again:
                found.update(self._split(half, again, fetched))
        return found

    def _batch(self, keys: list[Key]) -> dict[Key, Any]:
        url = self.config.batch_url or ""
        # Keys whose parts joined by `separator` read alike (`["a:b", "c"]`, `["a", "b:c"]`)
        # are one key to the endpoint: each gets its answer (one was reported missing).
        texts: dict[str, list[Key]] = {}
        for k in keys:
            texts.setdefault(self.text(k), []).append(k)
        response = self._request(
            "POST",
            url,
            content=orjson.dumps({"keys": list(texts)}),
            headers={"content-type": "application/json"},
        )
        status = response.status_code
        if status == FORBIDDEN:
            if len(texts) == 1:  # one key asked (a warm cache's only miss): that key's refusal
                [text] = texts
                raise KeyProblem(
                    f"lookup endpoint answered HTTP 403 for key {quoted(text)}", certain=True
                )
            raise _refused(self.shown, status)  # several keys refused at once: the credentials'
        if status in BATCH_KEY_STATUSES:  # maybe one key the endpoint refuses: split
            raise KeyProblem(f"lookup endpoint {self.shown} answered HTTP {status}")
        if status != 200:  # a 404 or a redirect of the batch URL: the endpoint, whatever the keys
            raise TransientError(f"lookup endpoint {self.shown} answered HTTP {status}")
        try:
            answer = exact_json.loads(response.content)
        except ValueError as exc:
            raise TransientError(
                f"lookup endpoint {self.shown} answered invalid JSON: {exc}"
            ) from exc
        if not isinstance(answer, dict):
            raise TransientError(
                f"lookup endpoint {self.shown} answered a {type(answer).__name__}, "
                f"not an object of key → record"
            )
        return {
            key: v for k, v in answer.items() if k in texts and v is not None for key in texts[k]
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


class _Probe:
    """Whether the endpoint was seen answering during one fetch (None: not yet known), and the
    batch's cached keys it may be asked for."""

    def __init__(self, keys: Iterable[Key]):
        self.keys = tuple(keys)
        self.up: bool | None = None


_STATUS_NAMES = {
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
}


def _refused(url: str, status: int, every_key: int = 0) -> SinkError:
    """The endpoint refuses the source's configuration (its credentials in ``headers`` or the
    URL's query, its method): waiting cannot mend it. Names the endpoint without its query
    string or credentials; never a header."""
    scope = f" for every key asked ({every_key})" if every_key else ""
    return SinkError(
        f"lookup endpoint {shown_url(url)} answered HTTP {status} {_STATUS_NAMES[status]}"
        f"{scope}: check the source's credentials (headers, the URL's query) and URL "
        "(a misconfiguration, not an outage: not retried)"
    )


#: Longest ``Retry-After`` honoured, in seconds (the ``http`` sink's default bound): a day's
#: quota answered ``Retry-After: 86400`` (or ``inf``) parked the batch that long.
MAX_RETRY_AFTER = 60.0


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:  # an HTTP date: let the engine's own backoff decide
        return None
    if seconds is None or seconds != seconds:  # absent, NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


# -- the shared Redis cache -------------------------------------------------------------------


class SharedCache:
    """Looked-up records in Redis for every process, ``SET … EX ttl``; a missing key is cached as ``[]``.

    A value is the JSON list ``[record]`` (found) or ``[]`` (missing), so a record that is itself
    ``null`` or a list needs no escaping.
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl: int, missing_ttl: int):
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.missing_ttl = missing_ttl

    def name(self, key: Key) -> str:
        """The Redis key of a lookup key: a one-part key as its text (as in earlier releases: an
        upgrade keeps the cache warm), a composite key as its JSON array — unambiguous, where
        parts joined by a separator (``\x1f`` before) named ``["a\x1fb", "c"]`` and
        ``["a", "b\x1fc"]`` alike and served one key's record for the other. Within one prefix
        every key has as many parts as the bolt has key paths (the default prefix hashes them)."""
        if len(key) == 1:
            return self.prefix + key[0]
        return self.prefix + orjson.dumps(key).decode()

    def get(self, keys: list[Key]) -> tuple[dict[Key, Any], set[Key]]:
        """(found records, keys known to be missing); other keys are not cached."""
        found: dict[Key, Any] = {}
        missing: set[Key] = set()
        for i in range(0, len(keys), REDIS_CHUNK):
            chunk = keys[i : i + REDIS_CHUNK]
            try:
                with redis_errors("shared lookup cache"):
                    answers = self.client.mget([self.name(k) for k in chunk])
            except redis.exceptions.ResponseError as exc:
                # Not an outage (those are TransientError by now) nor a key's (MGET answers nil
                # for a key of another type): a server that cannot serve as the cache — MGET
                # renamed away or not offered (a proxy), a Redis Cluster endpoint (MOVED,
                # CROSSSLOT). A misconfiguration, as a refused password: escaping as it was, it
                # made every event of the batch fail alone, dead-lettered, though the source
                # answered. Its message quotes the first key: left out.
                reason = str(exc).split(", with args beginning with", 1)[0]
                raise SinkError(
                    f"shared lookup cache: {type(exc).__name__}: {reason} (a misconfiguration, "
                    "not an outage: not retried)"
                ) from exc
            for key, raw in zip(chunk, answers, strict=True):
                if raw is None:
                    continue
                try:
                    value = exact_json.loads(raw)
                except ValueError:
                    continue  # not ours or damaged: look the key up again (and overwrite it)
                if value == []:
                    missing.add(key)
                elif isinstance(value, list) and len(value) == 1:
                    found[key] = value[0]
        return found, missing

    def put(self, found: dict[Key, Any], missing: Iterable[Key]) -> str | None:
        """Write the records and missing keys; the reason of a Redis that refuses writes (then
        nothing may be written), else None."""
        pipe = self.client.pipeline(transaction=False)
        for key, value in found.items():
            pipe.set(self.name(key), exact_json.dumps([value]), ex=self.ttl)
        if self.missing_ttl:
            for key in missing:
                pipe.set(self.name(key), b"[]", ex=self.missing_ttl)
        try:
            pipe.execute()
        except REDIS_FAILURES as exc:
            raise redis_failure("shared lookup cache", exc) from exc
        except redis.exceptions.ResponseError as exc:
            # A Redis that refuses writes (OOM under maxmemory/noeviction, MISCONF): the source
            # answered, so the batch is served; its keys are just not cached (a later miss). Its
            # pipeline's message quotes the command, a record: only the server's reason is logged.
            reason = str(exc).rsplit("caused error: ", 1)[-1]
            # SET renamed away: `unknown command 'SET', with args beginning with: <key> <record>`
            reason = reason.split(", with args beginning with", 1)[0]
            return f"{type(exc).__name__}: {reason}"
        return None
