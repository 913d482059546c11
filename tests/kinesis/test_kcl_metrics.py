"""``squall kcl --metrics-port``: one endpoint per host sums the shard processes of the real KCL daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kinesis.test_kcl_daemon import LOCAL_PROPS, precreate_leases, put
from tests.observability.test_prometheus_endpoint import scrape, total
from tests.ports import free_port
from tests.process_group import stop_group

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: kcl-metrics
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def test_kcl_metrics_of_two_shard_processes_are_scraped_from_one_port(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    stream = make_stream(2, prefix="kclm")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db", dlq=tmp_path / "dlq.jsonl"))
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(60)] + [b"not json"] * 4)
    shards = {s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    port = free_port()
    props = [a for k, v in LOCAL_PROPS.items() for a in ("--set", f"{k}={v}")]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    log = open(tmp_path / "kcl.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "kcl",
            str(topology),
            "--stream",
            stream,
            "--application",
            app,
            "--kinesis-endpoint",
            kinesis_mock.endpoint,
            "--dynamodb-endpoint",
            dynalite.endpoint,
            "--no-metrics",
            "--worker-id",
            "w1",
            "--metrics-port",
            f"127.0.0.1:{port}",
            *props,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        samples: dict = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "kcl.log").read_text()[-3000:]
            samples = scrape(port)
            done = total(samples, "squall_topology_records_total", topology="kcl-metrics")
            lagged = {
                dict(lbl)["shard"] for (n, lbl) in samples if n == "squall_millis_behind_latest"
            }
            # the KCL checkpoint is counted when the daemon answers it, after the batch's
            # records: wait for it too, not only for the records
            checkpoints = total(samples, "squall_checkpoints_total")
            if done >= 64 and lagged == shards and checkpoints >= 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail(
                f"endpoint never showed 64 records of 2 shards: {samples}\n"
                + (tmp_path / "kcl.log").read_text()[-3000:]
            )
    finally:
        stop_group(proc, 20)
        log.close()
    assert total(samples, "squall_topology_records_total", outcome="committed") == 60
    assert total(samples, "squall_topology_records_total", outcome="dead_lettered") == 4
    assert total(samples, "squall_records_total", component="decode", outcome="in") == 64
    assert total(samples, "squall_records_total", component="rows", outcome="out") == 60
    assert total(samples, "squall_checkpoints_total") >= 2  # at least one batch per shard
    # both shard processes contribute: one lag gauge per shard, and the RSS of live processes adds up
    assert {
        dict(lbl)["shard"] for (n, lbl) in samples if n == "squall_millis_behind_latest"
    } == shards
    assert total(samples, "squall_process_resident_memory_bytes") > 2 * 10 * 2**20
    # a heartbeat per shard process (the time of its last batch or idle processRecords)
    beats = {
        dict(lbl)["shard"]: v
        for (n, lbl), v in samples.items()
        if n == "squall_last_progress_timestamp_seconds"
    }
    assert set(beats) == shards and all(v > 1e9 for v in beats.values())


def test_the_polling_spout_reports_millis_behind_latest_per_shard(
    tmp_path: Path, kinesis, kinesis_mock, make_stream
):
    from squall.deploy.local import LocalRunner
    from squall.observability.metrics import Recorder
    from squall.observability.progress import Totals
    from squall.topology.loader import load_text

    stream = make_stream(2, prefix="lag")
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(30)])
    topo = load_text(
        f"""
name: polled
spout: {{type: kinesis, stream: {stream}, endpoint_url: "{kinesis_mock.endpoint}", poll_interval: 0.05,
         idle_exit: 1.0}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: 'squall.testing:MemorySink', name: polled}}]
""",
        base_dir=tmp_path,
    )
    totals = Totals()
    report = LocalRunner(topo, recorder=Recorder("polled", [totals])).run()
    assert report.exit_code == 0 and totals.outcomes["committed"] == 30
    shards = {s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    assert set(totals.millis_behind) == shards  # GetRecords' MillisBehindLatest, per shard
    assert all(ms >= 0 for ms in totals.millis_behind.values())
    assert set(totals.iterator_age_ms) <= shards and totals.iterator_age_ms


def test_an_idle_poll_of_the_polling_spout_updates_the_lag_to_zero(
    tmp_path: Path, kinesis, kinesis_mock, make_stream
):
    """``squall run`` on a stream gone idle: GetRecords answers no record and MillisBehindLatest
    0. The live view and the gauges showed the last batch's lag, however long ago it ran."""
    from squall import aws
    from squall.deploy.local import LocalRunner
    from squall.observability.metrics import Recorder
    from squall.observability.progress import Totals
    from squall.topology.loader import load_text

    stream = make_stream(1, prefix="idle")
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(3)])
    topo = load_text(
        f"""
name: idle
spout: {{type: kinesis, stream: {stream}, endpoint_url: "{kinesis_mock.endpoint}", poll_interval: 0.05,
         idle_exit: 1.0}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: 'squall.testing:MemorySink', name: idle}}]
""",
        base_dir=tmp_path,
    )
    totals = Totals()
    runner = LocalRunner(topo, recorder=Recorder("idle", [totals]))
    client = aws.client("kinesis", region="us-east-1", endpoint_url=kinesis_mock.endpoint)

    def behind_while_records(parsed, **kwargs):  # a backlog while records come, then caught up
        parsed["MillisBehindLatest"] = 60_000 if parsed.get("Records") else 0

    client.meta.events.register("after-call.kinesis.GetRecords", behind_while_records)
    runner.spout.client = client

    report = runner.run()

    assert report.exit_code == 0 and totals.outcomes["committed"] == 3 and totals.batches == 1
    assert totals.millis_behind == {"shardId-000000000000": 0} and totals.lag_ms == 0
