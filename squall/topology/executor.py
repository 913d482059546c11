"""The engine: runs one batch of records through a compiled plan, accounts for every record, and
owns the batch's commit.

Per batch: records are de-aggregated (KPL) into user records; bolts run in topological order;
the records a bolt lost (no event of them emitted, dropped or failed) go to dead letter; data
sinks ``prepare`` (rejects go to dead letter). Then the **commit sequence**, the same in
every runner:

1. dead letters (durable before anything is acknowledged);
2. data sinks (idempotent on ``event_id``);
3. the staged state of stateful bolts, only the changes of records that are settled;
4. the checkpoint (per shard, up to the first record that is not settled), when the runner gave
   the engine a ``Checkpointer`` (the local runner); Lambda and the KCL checkpoint themselves
   from ``BatchResult.checkpoint`` after ``process`` returns.

Sinks, states and the checkpoint that share one SQL database are written in one transaction.
A sink that rolls files across batches (``Sink.holding``) holds step 4 back until it released
(``hold=True`` runners; others release after every batch); a sink's ``WriteResult.feedback`` is
staged in the stateful bolt it names before step 3.
Every user record ends with exactly one outcome: committed, dead-lettered, filtered, or failed.

Poison records: when a component call raises anything but ``TransientError``/``SinkError``,
the engine splits the call's events in halves until it finds the events that fail alone, and
dead-letters exactly those with the component and the reason; the rest goes on. A clean batch
pays nothing for this. A batch whose transient errors outlast the retries raises
``BatchFailed`` and checkpoints nothing.

Size (~1,900 lines): the engine is one state machine — a batch's run, its poison isolation and its
commit sequence share the batch's ledger and must be read together; the parts that stand alone
(outcomes, checkpoint stores, SQL error classes, resources) live in their own modules.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import compress
from pathlib import Path
from typing import Any

from squall.bolts.base import Bolt, Output, RecordBolt
from squall.component import ComponentContext
from squall.errors import (
    BatchFailed,
    ComponentFailed,
    DecodeError,
    Problem,
    SinkError,
    SquallError,
    StaleState,
    TopologyError,
    TransientError,
    describe_exception,
    describe_exception_at,
    safe_text,
)
from squall.event import Event, Failure, Position, Record, RecordMeta, lineage
from squall.kinesis.kpl import KPL_MAGIC, deaggregate
from squall.observability.logs import log_context
from squall.redact import redact_text
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult, releasing
from squall.topology.checkpoint import Checkpointer
from squall.topology.graph import Node, Plan
from squall.topology.model import RetryConfig, Topology, backoff_ceiling
from squall.topology.outcomes import (
    _COMMITTED,
    _DEAD,
    _FAILED,
    _FILTERED,
    _HELD,
    ENGINE,
    BatchResult,
    ComponentStats,
    _Ledger,
)
from squall.topology.resources import Resources, WrongResourceKind

log = logging.getLogger("squall.engine")

_new_event = object.__new__
#: The first byte of a KPL aggregate (``_expand`` tests it before slicing the magic).
_KPL_FIRST = KPL_MAGIC[0]

#: The metadata of the unit standing for the end of a finite input (``Engine.finish``).
END_OF_INPUT = RecordMeta("", "<end of input>", "0")


class _RecordFault(Exception):
    """A component call raised an error that some record of the call is to blame for."""

    def __init__(self, cause: BaseException, node: Node | None = None):
        super().__init__(str(cause))
        self.cause = cause
        self.node = node

    @property
    def reason(self) -> str:
        return describe_exception(self.cause)


class _Refused(Exception):
    """A sink in the batch's transaction refused events for good (``WriteResult.rejected``)."""

    def __init__(self, node: Node, events: list[Event]):
        super().__init__(f"{node.id}: {len(events)} event(s) refused")
        self.node = node
        self.events = events


class _FailedInTransaction(Exception):
    """A sink in the batch's transaction could not write some events (``WriteResult.failed``)
    while other sinks share the transaction: roll back, so that none of them writes their records."""

    def __init__(self, node: Node, events: list[Event]):
        super().__init__(f"{node.id}: {len(events)} event(s) failed")
        self.node = node
        self.events = events


#: How many isolated poison records the engine remembers having logged (a bounded memory).
_POISON_LOGGED = 4096
#: How many isolated poison records of one batch and component are logged one by one (at
#: WARNING); the rest are one line (a sink refusing every record: not one line per record).
_POISON_WARNED = 10
#: What a record isolated from its batch is logged as (``Engine._warn_once``): a poison record
#: (it fails alone in a component) or a record a bolt lost (no event of it went on).
_POISON, _LOST, _LOST_IN_SINK = 0, 1, 2
_ONE_BY_ONE = (
    "%s: record %s (%s seq %s) fails alone, isolated from its batch: %s",
    "%s: record %s (%s seq %s) lost by the bolt, isolated from its batch: %s",
    "%s: record %s (%s seq %s) lost by the sink's prepare, isolated from its batch: %s",
)
_MORE = (
    "%s: %d more record(s) of the batch fail alone, isolated from it (not logged one by one; "
    "each has its failure reason, in its dead letter if any)",
    "%s: %d more record(s) of the batch lost by the bolt, isolated from it (not logged one by "
    "one; each has its failure reason, in its dead letter if any)",
    "%s: %d more record(s) of the batch lost by the sink's prepare, isolated from it (not "
    "logged one by one; each has its failure reason, in its dead letter if any)",
)
#: Errors that are the batch's, never a record's: the call is not split.
_FATAL = (SinkError, TopologyError)
#: ``OSError`` numbers of the machine (disk full, I/O, no memory or descriptors, no rights): the
#: batch's. Others are a record's (``datetime.fromtimestamp`` of a huge value raises EOVERFLOW).
_MACHINE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
    }
)


def _batch_error(exc: BaseException) -> bool:
    """True when an exception is the batch's (the component or the machine), never one record's."""
    if isinstance(exc, _FATAL) or isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and (exc.errno is None or exc.errno in _MACHINE_ERRNOS)


def _call_hook(comp: Any, hook: str, *args: Any) -> None:
    """A component's lifecycle hook; an error that is not squall's becomes ``ComponentFailed``
    (the component named, passwords masked). squall's own errors pass as they are: a
    ``TransientError`` at open is retried by the KCL processor, a ``TopologyError`` is located."""
    try:
        getattr(comp, hook)(*args)
    except WrongResourceKind as exc:  # at the option that names the resource, file and line
        raise TopologyError(_at_resource(comp, exc)) from None
    except SquallError:
        raise
    except Exception as exc:
        raise ComponentFailed(comp.kind, comp.id, hook, exc) from exc


def _at_resource(comp: Any, exc: WrongResourceKind) -> Problem:
    from pydantic import BaseModel

    from squall.topology.loader import resource_names

    config = getattr(comp, "config", None)
    named = resource_names(config, ()) if isinstance(config, BaseModel) else []
    option = next((".".join(map(str, p)) for p, name in named if name == exc.name), "")
    return comp.context.problem(comp.id, option, str(exc))


