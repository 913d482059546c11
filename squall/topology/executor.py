"""The engine: runs one batch of records through a compiled plan and accounts for every record.

Per batch: records are de-aggregated (KPL) into user records; bolts run in topological order;
then sinks in three steps — data sinks ``prepare`` (rejects go to dead letter), dead-letter
sinks write, data sinks write. Every user record ends with exactly one outcome: committed,
dead-lettered, filtered, or failed. The checkpoint per shard is the last position before the
first failed record; a batch whose transient errors outlast the retries raises ``BatchFailed``
and checkpoints nothing.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from squall.bolts.base import Bolt, Output
from squall.component import ComponentContext
from squall.errors import BatchFailed, DecodeError, TransientError
from squall.event import Event, Failure, Position, Record, RecordMeta
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.spouts.kpl import KPL_MAGIC, deaggregate
from squall.topology.checkpoint import TransactionalCheckpointStore
from squall.topology.graph import Node, Plan
from squall.topology.model import RetryConfig
from squall.topology.resources import Resources

log = logging.getLogger("squall.engine")


class Outcome(enum.Enum):
    COMMITTED = "committed"
    DEAD_LETTERED = "dead_lettered"
    FILTERED = "filtered"
    FAILED = "failed"


@dataclass(slots=True)
class RecordOutcome:
    """The fate of one user record (a KPL sub-record counts as one)."""

    index: int
    event_id: str
    position: Position
    shard_id: str
    outcome: Outcome
    component: str | None = None
    reason: str | None = None


_CODES = (Outcome.COMMITTED, Outcome.DEAD_LETTERED, Outcome.FILTERED, Outcome.FAILED)
_COMMITTED, _DEAD, _FILTERED, _FAILED = range(4)


class BatchResult:
    """What happened to a batch: one outcome per user record, and the safe checkpoint per shard.

    Outcomes are kept as small codes; ``records`` builds the ``RecordOutcome`` objects on first
    use, so runners that only need counts and the checkpoint do not pay for them.
    """

    __slots__ = ("_units", "_codes", "_failures", "checkpoint", "_records")

    def __init__(self, units: list[Event], codes: list[int], failures: dict[int, Failure],
                 checkpoint: dict[str, Position]):
        self._units, self._codes, self._failures = units, codes, failures
        self.checkpoint = checkpoint
        self._records: list[RecordOutcome] | None = None

    def _outcome(self, i: int) -> RecordOutcome:
        ev, code = self._units[i], self._codes[i]
        f = self._failures.get(i) if code == _FAILED else (ev.failure if code == _DEAD else None)
        return RecordOutcome(i, ev.event_id, ev.meta.position, ev.meta.shard_id, _CODES[code],
                             f.component if f else None, f.reason if f else None)

    @property
    def records(self) -> list[RecordOutcome]:
        if self._records is None:
            self._records = [self._outcome(i) for i in range(len(self._codes))]
        return self._records

    def __len__(self) -> int:
        return len(self._codes)

    def count(self, outcome: Outcome) -> int:
        return self._codes.count(_CODES.index(outcome))

    def counts(self) -> dict[Outcome, int]:
        return {o: self._codes.count(k) for k, o in enumerate(_CODES)}

    @property
    def failed(self) -> list[RecordOutcome]:
        return [self._outcome(i) for i, c in enumerate(self._codes) if c == _FAILED]

    @property
    def ok(self) -> bool:
        return _FAILED not in self._codes


@dataclass
class ComponentStats:
    """Counters of one component across batches, for the run summary."""

    id: str
    kind: str
    type: str
    received: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    failed: int = 0
    retries: int = 0
    seconds: float = 0.0


@dataclass
class _Ledger:
    """Per user record counters while a batch runs."""

    n: int
    committed: list[int] = field(init=False)
    dead: list[int] = field(init=False)
    dropped: list[int] = field(init=False)
    failed: dict[int, Failure] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.committed = [0] * self.n
        self.dead = [0] * self.n
        self.dropped = [0] * self.n


class Engine:
    """Runs batches through a plan. Components and resources are opened once, in ``open``."""

    def __init__(self, plan: Plan, *, resources: Resources | None = None,
                 checkpoint_store: TransactionalCheckpointStore | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random):
        self.plan = plan
        self.topology = plan.topology
        self.resources = resources if resources is not None else Resources(plan.topology.resources, plan.topology.base_dir)
        self._own_resources = resources is None
        self.retry: RetryConfig = plan.topology.settings.retry
        self._sleep, self._rng = sleep, rng
        context = ComponentContext(self.topology.name, self.topology.base_dir)
        self.components: list[Bolt | Sink] = [n.cls(n.config, context) for n in plan.nodes]
        self.stats = [ComponentStats(n.id, n.kind, n.config.type) for n in plan.nodes]
        self.spout_stats = ComponentStats(plan.spout_id, "spout", self.topology.spout.type)
        self._data_sinks = [n for n in plan.nodes if n.kind == "sink" and not n.dead_letter]
        self._dl_sinks = [n for n in plan.nodes if n.dead_letter]
        self._bolts = [n for n in plan.nodes if n.kind == "bolt"]
        self.checkpoint_store = checkpoint_store
        self._tx_sink: Node | None = self._transactional_sink(checkpoint_store)
        self._opened = False

    def _transactional_sink(self, store: TransactionalCheckpointStore | None) -> Node | None:
        """The one committing sink that can save checkpoints in its own transaction, if any."""
        if store is None or len(self._data_sinks) != 1:
            return None
        node = self._data_sinks[0]
        sink = self.components[node.index]
        if getattr(sink, "transactional_checkpoint", False) and sink.uses_resource() == store.resource:
            return node
        return None

    @property
    def checkpoint_in_transaction(self) -> bool:
        """True when the warehouse sink writes checkpoints with its rows (exactly once)."""
        return self._tx_sink is not None

    def open(self) -> Engine:
        if not self._opened:
            for node, comp in zip(self.plan.nodes, self.components, strict=True):
                if node.kind == "bolt":
                    comp.setup(self.resources)  # type: ignore[union-attr]
                else:
                    comp.open(self.resources)  # type: ignore[union-attr]
            self._opened = True
        return self

    def close(self) -> None:
        for comp in reversed(self.components):
            try:
                comp.close()
            except Exception:  # closing must go on for the others
                log.exception("%s: error while closing", comp.id)
        if self._own_resources:
            self.resources.close()
        self._opened = False

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- one batch ---------------------------------------------------------------------------

    def process(self, records: list[Record]) -> BatchResult:
        """Run one batch; raises ``BatchFailed`` when a dependency stays down (checkpoint nothing)."""
        if not self._opened:
            self.open()
        units, default_dl = self._expand(records)
        ledger = _Ledger(len(units))
        nodes = self.plan.nodes
        inbox: list[list[Event]] = [[] for _ in nodes]
        good = [ev for ev in units if ev.failure is None] if default_dl else units
        self._deliver(good, self.plan.entry, inbox, self.plan.spout_id, "default")

        for node in self._bolts:
            events = inbox[node.index]
            if not events:
                continue
            inbox[node.index] = []
            stats = self.stats[node.index]
            stats.received += len(events)
            out: Output = self._call(node, self.components[node.index].process, events)  # type: ignore[union-attr]
            for ev in out.dropped:
                ledger.dropped[ev.origin] += 1
            stats.dropped += len(out.dropped)
            for stream, emitted in out.streams.items():
                rejected = sum(1 for ev in emitted if ev.failure is not None and ev.failure.component == node.id)
                stats.dead_lettered += rejected
                stats.emitted += len(emitted) - rejected
                targets = node.outputs.get(stream)
                if targets:
                    self._deliver(emitted, targets, inbox, node.id, stream)
                    continue
                for ev in emitted:
                    if ev.failure is None:
                        ev.failure = Failure(node.id, f"stream '{stream}' of '{node.id}' is not wired", stream)
                default_dl.extend(emitted)

        prepared: list[tuple[Node, Prepared]] = []
        for node in self._data_sinks:
            events = inbox[node.index]
            if not events:
                continue
            stats = self.stats[node.index]
            stats.received += len(events)
            p: Prepared = self._call(node, self.components[node.index].prepare, events)  # type: ignore[union-attr]
            stats.dead_lettered += len(p.rejected)
            default_dl.extend(p.rejected)
            prepared.append((node, p))

        self._write_dead_letters(inbox, default_dl, ledger)

        for node, p in prepared:
            if not p.events:
                continue
            ctx = WriteContext(stream=units[0].meta.stream if units else "")
            if node is self._tx_sink:
                ctx.checkpoint = self._checkpoint(units, ledger, assume_committed=p.events)
                ctx.checkpoint_store = self.checkpoint_store
            result = self._call(node, self.components[node.index].write_batch, p, ctx)  # type: ignore[union-attr]
            self._settle(node, p.events, result, ledger, dead=False)

        codes = self._codes(ledger)
        return BatchResult(units, codes, ledger.failed, self._checkpoint_from(units, codes))

    def _expand(self, records: list[Record]) -> tuple[list[Event], list[Event]]:
        """User records of the batch (KPL de-aggregated); corrupt aggregates go to dead letter whole."""
        units: list[Event] = []
        bad: list[Event] = []
        started = time.perf_counter()
        for rec in records:
            if rec.data[:4] != KPL_MAGIC:  # the usual case: one user record
                units.append(Event(rec.data, rec.meta, None, len(units)))
                continue
            try:
                subs = deaggregate(rec)
            except DecodeError as exc:
                ev = Event(rec.data, rec.meta, None, len(units))
                ev.failure = Failure(self.plan.spout_id, exc.reason)
                units.append(ev)
                bad.append(ev)
                continue
            for sub in subs:
                units.append(Event(sub.data, sub.meta, None, len(units)))
        s = self.spout_stats
        s.received += len(records)
        s.emitted += len(units) - len(bad)
        s.dead_lettered += len(bad)
        s.seconds += time.perf_counter() - started
        return units, bad

    def _deliver(self, events: list[Event], targets: tuple[int, ...], inbox: list[list[Event]],
                 source: str, stream: str) -> None:
        """Hand events to each target; copies are made only where the graph fans out."""
        for k, t in enumerate(targets):
            batch = events if k == 0 else [ev.fork() for ev in events]
            if self.plan.nodes[t].dead_letter:
                for ev in batch:
                    if ev.failure is None:
                        ev.failure = Failure(source, f"routed to dead letter by stream '{stream}'", stream)
            inbox[t].extend(batch)

    def _write_dead_letters(self, inbox: list[list[Event]], default_dl: list[Event], ledger: _Ledger) -> None:
        defaults = set(self.plan.dead_letters)
        if default_dl and not defaults:
            # No dead-letter sink: the records fail, so the source delivers them again and the
            # runner reports them (Lambda: batchItemFailures). Nothing is dropped.
            for ev in default_dl:
                ledger.failed.setdefault(ev.origin, ev.failure or Failure("engine", "no dead-letter sink"))
        for node in self._dl_sinks:
            events = inbox[node.index] + (default_dl if node.index in defaults else [])
            if not events:
                continue
            self.stats[node.index].received += len(events)
            p = Prepared(events)
            result = self._call(node, self.components[node.index].write_batch, p, WriteContext())  # type: ignore[union-attr]
            self._settle(node, events, result, ledger, dead=True)

    def _settle(self, node: Node, events: list[Event], result: WriteResult | None, ledger: _Ledger, *,
                dead: bool) -> None:
        failed_ids = set()
        if result is not None and result.failed:
            failed_ids = {id(ev) for ev in result.failed}
            for ev in result.failed:
                ledger.failed.setdefault(ev.origin, ev.failure or Failure(node.id, "write failed"))
        counts = ledger.dead if dead else ledger.committed
        for ev in events:
            if id(ev) not in failed_ids:
                counts[ev.origin] += 1
        stats = self.stats[node.index]
        stats.failed += len(failed_ids)
        stats.emitted += len(events) - len(failed_ids)

    @staticmethod
    def _codes(ledger: _Ledger) -> list[int]:
        """One outcome code per user record: failed, else dead-lettered, else committed, else filtered."""
        codes = []
        failed, dead, committed, dropped = ledger.failed, ledger.dead, ledger.committed, ledger.dropped
        for i in range(ledger.n):
            if failed and i in failed:
                codes.append(_FAILED)
            elif dead[i]:
                codes.append(_DEAD)
            elif committed[i]:
                codes.append(_COMMITTED)
            elif dropped[i]:
                codes.append(_FILTERED)
            else:
                # A bolt returned without emitting or dropping the event: never acknowledge it.
                failed[i] = Failure("engine", "no outcome: a bolt lost the event")
                codes.append(_FAILED)
        return codes

    @staticmethod
    def _checkpoint_from(units: list[Event], codes: list[int]) -> dict[str, Position]:
        """Per shard, the last position before the first failed record."""
        last: dict[str, RecordMeta] = {}
        if _FAILED not in codes:
            for ev in units:
                last[ev.meta.shard_id] = ev.meta
        else:
            blocked: set[str] = set()
            for ev, code in zip(units, codes, strict=True):
                shard = ev.meta.shard_id
                if shard in blocked:
                    continue
                if code == _FAILED:
                    blocked.add(shard)
                else:
                    last[shard] = ev.meta
        return {shard: meta.position for shard, meta in last.items()}

    def _checkpoint(self, units: list[Event], ledger: _Ledger, assume_committed: list[Event]) -> dict[str, Position]:
        """The checkpoint if the transactional sink commits ``assume_committed`` (used inside its transaction)."""
        trial = _Ledger(ledger.n)
        trial.committed, trial.dead, trial.dropped = list(ledger.committed), ledger.dead, ledger.dropped
        trial.failed = dict(ledger.failed)
        for ev in assume_committed:
            trial.committed[ev.origin] += 1
        return self._checkpoint_from(units, self._codes(trial))

    # -- retries -----------------------------------------------------------------------------

    def _call(self, node: Node, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a component; retry ``TransientError`` with jittered exponential backoff, bounded."""
        stats = self.stats[node.index]
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                return fn(*args)
            except TransientError as exc:
                if attempt >= policy.attempts:
                    raise BatchFailed(node.id, exc, attempt) from exc
                backoff = min(policy.max_backoff, policy.initial_backoff * policy.multiplier ** (attempt - 1))
                delay = max(self._rng() * backoff, exc.retry_after or 0.0)
                stats.retries += 1
                log.warning("%s: %s; retry %d/%d in %.2fs", node.id, exc, attempt, policy.attempts - 1, delay)
                self._sleep(delay)
            except BatchFailed:
                raise
            except Exception as exc:
                raise BatchFailed(node.id, exc, attempt) from exc
            finally:
                stats.seconds += time.perf_counter() - started
