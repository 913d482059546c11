"""The recorder and its backends against runs whose outcomes are known."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from squall.deploy.local import LocalRunner
from squall.errors import BatchFailed
from squall.event import Record, RecordMeta
from squall.observability.logs import JsonFormatter, configure, log_context, redact
from squall.observability.metrics import Recorder
from squall.observability.progress import PeriodicLog, Totals
from squall.observability.prometheus import PrometheusBackend
from squall.topology.executor import Engine
from squall.topology.loader import load_text

TOPOLOGY = """
name: metered
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: {transient}}}
sinks:
  - {{id: rows, type: 'squall.testing:MemorySink', name: {store}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {store}-dlq}}
"""


def records(
    payloads: list, shard: str = "shardId-000000000000", arrival: datetime | None = None
) -> list[Record]:
    return [
        Record(
            p if isinstance(p, bytes) else json.dumps(p).encode(),
            RecordMeta("s", shard, str(100 + i), arrival_time=arrival),
        )
        for i, p in enumerate(payloads)
    ]


def engine_for(tmp_path: Path, store: str, transient: int = 0) -> Engine:
    topo = load_text(TOPOLOGY.format(store=store, transient=transient), base_dir=tmp_path)
    return Engine(topo.plan).open()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_prometheus_counters_match_the_outcomes_of_two_batches(tmp_path: Path):
    engine = engine_for(tmp_path, "m1")
    backend = PrometheusBackend(CollectorRegistry())
    rec = Recorder("metered", [backend])
    first = records([{"n": 1}, b"not json", {"fail": "bad n"}, {"drop": True}])
    second = records([{"n": 2}, {"n": 3}], arrival=datetime.now(UTC) - timedelta(seconds=5))
    for batch in (first, second):
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    r = backend.registry
    assert value(r, "squall_topology_records_total", topology="metered", outcome="committed") == 3
    assert (
        value(r, "squall_topology_records_total", topology="metered", outcome="dead_lettered") == 2
    )
    assert value(r, "squall_topology_records_total", topology="metered", outcome="filtered") == 1
    assert (
        value(r, "squall_records_total", topology="metered", component="decode", outcome="in") == 6
    )
    assert (
        value(
            r,
            "squall_records_total",
            topology="metered",
            component="decode",
            outcome="dead_lettered",
        )
        == 1
    )
    assert (
        value(
            r,
            "squall_records_total",
            topology="metered",
            component="chaos",
            outcome="dead_lettered",
        )
        == 1
    )
    assert (
        value(r, "squall_records_total", topology="metered", component="chaos", outcome="filtered")
        == 1
    )
    assert (
        value(r, "squall_records_total", topology="metered", component="rows", outcome="out") == 3
    )
    assert value(r, "squall_records_total", topology="metered", component="dlq", outcome="in") == 2
    assert value(r, "squall_batches_total", topology="metered", status="ok") == 2
    assert value(r, "squall_checkpoints_total", topology="metered") == 2
    assert value(r, "squall_batch_duration_seconds_count", topology="metered") == 2
    # the second batch arrived 5 s ago: its iterator age is at least that
    age = value(r, "squall_iterator_age_seconds", topology="metered")
    assert 5 <= age < 60
    # deprecated, exported for one more release: the same age in milliseconds
    assert value(r, "squall_iterator_age_milliseconds", topology="metered") == age * 1000
    assert value(r, "squall_process_resident_memory_bytes", topology="metered") > 10 * 2**20


def test_a_failed_batch_counts_its_retries_and_its_status(tmp_path: Path):
    engine = engine_for(tmp_path, "m2", transient=3)
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    rec = Recorder("metered", [backend, totals])
    batch = records([{"n": 1}])
    try:
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    except BatchFailed:
        pass
    else:
        raise AssertionError("the batch should have failed")
    r = backend.registry
    assert value(r, "squall_batches_total", topology="metered", status="failed") == 1
    assert value(r, "squall_retries_total", topology="metered", component="chaos") == 1
    assert value(r, "squall_checkpoints_total", topology="metered") == 0
    assert totals.failed_batches == 1 and "chaos" in (totals.error or "")
    with rec.batch(engine, batch) as watch:  # third call fails, fourth succeeds: one retry again
        watch.result = engine.process(batch)
    assert value(r, "squall_batches_total", topology="metered", status="ok") == 1
    assert value(r, "squall_retries_total", topology="metered", component="chaos") == 2
    assert totals.outcomes["committed"] == 1


def test_lag_comes_from_the_spout_and_the_sequence_range_goes_into_the_log_line(tmp_path: Path):
    engine = engine_for(tmp_path, "m3")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("squall.test.metrics")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    rec = Recorder("metered", [])
    batch = records([{"n": 1}, {"n": 2}], shard="shardId-000000000007")
    with rec.batch(
        engine, batch, shard="shardId-000000000007", lag=lambda: {"shardId-000000000007": 1234}
    ) as w:
        log.info("inside")
        w.result = engine.process(batch)
    line = json.loads(stream.getvalue())
    assert line["message"] == "inside" and line["topology"] == "metered" and line["batch_id"] == 1
    assert (line["shard"], line["sequence_first"], line["sequence_last"]) == (
        "shardId-000000000007",
        "100",
        "101",
    )
    assert rec.last.millis_behind == {"shardId-000000000007": 1234}
    assert rec.last.log_fields()["millis_behind_latest"] == 1234


def test_secrets_are_masked_in_both_log_formats():
    text = "cannot connect to postgresql://squall:s3cr3t@db:5432/w (password=hunter2)"
    assert redact(text) == "cannot connect to postgresql://squall:***@db:5432/w (password=***)"
    for fmt in ("text", "json"):
        stream = io.StringIO()
        configure(fmt, level=logging.WARNING, stream=stream)
        try:
            with log_context(topology="t"):
                logging.getLogger("squall.test.secrets").error("sink down: %s", text)
        finally:
            configure("text", stream=sys.stderr)
        out = stream.getvalue()
        assert "s3cr3t" not in out and "hunter2" not in out and "squall:***@db" in out, out


def test_without_a_terminal_the_run_logs_progress_every_interval(tmp_path: Path):
    now = [0.0]
    totals = Totals(clock=lambda: now[0])
    stream = io.StringIO()
    logger = logging.getLogger("squall.test.progress")
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    periodic = PeriodicLog(totals, 10.0, clock=lambda: now[0], logger=logger)

    class Ticking(Recorder):
        def observe(self, *a, **k):
            now[0] += 4.0  # each batch takes 4 s of the fake clock
            return super().observe(*a, **k)

    payloads = [{"n": i} for i in range(50)]
    spout = json.dumps({"type": "squall.testing:ListSpout", "records": payloads})
    topo = load_text(
        f"name: ticking\nspout: {spout}\nsettings: {{batch_size: 5}}\nbolts: [{{id: decode, type: json}}]\n"
        "sinks: [{id: rows, type: 'squall.testing:MemorySink', name: ticking}]\n",
        base_dir=tmp_path,
    )
    report = LocalRunner(topo, recorder=Ticking("ticking", [totals, periodic])).run()
    assert report.batches == 10
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines  # at 12, 24 and 36 s of 40
    assert lines[-1].startswith("progress: batches=9 records=45 committed=45")


def test_a_broken_metrics_backend_does_not_fail_the_batch(tmp_path: Path, caplog):
    class Broken:
        def record(self, sample):
            raise RuntimeError("exporter down")

    engine = engine_for(tmp_path, "m4")
    totals = Totals()
    rec = Recorder("metered", [Broken(), totals])
    for _ in range(2):
        batch = records([{"n": 1}])
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    assert totals.outcomes["committed"] == 2  # the next backend still got both batches
    assert [r.message for r in caplog.records].count(
        "metrics backend Broken failed; the batch is unaffected"
    ) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_replayed_batch_reads_as_rows_already_present_not_as_rows_written(
    tmp_path: Path, database, request, unique_name
):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    if database == "postgresql":
        url = request.getfixturevalue("pg_url")
        request.addfinalizer(lambda: _drop_pg(url, unique_name))
    topo = load_text(
        f"""
