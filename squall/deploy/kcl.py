"""KCL record processor: the MultiLangDaemon's five lifecycle hooks, delegating to the engine.

The daemon starts one process per shard lease: ``python -m squall.deploy.kcl TOPOLOGY``. Records
arrive already de-aggregated by the KCL (with sub-sequence numbers). After each batch the
processor checkpoints the engine's safe position. Two rules keep the at-least-once promise,
because amazon-kclpy swallows exceptions from ``process_records`` and reports the batch done:

- a batch whose dependency stays down is retried here, with capped backoff, until it succeeds
  or the lease is lost — the shard waits rather than skipping records; so is opening the
  topology in ``initialize`` (a database down when the shard starts), releasing what a
  rolling sink holds outside a batch and a throttled checkpoint, each failed attempt counted as
  a failed batch in the metrics (a checkpoint's also as a checkpoint retry; a batch's checkpoint
  counts once the daemon stored it);
- a misconfiguration is not waited for (a database that does not exist, a failed
  authentication, a missing table or right: ``SinkError``, ``TopologyError``): the processor
  logs it with its place and exits (``EXIT_MISCONFIGURED``) without checkpointing, in
  ``initialize`` as for a batch;
- any other error of a batch exits the process before the batch is reported done;
- records that failed with nowhere to go (no dead-letter sink) are not skippable: the processor
  checkpoints the position before the first of them and exits;
- a checkpoint the daemon could not store (``ThrottlingException``,
  ``KinesisClientLibDependencyException``) is retried with capped backoff before the message is
  reported done — kclpy would report it done, and a SHARD_END never stored keeps the child shards
  from starting; any other checkpoint error (``InvalidStateException``…) exits as a batch's error
  does (on a requested shutdown it is logged: the shard resumes from its last stored checkpoint).

A processor that exits stops the whole daemon (the MultiLangDaemon calls ``System.exit`` when a
record processor's child ends); the fleet's systemd unit starts the worker again, and each shard
resumes from its checkpoint.

A lease taken over by another worker (a rebalance, or this worker was too slow to renew it) is
the fleet's normal life: the checkpoint then answers ``ShutdownException``; the processor logs
one INFO line, stops checkpointing, and closes the engine when the daemon says ``leaseLost``. The
new owner resumes from the last checkpoint (sinks are idempotent on ``event_id``). A processor
waiting to retry reads its lease's owner before each retry (``kcl_lease``) and gives the batch up
once the lease is another's: committed after the new owner's batches, it would undo them.

On a graceful stop (``squall kcl`` got SIGTERM and passed it to the daemon alone) the daemon calls
``shutdown_requested`` on every processor: it takes a final checkpoint and closes the engine.

stdout is the daemon's protocol channel: logs go to stderr (the daemon logs every stderr line
at ERROR, whatever its level). The log level comes from ``SQUALL_LOG_LEVEL`` (default WARNING;
``squall -v kcl`` sets INFO).

Size (~660 lines): the daemon's five hooks and the failure rules above (outage, misconfiguration,
lease loss, checkpoint errors, daemon gone) are one state machine, read together.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from squall import redact
from squall.errors import BatchFailed, SinkError, SquallError, TopologyError, TransientError
from squall.event import Position, Record, RecordMeta
from squall.observability.logs import log_context
from squall.observability.runners import kcl_recorder
from squall.secrets import aws_secrets
from squall.topology import registry
from squall.topology.executor import Engine, batch_collection
from squall.topology.loader import load
from squall.topology.model import Topology

log = logging.getLogger("squall.kcl")

EXIT_RECORDS_FAILED = 3
#: Exit code of a processor whose batch (or topology opening) raised an unexpected error.
EXIT_UNEXPECTED_ERROR = 4
#: Exit code of a processor whose daemon went away while it waited for a dependency.
EXIT_DAEMON_GONE = 5
#: Exit code of a processor stopped by a misconfiguration (no such database, authentication
#: failed, a missing table): retrying cannot help, waiting would hide it.
EXIT_MISCONFIGURED = 6
#: Errors that a retry cannot fix: the processor exits instead of waiting.
PERMANENT_ERRORS = (SinkError, TopologyError)
#: What the daemon answers a checkpoint with once the lease belongs to another worker
#: (KCL ``ShutdownException``, passed as the error name of the multilang checkpoint message).
LEASE_LOST_ERRORS = frozenset({"ShutdownException"})
#: Checkpoint errors the KCL says to back off from and retry: DynamoDB throttled the write, or could
#: not be reached. Retried here with capped backoff; the message is not reported done meanwhile.
RETRIED_CHECKPOINT_ERRORS = frozenset(
    ("ThrottlingException", "KinesisClientLibDependencyException")
)


def checkpoint_retried(args: tuple) -> str:
    """A checkpoint retried, as the lease-lost WARNING names it: its batch is in the sinks (only
    the position is not stored), so the new owner writes it again, idempotently."""
    at = f"at {args[0]}" if args else "at the shard's end"
    return f"storing the checkpoint {at} (its records committed here; not checkpointed)"


class LeaseLost(Exception):
    """The lease of this shard moved to another worker: stop working on it, quietly."""


def _checkpoint_error_name(exc: BaseException) -> str | None:
    """The KCL exception name of an amazon-kclpy ``CheckpointError``, else None."""
    try:
        from amazon_kclpy.checkpoint_error import CheckpointError
    except ImportError:  # the processor also runs without amazon-kclpy in unit tests
        return None
    return exc.value if isinstance(exc, CheckpointError) else None


def check_kcl_safe(topology: Topology) -> None:
    """Refuse bolts and sinks that write to stdout: under the KCL it is the daemon's protocol
    channel (the spout does not run there)."""
    for kind, cfg, caps in registry.declared(topology, ("bolt", "sink")):
        if caps.needs_stdout:
            raise SquallError(
                f"{kind} '{cfg.id}': the {cfg.type} {kind} writes to stdout and cannot run "
                "under the KCL (stdout is the MultiLangDaemon protocol channel)"
            )


def _in_context(
    hook: Callable[[RecordProcessor, Any], None],
) -> Callable[[RecordProcessor, Any], None]:
    """Every line logged during a daemon's call names the topology and the shard."""

    @functools.wraps(hook)
    def logged(self: RecordProcessor, hook_input: Any) -> None:
        shard = self.shard_id or getattr(hook_input, "shard_id", None)
        with log_context(topology=self.engine.topology.name, shard=shard):
            hook(self, hook_input)

    return logged


