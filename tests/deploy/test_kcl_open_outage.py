"""A dependency that is down when a KCL record processor starts: the shard waits, never skips.

amazon-kclpy swallows an exception from ``initialize`` or ``process_records`` and reports the
message done, so the daemon passes the next batches on and a later checkpoint skips the records
of the batches that failed. Found with the real daemon: PostgreSQL unreachable while the shard
processes started, records produced meanwhile never reached the warehouse."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from squall.deploy.kcl import RecordProcessor
from squall.errors import TransientError
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records, kcl_record

TOPOLOGY = """
name: kcl-open-outage
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""


def record(seq: int) -> dict:
    return kcl_record({"n": seq}, seq)


def engine_down_for(tmp_path: Path, opens_failing: int) -> Engine:
    """An engine whose warehouse sink cannot connect for its first ``opens_failing`` opens."""
    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    sink = next(c for c in engine.components if getattr(c, "id", None) == "rows")
    real_open, calls = sink.open, []

    def open_(resources):
        calls.append(1)
        if len(calls) <= opens_failing:
            raise TransientError("rows (table events): database unavailable: connection refused")
        return real_open(resources)

    sink.open = open_
    return engine


def deliver(processor: RecordProcessor, message, checkpointer: KclCheckpointer) -> None:
    """What amazon-kclpy's ``KCLProcess._perform_action`` does: an exception of the hook is
    written to stderr and the message is reported done all the same."""
    try:
        message.dispatch(checkpointer, processor)
    except Exception:  # noqa: BLE001 - kclpy's own behaviour
        pass


def test_a_database_down_at_start_is_waited_for_and_no_batch_is_skipped(tmp_path: Path):
    slept: list[float] = []
    processor = RecordProcessor(engine_down_for(tmp_path, 2), stream="s", sleep=slept.append)
    cp = KclCheckpointer()
    deliver(processor, kcl_initialize(), cp)
    deliver(processor, kcl_process_records([{"n": 1}, {"n": 2}], start=100), cp)
    deliver(processor, kcl_process_records([{"n": 3}], start=200), cp)
    rows = sqlite3.connect(tmp_path / "w.db").execute("select n from events order by n").fetchall()
    # before: [(3,)] with a checkpoint at 200 — records 1 and 2 were lost
    assert rows == [(1,), (2,), (3,)] and cp.calls == [("101", 0), ("200", 0)]
    assert slept == [1.0, 2.0]  # the shard waited for the database, in initialize


def test_a_database_down_at_start_counts_as_failed_batches_in_the_metrics(tmp_path: Path):
    """Found in the fleet walkthrough: `squall kcl --metrics-port` with the warehouse unreachable
    at start showed `squall_batches_total{status="failed"} 0` and no lag series while the shards
    waited in `initialize`: none of the generated alerts could fire for a fleet started (or
    restarted) during an outage, the records piling up unseen."""
    samples = []

    class Capture:
        def record(self, sample):
            samples.append(sample)

    processor = RecordProcessor(engine_down_for(tmp_path, 2), stream="s", sleep=lambda s: None)
    processor.metrics.backends.append(Capture())
    cp = KclCheckpointer()
    deliver(processor, kcl_initialize(), cp)
    assert [(s.status, s.records, s.shard) for s in samples] == [
        ("failed", 0, "shardId-000000000001")
    ] * 2
    assert "database unavailable" in samples[0].error
    deliver(processor, kcl_process_records([{"n": 1}], start=100), cp)
    assert [s.status for s in samples] == ["failed", "failed", "ok"]


def test_an_unexpected_error_of_a_batch_exits_rather_than_being_skipped(tmp_path: Path):
    processor = RecordProcessor(engine_down_for(tmp_path, 0), stream="s", sleep=lambda s: None)

    def broken(records):
        raise RuntimeError("a bug in the engine")

    processor.engine.process = broken
    lines = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(1)]},
    ]
    with pytest.raises(SystemExit) as exited:
        from amazon_kclpy import kcl

        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
        kcl.KCLProcess(processor, input_file=stdin, output_file=out, error_file=err).run()
    assert exited.value.code != 0
    statuses = [json.loads(x) for x in out.getvalue().splitlines() if x.strip()]
    # the batch is never reported done: the daemon restarts the shard from its checkpoint
    assert [s.get("responseFor") for s in statuses] == ["initialize"]


FAULTY = """
name: kcl-daemon-gone
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: 5}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""


def test_a_processor_waiting_for_a_dependency_exits_when_the_daemon_is_gone(tmp_path: Path):
    """Found with the real daemon: SIGTERM to `squall kcl` while PostgreSQL was down; the
    daemon's shutdown grace ran out, the JVM exited and the four shard processes lived on
    (parent pid 1), retrying. When the database came back they wrote their batches beside the
    new worker's: every dead letter of those batches twice."""
    daemon = {"alive": True}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        daemon["alive"] = False  # the JVM exits while we wait

    engine = Engine(load_text(FAULTY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(
        engine, stream="s", sleep=sleep, daemon_alive=lambda: daemon["alive"]
    )
    cp = KclCheckpointer()
    kcl_initialize().dispatch(cp, processor)
    with pytest.raises(SystemExit) as exited:
        kcl_process_records([{"n": 1}]).dispatch(cp, processor)
    assert exited.value.code != 0 and slept == [1.0] and cp.calls == []
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        0,
    )


def test_the_daemon_is_the_parent_by_default(tmp_path: Path):
    processor = RecordProcessor(engine_down_for(tmp_path, 0), stream="s")
    assert processor._daemon_alive()


def test_a_sink_down_while_releasing_on_an_idle_poll_counts_as_failed_batches(tmp_path: Path):
    """A rolling sink due by age on an idle poll (``Engine.tick``) whose store is down is retried
    in ``processRecords`` until it answers, as a batch is — but only a batch's attempts were
    counted: the shard waited with `squall_batches_total{status="failed"}` unmoved (and no
    heartbeat), so `SquallBatchesFailing` never fired and `SquallHung` called the outage a call
    that never returns. Each failed attempt is now a failed batch of no record, as a failed
    open is (since hE), and beats the heartbeat."""
    from squall.errors import BatchFailed

    samples, beats = [], []

    class Capture:
        def record(self, sample):
            samples.append(sample)

        def record_idle(self, topology, shard, when):
            beats.append(shard)

    processor = RecordProcessor(engine_down_for(tmp_path, 0), stream="s", sleep=lambda s: None)
    processor.metrics.backends.append(Capture())
    cp = KclCheckpointer()
    deliver(processor, kcl_initialize(), cp)
    outage = TransientError("rolled (bucket b): connection refused")
    ticks = iter([BatchFailed("rolled", outage, 3), BatchFailed("rolled", outage, 3)])

    def tick():
        failure = next(ticks, None)
        if failure is not None:
            raise failure
        return {}

    processor.engine.tick = tick
    beats.clear()
    deliver(processor, kcl_process_records([]), cp)
    assert [(s.status, s.records, s.shard) for s in samples] == [
        ("failed", 0, "shardId-000000000001")
    ] * 2
    assert "connection refused" in samples[0].error
    assert beats == ["shardId-000000000001"]  # the idle poll's own beat; the failures beat too


def test_a_shard_that_opened_after_an_outage_is_not_retrying_while_the_stream_is_idle(
    tmp_path: Path,
):
    """The failed opens set ``squall_retrying_since`` (failed batches of no record, the shard
    retrying since the first); the open then succeeded and the stream stayed idle. Only a
    batch's end cleared the gauge: the idle shard read as retrying for ever (``SquallRetrying``
    fired after ``--retrying-s``, ``SquallHung`` was muted for it)."""
    from prometheus_client import CollectorRegistry

    from squall.observability.prometheus import PrometheusBackend

    processor = RecordProcessor(engine_down_for(tmp_path, 2), stream="s", sleep=lambda s: None)
    backend = PrometheusBackend(CollectorRegistry(), topology="kcl-open-outage")
    processor.metrics.backends.append(backend)
    labels = {"topology": "kcl-open-outage", "shard": "shardId-000000000001"}

    def retrying() -> float | None:
        return backend.registry.get_sample_value("squall_retrying_since_timestamp_seconds", labels)

    cp = KclCheckpointer()
    deliver(processor, kcl_initialize(), cp)
    failed = backend.registry.get_sample_value(
        "squall_batches_total", {"topology": "kcl-open-outage", "status": "failed"}
    )
    assert failed == 2
    deliver(processor, kcl_process_records([]), cp)  # an idle poll
    assert retrying() == 0  # before: the first failed open's time


def test_a_release_that_failed_then_moved_nothing_leaves_the_shard_not_retrying(tmp_path: Path):
    """An idle poll's release failed twice (failed batches of no record), then succeeded with no
    position of the shard to checkpoint: no sample followed, the gauge stayed set for ever."""
    from prometheus_client import CollectorRegistry

    from squall.errors import BatchFailed
    from squall.observability.prometheus import PrometheusBackend

    processor = RecordProcessor(engine_down_for(tmp_path, 0), stream="s", sleep=lambda s: None)
    backend = PrometheusBackend(CollectorRegistry(), topology="kcl-open-outage")
    processor.metrics.backends.append(backend)
    labels = {"topology": "kcl-open-outage", "shard": "shardId-000000000001"}
    cp = KclCheckpointer()
    deliver(processor, kcl_initialize(), cp)
    outage = TransientError("rolled (bucket b): connection refused")
    ticks = iter([BatchFailed("rolled", outage, 3), BatchFailed("rolled", outage, 3)])

    def tick():
        failure = next(ticks, None)
        if failure is not None:
            raise failure
        return {}

    processor.engine.tick = tick
    deliver(processor, kcl_process_records([]), cp)
    value = backend.registry.get_sample_value
    assert value("squall_batches_total", {"topology": "kcl-open-outage", "status": "failed"}) == 2
    assert value("squall_retrying_since_timestamp_seconds", labels) == 0  # before: the first's
