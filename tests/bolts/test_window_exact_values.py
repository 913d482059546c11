"""The window bolt's exact values (first/last, count_distinct, key fields), reviewed adversarially:
what a state keeps comes back from every store as it came, and equal values count once."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from squall.bolts import window_aggs
from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401


def nested(levels: int) -> object:
    """A text under ``levels`` objects and lists, alternately."""
    value: object = "x"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("fn", ["first", "last"])
def test_a_first_or_last_value_too_deep_for_its_state_fails_its_event_not_the_commit(
    store_url,  # noqa: F811
    unique_name,
    fn,
):
    """first/last keep their value three levels down in what the store writes (``{key:
    [[order, value]]}``): a value of 252 to 254 levels passed the check (orjson writes 254
    alone) and every commit of its batch failed ("Recursion limit reached"). Such a value is
    now its event's failure; one of 251 levels is kept and comes back from the store as it
    came."""
    deepest = window_aggs._JSON_DEPTH - 3
    bolt = make_bolt(store_url, unique_name, aggregates={"x": {"fn": fn, "field": "v"}})
    kept = T0 if fn == "first" else T0 + 2  # (the time first or last would keep)
    out = bolt.process([ev(1, T0 + 1, v=nested(deepest)), ev(2, kept, v=nested(deepest + 1))])
    assert [
        (e.origin, e.failure.reason.split(" (at ")[0]) for e in out.streams.get("error", [])
    ] == [(2, f"win: nested deeper than JSON keeps ({deepest} levels)")]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    restarted = make_bolt(store_url, unique_name, aggregates={"x": {"fn": fn, "field": "v"}})
    results, _ = run(restarted, [ev(99, T0 + 5 * MIN, v=0)])
    assert [r["x"] for r in results] == [nested(deepest)]


def test_exact_bounds_the_depth_by_the_levels_above_the_value():
    """count_distinct and key fields write the value alone (254 levels); first/last under 3."""
    window_aggs.exact(nested(254))
    with pytest.raises(ValueError, match=r"nested deeper than JSON keeps \(254 levels\)"):
        window_aggs.exact(nested(255))
    window_aggs.exact(nested(251), above=3)
    with pytest.raises(ValueError, match=r"nested deeper than JSON keeps \(251 levels\)"):
        window_aggs.exact(nested(252), above=3)


class Colour(enum.StrEnum):
    RED = "red"


class Tag(str):
    """A Python bolt's text type."""


@pytest.mark.parametrize("limit", [64, 1])
def test_count_distinct_counts_a_text_subclass_as_its_text(tmp_path: Path, unique_name, limit):
    """A text subclass (a ``StrEnum`` member, a Python bolt's own ``str`` type) is the text JSON
    writes for it — the key of its text, kept by first/last as its text —, but count_distinct
    took its JSON (``"red"`` in quotes) for the value: "red" and ``Colour.RED`` counted two."""
    pytest.importorskip("datasketches")
    aggregates = {"n": {"fn": "count_distinct", "field": "v", "exact_limit": limit}}
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates=aggregates)
    values = ["red", Colour.RED, Tag("red"), "blue", Tag("blue")]
    results, _ = run(
        bolt, [*(ev(i, T0 + i, v=v) for i, v in enumerate(values)), ev(9, T0 + 2 * MIN, v="x")]
    )
    assert [r["n"] for r in results] == [2]
    agg = window_aggs.make("count_distinct", exact_limit=limit)
    state = agg.new()
    for v in (Colour.RED, Tag("\x1fa"), "red", "\x1fa"):
        state = agg.add(state, v, None)
    assert agg.result(state) == 2
