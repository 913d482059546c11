"""``dedupe`` bolt: keep the first event per key within a batch; later duplicates are filtered.
With a ``store``, keys are remembered across batches for ``ttl`` (``squall.bolts.dedupe_store``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from pydantic import Field, field_validator, model_validator

from squall import exact_json
from squall.bolts.base import Bolt, Output
from squall.bolts.dedupe_store import KeyMemory, RedisKeys, SqlKeys
from squall.component import ComponentConfig
from squall.event import Event
from squall.identifiers import check_identifier
from squall.paths import MISSING, DottedPath, getter
from squall.times import Duration, duration_ms


class DedupeConfig(ComponentConfig):
    key: DottedPath = Field(
        "meta.event_id", description="Dotted path of the key; events without it pass through."
    )
    store: str | None = Field(
        None,
        description="Resource remembering keys across batches for `ttl`: a SQL database "
        "(sqlite/postgresql URL) or Redis (redis URL). Without it, duplicates are dropped within "
        "a batch only. An event is a duplicate when its key is remembered from another record: "
        "the same record delivered again (a retry, a replay) is not.",
    )
    ttl: Duration = Field(
        "24h",
        description="How long the `store` remembers a key (written at the commit of its first "
        "record); it holds the keys of one `ttl` at most.",
    )
    table: str = Field(
        "squall_dedupe", description="SQL table of a SQL `store`'s keys (created if missing)."
    )
    key_prefix: str = Field(
        "squall:dedupe:", description="Prefix of the Redis keys of a Redis `store`."
    )

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: Any) -> Any:
        if duration_ms(v) <= 0:
            raise ValueError("ttl must be positive")
        return v

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return check_identifier(v, "table name")

    @model_validator(mode="after")
    def _store_options(self) -> DedupeConfig:
        # Without a store they would be accepted and do nothing: the duplicates of other
        # batches would pass while the topology reads as if they were remembered.
        if self.store is None:
            unused = [o for o in STORE_OPTIONS if o in self.model_fields_set]
            if unused:
                raise ValueError(
                    f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} for a `store`, "
                    "which remembers keys across batches: set store (a SQL or Redis resource), "
                    "or remove "
                    + ("it" if len(unused) == 1 else "them")
                    + " (without a store, duplicates are dropped within a batch only)"
                )
        return self


#: The options that only a ``store`` uses.
STORE_OPTIONS = ("ttl", "table", "key_prefix")


class DedupeBolt(Bolt):
    """Drop events whose key was already seen earlier in the same batch (e.g. producer retries)."""

    Config = DedupeConfig
    driver_sql: ClassVar[bool] = True  # a SQL store's statements are driver SQL

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """It changes no payload (load-time path checks look through it)."""
        return ()

    summary = (
        "Drop duplicate events (same key) within a batch, or across batches with a `store`; "
        "the first one wins."
    )

    def __init__(self, config: DedupeConfig, context):
        super().__init__(config, context)
        self._get = getter(config.key)
        #: The default key (``meta.event_id``) is read inline: no getter call, no property call.
        self._by_event_id = config.key == "meta.event_id"
        self._memory: KeyMemory | None = None  # with a ``store``: keys across batches
        self._state_resource: str | None = None

    def open(self, resources: Any) -> None:
        c = self.config
        if c.store is None:
            return

        def sql(engine: Any) -> SqlKeys:
            if "key_prefix" in c.model_fields_set:  # (it would do nothing)
                raise ValueError(
                    f"key_prefix is for a Redis store; '{c.store}' is a SQL database, whose "
                    "keys go in `table`: remove key_prefix"
                )
            self._state_resource = c.store
            return SqlKeys(engine, c.table)

        def redis(client: Any) -> RedisKeys:
            if "table" in c.model_fields_set:
                raise ValueError(
                    f"table is for a SQL store; '{c.store}' is Redis, whose keys are named "
                    "by `key_prefix`: remove table"
                )
            return RedisKeys(client, c.key_prefix)

        store = resources.open_store(
            c.store,
            (self.context.topology, f"{self.id}.store"),
            sql=sql,
            redis=redis,
            driver_sql=True,
        )
        self._memory = KeyMemory(store, duration_ms(c.ttl))

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        if self._memory is not None:
            self._memory.process(batch, [self._key(ev) for ev in batch], out)
            return out
        if self._by_event_id:
            # The usual batch: every event's id known and text, no two alike — every event
            # passes, in order. Found at C speed, the ids taken once (the loop below then runs
            # only for a batch with a duplicate, an id to derive or one of another type).
            keys = [ev._event_id for ev in batch]
            if set(map(type, keys)) <= _TEXT and len(set(keys)) == len(keys):
                out.emit_all(batch[:])
                return out
        seen: set = set()
        passed: list[Event] = []
        emit, get, by_event_id = passed.append, self._get, self._by_event_id
        for ev in batch:
            if by_event_id:
                k = ev._event_id  # Event.event_id, without the property's call
                if k is None:
                    k = ev.event_id
            else:
                k = get(ev)
            if k is MISSING or k is None:
                emit(ev)
                continue
            cls = k.__class__
            if cls is not str and cls is not int:
                k = compared(k)
            if k in seen:
                out.drop(ev)
            else:
                seen.add(k)
                emit(ev)
        out.emit_all(passed)
        return out

    def _key(self, ev: Event) -> Any:
        """``ev``'s key as compared (None: it has none)."""
        k = ev.event_id if self._by_event_id else self._get(ev)
        if k is MISSING or k is None:
            return None
        cls = k.__class__
        return k if cls is str or cls is int else compared(k)

    # -- the commit sequence (with a ``store``) ---------------------------------------------

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.config.store is not None

    def state_resource(self) -> str | None:
        return self._state_resource

    def commit_state(self, covered: Callable[[Event], bool], connection: Any = None) -> None:
        """Remember the keys first seen in this batch, of covered records only."""
        if self._memory is not None:
            self._memory.commit(covered, connection)

    def state_committed(self) -> None:
        if self._memory is not None:
            self._memory.clear()

    def discard_state(self) -> None:
        if self._memory is not None:
            self._memory.clear()


