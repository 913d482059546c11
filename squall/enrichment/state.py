"""Push-subscription state of one key (a device token or a user) and the pure function that updates it.

Every update carries a *version*: a string that orders updates by event time, then by the
record's position in its shard, then by event id, and compares correctly byte by byte (so SQL
``<`` under a binary collation and a Redis script agree with Python). ``apply`` ignores a replayed
update (the same version); one older than the state still applies where no newer update decided
(``_merged``: an earlier register's time; a subscribe or unsubscribe with only registers after
it), and the state's version then grows (``compose``), so that the stores write it. So
re-delivering any prefix of a stream leaves the same state.

Size (~460 lines): the state and update types, the pure update function with its late-update
merge and composed versions, the history encoding, and ``play``'s as-of lookup for
re-deliveries; one concern, the rules of one key's state.

Events are enriched with the state *as of* each event: the state after the updates before it in
the stream. So that a re-delivered event (say, a sink failed after this state was saved) sees
what its first delivery saw, a state remembers where in its shard the update that made it was
(``position``) and the few states before it (``previous``); ``play`` looks a re-delivered event's
position up in that history.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from itertools import repeat
from typing import Any

import orjson

from squall.event import RecordMeta, derive_event_id
from squall.times import format_ms

#: Where a record was read: its lineage (``squall.event.lineage``: shard, stream and, for inputs
#: numbered by line, the input), sequence number, sub-sequence number.
Position = tuple[str, int, int]


class Action(StrEnum):
    REGISTER = "register"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class Status(StrEnum):
    UNKNOWN = "unknown"  # never seen (or no key)
    REGISTERED = "registered"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True, slots=True, init=False)
class SubscriptionState:
    """The state of one key. ``version`` is that of the last applied update ("" when none)."""

    status: Status = Status.UNKNOWN
    subscribed: bool = False
    topics: tuple[str, ...] = ()  # sorted, distinct
    registered_at: int | None = None  # epoch milliseconds of the first registration
    changed_at: int | None = None  # epoch milliseconds of the last applied update
    version: str = ""
    event_id: str = ""
    position: Position | None = None  # where the update that made this state was read
    # The states before this one, oldest first, each encoded by ``encode`` (decoded only when a
    # re-delivery needs them); not part of equality.
    history: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __init__(
        self,
        status: Status = Status.UNKNOWN,
        subscribed: bool = False,
        topics: tuple[str, ...] = (),
        registered_at: int | None = None,
        changed_at: int | None = None,
        version: str = "",
        event_id: str = "",
        position: Position | None = None,
        history: tuple[str, ...] = (),
    ):
        # Frozen, but set through the slots' own descriptors: a frozen dataclass's generated
        # ``__init__`` goes through ``object.__setattr__`` per field (1.0 against 0.66 µs), and every
        # update and every loaded row builds a state.
        _s_status(self, status)
        _s_subscribed(self, subscribed)
        _s_topics(self, topics)
        _s_registered_at(self, registered_at)
        _s_changed_at(self, changed_at)
        _s_version(self, version)
        _s_event_id(self, event_id)
        _s_position(self, position)
        _s_history(self, history)

    @property
    def previous(self) -> tuple[SubscriptionState, ...]:
        """The remembered states before this one, oldest first."""
        return tuple(decode(h) for h in self.history)

    def block(self) -> dict[str, Any]:
        """The enrichment block of an event that sees this state."""
        registered_at, changed_at = self.registered_at, self.changed_at
        return {
            "status": self.status._value_,  # the text, without str()'s copy
            "subscribed": self.subscribed,
            "topics": list(self.topics),
            "registered_at": None if registered_at is None else format_ms(registered_at),
            "last_change_at": None if changed_at is None else format_ms(changed_at),
        }


(
    _s_status,
    _s_subscribed,
    _s_topics,
    _s_registered_at,
    _s_changed_at,
    _s_version,
    _s_event_id,
    _s_position,
    _s_history,
) = (getattr(SubscriptionState, f.name).__set__ for f in fields(SubscriptionState))
UNKNOWN_STATE = SubscriptionState()


@dataclass(frozen=True, slots=True, init=False)
class Update:
    """A state-changing event: what to do, when, and its version."""

    action: Action
    time_ms: int
    version: str
    event_id: str
    topics: tuple[str, ...] | None = None  # None or empty: no topics given
    position: Position | None = None

    def __init__(
        self,
        action: Action,
        time_ms: int,
        version: str,
        event_id: str,
        topics: tuple[str, ...] | None = None,
        position: Position | None = None,
    ):
        _u_action(self, action)  # as SubscriptionState: one per state-changing event
        _u_time_ms(self, time_ms)
        _u_version(self, version)
        _u_event_id(self, event_id)
        _u_topics(self, topics)
        _u_position(self, position)


_u_action, _u_time_ms, _u_version, _u_event_id, _u_topics, _u_position = (
    getattr(Update, f.name).__set__ for f in fields(Update)
)


def apply(state: SubscriptionState, update: Update) -> SubscriptionState:
    """The state after ``update``; ``state`` itself when the update changes nothing.

    - register: first registration sets ``registered_at``; an unknown key becomes "registered".
    - subscribe: opts in (``subscribed``, "subscribed") and adds the topics given, if any.
    - unsubscribe without topics: opts out of everything ("unsubscribed", no topics).
    - unsubscribe with topics: removes them; removing the last topic opts out. A key subscribed
      without topics stays subscribed when asked to leave topics it does not have.

    An update older than the state (``_merged``) still applies where no newer update decided:
    a register's earlier time becomes ``registered_at``, and a subscribe or unsubscribe applies
    when only registers came after it (they change no subscription).
    """
    if update.version > state.version:
        return _applied(state, update, ())
    return _merged(state, update, ()) or state


#: After the version of a state made by a ``register`` (or into which an older update was
#: merged): the version of the key's last subscribe or unsubscribe ("" when none), its first
#: registration (``_registered``), and that version's length (five digits), each after a U+001F.
#: Byte order is kept: the newest update's version first; then a later subscription, or an
#: earlier registration, makes a greater version (the stores write a state only over an older
#: version).
_SEP = "\x1f"
_NEVER = "-" * 15  # no registration: before any ("-" < "0")
_TAIL = 22  # _SEP, 15 characters, _SEP, 5 digits


def _registered(registered_at: int | None) -> str:
    """``registered_at`` as 15 characters that sort higher for an earlier time."""
    return _NEVER if registered_at is None else "%015d" % (10**15 - 1 - registered_at)  # noqa: UP031


def compose(newest: str, subscription: str, registered_at: int | None) -> str:
    """The version of a state whose newest update is ``newest`` and whose subscription was last
    set by the update of version ``subscription``."""
    return (
        f"{newest}{_SEP}{subscription}{_SEP}{_registered(registered_at)}"
        f"{_SEP}{len(subscription):05d}"
    )


def split_version(version: str) -> tuple[str, str]:
    """The version of a state's newest update, and of the update that last set its subscription:
    both the version itself unless it was ``compose``d (a state of an older squall, or made by a
    subscribe or unsubscribe)."""
    if (
        len(version) <= _TAIL
        or version[-6] != _SEP
        or version[-_TAIL] != _SEP
        or not version[-5:].isdecimal()
    ):
        return version, version
    end = len(version) - _TAIL
    start = end - int(version[-5:])
    if start < 1 or version[start - 1] != _SEP:
        return version, version
    return version[: start - 1], version[start:end]


def _merged(
    state: SubscriptionState, update: Update, history: tuple[str, ...]
) -> SubscriptionState | None:
    """An update not newer than ``state`` — late (a client's lagging clock, a dead letter
    re-driven after the key's later events), or one already applied — merged into it; None when
    it changes nothing. A register's earlier time becomes ``registered_at`` (the first
    registration). A subscribe or unsubscribe applies when it is newer than the update that last
    set the subscription: only registers came after it, and they change no subscription, so the
    state is the one of the updates in version order. Else (a newer subscribe or unsubscribe
    decided) it changes nothing."""
    if update.version == state.version:
        return None  # the same update again (a re-delivery)
    newest, subscription = split_version(state.version)
    registered_at = state.registered_at
    if update.action is _REGISTER:
        if registered_at is not None and registered_at <= update.time_ms:
            return None
        registered_at = update.time_ms
        status, subscribed, topics = state.status, state.subscribed, state.topics
        if status is _UNKNOWN:
            status = _REGISTERED
    else:
        if update.version <= subscription:
            return None
        after = _applied(state, update, ())
        status, subscribed, topics = after.status, after.subscribed, after.topics
        subscription = update.version
    # Where the state was made: at the update, when it is of the same lineage — later (a
    # client's lagging clock: a re-delivery of the events before it sees the state before it)
    # or, for a subscribe or unsubscribe, earlier (a dead letter ``squall replay`` re-drove at
    # its first position: the same replay delivered again finds the state it made there, not the
    # one before it; only registers came after it, which change no subscription); else where the
    # newest update was: another shard's, an input's, and an earlier register, whose state holds
    # the subscribe or unsubscribe after it (placed at the register, the events between saw them).
    at, made = update.position, state.position
    here = at is not None and (
        made is None or (at[0] == made[0] and (at > made or update.action is not _REGISTER))
    )
    return SubscriptionState(
        status,
        subscribed,
        topics,
        registered_at,
        state.changed_at,
        compose(newest, subscription, registered_at),
        update.event_id if here else state.event_id,
        at if here else made,
        history,
    )


_REGISTER, _SUBSCRIBE = Action.REGISTER, Action.SUBSCRIBE
_UNKNOWN, _REGISTERED = Status.UNKNOWN, Status.REGISTERED
_SUBSCRIBED, _UNSUBSCRIBED = Status.SUBSCRIBED, Status.UNSUBSCRIBED


def _applied(
    state: SubscriptionState, update: Update, history: tuple[str, ...]
) -> SubscriptionState:
    """``apply`` of a newer update, the result remembering ``history``."""
    # (members as module globals: ``Action.REGISTER`` is a class attribute lookup through the
    # enum's metaclass, ~70 ns each)
    status, subscribed, registered_at = state.status, state.subscribed, state.registered_at
    topics = state.topics
    action = update.action
    if action is _REGISTER:
        if registered_at is None:
            registered_at = update.time_ms
        if status is _UNKNOWN:
            status = _REGISTERED
    elif action is _SUBSCRIBE:
        if update.topics:
            topics = tuple(sorted(set(topics).union(update.topics)))
        subscribed, status = True, _SUBSCRIBED
    else:
        if update.topics:
            remaining = tuple(t for t in topics if t not in update.topics)
            if topics and not remaining:
                subscribed, status = False, _UNSUBSCRIBED
            topics = remaining
        else:
            topics, subscribed, status = (), False, _UNSUBSCRIBED
        if status is _UNKNOWN:
            status = _UNSUBSCRIBED
    return SubscriptionState(
        status,
        subscribed,
        topics,
        registered_at,
        update.time_ms,
        # a register keeps the version of the update that set the subscription (``_merged``)
        compose(update.version, split_version(state.version)[1], registered_at)
        if action is _REGISTER
        else update.version,
        update.event_id,
        update.position,
        history,
    )


def encode(state: SubscriptionState) -> str:
    """One state (without its history) as compact JSON text, for a state's history."""
    p = state.position
    return orjson.dumps(
        [
            state.status._value_,
            state.subscribed,
            state.topics,
            state.registered_at,
            state.changed_at,
            state.version,
            state.event_id,
            None if p is None else [p[0], str(p[1]), p[2]],
        ]
    ).decode()


