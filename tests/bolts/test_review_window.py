"""Adversarial review of the window bolt's delta log (branch w19): each test states the guarantee
it checks; an xfail names the bug it shows (strict: it fails on the code under review)."""

from __future__ import annotations

import pytest

from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401

S1, S2 = "shardId-000000000001", "shardId-000000000002"
#: a real Kinesis sequence number: 56 digits
KINESIS_SEQ = 49590338271490256608559692538361571095921575989136588898


def upsert(table: dict, out) -> None:
    """An upsert sink keyed by (window_start, app): the last committed result wins."""
    for e in out.streams.get("default", []) if out is not None else []:
        table[(e.value["window_start"], e.value["app"])] = e.value["n"]


def at_ten(table: dict) -> dict[str, int]:
    return {app: n for (ws, app), n in table.items() if ws.endswith("10:00:00.000Z")}


def test_the_loser_of_two_closes_never_leaves_a_stale_result_in_an_upsert_sink(
    store_url,  # noqa: F811
    unique_name,
):
    """10:00 holds deltas k=1, j=1. a closes it by the watermark with one more k of its own; b
    closes it at its end of input with nothing of its own. Both emit; the sinks commit a's then
    b's results (each process commits its sinks, then its state: nothing orders two processes);
    a's state commit wins, b's loses. The results table must end with k=2 (two k events were
    accepted) whatever comes later — here more input on both shards and a final end of input."""
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    table: dict = {}
    run(a, [ev(0, T0, S1, app="k"), ev(1, T0 + 1, S1, app="j")])
    run(b, [ev(0, T0 + MIN + 5, S2, app="y")])  # shard 2 is past 10:00's end
    out_a = a.process([ev(2, T0 + 2, S1, app="k"), ev(3, T0 + 2 * MIN, S1, app="z")])
    out_b = b.flush(ev(9, T0 + MIN + 5, S2))
    assert at_ten({}) == {}
    upsert(at_a := {}, out_a)
    upsert(at_b := {}, out_b)
    assert (at_ten(at_a), at_ten(at_b)) == ({"k": 2, "j": 1}, {"k": 1, "j": 1})  # both closed it
    upsert(table, out_a)
    upsert(table, out_b)
    a.commit_state(lambda e: True)
    a.state_committed()
    b.commit_state(lambda e: True)
    b.state_committed()
    # later: more input on both shards, then the end of input
    c = make_bolt(store_url, unique_name)
    upsert(table, c.process([ev(4, T0 + 3 * MIN, S1, app="z"), ev(1, T0 + 3 * MIN, S2, app="y")]))
    upsert(table, c.flush(ev(4, T0 + 3 * MIN, S1)))
    c.commit_state(lambda e: True)
    c.state_committed()
    assert at_ten(table) == {"k": 2, "j": 1}


def kinesis_ev(i: int, t: int, shard: str = S1, **payload):
    from squall.event import Event, RecordMeta

    meta = RecordMeta("s", shard, str(KINESIS_SEQ + i), 0, "pk")
    return Event(b"", meta, None, i, {"timestamp": t, "app": "a", **payload})


def test_first_and_last_with_real_kinesis_sequence_numbers(store_url, unique_name):  # noqa: F811
    """Real Kinesis sequence numbers are 56 decimal digits: a window of first/last must commit and
    close with them, and order two records of one millisecond by their position."""
    aggs = {
        "n": {"fn": "count"},
        "f": {"fn": "first", "field": "v"},
        "l": {"fn": "last", "field": "v"},
    }
    bolt = make_bolt(store_url, unique_name, aggregates=aggs)
    run(bolt, [kinesis_ev(0, T0 + 5, v="one"), kinesis_ev(1, T0 + 5, v="two")])
    run(bolt, [kinesis_ev(2, T0 + 5, v="three")])
    results, _ = run(bolt, [kinesis_ev(3, T0 + 2 * MIN, v="x")])
    got = [(r["n"], r["f"], r["l"]) for r in results if r["window_start"].endswith("10:00:00.000Z")]
    assert got == [(3, "one", "three")]


