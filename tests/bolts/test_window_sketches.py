"""The window bolt's sketches (count_distinct past its exact list, percentile) during a batch:
live objects, decoded and encoded once per (window, key) and call — with the per-event path's
results, images and isolation of a failed event."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from squall.bolts import window_aggs
from squall.event import Event
from tests.bolts.test_window import MIN, T0, ev, finals, make_bolt, run, store_url  # noqa: F401

pytest.importorskip("datasketches")


def sketch_bolt(tmp_path: Path, name: str, **aggregates):
    return make_bolt(f"sqlite:///{tmp_path / 's.db'}", name, aggregates=aggregates)


def test_a_batch_decodes_and_encodes_each_sketch_once_per_window_and_key(
    tmp_path: Path, unique_name, monkeypatch
):
    bolt = sketch_bolt(
        tmp_path,
        unique_name,
        users={"fn": "count_distinct", "field": "v"},
        p90={"fn": "percentile", "field": "v", "q": 0.9},
    )
    encoded, decoded = [], []
    b64, hll_load, kll_load = window_aggs._b64, window_aggs._hll_load, window_aggs._kll_load
    monkeypatch.setattr(window_aggs, "_b64", lambda data: encoded.append(1) or b64(data))
    monkeypatch.setattr(window_aggs, "_hll_load", lambda s: decoded.append(s) or hll_load(s))
    monkeypatch.setattr(
        window_aggs, "_kll_load", lambda s: s is not None and decoded.append(s) or kll_load(s)
    )
    # two keys, 500 values each past the exact list of 64: one image per sketch and key
    bolt.process([ev(i, T0 + i, app=f"a{i % 2}", v=i) for i in range(1000)])
    assert (len(encoded), len(decoded)) == (4, 0)
    # a second call of the same batch decodes each of its cells' images once
    bolt.process([ev(1000 + i, T0 + 1000 + i, app="a0", v=1000 + i) for i in range(100)])
    assert (len(encoded), len(decoded)) == (6, 2)
    results, _ = run(bolt, [ev(5000, T0 + 2 * MIN, app="a0", v=0)])
    got = {r["app"]: r for r in results}
    assert got["a1"]["users"] == pytest.approx(500, rel=0.05)
    assert got["a0"]["users"] == pytest.approx(600, rel=0.05)


@pytest.mark.parametrize("hop", [None, "30s"])
def test_an_event_failing_after_a_sketch_took_its_value_leaves_no_trace(
    tmp_path: Path, unique_name, hop
):
    """count_distinct and percentile take "x" and 2**70, a later aggregate refuses them (sum:
    not a number; min: beyond 64 bits): the event fails, the live sketches are as before."""
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        **({"hop": hop} if hop else {}),
        aggregates={
            "users": {"fn": "count_distinct", "field": "v", "exact_limit": 4},
            "p50": {"fn": "percentile", "field": "w", "q": 0.5},
            "total": {"fn": "sum", "field": "v"},
            "low": {"fn": "min", "field": "v"},
        },
    )
    events = [ev(i, T0 + i, v=i, w=i) for i in range(1, 11)]
    text, wide = ev(11, T0 + 11, v="x", w=11), ev(12, T0 + 12, v=2**70, w=12)
    out = bolt.process([*events[:5], text, wide, *events[5:]])
    assert {e.origin for e in out.streams["error"]} == {11, 12}
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 3 * MIN, v=0, w=0)])
    finals = [r for r in results if r["final"] and r["window_start"] < "2024-05-01T10:01"]
    # (hopping: the windows from 09:59:30 and 10:00 hold the same events)
    got = [(r["users"], r["p50"], r["total"], r["low"]) for r in finals]
    assert got == [(10, 5.0, 55, 1)] * (2 if hop else 1)


def chained(agg, values):
    """The state of ``values`` added one by one, each decoded and encoded (the per-event path
    of the versions before the live sketches)."""
    return chained_from(agg, agg.new(), values)


def chained_from(agg, state, values):
    for v in values:
        state = agg.add(state, v, None)
    return state


def coupons(state: dict) -> tuple[bytes, list[bytes]]:
    """An HLL image's header and its hashes (4 bytes each), sorted."""
    image = base64.b64decode(state["h"])
    head = image[0] * 4  # (its first byte: the header's length in 4-byte words)
    return image[:head], sorted(image[i : i + 4] for i in range(head, len(image), 4))


