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


def test_squall_otel_without_the_extra_is_one_clear_line_not_a_traceback(tmp_path: Path):
    """``SQUALL_OTEL=1`` where opentelemetry is not installed: ``squall run`` says which extra to
    install and exits 2; it was an ``ImportError`` traceback."""
    import os
    import subprocess
    import sys

    import squall

    hidden = tmp_path / "hidden" / "opentelemetry"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'opentelemetry'\")\n")
    root = str(Path(squall.__file__).parent.parent)
    (tmp_path / "t.yaml").write_text(
        "name: t\nspout: {type: stdin}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    env = {**os.environ, "SQUALL_OTEL": "1", "PYTHONPATH": f"{hidden.parent}{os.pathsep}{root}"}
    r = subprocess.run(
        [sys.executable, "-m", "squall.cli", "run", str(tmp_path / "t.yaml")],
        input='{"n": 1}\n',
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip() == (
        "SQUALL_OTEL=1 asks for OpenTelemetry metrics and traces, but the 'otel' extra is not "
        "installed (pip install 'squall[otel]'): No module named 'opentelemetry'"
    )


def test_the_lambda_and_kcl_recorders_without_the_extra_raise_the_same_error(monkeypatch):
    import sys

    import pytest

    from squall.errors import MetricsError
    from squall.observability.runners import kcl_recorder, lambda_observer

    monkeypatch.setenv("SQUALL_OTEL", "true")
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry: ImportError
    monkeypatch.delitem(sys.modules, "squall.observability.otel", raising=False)
    for build in (lambda_observer, kcl_recorder):
        with pytest.raises(MetricsError, match=r"pip install 'squall\[otel\]'"):
            build("t")


def test_otel_counts_a_checkpoint_the_runner_stores_after_the_batch_when_it_is_stored(
    tmp_path: Path,
):
    """The KCL processor's batch checkpoints when the daemon answers: counted then, once, and
    its throttled attempts as checkpoint retries."""
    reader = InMemoryMetricReader()
    rec = Recorder("kcl-otel", [OtelBackend(MeterProvider(metric_readers=[reader]))])
    engine = engine_for(tmp_path, "kcl-otel")
    batch = records([{"n": 1}])
    with rec.batch(engine, batch, shard="shardId-000000000000", checkpoint_later=True) as watch:
        watch.result = engine.process(batch)

    def points() -> dict[str, float]:
        out = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        if p.attributes == {"topology": "kcl-otel"}:
                            out[m.name] = getattr(p, "value", None)
        return out

    assert points().get("squall.checkpoints", 0) == 0  # not stored yet
    rec.observe(engine, [], None, 0.01, error=RuntimeError("throttled"), checkpoint_retries=1)
    rec.checkpoint_stored()
    assert points()["squall.checkpoints"] == 1 and points()["squall.checkpoint_retries"] == 1


def test_otel_exports_the_iterator_age_in_seconds_and_the_deprecated_milliseconds():
    """Prometheus' base unit: `squall.iterator_age_seconds` (unit s); the milliseconds it was
    exported in stay one release, deprecated, beside it."""
    from squall.observability.metrics import BatchSample

    reader = InMemoryMetricReader()
    backend = OtelBackend(MeterProvider(metric_readers=[reader]), TracerProvider())
    backend.record(
        BatchSample("aged", 1, 1, 0.01, "ok", iterator_age_ms={"a": 1500.0, "b": 4500.0})
    )
    found = {
        m.name: (m.unit, [p.value for p in m.data.data_points])
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if "iterator_age" in m.name
    }
    assert found == {
        "squall.iterator_age_seconds": ("s", [4.5]),
        "squall.iterator_age_milliseconds": ("ms", [4500.0]),
    }
