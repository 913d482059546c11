"""Property test of the delivery contract when a sink's write raises on a record (poison
isolation: the engine splits the write in halves, in order, and the parts' writes are the write).

Over random batches of two shards with records that fail the write (``WriteResult.failed``) and
records that make it raise, with and without a dead-letter sink: every record has one outcome;
a committed record is written exactly once, a failed one never; each shard's outcomes are settled
records, then (from its first failed record on) failed or held ones only; the checkpoint is the
last settled record of each shard; the counts add up; and no call after the one where a record
was known to fail writes a later record of its shard (the held-records rule: an SQS FIFO group's
order — a record is not written ahead of a failed one of its lineage, and again when it comes again).
"""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.event import Record, RecordMeta
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import FaultySink, MemorySink, run_topology
from squall.topology.outcomes import Outcome

CALLS: dict[str, list[tuple[list[int], list[int], bool]]] = {}

KIND = st.sampled_from(["ok", "ok", "ok", "ok", "sink_fail", "poison"])


class LoggingSink(FaultySink):
    """FaultySink whose whole call raises (before writing) when an event is ``poison``; every call
    is logged: the records it was given, those it failed, whether it raised."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        log = CALLS.setdefault(self.config.name or self.id, [])
        given = [ev.value["i"] for ev in prepared.events]
        if any(ev.value.get("poison") for ev in prepared.events):
            log.append((given, [], True))
            raise ValueError("poison")
        got = super().write_batch(prepared, ctx)
        log.append((given, [ev.value["i"] for ev in got.failed], False))
        return got


def topology(tag: str, *, dead_letter: bool) -> str:
    dl = (
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}\n"
        if dead_letter
        else ""
    )
    return f"""
name: iso
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 1, initial_backoff: 0, max_backoff: 0}}}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: '{__name__}:LoggingSink', name: {tag}-out}}
{dl}"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(KIND, st.integers(0, 1)), min_size=1, max_size=40),
    dead_letter=st.booleans(),
)
def test_isolation_keeps_the_delivery_contract(data, dead_letter):
    seq = {0: 100, 1: 100}
    records = []
    for i, (kind, shard) in enumerate(data):
        seq[shard] += 1
        payload: dict = {"i": i}
        if kind != "ok":
            payload[kind] = True
        records.append(
            Record(
                orjson.dumps(payload), RecordMeta("s", f"shard-{shard}", str(seq[shard]), 0, "pk")
            )
        )
    tag = f"t{uuid.uuid4().hex}"
    try:
        run = run_topology(topology(tag, dead_letter=dead_letter), records, batch_size=len(records))
        calls = CALLS.get(f"{tag}-out", [])
        stored = Counter(ev.value["i"] for ev in MemorySink.stores.get(f"{tag}-out", []))
        dead = {ev.value["i"] for ev in MemorySink.stores.get(f"{tag}-dlq", [])}
    finally:
        CALLS.pop(f"{tag}-out", None)
        MemorySink.stores.pop(f"{tag}-out", None)
        MemorySink.stores.pop(f"{tag}-dlq", None)
    outcomes = run.outcomes
    assert [o.index for o in outcomes] == list(range(len(records)))
    shard_of = [s for _, s in data]

    # No call writes a record after one of its shard that an earlier call failed (reported it
    # failed, or it raised alone with no dead-letter sink to take it).
    failed_at: dict[int, int] = {}  # shard -> its first record known to fail
    for given_, failed, raised in calls:
        if not raised:
            for i in given_:
                first = failed_at.get(shard_of[i])
                assert first is None or i < first, (i, first, calls)
            for i in failed:
                failed_at[shard_of[i]] = min(failed_at.get(shard_of[i], i), i)
        elif len(given_) == 1 and not dead_letter:
            i = given_[0]
            failed_at[shard_of[i]] = min(failed_at.get(shard_of[i], i), i)

    for (kind, _), o in zip(data, outcomes, strict=True):
        i = o.index
        if o.outcome is Outcome.COMMITTED:
            assert kind == "ok" and stored[i] == 1, (i, stored)
        elif o.outcome is Outcome.DEAD_LETTERED:
            assert kind == "poison" and dead_letter and i in dead and not stored[i]
        elif o.outcome is Outcome.FAILED:
            assert kind in ("sink_fail", "poison") and not stored[i] and i not in dead
            assert o.reason
        else:
            assert o.outcome is Outcome.HELD and i not in dead and stored[i] <= 1
        assert stored[i] <= 1

    checkpoint = run.results[0].checkpoint
    for shard in (0, 1):
        mine = [o for o in outcomes if shard_of[o.index] == shard]
        settled = (Outcome.COMMITTED, Outcome.DEAD_LETTERED)
        k = next((n for n, o in enumerate(mine) if o.outcome not in settled), len(mine))
        if k < len(mine):
            assert mine[k].outcome is Outcome.FAILED
            assert all(o.outcome in (Outcome.FAILED, Outcome.HELD) for o in mine[k:])
        safe = mine[k - 1].position if k else None
        assert checkpoint.get(f"shard-{shard}") == safe

    out = next(
        s for n, s in zip(run.engine.plan.nodes, run.engine.stats, strict=True) if n.id == "out"
    )
    assert out.received == out.emitted + out.failed + out.dead_lettered
    assert out.emitted == len(stored)
