"""Records after a failed record of their lineage are held back from the sinks.

The source delivers the failed record again and every later record of its shard (its lineage)
with it: Kinesis from the failed sequence number, an SQS FIFO group, a checkpointed file. Writing
those later records now wrote them twice — and, in an SQS FIFO group, ahead of the failed one —
and counted them committed on every delivery (a stuck shard looked like throughput). They are
``Outcome.HELD`` now: not written, not counted committed, their state not committed.
"""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest

from squall.event import Record, RecordMeta
from squall.observability.metrics import METRICS
from squall.testing import MemorySink, run_topology
from squall.topology.outcomes import Outcome


@pytest.fixture
def tag():
    return f"t{uuid.uuid4().hex[:8]}"


def records(spec: list[tuple[str, dict]]) -> list[Record]:
    seq: dict[str, int] = {}
    out = []
    for shard, payload in spec:
        seq[shard] = seq.get(shard, 0) + 1
        out.append(Record(orjson.dumps(payload), RecordMeta("s", shard, str(seq[shard]), 0, "pk")))
    return out


def yaml(tag: str, sinks: str) -> str:
    return f"""
name: hold-{tag}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt'}}
sinks:
{sinks}"""


def test_a_failed_record_holds_back_the_rest_of_its_shard_only(tag):
    """No dead-letter sink: the failing record fails, the two after it on shard A are held (not
    written), shard B's records are written; the checkpoint stops before the failure."""
    text = yaml(tag, f"  - {{id: out, type: 'squall.testing:MemorySink', name: '{tag}-out'}}\n")
    batch = records(
        [
            ("A", {"n": 0}),
            ("B", {"n": 1}),
            ("A", {"n": 2, "fail": "bad"}),
            ("B", {"n": 3}),
            ("A", {"n": 4}),
            ("A", {"n": 5, "drop": True}),
            ("B", {"n": 6}),
        ]
    )
    run = run_topology(text, batch, batch_size=len(batch))
    [result] = run.results
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.COMMITTED,
        Outcome.FAILED,
        Outcome.COMMITTED,
        Outcome.HELD,
        Outcome.HELD,
        Outcome.COMMITTED,
    ]
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 1, 3, 6]
    assert result.checkpoint["A"].sequence_number == "1"
    assert result.checkpoint["B"].sequence_number == "3"
    assert result.count(Outcome.HELD) == 2 and not result.ok


def test_a_sink_that_fails_a_record_holds_it_back_from_the_sinks_written_after_it(tag):
    """The first sink fails record 1 after its retries (a partial write failure): the second
    sink, written after, gets neither it (it fails) nor record 2 of the same shard (held); record
    2 is in the first sink's rows already (the same write), and comes again all the same."""
    sinks = (
        f"  - {{id: first, type: 'squall.testing:FaultySink', name: '{tag}-first'}}\n"
        f"  - {{id: second, type: 'squall.testing:MemorySink', name: '{tag}-second'}}\n"
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: '{tag}-dlq'}}\n"
    )
    batch = records([("A", {"n": 0}), ("A", {"n": 1, "sink_fail": True}), ("A", {"n": 2})])
    run = run_topology(yaml(tag, sinks), batch, batch_size=3)
    [result] = run.results
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED, Outcome.FAILED, Outcome.HELD]
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-first"]] == [0, 2]
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-second"]] == [0]


def test_the_log_does_not_say_held_records_were_not_written_when_a_sink_wrote_them(tag, caplog):
    """Record 2 is held, and already in the first sink's rows (the same write: a Kinesis
    PutRecords that throttled record 1 only, with its retries spent). The failure log said of
    held records "not written": an operator counting the curated stream's duplicates was told
    there were none. It says they are not committed and what a sink that wrote them gets."""
    sinks = (
        f"  - {{id: first, type: 'squall.testing:FaultySink', name: '{tag}-first'}}\n"
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: '{tag}-dlq'}}\n"
    )
    batch = records([("A", {"n": 0}), ("A", {"n": 1, "sink_fail": True}), ("A", {"n": 2})])
    [result] = run_topology(yaml(tag, sinks), batch, batch_size=3).results
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-first"]] == [0, 2]
    with caplog.at_level(logging.ERROR, logger="t"):
        result.log_failures(logging.getLogger("t"))
    assert "1 record(s) held back" in caplog.text and "not written" not in caplog.text
    assert "not committed, they come again with it (a sink that wrote them" in caplog.text


def test_the_records_metric_does_not_say_held_records_were_not_written():
    """The records metric's description (Prometheus ``HELP``, the dashboards' legend) said of
    held records "not written", as the failure log did, of records a sink may have written in
    the call that failed the record before them (the test above)."""
    [spec] = [m for m in METRICS if m.prometheus == "squall_topology_records_total"]
    assert "not written" not in spec.help
    assert "held (after a failed record of its shard: not committed, it comes again)" in spec.help


def test_held_records_are_written_once_when_the_shard_moves_on(tag):
    """Delivered again after the cause went away, the held records are written once."""
    text = yaml(tag, f"  - {{id: out, type: 'squall.testing:MemorySink', name: '{tag}-out'}}\n")
    first = run_topology(
        text, records([("A", {"n": 0}), ("A", {"n": 1, "fail": "x"}), ("A", {"n": 2})])
    )
    assert first.results[0].count(Outcome.HELD) == 1
    again = records([("A", {"n": 0}), ("A", {"n": 1}), ("A", {"n": 2})])[1:]  # from the failure
    second = run_topology(text, again)
    assert second.results[0].ok
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 1, 2]


def test_the_failure_log_says_how_many_records_were_held(tag, caplog):
    text = yaml(tag, f"  - {{id: out, type: 'squall.testing:MemorySink', name: '{tag}-out'}}\n")
    run = run_topology(
        text, records([("A", {"n": 0, "fail": "x"}), ("A", {"n": 1}), ("A", {"n": 2})])
    )
    log = logging.getLogger("t")
    with caplog.at_level(logging.ERROR, logger="t"):
        run.results[0].log_failures(log)
    assert "2 record(s) held back with them (after a failed record of their shard" in caplog.text


def test_with_a_dead_letter_sink_nothing_is_held(tag):
    """The usual production topology: a record's own problem is dead-lettered (settled), so the
    records after it are written as before."""
    sinks = (
        f"  - {{id: out, type: 'squall.testing:MemorySink', name: '{tag}-out'}}\n"
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: '{tag}-dlq'}}\n"
    )
    run = run_topology(yaml(tag, sinks), records([("A", {"n": 0, "fail": "x"}), ("A", {"n": 1})]))
    assert [o.outcome for o in run.results[0].records] == [
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    assert [ev.value["n"] for ev in MemorySink.stores[f"{tag}-out"]] == [1]


def test_the_console_status_shows_held_records_only_when_there_are_some():
    from squall.deploy.console import _status
    from squall.observability.progress import Totals

    t = Totals()
    t.outcomes.update(committed=5, failed=1)
    assert _status(t).endswith("ok 5 dl 0 filt 0 fail 1")
    t.outcomes["held"] = 3
    assert _status(t).endswith("ok 5 dl 0 filt 0 fail 1 held 3")
