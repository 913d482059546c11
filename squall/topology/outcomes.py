"""What a batch produced: one outcome per user record, the safe checkpoint, per-component counters.

Kept apart from the engine (``executor.py``) so runners and reports can use them without the
engine's internals.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from squall.event import Event, Failure, Position

#: The component a failure of the engine's own names: an event a bolt lost (returned neither
#: emitted nor dropped), a rejected event with no dead-letter sink to take it.
ENGINE = "engine"


class Outcome(enum.Enum):
    COMMITTED = "committed"
    DEAD_LETTERED = "dead_lettered"
    FILTERED = "filtered"
    FAILED = "failed"
    #: Not written: an earlier record of its shard (its lineage) failed in the same batch, and the
    #: source delivers both again from there (Kinesis, an SQS FIFO group, a checkpointed file).
    #: Writing it now would write it twice, and ahead of the failed one.
    HELD = "held"


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
    #: A failed record that a sink could not write after its retries (the dependency's failure,
    #: not the record's): sending it again may succeed. False for a record's own problem.
    retry: bool = False
    #: Seconds the dependency asked to wait before a retry (an HTTP ``Retry-After``), if it did.
    retry_after: float | None = None

    def __str__(self) -> str:
        where = f"record {self.event_id} ({self.shard_id} seq {self.position.sequence_number})"
        if self.component is None:
            return f"{where} {self.outcome.value}"
        return f"{where} {self.outcome.value} in {self.component}: {self.reason}"


_CODES = (Outcome.COMMITTED, Outcome.DEAD_LETTERED, Outcome.FILTERED, Outcome.FAILED, Outcome.HELD)
_COMMITTED, _DEAD, _FILTERED, _FAILED, _HELD = range(5)


class BatchResult:
    """What happened to a batch: one outcome per user record, and the safe checkpoint per shard.

    Outcomes are kept as small codes; ``records`` builds the ``RecordOutcome`` objects on first
    use, so runners that only need counts and the checkpoint do not pay for them.
    """

    __slots__ = ("_units", "_codes", "_failures", "checkpoint", "_records", "_dead")

    def __init__(
        self,
        units: list[Event],
        codes: list[int],
        failures: dict[int, Failure],
        checkpoint: dict[str, Position],
        dead: dict[int, Failure] | None = None,
    ):
        self._units, self._codes, self._failures = units, codes, failures
        self.checkpoint = checkpoint
        #: Per dead-lettered record, its first dead letter's failure (``_Ledger.dead_failures``).
        self._dead = dead or {}
        self._records: list[RecordOutcome] | None = None

    def _outcome(self, i: int) -> RecordOutcome:
        ev, code = self._units[i], self._codes[i]
        if code == _FAILED:
            f = self._failures.get(i)
        elif code == _DEAD:  # its own failure, else its copy's (a bolt split it)
            f = ev.failure or self._dead.get(i)
        else:
            f = None
        return RecordOutcome(
            i,
            ev.event_id,
            ev.meta.position,
            ev.meta.shard_id,
            _CODES[code],
            f.component if f else None,
            f.reason if f else None,
            bool(f and code == _FAILED and f.retry),
            f.retry_after if f and code == _FAILED else None,
        )

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

    def log_failures(self, logger: logging.Logger, limit: int = 10) -> None:
        """One ERROR line per failed record (the first ``limit``), how many more there were, and
        how many later records of their shards were held back."""
        failed = self.failed
        for outcome in failed[:limit]:
            logger.error("%s", outcome)
        if len(failed) > limit:
            logger.error("… and %d more failed records", len(failed) - limit)
        held = self._codes.count(_HELD)
        if held:
            logger.error(
                "%d record(s) held back with them (after a failed record of their shard, or "
                "in its KPL aggregate): not committed, they come again with it (a sink that "
                "wrote them before the failure and cannot take a write back — a stream, a "
                "queue, an HTTP endpoint — gets them again)",
                held,
            )


@dataclass(slots=True)
class ComponentStats:
    """Counters of one component across batches, for the run summary (and, per batch, the
    metrics' ``ComponentDelta``)."""

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
    #: Sinks that can tell: rows added vs already present (a replay adds none), after commits.
    written: int | None = None
    present: int | None = None


@dataclass
class _Ledger:
    """Per user record counters while a batch runs."""

    n: int
    committed: list[int] = field(init=False)
    dead: list[int] = field(init=False)
    dropped: list[int] = field(init=False)
    failed: dict[int, Failure] = field(default_factory=dict)
    #: Per dead-lettered record, the failure of its first dead letter: a record split by a bolt
    #: is dead-lettered as a copy, its own event (its outcome's reason) without a failure.
    dead_failures: dict[int, Failure] = field(default_factory=dict)
    #: Units kept from the sinks still to write: the failed ones and those after a failed record
    #: of their lineage (``Engine.redelivers``); all come again.
    held: frozenset[int] = frozenset()
    held_for: int = 0  # how many failed records ``held`` was computed for

    def __post_init__(self) -> None:
        self.committed = [0] * self.n
        self.dead = [0] * self.n
        self.dropped = [0] * self.n

    def copy(self) -> _Ledger:
        other = _Ledger(0)
        other.n, other.committed, other.dead, other.dropped = (
            self.n,
            list(self.committed),
            self.dead,
            self.dropped,
        )
        other.failed = dict(self.failed)
        other.dead_failures = self.dead_failures
        other.held, other.held_for = self.held, self.held_for
        return other
