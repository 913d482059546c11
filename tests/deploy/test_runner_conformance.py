"""One scenario through every runner: the bare engine, the local runner, the Lambda consumer, the KCL processor.

Runners only adapt their platform to the engine, so the same records must give the same rows,
the same dead letters and an acknowledgement of the same records everywhere.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import orjson
import pytest

from squall.deploy.kcl import RecordProcessor
from squall.deploy.lambda_consumer import make_handler
from squall.deploy.local import LocalRunner
from squall.testing import records_from, run_topology
from squall.topology.executor import Engine
from squall.topology.loader import load
from tests.factories import (
    KclCheckpointer,
    kcl_initialize,
    kcl_process_records,
    kinesis_lambda_event,
)

PAYLOADS = [
    {"id": "e1", "event_type": "click", "n": 1},
    b"{not json",
    {"id": "e2", "event_type": "page_view", "n": 2},
    {"id": "e3", "n": 3},  # no event type: invalid
    {"id": "e4", "event_type": "click", "n": "four"},  # not an integer: the warehouse rejects it
    {"id": "e5", "event_type": "click", "n": 5, "bot": True},  # filtered
    {"id": "e1", "event_type": "click", "n": 1},  # a producer retry: same id, no new row
]

TOPOLOGY = """
name: conformance
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {spout}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: validate, type: schema, schema: {{type: object, required: [event_type]}}}}
  - {{id: humans, type: filter, action: drop, where: [{{field: bot, equals: true}}]}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events,
     columns: {{kind: event_type, n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""

EXPECTED_ROWS = [("e1", "click", 1), ("e2", "page_view", 2)]
EXPECTED_DEAD = {
    ("decode", "invalid JSON"),
    ("validate", "schema: $: 'event_type' is a required property"),
    ("rows", "column 'n': cannot store 'four' from 'n' as integer"),
}


def write_topology(tmp_path: Path, spout: str = "{type: stdin}") -> Path:
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(db=tmp_path / "w.db", dlq=tmp_path / "dlq.jsonl", spout=spout))
    return t


def outcome(tmp_path: Path) -> tuple[list, set]:
    rows = (
        sqlite3.connect(tmp_path / "w.db")
        .execute("select event_id, kind, n from events order by n")
        .fetchall()
    )
    dead = {
        (d["component"], d["reason"].split(":")[0] if d["component"] == "decode" else d["reason"])
        for d in map(json.loads, (tmp_path / "dlq.jsonl").read_text().splitlines())
    }
    return rows, dead


def data(p) -> bytes:
    return p if isinstance(p, bytes) else orjson.dumps(p)


def run_engine(tmp_path: Path) -> None:
    run = run_topology(load(write_topology(tmp_path)), records_from([data(p) for p in PAYLOADS]))
    assert run.results[0].ok


def run_local(tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(data(p) for p in PAYLOADS) + b"\n")
    report = LocalRunner(load(write_topology(tmp_path, f"{{type: file, path: {src}}}"))).run()
    assert report.exit_code == 0


def run_lambda(tmp_path: Path) -> None:
    handler = make_handler(write_topology(tmp_path))
    assert handler(kinesis_lambda_event([data(p) for p in PAYLOADS]), None) == {
        "batchItemFailures": []
    }


def run_kcl(tmp_path: Path) -> None:
    processor = RecordProcessor(Engine(load(write_topology(tmp_path)).plan), stream="s")
    kcl_initialize("shardId-000000000000").dispatch(None, processor)
    cp = KclCheckpointer()
    kcl_process_records(PAYLOADS).dispatch(cp, processor)
    assert cp.calls == [(str(100 + len(PAYLOADS) - 1), 0)]


@pytest.mark.parametrize(
    "runner", [run_engine, run_local, run_lambda, run_kcl], ids=["engine", "local", "lambda", "kcl"]
)
def test_same_records_same_rows_same_dead_letters_under_every_runner(tmp_path: Path, runner):
    runner(tmp_path)
    rows, dead = outcome(tmp_path)
    assert rows == EXPECTED_ROWS
    assert dead == EXPECTED_DEAD
    runner(tmp_path)  # a redelivery of everything changes nothing
    assert outcome(tmp_path) == (rows, dead)
