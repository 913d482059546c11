"""Windows over several shards with per-shard partial commits, as the engine makes them (a failed
record and everything after it in its shard come again; other shards' records are committed):
every event is decided once by a committed delivery, and each window's final count is exactly the
events the committed deliveries accepted into it, and a record comes again decided as its first
delivery decided it (seeds 2 and 3 found it late, once accepted, before the decisions of partial
commits were saved: the commit's saved watermark had moved past its shard, looking idle)."""

from __future__ import annotations

import random

import pytest

from squall.event import Event, RecordMeta
from tests.bolts.test_window import MIN, T0, finals, make_bolt, store_url  # noqa: F401

SHARDS = [f"shardId-00000000000{n}" for n in range(3)]


def workload(seed: int) -> list[Event]:
    """Three shards, each moving on at its own pace with some out-of-order times, interleaved."""
    rng = random.Random(seed)
    events, clocks = [], dict.fromkeys(SHARDS, T0)
    seq = dict.fromkeys(SHARDS, 0)
    for _ in range(450):
        shard = rng.choice(SHARDS)
        clocks[shard] += rng.randrange(0, 8_000 if shard != SHARDS[2] else 2_000)
        t = clocks[shard] - (rng.randrange(0, 90_000) if rng.random() < 0.1 else 0)
        seq[shard] += 1
        meta = RecordMeta("s", shard, str(1000 + seq[shard]), 0, "pk")
        value = {"timestamp": t, "app": rng.choice("ab")}
        events.append(Event(b"", meta, f"{shard}/{seq[shard]}", len(events), value))
    return events


@pytest.mark.parametrize(
    ("seed", "check_lateness"),
    [pytest.param(seed, False, id=f"{seed}-counts") for seed in (1, 2, 3, 4)]
    + [pytest.param(seed, True, id=f"{seed}-not-late-again") for seed in (1, 2, 3, 4)],
)
def test_each_window_counts_exactly_the_events_its_committed_deliveries_accepted(
    store_url,  # noqa: F811
    unique_name,
    seed,
    check_lateness,
):
    events = workload(seed)
    # idle_shard_after short: the slower shard often falls that far behind the others
    bolt = make_bolt(store_url, unique_name, allowed_lateness="5s", idle_shard_after="30s")
    rng = random.Random(seed)
    pending = list(range(len(events)))  # indexes still to deliver, in record order
    decided: dict[int, str] = {}  # index -> "late" | "accepted", by the committed delivery
    first_seen: dict[int, str] = {}  # index -> the decision of its first delivery
    table: dict = {}
    rounds = 0
    while pending:
        rounds += 1
        assert rounds < 10_000
        take = pending[:30]
        batch = [
            Event(b"", events[i].meta, events[i].event_id, j, dict(events[i].value))
            for j, i in enumerate(take)
        ]
        source = {id(b): i for b, i in zip(batch, take, strict=True)}
        out = bolt.process(batch)
        late = {source[id(e)] for e in out.streams.get("late", [])}
        for i in take:
            first_seen.setdefault(i, "late" if i in late else "accepted")
        table.update(finals([e.value for e in out.streams.get("default", [])]))
        if (
            rng.random() < 0.35
        ):  # a record fails downstream: it and the rest of its shard come again
            bad = rng.choice(batch)
            shard, first = bad.meta.shard_id, int(bad.meta.sequence_number)
            covered = lambda e, s=shard, f=first: (  # noqa: E731
                e.meta.shard_id != s or int(e.meta.sequence_number) < f
            )
        else:
            covered = lambda e: True  # noqa: E731
        bolt.commit_state(covered)
        bolt.state_committed()
        done = [source[id(e)] for e in batch if covered(e)]
        for i in done:
            assert i not in decided, "an event was decided by two committed deliveries"
            decided[i] = "late" if i in late else "accepted"
        gone = set(done)
        pending = [i for i in pending if i not in gone]
    # Far-future events on every shard close every window of the workload.
    end = max(e.value["timestamp"] for e in events) + 60 * MIN
    closing = [
        Event(
            b"",
            RecordMeta("s", s, str(10_000 + n), 0, "pk"),
            f"end{n}",
            n,
            {"timestamp": end, "app": "z"},
        )
        for n, s in enumerate(SHARDS)
    ]
    out = bolt.process(closing)
    table.update(finals([e.value for e in out.streams.get("default", [])]))
    bolt.commit_state(lambda e: True)
    bolt.state_committed()

    assert len(decided) == len(events)
    if check_lateness:
        late_again = [
            i for i, how in first_seen.items() if how == "accepted" and decided[i] == "late"
        ]
        assert late_again == []
        return
    want: dict = {}
    for i, how in decided.items():
        if how == "accepted":
            v = events[i].value
            ws = v["timestamp"] - v["timestamp"] % MIN
            want[(ws, v["app"])] = want.get((ws, v["app"]), 0) + 1
    from squall.times import format_time

    got = {k: r["n"] for k, r in table.items() if k[1] != "z"}
    assert got == {(format_time(ws), app): n for (ws, app), n in want.items()}
    assert "late" in decided.values()  # the workload does exercise lateness
