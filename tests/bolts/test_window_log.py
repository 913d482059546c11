"""The window state's delta log on each store: closes racing appends and other closers,
replays of committed batches, compaction, and two OS processes adding to one window."""

from __future__ import annotations

import multiprocessing
import random

import pytest

from squall.bolts import window as window_module
from squall.errors import TransientError
from squall.event import Event, RecordMeta
from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401

S1, S2 = "shardId-000000000001", "shardId-000000000002"


def window_of(results: list[dict], start: str = "10:00:00.000Z") -> dict[str, int]:
    return {r["app"]: r["n"] for r in results if r["window_start"].endswith(start)}


def test_a_delta_appended_while_a_window_closes_reopens_it_for_its_keys_only(
    store_url,  # noqa: F811
    unique_name,
):
    """b reads 10:00's deltas and emits it; before b commits, a appends a delta for key y. b's
    close wins (a only appended), a's delta stays: the next close emits y alone, complete
    (snapshot + the new delta), and x — in the snapshot only — is not emitted again."""
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    run(a, [ev(0, T0, S1, app="x"), ev(1, T0 + 1, S1, app="y")])
    run(b, [ev(0, T0 + 2, S2, app="x")])
    run(a, [ev(2, T0 + 2 * MIN, S1)])  # shard 2 holds 10:00 open
    out_b = b.process([ev(1, T0 + 3, S2, app="y"), ev(2, T0 + 2 * MIN, S2)])
    assert window_of([e.value for e in out_b.streams["default"]]) == {"x": 2, "y": 2}
    out_a = a.process([ev(3, T0 + 4, S1, app="y")])  # a's view of shard 2: still 10:00:00.002
    assert "default" not in out_a.streams and "late" not in out_a.streams
    a.commit_state(lambda e: True)
    a.state_committed()
    b.commit_state(lambda e: True)  # the head is as b read it: the close is made
    b.state_committed()
    assert b.store.open_windows()[T0][1] == 1  # a's delta, after the close
    results, _ = run(b, [ev(3, T0 + 3 * MIN, S2)])
    assert window_of(results) == {"y": 3}
    results, _ = run(b, [ev(4, T0 + 4 * MIN, S2)])
    assert window_of(results) == {}  # closed: not emitted again


def test_two_closers_of_one_window_one_wins_the_other_appends_its_delta(
    store_url,  # noqa: F811
    unique_name,
):
    """a and b both close 10:00 (end of input) from the same deltas, each with one event of its
    own: both emit 3; the first commit wins, the second finds the head moved and appends its own
    delta instead of writing its (now partial) snapshot — 10:00 is emitted again with all 4."""
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    run(a, [ev(0, T0, S1)])
    run(b, [ev(0, T0 + 1, S2)])
    a.process([ev(1, T0 + 2, S1)])
    out_a = a.flush(ev(9, T0 + 2, S1))
    b.process([ev(1, T0 + 3, S2)])
    out_b = b.flush(ev(9, T0 + 3, S2))
    assert [e.value["n"] for e in out_a.streams["default"]] == [3]
    assert [e.value["n"] for e in out_b.streams["default"]] == [3]
    a.commit_state(lambda e: True)
    a.state_committed()
    b.commit_state(lambda e: True)
    b.state_committed()
    assert a.store.open_windows()[T0][1] >= 1  # b's delta: the window is open again
    c = make_bolt(store_url, unique_name)
    out_c = c.flush(ev(9, T0 + 3, S2))
    assert [e.value["n"] for e in out_c.streams["default"]] == [4]
    c.commit_state(lambda e: True)
    c.state_committed()
    assert a.store.open_windows() == {}


def test_a_replay_of_a_batch_whose_deltas_committed_appends_nothing(
    store_url,  # noqa: F811
    unique_name,
):
    """The state of a batch committed, its checkpoint lost: delivered again, its records are at or
    below the shard mark — nothing is appended, and the window counts them once."""
    bolt = make_bolt(store_url, unique_name)
    batch = [ev(0, T0), ev(1, T0 + 1), ev(2, T0 + 2)]
    run(bolt, batch)
    assert bolt.store.open_windows() == {T0: (T0 + MIN, 1)}
    out = bolt.process([ev(0, T0), ev(1, T0 + 1), ev(2, T0 + 2)])
    assert len(out.dropped) == 3 and "default" not in out.streams
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    assert bolt.store.open_windows()[T0][1] == 1  # still the one delta
    results, _ = run(bolt, [ev(2, T0 + 2), ev(3, T0 + 2 * MIN)])  # ev 2 again, then the close
    assert window_of(results) == {"a": 3}


def test_many_deltas_are_compacted_and_a_compaction_racing_a_close_gives_way(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """A window with COMPACT_AT deltas is folded into one by the next batch; a compaction whose
    head moved meanwhile (another writer's close) appends its batch's delta instead."""
    monkeypatch.setattr(window_module, "COMPACT_AT", 3)
    a = make_bolt(store_url, unique_name)
    for i in range(6):  # deltas: 1, 2, 3, then 1 (three and the batch's own folded), 2, 3
        run(a, [ev(i, T0 + i, S1)])
    assert a.store.open_windows()[T0][1] == 3
    # a compacts 10:00 while b closes it (end of input) and commits first
    b = make_bolt(store_url, unique_name)
    a.process([ev(6, T0 + 6, S1)])
    assert T0 in a._compact
    b.flush(ev(9, T0 + 9, S1))
    b.commit_state(lambda e: True)
    b.state_committed()
    a.commit_state(lambda e: True)  # the head moved: its deltas stay as they are, its own appended
    a.state_committed()
    c = make_bolt(store_url, unique_name)
    out = c.flush(ev(9, T0 + 9, S1))
    assert [e.value["n"] for e in out.streams["default"]] == [7]  # all seven, the close included


def _writer(url: str, name: str, k: int, per_writer: int, batch: int) -> None:
    """One OS process (a Lambda invocation's shard): its own bolt adding to window 10:00."""
    rng = random.Random(k)
    bolt = make_bolt(url, name)
    events = [
        Event(
            b"",
            RecordMeta("s", f"shardId-00000000000{k}", str(1000 + i), 0, "pk"),
            None,
            i,
            {"timestamp": T0 + rng.randrange(50_000), "app": f"k{rng.randrange(40)}"},
        )
        for i in range(per_writer)
    ]
    for i in range(0, per_writer, batch):
        for _ in range(50):
            try:
                run(bolt, events[i : i + batch])
                break
            except TransientError:
                bolt.discard_state()
        else:
            raise AssertionError("the store stayed busy")


@pytest.mark.parametrize("processes", [2])
def test_two_processes_adding_to_one_window_lose_nothing(
    store_url,  # noqa: F811
    unique_name,
    processes,
):
    """Two OS processes (two shards' Lambda invocations) append to the same window at once; a third
    closes it: every count is there."""
    per_writer, batch = 400, 40
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_writer, args=(store_url, unique_name, k, per_writer, batch))
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * processes
    closer = make_bolt(store_url, unique_name)
    results = []
    for k in range(processes):
        results += run(closer, [ev(per_writer + k, T0 + 2 * MIN, f"shardId-00000000000{k}")])[0]
    got = window_of(results)
    assert sum(got.values()) == processes * per_writer and len(got) == 40