def decode(text: str) -> SubscriptionState:
    status, subscribed, topics, registered_at, changed_at, version_, event_id, p = orjson.loads(
        text
    )
    position = None if p is None else (p[0], int(p[1]), p[2])
    return SubscriptionState(
        Status(status),
        subscribed,
        tuple(topics),
        registered_at,
        changed_at,
        version_,
        event_id,
        position,
    )


def advance(state: SubscriptionState, update: Update, keep: int) -> SubscriptionState:
    """``apply``, remembering up to ``keep`` earlier states in the ``history`` of the result."""
    if update.version > state.version:
        if keep <= 0:
            return _applied(state, update, ())
        return _applied(state, update, (*state.history, encode(state))[-keep:])
    if _merged(state, update, ()) is None:  # (the usual case: nothing to encode)
        return state
    return _merged(state, update, (*state.history, encode(state))[-keep:] if keep > 0 else ())


def play(
    state: SubscriptionState, events: list[tuple[Position | None, Update | None]], keep: int
) -> tuple[SubscriptionState, list[SubscriptionState]]:
    """Run one key's events of a batch in order: ``(position, update)``, update None for a read.

    Returns the key's new state and the state each event sees. A newer update is applied and
    its event sees the result. Any other event sees the state as of its position: the latest
    state if it comes after the update that made it (in the same lineage), else — a re-delivery —
    the remembered state made by the last update at or before its position. Positions in other
    lineages (streams' shards, inputs) do not compare: such events see the latest state. A
    position saved before lineages named their stream compares in the lineage its update was
    read in (``_read_in``)."""
    applied = [state]  # states of this call; the history before them is decoded only when needed
    chain: list[SubscriptionState] | None = None
    latest = state
    seen = []
    for position, update in events:
        if update is not None and (after := advance(latest, update, keep)) is not latest:
            latest = after  # newer, or an older one merged (``_merged``)
            applied.append(latest)  # a record repeated within the batch finds it too
            made = latest.position
            if not (
                position is not None
                and made is not None
                and position[0] == made[0]
                and position < made
            ):
                seen.append(latest)
                continue
            # merged and placed where a later update made the state (an earlier register): its
            # event sees the state as of its position, as its delivery again will
        made = latest.position
        if (
            position is None
            or made is None
            or (
                position > made
                if position[0] == made[0]
                # another lineage, unless ``made`` was saved before lineages named their stream
                else "\x1f" in made[0]
                or (position[1], position[2]) > (made[1], made[2])
                or not _read_in(made, latest.event_id, position[0])
            )
        ):
            seen.append(latest)  # the usual case: an event after the latest update
            continue
        if chain is None:
            chain = [*state.previous, *applied]
        else:
            chain.extend(applied[len(chain) - len(state.history) :])
        seen.append(_as_of(chain, position))
    return latest, seen


