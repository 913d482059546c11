"""The OpenTelemetry backend: the same counts as the other backends, and a span tree per batch."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from squall.observability.metrics import Recorder
from squall.observability.otel import OtelBackend
from tests.observability.test_metrics import engine_for, records


def test_otel_counts_records_and_traces_each_batch_with_a_span_per_component(tmp_path: Path):
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder(
        "metered", [OtelBackend(MeterProvider(metric_readers=[reader]), tracer_provider)]
    )
    engine = engine_for(tmp_path, "otel")
    batch = records([{"n": 1}, b"not json", {"drop": True}])
    with rec.batch(engine, batch, shard="shardId-000000000000") as watch:
        watch.result = engine.process(batch)

    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    points[(m.name, tuple(sorted(p.attributes.items())))] = (
                        getattr(p, "value", None) or p.count
                    )
    assert (
        points[("squall.topology_records", (("outcome", "committed"), ("topology", "metered")))]
        == 1
    )
    assert (
        points[("squall.topology_records", (("outcome", "dead_lettered"), ("topology", "metered")))]
        == 1
    )
    assert (
        points[("squall.topology_records", (("outcome", "filtered"), ("topology", "metered")))] == 1
    )
    assert (
        points[
            (
                "squall.records",
                (("component", "decode"), ("outcome", "in"), ("topology", "metered")),
            )
        ]
        == 3
    )
    assert points[("squall.batch_duration_seconds", (("topology", "metered"),))] == 1

    spans = exporter.get_finished_spans()
    [batch_span] = [s for s in spans if s.name == "squall.batch"]
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == batch_span.context.span_id
    ]
    plan_order = [
        engine.spout_stats,
        *engine.stats,
    ]  # the child spans are laid end to end in this order
    assert [s.name for s in children] == [f"squall.{c.kind} {c.id}" for c in plan_order]
    assert sorted(s.name for s in children) == [
        "squall.bolt chaos",
        "squall.bolt decode",
        "squall.sink dlq",
        "squall.sink rows",
        "squall.spout spout",
    ]
    assert batch_span.attributes["squall.shard"] == "shardId-000000000000"
    assert all(
        batch_span.start_time <= c.start_time <= c.end_time <= batch_span.end_time for c in children
    )
