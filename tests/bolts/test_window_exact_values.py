"""The window bolt's exact values (first/last, count_distinct, key fields), reviewed adversarially:
what a state keeps comes back from every store as it came, and equal values count once."""

from __future__ import annotations

import enum
from collections import OrderedDict, defaultdict
from pathlib import Path

import orjson
import pytest

from squall import exact_json
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


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float, enum.Enum):
    HALF = 0.5


class Plain(enum.Enum):
    ONE = 1


def _tricky() -> list[tuple[object, bool]]:
    """Values for ``exact``, with ``wide``: what JSON gives back as itself and what it does not."""
    import collections
    import datetime
    import decimal
    import uuid

    nan, inf = float("nan"), float("inf")
    return [
        (v, wide)
        for v in (
            {"a": [1, 1.0, True, "1", None, -0.0, 1e308, 5e-324, "a\x00b", "é", {}, []]},
            collections.OrderedDict(b=[Level.HIGH, Colour.RED, Tag("t"), Ratio.HALF]),
            {"a": [1, nan]},
            [{"x": inf}],
            (1, 2),
            [(1, 2)],
            {"d": datetime.date(2026, 12, 6)},
            [uuid.UUID(int=1)],
            [Plain.ONE],
            [decimal.Decimal(1)],
            [b"x"],
            [{1}],
            {1: "a"},
            {Colour.RED: 1},
            [{Tag("k"): 1}],
            {"k": "\ud800"},
            {"\ud800": 1},
            [2**64 - 1, -(2**63)],
            [2**64],
            {"n": -(2**63) - 1},
        )
        for wide in (False, True)
    ]


def _verdict(check) -> str:
    try:
        check()
    except ValueError as exc:
        return str(exc)
    return "taken"


@pytest.mark.parametrize(("value", "wide"), _tricky())
def test_the_quick_check_decides_as_the_walk(value, wide):
    """``exact`` takes a value orjson writes and reads back equal without walking it in Python
    (the walk cost ~1 µs a value: 22 µs per event of a 20-field object, four times the event);
    whatever it takes or refuses, the walk alone takes or refuses too (with the same reason)."""
    room = window_aggs._JSON_DEPTH

    def walk() -> None:
        try:
            window_aggs._walk(value, wide, room)
        except window_aggs._Inexact as exc:
            raise ValueError(f"{exc.reason} (at {exc.at})" if exc.at else exc.reason) from None

    assert _verdict(lambda: window_aggs.exact(value, wide)) == _verdict(walk)


@pytest.mark.parametrize(("value", "wide"), _tricky())
def test_what_exact_takes_json_writes_and_gives_back_equal(value, wide):
    """A dict keyed by a text subclass (a ``StrEnum`` member) passed the walk, which took any
    ``str`` for a key, but orjson writes no such key ("Dict key must be str"): kept by
    first/last, it failed every commit of its batch (before the walk, its own event)."""
    if _verdict(lambda: window_aggs.exact(value, wide)) == "taken":
        text = exact_json.dumps(value) if wide else orjson.dumps(value)
        assert exact_json.loads(text) == value


def test_a_value_json_gives_back_equal_is_taken_without_the_walk(monkeypatch):
    def walked(*args):
        raise AssertionError("walked")

    monkeypatch.setattr(window_aggs, "_walk", walked)
    big = {f"k{i}": {"x": i, "y": [i, "s", 1.5, None, True]} for i in range(20)}
    window_aggs.exact(big)
    window_aggs.exact(big, above=3)
    window_aggs._storable(big)
    assert window_aggs._distinct_text(big).startswith(window_aggs.DISTINCT_MARK + "{")
    window_aggs.exact(nested(251), above=3)
    with pytest.raises(AssertionError, match="walked"):  # (more brackets than room: walked)
        window_aggs.exact(nested(252), above=3)


def test_a_state_holding_a_text_subclass_as_its_json_counts_it_as_its_text():
    """An exact list written before the fix above holds ``Colour.RED`` as its JSON
    (``\\x1f"red"``): read now, it is the text ``red`` — with a ``red`` stored or coming, once."""
    pytest.importorskip("datasketches")
    agg = window_aggs.make("count_distinct")
    old = [window_aggs.DISTINCT_MARK + '"red"', "blue"]
    assert agg.result(old) == 2
    assert agg.result(agg.add(old, "red", None)) == 2
    assert agg.result(agg.merge(old, ["red", "green"])) == 3
    assert agg.result(agg.merge(["red"], old)) == 2