@pytest.mark.parametrize("n", [70, 300, 1000, 5000])
def test_the_batch_writes_the_per_event_images(tmp_path: Path, unique_name, n):
    """A state written by the per-event path reads in the batch path and back (the same
    images). HLL: the same bytes once the sketch holds its registers (past ~384 values at
    lg_k 12); before, the same hashes, in the order its hash set took them. KLL: the same
    bytes up to k (200) values — past them it compacts at random, as before."""
    bolt = sketch_bolt(
        tmp_path,
        unique_name,
        users={"fn": "count_distinct", "field": "v"},
        p={"fn": "percentile", "field": "v", "q": 0.5},
    )
    values = [(i * 7919) % 100_003 for i in range(n)]
    bolt.process([ev(i, T0 + i, v=v) for i, v in enumerate(values)])
    ((users, p),) = bolt._delta.values()
    distinct, percentile = window_aggs.make("count_distinct"), window_aggs.make("percentile")
    before = chained(distinct, values)
    if n > 384:
        assert users == before
    else:
        assert coupons(users) == coupons(before)
    assert distinct.result(users) == distinct.result(before)
    if n <= window_aggs.KLL_K:
        assert p == chained(percentile, values)
    # either path's image takes more values and merges: the same estimates
    more = [f"m{i}" for i in range(50)]
    assert distinct.result(chained_from(distinct, users, more)) == distinct.result(
        chained_from(distinct, before, more)
    )
    assert distinct.result(distinct.merge(users, ["z"])) == distinct.result(
        distinct.merge(before, ["z"])
    )


# -- review (hA): batching, failed events, texts without a UTF-8 form -------------------------------

AGGREGATES = {
    "users": {"fn": "count_distinct", "field": "u"},
    "few": {"fn": "count_distinct", "field": "u", "exact_limit": 3},
    "p50": {"fn": "percentile", "field": "w", "q": 0.5},
    "total": {"fn": "sum", "field": "v"},
    "n": {"fn": "count"},
}


def sketch_workload(seed: int, n: int = 3000) -> list[Event]:
    """Two keys over ~3 minutes (~500 distinct users per window and key: HLL sketches past their
    registers; a percentile of ≤ 200 values per cell, exact), late records, and records one
    aggregate refuses (a text summed, a lone surrogate counted distinct)."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        p: dict = {"app": rng.choice("ab"), "u": rng.randrange(2000), "v": rng.randrange(100)}
        if i % 7 == 0:
            p["w"] = rng.randrange(1000) / 8
        if rng.random() < 0.01:
            p["v"] = "bad"
        elif rng.random() < 0.01:
            p["u"] = "\ud800"
        events.append(ev(i, T0 + i * 50 - rng.choice([0, 0, 2000]), **p))
    return [*events, ev(n, T0 + 10 * MIN, app="a", u=0, v=0)]


def drive(bolt, events: list[Event], rng: random.Random | None) -> dict:
    """The final results (upserted by window and key) of ``events`` through ``bolt``: one batch
    and one call (``rng`` None), or batches of random sizes, each in several ``process`` calls,
    with partial commits, lost checkpoints (the batch again) and failed state commits."""
    table: dict = {}
    pos = 0
    while pos < len(events):
        size = len(events) if rng is None else rng.choice([1, 50, 400, 1500])
        batch = [
            Event(b"", e.meta, None, e.origin, dict(e.value)) for e in events[pos : pos + size]
        ]
        i = 0
        while i < len(batch):
            j = len(batch) if rng is None else i + rng.choice([len(batch), 30, 200])
            table.update(
                finals([e.value for e in bolt.process(batch[i:j]).streams.get("default", [])])
            )
            i = j
        fate = 1.0 if rng is None else rng.random()
        if fate < 0.2:  # a record failed downstream: the records before it are covered
            k = rng.randrange(len(batch))
            head = {e.origin for e in batch[:k]}
            bolt.commit_state(lambda e, head=head: e.origin in head)
            pos += k
        elif fate < 0.3:  # crash between the state commit and the checkpoint: the batch again
            bolt.commit_state(lambda e: True)
        elif fate < 0.4:  # the state store failed: nothing committed, the batch again
            bolt.discard_state()
            continue
        else:
            bolt.commit_state(lambda e: True)
            pos += len(batch)
        bolt.state_committed()
    return table


@pytest.mark.parametrize("hop", [None, "20s"])
def test_sketches_give_one_batchs_results_whatever_the_batching(
    store_url,  # noqa: F811
    unique_name,
    tmp_path: Path,
    hop,
):
    """count_distinct past its registers (and its exact list of 3 crossed mid-batch), percentile
    (≤ 200 values: exact), sum and count: batches of any size, called in parts, partial commits,
    replays and discarded attempts give one batch's results to the last bit. count_distinct gave
    1000 for a window's values in one delta and 998 for them in two (its estimate followed the
    sketch's history: HIP for one, composite once merged)."""
    events = sketch_workload(3)
    options = {"aggregates": AGGREGATES, "allowed_lateness": "1s", **({"hop": hop} if hop else {})}
    want = drive(make_bolt(f"sqlite:///{tmp_path / 'one.db'}", "one", **options), events, None)
    assert len(want) >= 8 and max(r["users"] for r in want.values()) > 400
    for seed in (1, 2):
        name = f"{unique_name}_{seed}"  # (Redis: under the fixture's prefix, deleted after)
        bolt = make_bolt(store_url, name, key_prefix=f"test:{unique_name}:", **options)
        assert drive(bolt, events, random.Random(seed)) == want