class Engine:
    """Runs batches through a plan. Components and resources are opened once, in ``open``."""

    def __init__(
        self,
        plan: Plan,
        *,
        resources: Resources | None = None,
        checkpointer: Checkpointer | None = None,
        whole_records: bool = False,
        hold: bool = False,
        redelivers: bool = True,
        user_records: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ):
        self.plan = plan
        #: The runner's source resumes only at whole Kinesis records (Lambda), never inside a KPL
        #: aggregate: the checkpoint and the committed state then stop before the failed record's
        #: aggregate, whose earlier user records come again.
        self.whole_records = whole_records
        #: The runner's source hands over user records only (the KCL de-aggregates KPL aggregates
        #: itself): a record starting with the KPL magic bytes is then the user's own — a binary
        #: payload the ``kinesis`` sink wrapped in an aggregate of one —, never de-aggregated again.
        self.user_records = user_records
        #: The runner can hold its checkpoint back across batches (the local runner, the KCL):
        #: sinks that roll files (``Sink.holding``) then release when due, not after every batch.
        #: Lambda cannot — an invocation's records are acknowledged when it returns.
        self.hold = hold
        #: The runner's source delivers a failed record again, and every later record of its
        #: lineage with it (Kinesis from the failed sequence number, an SQS FIFO group, a
        #: checkpointed file; every runner but the Lambda producer, whose client is answered per
        #: event): those later records are then held back from the sinks (``Outcome.HELD``), not
        #: written now and again — nor ahead of the failed one.
        self.redelivers = redelivers
        self.topology = plan.topology
        self.resources = (
            resources if resources is not None else Resources.for_topology(plan.topology)
        )
        self._own_resources = resources is None
        self.retry: RetryConfig = plan.topology.settings.retry
        #: Seconds left before the runner's time limit (None: no limit), asked only when a
        #: retry is considered; a runner with a limit sets it (Lambda: the invocation's). A retry
        #: whose backoff would outlast it is not made: the batch fails at once.
        self.time_left: Callable[[], float | None] | None = None
        #: Told of each retry as it is decided, before its backoff: ``(component id, kind, error)``
        #: (kind ``checkpoint``: a checkpoint save's).
        #: The runner's recorder sets it for the length of a batch (``Recorder.batch``), so a
        #: batch retrying a dependency that is down shows while it retries, not when it ends.
        self.on_retry: Callable[[str, str, BaseException], None] | None = None
        self._sleep, self._rng = sleep, rng
        #: Measures how long a component call's attempt took (a retry must fit it again).
        self._clock: Callable[[], float] = time.perf_counter
        context = ComponentContext(
            self.topology.name,
            self.topology.base_dir,
            self.topology.problem,
            retry_attempts=self.retry.attempts,
            time_left=self._time_left_now,
        )
        self.components: list[Bolt | Sink] = [n.cls(n.config, context) for n in plan.nodes]
        self.stats = [ComponentStats(n.id, n.kind, n.config.type) for n in plan.nodes]
        self.spout_stats = ComponentStats(plan.spout_id, "spout", self.topology.spout.type)
        #: The checkpoint saves' retries and time (the engine's, outside a sinks' transaction).
        self.checkpoint_stats = ComponentStats("checkpoint", "checkpoint", "checkpoint")
        self._data_sinks = [n for n in plan.nodes if n.kind == "sink" and not n.dead_letter]
        self._dl_sinks = [n for n in plan.nodes if n.dead_letter]
        self._bolts = [n for n in plan.nodes if n.kind == "bolt"]
        self._sinks = [n for n in plan.nodes if n.kind == "sink"]
        self._stateful = [n for n in self._bolts if self.components[n.index].stateful]
        #: ``RecordBolt``s: a call that raised for a retry holds its events until the retry;
        #: told when the batch is over, so none is held past it (``RecordBolt.retry_over``).
        self._record_bolts = [
            c for n in self._bolts if isinstance(c := self.components[n.index], RecordBolt)
        ]
        self.checkpointer = checkpointer
        self._tx_resource: str | None = None
        self._tx_sinks: set[int] = set()
        self._tx_states: set[int] = set()
        self._tx_driver_sql = True
        self._checkpoint_in_tx = False
        #: Sinks that may hold what they wrote across batches; those released after every batch.
        self._holders: list[Node] = []
        self._release_always: set[int] = set()
        #: Sinks told when a batch fails (``Sink.discard``): the holders and those that take
        #: back what they wrote (the s3 sink's per-batch objects).
        self._discarders: list[Node] = []
        #: Sinks told which records of a batch come again though it does not fail
        #: (``Sink.held_back``): the holders and those that take back what they wrote.
        self._held_backers: list[Node] = []
        self._stateful_set = {n.index for n in self._stateful}
        self._held: dict[str, Position] = {}  # the checkpoint held back while a sink holds
        self._held_stream = ""
        self._feedback_to: dict[int, Node] = {}  # sink index -> the stateful bolt of its feedback
        #: The number of the batch (attempt) being run: ``WriteContext.batch``, ``Sink.discard``.
        self._batch_no = 0
        #: The checkpoint this attempt started to save (stream, positions): once its save (or its
        #: transaction's COMMIT) was sent, a failure does not tell whether it was saved.
        self._saving: tuple[str, dict[str, Position]] | None = None
        #: Per sink index: rows the part writes of this batch's isolation added (counted as
        #: written when they committed; the rest's write then finds them present, not new).
        self._isolated_rows: dict[int, int] = {}
        #: Per sink index: the events its ``prepare`` was last given this batch (``_made_from``).
        self._given_to: dict[int, list[Event]] = {}
        #: (component index, event id) of the poison records logged lately, oldest first.
        self._poison_logged: dict[tuple[int, str], None] = {}
        #: This batch's: per component index and kind (``_POISON``, ``_LOST``), records logged
        #: one by one, and the rest.
        self._poison_warned: dict[tuple[int, int], list[int]] = {}
        self._last_stream, self._last_print = "", None  # of the last record (the end of input's)
        self._opened = False

    @classmethod
    def for_topology(cls, source: str | Path | Topology, **kwargs: Any) -> Engine:
        """The engine of a topology file (or loaded model): load, compile, construct (not opened)."""
        from squall.secrets import aws_secrets
        from squall.topology.loader import load

        topology = source if isinstance(source, Topology) else load(source, secrets=aws_secrets())
        return cls(topology.plan, **kwargs)

    def _time_left_now(self) -> float | None:
        """``time_left`` as it is now (the runner sets it per invocation): the components'."""
        time_left = self.time_left
        return time_left() if time_left is not None else None

    def _plan_transaction(self) -> None:
        """Which sinks, states and checkpoint share one SQL transaction (decided once, after open).

        The database is the checkpoint store's when it is SQL, else the first data sink's that can
        write in a transaction the engine holds, else the first stateful bolt's. The checkpoint
        joins the transaction only when no stateful bolt commits elsewhere (its state must be
        written before the checkpoint, and after the sinks).
        """
        same = self._same_database
        sinks = {n.index: self.components[n.index].transaction_resource() for n in self._data_sinks}  # type: ignore[union-attr]
        states = {n.index: self.components[n.index].state_resource() for n in self._stateful}  # type: ignore[union-attr]
        cp = self.checkpointer.resource if self.checkpointer is not None else None
        resource = (
            cp
            or next((r for r in sinks.values() if r), None)
            or next((r for r in states.values() if r), None)
        )
        self._tx_resource = resource
        self._tx_sinks = {i for i, r in sinks.items() if same(r, resource)}
        self._tx_states = {i for i, r in states.items() if same(r, resource)}
        self._checkpoint_in_tx = same(cp, resource) and len(self._tx_states) == len(states)
        # A component that may use SQLAlchemy on the transaction's connection gets SQLAlchemy's.
        self._tx_driver_sql = all(
            self.components[i].driver_sql for i in self._tx_sinks | self._tx_states
        )

    def _plan_feedback(self) -> None:
        """Each sink's feedback target: a stateful bolt of the topology, outside the transaction."""
        by_id = {n.id: n for n in self._bolts}
        for node in self._data_sinks:
            target = self.components[node.index].feedback_target()  # type: ignore[union-attr]
            if target is None:
                continue
            bolt = by_id.get(target)
            if bolt is None or not self.components[bolt.index].stateful:
                known = ", ".join(n.id for n in self._stateful) or "none"
                raise TopologyError(
                    self._sink_problem(
                        node,
                        f"sink '{node.id}': feedback goes to '{target}', which is not a stateful "
                        f"bolt of the topology (stateful bolts: {known})",
                    )
                )
            if node.index in self._tx_sinks:
                raise TopologyError(
                    self._sink_problem(
                        node,
                        f"sink '{node.id}' writes in the batch's SQL transaction: it cannot give "
                        "feedback to a bolt (that state is committed in the same transaction)",
                    )
                )
            self._feedback_to[node.index] = bolt

    def _plan_holders(self) -> None:
        """The sinks that may hold across batches. A dead-letter sink or a sink written in the
        batch's transaction cannot (refused: the checkpoint would pass what it holds). A sink
        downstream of a stateful bolt is released after every batch: that state is committed per
        batch, and a crash losing the buffer would leave a replay that does not produce the
        held output again (a closed window, a state that moved on)."""
        holds = [
            n
            for n in self.plan.nodes
            if n.kind == "sink" and self.components[n.index].may_hold()  # type: ignore[union-attr]
        ]
        for node in holds:
            if node.dead_letter or node.index in self._tx_sinks:
                why = (
                    "a dead-letter sink"
                    if node.dead_letter
                    else "written in the batch's transaction"
                )
                raise TopologyError(
                    self._sink_problem(
                        node,
                        f"sink '{node.id}' keeps what it writes across batches (rolling), but it is "
                        f"{why}: it must be durable when the batch ends (remove its rolling settings)",
                    )
                )
        self._holders, self._release_always = holds, set()
        held = {n.index for n in holds}
        self._discarders = [
            n
            for n in self.plan.nodes
            if n.kind == "sink"
            and (n.index in held or type(self.components[n.index]).discard is not Sink.discard)
        ]
        self._held_backers = [
            n
            for n in self.plan.nodes
            if n.kind == "sink"
            and (n.index in held or type(self.components[n.index]).held_back is not Sink.held_back)
        ]
        for node in holds:
            stateful = [n.id for n in self._upstream(node) if n.index in self._stateful_set]
            if stateful and self.hold:
                self._release_always.add(node.index)
                log.warning(
                    "%s: releases after every batch, not when due: stateful bolt(s) %s upstream "
                    "commit their state per batch, and a held buffer lost in a crash would not "
                    "be produced again",
                    node.id,
                    ", ".join(stateful),
                )

    def _upstream(self, node: Node) -> list[Node]:
        """The bolts whose output can reach ``node``."""
        feeds: dict[int, set[int]] = {n.index: set() for n in self.plan.nodes}
        for n in self.plan.nodes:
            for targets in n.outputs.values():
                for t in targets:
                    feeds[t].add(n.index)
        seen: set[int] = set()
        todo = [node.index]
        while todo:
            for i in feeds[todo.pop()]:
                if i not in seen:
                    seen.add(i)
                    todo.append(i)
        return [n for n in self.plan.nodes if n.index in seen]

    def _sink_problem(self, node: Node, message: str) -> Problem:
        """A problem located at the sink's entry of the topology file."""
        i = next(k for k, c in enumerate(self.topology.sinks) if c.id == node.id)
        loc = self.topology.locator
        if loc is not None:
            return loc.problem(("sinks", i), message)
        return Problem(self.topology.file, 0, 0, f"sinks[{i}]", message)

    def _same_database(self, a: str | None, b: str | None) -> bool:
        """Two resource names for one database (same URL and settings), or the same name."""
        if a is None or b is None:
            return False
        if a == b:
            return True
        try:
            return self.resources.identity(a) == self.resources.identity(b)
        except Exception:  # a name the resources do not know: not the same
            return False

    @property
    def checkpoint_in_transaction(self) -> bool:
        """True when the checkpoint is written in the same transaction as the rows (exactly once)."""
        return self._checkpoint_in_tx and bool(self._tx_sinks)

    def open(self) -> Engine:
        if not self._opened:
            for comp in self.components:
                _call_hook(comp, "open", self.resources)
            self._plan_transaction()
            self._plan_feedback()
            self._plan_holders()
            self._opened = True
            _settle_heap()
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

    # -- snapshots (Lambda SnapStart) ----------------------------------------------------------

    def warm_up(self) -> None:
        """Let every component build now what it would build at its first batch (``warm_up``);
        what that built is frozen with the rest of init (the collector does not scan it)."""
        for comp in self.components:
            _call_hook(comp, "warm_up")
        gc.freeze()

    def before_snapshot(self) -> None:
        """The process is about to be snapshotted: close the resources' pooled connections (a
        restored copy connects again on first use, never on the original's sockets)."""
        self.resources.disconnect()

    def after_restore(self) -> None:
        """The process was restored from a snapshot: no pooled connection of the original, a
        random seed of its own (``random``'s state was copied with the snapshot), then each
        component's ``after_restore``."""
        self.resources.disconnect()
        random.seed()
        for comp in self.components:
            _call_hook(comp, "after_restore")

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def save_positions(self, stream: str, positions: dict[str, Position]) -> None:
        """Save positions the source adds after a batch (SHARD_END of a finished shard) with the
        checkpoint step's retries; raises ``BatchFailed`` when the store stays down."""
        if self.checkpointer is not None and positions:
            self._call(
                "checkpoint",
                self.checkpoint_stats,
                self.checkpointer.save,
                stream,
                positions,
                isolate=False,
            )

    @property
    def holding_sinks(self) -> list[str]:
        """Ids of the sinks that may hold what they wrote across batches (after ``open``)."""
        return [n.id for n in self._holders if n.index not in self._release_always]

    @property
    def holding(self) -> bool:
        """True while a sink holds events that are not yet durable (the checkpoint is held back)."""
        return any(self.components[n.index].holding() for n in self._holders)  # type: ignore[union-attr]

    def release(self) -> dict[str, Position]:
        """Make what the sinks hold durable and return the checkpoint held back for it (saved
        first when the engine has a ``Checkpointer``). Runners call it at a graceful shutdown
        and at a shard's end; raises ``BatchFailed`` when a sink or the store stays down."""
        self._release_holders(force=True)
        held = self._held
        if held and self.checkpointer is not None:
            self._call(
                "checkpoint",
                self.checkpoint_stats,
                self.checkpointer.save,
                self._held_stream,
                held,
                isolate=False,
            )
        self._held = {}
        return held

    def tick(self) -> dict[str, Position]:
        """Between batches (an idle source): release when a holding sink is due, as ``release``
        does; else nothing (an empty dict)."""
        if self._opened and any(
            self.components[n.index].holding() and self.components[n.index].due()  # type: ignore[union-attr]
            for n in self._holders
        ):
            return self.release()
        return {}

    def _release_holders(self, force: bool) -> bool:
        """Release each holding sink that must (``force``, a runner that cannot hold, or due);
        True while one still holds."""
        still = False
        for node in self._holders:
            comp = self.components[node.index]
            if comp.holding() and (  # type: ignore[union-attr]
                force or not self.hold or node.index in self._release_always or comp.due()  # type: ignore[union-attr]
            ):
                with releasing(self.time_left):  # a Lambda's release fits in its time left too
                    self._call(node.id, self.stats[node.index], comp.release, isolate=False)  # type: ignore[union-attr]
            still = still or comp.holding()  # type: ignore[union-attr]
        return still

    def _to_save(self, checkpoint: dict[str, Position], holding: bool) -> dict[str, Position]:
        """What to checkpoint after a batch: nothing while a sink holds, else the positions
        held back so far updated with the batch's."""
        if holding:
            return {}
        return {**self._held, **checkpoint} if self._held else checkpoint

    # -- one batch ---------------------------------------------------------------------------

    def process(self, records: list[Record], *, final: bool = False) -> BatchResult:
        """Run one batch and commit it; raises ``BatchFailed`` when a dependency stays down
        (nothing of the batch is then checkpointed, and staged state is discarded).
        ``final``: the input ends with this batch (see ``finish``)."""
        if not self._opened:
            self.open()
        thresholds = gc.get_threshold()  # the process's own, restored after the batch
        gc.set_threshold(BATCH_GC_THRESHOLD, *thresholds[1:])
        self._poison_warned.clear()
        try:
            attempt = 0
            while True:
                attempt += 1
                counted = [_record_counts(s) for s in (self.spout_stats, *self.stats)]
                try:
                    return self._process(records, final)
                except BaseException as exc:
                    # A stateful bolt's commit found its base state moved (another process
                    # committed meanwhile: StaleState): the same commit again fails the same
                    # way, so the whole batch runs again, from the stored state as it is now.
                    stale = isinstance(exc, BatchFailed) and isinstance(exc.cause, StaleState)
                    again = stale and attempt < self.retry.attempts
                    self._undo_batch(counted, again)
                    if not again:
                        raise
                    log.warning("%s; running the batch again (%d/%d)", exc.cause, attempt,
                                self.retry.attempts - 1)  # fmt: skip
        finally:
            self._given_to.clear()  # the batch's events: not kept past it (the collector)
            for bolt in self._record_bolts:
                bolt.retry_over()
            gc.set_threshold(*thresholds)
            self._poison_summary()

    def _poison_summary(self) -> None:
        """One line for the poison records of the batch not logged one by one."""
        for (index, kind), (_, more) in self._poison_warned.items():
            if more:
                log.warning(_MORE[kind], self.plan.nodes[index].id, more)
        self._poison_warned.clear()

    def _undo_batch(self, counted: list[tuple[int, int, int, int, int]], again: bool) -> None:
        """The batch failed: it comes again (the runner retries it, or the next run does, or
        ``process`` at once): its records count when they are settled, once (retries, time and
        rows written stay counted), the stateful bolts' staged state is dropped, and so are the
        rows a holding sink took from it (``Sink.discard``: what earlier batches took stays held,
        their checkpoint waiting for the release; ``again``: the next batch runs the same records),
        and what a sink that takes back its writes wrote of it."""
        for s, before in zip((self.spout_stats, *self.stats), counted, strict=True):
            s.received, s.emitted, s.dead_lettered, s.dropped, s.failed = before
        kept = bool(self._discarders) and self._maybe_saved()
        for node in () if kept else self._discarders:
            try:
                self.components[node.index].discard(self._batch_no, again)  # type: ignore[union-attr]
            except Exception:
                log.exception("%s: error while discarding the failed batch's held rows", node.id)
        for node in self._stateful:
            try:
                self.components[node.index].discard_state()  # type: ignore[union-attr]
            except Exception:
                log.exception("%s: error while discarding staged state", node.id)

    def _maybe_saved(self) -> bool:
        """Whether the failed batch's checkpoint may have been saved though its save (or its
        transaction's COMMIT) failed: the answer was lost, or the store applied it and then went
        down for the retries. The next run then starts after the batch, whose records do not
        come again: what the sinks wrote of them must stay (``Sink.discard`` would delete a
        committed batch's s3 objects). Read back from the store: saved (a shard's stored position
        at or past the batch's), or not readable (unknown), is True; else False."""
        if self._saving is None or self.checkpointer is None:
            return False
        stream, positions = self._saving
        try:
            stored = self.checkpointer.load(stream)
        except Exception as exc:  # the store is down: the save may have been applied
            outcome = f"the store cannot tell ({type(exc).__name__}: {exc})"
        else:
            # A store may save shard by shard (DynamoDB): one shard saved is enough to keep
            # everything (the objects are the batch's, not a shard's).
            if not any(
                (there := stored.get(shard)) is not None and there.key() >= at.key()
                for shard, at in positions.items()
            ):
                return False  # not saved: the batch's records come again
            outcome = "the store has it"
        log.warning(
            "the failed batch's checkpoint may be saved (%s): what its sinks wrote of it is not "
            "taken back (its records may come again: at-least-once)",
            redact_text(outcome),
        )
        return True

    def finish(self) -> BatchResult | None:
        """The input ended (a finite source read to its end): a batch without records in which
        every bolt's ``flush`` runs (after its ``process``), its output going downstream and
        through the commit sequence. None when no bolt flushes. Its one unit stands for the end
        of input (shard ``END_OF_INPUT.shard_id``, never checkpointed)."""
        if not any(type(self.components[n.index]).flush is not Bolt.flush for n in self._bolts):
            return None
        return self.process([], final=True)

    def _process(self, records: list[Record], final: bool = False) -> BatchResult:
        self._batch_no += 1
        self._saving = None
        self._isolated_rows.clear()
        self._given_to.clear()
        units, default_dl = self._expand(records)
        end = None
        if final:  # the origin of what flush() emits: filtered unless that is committed
            # The input's fingerprint (its running digest, files and stdin): what is built on the
            # end of one input is never named like what another input's end built.
            meta = END_OF_INPUT._replace(stream=self._last_stream, fingerprint=self._last_print)
            end = Event(b"", meta, "end-of-input", len(units))
            units.append(end)
        ledger = _Ledger(len(units))
        if end is not None:
            ledger.dropped[end.origin] = 1
        nodes = self.plan.nodes
        inbox: list[list[Event]] = [[] for _ in nodes]
        good = [ev for ev in units if ev.failure is None] if default_dl else units
        if end is not None:
            good = good[:-1]
        self._deliver(good, self.plan.entry, inbox, self.plan.spout_id, "default")

        given: list[tuple[Node, list[Event]]] = []  # each bolt's input (to name a loser)
        lost_here: list[Event] = []  # events of records a bolt lost, found at that bolt
        for node in self._bolts:
            events = inbox[node.index]
            if not events and end is None:
                continue
            inbox[node.index] = []
            stats = self.stats[node.index]
            stats.received += len(events)
            if events:
                given.append((node, kept := events[:]))  # a copy: the bolt may empty its list
            out = self._run_bolt(node, events, kept) if events else Output(node.id)
            if end is not None:
                self._flush(node, out, end)
            # Fewer events out than in: a record may be lost here (or a record's events merged).
            if events and len(out.dropped) + sum(map(len, out.streams.values())) < len(kept):
                self._lost_in_bolt(node, kept, out, default_dl, lost_here)
            for ev in out.dropped:
                ledger.dropped[ev.origin] += 1
            stats.dropped += len(out.dropped)
            for stream, emitted in out.streams.items():
                rejected = sum(
                    1
                    for ev in emitted
                    if ev.failure is not None and ev.failure.component == node.id
                )
                targets = node.outputs.get(stream)
                if targets:
                    stats.dead_lettered += rejected
                else:
                    self._count_rejected(stats, rejected)
                stats.emitted += len(emitted) - rejected
                if targets:
                    self._deliver(emitted, targets, inbox, node.id, stream)
                    continue
                bolt = self.components[node.index]
                for ev in emitted:
                    if ev.failure is None:
                        ev.failure = Failure(node.id, _unwired(bolt, node.id, ev, stream), stream)
                default_dl.extend(emitted)
        if given:
            self._dead_letter_lost(units, inbox, default_dl, ledger, given, lost_here)

        prepared: list[tuple[Node, Prepared]] = []
        # Records rejected with no dead-letter sink to take them fail (step 1): known now, so
        # their events and those held after them are not prepared at all (``_hold_back`` would
        # take them out and prepare the rest of every sink again).
        early = (
            self._held_before_sinks(units, default_dl, ledger)
            if default_dl and self.redelivers and not self.plan.dead_letters
            else None
        )
        for node in self._data_sinks:
            events = inbox[node.index]
            if early and events:
                events = [ev for ev in events if ev.origin not in early]
            if not events:
                continue
            stats = self.stats[node.index]
            stats.received += len(events)
            p = self._prepare(node, events)
            self._count_rejected(stats, len(p.rejected))
            default_dl.extend(p.rejected)
            prepared.append((node, p))

        # The commit sequence: 1. dead letters, 2. sinks, 3. staged state, 4. checkpoint.
        self._write_dead_letters(inbox, default_dl, ledger)
        stream = units[0].meta.stream if units else ""
        for node, p in prepared:
            if p.events and node.index not in self._tx_sinks:
                if ledger.failed and self.redelivers:
                    p = self._hold_back(node, p, units, ledger)
                self._write_sink(node, p, stream, ledger)
        if ledger.failed and self.redelivers and self._held_backers:
            self._held_back_from_sinks(units, ledger)
        holding = self._release_holders(force=final) if self._holders else False
        inside = [(node, p) for node, p in prepared if node.index in self._tx_sinks]
        if ledger.failed and self.redelivers:
            inside = [(node, self._hold_back(node, p, units, ledger)) for node, p in inside]
        saved = self._commit_transaction(inside, units, stream, ledger, holding)
        codes = self._codes(ledger)
        if self.redelivers and ledger.failed:  # (_codes put every failed record in it)
            self._mark_held(units, codes)
        checkpoint = saved if saved is not None else self._checkpoint_from(units, codes)
        covered = self._covered(units, codes)
        for node in self._stateful:
            if node.index not in self._tx_states:
                comp = self.components[node.index]
                self._call(
                    node.id, self.stats[node.index], comp.commit_state, covered, None, isolate=False
                )  # type: ignore[union-attr]
                comp.state_committed()  # type: ignore[union-attr]
        if saved is None:
            if holding and checkpoint:
                self._held.update(checkpoint)
                self._held_stream = stream or self._held_stream
            checkpoint = self._to_save(checkpoint, holding)
            if self.checkpointer is not None and not self._checkpoint_in_tx and checkpoint:
                self._saving = (stream or self._held_stream, checkpoint)
                self._call(
                    "checkpoint",
                    self.checkpoint_stats,
                    self.checkpointer.save,
                    stream or self._held_stream,
                    checkpoint,
                    isolate=False,
                )
        if not holding:
            self._held = {}
        return BatchResult(units, codes, ledger.failed, checkpoint, ledger.dead_failures)

    def _dead_letter_lost(
        self,
        units: list[Event],
        inbox: list[list[Event]],
        default_dl: list[Event],
        ledger: _Ledger,
        given: list[tuple[Node, list[Event]]],
        lost_here: list[Event],
    ) -> None:
        """After the bolts: the records no event of which went on (to a sink or a dead letter)
        nor was dropped — a bolt returned without emitting, dropping or failing it — go to the
        default dead letter (with none, they fail at step 1, as any reject), named after the
        last bolt that was given one of their events (the one that lost it). The bolt loses it
        again on every delivery: unacknowledged, it stalled its shard for ever. (Most are found
        at the bolt already, ``_lost_in_bolt``; here those a bolt lost while it returned as many
        events as it was given: it split another record.)
        The usual batch pays one set of its origins."""
        n = len(units)
        # (one comprehension: ~20 ns an event; attrgetter and set.update cost twice that)
        alive = {ev.origin for node in self._sinks for ev in inbox[node.index]}
        for ev in lost_here:
            # The record's outcome reads its unit's failure: the lost event may be a copy (a bolt
            # split the record). Not when an event of the record is in a sink: it goes on there.
            if ev.origin not in alive and units[ev.origin].failure is None:
                units[ev.origin].failure = ev.failure
        if len(alive) < n:
            alive.update([ev.origin for ev in default_dl])
            alive.update(compress(range(n), ledger.dropped))
        if len(alive) >= n:
            return
        missing = {i for i in range(n) if i not in alive}
        lost: list[tuple[Node, Event]] = []
        for node, events in reversed(given):  # topological order: the last holder lost it
            for ev in events:
                if ev.origin in missing:
                    missing.discard(ev.origin)
                    lost.append((node, ev))
            if not missing:
                break
        # (a record in no bolt's input stays without outcome: ``_codes`` fails it)
        for node, ev in sorted(lost, key=lambda x: x[1].origin):
            units[ev.origin].failure = self._lose(node, ev, default_dl).failure  # (as above)

    def _lost_in_bolt(
        self,
        node: Node,
        events: list[Event],
        out: Output,
        default_dl: list[Event],
        lost_here: list[Event],
    ) -> None:
        """A bolt returned fewer events than it was given: the records none of whose events it
        returned (emitted, dropped or failed) are lost there and dead-lettered — even when
        another branch of the graph carries them on, whose sink must not miss them silently (the
        record is then dead-lettered; a replay writes the other branch again, idempotently). A
        bolt that merges a record's events into fewer loses nothing."""
        went_on = {ev.origin for ev in out.dropped}
        for emitted in out.streams.values():
            went_on.update([ev.origin for ev in emitted])
        for ev in events:
            if ev.origin not in went_on:
                went_on.add(ev.origin)  # one dead letter a record
                lost_here.append(self._lose(node, ev, default_dl))

    def _lose(self, node: Node, ev: Event, default_dl: list[Event]) -> Event:
        """Dead-letter an event of a record the bolt lost (counted on the bolt, logged once);
        the event dead-lettered."""
        if ev.failure is not None:  # failed or lost elsewhere already (one event, two streams)
            ev = ev.fork()
        ev.failure = Failure(
            ENGINE,
            f"no outcome: bolt '{node.id}' returned without emitting, dropping or failing it",
        )
        self._count_rejected(self.stats[node.index], 1)
        self._warn_once(node, ev, _LOST, ev.failure.reason)
        default_dl.append(ev)
        return ev

    def _commit_transaction(
        self,
        inside: list[tuple[Node, Prepared]],
        units: list[Event],
        stream: str,
        ledger: _Ledger,
        holding: bool = False,
    ) -> dict[str, Position] | None:
        """Steps 2–4 for everything in the batch's one SQL transaction. When the checkpoint is
        part of it: what was saved (``_to_save``; empty while a sink holds), else None."""
        states = [n for n in self._stateful if n.index in self._tx_states]
        with_checkpoint = self._checkpoint_in_tx and self.checkpointer is not None
        if self._tx_resource is None or not (
            any(p.events for _, p in inside) or states or with_checkpoint
        ):
            return None
        from squall.topology.sql import (  # SQLAlchemy only for topologies that use SQL
            sql_errors,
            transaction,
        )

        # The plain driver's engine when every component of the transaction writes driver SQL
        # and none asked for SQLAlchemy on this database; else SQLAlchemy's, for all of them.
        db = (
            self.resources.database(self._tx_resource)
            if self._tx_driver_sql
            else self.resources.sql(self._tx_resource)
        )
        pending = [(node, p) for node, p in inside if p.events]
        # Each sink's own work first (the warehouse's new partitions, on another connection):
        # inside the transaction it would wait for the locks the transaction holds (another
        # sink's rows in the same partitioned table) - forever. A record's fault there is left
        # to the write in the transaction, which isolates it.
        for node, p in pending:
            try:
                self._call(
                    node.id,
                    self.stats[node.index],
                    self.components[node.index].before_transaction,  # type: ignore[union-attr]
                    p,
                )
            except _RecordFault:
                pass

        where = f"transaction on '{self._tx_resource}'"

        def run() -> tuple[list[tuple[Node, list[Event], WriteResult | None]], dict[str, Position]]:
            written = []
            # sql_errors: a failed COMMIT (connection lost) is transient like a failed write.
            with sql_errors(where), transaction(db) as conn:
                ctx = WriteContext(
                    connection=conn, stream=stream, time_left=self.time_left, batch=self._batch_no
                )
                for node, p in pending:
                    started = time.perf_counter()
                    try:
                        result = self.components[node.index].write_batch(p, ctx)  # type: ignore[union-attr]
                        if (
                            result is not None and result.rejected
                        ):  # dead letters first: roll back, then again
                            raise _Refused(node, result.rejected)
                        if result is not None and result.failed and len(pending) > 1:
                            # the other sinks of the transaction wrote (or would write) them too
                            raise _FailedInTransaction(node, result.failed)
                        written.append((node, p.events, result))
                    except (TransientError, BatchFailed, _Refused, _FailedInTransaction):
                        raise
                    except Exception as exc:
                        if _batch_error(exc) or _dependency_down(exc):
                            raise  # sql_errors makes it a TransientError: the transaction is retried
                        raise _RecordFault(exc, node) from exc
                    finally:
                        self.stats[node.index].seconds += time.perf_counter() - started
                trial = ledger.copy()
                for node, events, result in written:
                    self._settle_into(trial, node, events, result, dead=False)
                codes = self._codes(trial)
                # Only a checkpoint written here is used (else the caller finds it after commit).
                checkpoint = self._checkpoint_from(units, codes) if with_checkpoint else {}
                covered = self._covered(units, codes)
                for node in states:
                    self.components[node.index].commit_state(covered, conn)  # type: ignore[union-attr]
                if with_checkpoint:
                    checkpoint = self._to_save(checkpoint, holding)
                    if checkpoint:
                        self._saving = (stream or self._held_stream, checkpoint)  # (its COMMIT's)
                        self.checkpointer.save(stream or self._held_stream, checkpoint, conn)  # type: ignore[union-attr]
            return written, checkpoint

        while True:
            try:
                # Retries of the transaction count for its (first) sink, as before the engine held
                # it; with no sink in it, for the checkpoint it commits (else its first state's):
                # counted in no stats, the retry hook's live count had no component to settle.
                if pending:
                    stats = self.stats[pending[0][0].index]
                elif with_checkpoint:
                    stats = self.checkpoint_stats
                elif states:
                    stats = self.stats[states[0].index]
                else:  # every row dead-lettered on the way: the transaction's first sink
                    stats = self.stats[inside[0][0].index] if inside else None
                written, checkpoint = self._call(where, stats, run, isolate=False)
                break
            except _RecordFault as fault:
                # The transaction rolled back: find the records that fail alone (each trial in a
                # transaction of its own), dead-letter them, and commit the rest again.
                node = fault.node
                assert node is not None
                k = next(i for i, (n, _) in enumerate(pending) if n is node)
                p = pending[k][1]
                kept = self._isolate_write(node, p, stream, ledger, fault, again=True)
                pending[k] = (node, kept)
                pending = self._hold_back_pending(pending, units, ledger)
            except _Refused as refused:
                # The sink refused some events for good: dead-letter them, then commit the rest.
                node = refused.node
                k = next(i for i, (n, _) in enumerate(pending) if n is node)
                rest = self._take_rejected(
                    node, pending[k][1].events, WriteResult(rejected=refused.events), ledger
                )
                given = self._made_from(node, rest)
                if given is not None:  # the events it was given of the rest's records
                    rest = _of_records(given, rest, {ev.origin for ev in refused.events})
                again = self._reprepare(node, rest, [])
                if again.rejected:  # refused (or lost) by this prepare: dead-lettered as any reject
                    self._count_rejected(self.stats[node.index], len(again.rejected))
                    self._dead_letter_now(again.rejected, ledger)
                    again.rejected = []
                pending[k] = (node, again)
                pending = self._hold_back_pending(pending, units, ledger)
            except _FailedInTransaction as failure:
                # Rolled back: the records fail (they come again), no sink of the transaction
                # writes them, nor (``_hold_back_pending``) what comes after them in their lineage.
                node = failure.node
                for ev in failure.events:
                    reason = ev.failure or Failure(node.id, "write failed")
                    ledger.failed.setdefault(ev.origin, dataclasses.replace(reason, retry=True))
                origins = frozenset(ev.origin for ev in failure.events)
                pending = [(n, self._without(n, q, origins, ledger)) for n, q in pending]
                stats = self.stats[node.index]
                stats.received += len(failure.events)  # given to it, and failed there
                stats.failed += len(failure.events)
                pending = self._hold_back_pending(pending, units, ledger)
        for node, events, result in written:
            self._settle(node, events, result, ledger, dead=False)
        for node in states:
            self.components[node.index].state_committed()  # type: ignore[union-attr]
        if not with_checkpoint:
            return None
        if holding:  # nothing saved: the batch's positions wait with those held before
            self._held.update(self._checkpoint_from(units, self._codes(ledger)))
            self._held_stream = stream or self._held_stream
        return checkpoint

    # -- bolts and sinks, with poison isolation ------------------------------------------------

    def _run_bolt(self, node: Node, events: list[Event], kept: list[Event]) -> Output:
        """The bolt's output for ``events``; ``kept``, a copy of them, is what a retry and the
        isolation of a poison record call it with again: the bolt may have emptied its list."""
        comp = self.components[node.index]
        try:
            return self._call(node.id, self.stats[node.index], _anew(comp.process, events, kept))  # type: ignore[union-attr]
        except _RecordFault as fault:
            out = Output(node.id)
            self._bisect_bolt(node, comp.process, kept, fault, out)  # type: ignore[union-attr]
            return out

    def _flush(self, node: Node, out: Output, end: Event) -> None:
        """Add a bolt's ``flush`` output to ``out`` (retried when transient; any other error is
        the batch's: no record to isolate)."""
        comp = self.components[node.index]
        got = self._call(node.id, self.stats[node.index], comp.flush, end, True, isolate=False)  # type: ignore[union-attr]
        if got is not None:
            for stream, emitted in got.streams.items():
                for ev in emitted:
                    out.emit(ev, stream)
            out.dropped.extend(got.dropped)

    def _bisect_bolt(
        self,
        node: Node,
        fn: Callable[[list[Event]], Output],
        events: list[Event],
        fault: _RecordFault,
        out: Output,
    ) -> None:
        if len(events) == 1:
            # with where in the bolt it raised (from what ``_anew`` called on: its ``process``,
            # whatever callable that is — a partialmethod has no ``__code__``): a bug of yours
            reason = describe_exception_at(fault.cause, after=_ANEW_CALL)
            self._warn_once(node, events[0], _POISON, reason)
            out.fail(events[0], reason)
            return
        mid = len(events) // 2
        for part in (events[:mid], events[mid:]):
            try:
                got: Output = self._call(node.id, self.stats[node.index], _anew(fn, part[:], part))
            except _RecordFault as inner:
                self._bisect_bolt(node, fn, part, inner, out)
                continue
            for stream, emitted in got.streams.items():
                for ev in emitted:
                    out.emit(ev, stream)
            out.dropped.extend(got.dropped)

    def _find_poison(
        self,
        node: Node,
        fn: Callable[[list[Event]], Any],
        events: list[Event],
        fault: _RecordFault,
        found: Callable[[Event], None] | None = None,
    ) -> list[Event]:
        """The events on which ``fn`` fails alone (split in halves, in order); each gets its
        failure, and is given to ``found`` as soon as it is known (before the later parts)."""
        if len(events) == 1:
            self._poisoned(node, events[0], fault)
            events[0].failure = Failure(node.id, fault.reason)
            if found is not None:
                found(events[0])
            return [events[0]]
        bad: list[Event] = []
        mid = len(events) // 2
        for part in (events[:mid], events[mid:]):
            try:
                self._call(node.id, self.stats[node.index], _anew(fn, part[:], part))
            except _RecordFault as inner:
                bad.extend(self._find_poison(node, fn, part, inner, found))
        return bad

    def _poisoned(self, node: Node, event: Event, fault: _RecordFault) -> None:
        self._warn_once(node, event, _POISON, fault.reason)

    def _warn_once(self, node: Node, event: Event, kind: int, reason: str) -> None:
        """Log a record isolated from its batch (``_POISON``: it fails alone; ``_LOST``: a bolt
        lost it) at WARNING. A batch delivered again (its sink was down) isolates the same record
        again: it is logged once (its dead letter says it each time), then at DEBUG. Past the
        first few of a batch, component and kind, the rest are counted for one line."""
        key = (node.index, event.event_id)
        seen = key in self._poison_logged
        if not seen:
            if len(self._poison_logged) >= _POISON_LOGGED:
                del self._poison_logged[next(iter(self._poison_logged))]
            self._poison_logged[key] = None
            warned = self._poison_warned.setdefault((node.index, kind), [0, 0])
            if warned[0] >= _POISON_WARNED:
                warned[1] += 1
                seen = True
            else:
                warned[0] += 1
        log.log(
            logging.DEBUG if seen else logging.WARNING,
            _ONE_BY_ONE[kind],
            node.id,
            event.event_id,
            event.meta.shard_id,
            event.meta.sequence_number,
            reason,
        )

    def _prepare(self, node: Node, events: list[Event]) -> Prepared:
        comp = self.components[node.index]
        kept = events[:]  # as a bolt's (``_run_bolt``): a sink's prepare may empty its list
        self._given_to[node.index] = kept
        try:
            p = self._call(node.id, self.stats[node.index], _anew(comp.prepare, events, kept))  # type: ignore[union-attr]
        except _RecordFault as fault:
            bad = self._find_poison(node, comp.prepare, kept, fault)  # type: ignore[union-attr]
            return self._reprepare(node, kept, bad)
        if p.events != kept:  # (by identity, at C speed: every event kept, in order, loses none)
            self._lost_in_sink(node, kept, p)
        return p

    def _lost_in_sink(self, node: Node, events: list[Event], p: Prepared) -> None:
        """A sink's ``prepare`` did not return the events it was given as they were (fewer, more,
        others): the records none of whose events it returned, to write or rejected (a custom
        sink's bug; one record split in the same batch hid it from a count), are lost there —
        rejected naming the sink (dead-lettered, counted as its rejects), as a bolt's loss. They
        failed as "no outcome" on every delivery, for ever; written ahead of them, the records
        after them were not held. A sink that merges a record's events into fewer loses none."""
        went_on = {ev.origin for ev in p.events}
        went_on.update([ev.origin for ev in p.rejected])
        for ev in events:
            if ev.origin not in went_on:
                went_on.add(ev.origin)  # one dead letter a record
                if ev.failure is not None:
                    ev = ev.fork()
                ev.failure = Failure(
                    ENGINE,
                    f"no outcome: sink '{node.id}' prepared it neither to write nor to reject",
                )
                self._warn_once(node, ev, _LOST_IN_SINK, ev.failure.reason)
                p.rejected.append(ev)

    def _made_from(self, node: Node, outputs: list[Event]) -> list[Event] | None:
        """The events the sink's ``prepare`` was given when ``outputs`` (events it returned) are
        not among them — a ``prepare`` making new events (rows made of an event, a merge) may not
        read its own back, so it is prepared again with what it was given (``_of_records``) —;
        else None: prepared again as they are (the usual sink). Asked only to prepare again."""
        given = self._given_to.get(node.index)
        if given is None:
            return None
        ids = {id(ev) for ev in given}
        return None if all(id(ev) in ids for ev in outputs) else given

    def _reprepare(self, node: Node, events: list[Event], bad: list[Event]) -> Prepared:
        """``prepare`` again without the poison events, which become rejects (dead letters)."""
        ids = {id(ev) for ev in bad}
        rest = [ev for ev in events if id(ev) not in ids]
        p = Prepared([])
        if rest:
            comp = self.components[node.index]
            p = self._call(
                node.id,
                self.stats[node.index],
                _anew(comp.prepare, rest[:], rest),  # type: ignore[union-attr]
                isolate=False,
            )
            if p.events != rest:
                self._lost_in_sink(node, rest, p)
        p.rejected.extend(bad)
        return p

    def _held_before_sinks(
        self, units: list[Event], default_dl: list[Event], ledger: _Ledger
    ) -> frozenset[int]:
        """The units held by the records that will fail at step 1 (``default_dl`` with no
        dead-letter sink): they and every later unit of their lineages. Kept in the ledger as
        ``_hold_back`` computes it, for as many failed records."""
        failed = {ev.origin for ev in default_dl}
        codes = [_COMMITTED] * len(units)
        for i in failed:
            codes[i] = _FAILED
        ledger.held = frozenset(compress(range(len(units)), self._unsettled(units, codes)))
        ledger.held_for = len(failed)
        return ledger.held

    def _hold_back(self, node: Node, p: Prepared, units: list[Event], ledger: _Ledger) -> Prepared:
        """``p`` without the events of the failed records and of those after a failed record of
        their lineage (all are delivered again), prepared again when some were taken out."""
        held = self._held_units(units, ledger)
        if not held:
            return p
        return self._without(node, p, held, ledger)

    def _held_units(self, units: list[Event], ledger: _Ledger) -> frozenset[int]:
        """The failed records and those after a failed record of their lineage (``ledger.held``,
        computed again only when a sink's write found more failed records)."""
        if ledger.held_for != len(ledger.failed):
            ledger.held_for = len(ledger.failed)
            codes = [_COMMITTED] * len(units)
            for i in ledger.failed:
                codes[i] = _FAILED
            ledger.held = frozenset(compress(range(len(units)), self._unsettled(units, codes)))
        return ledger.held

    def _held_back_from_sinks(self, units: list[Event], ledger: _Ledger) -> None:
        """Before the release: the records that come again (``_held_units``) are dropped from
        what the holding sinks took of this batch, and taken out of what a sink that takes back
        its writes wrote (``Sink.held_back``; the s3 sink's per-batch objects are put again
        without them). Their rows went in before the failure was known; left, they would be
        durable beside what the records' next delivery writes (a Lambda retry from the failed
        record, a replay from the checkpoint). A sink that cannot (S3 down) fails the batch."""
        held = self._held_units(units, ledger)
        if not held:
            return
        positions = frozenset(
            (m.stream, m.shard_id, m.sequence_number, m.sub_sequence_number)
            for m in (units[i].meta for i in held)
        )
        for node in self._held_backers:
            comp = self.components[node.index]
            self._call(
                node.id,
                self.stats[node.index],
                comp.held_back,  # type: ignore[union-attr]
                self._batch_no,
                positions,
                isolate=False,
            )

    def _without(
        self, node: Node, p: Prepared, origins: frozenset[int], ledger: _Ledger
    ) -> Prepared:
        """``p`` without the events of the records ``origins``, prepared again if any was in it."""
        kept = [ev for ev in p.events if ev.origin not in origins]
        if len(kept) == len(p.events):
            return p
        given = self._made_from(node, p.events)
        if given is not None:  # prepared again with the events it was given of those records
            before, kept = len(_of_records(given, p.events)), _of_records(given, kept)
        else:
            before = len(p.events)
        # Not the sink's to write this time: counted when they come again, as a failed batch's
        # records are (else the sink's "in" exceeds its out, dead, filtered and failed for good).
        self.stats[node.index].received -= before - len(kept)
        if not kept:
            return Prepared([])
        again = self._prepare(node, kept)
        if again.rejected:  # refused now though accepted before: dead-lettered as any reject
            self._count_rejected(self.stats[node.index], len(again.rejected))
            self._dead_letter_now(again.rejected, ledger)
            again.rejected = []
        return again

    def _hold_back_pending(
        self, pending: list[tuple[Node, Prepared]], units: list[Event], ledger: _Ledger
    ) -> list[tuple[Node, Prepared]]:
        """The transaction's sinks still to write, after its isolation found a record that
        fails (no dead letter to take it): its records and those after them are held back from
        every sink of the transaction written again, as from a sink written after a failure."""
        if ledger.failed and self.redelivers:
            pending = [(n, self._hold_back(n, q, units, ledger)) for n, q in pending]
        return [(n, q) for n, q in pending if q.events]

    def _mark_held(self, units: list[Event], codes: list[int]) -> None:
        """Every unit after a failed record of its lineage (``_unsettled``) that did not fail
        itself is held: it comes again, whatever of it a sink wrote before the failure was known."""
        for i, unsettled in enumerate(self._unsettled(units, codes)):
            if unsettled and codes[i] != _FAILED:
                codes[i] = _HELD

    def _write_sink(self, node: Node, p: Prepared, stream: str, ledger: _Ledger) -> None:
        """Write one sink on its own; poison records found in the write are dead-lettered now."""
        if not p.events:
            return
        comp = self.components[node.index]
        try:
            result = self._call(
                node.id,
                self.stats[node.index],
                comp.write_batch,
                p,
                WriteContext(stream=stream, time_left=self.time_left, batch=self._batch_no),
            )  # type: ignore[union-attr]
        except _RecordFault as fault:
            # The isolation's part writes are this write: each event is sent once, and settled.
            self._isolate_write(node, p, stream, ledger, fault)
            return
        events = self._take_rejected(node, p.events, result, ledger)
        self._settle(node, events, result, ledger, dead=False)
        if result is not None and result.feedback:
            self._feed_back(node, result.feedback)

    def _feed_back(self, node: Node, events: list[Event]) -> None:
        """Stage a sink's feedback in its stateful bolt (committed with the batch's state). The
        bolt's output is not delivered: these are not records. One that the bolt fails on is
        logged and dropped — its record was delivered; only the state change is lost."""
        target = self._feedback_to.get(node.index)
        if target is None:
            log.warning(
                "%s: %d feedback event(s) dropped: the sink names no stateful bolt",
                node.id,
                len(events),
            )
            return
        comp = self.components[target.index]
        kept = events[:]  # as ``_run_bolt``: a retry or the isolation after the bolt emptied it
        try:
            out = self._call(
                target.id,
                self.stats[target.index],
                _anew(comp.process, events, kept),  # type: ignore[union-attr]
            )
        except _RecordFault as fault:
            out = Output(target.id)
            self._bisect_bolt(target, comp.process, kept, fault, out)  # type: ignore[union-attr]
        failed = [ev for evs in out.streams.values() for ev in evs if ev.failure is not None]
        for ev in failed:
            log.warning(
                "%s: feedback from '%s' for record %s not applied: %s",
                target.id,
                node.id,
                ev.event_id,
                ev.failure.reason,  # type: ignore[union-attr]
            )

    def _take_rejected(
        self, node: Node, events: list[Event], result: WriteResult | None, ledger: _Ledger
    ) -> list[Event]:
        """Dead-letter what the sink refused for good at write time; the rest is settled as written."""
        if result is None or not result.rejected:
            return events
        for ev in result.rejected:
            if ev.failure is None:
                ev.failure = Failure(node.id, "refused by the sink")
        self._count_rejected(self.stats[node.index], len(result.rejected))
        self._dead_letter_now(result.rejected, ledger)
        gone = {id(ev) for ev in result.rejected}
        kept = [ev for ev in events if id(ev) not in gone]
        if len(events) - len(kept) < len(gone):
            # Some are copies of events it was given (``Event.fork``, the failure set on the
            # copy): each takes out the event it copies — in the batch's transaction, written
            # again with the rest, it was refused again, for ever.
            given = {id(ev) for ev in events}
            want = Counter(
                (ev.origin, ev.event_id) for ev in result.rejected if id(ev) not in given
            )
            for ev in events:
                key = (ev.origin, ev.event_id)
                if want[key] > 0 and id(ev) not in gone:
                    want[key] -= 1
                    gone.add(id(ev))
            kept = [ev for ev in events if id(ev) not in gone]
        return kept

    def _isolate_write(
        self,
        node: Node,
        p: Prepared,
        stream: str,
        ledger: _Ledger,
        fault: _RecordFault,
        *,
        again: bool = False,
    ) -> Prepared:
        """Find the events whose write fails alone and dead-letter them. The parts are written
        for real, each on its own: they are the write of every other event — settled here (what
        they failed, refused, gave as feedback, the rows they added), and nothing is left to
        write, so a sink whose writes are visible (a webhook, a queue, a push) sends each good
        event once. ``again`` (a sink of the batch's transaction): return the rest, prepared
        again, to write in the transaction once more (rows, state and checkpoint commit
        together; its writes are upserts), its parts' rows counted as new."""
        comp = self.components[node.index]
        # A prepare that made new events is given the events it made them of (it cannot read its
        # own: every part failed, every record was dead-lettered).
        given = self._made_from(node, p.events)
        part_failed: list[Event] = []  # what the parts' writes reported failed (WriteResult)
        part_rejected: list[Event] = []  # ... and refused for good
        part_written: list[int | None] = []
        part_feedback: list[Event] = []
        # The held-records rule between the parts (they go in order): once a record fails — a
        # part's write reported it failed, or it is poison with no dead-letter sink to take it —
        # the later parts send none of the events of it and of the later records of its lineage.
        # They are held (they come again): not sent ahead of it (an SQS FIFO group's order),
        # nor now and again. (What the failing call itself sent with it is the sink's answer.)
        blocked: dict[str, int] = {}  # lineage -> its first failed record (origin)
        held: dict[int, Event] = {}

        def block(ev: Event) -> None:
            name = lineage(ev.meta)
            blocked[name] = min(blocked.get(name, ev.origin), ev.origin)

        def write(part: list[Event]) -> None:
            if blocked:
                keep = []
                for ev in part:
                    first = blocked.get(lineage(ev.meta))
                    if first is not None and ev.origin >= first:
                        held[id(ev)] = ev
                    else:
                        keep.append(ev)
                if not keep:
                    return
                part = keep
            inputs = part if given is None else _of_records(given, part)
            got = comp.write_batch(
                comp.prepare(inputs),
                WriteContext(stream=stream, time_left=self.time_left, batch=self._batch_no),
            )  # type: ignore[union-attr]
            part_written.append(None if got is None else got.written)
            if got is not None:
                part_failed.extend(got.failed)
                part_rejected.extend(got.rejected)
                part_feedback.extend(got.feedback)
                if self.redelivers:
                    for ev in got.failed:
                        block(ev)

        fails = self.redelivers and not self.plan.dead_letters  # a poison record fails
        bad = self._find_poison(node, write, p.events, fault, block if fails else None)
        if not bad and not held:
            # It failed on the whole, never on a part (a size limit): every part was written, so
            # every event is. Failing the batch would fail it again on every delivery.
            log.warning(
                "%s: a write of %d events failed (%s) but each part was written on its own",
                node.id,
                len(p.events),
                fault.reason,
            )
        if not bad or not again:
            events = p.events
            if held:  # not the sink's to write this time: counted when they come again
                events = [ev for ev in events if id(ev) not in held]
                kept = list(held.values())
                n = len(kept) if given is None else len(_of_records(given, kept))
                self.stats[node.index].received -= n
                ledger.held = ledger.held | {ev.origin for ev in kept}
            if bad:  # dead letters (or failures) now, as the poison records of a prepare
                self._count_rejected(self.stats[node.index], len(bad))
                self._dead_letter_now(bad, ledger)
                gone = {id(ev) for ev in bad}
                events = [ev for ev in events if id(ev) not in gone]
            # What a part's write refused for good is dead-lettered (it was counted committed,
            # never written nor dead-lettered), as a write's own refusals are.
            events = self._take_rejected(node, events, WriteResult(rejected=part_rejected), ledger)
            counted = part_written and None not in part_written
            self._settle(
                node,
                events,
                WriteResult(part_failed, sum(part_written) if counted else None),  # type: ignore[arg-type]
                ledger,
                dead=False,
            )
            if part_feedback:
                self._feed_back(node, part_feedback)
            return Prepared([])
        if part_written and None not in part_written:  # committed: new rows, whatever comes next
            stats = self.stats[node.index]
            stats.written = (stats.written or 0) + sum(part_written)  # type: ignore[arg-type]
            self._isolated_rows[node.index] = self._isolated_rows.get(node.index, 0) + sum(
                part_written  # type: ignore[arg-type]
            )
        rest = p.events if given is None else _of_records(given, p.events, {e.origin for e in bad})
        kept = self._reprepare(node, rest, bad)
        self._count_rejected(self.stats[node.index], len(kept.rejected))
        self._dead_letter_now(kept.rejected, ledger)
        kept.rejected = []
        return kept

    def _dead_letter_now(self, events: list[Event], ledger: _Ledger) -> None:
        """Dead-letter events found during the sink step (before anything is checkpointed)."""
        inbox: list[list[Event]] = [[] for _ in self.plan.nodes]
        self._write_dead_letters(inbox, list(events), ledger)

    def _expand(self, records: list[Record]) -> tuple[list[Event], list[Event]]:
        """User records of the batch (KPL de-aggregated); corrupt aggregates go to dead letter whole."""
        units: list[Event] = []
        bad: list[Event] = []
        started = time.perf_counter()
        append = units.append
        # With ``user_records`` no record is an aggregate: a first byte no byte equals.
        kpl_first = -1 if self.user_records else _KPL_FIRST
        for rec in records:
            data, meta = rec.data, rec.meta
            # the source could not deliver it whole (too long, bad base64)
            if meta.defect is not None:
                ev = Event(data, meta, None, len(units))
                ev.failure = Failure(self.plan.spout_id, meta.defect)
                append(ev)
                bad.append(ev)
                continue
            # the usual case: one user record. A sub-sequence number says it was taken out of an
            # aggregate already (a spout resuming inside one, the KCL): its bytes are the user's.
            # (The first byte alone rules most records out without slicing.)
            if (
                not data
                or data[0] != kpl_first
                or data[:4] != KPL_MAGIC
                or meta.sub_sequence_number
            ):
                # Event(data, meta, None, len(units)), its slots set here: Event.__init__ is a
                # Python call per record (tests/topology/test_engine_events.py holds them equal).
                ev = _new_event(Event)
                ev.raw = data
                ev.meta = meta
                ev.origin = len(units)
                ev._event_id = ev.value = ev.failure = None
                ev.extra = {}
                append(ev)
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
        if records:
            last = records[-1].meta
            self._last_stream, self._last_print = last.stream, last.fingerprint
        s = self.spout_stats
        s.received += len(records)
        s.emitted += len(units) - len(bad)
        self._count_rejected(s, len(bad))
        s.seconds += time.perf_counter() - started
        return units, bad

    def _deliver(
        self,
        events: list[Event],
        targets: tuple[int, ...],
        inbox: list[list[Event]],
        source: str,
        stream: str,
    ) -> None:
        """Hand events to each target; copies are made only where the graph fans out."""
        for k, t in enumerate(targets):
            batch = events if k == 0 else [ev.fork() for ev in events]
            if self.plan.nodes[t].dead_letter:
                for ev in batch:
                    if ev.failure is None:
                        ev.failure = Failure(
                            source, f"routed to dead letter by stream '{stream}'", stream
                        )
            inbox[t].extend(batch)

    def _count_rejected(self, stats: ComponentStats, n: int) -> None:
        """Count ``n`` records a component rejected to the default dead letter: dead-lettered, or
        failed when the topology has no dead-letter sink to take them (they come again)."""
        if self.plan.dead_letters:
            stats.dead_lettered += n
        else:
            stats.failed += n

    def _write_dead_letters(
        self, inbox: list[list[Event]], default_dl: list[Event], ledger: _Ledger
    ) -> None:
        defaults = set(self.plan.dead_letters)
        if default_dl and not defaults:
            # No dead-letter sink: the records fail, so the source delivers them again and the
            # runner reports them (Lambda: batchItemFailures). Nothing is dropped.
            for ev in default_dl:
                ledger.failed.setdefault(
                    ev.origin, ev.failure or Failure(ENGINE, "no dead-letter sink")
                )
        for node in self._dl_sinks:
            events = inbox[node.index] + (default_dl if node.index in defaults else [])
            if not events:
                continue
            self.stats[node.index].received += len(events)
            comp = self.components[node.index]
            p = Prepared(events)
            try:
                result = self._call(
                    node.id,
                    self.stats[node.index],
                    comp.write_batch,
                    p,
                    WriteContext(time_left=self.time_left, batch=self._batch_no),
                )  # type: ignore[union-attr]
            except _RecordFault as fault:
                # A dead letter that cannot be written even alone: that record fails (it is
                # delivered again, never dropped); the others are written.
                # Every other event was written by a part call of the isolation (writing "the
                # rest" again in one call could fail again as a whole: a size limit).
                part_failed: list[Event] = []

                def write(
                    part: list[Event], c: Sink = comp, out: list[Event] = part_failed
                ) -> None:  # type: ignore[assignment]
                    got = c.write_batch(
                        Prepared(part), WriteContext(time_left=self.time_left, batch=self._batch_no)
                    )
                    if got is not None:
                        out.extend(got.failed)

                bad = self._find_poison(node, write, events, fault)
                result = WriteResult(failed=bad + part_failed)
            self._settle(node, events, result, ledger, dead=True)

    def _settle(
        self,
        node: Node,
        events: list[Event],
        result: WriteResult | None,
        ledger: _Ledger,
        *,
        dead: bool,
    ) -> None:
        failed = self._settle_into(ledger, node, events, result, dead=dead)
        stats = self.stats[node.index]
        stats.failed += failed
        stats.emitted += len(events) - failed
        if result is not None and result.written is not None:
            # Rows the isolation's part writes added are new rows, counted then, not present.
            earlier = self._isolated_rows.pop(node.index, 0)
            stats.written = (stats.written or 0) + result.written
            stats.present = (stats.present or 0) + len(events) - failed - result.written - earlier

    @staticmethod
    def _settle_into(
        ledger: _Ledger, node: Node, events: list[Event], result: WriteResult | None, *, dead: bool
    ) -> int:
        failed_ids = set()
        if result is not None and result.failed:
            failed_ids = {id(ev) for ev in result.failed}
            for ev in result.failed:
                failure = ev.failure or Failure(node.id, "write failed")
                ledger.failed.setdefault(ev.origin, dataclasses.replace(failure, retry=True))
        counts = ledger.dead if dead else ledger.committed
        if dead:  # (dead letters only: the few)
            reasons = ledger.dead_failures
            for ev in events:
                if ev.failure is not None and id(ev) not in failed_ids:
                    reasons.setdefault(ev.origin, ev.failure)
        if failed_ids:
            for ev in events:
                if id(ev) not in failed_ids:
                    counts[ev.origin] += 1
        else:  # the usual case: no id() and no set look-up per event
            for ev in events:
                counts[ev.origin] += 1
        return len(failed_ids)

    @staticmethod
    def _codes(ledger: _Ledger) -> list[int]:
        """One outcome code per user record: failed, else dead-lettered, else committed, else filtered."""
        failed, dead, committed, dropped = (
            ledger.failed,
            ledger.dead,
            ledger.committed,
            ledger.dropped,
        )
        dead_at = list(compress(range(ledger.n), dead))  # the few dead-lettered, at C speed
        if sum(1 for i in dead_at if not committed[i]) == committed.count(0):
            # The usual batch: every record committed or dead-lettered. Built at C speed, the
            # dead-lettered and failed ones then set one by one.
            codes = [_COMMITTED] * ledger.n
            for i in dead_at:
                codes[i] = _DEAD
            for i in failed:
                codes[i] = _FAILED
            return codes
        codes = []
        held = ledger.held
        for i in range(ledger.n):
            if failed and i in failed:
                codes.append(_FAILED)
            elif dead[i]:
                codes.append(_DEAD)
            elif committed[i]:
                codes.append(_COMMITTED)
            elif dropped[i]:
                codes.append(_FILTERED)
            elif i in held:
                # Held back from every sink: no outcome of its own, not lost. (Looked up last, so
                # that a batch with a filtered record pays nothing per record for it; the held
                # records that have an outcome are made held by ``_mark_held``.)
                codes.append(_HELD)
            else:
                # No outcome, though the bolts' losses were dead-lettered (``_dead_letter_lost``):
                # a record lost outside every bolt's input. Never acknowledge it.
                failed[i] = Failure(ENGINE, "no outcome: a bolt lost the event")
                codes.append(_FAILED)
        return codes

    def _unsettled(self, units: list[Event], codes: list[int]) -> list[bool]:
        """Per unit: True when it is at or after the first failed record of its lineage (it comes
        again). Per lineage (``squall.event.lineage``), not per shard id: a ``squall replay``
        batch mixes streams (every stream has ``shardId-000000000000``), and each re-driven
        record is a lineage of its own — one failing again holds back no other.

        With ``whole_records`` (the source resumes at a Kinesis sequence number, never inside a KPL
        aggregate: Lambda), the user records of the failed record's aggregate before it come again
        too, so they are not settled either.
        """
        flags = [False] * len(units)
        blocked: dict[str, str] = {}  # lineage -> sequence number of its first failed record
        lineages = [lineage(ev.meta) for ev in units]  # only a batch with a failure gets here
        for i, code in enumerate(codes):
            name = lineages[i]
            if name in blocked:
                flags[i] = True
            elif code == _FAILED:
                blocked[name] = units[i].meta.sequence_number
                flags[i] = True
        if self.whole_records:
            for i, ev in enumerate(units):
                if not flags[i] and blocked.get(lineages[i]) == ev.meta.sequence_number:
                    flags[i] = True
        return flags

    def _checkpoint_from(self, units: list[Event], codes: list[int]) -> dict[str, Position]:
        """Per shard, the last position before the first failed record.

        Keyed by shard id, as the checkpoint stores keep it under the batch's stream: every
        source that is checkpointed (a Kinesis stream, an SQS queue, a file, one Lambda event
        source mapping, one KCL lease) gives batches of one stream, one input. A ``squall replay``
        batch mixes streams, but nothing checkpoints it: its settled records are found per
        lineage (``_unsettled``), and this dict is not used."""
        last: dict[str, RecordMeta] = {}
        if _FAILED not in codes:
            for ev in units:
                last[ev.meta.shard_id] = ev.meta
        else:
            for ev, unsettled in zip(units, self._unsettled(units, codes), strict=True):
                if not unsettled:
                    last[ev.meta.shard_id] = ev.meta
        last.pop(END_OF_INPUT.shard_id, None)  # no record: nothing to checkpoint
        return {shard: meta.position for shard, meta in last.items()}

    def _covered(self, units: list[Event], codes: list[int]) -> Callable[[Event], bool]:
        """Whether an event's record is covered by the checkpoint (settled, before any failure of its shard)."""
        if _FAILED not in codes:
            return _always
        unsettled = self._unsettled(units, codes)
        return lambda ev: not unsettled[ev.origin]

    # -- retries -----------------------------------------------------------------------------

    def _call(
        self,
        where: str,
        stats: ComponentStats | None,
        fn: Callable[..., Any],
        *args: Any,
        isolate: bool = True,
    ) -> Any:
        """Call a component; retry ``TransientError`` with jittered exponential backoff, bounded.

        Any other exception but ``SinkError`` becomes ``_RecordFault`` (the caller isolates the
        records to blame) when ``isolate``, else ``BatchFailed``.
        """
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            began = self._clock()
            context = log_context(component=where)  # every line logged inside names the component
            context.__enter__()
            try:
                try:
                    return fn(*args)
                except Exception as exc:
                    if _refused_for_good(exc):  # a driver's error a component let escape
                        raise SinkError(f"{where}: {describe_exception(exc)}") from exc
                    if _dependency_down(exc):
                        raise TransientError(f"{where}: {describe_exception(exc)}") from exc
                    raise
            except TransientError as exc:
                # StaleState: this call again would fail the same way (``process`` runs the
                # batch again instead)
                if attempt >= policy.attempts or isinstance(exc, StaleState):
                    raise BatchFailed(where, exc, attempt) from exc
                backoff = backoff_ceiling(
                    policy.initial_backoff, policy.multiplier, policy.max_backoff, attempt
                )
                delay = max(self._rng() * backoff, _asked_wait(exc.retry_after))
                left = self.time_left() if self.time_left is not None else None
                # Another attempt may take as long as this one did (a database's lock or
                # connect wait, a busy timeout: seconds), so the retry must fit both.
                took = max(self._clock() - began, 0.0) if left is not None else 0.0
                if left is not None and delay + took >= left:
                    # The runner's time is nearly spent: a retry would be cut off, and with it
                    # what this run committed before; failing now keeps that.
                    log.warning(
                        "%s; not retried: %.2fs left, %.2fs of backoff and %.2fs for another "
                        "attempt (as long as the last)",
                        exc,
                        left,
                        delay,
                        took,
                    )
                    raise BatchFailed(where, exc, attempt) from exc
                if stats is not None:
                    stats.retries += 1
                if self.on_retry is not None:
                    try:  # the runner's metrics: never a reason to give up a retry
                        self.on_retry(
                            where if stats is None else stats.id,
                            "" if stats is None else stats.kind,
                            exc,
                        )
                    except Exception:
                        log.exception("%s: the retry hook failed; the retry goes on", where)
                text = str(exc)  # most errors name their place already ("where: …")
                log.warning(
                    "%s; retry %d/%d in %.2fs",
                    text if text.startswith(f"{where}:") else f"{where}: {text}",
                    attempt,
                    policy.attempts - 1,
                    delay,
                )
                self._sleep(delay)
            except (BatchFailed, _RecordFault, _Refused, _FailedInTransaction):
                raise
            except Exception as exc:
                if isolate and not _batch_error(exc):
                    raise _RecordFault(exc) from exc
                raise BatchFailed(where, exc, attempt) from exc
            finally:
                context.__exit__(None, None, None)
                if stats is not None:
                    stats.seconds += time.perf_counter() - started