def _as_of(chain: list[SubscriptionState], position: Position) -> SubscriptionState:
    """The state as of an earlier ``position``: made by the last update at or before it."""
    for state in reversed(chain):
        at = state.position
        if at is None or (
            at <= position
            if at[0] == position[0]
            else (at[1], at[2]) <= (position[1], position[2])
            or not _read_in(at, state.event_id, position[0])
        ):
            return state  # the state before all updates, from another shard, or as of the position
    return chain[0]  # history too short: the oldest remembered state


def _read_in(at: Position, event_id: str, name: str) -> bool:
    """Whether position ``at`` of another lineage than ``name`` is of ``name`` after all: saved
    before lineages named their stream (its lineage a shard id alone:
    ``squall.event.is_old_lineage``), by an update read in ``name`` (a stream's shard) — the
    event id derived from that stream's record at that position is the update's. Else it does
    not compare. Only states an earlier version saved, until their key's next update."""
    shard = at[0]
    n = len(shard)
    if "\x1f" in shard or name[n : n + 1] != "\x1f" or not name.startswith(shard):
        return False
    stream = name[n + 1 :]
    if "\x1f" in stream:  # a file's, an S3 object's or a request's lineage (it has a source)
        return False
    return derive_event_id(RecordMeta(stream, shard, str(at[1]), at[2])) == event_id


