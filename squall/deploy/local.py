"""The local runner: a spout, the engine and its checkpointer in one process (development, single host).

The runner opens the checkpoint store the spout asks for, gives the stored positions to the
spout, and hands the store to the engine, which saves each batch's positions as the last step
of its commit sequence (in the warehouse's transaction when they share a database).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from squall.component import ComponentContext
from squall.deploy import lock
from squall.errors import BatchFailed, SquallError, TopologyError, TransientError
from squall.observability.logs import log_context
from squall.observability.metrics import Recorder
from squall.spouts.base import Spout
from squall.topology import registry
from squall.topology.checkpoint import Checkpointer, MemoryCheckpointStore, open_checkpoint_store
from squall.topology.executor import Engine, batch_collection
from squall.topology.model import Topology
from squall.topology.outcomes import BatchResult, ComponentStats, Outcome, RecordOutcome
from squall.topology.resources import Resources, WrongResourceKind

log = logging.getLogger("squall.local")

EXIT_OK = 0
EXIT_FAILED = 1  # a batch failed after retries, or records failed with no dead letter to take them
EXIT_CONFIG = (
    2  # the topology is invalid, or a sink/spout refused it at start (e.g. an incompatible table)
)
EXIT_INTERRUPTED = 130  # Ctrl-C: the batch in flight was finished and checkpointed (or, a second
# one, aborted: not acknowledged)

#: Seconds between heartbeats while ``squall run --metrics-port`` waits for input on a source
#: without idle polls (stdin, a FIFO): far under ``SquallHung``'s threshold (300 s).
WAIT_BEAT_S = 1.0


class ExitStatus:
    """The exit code of a run, ``squall run``'s or ``squall replay``'s (README's table): what
    broke first, else whether the run stopped before its input ended."""

    error: BatchFailed | None
    setup_error: SquallError | None
    input_error: SquallError | None
    failed_records: list[RecordOutcome]
    interrupted: bool
    aborted: bool

    @property
    def exit_code(self) -> int:
        broken = self.setup_error or self.input_error
        if broken is not None:
            return EXIT_FAILED if isinstance(broken, TransientError) else EXIT_CONFIG
        if self.error is not None or self.failed_records:
            return EXIT_FAILED
        return EXIT_INTERRUPTED if self.interrupted or self.aborted else EXIT_OK


@dataclass
class RunReport(ExitStatus):
    """What a run did, for the summary table and the exit code."""

    batches: int = 0
    records: int = 0
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    seconds: float = 0.0
    stats: list[ComponentStats] = field(default_factory=list)
    interrupted: bool = False
    #: The spout keeps a checkpoint (a Kinesis stream) or acknowledges what was settled (SQS
    #: deletes it); a ``file``, ``stdin`` or ``s3`` one does neither, and a new run reads its
    #: input from the start.
    checkpointed: bool = True
    #: The spout acknowledges (SQS): no checkpoint; what was not settled is not deleted.
    acknowledges: bool = False
    #: The spout's checkpoints were kept in memory (no store, no ``warehouse`` resource): a new
    #: run starts at the spout's ``start`` again.
    checkpoint_in_memory: bool = False
    error: BatchFailed | None = None
    setup_error: SquallError | None = None
    input_error: SquallError | None = None  # the input broke after the run started
    aborted: bool = False
    failed_records: list[RecordOutcome] = field(default_factory=list)
    #: The failed records are what the bolts emitted at the end of the input (their flush): the
    #: input was read to its end, not stopped after a batch.
    failed_at_end: bool = False


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an unexpected error (a database driver's, botocore's)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


class _EndOfInput:
    """The end-of-input flush's result as the recorder reads it: the components' counters moved
    (rows the flush wrote), but no user record is in it — its one unit stands for the end of
    input and is not counted as a record."""

    def __init__(self, result: Any):
        self.checkpoint, self.ok, self.failed = result.checkpoint, result.ok, result.failed

    def counts(self) -> dict:
        return {}


class _ReadInterrupted(BaseException):
    """A stop while the spout waited for input (``Spout.read_interruptible``): no batch was in
    flight. A ``BaseException``, so no spout's ``except Exception`` takes it for a read error."""


class LocalRunner:
    """Reads batches from the topology's spout, runs them, commits the safe checkpoint."""

    def __init__(
        self,
        topology: Topology,
        *,
        batch_size: int | None = None,
        on_batch: Callable[[BatchResult, Spout], None] | None = None,
        on_idle: Callable[[Spout], None] | None = None,
        recorder: Recorder | None = None,
    ):
        self.topology = topology
        self.plan = topology.plan
        self.batch_size = batch_size or topology.settings.batch_size
        self.resources = Resources.for_topology(topology)
        spout_cls = registry.resolve("spout", topology.spout.type)
        self.spout: Spout = spout_cls(
            topology.spout, ComponentContext(topology.name, topology.base_dir, topology.problem)
        )  # type: ignore[assignment]
        self.on_batch = on_batch
        #: Called when a spout that reports its lag polled and found nothing (the live view).
        self.on_idle = on_idle
        self.checkpointer: Checkpointer | None = None
        self._stream = ""
        self.recorder = recorder or Recorder(
            topology.name
        )  # metrics backends; log context per batch
        self._interrupted = False
        #: True while the main thread waits in a ``read_interruptible`` spout's ``read``.
        self._reading = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C, or SIGTERM (a service manager's stop: systemd, ``docker stop``): finish the
        batch in flight, commit it, stop. A second one aborts at once."""
        if self._interrupted:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._interrupted = True
        name = "SIGTERM" if signum == signal.SIGTERM else "interrupt"
        self.spout.stop()
        if self._reading:  # waiting for input (an idle pipe) that may never come: stop now
            self._reading = False
            log.warning("%s: stopping (waiting for input, no batch in flight)", name)
            raise _ReadInterrupted
        log.warning("%s: finishing the batch in flight (Ctrl-C again to abort)", name)

    def run(self) -> RunReport:
        report = RunReport()
        started = time.perf_counter()
        previous: dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_sigint)
        except ValueError:  # not the main thread: no signal handling
            pass
        run_lock = None
        try:
            try:
                run_lock = lock.acquire(
                    self.topology, self.resources
                )  # one run per topology and store
                self.spout.open(self.resources)
                spec = self.spout.checkpointing()
                report.checkpointed = spec is not None or self.spout.acknowledges
                report.acknowledges = self.spout.acknowledges
                if spec is not None:
                    self._stream = spec.stream
                    try:
                        store = open_checkpoint_store(spec, self.resources, self.topology.name)
                    except WrongResourceKind as exc:  # located, as a component's own resource is
                        raise TopologyError(
                            self.topology.problem(
                                self.topology.spout.id, "checkpoint.resource", str(exc)
                            )
                        ) from None
                    self.checkpointer = Checkpointer(store)
                    if isinstance(store, MemoryCheckpointStore):  # gone with the run
                        report.checkpointed = self.spout.acknowledges
                        report.checkpoint_in_memory = True
                    self.spout.resume(self.checkpointer.load(spec.stream))
                engine = Engine(
                    self.plan, resources=self.resources, checkpointer=self.checkpointer, hold=True
                )
                engine.open()
                # a sink that rolls files by age hears of idle time, a lag caught up is shown
                # (MillisBehindLatest 0 on an idle stream), and the heartbeat moves on an idle
                # source (``--metrics-port``): the spout yields empty batches
                self.spout.idle_batches = (
                    bool(engine.holding_sinks)
                    or _reports_lag(self.spout)
                    or self.recorder.heartbeats
                )
            except SquallError as exc:  # a refused table, an unreachable stream, a missing file
                report.setup_error = exc
                log.error("cannot start: %s", exc)
                log.debug("cannot start", exc_info=True)  # -vv: where (a component's own code)
                return report
            except Exception as exc:  # noqa: BLE001 - a driver's own error at start: one line, not a traceback
                report.setup_error = SquallError(one_line(exc))
                log.error("cannot start: %s", report.setup_error)
                log.debug("cannot start", exc_info=True)
                return report
            report.stats = [engine.spout_stats, *engine.stats]
            waiting = (
                self._beat_while_waiting()
                if self.recorder.heartbeats and self.spout.read_interruptible
                else None
            )
            try:
                with log_context(topology=self.topology.name):  # each line about a batch names it
                    try:
                        self._loop(engine, report)
                    except _ReadInterrupted:  # stopped while the spout waited for input
                        pass
                    if report.error is None and self._release(engine, engine.release, report):
                        self._commit_spout(engine, {}, report)
            except (
                KeyboardInterrupt
            ):  # a second Ctrl-C: stop now; the batch in flight is not acknowledged
                report.aborted = True
                log.warning("aborted: the batch in flight was not checkpointed")
            except SquallError as exc:  # the input broke mid-way (a truncated .gz): stop, say where
                report.input_error = exc
                log.error("%s", exc)
            finally:
                if waiting is not None:
                    waiting.set()
                engine.close()
        finally:
            self.spout.close()
            if run_lock is not None:
                run_lock.release()
            self.resources.close()
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)
            report.interrupted = self._interrupted
            report.seconds = time.perf_counter() - started
        return report

    def _beat_while_waiting(self) -> threading.Event:
        """Move the heartbeat every ``WAIT_BEAT_S`` while the runner waits in the spout's read for
        input (an idle pipe: stdin, a FIFO; an SQS long poll), which has no idle polls: waiting
        for input is not a hang. Set the event returned to stop."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(WAIT_BEAT_S):
                if self._reading:
                    self.recorder.idle()

        threading.Thread(target=beat, name="squall-heartbeat", daemon=True).start()
        return stop

    def _commit_spout(self, engine: Engine, checkpoint: dict, report: RunReport) -> bool:
        """Tell the spout what the engine saved; save what it adds (SHARD_END of finished shards),
        with the engine's retries. False when that save failed (the run stops; a restart reads the
        finished shard's end again and saves it then)."""
        extra = self.spout.commit(checkpoint)
        try:
            with self.recorder.retries(engine):  # its retries show as a batch's do
                engine.save_positions(self._stream, extra)
        except BatchFailed as exc:
            report.error = exc
            log.error("%s", exc)
            return False
        return True

    def _release(self, engine: Engine, release: Callable[[], dict], report: RunReport) -> bool:
        """Make what the sinks hold durable (``Engine.release``, or ``tick`` when due) and tell the
        spout the checkpoint that moved with it. False when a sink or the store stayed down."""
        started = time.perf_counter()
        try:
            with self.recorder.retries(engine):  # a sink retried in a release shows as in a batch
                positions = release()
        except BatchFailed as exc:
            report.error = exc
            log.error("%s", exc)
            return False
        if positions:  # counted as a batch's checkpoint is (squall_checkpoints_total)
            self.recorder.released(engine, positions, time.perf_counter() - started)
        return not positions or self._commit_spout(engine, positions, report)

    def _batch(self, engine: Engine, batch: list, report: RunReport) -> bool:
        """Run one batch the spout read (an empty one: the source is idle) and commit what it
        moved; False when the run stops (an error, a failed record, Ctrl-C)."""
        if not batch:  # the source is idle: a holding sink may be due by age
            reports_lag = _reports_lag(self.spout)  # its polls still say how far behind it is
            self.recorder.idle(self.spout.lag() if reports_lag else None)  # type: ignore[attr-defined]
            if reports_lag and self.on_idle is not None:
                self.on_idle(self.spout)
            return self._release(engine, engine.tick, report) and not self._interrupted
        lag = getattr(self.spout, "lag", None)
        try:
            with self.recorder.batch(engine, batch, lag=lag) as watch:
                watch.result = result = engine.process(batch)
        except BatchFailed as exc:
            report.error = exc
            log.error("%s", exc)
            return False
        report.batches += 1
        report.records += len(result)
        for outcome, n in result.counts().items():
            report.counts[outcome] += n
        if result.checkpoint and not self._commit_spout(engine, result.checkpoint, report):
            return False
        if self.on_batch:
            self.on_batch(result, self.spout)
        if not result.ok:
            report.failed_records = result.failed
            result.log_failures(log)
            return False
        return not self._interrupted

    def _loop(self, engine: Engine, report: RunReport) -> None:
        batches = self.spout.read(self.batch_size)
        # A spout whose read may wait for input for ever (stdin: an idle pipe) is interrupted by
        # a stop while it waits (``_on_sigint``): no batch is in flight then, and the stop only
        # asked it to end after a whole batch more of input. A stop just before: end here.
        interruptible = self.spout.read_interruptible
        while True:
            self._reading = interruptible
            if interruptible and self._interrupted:
                self._reading = False
                return
            batch = next(batches, None)
            self._reading = False
            if batch is None:
                break
            # The batch's collector threshold until the batch is let go (its result with
            # ``_batch``'s frame, its records here): the young collection due after it then
            # scans what outlives it, not its events.
            with batch_collection():
                if not self._batch(engine, batch, report):
                    return
                del batch
        if self.spout.finite and not self.spout.stopping:  # the input ended: flush the bolts
            started = time.perf_counter()
            try:
                with self.recorder.retries(engine):  # its retries show as a batch's do
                    result = engine.finish()
            except BatchFailed as exc:
                self.recorder.observe(engine, [], None, time.perf_counter() - started, error=exc)
                report.error = exc
                log.error("%s", exc)
                return
            if result is not None:  # what the flush wrote counts in the totals and metrics
                self.recorder.observe(
                    engine, [], _EndOfInput(result), time.perf_counter() - started
                )
            if result is not None and result.checkpoint:
                self._commit_spout(engine, result.checkpoint, report)
            if result is not None and not result.ok:
                report.failed_records = result.failed
                report.failed_at_end = True
                result.log_failures(log)


def _reports_lag(spout: Spout) -> bool:
    """Whether the spout says how far behind its source it is (``lag()``: the Kinesis poller)."""
    return callable(getattr(spout, "lag", None))
