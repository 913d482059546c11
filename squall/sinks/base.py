"""The sink API: batch-first, with a small lifecycle.

``open(resources)`` once per process; per batch, ``prepare(events)`` (pure: build rows, reject
what cannot be written) and ``write_batch(prepared, ctx)`` (the I/O); ``close()`` at shutdown.
The engine writes dead letters before committing sinks, and moves the checkpoint only after
every sink returned for the batch (see the commit sequence in docs/architecture.md).

An exception from ``prepare`` or ``write_batch`` other than ``TransientError`` and ``SinkError``
is taken to be caused by a record: the engine writes halves of the batch (each with a fresh
``prepare``) until it finds the records that fail alone, dead-letters those and commits the
rest. So a sink's writes must be idempotent on ``event_id``, as they must be for replays.
``prepare`` may return new events (rows made of an event): prepared again (a half, records
held back, a refusal), it is given the events it was given of those records, never its own.

Two optional parts of the contract:

* **Holding** (a sink that rolls files across batches): ``write_batch`` may keep what it accepted
  in a buffer that is not yet durable; ``holding()`` then answers True and the engine holds the
  checkpoint back — it saves nothing past the batch before the sink started holding — until
  ``due()`` says the buffer should roll and ``release()`` made it durable. Runners that cannot
  hold (Lambda: an invocation must end durable) have the engine release after every batch; end
  of input and a graceful shutdown release too. A crash loses only the buffer: the source
  delivers its records again from the held checkpoint, so a held buffer must drop an event whose
  position it already holds (a batch delivered again after a failed batch) — by position, not
  "at or before": a record that failed elsewhere comes again after later ones were held. When a
  batch fails after the sink took its rows, the engine calls ``discard(batch)`` (the batch's
  ``WriteContext.batch``): the sink drops what it took from that batch and still holds (what
  earlier batches took stays: their checkpoint waits for the release), so the batch's next
  delivery is taken anew instead of joining an object with rows the batch never committed; what
  a release already made durable of it, the sink takes back (the s3 sink: deletes or rewrites
  the objects), whoever runs the batch again. When records of a batch come again although the
  batch does not fail (one a sink failed, and those after it in its shard), the engine calls
  ``held_back(batch, positions)`` before the release: the sink drops what it took of them.
* **Feedback**: ``WriteResult.feedback`` — events the service's answers call for (a push token
  that is gone becomes an ``unsubscribe``); the engine runs them through the stateful bolt named by
  ``feedback_target()`` so they are committed with the batch's staged state. Only sinks that
  write outside the batch's SQL transaction can give feedback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from squall.component import Component
from squall.event import Event, Failure
from squall.paths import MISSING, getter, payload_keys

if TYPE_CHECKING:
    from squall.topology.resources import Resources


@dataclass
class Prepared:
    """A sink's view of one batch: the events it will write, its own payload, and rejects."""

    events: list[Event]
    payload: Any = None
    rejected: list[Event] = field(default_factory=list)

    def reject(self, event: Event, component: str, reason: str) -> None:
        event.failure = Failure(component, reason, "error")
        self.rejected.append(event)

    @classmethod
    def each(cls, events: list[Event], component: str, make: Callable[[Event], Any]) -> Prepared:
        """One payload item per event from ``make`` (the payload is their list); an event whose
        ``make`` raises ``ValueError`` is rejected with the error's message."""
        out = cls([])
        items = []
        for ev in events:
            try:
                items.append(make(ev))
            except ValueError as exc:
                out.reject(ev, component, str(exc))
                continue
            out.events.append(ev)
        out.payload = items
        return out


