"""What squall measures, under one set of names for every runner, and the per-batch recorder.

The engine keeps cumulative counters per component (``engine.stats``, ``engine.spout_stats``).
After each batch a runner hands the engine, the batch's records and the ``BatchResult`` (or the
``BatchFailed``) to a ``Recorder``; it takes the differences of the counters since the previous
batch, the batch's outcomes, its duration and its lag, and gives one ``BatchSample`` to each
backend (Prometheus, CloudWatch EMF, OpenTelemetry, the console). Nothing here runs per record.

``METRICS`` is the one list of names: each backend spells them its own way (Prometheus:
``squall_…`` with the unit in the name; CloudWatch: a CamelCase name with a unit and bounded
dimensions ``Topology`` and ``Component`` — never the shard or the record). Only
``millis_behind`` has a shard label: a Kinesis shard's; an SQS message is a "shard" of its own
(and ``heartbeat``: a KCL shard process's, "" for a run).

Size (~675 lines): the ``METRICS`` table is about 170 lines of literals; the recorder is the rest.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from squall.cache import LRUCache
from squall.observability.logs import batch_positions, log_context
from squall.redact import redact_text
from squall.topology.outcomes import ComponentStats

log = logging.getLogger("squall.metrics")

#: Per-component counter fields of ``ComponentStats`` and the ``outcome`` label each becomes.
COMPONENT_OUTCOMES = (
    ("received", "in"),
    ("emitted", "out"),
    ("dead_lettered", "dead_lettered"),
    ("dropped", "filtered"),
    ("failed", "failed"),
)
#: Outcomes of a user record at topology level (``squall.topology.executor.Outcome`` values).
RECORD_OUTCOMES = ("committed", "dead_lettered", "filtered", "failed", "held")
#: ``BatchSample.status`` values.
BATCH_STATUSES = ("ok", "records_failed", "failed")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its Prometheus name, its CloudWatch name and unit, its labels, what it means."""

    key: str
    prometheus: str
    cloudwatch: str | None  # None: not sent to CloudWatch (Prometheus only)
    unit: str  # CloudWatch unit
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    #: Still exported, for one release, beside the metric that replaces it; nothing squall
    #: generates (dashboards, alert rules) reads it.
    deprecated: bool = False


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "records",
        "squall_records_total",
        "Records",
        "Count",
        "counter",
        ("topology", "component", "outcome"),
        "Records per component: in, out (emitted or written), dead_lettered, filtered, failed.",
    ),
    MetricSpec(
        "outcomes",
        "squall_topology_records_total",
        "Records",
        "Count",
        "counter",
        ("topology", "outcome"),
        "User records (after KPL de-aggregation) by final outcome: committed, dead_lettered, filtered, "
        "failed, held (after a failed record of its shard: not committed, it comes again).",
    ),
    MetricSpec(
        "retries",
        "squall_retries_total",
        "Retries",
        "Count",
        "counter",
        ("topology", "component"),
        "Retries of a component call after a transient (dependency) error, counted as each "
        "is decided (before its backoff), not when the batch ends.",
    ),
    MetricSpec(
        "checkpoint_retries",
        "squall_checkpoint_retries_total",
        "CheckpointRetries",
        "Count",
        "counter",
        ("topology",),
        "Retries of a checkpoint save after a transient error of the store (throttled, down).",
    ),
    MetricSpec(
        "retry_reasons",
        "squall_retry_reasons_total",
        None,  # CloudWatch: Retries per component; the reason is in the WARNING log line
        "Count",
        "counter",
        ("topology", "component", "reason"),
        "Retries as squall_retries_total (and the checkpoint's, component checkpoint), by the "
        "class of the error retried (its cause's: OperationalError, ConnectionError, "
        "TransientError), counted as each is decided; under squall run and the KCL.",
    ),
    MetricSpec(
        "retrying_since",
        "squall_retrying_since_timestamp_seconds",
        None,  # Lambda: EMF is printed when the invocation ends, the retrying is over by then
        "Seconds",
        "gauge",
        ("topology", "shard"),
        "UNIX time of the first retry (or failed attempt) of the batch being retried; 0 when "
        "none is. Set while the batch retries; back to 0 when a batch ends ok or records_failed.",
    ),
    MetricSpec(
        "last_checkpoint",
        "squall_last_checkpoint_timestamp_seconds",
        None,  # Lambda: the function's IteratorAge
        "Seconds",
        "gauge",
        ("topology", "shard"),
        "UNIX time of the runner's last batch (or release) after which a checkpoint moved; per "
        "shard under the KCL, one series per run under squall run.",
    ),
    MetricSpec(
        "batches",
        "squall_batches_total",
        "Batches",
        "Count",
        "counter",
        ("topology", "status"),
        "Batches by status: ok, records_failed (some records failed with no dead letter), "
        "failed (a dependency stayed down; nothing checkpointed).",
    ),
    MetricSpec(
        "checkpoints",
        "squall_checkpoints_total",
        "Checkpoints",
        "Count",
        "counter",
        ("topology",),
        "Batches after which a checkpoint moved, and releases of rolling sinks between batches "
        "(the source idle) or at the end of a run that moved it.",
    ),
    MetricSpec(
        "batch_seconds",
        "squall_batch_duration_seconds",
        "BatchDuration",
        "Milliseconds",
        "histogram",
        ("topology",),
        "Wall time of one batch through the engine, commit included.",
    ),
    MetricSpec(
        "component_seconds",
        "squall_component_duration_seconds",
        "ComponentDuration",
        "Milliseconds",
        "histogram",
        ("topology", "component"),
        "Time one component spent on one batch.",
    ),
    MetricSpec(
        "sink_rows",
        "squall_sink_rows_total",
        "SinkRows",
        "Count",
        "counter",
        ("topology", "component", "result"),
        "Rows a sink wrote vs found already present (a replay adds 0 written); needs the sink to count.",
    ),
    MetricSpec(
        "millis_behind",
        "squall_millis_behind_latest",
        "MillisBehindLatest",
        "Milliseconds",
        "gauge",
        ("topology", "shard"),
        "How far the last read is behind the tip of the shard (GetRecords, KCL).",
    ),
    MetricSpec(
        "iterator_age",
        "squall_iterator_age_seconds",  # Prometheus' base unit; CloudWatch's is Lambda's (ms)
        "IteratorAge",
        "Milliseconds",
        "gauge",
        ("topology",),
        "Now minus the arrival time of the batch's last record (of its shard farthest behind).",
    ),
    MetricSpec(
        "iterator_age_ms",
        "squall_iterator_age_milliseconds",
        None,  # CloudWatch's IteratorAge is in milliseconds already
        "Milliseconds",
        "gauge",
        ("topology",),
        "Deprecated (removed in the next release): squall_iterator_age_seconds in milliseconds.",
        deprecated=True,
    ),
    MetricSpec(
        "cache",
        "squall_cache_lookups_total",
        "CacheLookups",
        "Count",
        "counter",
        ("topology", "component", "result"),
        "Enrichment cache lookups: hit or miss.",
    ),
    MetricSpec(
        "deadline_stops",
        "squall_deadline_stops_total",
        "DeadlineStops",
        "Count",
        "counter",
        ("topology",),
        "Lambda invocations that stopped starting slices before the function's timeout; their "
        "records not started were answered as failures, for Lambda to retry.",
    ),
    MetricSpec(
        "rss",
        "squall_process_resident_memory_bytes",
        "MaxRss",
        "Bytes",
        "gauge",
        ("topology",),
        "Resident memory of the process (peak, where only the peak is known).",
    ),
    MetricSpec(
        "heartbeat",
        "squall_last_progress_timestamp_seconds",
        None,  # Lambda: the function's own IteratorAge grows while an invocation is stuck
        "Seconds",
        "gauge",
        ("topology", "shard"),
        "UNIX time of the runner's last batch end (a failed one too) or poll that found no "
        "record (an idle stream is not a stuck one); per shard under the KCL. It stops while a "
        "call never returns (a sink, a deadlock).",
    ),
    MetricSpec(
        "started",
        "squall_start_time_seconds",
        None,  # Lambda: its function's Errors and the invocations' own lines
        "Seconds",
        "gauge",
        ("topology",),
        "UNIX time the runner process started: `squall run`'s, under the KCL the host's "
        "`squall kcl`. A new value is a restart.",
    ),
)
SPECS = {m.key: m for m in METRICS}