name: replayed
resources: {{db: {{url: "{url}"}}}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: warehouse, resource: db, table: {unique_name}, columns: {{n: {{path: n, type: integer}}}}}}]
""",
        base_dir=tmp_path,
    )
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    rec = Recorder("replayed", [backend, totals])
    first = records([{"n": i} for i in range(5)])
    replay = first[2:] + records([{"n": 9}], shard="shardId-000000000001")
    for batch in (first, replay):
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    r = backend.registry
    assert (
        value(r, "squall_sink_rows_total", topology="replayed", component="rows", result="written")
        == 6
    )
    assert (
        value(r, "squall_sink_rows_total", topology="replayed", component="rows", result="present")
        == 3
    )
    assert (
        totals.outcomes["committed"] == 9
    )  # committed counts records; the rows say what the replay added
    assert (totals.written, totals.present) == ({"rows": 6}, {"rows": 3})


def _drop_pg(url: str, table: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    conn.close()


def test_enrichment_cache_hits_and_misses_are_counted_per_component(tmp_path: Path):
    topo = load_text(
        "name: cached\nspout: {type: stdin}\nbolts: [{id: decode, type: json}, "
        "{id: device, type: device, ua_field: ua}]\n"
        "sinks: [{id: rows, type: 'squall.testing:MemorySink', name: cached}]\n",
        base_dir=tmp_path,
    )
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    rec = Recorder("cached", [backend])
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    for _ in range(2):
        batch = records([{"ua": ua}, {"ua": ua}, {"ua": "curl/8.0"}])
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    r = backend.registry
    # the first batch looks each distinct agent up once (2 misses); the second finds both cached
    assert (
        value(r, "squall_cache_lookups_total", topology="cached", component="device", result="miss")
        == 2
    )
    assert (
        value(r, "squall_cache_lookups_total", topology="cached", component="device", result="hit")
        == 2
    )
