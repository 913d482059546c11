"""Second adversarial review of the window bolt (the seven fixes of 48a2d08..bbbba54): each test
states the guarantee it checks; an xfail names the bug it shows (strict: it fails on the code
under review — run with ``--runxfail`` to see the failure)."""

from __future__ import annotations

import pytest

from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401

S1, S2 = "shardId-000000000001", "shardId-000000000002"
TEN = "2024-05-01T10:00:00.000Z"


def results(out) -> list[dict]:
    return [e.value for e in out.streams.get("default", [])] if out is not None else []


def commit(bolt, covered=lambda e: True) -> None:
    bolt.commit_state(covered)
    bolt.state_committed()


def upsert(table: dict, out) -> None:
    """An upsert sink keyed by (window_start, app): the last committed result wins."""
    for r in results(out):
        table[(r["window_start"], r["app"])] = r["n"]


@pytest.mark.xfail(
    strict=True,
    reason="fix 1: two processes that keep closing the same window at once never let it close — "
    "each round the loser's fallback (identity states for every key it emitted) reopens it, and "
    "both emit every key again, forever",
)
def test_two_concurrent_closers_of_one_window_stop_emitting_it(store_url, unique_name):  # noqa: F811
    """10:00 holds k=2 and j=1. Two processes (shards 1 and 2) run their batches at the same
    time, round after round (Lambda: one invocation per shard, each reading the store before the
    other commits), each moving its shard a minute on (idle_shard_after 1m: each sees the other
    shard idle, so both watermarks pass 10:00's end in round 1). Round 1 both close 10:00 and emit it; one wins. With no
    new event for 10:00, it may be emitted once more (the loser's re-emit), then never again."""
    a = make_bolt(store_url, unique_name, idle_shard_after="1m")
    b = make_bolt(store_url, unique_name, idle_shard_after="1m")
    run(a, [ev(0, T0, S1, app="k"), ev(1, T0 + 1, S1, app="k"), ev(2, T0 + 2, S1, app="j")])
    run(b, [ev(0, T0 + 5, S2, app="j")])
    emitted = []
    for r in range(6):
        t = T0 + (2 + r) * MIN
        out_a = a.process([ev(10 + r, t, S1, app="z")])
        out_b = b.process([ev(10 + r, t, S2, app="y")])
        emitted.append(
            sum(1 for o in (out_a, out_b) for x in results(o) if x["window_start"] == TEN)
        )
        commit(a)
        commit(b)
    assert emitted[0] == 4  # both closed it (k and j each)
    assert emitted[2:] == [0, 0, 0, 0], emitted


@pytest.mark.xfail(
    strict=True,
    reason="fix 1: a loser whose window was closed and expired meanwhile appends identity states "
    "for every key it emitted: the window is created again and its next close emits n=0 for "
    "keys that had events (an upsert sink's row goes from 1 to 0)",
)
def test_a_close_that_loses_to_a_window_since_expired_never_emits_empty_results(
    store_url,  # noqa: F811
    unique_name,
):
    """10:00 is closed once (end of input: k=1) and reopened by more input (k, now 2). b reads it
    and closes it (its end of input) but its commit is slow (a sink retrying). Meanwhile a closes
    10:00 by the watermark (k=2) and, a batch later, expires it. b's commit then loses (the head
    it read is gone). Every result committed for 10:00 after must say k=2."""
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    table: dict = {}
    run(a, [ev(0, T0, S1, app="k")])
    upsert(table, a.flush(ev(0, T0, S1)))
    commit(a)
    run(a, [ev(1, T0 + 1, S1, app="k")])  # more input: 10:00 reopens
    out_b = b.flush(ev(9, T0, S2))  # b's view: 10:00 open, it closes it at its end of input
    assert [(r["app"], r["n"]) for r in results(out_b)] == [("k", 2)]
    upsert(table, out_b)
    out, _ = run(a, [ev(2, T0 + 2 * MIN, S1, app="z")])  # a closes 10:00
    later, _ = run(a, [ev(3, T0 + 4 * MIN, S1, app="z")])  # and expires it
    for r in out + later:
        table[(r["window_start"], r["app"])] = r["n"]
    assert table[(TEN, "k")] == 2
    commit(b)  # b loses: the head it read is gone
    c = make_bolt(store_url, unique_name)
    upsert(table, c.process([ev(4, T0 + 5 * MIN, S1, app="z")]))
    commit(c)
    assert table[(TEN, "k")] == 2
