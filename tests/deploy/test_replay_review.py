"""``squall replay``, the review's cases: what the replay itself appends to the file it reads, an
input that breaks mid-batch, and a repeated replay of ``dead_letter_s3`` objects."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.deploy.test_replay import (  # noqa: F401 - fixtures
    EVENTS,
    SCHEMA_V1,
    SCHEMA_V2,
    TOPOLOGY,
    dead_letters,
    replay,
    rows,
    topology,
)
from tests.moto_standin import unique


def test_the_dead_letters_a_replay_appends_to_the_file_it_reads_are_not_read_back(
    topology: Path,  # noqa: F811
):
    before = dead_letters(topology)

    # Nothing fixed: each record fails again and is appended to rejects.jsonl — the file being
    # read, one record a batch, so the reader is still in it when they are written.
    result = replay(topology, "--batch-size", "1")

    assert result.exit_code == 4, result.output
    assert "read 3 dead letters: selected 3, not matching the filters 0, duplicates 0" in (
        result.output
    )
    assert "dead-lettered again 3" in result.output
    assert len(dead_letters(topology)) == len(before) + 3


def test_the_records_read_before_a_gzip_input_breaks_are_replayed(
    topology: Path,  # noqa: F811
    tmp_path: Path,
):
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))
    gz = tmp_path / "old.jsonl.gz"
    whole = gzip.compress((topology.parent / "rejects.jsonl").read_bytes())
    gz.write_bytes(whole[:-8])  # the trailer lost: every line is there, then the stream breaks

    result = replay(topology, input_path=gz)

    assert result.exit_code == 2, result.output
    assert "input stopped:" in result.output and "truncated or corrupt gzip" in result.output
    # the 3 dead letters read before the break were one (last) batch: run, not dropped
    assert "committed 1, dead-lettered again 2" in result.output
    assert [r[1] for r in rows(topology)] == [1, 2]


def test_repeating_a_replay_of_dead_letter_s3_objects_writes_no_new_dead_letter(
    moto_in_process,  # noqa: F811
    tmp_path: Path,
):
    s3 = moto_in_process.client("s3")
    bucket = unique("dl")
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V1))
    text = TOPOLOGY.format(url=f"sqlite:///{tmp_path / 'wh.db'}", table="events").replace(
        "{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}",
        f'{{id: rejects, type: dead_letter_s3, bucket: {bucket}, endpoint_url: "{moto_in_process.endpoint}"}}',
    )
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    from squall.testing import records_from, run_topology

    # One record, failing in validate an hour ago (S3's LastModified counts seconds: the
    # stand-in's clock dates the object, rather than the test waiting for the next second);
    # after the fix it fails again (n over 2): its new dead letter is an object named by the
    # same position, whose digest sorts before the first's.
    with moto_in_process.s3_clock(datetime.now(UTC) - timedelta(hours=1)):
        run_topology(path, records_from([EVENTS[2]], stream="events", start=START))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V2))
    url = f"s3://{bucket}/dead-letters/"
    args = ["--endpoint-url", moto_in_process.endpoint]

    first = replay(path, *args, input_path=url)  # type: ignore[arg-type]

    assert first.exit_code == 4 and "dead-lettered again 1" in first.output, first.output
    objects = sorted(s3.list_objects_v2(Bucket=bucket)["Contents"], key=lambda o: o["Key"])
    assert len(objects) == 2
    # the case: the re-failure's object is the newer one and its key sorts first
    assert objects[0]["LastModified"] > objects[1]["LastModified"]

    again = replay(path, *args, input_path=url)  # type: ignore[arg-type]

    assert again.exit_code == 4, again.output
    assert "selected 1, not matching the filters 0, duplicates 1" in again.output
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 2  # nothing new
    with sqlite3.connect(tmp_path / "wh.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)


#: The first sequence number of the S3 case, chosen so that the replay's new object sorts first.
START = 100


WINDOW_TOPOLOGY = """
name: replay-window
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: kinesis, stream: events, endpoint_url: "http://127.0.0.1:9"}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: schema.json}}
  - id: per_hour
    type: window
    store: db
    key: [kind]
    time_field: ts
    size: 1h
    aggregates: {{n: {{fn: count}}}}
