"""A poison record does not make a sink deliver the other events of its batch twice.

The isolation of a record whose ``write_batch`` raises writes parts of the batch for real. A
sink written on its own (a webhook, a queue, a push notification: visible actions) counts those
part writes as the batch's write: each good event is delivered once. A sink of the batch's SQL
transaction gets the rest again inside the transaction (rows, state and checkpoint commit
together); its writes are upserts (``test_transaction_properties.py``).
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from squall.event import Event, Failure
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome

DELIVERED: dict[str, Counter] = {}


class CountingSink(MemorySink):
    """Delivers each event of a write (counted per event id) unless one carries ``boom``: then the
    whole call raises before anything is sent. ``soft`` events fail (``WriteResult.failed``),
    ``refuse`` ones are refused for good (``WriteResult.rejected``)."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        if any("boom" in ev.value for ev in prepared.events):
            raise ValueError("cannot send it")
        sent = DELIVERED.setdefault(self.config.name or self.id, Counter())
        failed = [ev for ev in prepared.events if "soft" in ev.value]
        refused = [ev for ev in prepared.events if "refuse" in ev.value]
        bad = {id(ev) for ev in failed + refused}
        for ev in refused:
            ev.failure = Failure(self.id, "refused for good")
        good = [ev for ev in prepared.events if id(ev) not in bad]
        sent.update(ev.value["i"] for ev in good)
        self.store.extend(good)
        return WriteResult(failed=failed, written=len(good), rejected=refused)


def topology(tag: str, *, dead_letter: bool = True) -> str:
    dl = (
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}\n"
        if dead_letter
        else ""
    )
    return f"""
name: once
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: '{__name__}:CountingSink', name: {tag}-out}}
{dl}"""


@pytest.fixture
def tag():
    name = f"o{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("out", "dlq"):
        MemorySink.stores.pop(f"{name}-{suffix}", None)
    DELIVERED.pop(f"{name}-out", None)


def _payloads(n: int, marks: dict[int, str]) -> list[dict]:
    return [{"i": i, marks[i]: True} if i in marks else {"i": i} for i in range(n)]


def stats_of(run, node_id: str):
    nodes = run.engine.plan.nodes
    return next(s for n, s in zip(nodes, run.engine.stats, strict=True) if n.id == node_id)


