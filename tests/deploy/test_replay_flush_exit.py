"""``squall replay``'s exit code when what the end of input's flush emits (windows still open) is
dead-lettered: no record of the input, but a dead letter written — often into the input."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.deploy.test_replay import replay

FLUSH_TOPOLOGY = """
name: replay-flush
resources:
  db: {url: "sqlite:///db.sqlite"}
spout: {type: kinesis, stream: events, endpoint_url: "http://127.0.0.1:9"}
bolts:
  - {id: decode, type: json}
  - {id: per_hour, type: window, store: db, key: [kind], time_field: ts, size: 1h,
     aggregates: {n: {fn: count}}}
  - {id: check, type: schema, schema: schema.json}
sinks:
  - {id: counts, type: warehouse, resource: db, table: counts, mode: upsert, key: [kind, start],
     columns: {kind: kind, start: window_start, n: {path: n, type: integer}}}
  - {id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}
"""


def test_output_of_the_end_of_input_flush_dead_lettered_exits_4(tmp_path: Path, monkeypatch):
    """The record goes into a window (filtered); the window, still open when the input ends, is
    emitted by the end of input's flush and rejected by the bolt below it: a new dead letter in
    rejects.jsonl. The replay exited 0 (the flush's outcome was not counted)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topology.yaml").write_text(FLUSH_TOPOLOGY)
    (tmp_path / "schema.json").write_text(json.dumps({"properties": {"n": {"maximum": 0}}}))
    record = json.dumps({"kind": "a", "ts": int(time.time() * 1000)})  # its hour is open
    meta = {"stream": "events", "shard_id": "shardId-000000000000", "sequence_number": "1"}
    dl = {"event_id": "e1", "component": "decode", "reason": "r", "meta": meta, "record": record}
    path = tmp_path / "rejects.jsonl"
    path.write_text(json.dumps(dl) + "\n")

    result = replay(tmp_path / "topology.yaml", input_path=path)

    assert result.exit_code == 4, result.output
    assert "filtered 1" in result.output  # the record itself: into the window
    assert "failed at the end: what the end of input's flush emitted" in result.output
    assert "(exit 4)" in result.output
    assert [json.loads(line)["component"] for line in path.read_text().splitlines()] == [
        "decode",
        "check",
    ]