class RecordProcessor:
    """A v3 amazon-kclpy record processor over a squall engine (duck-typed; no kclpy import needed)."""

    version = 3

    def __init__(
        self,
        engine: Engine,
        *,
        stream: str = "",
        sleep: Callable[[float], None] = time.sleep,
        max_backoff: float = 30.0,
        daemon_alive: Callable[[], bool] | None = None,
        lease_held: Callable[[str], bool] = lambda shard: True,
    ):
        self.engine = engine
        # The daemon de-aggregates KPL records before it hands them over (sub-sequence numbers
        # are theirs): a user record that starts with the KPL magic bytes is not an aggregate.
        engine.user_records = True
        daemon = os.getppid()
        # The daemon is our parent: once it is gone (a stop whose grace ran out, kill -9) nobody
        # reads our checkpoints and the lease belongs to the next worker; a processor waiting for
        # a dependency must not live on and write the batch again beside the new owner.
        self._daemon_alive = daemon_alive or (lambda: os.getppid() == daemon)
        self._lease_held = lease_held  # asked before each retry (kcl_lease.LeaseProbe.held)
        self.stream = stream
        self.shard_id = ""
        self._sleep = sleep
        self._max_backoff = max_backoff
        self.last_checkpoint: Position | None = None
        self.lost = False
        self._stopping = False  # shutdown_requested came: the daemon releases the lease next
        self._closed = False
        self._failing = False  # an attempt outside a batch failed and none succeeded since
        self.metrics = kcl_recorder(
            engine.topology.name
        )  # Prometheus (multiprocess) + a progress line

    @_in_context
    def initialize(self, initialize_input) -> None:
        self.shard_id = initialize_input.shard_id
        self.metrics.idle(shard=self.shard_id)  # the shard's heartbeat: a hang in opening shows
        try:
            self._open()
        except LeaseLost:
            return
        log.info("shard %s: starting at %s", self.shard_id, initialize_input.sequence_number)

    def _open(self) -> None:
        """Open the engine; a dependency that is down is retried with capped backoff (the shard
        waits). amazon-kclpy would swallow the error and pass the next batches to an engine that
        cannot open; any other error exits (and with it the daemon: see the module docstring)."""
        backoff = 1.0
        while True:
            started = time.perf_counter()
            try:
                self.engine.open()
                self._attempt_succeeded()
                return
            except TransientError as exc:
                # Counted as a failed batch of no record: the alert on failed batches fires for a
                # shard that cannot start as for one that cannot commit (nothing else moves: no
                # batch runs, no lag is read while ``initialize`` waits).
                self._failed_attempt(started, exc)
                log.error(
                    "shard %s: opening the topology: %s; retrying in %.0fs",
                    self.shard_id,
                    exc,
                    backoff,
                )
                self._wait(backoff, "opening the topology")
                backoff = min(backoff * 2, self._max_backoff)
            except PERMANENT_ERRORS as exc:
                self._exit_misconfigured("opening the topology", exc)
            except Exception as exc:
                self._exit_unexpected("opening the topology", exc)

    def _failed_attempt(
        self, started: float, exc: BaseException, *, checkpoint_retry: bool = False
    ) -> None:
        """An attempt outside a batch (an open, a release, a checkpoint) failed: a failed batch of
        no record; a checkpoint's also counts in ``squall_checkpoint_retries_total``. The shard
        is retrying until an attempt succeeds (``_attempt_succeeded``) or a batch ends."""
        self._failing = True
        self.metrics.observe(
            self.engine,
            [],
            None,
            time.perf_counter() - started,
            shard=self.shard_id,
            error=exc,
            checkpoint_retries=int(checkpoint_retry),
        )

    def _attempt_succeeded(self) -> None:
        """An open, release or checkpoint succeeded: after a failed attempt the shard is no
        longer retrying (no batch may end for hours on an idle stream to say it)."""
        if self._failing:
            self._failing = False
            self.metrics.settled(self.shard_id)

    def _wait(self, backoff: float, retried: str) -> None:
        """Sleep before a retry; exit when the daemon went away meanwhile, raise ``LeaseLost`` when
        another worker holds the lease now (it commits what this retry would). ``retried``: what
        was retried, for the WARNING that says so (``_lost``)."""
        self._sleep(backoff)
        if not self._daemon_alive():
            log.error(
                "shard %s: the KCL daemon is gone; exiting without retrying (the next owner of "
                "the lease resumes from the last checkpoint)",
                self.shard_id,
            )
            sys.exit(EXIT_DAEMON_GONE)
        if not self.lost and not self._lease_held(self.shard_id):
            self._lost(retried)
            raise LeaseLost(self.shard_id)

    def _exit_misconfigured(self, what: str, exc: BaseException) -> None:
        """Stop on an error a retry cannot fix; nothing after the last checkpoint is acknowledged
        (the worker is started again and resumes from it, and stops again until the configuration
        is fixed)."""
        log.error(
            "shard %s: %s: %s; a misconfiguration, not an outage: not retrying, nothing "
            "checkpointed past %s; exiting (fix it: the shard restarts from its checkpoint)",
            self.shard_id,
            what,
            exc,
            self.last_checkpoint.sequence_number if self.last_checkpoint else "the last checkpoint",
        )
        sys.exit(EXIT_MISCONFIGURED)

    def _exit_unexpected(self, what: str, exc: BaseException) -> None:
        log.error(
            "shard %s: %s failed: %s: %s; exiting so the daemon restarts from the checkpoint",
            self.shard_id,
            what,
            type(exc).__name__,
            exc,
        )
        sys.exit(EXIT_UNEXPECTED_ERROR)

    @_in_context
    def process_records(self, process_records_input) -> None:
        records = [self._record(r) for r in process_records_input.records]
        if self.lost:
            return
        ms = getattr(process_records_input, "millis_behind_latest", None)
        if not records:  # an idle poll (callProcessRecordsEvenForEmptyRecordList): roll when due
            # the shard's lag moves (caught up: 0) and its heartbeat too, though no batch ran
            self.metrics.idle({self.shard_id: ms} if ms is not None else None, shard=self.shard_id)
            try:
                self._release(process_records_input.checkpointer, self.engine.tick)
            except LeaseLost:
                pass  # the new owner replays from the last checkpoint
            except Exception as exc:  # kclpy would report the poll done
                self._exit_unexpected("an idle poll", exc)
            return
        # The batch's collector threshold until its records and result are let go (the young
        # collection due after it then scans what outlives it, not its events).
        with batch_collection():
            self._batch(process_records_input, records, ms)
            del records

    def _batch(self, process_records_input, records: list, ms: int | None) -> None:
        """Run the records of one ``processRecords`` through the engine (a dependency that is down:
        again, with backoff) and checkpoint what it settled; exit when a record failed."""
        backoff = 1.0
        lag = {self.shard_id: ms} if ms is not None else None
        while True:
            try:
                with self.metrics.batch(
                    self.engine,
                    records,
                    shard=self.shard_id,
                    lag=lambda: lag,
                    checkpoint_later=True,  # the daemon stores it (or throttles, or refuses)
                ) as watch:
                    watch.result = result = self.engine.process(records)
                break
            except BatchFailed as exc:
                if isinstance(exc.cause, PERMANENT_ERRORS):
                    self._exit_misconfigured("a batch", exc)
                log.error("shard %s: %s; retrying the batch in %.0fs", self.shard_id, exc, backoff)
                try:
                    self._wait(backoff, "a batch; given up, not committed here")
                except LeaseLost:
                    return  # not committed: the new owner commits the batch
                backoff = min(backoff * 2, self._max_backoff)
            except (
                Exception
            ) as exc:  # kclpy would report the batch done: a later checkpoint skips it
                self._exit_unexpected("a batch", exc)
        position = result.checkpoint.get(self.shard_id)
        try:
            if position is not None:
                self._checkpoint(process_records_input.checkpointer, position)
                # counted once the daemon stored it: a lease table that throttles until the
                # lease moves (or refuses) leaves squall_checkpoints_total as it was
                self.metrics.checkpoint_stored()
            if not result.ok and self.engine.holding:
                # Before exiting: make what the sinks hold durable and checkpoint up to the
                # failed record, as without a holding sink.
                self._release(process_records_input.checkpointer, self.engine.release)
        except LeaseLost:
            return  # the new owner replays from the last checkpoint; failed records included
        except Exception as exc:  # kclpy would report the batch done: the exit below is skipped
            self._exit_unexpected("checkpointing a batch", exc)
        if not result.ok:
            first = result.failed[0]
            log.error(
                "shard %s: record %s failed in %s: %s; exiting so the daemon restarts from the checkpoint",
                self.shard_id,
                first.position.sequence_number,
                first.component,
                first.reason,
            )
            sys.exit(EXIT_RECORDS_FAILED)

    @_in_context
    def lease_lost(self, lease_lost_input) -> None:
        if not self.lost and not self._stopping:  # after a requested shutdown, the release is ours
            self._lost()
        self._close()

    @_in_context
    def shard_ended(self, shard_ended_input) -> None:
        # KCL rule: checkpoint at SHARD_END so the child shards can start — after what the sinks
        # hold is durable (the release), never before.
        try:
            self._release(shard_ended_input.checkpointer, self.engine.release)
            self._call_checkpoint(shard_ended_input.checkpointer.checkpoint)
        except LeaseLost:
            pass
        except Exception as exc:  # done without SHARD_END: the child shards would never start
            self._exit_unexpected("checkpointing the shard's end", exc)

    @_in_context
    def shutdown_requested(self, shutdown_requested_input) -> None:
        self._stopping = True
        try:
            self._release(shutdown_requested_input.checkpointer, self.engine.release)
            if self.last_checkpoint is not None:
                self._checkpoint(shutdown_requested_input.checkpointer, self.last_checkpoint)
            log.info(
                "shard %s: shutdown requested; final checkpoint at %s",
                self.shard_id,
                self.last_checkpoint.sequence_number
                if self.last_checkpoint
                else "none (nothing processed)",
            )
        except LeaseLost:
            pass
        except Exception as exc:  # stopping anyway: the shard resumes from its last checkpoint
            log.error("shard %s: shutdown requested; final checkpoint: %r", self.shard_id, exc)
        self._close()

    def _release(self, checkpointer, release: Callable[[], dict[str, Position]]) -> None:
        """Make what the sinks hold durable (``Engine.release`` or, when due, ``tick``) and
        checkpoint the position held back for it; a sink that stays down is retried as a batch is."""
        backoff = 1.0
        while True:
            started = time.perf_counter()
            try:
                with self.metrics.retries(self.engine, shard=self.shard_id):  # shown live
                    positions = release()
                position = positions.get(self.shard_id)
                self._attempt_succeeded()  # also when it moved no position (nothing was due)
                break
            except BatchFailed as exc:
                if isinstance(exc.cause, PERMANENT_ERRORS):
                    self._exit_misconfigured("releasing what the sinks hold", exc)
                # a failed batch of no record, as a failed open: the outage is seen (the failed
                # batches' alert, the heartbeat), as when a batch's attempt fails
                self._failed_attempt(started, exc)
                log.error("shard %s: %s; retrying in %.0fs", self.shard_id, exc, backoff)
                self._wait(
                    backoff, "making what the sinks hold durable; given up, not committed here"
                )
                backoff = min(backoff * 2, self._max_backoff)
        if position is not None:
            self._checkpoint(checkpointer, position)
            # counted as a batch's checkpoint is (squall_checkpoints_total), as the local runner's
            self.metrics.released(self.engine, positions, time.perf_counter() - started)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.close()

    def _checkpoint(self, checkpointer, position: Position) -> None:
        self._call_checkpoint(
            checkpointer.checkpoint, position.sequence_number, position.sub_sequence_number
        )
        self.last_checkpoint = position

    def _call_checkpoint(self, checkpoint, *args) -> None:
        """Checkpoint; a lease that moved to another worker raises ``LeaseLost`` (logged once, at
        INFO); a throttled or unreachable DynamoDB is retried with capped backoff."""
        backoff = 1.0
        while True:
            started = time.perf_counter()
            try:
                checkpoint(*args)
                self._attempt_succeeded()
                return
            except Exception as exc:
                name = _checkpoint_error_name(exc)
                if name in LEASE_LOST_ERRORS:
                    self._lost()
                    raise LeaseLost(self.shard_id) from None
                if name not in RETRIED_CHECKPOINT_ERRORS:
                    raise
                # seen as a failed open or release is: the checkpoint does not move (else only
                # the heartbeat would stop, and ``SquallHung`` call the outage a hang); and as
                # a checkpoint retry, the series that names the lease table's throttling
                self._failed_attempt(started, exc, checkpoint_retry=True)
                log.warning(
                    "shard %s: checkpoint at %s not stored: %s; retrying in %.0fs",
                    self.shard_id,
                    args[0] if args else "SHARD_END",
                    name,
                    backoff,
                )
            self._wait(backoff, checkpoint_retried(args))
            backoff = min(backoff * 2, self._max_backoff)

    def _lost(self, retried: str | None = None) -> None:
        """The lease is another worker's. ``retried``: found before a retry of that (an outage): the
        ERROR lines of the retries end here, so this one is a WARNING (at INFO, the default
        level showed "retrying the batch in 30s" as the shard's last word on this host), and
        the shard no longer retries here (``squall_retrying_since_timestamp_seconds`` back to 0:
        ``SquallRetrying`` is for the new owner's series, not for a process waiting to end)."""
        self.lost = True
        position = self.last_checkpoint.sequence_number if self.last_checkpoint else "none yet"
        if retried is None:
            log.info(
                "shard %s: lease taken over by another worker; it resumes from the last "
                "checkpoint (%s)",
                self.shard_id,
                position,
            )
            return
        log.warning(
            "shard %s: lease taken over by another worker while this one retried %s: the new "
            "owner resumes from the last checkpoint (%s)",
            self.shard_id,
            retried,
            position,
        )
        self._failing = False
        self.metrics.settled(self.shard_id)

    def _record(self, r) -> Record:
        ms = r.timestamp_millis
        arrival = datetime.fromtimestamp(ms / 1000.0, UTC) if ms else None
        return Record(
            r.binary_data,
            RecordMeta(
                self.stream,
                self.shard_id,
                r.sequence_number,
                r.sub_sequence_number or 0,
                r.partition_key or "",
                arrival,
            ),
        )