#: The longest wait a ``TransientError``'s ``retry_after`` gets from the engine's retry: a
#: dependency asking more (a day's quota, ``inf`` from a component's arithmetic) is asked again
#: then, the batch not parked for as long (``inf`` raised OverflowError from the sleep, out of
#: the retry loop).
MAX_RETRY_AFTER = 300.0


def _asked_wait(retry_after: float | None) -> float:
    """A ``TransientError``'s ``retry_after`` as a wait: 0 for none, NaN or a negative value,
    at most ``MAX_RETRY_AFTER``."""
    if not isinstance(retry_after, int | float) or retry_after != retry_after:
        return 0.0
    return float(min(max(0.0, retry_after), MAX_RETRY_AFTER))  # an int beyond a float's: cut first


def _of_records(
    given: list[Event], outputs: list[Event], without: set[int] | frozenset[int] = frozenset()
) -> list[Event]:
    """The events of ``given`` (a sink's ``prepare`` input) of the records ``outputs`` hold, but
    not of the records ``without``, in their order."""
    keep = {ev.origin for ev in outputs}.difference(without)
    return [ev for ev in given if ev.origin in keep]


def _anew(
    fn: Callable[[list[Event]], Any], first: list[Event], kept: list[Event]
) -> Callable[[], Any]:
    """``fn`` called with ``first``, then (a retry) with a new copy of ``kept`` each time: a bolt
    (or a sink's ``prepare``) may empty or reorder the list it is given before it raises."""
    given = [first]

    def call() -> Any:
        return fn(given.pop() if given else kept[:])

    return call


