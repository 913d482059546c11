"""Records, events and positions: the data every runner, bolt and sink agree on.

A *record* is what a source delivers (bytes plus Kinesis metadata). An *event* is what flows
through the bolts: the decoded payload (``value``) plus the record's immutable metadata and a
deterministic ``event_id``. One record yields one event, or several when it is a KPL aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from squall.digests import blake2b
from squall.errors import MAX_REASON, masked_reason


class RecordMeta(NamedTuple):
    """Where a record came from. Replaying the same record yields the same metadata.

    Immutable. A named tuple rather than a frozen dataclass: every record of every source builds
    one, and a frozen dataclass's ``__init__`` sets each of its nine fields through
    ``object.__setattr__`` (1.6 µs a record against 0.3 µs).
    """

    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0
    partition_key: str = ""
    arrival_time: datetime | None = None
    explicit_hash_key: str | None = None
    #: Sources without native sequence numbers (files, stdin): a digest of the source's bytes up to
    #: and including this record. Part of the event id when set, so two different files with the
    #: same name never share ids, while a replay of the same (or an appended) file keeps them.
    fingerprint: str | None = None
    #: Set by a spout that could not deliver the record whole (e.g. a line over ``max_line_bytes``):
    #: the reason. The record's ``data`` is then only a prefix, and decoding it is that record's
    #: failure with this reason (the json bolt rejects it).
    defect: str | None = None
    #: Sources whose sequence numbers restart with each input they read: files, stdin and S3
    #: objects give the fingerprint of the input's first record (the same for an input and its
    #: appended copy, another for other content under the same name), the Lambda producer its
    #: request id. With ``shard_id`` and ``stream`` it names where the sequence numbers count
    #: (``lineage``): two inputs starting with the same line are two inputs when their names differ.
    #: None for Kinesis (and SQS), whose stream and shard say it. Not part of the event id.
    source: str | None = None
    #: How many times ``squall replay`` re-drove this record from a dead letter (0: never). Not
    #: part of the event id; it keeps a replayed record's new dead letter apart from the one it
    #: was replayed from, while repeating the same replay writes nothing twice.
    replay: int = 0

    @property
    def position(self) -> Position:
        return Position(self.sequence_number, self.sub_sequence_number)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
            "partition_key": self.partition_key,
            "arrival_time": self.arrival_time.isoformat() if self.arrival_time else None,
            "explicit_hash_key": self.explicit_hash_key,
            **({"fingerprint": self.fingerprint} if self.fingerprint else {}),
            **({"defect": self.defect} if self.defect else {}),
            **({"source": self.source} if self.source else {}),
            **({"replay": self.replay} if self.replay else {}),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> RecordMeta:
        """The metadata ``as_dict`` wrote (a dead letter's ``meta``); ``ValueError`` naming the
        field when a value is missing or of the wrong type."""
        if not isinstance(doc, dict):
            raise ValueError("meta is not an object")
        text = {"stream": True, "shard_id": True, "sequence_number": True, "partition_key": False}
        values: dict[str, Any] = {}
        for name, required in text.items():
            value = doc.get(name, None if required else "")
            if not isinstance(value, str):
                raise ValueError(f"meta.{name} is {'missing' if value is None else 'not text'}")
            values[name] = value
        for name in ("sub_sequence_number", "replay"):
            value = doc.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"meta.{name} is not a non-negative integer")
            values[name] = value
        for name in ("explicit_hash_key", "fingerprint", "defect", "source"):
            value = doc.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"meta.{name} is not text")
            values[name] = value
        arrival = doc.get("arrival_time")
        if arrival is not None:
            try:
                arrival = datetime.fromisoformat(arrival)
            except (TypeError, ValueError):
                raise ValueError("meta.arrival_time is not an ISO-8601 time") from None
        return cls(arrival_time=arrival, **values)


#: ``new_meta(RecordMeta, (stream, shard_id, sequence_number, sub_sequence_number,
#: partition_key, arrival_time, explicit_hash_key, fingerprint, defect, source, replay))``: every
#: field, in order, none defaulted — the spouts' per-record constructor. ``RecordMeta(...)`` runs
#: the named tuple's ``__new__`` (a Python frame with defaults: ~0.9 against ~0.4 µs a record);
#: tests/test_event_meta.py checks each spout's records carry every field.
new_meta = tuple.__new__


def lineage(meta: RecordMeta) -> str:
    """Where a record's sequence number counts: its stream's shard, and for inputs numbered from
    1 each time (files, stdin, S3 objects, a producer's requests) that input: its ``source``.
    Two records' positions compare only within one lineage: line 5 of today's file does not come
    before line 9 of yesterday's — even when both files start with the same line —, nor record 1
    of one API request before record 2 of another, nor a record of one Kinesis stream's
    ``shardId-000000000000`` before one of another stream's (every stream has that shard). A
    Kinesis (or SQS) shard's lineage is ``<shard id>\x1f<stream>``; squall before this version
    stored the shard id alone (``is_old_lineage``). A record re-driven by ``squall replay``
    (``replay`` > 0) is of a lineage of its own, one per record: never counted where its position
    was, it is taken now (the window bolt's marks; the subscription bolt enriches it as of its
    original position: ``squall.enrichment.positions.position``)."""
    source, replay = meta.source, meta.replay
    if source is None:
        name = f"{meta.shard_id}\x1f{meta.stream}"  # (inline in the subscription bolt, too)
    else:
        name = f"{meta.shard_id}\x1f{meta.stream}\x1f{source}"
    if not replay:
        return name
    # One lineage per re-driven record: replays select records in any order (by component,
    # reason, time), so no high-water position could tell a repeat from one not yet counted.
    position = f"{meta.sequence_number}\x1f{meta.sub_sequence_number}"
    return f"{REPLAY_LINEAGE}{replay}\x1f{name}\x1f{position}"


def is_old_lineage(name: str) -> bool:
    """Whether a stored lineage is a shard id alone, as squall before this version (6 December)
    saved a Kinesis or SQS shard's positions and window marks (and, earlier still, a file's):
    every lineage named since holds a U+001F (between shard, stream and source; a re-driven
    record's head)."""
    return "\x1f" not in name


#: The head of a re-driven record's lineage (``lineage``): such a lineage counts positions (a
#: replay repeated is recognised) but is no shard — it takes no part in a window's watermark.
#: It starts with a control character no shard id starts with (an S3 object key may well start
#: with "replay").
REPLAY_LINEAGE = "\x1freplay "


def derive_event_id(meta: RecordMeta) -> str:
    """A stable id for a user record: the same stream, shard, sequence and sub-sequence give the same id."""
    key = (
        f"{meta.stream}\x1f{meta.shard_id}\x1f{meta.sequence_number}\x1f{meta.sub_sequence_number}"
    )
    if meta.fingerprint:
        key += f"\x1f{meta.fingerprint}"
    return blake2b(key.encode(), digest_size=16).hexdigest()


def not_an_object(value: Any) -> str:
    """Why a bolt that reads payload fields fails an event whose ``value`` is no JSON object.
    ``None`` is mostly a record no decode bolt ran on (a topology of a `subscription` bolt
    alone dead-lettered every line of a JSON-lines file as "not a JSON object"): say so."""
    if value is None:
        return (
            "payload is not a JSON object (it is none: is there a `json` bolt before this one "
            "to decode the record?)"
        )
    return "payload is not a JSON object"


@dataclass(frozen=True, slots=True)
class Position:
    """A point in a shard: Kinesis sequence number plus KPL sub-sequence number.

    Kinesis sequence numbers are decimal strings of varying length that increase within a shard,
    so they compare as integers, never as strings.
    """

    sequence_number: str
    sub_sequence_number: int = 0

    def key(self) -> tuple[int, int]:
        return int(self.sequence_number), self.sub_sequence_number

    def __lt__(self, other: Position) -> bool:  # type: ignore[override]
        return self.key() < other.key()

    def __le__(self, other: Position) -> bool:  # type: ignore[override]
        return self.key() <= other.key()

    def __gt__(self, other: Position) -> bool:  # type: ignore[override]
        return self.key() > other.key()

    def __ge__(self, other: Position) -> bool:  # type: ignore[override]
        return self.key() >= other.key()


@dataclass(slots=True)
class Record:
    """Raw bytes from a source, before decoding and KPL de-aggregation."""

    data: bytes
    meta: RecordMeta


@dataclass(slots=True)
class Failure:
    """Why an event left the normal path: the component that rejected it and the reason."""

    component: str
    reason: str
    stream: str = "error"
    #: Set by the engine on a record a sink could not write after its retries (``WriteResult.failed``):
    #: a dependency's failure, not the record's, so delivering it again may succeed.
    retry: bool = False
    #: Seconds the dependency asked to wait before that (an HTTP ``Retry-After``), if it did.
    retry_after: float | None = None

    def __post_init__(self) -> None:
        # A reason goes into dead letters (an SQS message: 256 KiB at most), log lines and the
        # producer's answer: a component's own reason (``Output.fail``) is bounded as an
        # exception's is (``describe_exception``).
        # Masked before it is cut, as an exception's: a password cut off from its URL's ``@host``
        # was no longer found by the masks of the dead letter and the producer's answer.
        # (A cut reason, ``… [truncated, N chars]``, is not cut again by ``dataclasses.replace``.)
        reason = self.reason
        if reason.__class__ is not str or len(reason) > MAX_REASON + 40:
            self.reason = masked_reason(reason)


class Event:
    """One user record flowing through the topology.

    ``value`` is the payload (``None`` until a decode bolt sets it); ``raw`` keeps the original
    bytes for the dead letter. ``origin`` is the index of the input record in its batch, which is
    how the engine accounts every event back to the record that produced it. ``event_id`` is
    derived from the metadata on first use unless something (a decode bolt's ``event_id_field``)
    set it first.
    """

    #: A slot added here is set in ``Engine._expand`` too (it builds each record's event without
    #: calling ``__init__``; tests/topology/test_engine_events.py).
    __slots__ = ("raw", "meta", "_event_id", "origin", "value", "failure", "extra")

    def __init__(
        self,
        raw: bytes,
        meta: RecordMeta,
        event_id: str | None,
        origin: int,
        value: Any = None,
        failure: Failure | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.raw = raw
        self.meta = meta
        self._event_id = event_id
        self.origin = origin
        self.value = value
        self.failure = failure
        self.extra = {} if extra is None else extra

    @property
    def event_id(self) -> str:
        eid = self._event_id
        if eid is None:
            eid = self._event_id = derive_event_id(self.meta)
        return eid

    @event_id.setter
    def event_id(self, value: str) -> None:
        self._event_id = value

    def fork(self) -> Event:
        """A deep copy for a fan-out edge: downstream branches may change their copy freely."""
        return Event(
            self.raw,
            self.meta,
            self._event_id,
            self.origin,
            deep_copy(self.value),
            self.failure,
            dict(self.extra),
        )

    def __repr__(self) -> str:
        return f"Event(event_id={self.event_id!r}, origin={self.origin}, value={self.value!r}, failure={self.failure!r})"


def deep_copy(value: Any) -> Any:
    """A copy of a JSON-shaped value whose dicts and lists are its own (several times faster than
    ``copy.deepcopy``): an event's value on a fan-out edge, a default or a cached record handed to
    each event (later bolts may change it)."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value