def test_a_shard_leaving_idleness_never_reopens_a_closed_and_expired_window(
    store_url,  # noqa: F811
    unique_name,
):
    """Shard 2 is idle (10 min behind shard 1): 10:06 closes with k=2 and is expired. Shard 2 then
    comes back (4 min behind: not idle). Its events for 10:06 are late — in one batch or in two —
    and the results table keeps k=2."""
    bolt = make_bolt(store_url, unique_name, idle_shard_after="5m")
    table: dict = {}

    def batch(events):
        out = bolt.process(events)
        upsert(table, out)
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        return out.streams.get("late", [])

    batch([ev(0, T0, S2, app="x")])
    batch([ev(0, T0 + 6 * MIN + 1, S1, app="k"), ev(1, T0 + 6 * MIN + 2, S1, app="k")])
    batch([ev(2, T0 + 10 * MIN, S1, app="z")])  # shard 2 idle: 10:06 closes
    assert table[(f"{'2024-05-01T10:06:00.000Z'}", "k")] == 2
    late = batch([ev(1, T0 + 6 * MIN + 3, S2, app="k")])  # the watermark stays at 10:10
    late += batch([ev(2, T0 + 6 * MIN + 4, S2, app="k")])
    batch([ev(3, T0 + 8 * MIN, S2, app="y")])
    assert (len(late), table[("2024-05-01T10:06:00.000Z", "k")]) == (2, 2)


def test_a_window_closed_and_expired_while_another_writer_appends_keeps_its_snapshot(
    request,
    store_url,  # noqa: F811
    unique_name,
):
    """a's shard jumps 4 min ahead: a closes 10:00 (k=2) and, in the same commit, deletes it as
    expired (SQL). b, whose view of shard 1's mark is older, adds k to 10:00 and commits after a.
    The next close must emit k=3, not k=1 (the snapshot gone, b's delta alone)."""
    a = make_bolt(store_url, unique_name, idle_shard_after="10m")
    b = make_bolt(store_url, unique_name, idle_shard_after="10m")
    table: dict = {}
    run(a, [ev(0, T0, S1, app="k"), ev(1, T0 + 1, S1, app="k")])
    run(b, [ev(0, T0 + 5 * MIN, S2, app="y")])
    out_a = a.process([ev(2, T0 + 4 * MIN, S1, app="z")])  # watermark 10:04: 10:00 closes
    out_b = b.process([ev(1, T0 + 30_000, S2, app="k")])  # b's watermark: shard 1 at 10:00
    assert "late" not in out_b.streams
    for bolt, out in ((a, out_a), (b, out_b)):
        upsert(table, out)
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
    assert at_ten(table) == {"k": 2}
    c = make_bolt(store_url, unique_name, idle_shard_after="10m")
    upsert(table, c.process([ev(3, T0 + 6 * MIN, S1, app="z"), ev(2, T0 + 6 * MIN, S2, app="y")]))
    c.commit_state(lambda e: True)
    c.state_committed()
    assert at_ten(table) == {"k": 3}


def test_a_redis_commit_retried_after_its_reply_was_lost_counts_once(redis_url, unique_name):
    """The engine's commit sequence retries ``commit_state`` on TransientError (executor._call);
    Redis ran the first script, only its reply was lost. Counts must stay exact."""
    import redis as redis_lib

    from squall.errors import TransientError

    bolt = make_bolt(redis_url, unique_name)
    try:
        run(bolt, [ev(0, T0, S1, app="k"), ev(1, T0 + 1, S1, app="k")])  # loads the script
        script, calls = bolt.store._script, []

        def reply_lost(*args, **kwargs):
            script(*args, **kwargs)
            calls.append(1)
            if len(calls) == 1:
                raise redis_lib.ConnectionError("Connection closed by server.")

        bolt.process([ev(2, T0 + 2, S1, app="k")])
        bolt.store._script = reply_lost
        for _ in range(2):  # what executor._call does with a TransientError
            try:
                bolt.commit_state(lambda e: True)
                break
            except TransientError:
                continue
        bolt.state_committed()
        bolt.store._script = script
        results, _ = run(bolt, [ev(3, T0 + 2 * MIN, S1, app="z")])
    finally:
        client = redis_lib.Redis.from_url(redis_url)
        for key in client.scan_iter(f"test:{unique_name}:*"):
            client.delete(key)
    assert at_ten({(r["window_start"], r["app"]): r["n"] for r in results}) == {"k": 3}