@dataclass
class WriteContext:
    """What a sink may need beyond the events.

    ``connection`` is set only for a sink whose ``transaction_resource()`` is the database of the
    batch's transaction: the sink writes its rows on that connection and must neither commit nor
    roll back; the engine then writes the staged state and the checkpoint in the same
    transaction, so a crash can neither lose nor duplicate. It is a SQLAlchemy connection, or a
    plain driver's (``exec_driver_sql`` only) when every component of the transaction sets
    ``driver_sql = True``. It is None in the writes of a poison record's isolation (parts of the
    batch written on their own): such a sink then writes in a transaction of its own — one that
    requires the engine's connection fails every part, and every record of the batch is
    dead-lettered as failing alone.

    ``batch``: the attempt's number (a holding sink's ``discard``). ``time_left``: the engine's ``time_left`` (seconds before the runner's time limit, less its
    margin; None: no limit — the Lambda runners set one): a sink that retries inside
    ``write_batch`` makes no retry whose backoff would outlast it, and fails what is left instead.
    """

    connection: Any = None
    stream: str = ""
    time_left: Callable[[], float | None] | None = None
    #: The engine's number of the batch being written (each attempt of a batch has its own): what
    #: ``Sink.discard`` is given when that batch fails.
    batch: int = 0


@dataclass
class WriteResult:
    """Events a sink could not write after its own bounded retries (a partial failure), events it
    refused for good, and how many rows it really added.

    ``failed`` events are *failed*, not dead-lettered: the checkpoint stops before the first of
    them so the source delivers them again. ``written``: rows added by this write, when the sink
    can tell (a replay adds 0: the rest were already present); None when it cannot.
    """

    failed: list[Event] = field(default_factory=list)
    written: int | None = None
    #: Events the service refused for good at write time (a 4xx, a message it will never take),
    #: each with its ``failure`` set: the engine dead-letters them before anything is checkpointed.
    rejected: list[Event] = field(default_factory=list)
    #: Events for the stateful bolt named by ``Sink.feedback_target()`` (each with the ``meta``
    #: and ``origin`` of the event that caused it), staged and committed with the batch's state.
    feedback: list[Event] = field(default_factory=list)


class Sink(Component):
    """Base of all sinks. ``dead_letter`` sinks receive events that carry a ``failure``."""

    kind: ClassVar[str] = "sink"
    #: True for sinks that receive failed events (the dead letter).
    dead_letter: ClassVar[bool] = False

    @classmethod
    def payload_reads(cls, config: Any) -> list[tuple[tuple[str | int, ...], str]]:
        """The dotted paths this sink reads from each event (the warehouse's columns, a partition
        key, a template's placeholders), each with its option's place in the sink's YAML entry
        (``("columns", "country")``), for the load-time check that a path names a field the
        events can have. Only paths read for every event as configured (a FIFO-only option of a
        standard queue is not read), and not a path whose absence is a fallback (a default
        taken from elsewhere): those may be absent from every event of a working topology."""
        return []

    def open(self, resources: Resources) -> None:
        """Connect, create tables. Called once per process."""

    def prepare(self, events: list[Event]) -> Prepared:
        """Build what will be written, rejecting events that cannot be (no I/O here)."""
        return Prepared(events)

    def write_batch(
        self, prepared: Prepared, ctx: WriteContext
    ) -> WriteResult | None:  # pragma: no cover
        """Write one batch. Raise ``TransientError`` to have the engine retry the whole call."""
        raise NotImplementedError

    def transaction_resource(self) -> str | None:
        """The SQL resource whose transaction this sink can write in (``WriteContext.connection``);
        None when the sink commits on its own (files, queues, streams)."""
        return None

    def before_transaction(self, prepared: Prepared) -> None:
        """Work a sink written in the batch's SQL transaction does on its own connection first
        (the warehouse: new partitions). The engine calls it for every such sink before it opens
        the transaction: done inside it, on another connection, it would wait for locks the
        transaction itself holds (another sink's rows in the same table)."""
        return None

    def feedback_target(self) -> str | None:
        """The id of the stateful bolt that receives this sink's ``WriteResult.feedback``."""
        return None

    def may_hold(self) -> bool:
        """Whether this sink, as configured, can hold what it wrote across batches (asked once,
        at start); by default, whether its class implements ``holding``."""
        return type(self).holding is not Sink.holding

    def holding(self) -> bool:
        """True while events accepted by ``write_batch`` are kept but not yet durable."""
        return False

    def due(self) -> bool:
        """True when what the sink holds should be made durable now (its size or age)."""
        return False

    def discard(self, batch: int, again: bool = False) -> None:
        """The batch numbered ``batch`` (``WriteContext.batch``) failed and the engine undid it:
        drop what ``write_batch`` took from it and still holds, keeping what earlier batches took
        (their records are settled: the checkpoint waits for the release). Rows of it that a
        release already made durable are dropped when the batch comes again. ``again``: the
        engine's next batch runs the same records again (a ``StaleState`` re-run). The engine
        calls it on the holding sinks and on every sink whose class implements it: a sink that
        writes at once may take back what it wrote of the batch (the s3 sink deletes its
        objects), before the failure is reported and so before any retry writes again."""

    def held_back(self, batch: int, positions: frozenset[tuple[str, str, str, int]]) -> None:
        """Records of the batch numbered ``batch`` come again though the batch does not fail (a
        sink failed one of them, and those after it in their shard are held back): drop what
        ``write_batch`` took of them and still holds, so the release does not make durable
        what their next delivery writes again; a sink that writes at once may take them out of
        what it wrote (the s3 sink puts its objects again without them). Called on the holding
        sinks and every sink whose class implements it, after the sinks outside the batch's
        transaction wrote; raise ``TransientError`` to have the engine retry (then the batch
        fails). ``positions``: (stream, shard id, sequence number, sub-sequence number)."""

    def release(self) -> None:
        """Make everything held durable (raise ``TransientError`` to have the engine retry).
        ``release_time_left()`` is the engine's ``time_left`` meanwhile (no ``WriteContext``
        here): a release in a Lambda runner retries, and starts calls, only while it fits."""


