"""Property tests of the engine's delivery contract over random batches and random failures.

Every record gets exactly one outcome; nothing is lost (each event is in exactly the sink its
outcome names); the checkpoint never passes a record that is not committed, dead-lettered or
filtered; a batch whose transient errors outlast the retries raises BatchFailed.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.errors import BatchFailed
from squall.event import Position, Record, RecordMeta
from squall.testing import MemorySink, run_topology
from squall.topology.outcomes import Outcome

KIND = st.sampled_from(["ok", "ok", "ok", "fail", "drop", "sink_fail", "bad_json"])


def topology(
    tag: str, *, dead_letter: bool, bolt_transient: int, sink_transient: int, attempts: int
) -> str:
    dl = (
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}\n"
        if dead_letter
        else ""
    )
    return f"""
name: prop
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: {attempts}, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: {bolt_transient}}}
sinks:
  - {{id: out, type: 'squall.testing:FaultySink', name: {tag}-out, transient_failures: {sink_transient}}}
{dl}"""


def make_records(kinds: list[str], shards: list[int]) -> list[Record]:
    seq = {0: 100, 1: 100}
    out = []
    for i, (kind, shard) in enumerate(zip(kinds, shards, strict=True)):
        seq[shard] += 7
        payload = {"i": i}
        if kind == "fail":
            payload["fail"] = f"bad record {i}"
        elif kind == "drop":
            payload["drop"] = True
        elif kind == "sink_fail":
            payload["sink_fail"] = True
        data = b"{not json" if kind == "bad_json" else orjson.dumps(payload)
        out.append(Record(data, RecordMeta("s", f"shard-{shard}", str(seq[shard]), 0, "pk")))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(KIND, st.integers(0, 1)), min_size=0, max_size=60),
    dead_letter=st.booleans(),
    bolt_transient=st.integers(0, 3),
    sink_transient=st.integers(0, 3),
    attempts=st.integers(1, 4),
)
def test_every_record_has_one_outcome_and_the_checkpoint_is_safe(
    data, dead_letter, bolt_transient, sink_transient, attempts
):
    kinds = [k for k, _ in data]
    records = make_records(kinds, [s for _, s in data])
    tag = uuid.uuid4().hex
    yaml = topology(
        tag,
        dead_letter=dead_letter,
        bolt_transient=bolt_transient,
        sink_transient=sink_transient,
        attempts=attempts,
    )
    bolt_called = any(k != "bad_json" for k in kinds)
    # The sink is called for records not held back: none after a record of its shard that
    # failed before the write (no dead-letter sink for a bad one).
    blocked: set[int] = set()
    sink_called = False
    for k, shard in data:
        if k in ("ok", "sink_fail") and shard not in blocked:
            sink_called = True
        if k in ("fail", "bad_json") and not dead_letter:
            blocked.add(shard)
    will_fail = (bolt_called and bolt_transient >= attempts) or (
        sink_called and sink_transient >= attempts
    )
    if will_fail:
        with pytest.raises(BatchFailed):
            run_topology(yaml, records, batch_size=len(records) + 1, sleep=lambda s: None)
        return

    run = run_topology(yaml, records, batch_size=len(records) + 1, sleep=lambda s: None)
    outcomes = run.outcomes
    assert [o.index for o in outcomes] == list(range(len(records)))  # exactly one outcome each

    committed = {ev.event_id for ev in MemorySink.stores.get(f"{tag}-out", [])}
    dead = {ev.event_id for ev in MemorySink.stores.get(f"{tag}-dlq", [])}
    shards = [s for _, s in data]
    failed_in: set[int] = set()  # shards with a failed record so far, in batch order
    held_back_in: set[int] = set()  # ... with one that failed before the sinks were written
    for kind, shard, o in zip(kinds, shards, outcomes, strict=True):
        own = {
            "ok": Outcome.COMMITTED,
            "drop": Outcome.FILTERED,
            "sink_fail": Outcome.FAILED,
            "fail": Outcome.DEAD_LETTERED if dead_letter else Outcome.FAILED,
            "bad_json": Outcome.DEAD_LETTERED if dead_letter else Outcome.FAILED,
        }[kind]
        # After a failed record of its shard a record is held (it comes again with it): not
        # written when that failure was known before the sinks' writes (no dead-letter sink);
        # written already when the failure came out of the same write (sink_fail).
        if kind == "sink_fail" and shard in held_back_in:
            own = Outcome.HELD  # never written, so it did not fail
        expected = Outcome.HELD if shard in failed_in and own is not Outcome.FAILED else own
        assert o.outcome is expected, (kind, o)
        written = own is Outcome.COMMITTED and shard not in held_back_in
        assert (o.event_id in committed) is written, (kind, o)
        assert (o.event_id in dead) is (own is Outcome.DEAD_LETTERED)
        if expected in (Outcome.FAILED, Outcome.DEAD_LETTERED):
            assert o.reason
        if own is Outcome.FAILED:
            failed_in.add(shard)
            if kind != "sink_fail":
                held_back_in.add(shard)

    # The checkpoint of each shard is the last record before that shard's first failure.
    checkpoint = run.results[0].checkpoint if run.results else {}
    for shard in {o.shard_id for o in outcomes}:
        mine = [o for o in outcomes if o.shard_id == shard]
        safe: Position | None = None
        for o in mine:
            if o.outcome in (Outcome.FAILED, Outcome.HELD):
                break
            safe = o.position
        assert checkpoint.get(shard) == safe
        if safe is not None:
            assert all(o.outcome is not Outcome.FAILED for o in mine if o.position <= safe)


def test_kpl_corrupt_aggregate_is_dead_lettered_whole():
    yaml = topology("kpl", dead_letter=True, bolt_transient=0, sink_transient=0, attempts=1)
    rec = Record(b"\xf3\x89\x9a\xc2garbage", RecordMeta("s", "shard-0", "1"))
    run = run_topology(yaml, [rec])
    [o] = run.outcomes
    assert o.outcome is Outcome.DEAD_LETTERED and o.component == "spout"