def test_concurrent_appends_closes_and_compactions_keep_the_store_exact(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """Three threads (each its own bolt and connections: three shards' processes) add to 10:00;
    every other batch each closes it (end of input) and compactions run (COMPACT_AT 3), all
    racing. Whatever wins or loses, the snapshot plus the deltas left hold every count once."""
    import random
    import threading

    from squall.bolts import window as window_module
    from squall.errors import TransientError

    monkeypatch.setattr(window_module, "COMPACT_AT", 3)
    expected: dict[str, int] = {}
    lock, errors = threading.Lock(), []

    def writer(k: int) -> None:
        rng = random.Random(k)
        bolt = make_bolt(store_url, unique_name)
        shard = f"shardId-00000000000{k}"
        try:
            for b in range(12):
                events = [
                    ev(b * 10 + i, T0 + rng.randrange(50_000), shard, app=f"k{rng.randrange(6)}")
                    for i in range(rng.randrange(1, 6))
                ]
                for _ in range(100):
                    try:
                        bolt.process(events)
                        if b % 2:
                            bolt.flush(events[-1])
                        bolt.commit_state(lambda e: True)
                        bolt.state_committed()
                        break
                    except TransientError:
                        bolt.discard_state()
                else:
                    raise AssertionError("the store stayed busy")
                with lock:
                    for e in events:
                        expected[e.value["app"]] = expected.get(e.value["app"], 0) + 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    check = make_bolt(store_url, unique_name)
    rows = check.store.read([T0])[T0]
    import orjson

    folded = check._fold_bodies(rows.deltas)
    snapshot = check._load(rows.snapshot) if rows.snapshot else {}  # (its layout read)
    for key, states in folded.items():
        snapshot[key] = check.merge(snapshot[key], states) if key in snapshot else states
    assert {orjson.loads(k)[0]: s[0] for k, s in snapshot.items()} == expected


MIXED = {
    "n": {"fn": "count"},
    "d": {"fn": "count_distinct", "field": "v", "exact_limit": 4},
    "f": {"fn": "first", "field": "v"},
    "l": {"fn": "last", "field": "v"},
    "lo": {"fn": "min", "field": "v"},
    "m": {"fn": "mean", "field": "v"},
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("hop", [None, "30s"])
def test_mixed_aggregates_and_early_updates_survive_partial_commits_replays_and_failures(
    store_url,  # noqa: F811
    unique_name,
    seed,
    hop,
):
    """The replay test of test_window.py with every mergeable aggregate, hopping windows and early
    updates: partial commits, lost checkpoints and store failures end with the finals of one clean
    run (upserted by window and key), and every early result is below or at its final count."""
    import random

    from squall.event import Event
    from tests.bolts.test_window import finals, workload

    config = {"allowed_lateness": "5s", "aggregates": MIXED, "emit": "every_batch", "hop": hop}
    events = workload(seed=seed)
    clean = make_bolt(store_url, unique_name + "r", **config)
    want: dict = {}
    for i in range(0, len(events), 25):
        want.update(finals(run(clean, events[i : i + 25])[0]))
    bolt = make_bolt(store_url, unique_name, **config)
    rng = random.Random(seed)
    table, early, pos = {}, [], 0
    while pos < len(events):
        batch = [
            Event(b"", e.meta, None, j, dict(e.value)) for j, e in enumerate(events[pos : pos + 25])
        ]
        results = [e.value for e in bolt.process(batch).streams.get("default", [])]
        table.update(finals(results))
        early += [r for r in results if not r["final"]]
        fate = rng.random()
        if fate < 0.3:
            k = rng.randrange(len(batch))
            bolt.commit_state(lambda e, k=k: e.origin < k)
            pos += k
        elif fate < 0.45:
            bolt.commit_state(lambda e: True)
        elif fate < 0.55:
            bolt.discard_state()
            continue
        else:
            bolt.commit_state(lambda e: True)
            pos += len(batch)
        bolt.state_committed()
    assert table == want
    assert all(
        r["n"] <= want[(r["window_start"], r["app"])]["n"]
        for r in early
        if (r["window_start"], r["app"]) in want
    )
    assert len(want) > 5 and early


def test_float_sums_after_replays_are_identical_to_a_clean_run(tmp_path, unique_name):
    """Float values (prices, durations): the same events in batches of other sizes (what a restart
    after kill -9 delivers) must give a results table identical to an uninterrupted run's, as the
    exactly-once guarantee says. Counts agree; the sums differ in their last bits."""
    import random

    from squall.event import Event
    from tests.bolts.test_window import finals, workload

    rng = random.Random(7)
    events = workload()
    for e in events:
        e.value["v"] = rng.random() * 100
    config = {
        "allowed_lateness": "5s",
        "aggregates": {"s": {"fn": "sum", "field": "v"}, "n": {"fn": "count"}},
    }
    url = f"sqlite:///{tmp_path / 's.db'}"
    clean = make_bolt(url, unique_name + "r", **config)
    want: dict = {}
    for i in range(0, len(events), 25):
        want.update(finals(run(clean, events[i : i + 25])[0]))
    bolt = make_bolt(url, unique_name, **config)
    table, pos = {}, 0
    while pos < len(events):
        size = rng.randrange(3, 40)
        batch = [
            Event(b"", e.meta, None, j, dict(e.value))
            for j, e in enumerate(events[pos : pos + size])
        ]
        table.update(finals(run(bolt, batch)[0]))
        pos += size
    assert {k: r["n"] for k, r in table.items()} == {k: r["n"] for k, r in want.items()}
    assert table == want


def test_early_updates_write_per_batch_what_the_batch_changed(tmp_path, unique_name):
    """emit: every_batch on a 1 h window, each batch 50 new keys: what a batch writes to the store
    must stay in proportion to the batch (its delta), not grow with every key the window holds."""
    from squall.event import Event, RecordMeta

    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, emit="every_batch", size="1h")
    written, commit = [], bolt.store.commit

    def counting(appends, replaces, *args, **kwargs):
        bodies = [body for _, body in appends.values()]
        bodies += [b for r in replaces.values() for b in (r.delta, r.snapshot) if b]
        written.append(sum(map(len, bodies)))
        return commit(appends, replaces, *args, **kwargs)

    bolt.store.commit = counting
    for b in range(60):
        run(
            bolt,
            [
                Event(
                    b"",
                    RecordMeta("s", S1, str(1000 + 50 * b + i), 0, "pk"),
                    None,
                    i,
                    {"timestamp": T0 + 50 * b + i, "app": f"k{50 * b + i}"},
                )
                for i in range(50)
            ],
        )
    assert written[-1] <= 4 * written[0]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_sql_commit_retried_after_its_acknowledgment_was_lost_counts_once(
    kind, request, tmp_path, unique_name
):
    """The SQL store's transaction commits, then the connection drops before the acknowledgment
    (the driver raises); the engine retries ``commit_state`` with the same staged batch. Its
    token, saved in the same transaction, makes the retry write nothing: counts stay exact.
    (Redis: the test above.)"""
    url = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    from contextlib import contextmanager

    from squall.errors import TransientError

    bolt = make_bolt(url, unique_name)
    run(bolt, [ev(0, T0, "s1", app="k"), ev(1, T0 + 1, "s1", app="k")])
    store = bolt.store
    real, calls = store._writing, []

    @contextmanager
    def ack_lost(connection):
        with real(connection) as conn:
            yield conn
        calls.append(1)
        if len(calls) == 1:  # committed; only the acknowledgment is "lost"
            raise TransientError("window store write: connection lost during COMMIT")

    bolt.process([ev(2, T0 + 2, "s1", app="k")])
    store._writing = ack_lost
    for _ in range(2):  # what executor._call does with a TransientError
        try:
            bolt.commit_state(lambda e: True)
            break
        except TransientError:
            continue
    bolt.state_committed()
    store._writing = real
    assert len(calls) == 2
    results, _ = run(bolt, [ev(3, T0 + 2 * MIN, "s1", app="z")])
    assert {r["app"]: r["n"] for r in results if r["window_start"].endswith("10:00:00.000Z")} == {
        "k": 3
    }