def test_count_distinct_of_one_delta_and_of_merged_deltas_agree():
    """The aggregate alone: a value-by-value sketch and the merge of its halves' sketches."""
    distinct = window_aggs.make("count_distinct")
    for n in (500, 1000, 3000, 10_000):
        values = [f"v{i}" for i in range(n)]
        whole = chained(distinct, values)
        halves = distinct.merge(
            chained(distinct, values[: n // 2]), chained(distinct, values[n // 2 :])
        )
        assert distinct.result(whole) == distinct.result(halves)


@pytest.mark.parametrize("hop", [None, "30s"])
def test_a_lone_surrogate_counted_distinct_leaves_no_trace(tmp_path: Path, unique_name, hop):
    """A text without a UTF-8 form (a Python bolt's json.loads of "\\ud800") fails its event
    before any sketch takes a value: DataSketches refused it in ``put``, after the percentile
    listed before had taken the event's 1000 (its window's p99 said 1000 for a dead letter)."""
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        **({"hop": hop} if hop else {}),
        aggregates={
            "p99": {"fn": "percentile", "field": "w", "q": 0.99},
            "users": {"fn": "count_distinct", "field": "v", "exact_limit": 2},
        },
    )
    events = [ev(i, T0 + 30_000 + i, v=f"x{i}", w=i) for i in range(5)]
    out = bolt.process([*events, ev(9, T0 + 30_000 + 9, v="\ud800", w=1000)])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [
        (9, "win: not valid UTF-8 text (a lone surrogate: a state keeps what JSON stores)")
    ]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v="z", w=0)])
    got = [(r["p99"], r["users"]) for r in results if r["window_start"] < "2024-05-01T10:01"]
    assert got == [(4.0, 5)] * (2 if hop else 1)


@pytest.mark.parametrize("fn", ["count_distinct", "max", "last", "first", "min"])
def test_a_lone_surrogate_kept_in_a_state_fails_its_event_not_the_commit(
    tmp_path: Path, unique_name, fn
):
    """count_distinct's exact list, max, last (min and first: when it is the one kept) stored the
    text and every commit of the batch failed (orjson: surrogates not allowed), for ever."""
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates={"x": {"fn": fn, "field": "v"}}
    )
    out = bolt.process([ev(1, T0, v="a"), ev(2, T0 + 1, v="\ud800"), ev(3, T0 + 2, v="a")])
    assert [e.origin for e in out.streams["error"]] == [2]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v="a")])
    assert [r["x"] for r in results] == [1 if fn == "count_distinct" else "a"]


def test_a_lone_surrogate_in_a_key_is_its_events_failure_naming_the_field(
    tmp_path: Path, unique_name
):
    """orjson's TypeError escaped ``process`` (the engine bisected the batch to find the record)."""
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, key=["app", "region"])
    out = bolt.process([ev(1, T0, region="eu"), ev(2, T0, region="\udc80"), ev(3, T0, region="eu")])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [
        (2, "key field 'region': not valid UTF-8 text (a lone surrogate)")
    ]
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name + "1")
    out = bolt.process([ev(1, T0, app="\ud800")])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [
        (1, "key field 'app': not valid UTF-8 text (a lone surrogate)")
    ]


