"""A result a bolt made (a window's) that a sink refuses is dead-lettered with its values: it
has no record bytes of its own, so its payload is kept whatever ``include_payload`` says, and
``squall replay`` reports it unreplayable instead of running an empty record through the
topology (hC: before, the dead letter held ``"record": ""`` and nothing else of the result, and
a replay dead-lettered it again as "invalid JSON: … empty document")."""

from __future__ import annotations

import json

from click.testing import CliRunner

from squall.cli import main
from squall.deploy.dead_letters import DeadLetter, parse
from squall.event import Event, RecordMeta
from squall.sinks.dead_letter import dead_letter_line
from squall.testing import records_from, run_topology

BASE = 1_796_000_000_000


def _topology(tmp_path):
    return f"""
name: derived-dl
resources: {{db: {{url: "sqlite:///{tmp_path / "w.db"}"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: minutely
    type: window
    store: db
    key: [app]
    size: 1m
    time_field: ts
    aggregates: {{n: {{fn: count}}}}
sinks:
  - id: results
    type: warehouse
    resource: db
    table: per_minute
    mode: upsert
    key: [window_start, app]
    columns: {{window_start: {{path: window_start, type: timestamp}}, app: app, busy: {{path: n, type: boolean}}}}
  - {{id: rejects, type: dead_letter, path: "{tmp_path / "rejects.jsonl"}"}}
"""


def test_a_refused_window_result_keeps_its_values_and_is_not_replayed(tmp_path):
    # Two events of app "a" make n = 2, which the boolean column refuses; the third closes the window.
    payloads = [{"app": "a", "ts": BASE}, {"app": "a", "ts": BASE + 1000}]
    payloads.append({"app": "b", "ts": BASE + 600_000})
    run_topology(_topology(tmp_path), records_from(payloads))
    (line,) = (tmp_path / "rejects.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["component"] == "results"
    assert doc["record"] == ""
    assert doc["payload"]["app"] == "a"
    assert doc["payload"]["n"] == 2
    letter = parse(doc, "rejects.jsonl:1")
    assert isinstance(letter, DeadLetter)
    assert letter.unreplayable is not None and "record is empty" in letter.unreplayable

    (tmp_path / "topology.yaml").write_text(_topology(tmp_path))
    result = CliRunner().invoke(
        main, ["replay", str(tmp_path / "topology.yaml"), str(tmp_path / "rejects.jsonl")]
    )
    assert "unreplayable 1" in result.output, result.output
    assert "record is empty" in result.output
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 1  # nothing new


def test_a_record_with_bytes_keeps_include_payload_false():
    meta = RecordMeta("s", "shard-0", "1")
    assert "payload" not in dead_letter_line(Event(b'{"a": 1}', meta, "id-1", 0, {"a": 1}))
    assert dead_letter_line(Event(b"", meta, "id-2", 0, {"n": 2}))["payload"] == {"n": 2}
    assert "payload" not in dead_letter_line(Event(b"", meta, "id-3", 0, None))


def test_a_window_result_over_the_destinations_limit_says_its_values_were_dropped():
    # SQS's 256 KiB, Kinesis's 1 MiB: ``fitted`` drops the payload first. A result a bolt made
    # has nothing else, and its dead letter held no sign of it: the replay's report said "its
    # values are the dead letter's payload", which was not there (hG).
    from squall.event import Failure
    from squall.sinks.dead_letter_aws import fitted

    meta = RecordMeta("s", "shard-0", "1")
    ev = Event(b"", meta, "id-1", 0, {"app": "a", "last_body": "x" * 300_000, "n": 2})
    ev.failure = Failure("results", "column 'busy': cannot store 2 from 'n' as boolean", "error")
    data = fitted(ev, 256 * 1024, include_payload=False)
    assert len(data) <= 256 * 1024
    doc = json.loads(data)
    assert "payload" not in doc
    assert doc["payload_dropped"] > 300_000
    letter = parse(doc, "sqs:1")
    assert isinstance(letter, DeadLetter)
    assert "payload was dropped to fit the dead letter" in letter.unreplayable
    assert "values are the dead letter's payload" not in letter.unreplayable
    # one that fits keeps its payload, and no marker
    ev.value = {"app": "a", "n": 2}
    doc = json.loads(fitted(ev, 256 * 1024, include_payload=False))
    assert doc["payload"] == {"app": "a", "n": 2} and "payload_dropped" not in doc


def test_a_records_payload_dropped_to_fit_is_marked_and_the_record_still_replays():
    from squall.event import Failure
    from squall.sinks.dead_letter_aws import fitted

    ev = Event(b'{"a": 1}', RecordMeta("s", "shard-0", "1"), "id-1", 0, {"a": "y" * 2000})
    ev.failure = Failure("results", "no", "error")
    doc = json.loads(fitted(ev, 1000, include_payload=True))
    assert doc["record"] == '{"a": 1}' and doc["payload_dropped"] > 2000
    letter = parse(doc, "sqs:1")
    assert isinstance(letter, DeadLetter) and letter.unreplayable is None


def test_an_empty_record_without_a_payload_says_its_values_were_not_kept():
    # A dead letter written before results kept their payload (or by hand): the report said
    # "its values are the dead letter's payload", which it does not hold (hG).
    meta = {"stream": "stdin", "shard_id": "stdin", "sequence_number": "3"}
    doc = {"event_id": "id-1", "component": "results", "reason": "no", "record": "", "meta": meta}
    letter = parse(doc, "rejects.jsonl:1")
    assert isinstance(letter, DeadLetter)
    assert "holds no payload: its values were not kept" in letter.unreplayable
    letter = parse({**doc, "payload": {"n": 2}}, "rejects.jsonl:2")
    assert "its values are the dead letter's payload" in letter.unreplayable