_TEXT = frozenset([str])  # the usual ids' one class


def compared(key: Any) -> Any:
    """A key that is neither text nor an integer as the bolt compares it, as a JSON value:
    numbers by value (``1`` and ``1.0``, ``0.0`` and ``-0.0`` are one key, as Python compares
    them), a NumPy scalar as its Python number, ``true`` not ``1`` (Python's ``True == 1``); an
    object or a list (a tuple: JSON's list) by its JSON with sorted keys, its numbers compared
    the same way (an infinity is itself, not ``null``; one holding a NaN equals no other key, as
    a NaN alone), an integer beyond 64 bits by its digits. Raises ``TypeError`` for a value
    without a JSON form (that event's failure)."""
    cls = key.__class__
    if cls is float:  # a NaN equals no key: not even the same NaN object (Python's ``in`` would)
        return key if key == key else object()
    if cls is bool:
        return (bool, key)
    if isinstance(key, dict | list | tuple):
        text = exact_json.dumps(key, option=orjson.OPT_SORT_KEYS)
        # orjson writes a whole float with ".0" (1.0, -0.0) or, from 1e16, "e+", and NaN and
        # the infinities as null: then again, each whole float as its integer, an infinity as
        # itself (a text holding ".0" or a null is written twice: no matter)
        if b".0" in text or b"e+" in text or b"null" in text:
            try:
                text = exact_json.dumps(_whole_floats(key, _ROOM), option=orjson.OPT_SORT_KEYS)
            except _HoldsNaN:
                return object()  # equal to no other key: NaN == NaN is false
        return (_AS_JSON, text.decode())  # (see _AS_JSON: text, not orjson's bytes)
    number = exact_json.as_number(key)  # a float subclass (NumPy's float64), a NumPy scalar
    if number is not exact_json.NOT_A_NUMBER:
        return compared(number)
    try:
        hash(key)
    except TypeError:  # (a dataclass: its JSON; a set has none: refused, orjson saying why)
        return (_AS_JSON, exact_json.dumps(key, option=orjson.OPT_SORT_KEYS).decode())
    return key  # an IntEnum, a text subclass: equal to its value


#: Marks a key compared by its JSON text (no key a Python bolt set is equal to one). The text
#: is kept as ``str``, not as the ``bytes`` orjson returns: each of those holds orjson's whole
#: output buffer (~4 KB however short the JSON), so a batch of 20,000 events keyed by an
#: object held ~85 MB in the seen set, where the keys as text hold ~5 MB (docs/performance.md, hAB).
_AS_JSON: Any = object()
#: Levels of objects and lists ``_whole_floats`` goes down (orjson writes 254: deeper, it
#: refuses the key as it did).
_ROOM = 256


class _HoldsNaN(Exception):
    """A key holds a NaN somewhere: it equals no other key."""


#: How an infinity is written in a key's text (no JSON: no other value is written so).
_INFINITIES = {math.inf: orjson.Fragment(b"Infinity"), -math.inf: orjson.Fragment(b"-Infinity")}


def _whole_floats(value: Any, room: int) -> Any:
    """``value`` with each whole float (a float subclass, a NumPy scalar) as its integer and
    each infinity as ``Infinity``; raises ``_HoldsNaN`` for a NaN (orjson writes all as null)."""
    if room <= 0:
        return value
    if isinstance(value, dict):
        return {k: _whole_floats(v, room - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_floats(v, room - 1) for v in value]
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    number = value if cls is float else exact_json.as_number(value)
    if number.__class__ is float:
        if number.is_integer():  # (NaN and the infinities are not)
            return int(number)
        if number != number:
            raise _HoldsNaN
        return _INFINITIES.get(number, value)
    return value
