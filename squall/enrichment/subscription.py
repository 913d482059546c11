"""The subscription bolt: keeps push-subscription state per key and adds it to every event.

``register`` / ``subscribe`` / ``unsubscribe`` events (the mapping from event types is
configurable) update the state of their key; every event with a key is enriched with the state
as of that event. Per batch: the states of the batch's keys are loaded at once (a store failure
raises ``TransientError`` with every event untouched, so the engine can retry), updates are
applied in batch (sequence) order with the pure ``state.play``, and the new states are *staged*.
The engine's commit sequence writes them after the sinks have committed
(``commit_state``), only the changes of records the checkpoint covers, in the batch's SQL
transaction when the store shares the warehouse's database. So a batch delivered again — after
a crash, or a sink outage — is enriched from exactly the state its first delivery saw.

Size (~540 lines): one bolt's rules — usable keys and updates, replay-aware staging, enrichment,
the commit hooks — on one batch's data; split, each part would pass the others that data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig, ComponentContext
from squall.enrichment.positions import all_after, made_before, position, positions_of
from squall.enrichment.state import (
    UNKNOWN_STATE,
    Action,
    Position,
    SubscriptionState,
    Update,
    advance,
    parse_topics,
    play,
    version,
)
from squall.enrichment.stores import (
    MAX_KEY_LENGTH,
    CachedStateStore,
    RedisStateStore,
    SqlStateStore,
    StateStore,
)
from squall.errors import quoted
from squall.event import Event, not_an_object
from squall.exact_json import as_number
from squall.identifiers import check_identifier
from squall.paths import MISSING, DottedPath, getter, payload_keys, setter
from squall.times import (
    MAX_FUTURE,
    MAX_FUTURE_DOC,
    Duration,
    WholeSeconds,
    arrival_ms,
    duration_ms,
    not_after_arrival,
    parse_time,
)
from squall.topology.resource_config import RedisResource

if TYPE_CHECKING:
    from squall.topology.resources import Resources

TOO_LONG: Any = type("TooLong", (), {"__repr__": lambda self: "TOO_LONG"})()
#: A key holding NUL: PostgreSQL text cannot store it (psycopg2 raises ValueError on the parameter).
HAS_NUL: Any = type("HasNul", (), {"__repr__": lambda self: "HAS_NUL"})()
#: A key holding a lone surrogate (a Python bolt's ``json.loads`` of ``"\\ud800"``): no store's
#: driver can encode it; an update with it failed the batch's commit, every retry.
NOT_UTF8: Any = type("NotUtf8", (), {"__repr__": lambda self: "NOT_UTF8"})()

#: Topics a key may hold by default: FCM's limit per app instance (2,000 topic subscriptions).
MAX_TOPICS = 2000
#: Longest topic name: FCM's (900 characters).
MAX_TOPIC_LENGTH = 900
#: After ``key_prefix``, the names of a SQL store's Redis cache entries.
CACHE_NAMESPACE = "cache:"

DEFAULT_ACTIONS = {
    "register": Action.REGISTER,
    "subscribe": Action.SUBSCRIBE,
    "unsubscribe": Action.UNSUBSCRIBE,
}


class SubscriptionBolt(Bolt):
    """Tracks register/subscribe/unsubscribe per key in Redis or SQL and enriches events with it."""

    summary: ClassVar[str] = (
        "Keeps push-subscription state per device token (Redis and/or SQL) and adds it to events."
    )
    driver_sql: ClassVar[bool] = True  # the SQL store's upsert is driver SQL

    @classmethod
    def packages(cls, config: Any) -> frozenset[str]:
        """redis-py for the Redis cache (a store on Redis: its resource declares it)."""
        return frozenset({"redis"} if config.cache else ())

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """The subscription block at ``target``; nothing else is changed."""
        return (config.target,)

    class Config(ComponentConfig):
        store: str = Field(
            description="Resource holding the states: a SQL database (sqlite/postgresql URL) or Redis (redis URL)."
        )
        cache: RedisResource | None = Field(
            None,
            description="Redis resource in front of a SQL `store`: read-through and write-through, with `cache_ttl`.",
        )
        cache_ttl: WholeSeconds = Field(
            3600, ge=1, description="Seconds a state stays in the Redis `cache`."
        )
        key: DottedPath = Field(
            "device_token",
            description="Dotted path of the key whose state is kept (a device token, a user id).",
        )
        type_field: DottedPath = Field("event_type", description="Dotted path of the event type.")
        actions: dict[str, Action] = Field(
            default_factory=lambda: dict(DEFAULT_ACTIONS),
            description="Event type → action (register, subscribe, unsubscribe). Other types only read the state.",
        )
        topics_field: DottedPath = Field(
            "topics", description="Dotted path of the topics (a string or a list of strings)."
        )
        time_field: DottedPath | None = Field(
            "timestamp",
            description="Dotted path of the event time (ISO-8601, or epoch seconds or milliseconds). "
            "Null: the record's Kinesis arrival time.",
        )
        target: DottedPath = Field(
            "subscription", description="Dotted path where the subscription block is written."
        )
        max_future: Duration | None = Field(MAX_FUTURE, description=MAX_FUTURE_DOC)

        @field_validator("max_future")
        @classmethod
        def _max_future(cls, v: Any) -> Any:
            if v is not None:
                duration_ms(v)
            return v

        table: str = Field(
            "squall_subscriptions", description="SQL table of the states (created if missing)."
        )

        @field_validator("table")
        @classmethod
        def _table(cls, v: str) -> str:
            return check_identifier(v, "table name")

        history: int = Field(
            4,
            ge=0,
            description="Earlier states remembered per key, so that a re-delivered event is enriched as on its "
            "first delivery (0: re-deliveries see the latest state).",
        )
        max_topics: int = Field(
            MAX_TOPICS,
            ge=1,
            description="Most topics a key may hold (FCM's limit per app instance): a subscribe "
            "that would leave more, or an event naming more, is that event's failure.",
        )
        key_prefix: str = Field(
            "squall:subscription:",
            description="Prefix of the Redis hash names (a `cache`'s: `<key_prefix>cache:<key>`).",
        )

        @model_validator(mode="after")
        def _check(self) -> SubscriptionBolt.Config:
            if not self.actions:
                raise ValueError(
                    "actions: map at least one event type to register, subscribe or unsubscribe"
                )
            if self.cache is not None and self.cache == self.store:
                raise ValueError("cache must be a different resource than store")
            return self

    def __init__(self, config: Config, context: ComponentContext):
        super().__init__(config, context)
        c = config
        self._get_key = getter(c.key)
        self._get_type = getter(c.type_field)
        self._get_topics = getter(c.topics_field)
        self._get_time = getter(c.time_field) if c.time_field else None
        self._set_target = setter(c.target)
        self._key_name = _single_key(c.key)
        self._type_name = _single_key(c.type_field)
        self._target_name = _single_key(c.target)
        self._time_name = _single_key(c.time_field) if c.time_field else None
        self._topics_name = _single_key(c.topics_field)
        self._slack = None if c.max_future is None else duration_ms(c.max_future)
        self._actions = dict(c.actions)
        self.store: StateStore | None = None
        self._state_resource: str | None = None
        # key -> its staged changes in this batch (across the engine's calls of process())
        self._staged: dict[str, _Staged] = {}

    def open(self, resources: Resources) -> None:
        c = self.config

        def redis(client: Any) -> StateStore:
            if c.cache is not None:
                raise ValueError("`cache` needs a SQL `store`: Redis is already the store")
            return RedisStateStore(client, c.key_prefix)

        def sql(engine: Any) -> StateStore:
            self._state_resource = c.store
            store = SqlStateStore(engine, c.table)
            if c.cache is None:
                return store
            if resources.kind(c.cache) != "redis":
                raise ValueError(f"cache resource '{c.cache}' is not Redis")
            # Apart from a Redis store's hashes (no expiry): moving a store from Redis to SQL
            # behind Redis (or back) with the same prefix read each as the other, and the
            # cache's TTL then expired states that existed nowhere else.
            cache = RedisStateStore(
                resources.redis(c.cache), c.key_prefix + CACHE_NAMESPACE, ttl=c.cache_ttl
            )
            return CachedStateStore(cache, store)

        self.store = resources.open_store(
            c.store,
            (self.context.topology, f"{self.id}.store"),
            sql=sql,
            redis=redis,
            driver_sql=True,  # a SQLite file on the plain driver: no SQLAlchemy import
        )

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        updates: list[Update | None] = [None] * len(batch)
        failures: dict[int, str] = {}
        by_key: dict[str, list[int]] = {}  # key -> indexes of its events, in batch order
        keyless: list[int] = []  # events without a usable key: they see the unknown state
        updated: set[str] = set()  # keys with a state-changing event in this call
        # Every event's position (``positions_of``), once an update or a stored state needs them.
        pos: Sequence[Position | None] | None = None
        low: Position | None = None  # the first, when the batch is of one lineage and in order
        get_key, get_type, actions = self._get_key, self._get_type, self._actions
        # Single-key paths (the usual "device_token", "event_type") are read inline.
        key_name, type_name = self._key_name, self._type_name
        for i, event in enumerate(batch):
            value = event.value
            if value.__class__ is not dict and not isinstance(value, dict):
                failures[i] = not_an_object(value)
                continue
            key = value.get(key_name, MISSING) if key_name is not None else get_key(event)
            key = (key.strip() or None) if key.__class__ is str else _scalar_key(key)
            # A key already in ``by_key`` was checked at its first event of the call.
            indexes = None if key is None else by_key.get(key)
            if indexes is None and key is not None:
                if len(key) > MAX_KEY_LENGTH:
                    key = TOO_LONG
                elif "\x00" in key:
                    key = HAS_NUL
                elif not key.isascii() and not _utf8(key):  # isascii: a flag, no scan
                    key = NOT_UTF8
            kind = value.get(type_name, MISSING) if type_name is not None else get_type(event)
            action = actions.get(kind) if kind.__class__ is str else None
            if action is not None:
                if pos is None:
                    pos, low = positions_of(batch, lazy=True)
                update = self._update(event, kind, action, key, pos[i])
                if update.__class__ is str:
                    failures[i] = update
                    continue
                updates[i] = update
                updated.add(key)  # a str: ``_update`` rejects the others
            elif indexes is None and (
                key is None or key is TOO_LONG or key is HAS_NUL or key is NOT_UTF8
            ):
                keyless.append(i)
                continue
            if indexes is None:
                by_key[key] = [i]
            else:
                indexes.append(i)

        # Load (any store failure raises here, before an event is touched), apply, stage.
        # Staging is kept aside until the call returns: a call that raises (the engine then calls
        # again on parts of the batch) must leave nothing staged, else its changes — also the
        # poison record's — would be committed and the parts enriched from the wrong state.
        # Every event's state is found before the first event is changed.
        same: list[tuple[list[int], SubscriptionState]] = []  # groups of events seeing one state
        if keyless:
            same.append((keyless, UNKNOWN_STATE))
        local: dict[str, _Staged] = {}
        if by_key:
            assert self.store is not None, "open() was not called"
            staged = self._staged
            missing = [key for key in by_key if key not in staged]
            loaded = self.store.load(missing) if missing else {}
            keep, max_topics = self.config.history, self.config.max_topics
            for key, indexes in by_key.items():
                prev = staged.get(key)
                latest = loaded.get(key, UNKNOWN_STATE) if prev is None else prev.latest
                made = latest.position
                if pos is None and made is not None:  # (keys with updates: computed)
                    pos, low = positions_of(batch, lazy=True)
                if key not in updated:
                    # Only reads: each event sees the key's latest state, unless it is a
                    # re-delivery from before the update that made that state (then ``play``
                    # finds the state as of its position). Nothing to stage.
                    if made is None or made_before(made, low) or all_after(pos, indexes, made):
                        same.append((indexes, latest))
                        continue
                if prev is None:
                    entry = _Staged(latest, latest)
                else:  # a later call of the same batch: a copy, in case this call raises
                    entry = _Staged(prev.base, latest)
                    entry.updates = list(prev.updates)
                local[key] = entry
                assert pos is not None  # computed at the key's first update
                if made_before(made, low):
                    # ``play``'s usual case, without looking at each event: the batch is of one
                    # lineage and in order, the key's state made before it: each event sees the
                    # state after the updates before it.
                    states = []
                    for i in indexes:
                        update = updates[i]
                        if (
                            update is not None
                            and (state := advance(latest, update, keep)) is not latest
                        ):
                            if len(state.topics) > max_topics:  # (``_bounded``'s first test)
                                self._bounded(state, latest, key)
                            latest = state
                        states.append(latest)
                    after = latest
                else:
                    after, states = play(latest, [(pos[i], updates[i]) for i in indexes], keep)
                    for before, state in zip([latest, *states[:-1]], states, strict=True):
                        if state is not before:
                            self._bounded(state, before, key)
                entry.latest = after
                run_state: SubscriptionState | None = None
                for i, state in zip(indexes, states, strict=True):
                    if state is not run_state:  # a run of events that see one state: a group
                        run: list[int] = []
                        same.append((run, state))
                        run_state = state
                    run.append(i)
                    if updates[i] is not None:
                        entry.updates.append((batch[i], updates[i]))

        # Enrich: the block of each distinct state is built once; its first event takes it, each
        # other event a copy (and its own topics list: later bolts may change them) — made here,
        # before any later bolt sees the first.
        blocks: dict[int, tuple[dict[str, Any], list[str]]] = {}
        set_target, target_name = self._set_target, self._target_name
        for indexes, state in same:
            # Keyed by the state's id: every state is held by the call's groups until it
            # returns, so no id is reused meanwhile.
            found = blocks.get(id(state))
            if found is None:
                block = state.block()
                found = blocks[id(state)] = (block, block["topics"])
                if target_name is not None:
                    batch[indexes[0]].value[target_name] = block
                else:
                    set_target(batch[indexes[0]], block)
                if len(indexes) == 1:
                    continue
                indexes = indexes[1:]
            block, topics = found
            for i in indexes:
                copy = block.copy()
                copy["topics"] = topics[:]
                if target_name is not None:
                    batch[i].value[target_name] = copy
                else:
                    set_target(batch[i], copy)
        if failures:
            for i in sorted(failures):
                out.fail(batch[i], failures[i])
            out.emit_all([event for i, event in enumerate(batch) if i not in failures])
        else:
            out.emit_all(list(batch))
        self._staged.update(local)
        return out

    # -- the commit sequence ----------------------------------------------------------------

    stateful = True

    def state_resource(self) -> str | None:
        return self._state_resource

    def commit_state(self, covered: Callable[[Event], bool], connection: Any = None) -> None:
        """Write the staged states, replaying only the updates of covered records."""
        assert self.store is not None, "open() was not called"
        keep = self.config.history
        changed: dict[str, SubscriptionState] = {}
        base: dict[str, str] = {}  # the version each change was computed from
        for key, entry in self._staged.items():
            if all(covered(ev) for ev, _ in entry.updates):
                new = entry.latest
            else:  # some updates come after a failed record of their shard: they come again
                kept = [(position(ev), u) for ev, u in entry.updates if covered(ev)]
                new = play(entry.base, kept, keep)[0] if kept else entry.base
            if new is not entry.base:
                changed[key] = new
                base[key] = entry.base.version
        # Also without changes: a cached store fills Redis with this batch's misses. A key
        # another process updated since it was loaded raises StateMoved (a TransientError):
        # its state computed from the older one would drop that update.
        self.store.save(changed, connection, base)

    def state_committed(self) -> None:
        self._staged = {}
        if self.store is not None:
            self.store.flush()

    def discard_state(self) -> None:
        self._staged = {}
        if self.store is not None:
            self.store.discard()

    def _bounded(
        self, state: SubscriptionState, before: SubscriptionState, key: str
    ) -> SubscriptionState:
        """``state``, unless it holds more than ``max_topics`` and more than the state ``before``
        it: then the event that made it is refused — raised, so the engine isolates it and the
        others go on, and nothing of this call is staged. Unbounded, a client's subscribes grew a
        key's topics without end, each event's cost with them (200 events of 1,000 new topics:
        10 s). A key already over the bound (stored before it, or ``max_topics`` lowered) still
        takes every event that does not add topics: an unsubscribe must always get through."""
        count = len(state.topics)
        if count > self.config.max_topics and count > len(before.topics):
            raise ValueError(
                f"a subscribe would leave {len(state.topics)} topics on key "
                f"{quoted(key)}, over max_topics ({self.config.max_topics})"
            )
        return state

    def _update(
        self, event: Event, kind: str, action: Action, key: str | None, at: Position | None
    ) -> Update | str:
        """The update a state-changing event carries, or why it is rejected."""
        c = self.config
        eid = event._event_id
        if eid is None:
            eid = event.event_id
        if (
            key.__class__ is not str
            or "\x00" in eid
            or "\x1f" in eid
            or (not eid.isascii() and not _utf8(eid))
        ):
            return self._unusable(kind, key, eid)
        # One-level paths (the usual "timestamp", "topics") are read inline.
        value, time_name, topics_name = event.value, self._time_name, self._topics_name
        try:
            if self._get_time is None:
                time_ms = arrival_ms(event.meta.arrival_time)
            else:
                when = value.get(time_name, MISSING) if time_name else self._get_time(event)
                if when is MISSING:
                    raise ValueError("missing")
                time_ms = parse_time(when)
                if self._slack is not None:  # an event cannot happen after it arrived
                    time_ms = not_after_arrival(time_ms, event.meta.arrival_time, self._slack)
        except ValueError as exc:
            return f"{kind} event with a bad '{c.time_field or 'arrival time'}': {exc}"
        found = value.get(topics_name, MISSING) if topics_name else self._get_topics(event)
        if found is MISSING or found is None:
            topics = None
        else:
            try:
                topics = parse_topics(found)
            except ValueError as exc:
                return f"{kind} event with bad '{c.topics_field}': {exc}"
            if topics and len(topics) > c.max_topics:
                return f"{kind} event with {len(topics)} topics, over max_topics ({c.max_topics})"
            if topics and max(map(len, topics)) > MAX_TOPIC_LENGTH:
                return (
                    f"{kind} event with bad '{c.topics_field}': a topic longer than "
                    f"{MAX_TOPIC_LENGTH} characters"
                )
            if topics and not all(map(str.isascii, topics)) and not all(map(_utf8, topics)):
                return (
                    f"{kind} event with bad '{c.topics_field}': a topic is not valid UTF-8 text "
                    "(a lone surrogate)"
                )
        meta = event.meta
        v = version(time_ms, meta.sequence_number, meta.sub_sequence_number, eid)
        return Update(action, time_ms, v, eid, topics, at)

    def _unusable(self, kind: str, key: Any, eid: str) -> str:
        """Why a state-changing event whose key or event id no store can keep is rejected."""
        name = self.config.key
        if key is None:
            return f"{kind} event without a usable '{name}'"
        if key is HAS_NUL:
            return f"{kind} event whose '{name}' contains a NUL character (a state store cannot keep it)"
        if key is NOT_UTF8:
            return f"{kind} event whose '{name}' is not valid UTF-8 text (a lone surrogate)"
        if "\x00" in eid:  # the state row carries it (event_id, version)
            return f"{kind} event whose event id contains a NUL character (a state store cannot keep it)"
        if "\x1f" in eid:  # the separator of a composed version (``state.compose``)
            return (
                f"{kind} event whose event id contains a U+001F character (it would be read as "
                "the separator of the state's version)"
            )
        if not eid.isascii() and not _utf8(eid):
            return f"{kind} event whose event id is not valid UTF-8 text (a lone surrogate)"
        return f"{kind} event whose '{name}' is longer than {MAX_KEY_LENGTH} characters"


class _Staged:
    """One key's state in the batch: as loaded, as of its last event, and the updates applied."""

    __slots__ = ("base", "latest", "updates")

    def __init__(self, base: SubscriptionState, latest: SubscriptionState):
        self.base = base
        self.latest = latest
        self.updates: list[tuple[Event, Update]] = []


def _single_key(path: str) -> str | None:
    """The payload key of a one-level path (read inline by ``process``), else None."""
    keys = payload_keys(path)
    return keys[0] if keys is not None and len(keys) == 1 else None


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogate), as every store's driver needs."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_key(value: Any) -> str | None:
    """A key that is not a plain ``str``: an integer as its digits, a subclass of ``str`` (a
    Python bolt's own text type, a ``StrEnum`` member) as its text, NumPy's integer scalars
    (``int64``: ``exact_json.as_number``) as their number's digits — each the key its plain
    value is, as the window bolt's key fields take them; missing, null, booleans, floats and
    containers give no key."""
    if isinstance(value, str):
        return str.__str__(value).strip() or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int.__repr__(value)
    number = as_number(value)
    if number.__class__ is int:  # (a float's, a bool_'s: no key, as their plain values)
        return int.__repr__(number)
    return None