sinks:
  - id: counts
    type: warehouse
    resource: db
    table: counts
    mode: upsert
    key: [kind, start]
    columns: {{kind: kind, start: window_start, n: {{path: n, type: integer}}}}
  - {{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}}
"""


def test_a_window_counts_a_record_replayed_after_a_later_one_of_its_shard(tmp_path: Path):
    from squall.testing import records_from, run_topology

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"kind": {"enum": ["a"]}}}))
    path = tmp_path / "topology.yaml"
    path.write_text(WINDOW_TOPOLOGY.format(db=tmp_path / "db.sqlite"))
    now = int(time.time() * 1000)  # the hour's window is open
    events = [json.dumps({"kind": k, "ts": now}).encode() for k in ("c", "d", "c")]
    run_topology(path, records_from(events, stream="events", start=100))
    schema.write_text(
        json.dumps({"type": "object", "properties": {"kind": {"enum": ["a", "c", "d"]}}})
    )
    dl = str(tmp_path / "rejects.jsonl")

    assert replay(path, "--reason-contains", "'c'", input_path=dl).exit_code == 0  # 100, 102
    assert replay(path, "--reason-contains", "'d'", input_path=dl).exit_code == 0  # 101

    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert sorted(db.execute("SELECT kind, n FROM counts")) == [("c", 2), ("d", 1)]


def test_a_record_failing_again_holds_back_no_other_replayed_record_of_its_shard_id(
    tmp_path: Path,
):
    """Replayed records are of a lineage each (``squall.event.lineage``), whatever their stream
    and shard: one that fails again (no dead-letter sink: it is failed) must not keep the state
    of the records after it in the batch — another stream's ``shardId-000000000000``, or its own
    — from being committed (a replay delivers none of them again)."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"kind": {"enum": ["a"]}}}))
    path = tmp_path / "topology.yaml"
    path.write_text(
        WINDOW_TOPOLOGY.format(db=tmp_path / "db.sqlite").replace(
            "  - {id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}\n", ""
        )
    )
    now = int(time.time() * 1000)  # the hour's window is open
    shard = "shardId-000000000000"  # every stream has it
    docs = [
        ("other", "1", "x"),  # fails again (kind 'x' is still invalid)
        ("events", "2", "a"),  # another stream, the same shard id
        ("other", "3", "a"),  # the failed record's own stream and shard
    ]
    dl = tmp_path / "dl.jsonl"
    dl.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"e{seq}",
                    "component": "validate",
                    "reason": "r",
                    "meta": {"stream": stream, "shard_id": shard, "sequence_number": seq},
                    "record": json.dumps({"kind": kind, "ts": now}),
                }
            )
            + "\n"
            for stream, seq, kind in docs
        )
    )

    result = replay(path, input_path=dl)

    assert result.exit_code == 1, result.output
    assert "committed 0, dead-lettered again 0, filtered 2, failed 1" in result.output  # counted
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert sorted(db.execute("SELECT kind, n FROM counts")) == [("a", 2)]


def test_a_gzip_input_that_breaks_is_named_with_the_line_it_breaks_at(tmp_path: Path):
    """A truncated .gz said `unreadable after 2 dead letters`: a count of the documents it had
    parsed (blank lines left out, lines that are no dead letter in), not where the file broke."""
    from squall.deploy.dead_letters import Unreadable, read_file
    from squall.errors import SquallError

    meta = {"stream": "s", "shard_id": "shardId-000000000000", "sequence_number": "1"}
    doc = {"event_id": "e", "component": "c", "reason": "r", "meta": meta, "record": "{}"}
    text = b"\n".join([json.dumps(doc).encode(), b"", b"not json", json.dumps(doc).encode(), b""])
    gz = tmp_path / "rejects.jsonl.gz"
    gz.write_bytes(gzip.compress(text)[:-8])  # the trailer lost: 4 whole lines, then the break

    items = []
    with pytest.raises(SquallError) as err:
        items.extend(read_file(gz))

    assert str(err.value).startswith(f"{gz}:5: unreadable from this line on (truncated or corrupt")
    assert str(err.value).endswith("lines 1-4 were read")
    assert [type(i).__name__ for i in items] == ["DeadLetter", "Unreadable", "DeadLetter"]
    assert isinstance(items[1], Unreadable) and items[1].where == f"{gz}:3"
