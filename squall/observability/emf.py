"""CloudWatch metrics from Lambda: Embedded Metric Format lines on stdout (Powertools' Metrics).

Per invocation the consumer prints one EMF document for the topology (dimensions ``service``
and ``Topology``) and one per component that saw records (``service``, ``Topology``,
``Component``); CloudWatch Logs turns them into metrics with no API call from the function. The
first invocation of a container also prints Powertools' ``ColdStart`` metric. Dimensions are
bounded by the topology (never a shard, a record or a request id). Set
``POWERTOOLS_METRICS_NAMESPACE`` to change the namespace (default ``squall``), and
``POWERTOOLS_METRICS_DISABLED=true`` to print none.

Powertools (``EphemeralMetrics``: per-instance state, not the shared class-level one) validates
names, units and the 100-metrics/30-dimensions limits of the EMF specification, which is why it
is used instead of hand-written JSON.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics

from squall.observability.metrics import SPECS, BatchSample

NAMESPACE = "squall"


def _camel(label: str) -> str:
    return "".join(p.capitalize() for p in label.split("_"))


def cloudwatch_name(key: str, label: str | None = None) -> str:
    """The CloudWatch metric name of a spec, for one value of its outcome/status/result label."""
    base = SPECS[key].cloudwatch
    return base + _camel(label) if label else base


class EmfBackend:
    """Adds each batch's figures to EMF documents; ``flush`` prints them (once per invocation)."""

    def __init__(self, service: str | None = None, namespace: str | None = None):
        self.namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
        self.service = service
        self._cold = True
        self._pending: list[BatchSample] = []
        self.deadline_stops = 0  # invocations stopped before their deadline since the last flush

    def record(self, s: BatchSample) -> None:
        self._pending.append(s)

    def _metrics(self, **dimensions: str) -> EphemeralMetrics:
        m = EphemeralMetrics(namespace=self.namespace, service=self.service)
        for name, value in dimensions.items():
            m.add_dimension(name=name, value=value)
        return m

    def flush(self, context: Any = None) -> None:
        """Print the documents of the batches recorded since the last flush (and ColdStart, once)."""
        # ColdStart is dimensioned by the context's function name: a context of the caller's own
        # (a test's, with only get_remaining_time_in_millis) has none, and Powertools raised on
        # it before any document was printed, at every flush (the cold flag was never cleared).
        if self._cold and isinstance(getattr(context, "function_name", None), str):
            self._metrics().add_cold_start_metric(context)
        self._cold = False
        samples, self._pending = self._pending, []
        stops, self.deadline_stops = self.deadline_stops, 0
        # A stop may follow messages that ran no batch (S3 notifications of objects outside the
        # spout's scope): it is this invocation's, not counted with the next one's batches.
        if not samples and not (stops and self.service):
            return
        topology = samples[0].topology if samples else self.service
        top = self._metrics(Topology=topology)
        per_component: dict[str, EphemeralMetrics] = {}
        for s in samples:
            if not s.release:  # a release between batches is not a batch
                top.add_metric(name=cloudwatch_name("batches", s.status), unit="Count", value=1)
                top.add_metric(
                    name=cloudwatch_name("batch_seconds"),
                    unit="Milliseconds",
                    value=s.seconds * 1000,
                )
            for outcome, n in s.outcomes.items():
                top.add_metric(name=cloudwatch_name("outcomes", outcome), unit="Count", value=n)
            if s.checkpoint_retries:
                top.add_metric(
                    name=cloudwatch_name("checkpoint_retries"),
                    unit="Count",
                    value=s.checkpoint_retries,
                )
            if s.iterator_age_ms:
                top.add_metric(
                    name=cloudwatch_name("iterator_age"),
                    unit="Milliseconds",
                    value=max(s.iterator_age_ms.values()),
                )
            if s.millis_behind:
                top.add_metric(
                    name=cloudwatch_name("millis_behind"),
                    unit="Milliseconds",
                    value=max(s.millis_behind.values()),
                )
            for c in s.components:
                if not (c.received or c.retries or c.failed):
                    continue
                m = per_component.get(c.id)
                if m is None:
                    m = per_component[c.id] = self._metrics(Topology=topology, Component=c.id)
                for outcome, n in c.outcome_counts():
                    m.add_metric(name=cloudwatch_name("records", outcome), unit="Count", value=n)
                m.add_metric(
                    name=cloudwatch_name("component_seconds"),
                    unit="Milliseconds",
                    value=c.seconds * 1000,
                )
                if c.retries:
                    m.add_metric(name=cloudwatch_name("retries"), unit="Count", value=c.retries)
                if c.written is not None:
                    m.add_metric(
                        name=cloudwatch_name("sink_rows", "written"), unit="Count", value=c.written
                    )
                if c.present is not None:
                    m.add_metric(
                        name=cloudwatch_name("sink_rows", "present"), unit="Count", value=c.present
                    )
                if c.cache_hits or c.cache_misses:
                    m.add_metric(
                        name=cloudwatch_name("cache", "hit"), unit="Count", value=c.cache_hits
                    )
                    m.add_metric(
                        name=cloudwatch_name("cache", "miss"), unit="Count", value=c.cache_misses
                    )
        if stops:
            top.add_metric(name=cloudwatch_name("deadline_stops"), unit="Count", value=stops)
        if samples:
            top.add_metric(name=cloudwatch_name("rss"), unit="Bytes", value=samples[-1].rss_bytes)
        top.flush_metrics()
        for m in per_component.values():
            m.flush_metrics()
