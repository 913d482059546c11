"""Every line a runner logs about a batch names the topology, and the shard where there is one:
the batch's own lines, and the runner's lines about its failure (which are written after it)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from squall.deploy.local import LocalRunner
from squall.observability.logs import configure
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.deploy.test_kcl_processor import processor
from tests.deploy.test_lambda_consumer import handler_for
from tests.factories import KclCheckpointer, kcl_process_records, kinesis_lambda_event


@contextmanager
def json_lines() -> Iterator[list[dict]]:
    stream = io.StringIO()
    configure("json", level=logging.INFO, stream=stream)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        configure("text", level=logging.WARNING, stream=sys.stderr)
        lines += [json.loads(x) for x in stream.getvalue().splitlines()]


def test_the_local_runners_batch_failure_line_names_the_topology(tmp_path: Path):
    topo = load_text(
        "name: failing\nspout: {type: 'squall.testing:ListSpout', records: [{n: 1}]}\n"
        "settings: {retry: {attempts: 1}}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: rows, type: 'squall.testing:FaultySink', transient_failures: 1}]\n",
        base_dir=tmp_path,
    )
    with json_lines() as lines:
        report = LocalRunner(topo).run()
    assert report.error is not None
    [line] = [x for x in lines if "batch failed" in x["message"]]
    assert line["logger"] == "squall.local" and line["topology"] == "failing", line


def test_the_kcl_processors_retry_and_failure_lines_name_topology_and_shard(tmp_path: Path):
    p, _ = processor(tmp_path, transient=1)
    with json_lines() as lines:
        kcl_process_records([{"n": 1}]).dispatch(KclCheckpointer(), p)
    [line] = [x for x in lines if "retrying the batch" in x["message"]]
    assert (line["topology"], line["shard"]) == ("kcl-test", p.shard_id), line


def test_a_lambda_invocations_lines_name_the_topology_and_the_shard(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=False)
    event = kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": "bad"}])
    with json_lines() as lines:
        handler(event)
    shard = event["Records"][0]["eventID"].split(":")[0]
    failed = [x for x in lines if x["logger"] == "squall.lambda" and "failed in" in x["message"]]
    invocation = [x for x in lines if x["logger"] == "squall.invocation"]
    assert failed and invocation
    for line in failed + invocation:
        assert (line["topology"], line["shard"]) == ("lambda-test", shard), line


def test_a_poison_record_is_logged_once_though_its_batch_is_retried(tmp_path: Path, caplog):
    """The KCL retries a batch whose sink is down; each delivery isolates the same poison record
    again. Its dead letter is its record of the failure; the log says it once."""
    from squall.deploy.kcl import RecordProcessor
    from squall.topology.executor import Engine
    from tests.factories import kcl_initialize

    topo = load_text(
        "name: poisoned\nspout: {type: stdin}\nsettings: {retry: {attempts: 1}}\nbolts:\n"
        "  - {id: decode, type: json}\n"
        "  - {id: touchy, type: 'tests.topology.test_poison:TouchyBolt', trigger: boom, error: type}\n"
        "sinks:\n  - {id: rows, type: 'squall.testing:FaultySink', transient_failures: 2}\n"
        "  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}\n",
        base_dir=tmp_path,
    )
    p = RecordProcessor(Engine(topo.plan), stream="s", sleep=lambda s: None)
    kcl_initialize().dispatch(None, p)
    with caplog.at_level(logging.INFO):
        kcl_process_records([{"i": 1}, {"i": 2, "boom": 1}, {"i": 3}]).dispatch(
            KclCheckpointer(), p
        )
    retried = [r for r in caplog.records if "retrying the batch" in r.getMessage()]
    isolated = [r for r in caplog.records if "fails alone" in r.getMessage()]
    assert len(retried) == 2 and p.metrics.last.outcomes["dead_lettered"] == 1
    assert len(isolated) == 1 and isolated[0].levelno == logging.WARNING, isolated


def test_a_sink_refusing_every_record_of_a_large_batch_logs_a_few_lines_not_one_each(
    tmp_path: Path, caplog, sink_stores
):
    """A table a migration broke (every row refused: a CHECK, a NOT NULL, a type) isolates each
    record of the batch: the first ten are logged one by one, the rest in one line; every record
    is still dead-lettered with its reason."""
    import sqlite3

    from squall.testing import records_from, run_topology

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.execute("CREATE TABLE t (event_id TEXT PRIMARY KEY, n INTEGER CHECK (n < 0))")
    topo = load_text(
        f'name: refused\nresources: {{db: {{url: "sqlite:///{tmp_path / "w.db"}"}}}}\n'
        "spout: {type: stdin}\nsettings: {batch_size: 2000}\nbolts: [{id: decode, type: json}]\n"
        "sinks:\n  - {id: rows, type: warehouse, resource: db, table: t, columns: "
        "{n: {path: n, type: integer}}}\n  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}\n",
        base_dir=tmp_path,
    )
    with caplog.at_level(logging.WARNING):
        run = run_topology(topo, records_from([{"n": i} for i in range(3000)]))
    assert sum(r.counts()[Outcome.DEAD_LETTERED] for r in run.results) == 3000
    assert len(sink_stores["dlq"]) == 3000
    lines = [r.getMessage() for r in caplog.records if r.name == "squall.engine"]
    one_by_one = [x for x in lines if "fails alone, isolated from its batch" in x]
    summaries = [x for x in lines if "more record(s) of the batch fail alone" in x]
    assert len(one_by_one) == 20, lines[:3]  # ten in each of the two batches
    assert summaries == [
        "rows: 1990 more record(s) of the batch fail alone, isolated from it (not logged one by "
        "one; each has its failure reason, in its dead letter if any)",
        "rows: 990 more record(s) of the batch fail alone, isolated from it (not logged one by "
        "one; each has its failure reason, in its dead letter if any)",
    ]