def test_a_percentile_of_zeros_is_the_same_zero_whatever_their_order():
    """0.0 and -0.0 are equal: the sketch answered whichever came first (a replay grouping the
    values otherwise wrote -0.0 over 0.0). A zero is 0.0, as min and max prefer it."""
    p = window_aggs.Percentile(0.5)
    states = [
        chained(p, [0.0, -0.0, 1.0]),
        chained(p, [-0.0, 0.0, 1.0]),
        chained(p, [0, -0.0]),
        chained(p, [-0.0, 0]),
        p.merge(chained(p, [-0.0]), chained(p, [0.0])),
        p.merge(chained(p, [0.0]), chained(p, [-0.0])),
        chained(p, [-0.0]),
    ]
    assert [repr(p.result(s)) for s in states] == ["0.0"] * len(states)


def test_a_call_keeps_a_bounded_number_of_sketches_live(tmp_path: Path, unique_name, monkeypatch):
    """A live KLL sketch holds ~1.8 kB whatever its values: with every cell's sketch live until
    the end of the call, 2,000 keys in hopping windows of 1h by 1m (120,000 cells) peaked 256 MB
    (59 MB before the live sketches). Past ``MAX_LIVE_CELLS`` the live ones are serialized, as
    at the end of a call: the same results."""
    from squall.bolts import window

    aggregates = {
        "p": {"fn": "percentile", "field": "v", "q": 0.9},
        "users": {"fn": "count_distinct", "field": "v", "exact_limit": 4},
    }
    events = [ev(i, T0 + 100 * i, app=f"k{i % 40}", v=i % 97) for i in range(2000)]
    closer = ev(9999, T0 + 10 * MIN, app="k0", v=0)
    results = []
    for limit in (8, 10**9):
        monkeypatch.setattr(window, "MAX_LIVE_CELLS", limit)
        bolt = make_bolt(
            f"sqlite:///{tmp_path / f'{limit}.db'}", unique_name, hop="30s", aggregates=aggregates
        )
        live, fold = [], bolt._fold

        def counted(*args, bolt=bolt, fold=fold, live=live):
            n = fold(*args)
            live.append(len(bolt._thawed))
            return n

        bolt._fold = counted
        bolt.process(events)
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        bolt._fold = fold
        got, _ = run(bolt, [closer])
        results.append(sorted((r["window_start"], r["app"], r["p"], r["users"]) for r in got))
        if limit == 8:
            assert max(live) <= 8
        else:
            assert max(live) == 320  # 40 keys in 8 windows: every sketch of the call live
    assert results[0] == results[1] and len(results[0]) > 40


@pytest.mark.parametrize("fn", ["min", "max", "first", "last", "count_distinct"])
def test_a_non_finite_number_kept_in_a_state_fails_its_event(tmp_path: Path, unique_name, fn):
    """NaN and the infinities (a Python bolt's json.loads of NaN) have no JSON form: kept, they
    were written as null (min of NaN, 1, 2 said null; of 1, NaN, 2 said 1), and count_distinct
    took all three for one value. Each is its event's failure, whatever the order."""
    want = {"min": 1, "max": 2, "first": 1, "last": 2, "count_distinct": 2}[fn]
    nan, inf = float("nan"), float("inf")
    for i, values in enumerate(([nan, 1, -inf, 2, inf], [1, inf, 2, nan, -inf])):
        bolt = make_bolt(
            f"sqlite:///{tmp_path / f'{i}.db'}",
            unique_name,
            aggregates={"x": {"fn": fn, "field": "v"}},
        )
        out = bolt.process([ev(j, T0 + j, v=v) for j, v in enumerate(values)])
        failed = {e.origin: e.failure.reason for e in out.streams["error"]}
        assert sorted(failed) == [j for j, v in enumerate(values) if v.__class__ is float]
        assert all("not a finite number" in reason for reason in failed.values())
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v=0)])
        assert [r["x"] for r in results] == [want]


def test_a_non_finite_number_in_a_key_field_is_its_events_failure(tmp_path: Path, unique_name):
    """A key NaN or infinite was written as JSON null: a key the docs refuse, its result's field
    null (and NaN, inf and -inf one key)."""
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name)
    out = bolt.process([ev(1, T0, app=float("nan")), ev(2, T0, app=float("-inf")), ev(3, T0)])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [
        (1, "key field 'app': not a finite number: nan"),
        (2, "key field 'app': not a finite number: -inf"),
    ]


