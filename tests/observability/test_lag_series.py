"""The lag an operator reads after a reshard: a shard read to its end leaves the gauges.

The polling spout's ``lag()`` names the shards it is reading; after a split the parent is read to
its end and is no longer among them. Its last value (a surge's backlog) stayed in
``squall_millis_behind_latest`` and in the console's lag for as long as the run lasted: ``max()``
over the topology's series — ``SquallLagHigh``, ``SquallStalled`` — read a shard nobody reads.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from squall.observability.metrics import BatchSample, Recorder
from squall.observability.progress import Totals
from squall.observability.prometheus import PrometheusBackend

PARENT, LEFT, RIGHT = "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"


def _lag_series(backend: PrometheusBackend) -> dict[str, float]:
    return {
        s.labels["shard"]: s.value
        for m in backend.registry.collect()
        if m.name == "squall_millis_behind_latest"
        for s in m.samples
    }


def test_a_shard_read_to_its_end_leaves_the_lag_gauge_and_the_console_lag():
    backend, totals = PrometheusBackend(CollectorRegistry()), Totals()
    # The parent, ten minutes behind during a surge; then it is split and read to its end.
    backend.record(BatchSample("t", 1, 500, 0.1, "ok", millis_behind={PARENT: 600_000}))
    totals.record(BatchSample("t", 1, 500, 0.1, "ok", millis_behind={PARENT: 600_000}))
    children = {LEFT: 0, RIGHT: 1_200}
    backend.record(BatchSample("t", 2, 10, 0.1, "ok", millis_behind=children))
    totals.record(BatchSample("t", 2, 10, 0.1, "ok", millis_behind=children))
    assert _lag_series(backend) == children  # max() is 1.2 s, not 10 min
    assert totals.lag_ms == 1_200
    # An idle poll (no batch) says the same.
    rec = Recorder("t", [backend, totals])
    rec.lag({LEFT: 0, RIGHT: 0})
    assert _lag_series(backend) == {LEFT: 0, RIGHT: 0} and totals.lag_ms == 0
    # A batch of a source that says nothing of its lag keeps what is there.
    rec.lag({})
    backend.record(BatchSample("t", 3, 0, 0.1, "ok"))
    assert _lag_series(backend) == {LEFT: 0, RIGHT: 0} and totals.lag_ms == 0


def test_the_otel_lag_of_a_shard_read_to_its_end_goes_to_zero():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from squall.observability.otel import OtelBackend

    reader = InMemoryMetricReader()
    backend = OtelBackend(MeterProvider(metric_readers=[reader]))
    backend.record(BatchSample("t", 1, 500, 0.1, "ok", millis_behind={PARENT: 600_000}))
    backend.record(BatchSample("t", 2, 10, 0.1, "ok", millis_behind={LEFT: 0, RIGHT: 1_200}))
    lag = {
        p.attributes["shard"]: p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "squall.millis_behind_latest"
        for p in m.data.data_points
    }
    assert max(lag.values()) == 1_200 and lag[PARENT] == 0
