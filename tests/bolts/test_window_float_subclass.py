"""A ``float`` subclass nested in a window's value (NumPy's ``float64`` inside an object a Python
bolt built) is its number in first/last/count_distinct: the same results and the same stored
state as the plain float. orjson hands a float subclass to ``default``, and the window bolt's
checks and states wrote JSON without one: the event failed ("a value without a JSON form"),
while at the top level such a value counted as its number."""

from __future__ import annotations

import math

import pytest

from squall.bolts import window_aggs
from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401


class Score(float):
    """Stands for ``numpy.float64`` (a ``float`` subclass with its own ``__repr__``)."""

    def __repr__(self) -> str:
        return f"np.float64({float.__repr__(self)})"


def values(number: type) -> list[object]:
    """Three events' values, their floats of type ``number``; two are one value."""
    return [
        {"model": {"score": number(0.25), "parts": [number(1.5), 2]}, "tag": "a"},
        [number(0.5), {"w": number(-0.0)}],
        {"tag": "a", "model": {"parts": [number(1.5), 2], "score": number(0.25)}},
    ]


def batch(number: type, shift: int = 0) -> list:
    return [ev(i + shift, T0 + i + 1, v=v) for i, v in enumerate(values(number))]


def stored(bolt) -> list[str]:
    """The window's committed rows as the store holds them (JSON text)."""
    rows = bolt.store.read([T0])[T0]
    return sorted(rows.deltas) + ([rows.snapshot] if rows.snapshot else [])


@pytest.mark.parametrize("fn", ["first", "last", "count_distinct"])
def test_a_nested_float_subclass_gives_the_plain_floats_results_and_state(
    store_url,  # noqa: F811
    unique_name,
    fn,
):
    """Live results, the committed state (byte for byte) and the results after a restart (the
    window closed from the store) are those of the same events with plain floats."""
    aggregates = {"x": {"fn": fn, "field": "v"}}
    seen = {}
    for number in (float, Score):
        name = f"{unique_name}_{number.__name__.lower()}"
        bolt = make_bolt(store_url, name, aggregates=aggregates, emit="every_batch")
        out = bolt.process(batch(number))
        assert out.streams.get("error") is None
        live = [e.value["x"] for e in out.streams["default"]]
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        state = stored(bolt)
        restarted = make_bolt(store_url, name, aggregates=aggregates)
        results, _ = run(restarted, [ev(99, T0 + 5 * MIN, v=0)])
        seen[number] = (
            live,
            state,
            [r["x"] for r in results if r["window_start"].endswith(":00:00.000Z")],
        )
    assert seen[Score] == seen[float]
    live, _, closed = seen[Score]
    assert closed == live[-1:]
    kept = repr(live + closed)
    assert "np.float64" not in kept and "Score" not in kept  # plain floats, live and restarted
    if fn == "count_distinct":
        assert live == [2]


def test_a_nested_float_subclass_in_a_sketch_and_in_hopping_windows(tmp_path, unique_name):
    """Past the exact list (the HLL sketch) and in every window of an event, the same counts."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    aggregates = {"d": {"fn": "count_distinct", "field": "v", "exact_limit": 1}}
    aggregates["f"] = {"fn": "first", "field": "v"}
    counts = {}
    for number in (float, Score):
        bolt = make_bolt(
            url,
            f"{unique_name}_{number.__name__.lower()}",
            aggregates=aggregates,
            size="3m",
            hop="1m",
        )
        results, _ = run(bolt, [*batch(number), ev(9, T0 + 10 * MIN, v=0)])
        counts[number] = sorted((r["window_start"], r["d"], repr(r["f"])) for r in results)
    assert counts[Score] == counts[float]
    assert [d for _, d, _ in counts[float]].count(2) == 3  # the three windows of the events


def test_a_nested_float_subclass_that_is_no_finite_number_fails_as_the_plain_float_does(
    tmp_path, unique_name
):
    """NaN has no JSON form (written null): the event's failure, with where, for either type."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    reasons = {}
    for number in (float, Score):
        bolt = make_bolt(
            url,
            f"{unique_name}_{number.__name__.lower()}",
            aggregates={
                "f": {"fn": "first", "field": "v"},
                "d": {"fn": "count_distinct", "field": "v"},
            },
        )
        out = bolt.process([ev(1, T0 + 1, v={"m": [number(math.nan)]}), ev(2, T0 + 2, v=1)])
        reasons[number] = [(e.origin, e.failure.reason) for e in out.streams["error"]]
    assert reasons[Score] == reasons[float] == [(1, "win: not a finite number: nan (at ['m'][0])")]


def test_exact_takes_a_nested_float_subclass_as_its_number():
    window_aggs.exact({"m": [Score(0.1)]}, above=3)
    assert window_aggs._distinct_text({"b": Score(0.5), "a": [Score(1.0)]}) == (
        window_aggs._distinct_text({"a": [1.0], "b": 0.5})
    )
    with pytest.raises(ValueError, match=r"an exact JSON form \(tuple.*\(at \['m'\]\)"):
        window_aggs.exact({"m": (Score(0.1),)})  # a tuple is a list in JSON, whatever it holds


def test_numpys_float64_nested_is_its_number(tmp_path, unique_name):
    """The same with NumPy's own ``float64`` (numpy 2's repr: ``np.float64(0.25)``)."""
    np = pytest.importorskip("numpy")
    url = f"sqlite:///{tmp_path / 's.db'}"
    aggregates = {
        "f": {"fn": "first", "field": "v"},
        "l": {"fn": "last", "field": "v"},
        "d": {"fn": "count_distinct", "field": "v"},
    }
    seen = {}
    for number in (float, np.float64):
        bolt = make_bolt(url, f"{unique_name}_{number.__name__}", aggregates=aggregates)
        results, _ = run(bolt, [*batch(number), ev(9, T0 + 5 * MIN, v=0)])
        seen[number] = [repr(r) for r in results]
    assert seen[np.float64] == seen[float]