#: The code of ``_anew``'s call: the frame after it in a traceback is the component's own.
_ANEW_CALL = _anew(list, [], []).__code__


def _always(event: Event) -> bool:
    return True


def _record_counts(s: ComponentStats) -> tuple[int, int, int, int, int]:
    """The counters of records a component saw and settled (not retries, time or rows)."""
    return s.received, s.emitted, s.dead_lettered, s.dropped, s.failed


#: Longest detail a bolt adds to an unwired stream's reason (``Bolt.unwired_reason``).
_UNWIRED_DETAIL = 300


def _unwired(bolt: Any, node_id: str, event: Event, stream: str) -> str:
    """The dead-letter reason of an event sent to a stream nothing consumes: the stream, and
    what the bolt says about why it went there (passwords masked, bounded; never raising)."""
    reason = f"stream '{stream}' of '{node_id}' is not wired"
    try:
        detail = bolt.unwired_reason(event, stream)
    except Exception:  # noqa: BLE001 - describing a record's failure must never fail the batch
        detail = None
    if not detail:
        return reason
    return f"{reason}: {safe_text(redact_text(safe_text(detail, 4 * _UNWIRED_DETAIL)), _UNWIRED_DETAIL)}"


def batch_error(exc: BaseException) -> bool:
    """An error that is the batch's, never the record's a component met it on: a database or
    Redis down (retried as an outage) or refusing for good, a lost connection (Python's
    ``ConnectionError``) or the machine's error (a full disk, no descriptors: an errno of
    ``_MACHINE_ERRNOS``). What a component that isolates records itself (``RecordBolt``) lets
    escape instead of failing the record with it: caught as a record's, every event of an
    outage would be dead-lettered and checkpointed past.

    Narrower than the engine's rule for a call it cannot split (``_batch_error``): a
    ``TimeoutError`` (a per-record regex or alarm timeout) and an ``OSError`` without an errno
    (``gzip.BadGzipFile`` of a record's bytes, ``requests.HTTPError`` of a record's 404) may be
    one record's, and failing the batch with one would stop the shard on that record at every
    replay; a database's or Redis' timeout is an outage above."""
    if _refused_for_good(exc) or _dependency_down(exc):
        return True
    if isinstance(exc, _FATAL) or isinstance(exc, ConnectionError):
        return True
    return isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS


