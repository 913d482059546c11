"""The same metrics through OpenTelemetry, and a span per batch (optional extra: ``squall[otel]``).

Runners add this backend when ``SQUALL_OTEL=1``; it uses the global meter and tracer providers,
so configure the SDK and its exporters the usual way (``opentelemetry-instrument`` or your own
setup code; OTLP to a collector). Metric names are the Prometheus ones without the ``_total``
suffix and with dots (``squall.records``), per the OpenTelemetry naming rules; attributes are the
Prometheus labels.

Each batch is a span ``squall.batch`` with one child span per component that worked on it. The
engine reports only how long each component took in the batch, not when it started, so the
child spans are laid end to end in plan order from the batch's start: their durations are
exact, their start times are a reconstruction.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, trace

from squall.observability.metrics import SPECS, BatchSample

#: The instruments: attribute of the backend, metric (``SPECS`` key), instrument kind, unit.
_INSTRUMENTS = (
    ("records", "records", "counter", "{record}"),
    ("outcomes", "outcomes", "counter", "{record}"),
    ("batches", "batches", "counter", "{batch}"),
    ("retries", "retries", "counter", "{retry}"),
    ("checkpoint_retries", "checkpoint_retries", "counter", "{retry}"),
    ("checkpoints", "checkpoints", "counter", "{checkpoint}"),
    ("batch_seconds", "batch_seconds", "histogram", "s"),
    ("component_seconds", "component_seconds", "histogram", "s"),
    ("lag", "millis_behind", "gauge", "ms"),
    ("age", "iterator_age", "gauge", "s"),
    ("age_ms", "iterator_age_ms", "gauge", "ms"),  # deprecated: the same in milliseconds
)


def otel_name(key: str) -> str:
    return SPECS[key].prometheus.removesuffix("_total").replace("_", ".", 1)


class OtelBackend:
    """Counters, histograms and gauges through an OTel meter; a span tree per batch through a tracer."""

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None):
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("squall")
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("squall")
        for attr, key, kind, unit in _INSTRUMENTS:
            create = getattr(meter, f"create_{kind}")
            setattr(self, attr, create(otel_name(key), unit=unit, description=SPECS[key].help))
        self._shards: dict[str, set[str]] = {}  # per topology: the shards of the last lag

    def record(self, s: BatchSample) -> None:
        t = {"topology": s.topology}
        if not s.release:  # a release between batches is not a batch (nor a batch's span)
            self.batches.add(1, {**t, "status": s.status})
            self.batch_seconds.record(s.seconds, t)
        if s.checkpointed:
            self.checkpoints.add(1, t)
        if s.checkpoint_retries:
            self.checkpoint_retries.add(s.checkpoint_retries, t)
        for outcome, n in s.outcomes.items():
            if n:
                self.outcomes.add(n, {**t, "outcome": outcome})
        for c in s.components:
            for outcome, n in c.outcome_counts():
                if n:
                    self.records.add(n, {**t, "component": c.id, "outcome": outcome})
            if c.retries:
                self.retries.add(c.retries, {**t, "component": c.id})
            if c.received:
                self.component_seconds.record(c.seconds, {**t, "component": c.id})
        self.record_lag(s.topology, s.millis_behind)
        if s.iterator_age_ms:
            age_ms = max(s.iterator_age_ms.values())
            self.age.set(age_ms / 1000, t)
            self.age_ms.set(age_ms, t)
        if not s.release:
            self._spans(s)

    def record_checkpoint(self, topology: str) -> None:
        """A batch's checkpoint the runner stored after the batch (the KCL daemon's answer)."""
        self.checkpoints.add(1, {"topology": topology})

    def record_lag(self, topology: str, millis_behind: dict[str, int]) -> None:
        """``millis_behind`` is every shard being read: one no longer in it (read to its end, the
        parent of a split) is set to 0 once — a gauge's attributes cannot be removed, and its
        last value would hold the topology's maximum up for the rest of the run."""
        if not millis_behind:
            return
        known = self._shards.setdefault(topology, set())
        for shard in known - millis_behind.keys():
            self.lag.set(0, {"topology": topology, "shard": shard})
        known.clear()
        known.update(millis_behind)
        for shard, ms in millis_behind.items():
            self.lag.set(ms, {"topology": topology, "shard": shard})

    def _spans(self, s: BatchSample) -> None:
        end = time.time_ns()
        start = end - int(s.seconds * 1e9)
        attrs: dict[str, Any] = {
            "squall.topology": s.topology,
            "squall.batch_id": s.batch_id,
            "squall.records": s.records,
            "squall.status": s.status,
        }
        if s.shard:
            attrs["squall.shard"] = s.shard
        # The batch's log fields (``batch_positions``): one shard's range, else per shard.
        p = s.positions
        if "sequence_first" in p:
            attrs["squall.shard"] = p["shard"]
            attrs["squall.sequence_first"], attrs["squall.sequence_last"] = (
                p["sequence_first"],
                p["sequence_last"],
            )
        elif p.get("shards"):
            attrs["squall.shards"] = [
                f"{x['shard']}:{x['sequence_first']}-{x['sequence_last']}" for x in p["shards"]
            ]
            if p.get("shards_more"):  # the shards past the listed ones, counted as in the log
                attrs["squall.shards_more"] = p["shards_more"]
        batch = self.tracer.start_span("squall.batch", start_time=start, attributes=attrs)
        ctx = trace.set_span_in_context(batch)
        at = start
        for c in s.components:
            if not c.received:
                continue
            dur = int(c.seconds * 1e9)
            child = self.tracer.start_span(
                f"squall.{c.kind} {c.id}",
                context=ctx,
                start_time=at,
                attributes={
                    "squall.component": c.id,
                    "squall.component_type": c.type,
                    "squall.records_in": c.received,
                    "squall.records_out": c.emitted,
                    "squall.dead_lettered": c.dead_lettered,
                },
            )
            at = min(at + dur, end)
            child.end(end_time=at)
        if s.status != "ok":
            batch.set_status(trace.Status(trace.StatusCode.ERROR, s.error or s.status))
        batch.end(end_time=end)