#: The SHA-256 of the topology file when ``squall kcl`` started (set by it for the daemon).
TOPOLOGY_DIGEST_ENV = "SQUALL_KCL_TOPOLOGY_SHA256"


def _digest(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None  # the load reports it


def _version(path: str) -> tuple[str, str | None]:
    """The folder the path's symlinks lead to (a ConfigMap's ``..data``) and the text's digest."""
    return os.path.realpath(path), _digest(path)


def _unsettled(path: str, quiet: float) -> tuple[int, float]:
    """The file's modification time (ns) and the seconds until it has gone ``quiet`` seconds
    unwritten (0: it has, or it cannot be read).

    A time ahead of this clock's says nothing of the file's age (the writer's clock ahead: an
    NFS server's, another host's; a ``touch -d``): ``quiet`` seconds, the same file after them
    having gone that long unwritten. A time of a whole second may be a coarse file system's
    (HFS+: 1 s, FAT: 2 s, an even second), the write as late as the end of that interval: the
    age is counted from there (measured, counted from its start: a file written 0.9 s into its
    second was waited for 0.1 s, and the cut text of a writer pausing 0.5 s was run)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return 0, 0.0  # the load reports it
    seconds, ns = divmod(mtime, 1_000_000_000)
    coarse = 0 if ns else 2 if seconds % 2 == 0 else 1
    age = time.time() - seconds - ns / 1e9 - coarse
    if age < 0:
        return mtime, quiet
    return mtime, (quiet - age if age < quiet else 0.0)


#: A topology file written this recently (seconds) may be a writer's part-way text: waited for.
TOPOLOGY_QUIET_S = 1.0


def load_topology(
    path: str,
    attempts: int = 5,
    quiet: float = TOPOLOGY_QUIET_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Topology:
    """The topology of one version of the file: a file written in place while a shard process
    read it (an editor, ``cp``, ``kubectl cp``) gave it part of the new text — a topology cut
    short, run if it still parsed — and the warning then named the file as it was after. The
    file is read until its digest is the same before and after the load — and the folder its
    symlinks lead to: a Kubernetes ConfigMap swapped in the meantime (``..data``) may have changed
    only a file the topology names (a schema), read from the other version. A text cut where it
    no longer parses is read again too, its error raised only if the file did not change.

    A writer that pauses part-way (a second write() after a network read, a slow disk) leaves a
    cut text the same before and after a load of a few milliseconds: one written in the last
    ``quiet`` seconds is read again once it has gone that long unwritten, whether it loaded or
    not; one that did not load (maybe mid-truncation: empty, its time not yet updated) whatever
    its time. At most ``attempts`` reads, then an error saying the file kept changing."""
    waited: tuple | None = None  # the file as it was when the last wait began
    for _ in range(attempts):
        before = _version(path)
        try:
            topology, error = load(path, secrets=aws_secrets()), None
        except SquallError as exc:  # maybe cut short where it no longer parses: that text's error
            topology, error = None, exc
        if _version(path) != before:
            log.info("topology file %s changed while it was read: reading it again", path)
            continue
        mtime, wait = _unsettled(path, quiet)
        if error is not None:  # a file being truncated is empty with its old time for a moment
            wait = quiet  # (measured: 7 ms): a text that does not load waits whatever its time
        if wait > 0 and (before, mtime) != waited:  # (the same after a wait: it went unwritten)
            waited = (before, mtime)
            log.info(
                "topology file %s %s, maybe not written to its end: reading it again when it "
                "has gone %g s unwritten",
                path,
                "did not load" if error else f"has a time less than {quiet:g} s old, or ahead",
                quiet,
            )
            sleep(wait)
            continue
        if error is not None:
            raise error
        warn_if_topology_changed(path, before[1])
        return topology
    raise SquallError(
        f"topology file {path} kept changing while it was read: {attempts} reads, each changed "
        f"during the load or in the wait after it (for the file to go {quiet:g} s unwritten)"
    )


def warn_if_topology_changed(path: str, now: str | None = None) -> bool:
    """Each shard process reads the topology file when it starts: one replaced under a running
    worker runs in the shard processes started after (a split's children, a lease taken over)
    while the others keep the earlier version. Say so, once per such process. ``now``: the
    digest of the text loaded (else the file's now)."""
    expected = os.environ.get(TOPOLOGY_DIGEST_ENV)
    if not expected:
        return False
    now = now or _digest(path)
    if now is None or now == expected:
        return False
    log.warning(
        "topology file %s changed since `squall kcl` started: this shard process runs it as it "
        "is now, the shard processes started before run the earlier version — restart the "
        "worker (systemctl restart squall-<name>) to run one version on this host",
        path,
    )
    return True


def watch_daemon(
    interval: float = 0.5, *, exit: Callable[[int], object] = os._exit
) -> threading.Thread:
    """Exit the shard process at once when its daemon is gone (kill -9 of the worker, a JVM that
    crashed), even in the middle of a batch.

    amazon-kclpy ends only when its next read of stdin finds the daemon gone; a process blocked
    in a sink's call (a table locked, a slow database) lived on past the lease's failover and then
    committed its batch — rows, state — after the next owner had taken the shard (measured: a
    worker killed while its COPY waited on a lock; its orphan wrote 292 rows 16 s later, under the
    other worker's lease). ``_daemon_alive`` covers a retry's wait only. The parent's PID is
    compared, not a death signal (``PR_SET_PDEATHSIG`` fires when the Java *thread* that started
    the process ends, which a pool's idle thread does). An open transaction is rolled back by the
    server when the process's connection closes."""
    daemon = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != daemon:
                with contextlib.suppress(Exception):  # stderr's reader may be gone too
                    log.error(
                        "the KCL daemon is gone; exiting at once, the batch in flight not "
                        "committed (the next owner of the lease resumes from the last checkpoint)"
                    )
                exit(EXIT_DAEMON_GONE)
                return

    thread = threading.Thread(target=watch, name="squall-kcl-daemon-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    """Entry point the daemon runs: ``python -m squall.deploy.kcl TOPOLOGY [STREAM]``."""
    from amazon_kclpy import kcl

    from squall.deploy.kcl_lease import LeaseProbe, LeaseTable

    watch_daemon()  # before the topology loads: a start that hangs (a database) dies with it too
    args, lease = LeaseTable.from_args(sys.argv[1:] if argv is None else argv)
    from squall.observability.logs import configure

    level = os.environ.get("SQUALL_LOG_LEVEL", "WARNING").upper()
    # text or SQUALL_LOG_FORMAT=json, on stderr (the daemon logs each line)
    configure(
        level=getattr(logging, level)
        if level in ("DEBUG", "INFO", "WARNING", "ERROR")
        else logging.WARNING
    )
    logging.getLogger("squall.progress").setLevel(logging.INFO)
    redact.install()
    redact.mask_uncaught()  # a traceback the daemon logs: masked as the log lines are
    try:
        topology = load_topology(args[0])  # once per shard process
        check_kcl_safe(topology)
        engine = Engine.for_topology(topology, hold=True)  # the KCL checkpoints when told to
        stream = args[1] if len(args) > 1 else ""
        held = LeaseProbe(lease).held if lease else (lambda shard: True)
        processor = RecordProcessor(engine, stream=stream, lease_held=held)
    except SquallError as exc:
        # One located line in the daemon's log (a traceback there buried it), exit 2 as
        # `squall run` does for a topology or metrics set-up that cannot start.
        print(f"squall kcl: cannot start: {redact.redact_text(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from None
    kcl.KCLProcess(processor).run()


if __name__ == "__main__":
    main()