@dataclass(slots=True)
class ComponentDelta(ComponentStats):
    """What one component did during one batch: the engine's counters, and its caches'."""

    cache_hits: int = 0
    cache_misses: int = 0

    def outcome_counts(self) -> Iterable[tuple[str, int]]:
        for attr, label in COMPONENT_OUTCOMES:
            yield label, getattr(self, attr)


@dataclass
class BatchSample:
    """One batch, as every backend sees it."""

    topology: str
    batch_id: int
    records: int  # Kinesis records handed to the engine (before KPL de-aggregation)
    seconds: float
    status: str  # ok | records_failed | failed
    outcomes: dict[str, int] = field(default_factory=dict)
    components: list[ComponentDelta] = field(default_factory=list)
    checkpointed: bool = False
    shard: str | None = None
    #: Which records the batch held: its shards and their sequence ranges (``batch_positions``).
    positions: dict[str, Any] = field(default_factory=dict)
    millis_behind: dict[str, int] = field(default_factory=dict)
    iterator_age_ms: dict[str, float] = field(default_factory=dict)
    #: UNIX time the batch ended (the recorder's clock): the heartbeat.
    ended: float = field(default_factory=time.time)
    first_failed: dict[str, str] | None = (
        None  # sequence, shard, component, reason of the first failed record
    )
    error: str | None = None  # the BatchFailed message
    rss_bytes: int = 0
    #: Checkpoint saves retried since the last sample (the engine's, after the sinks; when the
    #: checkpoint is written in the sinks' transaction, a retry counts for the transaction's sink).
    checkpoint_retries: int = 0
    #: Not a batch: rolling sinks releasing what they held outside one (the source idle, the run
    #: ending), which moved the checkpoint (``Recorder.released``). Backends count its
    #: checkpoint and its components' rows, retries and time — not a batch, nor its duration.
    release: bool = False

    def log_fields(self) -> dict[str, Any]:
        """The fields of the one structured log line per batch/invocation."""
        out: dict[str, Any] = {
            "batch_id": self.batch_id,
            "records": self.records,
            "status": self.status,
            "duration_ms": round(self.seconds * 1000, 1),
            **self.outcomes,
        }
        out.update(self.positions)
        if self.millis_behind:
            out["millis_behind_latest"] = max(self.millis_behind.values())
        if self.iterator_age_ms:
            out["iterator_age_ms"] = round(max(self.iterator_age_ms.values()))
        if self.first_failed:
            out["first_failed"] = self.first_failed
        if self.error:
            out["error"] = self.error
        return out