@pytest.mark.parametrize("fn", ["first", "last", "count_distinct"])
def test_an_object_keyed_by_a_text_subclass_fails_its_event_not_the_commit(
    tmp_path: Path, unique_name, fn
):
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates={"x": {"fn": fn, "field": "v"}}
    )
    out = bolt.process([ev(1, T0 + 1, v={"red": 1}), ev(2, T0 + 2, v={Colour.RED: 2})])
    assert [(e.origin, e.failure.reason) for e in out.streams.get("error", [])] == [
        (2, f"win: a value without a JSON form (an object's key is {Colour.__module__}.Colour)")
    ]
    bolt.commit_state(lambda e: True)  # (first/last: raised "Dict key must be str")
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 5 * MIN, v=0)])
    assert [r["x"] for r in results] == [1 if fn == "count_distinct" else {"red": 1}]


def test_an_event_in_hopping_windows_has_its_values_checked_once(
    tmp_path: Path, unique_name, monkeypatch
):
    """first/last checked their value, and count_distinct made its text, in each of an event's
    windows: with the exact-values check of an object (~6 µs), an event in 10 hopping windows
    cost 240 µs in the bolt (45 before the check). Once per event now, each window the same."""
    pytest.importorskip("datasketches")
    calls = []
    storable, distinct = window_aggs._storable, window_aggs._distinct_text
    monkeypatch.setattr(window_aggs, "_storable", lambda v: calls.append(v) or storable(v))
    monkeypatch.setattr(window_aggs, "_distinct_text", lambda v: calls.append(v) or distinct(v))
    aggregates = {
        "f": {"fn": "first", "field": "v"},
        "l": {"fn": "last", "field": "v"},
        "d": {"fn": "count_distinct", "field": "v"},
    }
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, size="10m", hop="1m", aggregates=aggregates
    )
    out = bolt.process([ev(1, T0 + 1, v={"a": [1, 2]}), ev(2, T0 + 2, v={"b": 1})])
    assert (len(calls), out.streams.get("error")) == (6, None)  # (3 aggregates, 2 events)
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 30 * MIN, v=0)])
    got = [(r["f"], r["l"], r["d"]) for r in results]
    assert got == [({"a": [1, 2]}, {"b": 1}, 2)] * 10


def test_a_first_or_last_object_in_a_result_is_the_results_own(tmp_path: Path, unique_name):
    """first/last keep the event's own value, and an event's hopping windows one value: a later
    bolt changing one result's object changed every other result's, and the state the commit
    wrote (after a restart each result's value is its own, from the store). Each result now
    holds a copy."""
    aggregates = {"f": {"fn": "first", "field": "v"}, "l": {"fn": "last", "field": "v"}}
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        size="2m",
        hop="1m",
        aggregates=aggregates,
        emit="every_batch",
    )
    value = {"a": [1, {"b": 2}]}
    out = bolt.process([ev(1, T0 + 1, v=value)])
    results = [e.value for e in out.streams["default"]]
    assert len(results) == 2  # the event's two windows
    results[0]["f"]["a"][1]["b"] = 99  # a later bolt's change
    results[0]["l"]["a"].append(3)
    assert [r["f"] for r in results[1:]] == [{"a": [1, {"b": 2}]}]
    assert [r["l"] for r in results[1:]] == [{"a": [1, {"b": 2}]}]
    assert value == {"a": [1, {"b": 2}]}  # the event's value, as the state keeps it
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(99, T0 + 30 * MIN, v=0)])
    assert [(r["f"], r["l"]) for r in results if r["f"] != 0] == [(value, value)] * 2


@pytest.mark.parametrize(
    "value",
    [OrderedDict(a=[1, {"b": 2}]), defaultdict(list, a=[1, {"b": 2}])],
    ids=["OrderedDict", "defaultdict"],
)
def test_a_first_or_last_dict_subclass_in_a_result_is_the_results_own(
    tmp_path: Path, unique_name, value
):
    """A Python bolt's dict subclass (a defaultdict, an OrderedDict: JSON writes and reads it back
    equal, so first/last take it) was not copied — only a plain dict or list was — so a later
    bolt changing one result's object still changed the other window's result and the event's
    value the state keeps. Each result is a plain dict of its own, as after a restart."""
    aggregates = {"f": {"fn": "first", "field": "v"}, "l": {"fn": "last", "field": "v"}}
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        size="2m",
        hop="1m",
        aggregates=aggregates,
        emit="every_batch",
    )
    out = bolt.process([ev(1, T0 + 1, v=value)])
    results = [e.value for e in out.streams["default"]]
    assert len(results) == 2  # the event's two windows
    results[0]["f"]["a"][1]["b"] = 99  # a later bolt's change
    results[0]["l"]["a"].append(3)
    assert [r["f"] for r in results[1:]] == [{"a": [1, {"b": 2}]}]
    assert [r["l"] for r in results[1:]] == [{"a": [1, {"b": 2}]}]
    assert value == {"a": [1, {"b": 2}]}  # the event's value, as the state keeps it
    assert {type(r[n]) for r in results for n in ("f", "l")} == {dict}