@pytest.mark.parametrize("poison", [{3}, {0, 17, 29}, set(range(0, 30, 2))])
def test_each_good_event_is_delivered_once_when_a_poison_record_is_isolated(tag, poison):
    run = run_topology(
        topology(tag), records_from(_payloads(30, dict.fromkeys(poison, "boom"))), batch_size=30
    )
    sent = DELIVERED[f"{tag}-out"]
    good = [i for i in range(30) if i not in poison]
    assert sent == Counter(good)  # once each, not twice
    dead = sorted(ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"])
    assert dead == sorted(poison)
    outcomes = {o.index: o.outcome for o in run.outcomes}
    assert outcomes == {
        i: Outcome.DEAD_LETTERED if i in poison else Outcome.COMMITTED for i in range(30)
    }
    out = stats_of(run, "out")
    assert (out.received, out.emitted, out.dead_lettered, out.failed) == (
        30,
        len(good),
        len(poison),
        0,
    )
    assert (out.written, out.present) == (len(good), 0)


def test_a_parts_failed_and_refused_events_keep_their_outcomes_and_are_sent_once(tag):
    marks = {2: "boom", 5: "soft", 11: "refuse", 20: "boom", 23: "soft"}
    run = run_topology(topology(tag), records_from(_payloads(24, marks)), batch_size=24)
    # The parts go in order: [0, 1] [2] [3, 4, 5] — 5 fails there, and the later parts send
    # nothing of its shard (one shard here): 6..23 are held (they come again), not sent ahead.
    assert DELIVERED[f"{tag}-out"] == Counter([0, 1, 3, 4])
    want = {
        "boom": Outcome.DEAD_LETTERED,
        "soft": Outcome.FAILED,
        "refuse": Outcome.DEAD_LETTERED,
    }
    outcomes = {o.index: o.outcome for o in run.outcomes}
    # after a failed record of its shard (one shard here) a record is held: it comes again (its
    # dead letter is written, and written again idempotently)
    first_failed = min(i for i, m in marks.items() if m == "soft")
    for i in range(24):
        expected = want[marks[i]] if i in marks else Outcome.COMMITTED
        if i > first_failed:  # (23 too: held, its write not tried)
            expected = Outcome.HELD
        assert outcomes[i] is expected, i
    dead = {ev.value["i"]: ev.failure.reason for ev in MemorySink.stores[f"{tag}-dlq"]}
    assert dead == {2: "ValueError: cannot send it"}  # 11 and 20 are held: not tried yet
    out = stats_of(run, "out")
    # the held records are the sink's when they come again (as a sink written after a failure)
    assert (out.received, out.emitted, out.dead_lettered, out.failed) == (6, 4, 1, 1)
    assert (out.written, out.present) == (4, 0)


def test_without_a_dead_letter_sink_the_poison_fails_and_the_rest_is_sent_once(tag):
    run = run_topology(
        topology(tag, dead_letter=False), records_from(_payloads(16, {9: "boom"})), batch_size=16
    )
    # 10..15 are held (9 fails, it comes again): the later parts do not send them ahead of it
    assert DELIVERED[f"{tag}-out"] == Counter(range(9))
    assert stats_of(run, "out").received == 10
    outcomes = [o.outcome for o in run.outcomes]
    assert outcomes == [Outcome.COMMITTED] * 9 + [Outcome.FAILED] + [Outcome.HELD] * 6
    assert run.results[0].checkpoint == {run.outcomes[8].shard_id: run.outcomes[8].position}


class RowMakingSink(CountingSink):
    """A sink whose ``prepare`` makes new events (rows) it cannot read back: the isolation gives
    it the events it was given; a ``copy`` record is refused as a copy of its row."""

    def prepare(self, events: list[Event]) -> Prepared:
        if not all(ev.value.get("orig") for ev in events):
            raise KeyError("orig")  # (a record's fault: it would dead-letter every record)
        rows = []
        for ev in events:
            row = ev.fork()
            row.value = {k: v for k, v in ev.value.items() if k != "orig"}
            rows.append(row)
        return Prepared(rows)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        got = super().write_batch(prepared, ctx)
        for ev in prepared.events:
            if "copy" in ev.value:
                copy = ev.fork()
                copy.failure = Failure(self.id, "refused, a copy")
                got.rejected.append(copy)
        return got


def test_a_sink_whose_prepare_makes_new_events_sends_each_once_too(tag):
    marks = {1: "boom", 4: "copy", 6: "soft", 9: "boom"}
    payloads = [dict(p, orig=True) for p in _payloads(12, marks)]
    yaml = topology(tag).replace(f"{__name__}:CountingSink", f"{__name__}:RowMakingSink")
    run = run_topology(yaml, records_from(payloads), batch_size=12)
    sent = DELIVERED[f"{tag}-out"]
    # 4 is sent, then refused; 7 and 8 went in the call that failed 6; 9..11 are held
    assert sent == Counter([0, 2, 3, 4, 5, 7, 8])
    outcomes = {o.index: o.outcome for o in run.outcomes}
    assert [outcomes[i] for i in (1, 4, 6, 9)] == [
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
        Outcome.FAILED,
        Outcome.HELD,  # after the failed record 6 of its shard: it comes again with it
    ]
    assert all(outcomes[i] is Outcome.COMMITTED for i in (0, 2, 3, 5))
    assert all(outcomes[i] is Outcome.HELD for i in (7, 8, 10, 11))
    dead = sorted((ev.value["i"], ev.failure.reason) for ev in MemorySink.stores[f"{tag}-dlq"])
    assert dead == [(1, "ValueError: cannot send it"), (4, "refused, a copy")]


def _two_shards(n: int, marks: dict[int, str]) -> list:
    """Records 0..n-1 alternating between two shards (even: shard 0, odd: shard 1), in order."""
    recs = records_from(_payloads(n, marks))
    out = []
    for i, rec in enumerate(recs):
        meta = rec.meta
        shard = f"shardId-00000000000{i % 2}"
        out.append(type(rec)(rec.data, type(meta)(meta.stream, shard, str(i + 1), 0, "pk")))
    return out


def test_isolation_writes_no_record_ahead_of_a_poison_record_that_fails(tag):
    """No dead-letter sink: the poison record fails (it comes again), so the later records of its
    shard are held — the isolation's part writes must not send them now (ahead of it, and again
    when they come again), as a sink written after a failure does not. The other shard's are sent."""
    run = run_topology(
        topology(tag, dead_letter=False),
        _two_shards(16, {8: "boom"}),
        batch_size=16,
    )
    outcomes = {o.index: o.outcome for o in run.outcomes}
    held = [i for i in range(16) if i % 2 == 0 and i > 8]
    assert [i for i, o in outcomes.items() if o is Outcome.HELD] == held
    assert outcomes[8] is Outcome.FAILED
    assert DELIVERED[f"{tag}-out"] == Counter(i for i in range(16) if i != 8 and i not in held)
    out = stats_of(run, "out")
    # the held ones are the sink's when they come again (as a sink written after a failure)
    assert (out.received, out.emitted, out.failed) == (16 - len(held), 16 - len(held) - 1, 1)


def test_isolation_writes_no_record_ahead_of_one_a_part_reported_failed(tag):
    """A part's write reports a record failed (``WriteResult.failed``): the later records of its
    shard are held, not sent by the later parts — an SQS FIFO group's order. Poison 2 is
    dead-lettered; 5 (shard 1) fails; 7, 9, ... of shard 1 are held; shard 0 goes on."""
    marks = {2: "boom", 5: "soft", 12: "boom"}
    run = run_topology(topology(tag), _two_shards(16, marks), batch_size=16)
    outcomes = {o.index: o.outcome for o in run.outcomes}
    held = [i for i in range(7, 16, 2)]
    assert [i for i, o in outcomes.items() if o is Outcome.HELD] == held
    assert (outcomes[2], outcomes[5], outcomes[12]) == (
        Outcome.DEAD_LETTERED,
        Outcome.FAILED,
        Outcome.DEAD_LETTERED,
    )
    sent = DELIVERED[f"{tag}-out"]
    # 7 went in the very call that failed 5 (the sink's own answer: an SQS FIFO queue's sink
    # holds it itself); the later parts' calls send none of shard 1's later records
    later = [9, 11, 13, 15]
    assert not set(sent) & set(later)
    assert sent == Counter(i for i in range(16) if i not in marks and i not in later)
    assert run.results[0].checkpoint["shardId-000000000001"].sequence_number == "4"
