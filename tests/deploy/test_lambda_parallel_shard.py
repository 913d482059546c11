"""One shard in several Lambda batches at once (``ParallelizationFactor`` > 1), through the real
Lambda handler: the records of each partition key come in order, but the sequence numbers of
two concurrent batches interleave and they commit in any order. A `window` bolt's marks are per
shard, so the batch committing second has its records below the first's mark taken for replays:
the bolt says so in a WARNING (docs/windows.md, "One batch per shard at a time"); with factor 1
(what `squall package` writes) the same records are all counted."""

from __future__ import annotations

import base64
import logging
import sqlite3
from pathlib import Path

import orjson
import pytest

from squall.deploy.lambda_consumer import make_handler
from tests.bolts.test_window import store_url  # noqa: F401

TOPOLOGY = """
name: {name}
resources:
  state: {{url: "{state}"}}
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: counts
    type: window
    store: state
    key: [k]
    size: 1m
    key_prefix: "test:{name}:"
    table: t_{name}
    aggregates: {{n: {{fn: count}}}}
sinks:
  - id: out
    type: warehouse
    resource: db
    table: counts
    columns: {{k: k, window_start: window_start, n: {{path: n, type: integer}}}}
    mode: upsert
    key: [k, window_start]
"""
FIRST = 49590338271490256608559692538361571095921575989136588800


def payload(second: int) -> dict:
    """An event of key x, ``second`` seconds after 10:00 (the window's first minute)."""
    return {"k": "x", "timestamp": f"2024-05-01T10:{second // 60:02d}:{second % 60:02d}Z"}


def record(i: int, key: str, second: int) -> dict:
    data = orjson.dumps(payload(second))
    seq = str(FIRST + i)
    return {
        "kinesis": {
            "partitionKey": key,
            "sequenceNumber": seq,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1714557600.0,
        },
        "eventSource": "aws:kinesis",
        "eventID": f"shardId-000000000000:{seq}",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/pistats",
    }


def handlers(tmp_path: Path, state: str, name: str):
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(name=name, state=state, db=tmp_path / "w.db"))
    return make_handler(t), make_handler(t)  # two containers, one per concurrent batch


def counted(tmp_path: Path) -> list[tuple]:
    return sqlite3.connect(tmp_path / "w.db").execute("select k, n from counts").fetchall()


def test_two_concurrent_batches_of_one_shard_lose_records_with_a_warning(
    store_url,  # noqa: F811
    unique_name,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    """Six records of one shard, partition keys a and b alternating: Lambda (factor 2) gives a's
    three to one container and b's to another. a's batch commits first (mark at record 4); b's
    records 1 and 3 lie below it and are dropped as replays, its record 5 counted: the window
    says 4, not 6 — and the WARNING names the shard and the two records."""
    a_side, b_side = handlers(tmp_path, store_url, unique_name)
    records = [record(i, "ab"[i % 2], i) for i in range(6)]
    assert a_side({"Records": records[0::2]}, None) == {"batchItemFailures": []}
    with caplog.at_level(logging.WARNING, logger="squall.window"):
        assert b_side({"Records": records[1::2]}, None) == {"batchItemFailures": []}
    assert a_side({"Records": [record(9, "a", 300)]}, None) == {"batchItemFailures": []}
    assert counted(tmp_path) == [("x", 4)]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "squall.window"]
    assert "counts: 2 record(s) of shardId-000000000000 pistats at or before its mark" in warning
    assert "ParallelizationFactor 1" in warning


def test_the_same_records_in_one_batch_after_another_are_all_counted_without_a_warning(
    store_url,  # noqa: F811
    unique_name,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    """Factor 1: the shard's records in order, in two batches one after the other (and the
    second delivered again, as after a crash past its state commit): all six counted once; only
    the repeat is taken for a replay, and warned about."""
    first, second = handlers(tmp_path, store_url, unique_name)
    records = [record(i, "ab"[i % 2], i) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="squall.window"):
        assert first({"Records": records[:3]}, None) == {"batchItemFailures": []}
        assert second({"Records": records[3:]}, None) == {"batchItemFailures": []}
        assert not [r for r in caplog.records if r.name == "squall.window"]
        assert first({"Records": records[3:]}, None) == {"batchItemFailures": []}
    assert second({"Records": [record(9, "a", 300)]}, None) == {"batchItemFailures": []}
    assert counted(tmp_path) == [("x", 6)]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "squall.window"]
    assert "3 record(s) of shardId-000000000000 pistats" in warning


def test_a_file_read_again_is_taken_for_replays_without_a_warning(
    tmp_path: Path, unique_name, caplog: pytest.LogCaptureFixture
):
    """The file spout keeps no checkpoint: a run after a crash reads the file from its first
    line, and the records counted before are replays by design — no WARNING for them."""
    from squall.event import Event, RecordMeta
    from tests.bolts.test_window import make_bolt, run

    def line(i: int) -> Event:
        meta = RecordMeta("events.jsonl", "file", str(i), 0, source="f0")
        return Event(b"", meta, None, i, {"timestamp": 1714557600000 + i, "app": "a"})

    bolt = make_bolt(f"sqlite:///{tmp_path / 'state.db'}", unique_name)
    with caplog.at_level(logging.WARNING, logger="squall.window"):
        run(bolt, [line(i) for i in range(1, 4)])
        out = bolt.process([line(i) for i in range(1, 5)])
    assert len(out.dropped) == 4  # three replays, one counted (consumed)
    assert not [r for r in caplog.records if r.name == "squall.window"]