def test_the_estimate_is_that_of_the_sketch_merged_with_itself():
    """``_hll_estimate`` reads the image marked out of order (a byte of the DataSketches
    preamble): the composite estimate a union gives — checked against the union itself, in the
    set and HLL modes, so a datasketches release changing the layout fails here."""
    from datasketches import hll_union

    distinct = window_aggs.make("count_distinct")
    rng = random.Random(7)
    for n in (65, 200, 384, 400, 1000, 5000, 50_000):
        state = chained(distinct, [f"v{rng.randrange(10**9)}" for _ in range(n)])
        union = hll_union(window_aggs.HLL_LG_K)
        sketch = window_aggs._hll_load(state)
        union.update(sketch)
        union.update(sketch)
        assert window_aggs._hll_estimate(state) == union.get_estimate()


@pytest.mark.parametrize("where", ["fold", "close"])
def test_a_call_failing_with_live_sketches_leaves_nothing_for_its_retry(
    tmp_path: Path, unique_name, monkeypatch, where
):
    """The second call of a batch fails after its events' sketches went live — in a put (the
    first window of an event took its value, the second raises) or reading the store to close
    (after the call's sketches were serialized): the engine's retry of the call counts each
    value once (each cell's KLL sketch holds 35 values, not 36)."""
    from squall.errors import TransientError

    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        hop="30s",
        aggregates={
            "p": {"fn": "percentile", "field": "w", "q": 0.99},
            "users": {"fn": "count_distinct", "field": "v", "exact_limit": 2},
        },
    )
    run(bolt, [ev(i, T0 + 30_000 + i, v=f"x{i}", w=i) for i in range(2)])
    batch = [ev(i, T0 + 30_000 + i, v=f"y{i}", w=i) for i in range(5, 40)]
    bolt.process(batch[:10])  # a first call: its sketches serialized into the batch's delta
    calls = []
    if where == "fold":
        put = window_aggs.Percentile.put

        def failing(self, state, value):
            calls.append(value)
            if value == 30.0 and calls.count(30.0) == 2:  # the event of 30's second window
                raise MemoryError("put")
            return put(self, state, value)

        monkeypatch.setattr(window_aggs.Percentile, "put", failing)
        failure = MemoryError
    else:
        read = bolt.store.open_windows

        def failing():
            calls.append(1)
            if len(calls) == 1:
                raise TransientError("window store read: connection refused")
            return read()

        monkeypatch.setattr(bolt.store, "open_windows", failing)
        bolt._open = None
        failure = TransientError
    with pytest.raises(failure):
        bolt.process(batch[10:])
    bolt.process(batch[10:])  # the engine's retry
    counts = {
        ws: (window_aggs._kll_load(p).n, window_aggs.CountDistinct(2).result(u))
        for (ws, _), (p, u) in bolt._delta.items()
    }
    assert counts == {T0: (35, 35), T0 + 30_000: (35, 35)}


@pytest.mark.parametrize("fn", ["first", "last"])
def test_a_value_without_a_json_form_kept_by_first_or_last_fails_its_event(
    tmp_path: Path, unique_name, fn
):
    """A Decimal, bytes or a set (a Python bolt's) kept by first/last failed every commit of its
    batch (orjson: Type is not JSON serializable); in a key field it escaped ``process``."""
    import decimal

    for i, bad in enumerate((decimal.Decimal("1.5"), b"x", {1})):
        bolt = make_bolt(
            f"sqlite:///{tmp_path / f'{i}.db'}",
            unique_name,
            aggregates={"x": {"fn": fn, "field": "v"}},
        )
        kept = T0 if fn == "first" else T0 + 2  # (the value first or last keeps)
        out = bolt.process([ev(1, T0 + 1, v="a"), ev(2, kept, v=bad), ev(3, T0 + 1, app=bad)])
        reasons = [(e.origin, e.failure.reason) for e in out.streams["error"]]
        kind = type(bad).__name__ if bad.__class__ is not decimal.Decimal else "decimal.Decimal"
        why = f"a value without a JSON form (Type is not JSON serializable: {kind})"
        assert reasons == [(2, f"win: {why}"), (3, f"key field 'app': {why}")]
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v=0)])
        assert [r["x"] for r in results] == ["a"]


