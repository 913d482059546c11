"""The bolt API: a small class that turns a batch of events into outputs on named streams."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from squall.component import DEFAULT, ERROR, Component
from squall.errors import RecordError, TransientError, describe_exception_at
from squall.event import Event, Failure

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger("squall.bolts")


class Output:
    """What a bolt produced for one batch: events per named stream, and events it dropped on purpose."""

    __slots__ = ("component", "streams", "dropped")

    def __init__(self, component: str):
        self.component = component
        self.streams: dict[str, list[Event]] = {}
        self.dropped: list[Event] = []

    def emit(self, event: Event, stream: str = DEFAULT) -> None:
        """Send an event downstream on ``stream``."""
        bucket = self.streams.get(stream)
        if bucket is None:
            self.streams[stream] = [event]
        else:
            bucket.append(event)

    def emit_all(self, events: list[Event], stream: str = DEFAULT) -> None:
        """Send events downstream on ``stream``, in order: what a bolt that gathers the events
        it passes in a list (``append`` per event, not a method call) hands over at the end.
        The list becomes the stream's when the stream has none yet: do not change it afterwards."""
        if not events:
            return
        bucket = self.streams.get(stream)
        if bucket is None:
            self.streams[stream] = events
        else:
            bucket.extend(events)

    def fail(self, event: Event, reason: str, stream: str = ERROR) -> None:
        """Reject one event: it goes to ``stream`` (dead letter unless wired elsewhere) with the reason."""
        event.failure = Failure(self.component, reason, stream)
        self.emit(event, stream)

    def drop(self, event: Event) -> None:
        """Drop an event on purpose (a filter): counted, acknowledged, never an error."""
        self.dropped.append(event)