def _refused_for_good(exc: BaseException) -> bool:
    """A database or Redis client's error a retry cannot change (no such database or role, a
    failed authentication, a Redis ACL refusal, a Redis that does not serve the command: unknown,
    or a Cluster node's ``MOVED``) that a component let escape raw: the batch's
    failure as a ``SinkError`` — neither waited for as an outage nor isolated as records' faults
    (each would fail alone and be dead-lettered). Only libraries already imported are looked at."""
    if isinstance(exc, SquallError):
        return False
    if "psycopg2" in sys.modules:
        from squall.topology.sql import refused_for_good

        if refused_for_good(exc):
            return True
    if "redis" in sys.modules:
        from squall.topology.resources import redis_cannot_serve, redis_refused_for_good

        return isinstance(exc, redis_refused_for_good()) or redis_cannot_serve(exc)
    return False


def _dependency_down(exc: BaseException) -> bool:
    """A database or Redis client's server- or connection-level error a component let escape raw.

    It is the dependency's failure, never a record's: isolating it would dead-letter every record
    of the batch (each fails alone) and checkpoint past them during an outage. Only libraries
    already imported are looked at, so topologies without them pay nothing.
    """
    if isinstance(exc, SquallError):
        return False
    sa = sys.modules.get("sqlalchemy")
    pg = sys.modules.get("psycopg2")
    if (sa is not None and isinstance(exc, sa.exc.SQLAlchemyError)) or (
        pg is not None and isinstance(exc, pg.Error)
    ):
        from squall.topology.sql import is_transient

        return is_transient(exc)
    if sys.modules.get("redis") is None:
        return False
    from squall.topology.resources import redis_outage

    # The same rule as every squall store's (redis_errors): a lost connection or timeout, a
    # replica promoted (ReadOnlyError), a server loading (BusyLoadingError) or BUSY running a
    # script, a refused password: the server's, never one record's.
    return redis_outage(exc)