def position_of(lineage: str, sequence_number: str, sub_sequence_number: int) -> Position | None:
    """The position of a record, when its sequence number is a number (Kinesis, files): decimal
    digits, which ``int`` reads (``isdigit`` also takes "²" and "①", which it cannot)."""
    return (
        (lineage, int(sequence_number), sub_sequence_number)
        if sequence_number.isdecimal()
        else None
    )


def version(time_ms: int, sequence_number: str, sub_sequence_number: int, event_id: str) -> str:
    """The order of an update as a string: event time, shard position, event id.

    Fixed-width digits for the time and sub-sequence; the (arbitrarily long) Kinesis sequence
    number is prefixed by its length, so longer numbers sort after shorter ones.
    """
    seq = sequence_number.lstrip("0") if sequence_number.isdecimal() else ""  # (as position_of)
    # %-formatting: ~25 % faster than the f-string here (one per state-changing event)
    return "%015d.%03d%s.%010d.%s" % (time_ms, len(seq), seq, sub_sequence_number, event_id)  # noqa: UP031


def parse_topics(value: Any) -> tuple[str, ...] | None:
    """Topics of an event: a list of strings, or one string. None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    # At C speed (``map``): a generator for the check and a set comprehension calling ``strip``
    # twice a topic were ~half of this function's time (one call per state-changing event).
    if not isinstance(value, list) or not all(map(isinstance, value, repeat(str))):
        raise ValueError("topics must be a string or a list of strings")
    topics = set(map(str.strip, value))
    topics.discard("")
    return tuple(sorted(topics)) if topics else None
