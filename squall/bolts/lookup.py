"""``lookup`` bolt: enrich events from a slowly changing table, Redis, or an HTTP endpoint, through caches.

Per batch: the distinct keys of the batch are read from the in-process LRU cache (TTL, and a
shorter TTL for keys known to be missing), then from the optional shared Redis cache, and only the
rest from the source — each key once, in chunks (``IN (…)``, MGET, a pipeline, batch POSTs or
bounded concurrent GETs). Events are changed only after every read of the batch succeeded: a
dependency failure raises ``TransientError`` with every event untouched, and the engine retries
the batch. The shared cache is no dependency: down, it is left alone for a while and the source
answers (``_shared_down``). A key whose own value makes the source fail (a text key against an integer column, a
Redis key of the wrong type) fails only that key's events; so does a key an HTTP endpoint keeps
answering 500 while it answers others, on the source's ``fail_key_after`` attempts in a row
(``_count_strikes``).

Size (~655 lines): the configuration, the per-batch path through both caches and the source,
and the strikes of unanswered keys are one flow, read together.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squall.bolts.base import Bolt, Output
from squall.bolts.lookup_sources import (
    Fetched,
    HttpSource,
    HttpSourceConfig,
    Key,
    OptionError,
    RedisSource,
    RedisSourceConfig,
    SharedCache,
    SqlSource,
    SqlSourceConfig,
    shown_url,
)
from squall.cache import LRUCache
from squall.component import ComponentConfig, ComponentContext
from squall.errors import (
    RecordError,
    SquallError,
    TopologyError,
    TransientError,
    quoted,
)
from squall.event import Event, deep_copy, not_an_object
from squall.paths import MISSING, PayloadPath, getter, setter, validate_path
from squall.times import Seconds, WholeSeconds
from squall.topology.resource_config import OptionalRedisResource

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger(__name__)

Source = Annotated[
    SqlSourceConfig | RedisSourceConfig | HttpSourceConfig, Field(discriminator="type")
]
_NO_KEY: Any = type("NoKey", (), {"__repr__": lambda self: "NO_KEY"})()
#: Keys whose strikes are remembered (least recently struck out first).
MAX_STRUCK_KEYS = 10_000
#: Seconds a lookup goes straight to its source after finding its shared cache down (then it
#: tries the cache again): each batch would otherwise wait out the Redis client's timeout.
SHARED_CACHE_PAUSE = 30.0
#: Redis client of a shared cache found down → the clock reading until which no lookup of the
#: process asks it: lookups on one Redis resource share its client, and each paid the timeout
#: of a Redis that does not answer once per pause (before 7 December's second review).
_PAUSED: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
#: Redis client of a shared cache found refusing writes → until when it is only read.
_WRITES_PAUSED: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


class CacheConfig(BaseModel):
    """The in-process cache: least recently used first out, entries expire after ``ttl``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    size: int = Field(
        10_000, ge=0, description="Records kept (and as many missing keys); 0: no in-process cache."
    )
    ttl: Seconds = Field(300, gt=0, description="Seconds a found record is served from memory.")
    missing_ttl: Seconds = Field(
        60, ge=0, description="Seconds a missing key is remembered as missing (0: never)."
    )