class Bolt(Component):
    """Base of all bolts.

    Contract: ``process`` gets the batch's events in sequence order and returns an ``Output``.
    A record problem is that record's failure (``Output.fail``); a dependency problem raises
    ``TransientError`` *before* any event is changed, so the engine can retry the call.

    Any other exception is not the batch's failure either: the engine isolates the records that
    cause it (it calls ``process`` again on halves of the batch, down to single events) and
    dead-letters exactly those, with this bolt's id and the exception as the reason. So
    ``process`` may be called more than once per batch, on parts of it, in order — and on events
    the failed call already changed: change events idempotently (set a field; drop or rewrite
    what the next call needs only once no event can fail any more), and fail a record you can
    tell is bad with ``Output.fail`` rather than raising.

    Stateful bolts (``stateful = True``) never write durable state in ``process``: they *stage*
    their changes, and the engine's commit sequence calls ``commit_state`` after the sinks have
    committed, then ``state_committed`` once that is durable, or ``discard_state`` when the batch
    is not committed. A ``process`` call that raises must leave the staging as it was before the
    call (stage aside, merge on return): the engine calls it again on parts of the batch, and
    what the failed call staged — the poison record's change too — would otherwise be committed.
    See docs/architecture.md, "The commit sequence".
    """

    kind: ClassVar[str] = "bolt"
    #: Streams this bolt may emit besides ``default`` and ``error``; named streams from config are
    #: added by ``output_streams``.
    streams: ClassVar[tuple[str, ...]] = ()

    def open(self, resources: Resources) -> None:
        """Open what the bolt needs (clients, caches). Called once per process, before any batch.

        The same hook as a spout's and a sink's ``open``. A bolt written for the old name
        (``setup``) still works: this calls its ``setup``.
        """
        if type(self).setup is not Bolt.setup:
            self.setup(resources)

    def setup(self, resources: Resources) -> None:
        """Deprecated name of ``open`` (kept working): calling it opens the bolt; a bolt that
        defines ``setup`` instead of ``open`` has it called by ``open``, with a
        ``DeprecationWarning`` when the class is defined."""
        if type(self).open is not Bolt.open:
            self.open(resources)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "setup" in cls.__dict__:
            warnings.warn(
                f"{cls.__module__}.{cls.__qualname__}: Bolt.setup is deprecated; "
                "name the hook 'open' (as on spouts and sinks)",
                DeprecationWarning,
                stacklevel=2,
            )

    @classmethod
    def output_streams(cls, config: Any) -> tuple[str, ...]:
        """Every stream a bolt with this config can emit on, for graph checks and ``squall graph``."""
        return (DEFAULT, ERROR, *cls.streams)

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...] | None:
        """The payload paths this bolt sets on the events it passes on (``()``: it only reads,
        filters or routes them); None — the default — when it may change anything (replaces the
        payload, custom code). For load-time checks of the paths a sink reads (``squall.topology.
        payload_paths``): a path no schema upstream declares is refused only when every bolt in
        between says what it writes."""
        return None

    @classmethod
    def payload_reads(cls, config: Any) -> list[tuple[tuple[str | int, ...], str]]:
        """The dotted paths this bolt needs in every event, each with its option's place in the
        bolt's YAML entry (``("key", 0)``), for the load-time check that a path names a field the
        events can have (as a sink's ``payload_reads``). Only paths without which the bolt fails
        every event (a window's key and time field); not a path whose absence is an answer (a
        filter's ``exists``, a route's default, a lookup's ``on_missing``)."""
        return []

    @classmethod
    def payload_schema(cls, config: Any) -> dict[str, Any] | None:
        """A JSON Schema every event this bolt emits on its ``default`` stream satisfies (the
        ``schema`` bolt's); None when it guarantees none."""
        return None

    def process(self, batch: list[Event]) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def unwired_reason(self, event: Event, stream: str) -> str | None:
        """Why this bolt sent ``event`` to ``stream``, when no bolt or sink consumes that stream:
        added to the event's dead-letter reason (``stream 'S' of 'B' is not wired: …``). Called
        only for such events, after ``process``; ``None`` adds nothing. The engine masks
        passwords in it and bounds its length; raising adds nothing either."""
        return None

    def flush(self, end: Event, final: bool = True) -> Output | None:
        """The input ended (a file read to its end by ``squall run``; never under Lambda or the
        KCL, whose streams do not end): emit what is still held back (the windows still open).

        Called once by the engine (``Engine.finish``), after the last batch, in topological
        order, so what an upstream bolt flushes is processed by the bolts below before they
        flush. Build emitted events on ``end`` (its ``meta`` and ``origin``: the unit standing
        for the end of input). Their output goes downstream, to the sinks and through the commit
        sequence like a batch's; a stateful bolt stages what it changes, as in ``process``, and
        its ``commit_state`` follows. None (the default): nothing to flush.
        """
        return None

    # -- staged state (stateful bolts only) --------------------------------------------------

    #: True for bolts that keep durable state; the engine then drives the methods below.
    stateful: ClassVar[bool] = False

    def state_resource(self) -> str | None:
        """The SQL resource the staged state is written to, so the engine can write it in the
        batch's transaction when the sinks or the checkpoint share that database; else None."""
        return None

    def commit_state(self, covered: Callable[[Event], bool], connection: Any = None) -> None:
        """Write the state staged by this batch's ``process`` calls.

        Only changes made by events for which ``covered(event)`` is true are written: the others
        come after a failed record of their lineage (``squall.event.lineage``: their shard; a
        replayed record alone) and will be delivered again. ``connection`` is
        a SQLAlchemy connection inside the batch's transaction (on ``state_resource()``) — a
        plain driver's, with ``exec_driver_sql`` only, when the class sets ``driver_sql = True``
        — or None: then write in a transaction of your own. Raise ``TransientError`` when the store
        is down; nothing is then checkpointed and the batch comes again.
        """

    def state_committed(self) -> None:
        """The staged state is durable (its transaction committed): update caches, clear staging."""

    def discard_state(self) -> None:
        """The batch is not committed: forget what was staged."""


def _batch_error(exc: BaseException) -> bool:
    from squall.topology.executor import batch_error  # the engine's rule; loaded on a failure

    return batch_error(exc)