class Grade(enum.IntEnum):
    LOW = 1
    HIGH = 3


def test_an_int_or_str_subclass_is_its_plain_value_in_every_aggregate(tmp_path: Path, unique_name):
    """An ``IntEnum`` member was "not a number" to min, max, sum, mean and percentile, while
    first/last, count_distinct and keys took it; and first/last gave it back as the enum live but
    as a plain int after a restart (from the store). A subclass of int, float or str is now its
    plain value in every aggregate: the same answers, types included, live and after a
    restart; a boolean is still no number."""
    aggregates = {
        "lo": {"fn": "min", "field": "v"},
        "hi": {"fn": "max", "field": "v"},
        "total": {"fn": "sum", "field": "v"},
        "avg": {"fn": "mean", "field": "v"},
        "f": {"fn": "first", "field": "v"},
        "s": {"fn": "first", "field": "c"},
    }
    url = f"sqlite:///{tmp_path / 's.db'}"
    bolt = make_bolt(url, unique_name, aggregates=aggregates, emit="every_batch")
    events = [ev(1, T0 + 1, v=Grade.HIGH, c=Colour.RED), ev(2, T0 + 2, v=Grade.LOW, c="x")]
    out = bolt.process(events)
    assert out.streams.get("error") is None
    [live] = [e.value for e in out.streams["default"]]
    got = {k: live[k] for k in aggregates}
    assert got == {"lo": 1, "hi": 3, "total": 4, "avg": 2.0, "f": 3, "s": "red"}
    assert (type(got["f"]), type(got["s"]), type(got["lo"])) == (int, str, int)
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    restarted = make_bolt(url, unique_name, aggregates=aggregates)
    results, _ = run(restarted, [ev(99, T0 + 5 * MIN, v=0)])
    [after] = [r for r in results if r["f"] != 0]
    assert {k: after[k] for k in aggregates} == got
    assert (type(after["f"]), type(after["s"])) == (int, str)
    # a boolean is no number, as before
    out = make_bolt(url, unique_name + "b", aggregates={"n": {"fn": "sum", "field": "v"}}).process(
        [ev(3, T0 + 3, v=True)]
    )
    assert [e.failure.reason for e in out.streams["error"]] == ["win: not a number: True"]


class Shade(str, enum.Enum):  # noqa: UP042 - the mixin, not a StrEnum: str() is "Shade.DARK"
    DARK = "dark"


class Label(str):
    def __str__(self) -> str:
        return "<label>"


def test_a_str_subclass_with_its_own_str_is_the_text_json_writes(tmp_path: Path, unique_name):
    """``plain`` took a str subclass's text with ``str(value)``: a ``(str, Enum)`` member (whose
    str() is ``Shade.DARK``) or a bolt's text type with its own ``__str__`` was
    that text in first/last and min/max live, but the value JSON writes (``dark``) after a
    restart and in a key. Now the text JSON writes, live as after a restart."""
    aggregates = {"f": {"fn": "first", "field": "c"}, "lo": {"fn": "min", "field": "c"}}
    url = f"sqlite:///{tmp_path / 's.db'}"
    bolt = make_bolt(url, unique_name, aggregates=aggregates, emit="every_batch")
    out = bolt.process([ev(1, T0 + 1, c=Shade.DARK), ev(2, T0 + 2, c=Label("zz"))])
    assert out.streams.get("error") is None
    [live] = [e.value for e in out.streams["default"]]
    assert (live["f"], live["lo"]) == ("dark", "dark")
    assert window_aggs.plain(Label("zz")) == "zz"
    assert type(window_aggs.plain(Shade.DARK)) is str
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    restarted = make_bolt(url, unique_name, aggregates=aggregates)
    results, _ = run(restarted, [ev(99, T0 + 5 * MIN, c="a")])
    [after] = [r for r in results if r["f"] != "a"]
    assert (after["f"], after["lo"]) == ("dark", "dark")


class Share(float):  # a bolt's own float type (as numpy's float64 is a float subclass)
    pass


def test_a_key_field_subclass_of_a_number_or_text_is_its_plain_value(tmp_path: Path, unique_name):
    """Every aggregate takes a subclass of int, float or str as its plain value (4a7cf07), but a
    key field of a float subclass failed the event ("a value without a JSON form": orjson writes
    no float subclass). Now a key field's such value is its plain value too: the key of 1.5."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    bolt = make_bolt(url, unique_name, key=["app", "r"], emit="every_batch")
    out = bolt.process(
        [ev(1, T0 + 1, r=Share(1.5)), ev(2, T0 + 2, r=1.5), ev(3, T0 + 3, r=Level.HIGH)]
    )
    assert out.streams.get("error") is None
    results = {(e.value["r"], type(e.value["r"])): e.value["n"] for e in out.streams["default"]}
    assert results == {(1.5, float): 2, (3, int): 1}
