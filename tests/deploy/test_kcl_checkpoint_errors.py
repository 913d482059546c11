"""What the KCL record processor does when the daemon answers a checkpoint with an error.

The MultiLangDaemon answers each checkpoint message with the name of the exception its
checkpointer raised (``RecordProcessorCheckpointer.checkpoint``): ``ThrottlingException`` and
``KinesisClientLibDependencyException`` (DynamoDB throttled or unreachable: "the application can
back off and retry"), ``ShutdownException`` (the lease is another worker's), ``InvalidStateException``
and ``IllegalArgumentException``. amazon-kclpy raises it as a ``CheckpointError`` in the hook, and
swallows whatever the hook raises: the message is reported done all the same.

Driven through amazon-kclpy's own loop (``KCLProcess``) with the daemon's protocol lines.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from squall.deploy.kcl import EXIT_RECORDS_FAILED, EXIT_UNEXPECTED_ERROR, RecordProcessor
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import kcl_record

TOPOLOGY = """
name: kcl-checkpoint-errors
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""
INIT = {
    "action": "initialize",
    "shardId": "shardId-000000000001",
    "sequenceNumber": "TRIM_HORIZON",
    "subSequenceNumber": 0,
}


def batch(*docs: dict, start: int = 100) -> dict:
    records = [kcl_record(d, start + i) for i, d in enumerate(docs)]
    return {"action": "processRecords", "millisBehindLatest": 0, "records": records}


def answer(seq: str | None, error: str | None = None) -> dict:
    """The daemon's answer to a checkpoint message (sequence None: a checkpoint at SHARD_END)."""
    doc = {"action": "checkpoint", "sequenceNumber": seq, "subSequenceNumber": None}
    if seq is not None:
        doc["subSequenceNumber"] = 0
    return {**doc, "error": error} if error else doc


class Run:
    """One record processor process: the daemon's lines in, its lines and stderr out."""

    def __init__(self, tmp_path: Path, lines: list[dict]):
        from amazon_kclpy import kcl

        self.db = tmp_path / "w.db"
        engine = Engine(load_text(TOPOLOGY.format(db=self.db)).plan)
        self.slept: list[float] = []
        self.processor = RecordProcessor(
            engine, stream="s", sleep=self.slept.append, daemon_alive=lambda: True
        )
        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
        self.exit_code = None
        try:
            kcl.KCLProcess(self.processor, input_file=stdin, output_file=out, error_file=err).run()
        except SystemExit as exc:
            self.exit_code = exc.code
        self.err = err.getvalue()
        self.sent = [json.loads(x) for x in out.getvalue().splitlines() if x.strip()]

    def done(self) -> list[str]:
        """The messages reported done, in order."""
        return [s["responseFor"] for s in self.sent if s["action"] == "status"]

    def checkpoints(self) -> list[str | None]:
        return [s["sequenceNumber"] for s in self.sent if s["action"] == "checkpoint"]

    def rows(self) -> list[int]:
        conn = sqlite3.connect(self.db)
        return [n for (n,) in conn.execute("select n from events order by n")]


@pytest.mark.parametrize("error", ["ThrottlingException", "KinesisClientLibDependencyException"])
def test_a_throttled_checkpoint_is_retried_before_the_batch_is_done(tmp_path: Path, error: str):
    run = Run(
        tmp_path,
        [
            INIT,
            batch({"n": 1}, {"n": 2}),
            answer("101", error),
            answer("101", error),
            answer("101"),
        ],
    )
    assert run.exit_code is None and "Caught exception" not in run.err, run.err
    assert run.checkpoints() == ["101", "101", "101"] and run.slept == [1.0, 2.0]
    assert run.done() == ["initialize", "processRecords"]
    assert run.processor.last_checkpoint.sequence_number == "101"


def test_failed_records_still_stop_the_shard_when_the_checkpoint_before_them_throttles(
    tmp_path: Path,
):
    """No dead-letter sink: record 101 fails, the processor checkpoints 100 and exits. Before, a
    throttled checkpoint escaped the hook: kclpy reported the batch done, and the next batch's
    checkpoint (here 200) moved past record 101, which was never written anywhere."""
    run = Run(
        tmp_path,
        [
            INIT,
            batch({"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}),
            answer("100", "ThrottlingException"),
            answer("100"),
            batch({"n": 4}, start=200),
            answer("200"),
        ],
    )
    assert run.exit_code == EXIT_RECORDS_FAILED, run.err
    assert run.checkpoints() == ["100", "100"] and run.done() == ["initialize"]
    assert run.rows() == [1]  # 3 comes again after 101: held, not written now


def test_a_throttled_shard_end_checkpoint_is_retried(tmp_path: Path):
    """The daemon sends shardEnded once: answered without a SHARD_END checkpoint, the KCL's
    shutdown task fails ("Application didn't checkpoint at end of shard") and is retried against a
    processor already shut down, so the child shards never start until the worker restarts."""
    run = Run(
        tmp_path,
        [
            INIT,
            batch({"n": 1}),
            answer("100"),
            {"action": "shardEnded"},
            answer(None, "ThrottlingException"),
            answer(None),
        ],
    )
    assert run.exit_code is None and "Caught exception" not in run.err, run.err
    assert run.checkpoints() == ["100", None, None]
    assert run.done() == ["initialize", "processRecords", "shardEnded"]


def test_a_throttled_final_checkpoint_on_a_requested_shutdown_is_retried(tmp_path: Path):
    run = Run(
        tmp_path,
        [
            INIT,
            batch({"n": 1}),
            answer("100", "ThrottlingException"),
            answer("100"),
            {"action": "shutdownRequested"},
            answer("100"),
            {"action": "leaseLost"},
        ],
    )
    assert run.exit_code is None and "Caught exception" not in run.err, run.err
    assert run.done() == ["initialize", "processRecords", "shutdownRequested", "leaseLost"]
    assert run.processor._closed


@pytest.mark.parametrize("error", ["InvalidStateException", "IllegalArgumentException"])
def test_a_checkpoint_that_cannot_be_stored_stops_the_shard_before_the_batch_is_done(
    tmp_path: Path, error: str
):
    """Not reported done: the daemon restarts the shard from its last checkpoint (the batch's rows
    are already stored: idempotent). Before, kclpy reported the batch done with a traceback and
    the shard went on without a checkpoint; failed records after it were skipped."""
    run = Run(tmp_path, [INIT, batch({"n": 1}), answer("100", error), batch({"n": 2}, start=200)])
    assert run.exit_code == EXIT_UNEXPECTED_ERROR, run.err
    assert run.done() == ["initialize"] and run.rows() == [1]


def test_each_throttled_checkpoint_counts_as_a_failed_batch(tmp_path: Path):
    """A checkpoint retried while DynamoDB stays throttled (or unreachable) counted nowhere: no
    failed batch, no checkpoint retry, no heartbeat — after 5 minutes `SquallHung` called the
    outage "a call that never returns", and `SquallBatchesFailing` never fired. Each retried
    checkpoint now counts as a failed batch of 0 records, as a failed open or release does."""
    from amazon_kclpy import kcl

    samples = []

    class Capture:
        def record(self, sample):
            samples.append(sample)

    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(engine, stream="s", sleep=lambda s: None, daemon_alive=lambda: True)
    processor.metrics.backends.append(Capture())
    lines = [
        INIT,
        batch({"n": 1}),
        answer("100", "ThrottlingException"),
        answer("100", "KinesisClientLibDependencyException"),
        answer("100"),
    ]
    stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
    kcl.KCLProcess(
        processor, input_file=stdin, output_file=io.StringIO(), error_file=io.StringIO()
    ).run()
    assert [(s.status, s.records) for s in samples] == [("ok", 1), ("failed", 0), ("failed", 0)]
    assert "ThrottlingException" in samples[1].error


def _counted(tmp_path: Path, lines: list[dict]) -> tuple[int | None, dict[str, float | None]]:
    """Run the daemon's lines through kclpy's loop with a Prometheus backend (the multiprocess
    one, in this process's registry): the exit code, and the series; the recorder's clock says
    1, 2, 3… at each read (``last_tick``: the last)."""
    from amazon_kclpy import kcl
    from prometheus_client import CollectorRegistry

    from squall.observability.prometheus import PrometheusBackend

    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(engine, stream="s", sleep=lambda s: None, daemon_alive=lambda: True)
    name = engine.topology.name
    backend = PrometheusBackend(CollectorRegistry(), topology=name)
    processor.metrics.backends.append(backend)
    ticks: list[float] = []
    processor.metrics.clock = lambda: ticks.append(len(ticks) + 1.0) or ticks[-1]
    stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
    exit_code = None
    try:
        kcl.KCLProcess(
            processor, input_file=stdin, output_file=io.StringIO(), error_file=io.StringIO()
        ).run()
    except SystemExit as exc:
        exit_code = exc.code
    t = {"topology": name}

    def value(metric: str, **labels: str) -> float | None:
        return backend.registry.get_sample_value(metric, {**t, **labels})

    return exit_code, {
        "ok": value("squall_batches_total", status="ok"),
        "failed": value("squall_batches_total", status="failed"),
        "checkpoints": value("squall_checkpoints_total"),
        "checkpoint_retries": value("squall_checkpoint_retries_total"),
        "heartbeat": value("squall_last_progress_timestamp_seconds", shard="shardId-000000000001"),
        "retrying": value("squall_retrying_since_timestamp_seconds", shard="shardId-000000000001"),
        "last_tick": ticks[-1],
    }


def test_a_checkpoint_the_lease_table_keeps_throttling_is_counted_as_retried_never_as_stored(
    tmp_path: Path,
):
    """DynamoDB throttles the lease table (KCL 2.5.8's ``DynamoDBCheckpointer`` answers its
    ``ProvisionedThroughputException`` as ``ThrottlingException``) until the lease moves to
    another worker: the batch's checkpoint is never stored. ``squall_checkpoints_total`` counted
    it at the batch's end (the engine's safe position, before the daemon answered), and
    ``squall_checkpoint_retries_total`` — documented as the retries of a checkpoint save with
    DynamoDB throttled — stayed 0 under the KCL: the throttling had no series of its own, only
    WARNING lines and failed batches like any outage's."""
    code, m = _counted(
        tmp_path,
        [
            INIT,
            batch({"n": 1}),
            answer("100", "ThrottlingException"),
            answer("100", "ThrottlingException"),
            answer("100", "KinesisClientLibDependencyException"),
            answer("100", "ShutdownException"),  # the lease is another worker's now
            {"action": "leaseLost"},
        ],
    )
    assert code is None
    assert m["checkpoints"] == 0.0 and m["checkpoint_retries"] == 3.0, m
    assert m["ok"] == 1.0 and m["failed"] == 3.0, m
    # the shard process is alive and retrying (failing: SquallBatchesFailing), not hung: the
    # last failed attempt beat
    assert m["heartbeat"] == m["last_tick"], m


def test_a_throttled_checkpoint_counts_once_stored_and_each_retry(tmp_path: Path):
    code, m = _counted(
        tmp_path,
        [
            INIT,
            batch({"n": 1}),
            answer("100", "ThrottlingException"),
            answer("100", "ThrottlingException"),
            answer("100"),
            batch({"n": 2}, start=200),
            answer("200"),
        ],
    )
    assert code is None
    assert m["checkpoints"] == 2.0 and m["checkpoint_retries"] == 2.0, m
    assert m["ok"] == 2.0 and m["failed"] == 2.0, m


def test_a_checkpoint_the_lease_table_refuses_is_not_counted_as_stored(tmp_path: Path):
    code, m = _counted(tmp_path, [INIT, batch({"n": 1}), answer("100", "InvalidStateException")])
    assert code == EXIT_UNEXPECTED_ERROR
    assert m["checkpoints"] == 0.0 and not m["checkpoint_retries"] and m["ok"] == 1.0, m


def test_a_throttled_checkpoint_once_stored_leaves_the_idle_shard_not_retrying(tmp_path: Path):
    """The lease table throttled the batch's checkpoint (a failed attempt: the shard retrying
    since then), then stored it; the stream goes idle. ``squall_retrying_since`` stayed at the
    throttle's time — only a batch's end cleared it — so an idle shard read as retrying for
    ever: ``SquallRetrying`` fired after ``--retrying-s`` and ``SquallHung`` was muted."""
    idle = {"action": "processRecords", "millisBehindLatest": 0, "records": []}
    lines = [INIT, batch({"n": 1}), answer("100", "ThrottlingException"), answer("100")]
    code, counted = _counted(tmp_path, [*lines, idle, idle])
    assert code is None and counted["failed"] == 1 and counted["checkpoints"] == 1
    assert counted["retrying"] == 0  # before: the throttle's time (3.0)


def test_a_checkpoint_retry_given_up_for_a_lease_taken_does_not_say_its_batch_uncommitted(
    tmp_path: Path, caplog, monkeypatch
):
    """bd85c1d's WARNING said "given up, not committed here" for every retry the lease probe
    ended, a throttled checkpoint's too: its batch was committed here (the rows are written; only
    the position was not stored), and the new owner writes it again. It says what was retried."""
    owners = iter(["w2"])
    monkeypatch.setattr(
        RecordProcessor,
        "__init__",
        _with_lease(RecordProcessor.__init__, lambda shard: next(owners) == "w1"),
    )
    caplog.set_level("WARNING", logger="squall.kcl")
    run = Run(tmp_path, [INIT, batch({"n": 1}, {"n": 2}), answer("101", "ThrottlingException")])
    assert run.processor.lost and run.rows() == [1, 2] and run.checkpoints() == ["101"]
    [given_up] = [r for r in caplog.records if "lease taken over" in r.getMessage()]
    assert given_up.levelname == "WARNING"
    message = given_up.getMessage()
    assert "retried storing the checkpoint at 101 (its records committed here" in message
    assert "not committed here" not in message


def _with_lease(init, held):
    def patched(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "lease_held": held})

    return patched