def _before(batch: list[Event], out: Output) -> list[Event]:
    """The events of ``batch`` that ``out`` has an outcome for: each event processed gets one
    (emitted, failed or dropped), so their count is the place of the event that raised — not
    its first place by identity: the same event twice in a batch (emitted on two streams that
    both come into the bolt) raising at its second place resumed at its first, and the events
    between were processed and emitted twice."""
    return batch[: sum(map(len, out.streams.values())) + len(out.dropped)]


class RecordBolt(Bolt):
    """A bolt written one event at a time: implement ``process_event``.

    ``process_event`` changes the event in place and returns the stream to emit it on
    (usually ``"default"``), or ``None`` to drop it. Raising ``RecordError`` fails that event
    only; any other exception is also that event's failure, reported with its type and where
    it was raised (``… (at FILE, line N, in process_event)``), so one
    bad record never takes the batch down — the same outcome the engine gives a batch ``Bolt``
    whose ``process`` raises. ``TransientError`` fails the call for a retry, and so does a
    database or Redis client's error that says the dependency is down (a lost connection, a
    Redis loading or read-only after a failover: the engine's rule for a batch ``Bolt``); one
    that says it refuses for good (a wrong password) fails the batch; so do Python's
    ``ConnectionError`` and the machine's ``OSError`` (a full disk). A ``TimeoutError`` or an
    ``OSError`` without an errno (a record's bad gzip) stays the event's failure: it may be
    the record's. The retry goes on from the event that raised, given the same events: the
    events before it keep their outcome (``process_event`` does not run again on an event it
    changed), and the one that raised gets ``process_event`` again — raise before changing it.

    A ``process_event`` that forgets its ``return`` drops every event, and a run of it exits 0
    having written nothing: when every event of the first batch the bolt sees is dropped that
    way, one WARNING says so (a filter that drops a whole first batch on purpose gets it once).
    """

    _watch_drops: ClassVar[bool] = True  # until the first batch: instance attribute after it
    #: The events of a call that raised for a retry (``TransientError``, an outage) already
    #: processed, and their output: the retry, given the same events, goes on from there.
    _done: tuple[list[Event], Output] | None = None

    def process(self, batch: list[Event]) -> Output:
        out, start = self._resume(batch)
        handle = self.process_event
        for event in batch[start:] if start else batch:  # (no index: ~8 ns an event)
            try:
                stream = handle(event)
            except TransientError:
                self._done = (_before(batch, out), out)
                raise
            except RecordError as exc:
                out.fail(event, exc.reason, exc.stream)
                continue
            except Exception as exc:  # a bug or an unexpected shape in one record
                if _batch_error(exc):  # a database or Redis down or refusing: the engine's
                    self._done = (_before(batch, out), out)
                    raise
                # with where it raised: `KeyError: 'amount'` alone leaves the bug to be found
                out.fail(event, describe_exception_at(exc, skip=1))
                continue
            if stream is None:
                out.drop(event)
            else:
                out.emit(event, stream)
        if self._watch_drops and batch:
            self._watch_drops = False
            if len(out.dropped) == len(batch):
                log.warning(
                    "bolt '%s': process_event returned None for all %d event(s) of its first "
                    "batch, so they were dropped (counted as filtered, written nowhere): return "
                    '"default" to pass an event on (warned once)',
                    self.id,
                    len(batch),
                )
        return out

    def _resume(self, batch: list[Event]) -> tuple[Output, int]:
        """A new output from the first event; or, when the last call raised for a retry and
        ``batch`` starts with the events it had processed (the same objects: the engine's
        retry), that call's output and the index of the event that raised. ``process_event``
        changes an event in place: run again on one it already changed, a rename found its
        field gone, a counter counted twice."""
        done, self._done = self._done, None
        if done is not None:
            events, out = done
            n = len(events)
            if n <= len(batch) and all(a is b for a, b in zip(events, batch[:n], strict=True)):
                return out, len(events)
        return Output(self.id), 0

    def retry_over(self) -> None:
        """The engine's batch is over (committed or failed): the events a call that raised
        had processed are not held past it (a failed batch's, until the next call)."""
        self._done = None

    def process_event(self, event: Event) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError
