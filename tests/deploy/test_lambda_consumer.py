"""The Lambda consumer adapter: Lambda event in, batchItemFailures out, same engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from squall.deploy.lambda_consumer import make_handler
from tests.factories import kinesis_lambda_event

TOPOLOGY = """
name: lambda-test
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
{dlq}
"""


def handler_for(tmp_path: Path, *, dlq: bool):
    dl = f"  - {{id: dlq, type: dead_letter, path: {tmp_path / 'dlq.jsonl'}}}" if dlq else ""
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(db=tmp_path / "w.db", dlq=dl))
    return make_handler(t)


def test_lambda_consumer_commits_and_reports_no_failures(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    event = kinesis_lambda_event([{"n": 1}, b"not json", {"n": 2, "fail": "bad"}, {"n": 3}])
    assert handler(event, None) == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute("select sum(n) from events").fetchone() == (
        4,
    )
    assert handler(event, None) == {"batchItemFailures": []}  # a Lambda retry adds no rows
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        2,
    )
    assert len((tmp_path / "dlq.jsonl").read_text().splitlines()) == 2


def test_lambda_consumer_reports_first_failure_per_shard(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=False)
    event = kinesis_lambda_event(
        [{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3, "fail": "worse"}, {"n": 4}]
    )
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}


def test_lambda_consumer_reports_the_whole_batch_when_a_dependency_stays_down(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    [chaos] = [c for c in handler.engine.components if c.id == "chaos"]
    chaos.config = chaos.config.model_copy(update={"transient_failures": 5})
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}])
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        0,
    )