class SharedCacheConfig(BaseModel):
    """A Redis cache shared by every process, in front of a SQL or HTTP source."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    resource: OptionalRedisResource = Field(
        description='Redis resource; one whose URL is empty (`"${CACHE_URL:-}"` unset): no '
        "shared cache."
    )
    ttl: WholeSeconds = Field(3600, ge=1, description="Seconds a found record stays in Redis.")
    missing_ttl: WholeSeconds = Field(
        300, ge=0, description="Seconds a missing key stays in Redis as missing (0: never)."
    )
    key_prefix: str | None = Field(
        None,
        min_length=1,  # "": the cache's SET … EX would overwrite the database's own keys
        description="Prefix of the cache keys (default: squall:lookup:<topology>:<bolt id>:<hash "
        "of the key paths, the source's options and a sql source's database address>:).",
    )


class LookupConfig(ComponentConfig):
    key: str | list[str] = Field(
        description="Dotted path(s) of the key in the event; several paths make a "
        "composite key. Text or integer values."
    )
    target: PayloadPath = Field(description="Dotted path where the found record is written.")
    source: Source = Field(
        description="Where records come from: {type: sql | redis | http, …}; each one's options: docs/lookup.md."
    )
    on_missing: Literal["keep", "fail", "drop"] = Field(
        "keep",
        description="An event whose key is not found (or that has no key): keep it unchanged, fail it "
        "(dead letter), or drop it.",
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="In-process LRU cache with TTLs."
    )
    shared_cache: SharedCacheConfig | None = Field(
        None, description="Redis cache in front of a SQL or HTTP source, shared by every process."
    )

    @field_validator("key")
    @classmethod
    def _keys(cls, v: str | list[str]) -> str | list[str]:
        # one path or a list of them: checked here, as a union of DottedPath types would report
        # each failing branch of the union as a problem of its own
        keys = [v] if isinstance(v, str) else v
        if not keys:
            raise ValueError("name at least one key path")
        for p in keys:
            validate_path(p)
        return v

    @model_validator(mode="after")
    def _check(self) -> LookupConfig:
        src = self.source
        if (
            isinstance(src, SqlSourceConfig)
            and src.key_columns is not None
            and len(src.key_columns) != len(self.key_paths)
        ):
            raise ValueError(
                f"source.key_columns names {len(src.key_columns)} column(s) for "
                f"{len(self.key_paths)} key path(s)"
            )
        if isinstance(src, SqlSourceConfig):
            columns = src.key_columns or [p.split(".")[-1] for p in self.key_paths]
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                # (id, id) IN ((…)) matches nothing sensible, and rows were matched back to keys
                # by columns shifted by one: every key was reported missing
                raise ValueError(
                    f"source.key_columns names {', '.join(twice)} twice"
                    if src.key_columns
                    else f"the key paths end in the same column name ({', '.join(twice)}): name "
                    "the table's column of each one in source.key_columns"
                )
        if self.shared_cache is not None and isinstance(src, RedisSourceConfig):
            raise ValueError("shared_cache: the source is Redis already")
        return self

    @property
    def key_paths(self) -> list[str]:
        return [self.key] if isinstance(self.key, str) else list(self.key)


class LookupBolt(Bolt):
    """Adds the record of each event's key from a SQL table, Redis or an HTTP endpoint, cached."""

    Config = LookupConfig

    @classmethod
    def packages(cls, config: LookupConfig) -> frozenset[str]:
        """SQLAlchemy and redis-py, whatever the source: the sources' module imports both; and
        an HTTP source's httpx (the ``http`` extra's)."""
        http = config.source.type == "http"
        return frozenset({"sqlalchemy", "redis", *(("httpx",) if http else ())})

    @classmethod
    def payload_writes(cls, config: LookupConfig) -> tuple[str, ...]:
        """The record goes to ``target``; nothing else is changed."""
        return (config.target,)

    summary: ClassVar[str] = (
        "Enrich events with a record looked up by key (SQL table, Redis, HTTP JSON), with LRU/TTL caches."
    )

    def __init__(
        self,
        config: LookupConfig,
        context: ComponentContext,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(config, context)
        self._getters = [getter(p) for p in config.key_paths]
        self._set_target = setter(config.target)
        self._shown_key = ", ".join(config.key_paths)
        self.source: SqlSource | RedisSource | HttpSource | None = None
        self.shared: SharedCache | None = None
        #: "no shared cache" was said: once, not again at each retry of a failed open (a KCL
        #: shard process opens its engine again until its resources answer)
        self._said_no_shared = False
        self.use_clock(clock)
        #: Keys an endpoint left unanswered while answering others → attempts in a row so.
        self._strikes: OrderedDict[Key, int] = OrderedDict()
        self.stats = {
            "memory_hits": 0,
            "shared_hits": 0,
            "shared_down": 0,
            "shared_unwritten": 0,
            "fetched": 0,
            "missing": 0,
            "failed": 0,
        }

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` (seconds, monotonic): tests pass a fake one. Empties the caches."""
        c = self.config.cache
        self.clock = clock
        self._found = LRUCache(c.size, ttl=c.ttl, clock=clock) if c.size else None
        self._missing = (
            LRUCache(c.size, ttl=c.missing_ttl, clock=clock) if c.size and c.missing_ttl else None
        )

    def open(self, resources: Resources) -> None:
        c = self.config
        src = c.source
        where = "source"
        try:
            if isinstance(src, SqlSourceConfig):
                key_columns = src.key_columns or [p.split(".")[-1] for p in c.key_paths]
                self.source = SqlSource(
                    resources.sql(src.resource), src, key_columns, self.context.time_left
                )
            elif isinstance(src, RedisSourceConfig):
                self.source = RedisSource(resources.redis(src.resource), src)
            else:
                self.source = HttpSource(src, self.context.time_left)
                self._warn_strikes_outlast_retries(src.fail_key_after)
            sc = c.shared_cache
            if sc is not None:
                where = "shared_cache.resource"
                if not resources.config(sc.resource).url:  # `"${CACHE_URL:-}"` unset: off
                    if not self._said_no_shared:
                        log.info(
                            "lookup '%s': no shared cache (resource '%s' has an empty URL)",
                            self.id,
                            sc.resource,
                        )
                    self._said_no_shared = True
                else:
                    prefix = sc.key_prefix if sc.key_prefix is not None else self._default_prefix()
                    self.shared = SharedCache(
                        resources.redis(sc.resource), prefix, sc.ttl, sc.missing_ttl
                    )
        except ImportError as exc:
            raise TopologyError(
                self.context.problem(
                    self.id,
                    "source.type",
                    f"the http source needs httpx (pip install 'squall[http]'): {exc}",
                )
            ) from exc
        except TransientError as exc:
            # The source (or the shared cache) is down: an outage, not a mistake in the topology
            # (`squall run` exits 1, a KCL shard waits and retries, as for every other resource).
            raise TransientError(f"{self.id}.{where}: {exc}", retry_after=exc.retry_after) from exc
        except (SquallError, ValueError) as exc:
            if isinstance(exc, TopologyError):
                raise
            option = exc.option if isinstance(exc, OptionError) else where
            raise TopologyError(self.context.problem(self.id, option, str(exc))) from exc

    def _warn_strikes_outlast_retries(self, fail_key_after: int) -> None:
        """Say at start, at the option, when the engine gives up on a batch before a key the
        endpoint cannot answer reaches ``fail_key_after`` attempts: the key then fails only if
        the batch comes again to this process (strikes are counted in memory)."""
        attempts = self.context.retry_attempts
        if attempts is None or fail_key_after <= attempts:
            return
        problem = self.context.problem(
            self.id,
            "source.fail_key_after",
            f"a key the endpoint answers 500 while it answers others fails its events on "
            f"attempt {fail_key_after} in a row, but settings.retry.attempts is {attempts}: the "
            "batch fails first, and the key's events fail only when the batch comes again to "
            "this process (squall run stops at the failed batch; Lambda may retry it in another "
            f"instance; a KCL worker retries it here) — set fail_key_after to {attempts} or "
            f"less, or settings.retry.attempts to {fail_key_after} or more",
        )
        log.warning("%s", problem)

    def _default_prefix(self) -> str:
        """``squall:lookup:<topology>:<bolt id>:<hash>:``: another topology's lookup of the same id,
        or this one after its table, columns or endpoint changed, or on another database, never
        reads these records."""
        shape = self.config.source.model_dump(
            mode="json",
            by_alias=True,
            # how the source is asked, not what it answers (fail_key_after: added later, left
            # out so that an upgrade keeps the prefix, and its shared cache warm)
            exclude={"headers", "timeout", "concurrency", "batch_size", "fail_key_after"},
        )
        for url in ("url", "batch_url"):  # without its credentials: a rotated token is the
            if shape.get(url):  # same source; `?lang=fr` instead of `?lang=en` is another one
                query = _plain_query(shape[url])
                # A URL without such parameters hashes as before they counted: an upgrade keeps
                # its shared cache warm (a cold one sends every key to the endpoint at once).
                shape[url] = [shown_url(shape[url]), query] if query else shown_url(shape[url])
        if isinstance(self.source, SqlSource):
            # The database, as an http source's host: one topology deployed twice (staging and
            # production, two regions) on one Redis read each other's rows under one resource
            # name. Its address only: no credentials, no driver (a rotated password, `postgres://`
            # for `postgresql://`, is the same database).
            shape["database"] = _database_address(self.source.engine.url)
        text = orjson.dumps([self.config.key_paths, shape], option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(text).hexdigest()[:12]
        return f"squall:lookup:{self.context.topology}:{self.id}:{digest}:"

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    # -- one batch -------------------------------------------------------------------------------

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        keys = self._keys(batch)
        distinct = list(dict.fromkeys(k for k in keys if k.__class__ is tuple))
        # Records re-driven by `squall replay` (a batch holds only those) were dead-lettered for
        # a missing row the user has since added: keys known to be missing are asked again.
        recheck = batch[0].meta.replay > 0 if batch else False
        records, failed = self._resolve(distinct, recheck) if distinct else ({}, {})
        # Each event gets its own copy of its record (downstream bolts may change it): a flat
        # record, the usual table row, is copied by dict.copy; nested ones value by value.
        copiers = {
            k: dict.copy if v.__class__ is dict and _flat(v) else deep_copy
            for k, v in records.items()
        }

        # Every read succeeded: only now are events changed.
        on_missing = self.config.on_missing
        set_target = self._set_target
        for event, key in zip(batch, keys, strict=True):
            if key.__class__ is str:  # the event's own key is unusable
                out.fail(event, key)
                continue
            if key is not _NO_KEY:
                reason = failed.get(key)
                if reason is not None:
                    out.fail(event, reason)
                    continue
                record = records.get(key, MISSING)
                if record is not MISSING:
                    try:
                        set_target(event, copiers[key](record))
                    except RecordError as exc:
                        out.fail(event, exc.reason)
                        continue
                    out.emit(event)
                    continue
            if on_missing == "keep":
                out.emit(event)
            elif on_missing == "drop":
                out.drop(event)
            elif key is _NO_KEY:
                out.fail(event, f"no key at '{self._shown_key}'")
            else:
                out.fail(event, f"key {_show(key)} not found")
        return out

    def _keys(self, batch: list[Event]) -> list[Any]:
        """Each event's key (see ``_key``); one text or integer key path, the usual case, inline."""
        if len(self._getters) > 1:
            return [self._key(event) for event in batch]
        get = self._getters[0]
        keys: list[Any] = []
        append = keys.append
        for event in batch:
            v = get(event) if event.value.__class__ is dict else MISSING
            if v.__class__ is str:
                append((v,))
            elif v.__class__ is int:
                append((str(v),))
            else:
                append(self._key(event))
        return keys

    def _key(self, event: Event) -> Key | str | Any:
        """The event's key; ``_NO_KEY`` when it has none; a reason (str) when its value cannot be a key."""
        if not isinstance(event.value, dict):
            return not_an_object(event.value)
        parts = []
        for path, get in zip(self.config.key_paths, self._getters, strict=True):
            v = get(event)
            if v is MISSING or v is None:
                return _NO_KEY
            if isinstance(v, str):  # a str subclass a user's bolt set is text too: as a str
                parts.append(str.__str__(v))
            elif isinstance(v, int) and not isinstance(v, bool):
                parts.append(str(int(v)))  # an IntEnum's own str() may be its name
            else:
                return f"key '{path}' is a {type(v).__name__}, not text or an integer"
        return tuple(parts)

    def _resolve(
        self, keys: list[Key], recheck: bool = False
    ) -> tuple[dict[Key, Any], dict[Key, str]]:
        """The record of each key that has one, and the keys that failed; raises ``TransientError``.
        ``recheck``: the caches' missing keys are asked from the source again."""
        stats = self.stats
        records: dict[Key, Any] = {}
        todo = keys
        if self._found is not None:
            records, todo = self._found.get_many(todo)
            stats["memory_hits"] += len(records)
        if todo and self._missing is not None and not recheck:
            known_missing, todo = self._missing.get_many(todo)
            stats["memory_hits"] += len(known_missing)
            # One hit or miss per key in squall_cache_lookups_total, counted on the found cache:
            # a key it missed that is known to be missing was served from memory (a hit), and
            # the missing cache's own counts would count every other key twice.
            found_cache = self._found
            assert found_cache is not None  # the missing cache exists only beside it
            found_cache.misses -= len(known_missing)
            found_cache.hits += len(known_missing)
            self._missing.hits = self._missing.misses = 0
        fetched = Fetched()
        missing: list[Key] = []
        shared = self._shared_cache() if todo else None
        if shared is not None:
            try:
                shared_found, shared_missing = shared.get(todo)
            except TransientError as exc:  # down: the source answers (a SinkError, a password
                self._shared_down(exc)  # refused, is a misconfiguration: it still stops)
                shared = None
            else:
                if recheck:
                    shared_missing = set()
                stats["shared_hits"] += len(shared_found) + len(shared_missing)
                records.update(shared_found)
                self._remember(shared_found, shared_missing)
                todo = [k for k in todo if k not in shared_found and k not in shared_missing]
        if todo:
            assert self.source is not None, "open() was not called"
            if isinstance(self.source, HttpSource):
                # a key the caches answered: asked when the endpoint may be down (a 500 for
                # every key asked), to tell an outage from keys it cannot answer
                probes = list(islice(records, 1)) or list(islice(set(keys).difference(todo), 1))
                fetched = self.source.fetch(todo, probes)
            else:
                fetched = self.source.fetch(todo)
            unanswered = fetched.unanswered
            missing = [
                k
                for k in todo
                if k not in fetched.found and k not in fetched.failed and k not in unanswered
            ]
            if shared is not None and self._shared_writable(shared):
                try:
                    refused = shared.put(fetched.found, missing)
                except TransientError as exc:  # the source answered: the batch is served
                    self._shared_down(exc)
                else:
                    if refused is not None:
                        self._shared_refuses_writes(shared, refused)
            records.update(fetched.found)
            self._remember(fetched.found, missing)
            stats["fetched"] += len(todo)
            stats["missing"] += len(missing)
            if self._strikes or unanswered:
                self._count_strikes(todo, fetched)  # raises while a key has attempts left
            stats["failed"] += len(fetched.failed)
        return records, fetched.failed

    def _shared_cache(self) -> SharedCache | None:
        """The shared cache, unless it was found down less than ``SHARED_CACHE_PAUSE`` ago, by
        this lookup or another of the process on the same Redis resource (``_PAUSED``)."""
        shared = self.shared
        if shared is None or self._paused(_PAUSED, shared.client):
            return None
        return shared

    def _shared_writable(self, shared: SharedCache) -> bool:
        """Whether to write to the shared cache: not while it refuses writes (``_WRITES_PAUSED``)."""
        return not self._paused(_WRITES_PAUSED, shared.client)

    def _paused(self, pauses: weakref.WeakKeyDictionary[Any, float], client: Any) -> bool:
        """Whether ``client``'s pause in ``pauses`` (until a time of ``self.clock``) is still on;
        a pause that is over is forgotten."""
        until = pauses.get(client)
        if until is None:
            return False
        if self.clock() < until:
            return True
        pauses.pop(client, None)
        return False

    def _shared_refuses_writes(self, shared: SharedCache, reason: str) -> None:
        """A Redis out of memory under ``maxmemory``/``noeviction``, or ``MISCONF``, answers
        reads and refuses writes, for as long as nobody frees it: the batch is served, and it is
        read but not written for ``SHARED_CACHE_PAUSE`` seconds, said once (a warning per batch,
        ten a second, before 7 December's second review)."""
        self.stats["shared_unwritten"] += 1
        _WRITES_PAUSED[shared.client] = self.clock() + SHARED_CACHE_PAUSE
        log.warning(
            "shared lookup cache not written: %s (lookup '%s' reads it but writes nothing to it "
            "for %g s)",
            reason,
            self.id,
            SHARED_CACHE_PAUSE,
        )

    def _shared_down(self, exc: TransientError) -> None:
        """The shared cache is down (refused, timed out, ``BUSY``): it is an optimisation, not a
        dependency — the batch goes on with the source alone, which then answers every key the
        caches do not hold (a source down too fails the batch, as always), and the cache is left
        alone for ``SHARED_CACHE_PAUSE`` seconds by every lookup of the process on that Redis
        resource, so that a Redis that does not answer costs one timeout per pause, not two per
        batch and lookup."""
        self.stats["shared_down"] += 1
        assert self.shared is not None
        _PAUSED[self.shared.client] = self.clock() + SHARED_CACHE_PAUSE
        log.warning(
            "lookup '%s': shared cache down, the source is asked without it for %g s: %s",
            self.id,
            SHARED_CACHE_PAUSE,
            exc,
        )

    def _count_strikes(self, asked: list[Key], fetched: Fetched) -> None:
        """Each key the endpoint answered 500 (another 5xx but 502-504) while it answered
        others gets one more strike; a key answered loses its strikes. While a key has fewer
        than the source's ``fail_key_after`` strikes, the batch is retried (``TransientError``, events
        untouched; what was answered is cached, so a retry asks little more than those keys);
        at that many, the key's events fail with its reason (``fetched.failed``). A key that
        reached them fails at its next 500 without retries, until it is answered again."""
        strikes = self._strikes
        unanswered = fetched.unanswered
        limit = self.config.source.fail_key_after  # type: ignore[union-attr]
        for key in asked:
            if key not in unanswered:
                strikes.pop(key, None)
        retried: list[Key] = []
        for key, no in unanswered.items():
            n = strikes.pop(key, 0) + 1
            strikes[key] = n
            if n >= limit:
                fetched.failed[key] = (
                    f"{no.reason}, on {n} attempt{'s' if n > 1 else ''} in a row while it "
                    "answered other keys"
                )
            else:
                retried.append(key)
        while len(strikes) > MAX_STRUCK_KEYS:
            strikes.popitem(last=False)
        if retried:
            first = unanswered[retried[0]]
            waits = [w for k in retried if (w := unanswered[k].retry_after) is not None]
            raise TransientError(
                f"{first.reason} ({len(retried)} of {len(asked)} key(s) asked) while it answered "
                f"others: the batch is retried; a key so answered on {limit} attempt(s) in a "
                "row fails its events",
                retry_after=max(waits) if waits else None,
            )

    def _remember(self, found: dict[Key, Any], missing: Any) -> None:
        if self._found is not None and found:
            self._found.put_many(found)
        if self._missing is not None and missing:
            self._missing.put_many(dict.fromkeys(missing, True))


#: Connection parameters of a URL's query that name its database, not how it is reached: libpq's
#: (`?host=/cloudsql/project:region:instance`, a Unix socket; `port`, `dbname`, `service`;
#: `options=-csearch_path=staging`, which schema an unqualified table is read from) and MySQL's
#: `unix_socket`. Never `password`, `sslpassword` and the like.
_ADDRESS_PARAMETERS = frozenset(
    {"host", "hostaddr", "port", "dbname", "service", "options", "unix_socket"}
)
#: A backend's port when its URL names none.
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _database_address(url: Any) -> list[Any]:
    """The database a SQLAlchemy URL reaches, one spelling per address: its backend, host (in
    small letters), port (the backend's default when omitted), database, and the query
    parameters that name a database (``?host=`` of a Unix socket: before 7 December's second
    review two Cloud SQL instances' `postgresql://…@/orders?host=/cloudsql/…` hashed alike).
    Nothing secret: no user, password nor driver."""
    backend = url.get_backend_name()
    address = [
        backend,
        url.host.lower() if url.host else url.host,
        (url.port or _DEFAULT_PORTS.get(backend)) if url.host else url.port,
        url.database,
    ]
    named = sorted(
        (k, [str(v) for v in vs] if isinstance(vs, tuple) else str(vs))
        for k, vs in url.query.items()
        if k.lower() in _ADDRESS_PARAMETERS
    )
    if named:
        address.append(named)
    return address


def _flat(record: dict) -> bool:
    return not any(v.__class__ is dict or v.__class__ is list for v in record.values())


def _show(key: Key) -> str:
    """A key quoted in a reason: each part masked and cut (``quoted``: a key may be an e-mail
    address, a token, a URL with its password)."""
    return quoted(key[0]) if len(key) == 1 else f"[{', '.join(quoted(k) for k in key)}]"


#: Words in a query parameter's name that may make it a credential (left out of the cache's
#: identity: a rotated one names the same source). Wider than the redaction's names on purpose.
_CREDENTIAL_WORDS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "sig",
    "cookie",
    "cred",
    "session",
)


def _plain_query(url: str) -> list[tuple[str, str]]:
    """The query parameters of ``url`` that name its source: not credentials (``token``,
    ``api_key``, …), nor the one holding the ``{key}`` placeholder (the same in every URL)."""
    return [
        (k, v)
        for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if "{key}" not in v and not any(word in k.lower() for word in _CREDENTIAL_WORDS)
    ]