_heap_settled = False
#: The young-collection threshold while a batch is processed. Python's default (700 allocations)
#: runs a young collection every ~50 events of the example; a batch allocates tens of thousands
#: of short-lived objects, almost none in cycles (reference counting frees them), so the young
#: collections mostly scan live batch data (~1.4 µs an event, ~6 %, benchmarks/engine_cpu.py).
#: Only during the batch (the runners' ``batch_collection`` holds it until they let the batch
#: go): between batches the process's own thresholds apply, so a cycle that
#: outlives its batch (user code keeping an exception and its traceback) is collected as Python
#: would — with 50,000 for good, such cycles held whole batches (1.6 GB instead of 0.2 GB with
#: 5 MB batches; tests/topology/test_gc.py).
BATCH_GC_THRESHOLD = 50_000


@contextmanager
def batch_collection() -> Iterator[None]:
    """``BATCH_GC_THRESHOLD`` over a runner's batch, its bookkeeping after ``Engine.process``
    included; the process's own thresholds again when the block ends. Let the batch go inside
    the block (its records, its result: the result holds every event, payloads included), so
    that the young collection then due scans what outlives the batch: right after ``process``
    returned it scanned the whole batch and collected nothing (~3,000 objects a batch of the
    example, ~1.5 % of a run's CPU; docs/performance.md)."""
    thresholds = gc.get_threshold()
    gc.set_threshold(BATCH_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _settle_heap() -> None:
    """Once per process, after the first engine opened (Lambda: at init): freeze what init
    allocated (modules, parsers, database handles) so the collector stops scanning it on every
    full collection — about 15 % of the per-event CPU on the example (benchmarks/engine_cpu.py).
    No ``gc.collect()`` first: it cost 40–80 ms of Lambda init and freed ~500 objects."""
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.freeze()