#: The engine's ``time_left`` while it calls a holding sink's ``release`` (``releasing``).
_release_time_left: ContextVar[Callable[[], float | None] | None] = ContextVar(
    "squall_release_time_left", default=None
)


@contextmanager
def releasing(time_left: Callable[[], float | None] | None) -> Iterator[None]:
    """The engine around a holding sink's ``release``: ``time_left`` (None: no limit) is what
    ``release_time_left()`` answers inside, as ``WriteContext.time_left`` is a write's."""
    token = _release_time_left.set(time_left)
    try:
        yield
    finally:
        _release_time_left.reset(token)


def release_time_left() -> Callable[[], float | None] | None:
    """Inside ``Sink.release``: the engine's ``time_left`` (None: no limit, or not called by the
    engine) — seconds before a Lambda runner's deadline less its margin."""
    return _release_time_left.get()


class AbsentPaths:
    """The first-batch WARNING for payload paths whose absence fails nothing (a NULL column, an
    attribute left out), so that a typo the load-time check could not rule out (no closed
    schema upstream) is told once instead of silently emptying a column.

    ``named`` is label → path (``column 'user'`` → ``user_idd``); metadata paths are passed by.
    A path leaves the watch at the first batch where some event has it (JSON ``null`` counts:
    the path exists), or with one WARNING at the first batch where no event has it."""

    def __init__(self, sink: str, named: dict[str, str], outcome: str, log: logging.Logger) -> None:
        self.sink = sink
        self.outcome = outcome  # what absence does: "their rows have NULL there"
        self.log = log
        self.unseen = {
            label: (path, getter(path))
            for label, path in named.items()
            if payload_keys(path) is not None
        }

    def check(self, events: list[Event]) -> None:
        """Warn of each watched path no event of ``events`` has (once per path)."""
        if not self.unseen or not events:
            return
        # No payload at all (no decode bolt before the sink): a typo is not the cause.
        hint = (
            "none of them has a decoded payload: add a decode bolt (type: json) before this sink"
            if all(ev.value is None for ev in events)
            else "check the path for a typo"
        )
        for label, (path, get) in list(self.unseen.items()):
            if all(get(ev) is MISSING for ev in events):
                self.log.warning(
                    "%s: %s (path '%s') is absent from all %d event(s) of a batch: %s — %s "
                    "(warned once per path)",
                    self.sink,
                    label,
                    path,
                    len(events),
                    self.outcome,
                    hint,
                )
            del self.unseen[label]
