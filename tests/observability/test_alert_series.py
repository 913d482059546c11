"""The alerting rules fire on what the Prometheus backend actually exports, from its first batch.

A counter series that appears with its first value is invisible to ``increase()`` and ``rate()``
(there is no earlier sample to count from), and ``sum()`` over no series is no value at all. The
backend created its ``squall_batches_total{status=…}`` and ``squall_topology_records_total``
series at the first batch of each kind: a first ``records_failed`` batch (under the KCL the
shard process exits on it) raised no ``SquallRecordsFailing``, and a consumer stuck on its very
first batch (the warehouse down since start) never read as ``SquallStalled``. The series are
scraped from the backend minute by minute and handed to ``promtool test rules``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from squall.errors import BatchFailed
from squall.observability.dashboards import prometheus_rules
from squall.observability.metrics import Recorder
from squall.observability.prometheus import PrometheusBackend
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.observability.promtool import promtool_test

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/tools.sh; Debian: apt install prometheus)",
)

TOPOLOGY = """
name: {name}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}, {{id: chaos, type: 'squall.testing:FaultyBolt'}}]
sinks: [{{id: rows, type: 'squall.testing:MemorySink'}}]
"""
ALERTING = ("squall_batches_total", "squall_topology_records_total", "squall_millis_behind_latest")
SHARD = "shardId-000000000000"


def _scrape(registry: CollectorRegistry, series: dict[str, list[str]], minute: int) -> None:
    """Append this minute's value of every series the rules read ('_' where it did not exist)."""
    for metric in registry.collect():
        for s in metric.samples:
            if s.name not in ALERTING:
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            values = series.setdefault(f"{s.name}{{{labels}}}", ["_"] * minute)
            values.append(f"{s.value:g}")
    for values in series.values():
        values += ["_"] * (minute + 1 - len(values))


def _promtool(tmp_path: Path, name: str, series: dict[str, list[str]], checks: list) -> None:
    topo = load_text(TOPOLOGY.format(name=name))
    promtool_test(tmp_path, prometheus_rules(topo), series, checks)


def _fires(name: str, alert: str, at: str) -> dict:
    """The check that ``alert`` of the topology's rules fires at ``at``, with its labels and summary."""
    [rule] = [
        r
        for r in prometheus_rules(load_text(TOPOLOGY.format(name=name)))["groups"][0]["rules"]
        if r["alert"] == alert
    ]
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}],
    }


@needs_promtool
def test_a_first_records_failed_batch_raises_squall_records_failing(tmp_path: Path, sink_stores):
    name = "poisoned"
    engine = Engine(load_text(TOPOLOGY.format(name=name)).plan).open()
    backend = PrometheusBackend(CollectorRegistry(), topology=name)
    rec = Recorder(name, [backend])
    series: dict[str, list[str]] = {}
    _scrape(backend.registry, series, 0)  # the process has started; no batch yet
    batch = records_from([{"n": 1}, {"fail": "poison"}, {"n": 3}])
    with rec.batch(engine, batch) as watch:
        watch.result = engine.process(batch)
    assert rec.last.status == "records_failed"
    for minute in range(1, 6):
        _scrape(backend.registry, series, minute)
    engine.close()
    _promtool(tmp_path, name, series, [_fires(name, "SquallRecordsFailing", "2m")])


@needs_promtool
def test_a_consumer_stuck_on_its_first_batch_reads_as_failing_and_stalled(
    tmp_path: Path, sink_stores
):
    name = "stuck"
    engine = Engine(load_text(TOPOLOGY.format(name=name)).plan).open()
    backend = PrometheusBackend(CollectorRegistry(), topology=name)
    rec = Recorder(name, [backend])
    series: dict[str, list[str]] = {}
    _scrape(backend.registry, series, 0)
    batch = records_from([{"n": 1}])
    for minute in range(1, 21):  # the warehouse is down: the same batch fails every minute
        with pytest.raises(BatchFailed), rec.batch(engine, batch, lag=lambda: {SHARD: 90_000}):
            raise BatchFailed("rows", ConnectionError("refused"), 3)
        _scrape(backend.registry, series, minute)
    engine.close()
    _promtool(
        tmp_path,
        name,
        series,
        [
            _fires(name, "SquallBatchesFailing", "10m"),
            _fires(name, "SquallStalled", "20m"),
        ],
    )


def test_the_kcl_runners_backend_exports_the_alerting_series_before_its_first_batch(
    tmp_path: Path, monkeypatch
):
    from squall.observability.prometheus import MULTIPROC_ENV
    from squall.observability.runners import kcl_recorder

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    [backend] = [b for b in kcl_recorder("fresh").backends if isinstance(b, PrometheusBackend)]
    series: dict[str, list[str]] = {}
    _scrape(backend.registry, series, 0)
    assert series == {
        **{
            f'squall_batches_total{{status="{s}",topology="fresh"}}': ["0"]
            for s in ("ok", "records_failed", "failed")
        },
        **{
            f'squall_topology_records_total{{outcome="{o}",topology="fresh"}}': ["0"]
            for o in ("committed", "dead_lettered", "filtered", "failed", "held")
        },
    }
