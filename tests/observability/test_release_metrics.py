"""A rolling sink's release outside a batch — due on an idle source (``Engine.tick``), or at the end
of a run (``Engine.release``) — moves the checkpoint: ``squall_checkpoints_total`` counts it, and
``squall_batches_total`` does not take it for a batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from squall.deploy.local import EXIT_OK, LocalRunner
from squall.event import Record
from squall.observability.metrics import Recorder
from squall.observability.progress import Totals
from squall.observability.prometheus import PrometheusBackend
from squall.testing import ListSpout, memory_stores
from squall.topology.loader import load_text
from tests.topology.test_holding import RollingSink

#: Whether the rolling sink is due by age (set by the spout while the source is idle).
_due = [False]


class AgedRollingSink(RollingSink):
    """``RollingSink`` that is due when ``_due`` says its buffer is old enough."""

    def due(self) -> bool:
        return _due[0] or super().due()


class IdleListSpout(ListSpout):
    """Batches of the list with an idle poll (an empty batch) between them; the sink is due by
    age during that poll. The last batch is held until the run ends."""

    def read(self, max_records: int) -> Iterator[list[Record]]:
        for i in range(0, len(self.records), max_records):
            if i:
                _due[0] = True
                yield []
                _due[0] = False
            yield self.records[i : i + max_records]


def test_an_idle_release_and_the_end_of_run_release_count_as_checkpoints_not_batches(
    tmp_path: Path,
):
    payloads = [{"n": i} for i in range(15)]
    spout = {"type": f"{__name__}:IdleListSpout", "records": payloads}
    yaml_text = f"""
name: idle
spout: {json.dumps(spout)}
settings: {{batch_size: 10}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: '{__name__}:AgedRollingSink', roll_events: 1000}}
"""
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    with memory_stores({}) as stores:
        runner = LocalRunner(
            load_text(yaml_text, base_dir=tmp_path), recorder=Recorder("idle", [backend, totals])
        )
        report = runner.run()
        assert report.exit_code == EXIT_OK
        # the first batch was held, then released when due on the idle poll after it; the
        # second, held, was released when the run ended
        assert [c["shardId-000000000000"].sequence_number for c in runner.spout.committed] == [
            "10",
            "15",
        ]
        assert [ev.value["n"] for ev in stores["lake"]] == list(range(15))

    def value(name: str, **labels: str) -> float:
        return backend.registry.get_sample_value(name, {"topology": "idle", **labels}) or 0.0

    assert value("squall_checkpoints_total") == 2  # 0: the releases' checkpoints went uncounted
    assert value("squall_batches_total", status="ok") == 2 and totals.batches == 2
    assert value("squall_batch_duration_seconds_count") == 2
    assert value("squall_topology_records_total", outcome="committed") == 15
    # the sink's time in its releases counts with them, not with a later batch (or never)
    assert value("squall_component_duration_seconds_count", component="lake") == 4


def test_a_release_with_nothing_held_is_not_counted(tmp_path: Path):
    """The end of a run whose sink released everything already: no checkpoint moved."""
    yaml_text = f"""
name: idle
spout: {{type: 'squall.testing:ListSpout', records: [{{n: 1}}]}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: '{__name__}:AgedRollingSink', roll_events: 1}}
"""
    backend = PrometheusBackend(CollectorRegistry())
    with memory_stores({}):
        runner = LocalRunner(
            load_text(yaml_text, base_dir=tmp_path), recorder=Recorder("idle", [backend])
        )
        assert runner.run().exit_code == EXIT_OK
    checkpoints = backend.registry.get_sample_value(
        "squall_checkpoints_total", {"topology": "idle"}
    )
    assert checkpoints == 1  # the batch's own, released within it


def test_every_backend_counts_a_release_as_a_checkpoint_not_a_batch(tmp_path: Path, capsys):
    """Prometheus, OpenTelemetry (which had no checkpoint counter at all), EMF and the totals."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from squall.observability.emf import EmfBackend
    from squall.observability.otel import OtelBackend
    from tests.observability.test_metrics import engine_for, records

    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    prometheus, totals, emf = PrometheusBackend(CollectorRegistry()), Totals(), EmfBackend()
    otel = OtelBackend(MeterProvider(metric_readers=[reader]), tracer)
    rec = Recorder("metered", [prometheus, otel, totals, emf])
    engine = engine_for(tmp_path, "released")
    batch = records([{"n": 1}])
    with rec.batch(engine, batch) as watch:
        watch.result = engine.process(batch)
    sample = rec.released(engine, {"shardId-000000000000": object()}, 0.5)
    assert sample.release and sample.checkpointed and rec.last is not sample

    def prom(name: str, **labels: str) -> float:
        return prometheus.registry.get_sample_value(name, {"topology": "metered", **labels}) or 0

    assert prom("squall_checkpoints_total") == 2
    assert prom("squall_batches_total", status="ok") == 1
    assert prom("squall_batch_duration_seconds_count") == 1
    points = {
        m.name: sum(getattr(p, "value", None) or p.count for p in m.data.data_points)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert points["squall.checkpoints"] == 2 and points["squall.batches"] == 1
    assert points["squall.batch_duration_seconds"] == 1
    assert [s.name for s in spans.get_finished_spans()].count("squall.batch") == 1
    assert totals.batches == 1
    capsys.readouterr()
    emf.flush()
    [top] = [
        d
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "Component" not in (d := json.loads(line))
    ]
    assert top["BatchesOk"] in (1, [1]) and top["BatchDuration"] != [] and top["MaxRss"]
    assert not isinstance(top["BatchDuration"], list) or len(top["BatchDuration"]) == 1