class Backend(Protocol):
    def record(self, sample: BatchSample) -> None: ...


def rss_bytes() -> int:
    """Current resident memory from /proc (Linux); elsewhere the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _counts_lookups(obj: Any) -> bool:
    return isinstance(obj, LRUCache) or (
        isinstance(getattr(obj, "hits", None), int)
        and isinstance(getattr(obj, "misses", None), int)
    )


def _caches(component: Any) -> list[Any]:
    """The caches a component holds, directly or in a store it holds: anything with ``hits`` and ``misses``."""
    found: list[Any] = []
    for value in getattr(component, "__dict__", {}).values():
        if _counts_lookups(value):
            found.append(value)
        elif hasattr(value, "__dict__"):
            found += [v for v in vars(value).values() if _counts_lookups(v)]
    return found


def retry_reason(error: BaseException) -> str:
    """The class of what a retry retried: the cause a component's ``TransientError`` wraps (the
    driver's ``OperationalError``), else the error's own; a bounded label."""
    cause = error.__cause__ if error.__cause__ is not None else error
    return type(cause).__name__


class BatchWatch:
    """Where the runner puts the batch's result inside ``Recorder.batch``."""

    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result: Any = None


class Recorder:
    """Turns the engine's cumulative counters into per-batch samples for the backends."""

    def __init__(
        self,
        topology: str,
        backends: Sequence[Backend] = (),
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.topology = topology
        self.backends = list(backends)
        self.clock = clock
        self.batches = 0
        self._last: dict[str, tuple] = {}
        self._checkpoint_retries = 0  # the engine's count at the last sample
        self._caches: dict[str, list[Any]] | None = None
        self._components: dict[str, Any] = {}
        self.last: BatchSample | None = None
        self._broken: set[int] = set()
        self._shard: str | None = None  # the shard of the batch in progress
        self._retried = False  # a retry was told inside ``retries``

    @contextmanager
    def batch(
        self,
        engine: Any,
        records: Sequence[Any],
        *,
        shard: str | None = None,
        lag: Callable[[], dict[str, int] | None] | None = None,
        checkpoint_later: bool = False,
    ) -> Iterator[BatchWatch]:
        """Time the block, give its log lines the batch context, observe the batch when it ends.

        Set ``watch.result`` inside the block; an exception leaving it is observed as a failed batch.
        ``checkpoint_later``: the runner stores the batch's checkpoint after it (the KCL daemon,
        whose lease table may throttle or refuse it) and counts it then (``checkpoint_stored``).
        """
        watch = BatchWatch()
        fields: dict[str, Any] = {
            "topology": self.topology,
            "batch_id": self.batches + 1,
            "shard": shard,
        }
        positions = batch_positions(records)
        fields.update(positions)
        started = time.perf_counter()
        self._shard = shard
        told = getattr(engine, "on_retry", None)
        if hasattr(engine, "on_retry"):  # the engine tells each retry as it happens
            engine.on_retry = self.retry
        with log_context(**fields):
            try:
                yield watch
            except BaseException as exc:
                if hasattr(engine, "on_retry"):  # also a Ctrl-C, a SystemExit in the backoff
                    engine.on_retry = told
                if not isinstance(exc, Exception):
                    raise
                self.observe(
                    engine,
                    records,
                    None,
                    time.perf_counter() - started,
                    shard=shard,
                    millis_behind=lag() if lag else None,
                    error=exc,
                    positions=positions,
                )
                raise
            if hasattr(engine, "on_retry"):
                engine.on_retry = told
            self.observe(
                engine,
                records,
                watch.result,
                time.perf_counter() - started,
                shard=shard,
                millis_behind=lag() if lag else None,
                checkpoint_later=checkpoint_later,
                positions=positions,
            )

    @contextmanager
    def retries(self, engine: Any, *, shard: str | None = None) -> Iterator[None]:
        """Engine work outside a batch that may retry a dependency (``Engine.tick``, ``release``,
        ``save_positions``: a holding sink's flush, the checkpoint's save): its retries are told
        as a batch's are (``retry``), so a release retrying a warehouse that is down shows while
        it retries. Its sample (``released``, or the runner's failed attempt) or the next batch's
        carries them again, as a batch's does. When the block ends without an exception after a
        retry, the retrying is over: the backends that keep it (``record_settled``) say so now
        (a tick that released nothing sends no sample; the gauge would stay set for ever)."""
        if not hasattr(engine, "on_retry"):
            yield
            return
        told, self._shard, self._retried = engine.on_retry, shard, False
        engine.on_retry = self.retry
        try:
            yield
        finally:
            engine.on_retry = told
        if self._retried:
            self._each("record_settled", self.topology, shard)

    def settled(self, shard: str | None = None) -> None:
        """A runner's own attempt outside a batch (the KCL's open or checkpoint: ``observe``'d as
        a failed batch of no record, the shard retrying since) succeeded after failing: the
        backends that keep the retrying (``record_settled``) say it is over — on an idle stream
        no batch's end would for hours."""
        self._each("record_settled", self.topology, shard)

    def retry(self, component: str, kind: str, error: BaseException) -> None:
        """The engine decided a retry inside the batch (``Engine.on_retry``): the backends that
        count them live (``record_retry``) count it now, and know since when the batch retries —
        a dependency down shows while the batch waits for it, not when it gives up. The batch's
        sample later carries the same retries; such a backend leaves out what it counted here."""
        self._retried = True
        self._each(
            "record_retry",
            self.topology,
            self._shard,
            component,
            kind,
            self.clock(),
            retry_reason(error),
        )

    def lag(self, millis_behind: dict[str, int]) -> None:
        """A poll that brought no record still says how far behind its shard is (the KCL's idle
        ``process_records``): the backends that keep a lag (``record_lag``) take it; no batch."""
        if millis_behind:
            self._each("record_lag", self.topology, millis_behind)

    def idle(
        self, millis_behind: dict[str, int] | None = None, *, shard: str | None = None
    ) -> None:
        """The runner is alive outside a batch: a poll found no record (its ``millis_behind``, if
        it says), or it starts (a run, a KCL shard). The backends that keep a heartbeat
        (``record_idle``) take the time: an idle stream is not a stuck one."""
        self._each("record_idle", self.topology, shard, self.clock())
        self.lag(millis_behind or {})

    @property
    def heartbeats(self) -> bool:
        """Whether a backend keeps a heartbeat: the runner then reports its idle polls."""
        return any(hasattr(b, "record_idle") for b in self.backends)

    def _each(self, method: str, *args: Any) -> None:
        """Call ``method`` of every backend that has one; a failing backend is logged once."""
        for backend in self.backends:
            call = getattr(backend, method, None)
            if call is None:
                continue
            try:
                call(*args)
            except Exception:  # metrics never fail the runner
                if id(backend) not in self._broken:
                    self._broken.add(id(backend))
                    log.exception(
                        "metrics backend %s failed; the batch is unaffected",
                        type(backend).__name__,
                    )

    def observe(
        self,
        engine: Any,
        records: Sequence[Any],
        result: Any | None,
        seconds: float,
        *,
        shard: str | None = None,
        millis_behind: dict[str, int] | None = None,
        error: BaseException | None = None,
        checkpoint_retries: int = 0,
        checkpoint_later: bool = False,
        positions: dict[str, Any] | None = None,
    ) -> BatchSample:
        """Record one batch: ``result`` is the ``BatchResult``, or None with ``error`` when it raised.
        ``checkpoint_retries``: checkpoint saves the runner retried, not the engine's store (the
        KCL daemon's answer ``ThrottlingException``); ``checkpoint_later``: see ``batch``;
        ``positions``: ``batch_positions(records)`` when the caller has them."""
        self.batches += 1
        sample = BatchSample(
            self.topology,
            self.batches,
            len(records),
            seconds,
            "ok",
            shard=shard,
            millis_behind=dict(millis_behind or {}),
            rss_bytes=rss_bytes(),
            ended=self.clock(),
        )
        if records:
            sample.positions = batch_positions(records) if positions is None else positions
            sample.iterator_age_ms = self._iterator_age(records)
        if result is None:
            sample.status = "failed"
            sample.error = redact_text(str(error)) if error is not None else "batch failed"
        else:
            sample.outcomes = {o.value: n for o, n in result.counts().items()}
            sample.checkpointed = bool(result.checkpoint) and not checkpoint_later
            if not result.ok:
                sample.status = "records_failed"
                first = result.failed[0]
                sample.first_failed = {
                    "sequence": first.position.sequence_number,
                    "shard": first.shard_id,
                    "component": first.component,
                    "reason": redact_text(first.reason),
                }
        self._finish(engine, sample)
        sample.checkpoint_retries += checkpoint_retries
        self.last = sample
        self._send(sample)
        return sample

    def checkpoint_stored(self) -> None:
        """The runner stored a batch's checkpoint after the batch (``batch(checkpoint_later=True)``):
        the backends that count checkpoints (``record_checkpoint``) count it now."""
        self._each("record_checkpoint", self.topology)

    def released(self, engine: Any, positions: dict[str, Any], seconds: float) -> BatchSample:
        """Record a release of what rolling sinks held done outside a batch (``Engine.tick`` on
        an idle source, ``Engine.release`` at the end of a run): the checkpoint it saved counts
        in ``squall_checkpoints_total`` as a batch's does, and the sinks' rows, retries and time
        and the checkpoint's retries count now, not with the next batch (hours later on an
        idle stream). Not a batch: ``squall_batches_total`` and the batch duration leave it out."""
        sample = BatchSample(
            self.topology,
            self.batches,
            0,
            seconds,
            "ok",
            checkpointed=bool(positions),
            rss_bytes=rss_bytes(),
            release=True,
            ended=self.clock(),
        )
        self._finish(engine, sample)
        self._send(sample)
        return sample

    def _finish(self, engine: Any, sample: BatchSample) -> None:
        """The components' and the checkpoint's counts since the last sample."""
        sample.components = self._deltas(engine)
        retries = engine.checkpoint_stats.retries
        sample.checkpoint_retries = retries - self._checkpoint_retries
        self._checkpoint_retries = retries

    def _send(self, sample: BatchSample) -> None:
        with log_context(topology=self.topology, batch_id=sample.batch_id):
            for backend in self.backends:
                try:
                    backend.record(sample)
                except Exception:  # metrics never fail a batch (nor hide its outcome)
                    if id(backend) not in self._broken:
                        self._broken.add(id(backend))
                        log.exception(
                            "metrics backend %s failed; the batch is unaffected",
                            type(backend).__name__,
                        )

    def _iterator_age(self, records: Sequence[Any]) -> dict[str, float]:
        now = self.clock()
        last: dict[str, Any] = {}
        for r in records:
            if r.meta.arrival_time is not None:
                last[r.meta.shard_id] = r.meta.arrival_time
        return {shard: max(0.0, (now - t.timestamp()) * 1000.0) for shard, t in last.items()}

    def _deltas(self, engine: Any) -> list[ComponentDelta]:
        stats = [engine.spout_stats, *engine.stats]
        if self._caches is None:
            self._components = dict(
                zip((s.id for s in engine.stats), engine.components, strict=True)
            )
            self._caches = {sid: _caches(c) for sid, c in self._components.items()}
        out = []
        for s in stats:
            caches = self._caches.get(s.id, [])
            comp = self._components.get(s.id)
            # Rows a sink added vs found stored: the sink counts them (warehouse), else the engine's stats might.
            written = getattr(comp, "rows_written", getattr(s, "written", None))
            present = getattr(comp, "rows_present", getattr(s, "present", None))
            now = (
                s.received,
                s.emitted,
                s.dead_lettered,
                s.dropped,
                s.failed,
                s.retries,
                s.seconds,
                written,
                present,
                sum(c.hits for c in caches),
                sum(c.misses for c in caches),
            )
            before = self._last.get(s.id)
            self._last[s.id] = now
            if before is None:
                before = (
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0.0,
                    0 if now[7] is not None else None,
                    0 if now[8] is not None else None,
                    0,
                    0,
                )
            # A sink's row counts start at its first write (None before): from 0, not unknown.
            d = [None if a is None else a - (b or 0) for a, b in zip(now, before, strict=True)]
            out.append(ComponentDelta(s.id, s.kind, s.type, *d))  # type: ignore[arg-type]
        return out