#: Values a Python bolt makes that JSON gives back as something else (the reason, located).
_INEXACT = [
    (
        {"a": [1, float("nan")]},
        "not a finite number: nan (at ['a'][1])",
    ),
    ([{"x": float("inf")}], "not a finite number: inf (at [0]['x'])"),
    ((1, 2), "a value without an exact JSON form (tuple: it would come back as list)"),
    (
        {"d": __import__("datetime").date(2026, 12, 6)},
        "a value without an exact JSON form (datetime.date: it would come back as str) (at ['d'])",
    ),
    (
        __import__("datetime").datetime(2026, 12, 6, 10, 0),
        "a value without an exact JSON form (datetime.datetime: it would come back as str)",
    ),
    ({1: "a"}, "a value without a JSON form (an object's key is int)"),
]

_IDS = ["nested-nan", "nested-inf", "tuple", "nested-date", "datetime", "int-key"]


@pytest.mark.parametrize("fn", ["first", "last"])
@pytest.mark.parametrize(("bad", "why"), _INEXACT, ids=_IDS)
def test_first_and_last_keep_values_exactly_or_fail_the_event(
    tmp_path: Path, unique_name, fn, bad, why
):
    """A NaN or an infinity inside an object or a list kept by first/last was written null, a
    tuple came back a list and a date its text: what first/last gave back was not what came in
    (a top-level NaN was already the event's failure). Each is now its event's failure, with
    the reason and where in the value; the window's result is the other events'."""
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates={"x": {"fn": fn, "field": "v"}}
    )
    kept = T0 if fn == "first" else T0 + 2  # (the value first or last would keep)
    out = bolt.process([ev(1, T0 + 1, v={"ok": [1, 2.5]}), ev(2, kept, v=bad)])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [(2, f"win: {why}")]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v=0)])
    assert [r["x"] for r in results] == [{"ok": [1, 2.5]}]


@pytest.mark.parametrize(("bad", "why"), _INEXACT, ids=_IDS)
def test_count_distinct_takes_no_value_json_would_change(tmp_path: Path, unique_name, bad, why):
    """count_distinct counted a value and its JSON twin as one (a nested NaN with null, a tuple
    with its list, a date with its text): the same rule as first/last — the event's failure."""
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        aggregates={"n": {"fn": "count_distinct", "field": "v"}},
    )
    out = bolt.process([ev(1, T0 + 1, v=[1, None]), ev(2, T0 + 2, v=bad)])
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [(2, f"win: {why}")]


def test_a_key_field_json_would_change_fails_its_event(tmp_path: Path, unique_name):
    """A date in a key field was keyed by its text (its window's result said a string, and the
    events of the string joined its key); a tuple was keyed as its list. Each is the event's
    failure, with the field named."""
    import datetime
    import uuid

    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name)
    day = datetime.date(2026, 12, 6)
    out = bolt.process(
        [
            ev(1, T0 + 1, app="2026-12-06"),
            ev(2, T0 + 2, app=day),
            ev(3, T0 + 3, app=(1, 2)),
            ev(4, T0 + 4, app=uuid.UUID(int=1)),
        ]
    )
    assert [(e.origin, e.failure.reason) for e in out.streams["error"]] == [
        (
            2,
            "key field 'app': a value without an exact JSON form (datetime.date: it would come back as str)",
        ),
        (3, "no usable key field 'app'"),
        (
            4,
            "key field 'app': a value without an exact JSON form (uuid.UUID: it would come back as str)",
        ),
    ]


def test_exact_accepts_what_json_gives_back_equal():
    """Subclasses orjson writes as their base (an IntEnum, a str subclass, an OrderedDict) come
    back equal: kept; objects and lists as deep as orjson writes them, not deeper."""
    import collections
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    window_aggs.exact(collections.OrderedDict(a=[Level.HIGH, "x", None, True, 1.5]))
    deep: object = 1
    for _ in range(window_aggs._JSON_DEPTH):
        deep = [deep]
    window_aggs.exact(deep)
    with pytest.raises(ValueError, match="nested deeper than JSON keeps"):
        window_aggs.exact([deep])
    window_aggs.exact([2**70], wide=True)
    with pytest.raises(ValueError, match="beyond 64 bits"):
        window_aggs.exact([2**70])
