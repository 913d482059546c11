"""NumPy's scalar numbers that are no subclass of Python's (``int64``, ``float32``, ``uint8``,
``bool_``: a Python bolt that computed a value with NumPy or pandas puts them in the event) are
their Python number everywhere in the window bolt — key fields, ``sum``/``min``/``max``/``mean``/
``percentile``, ``count_distinct``, ``first``/``last``, ``where`` and the event time —, with the
same results and the same stored state as the plain number. The key fields and the numeric
aggregates refused them (``not a number: np.int64(3)``, ``key field 'kn': a value without a JSON
form``), ``where`` took ``bool_`` for ``1``, and the time was ``not a time: int64``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.bolts.test_window import MIN, T0, ev, make_bolt, run, store_url  # noqa: F401

np = pytest.importorskip("numpy")

NUMERIC = ("sum", "min", "max", "mean", "percentile")
ANY_VALUE = ("count_distinct", "first", "last")


def numbers(plain: bool) -> list[object]:
    """Values of NumPy's scalar types (or, ``plain``, their Python numbers: ``item()``)."""
    values = [np.int64(3), np.float32(1.5), np.uint8(7), np.int32(-2), np.float16(0.25)]
    return [v.item() for v in values] if plain else values


def batch(plain: bool, shift: int = 0) -> list:
    """Events whose aggregated value and second key field are NumPy scalars (two keys)."""
    flags = [np.bool_(True), np.bool_(False)]
    events = []
    for i, v in enumerate(numbers(plain)):
        kn = np.int64(i % 2) if not plain else i % 2
        flag = flags[i % 2].item() if plain else flags[i % 2]
        events.append(ev(i + shift, T0 + i + 1, v=v, kn=kn, flag=flag))
    return events


def stored(bolt) -> list[str]:
    """The window's committed rows as the store holds them (JSON text)."""
    rows = bolt.store.read([T0])[T0]
    return sorted(rows.deltas) + ([rows.snapshot] if rows.snapshot else [])


def test_numpy_scalars_give_the_plain_numbers_results_and_state(
    store_url,  # noqa: F811
    unique_name,
):
    """Live results, the committed state (byte for byte) and the results after a restart (the
    window closed from the store) are those of the same events with Python numbers."""
    aggregates = {fn: {"fn": fn, "field": "v"} for fn in NUMERIC + ANY_VALUE}
    aggregates["flags"] = {"fn": "count_distinct", "field": "flag"}
    aggregates["last_flag"] = {"fn": "last", "field": "flag"}
    config = {"aggregates": aggregates, "key": ["app", "kn"]}
    seen = {}
    for plain in (True, False):
        name = f"{unique_name}_{'plain' if plain else 'numpy'}"
        bolt = make_bolt(store_url, name, emit="every_batch", **config)
        out = bolt.process(batch(plain))
        assert out.streams.get("error") is None
        live = sorted(repr(e.value) for e in out.streams["default"])
        bolt.commit_state(lambda e: True)
        bolt.state_committed()
        state = stored(bolt)
        restarted = make_bolt(store_url, name, **config)
        results, _ = run(restarted, [ev(99, T0 + 5 * MIN, v=0, kn=0)])
        closed = sorted(repr(r) for r in results if r["window_start"].endswith(":00:00.000Z"))
        seen[plain] = (live, state, closed)
    assert seen[False] == seen[True]
    _, _, closed = seen[True]
    assert len(closed) == 2 and "np." not in repr(closed)
    by_key = {r["kn"]: r for r in map(eval, closed)}  # (reprs of plain JSON data)
    assert by_key[0]["sum"] == 3 + 7 + 0.25 and by_key[1]["min"] == -2
    assert by_key[0]["flags"] == 1 and by_key[0]["last_flag"] is True


def test_numpy_scalars_in_hopping_windows_and_past_the_exact_list(tmp_path, unique_name):
    """In every window of an event, and in count_distinct's sketch, the same counts."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    aggregates = {
        "d": {"fn": "count_distinct", "field": "v", "exact_limit": 1},
        "p": {"fn": "percentile", "field": "v", "q": 0.5},
        "s": {"fn": "sum", "field": "v"},
    }
    seen = {}
    for plain in (True, False):
        bolt = make_bolt(url, f"{unique_name}_{plain}", aggregates=aggregates, size="3m", hop="1m")
        results, _ = run(bolt, [*batch(plain), ev(9, T0 + 10 * MIN, v=0)])
        seen[plain] = sorted(repr(r) for r in results)
    assert seen[False] == seen[True]
    assert len(seen[True]) == 3  # the events' three windows, each with the five values
    assert all("'d': 5, 'p': 1.5, 's': 9.75" in r for r in seen[True])


@pytest.mark.parametrize(
    "numpy_value, plain_value",
    [
        (np.float32("nan"), float("nan")),
        (np.float32("inf"), float("inf")),
        (np.float16("-inf"), float("-inf")),
        (np.float64("nan"), float("nan")),
    ],
    ids=["float32-nan", "float32-inf", "float16-minus-inf", "float64-nan"],
)
def test_a_numpy_nan_or_infinity_fails_as_the_plain_float_does(
    tmp_path, unique_name, numpy_value, plain_value
):
    """No finite number: the event's failure with the plain float's reason, in each aggregate
    and in a key field (a float32 NaN was `a value without an exact JSON form (numpy.float32:
    it would come back as NoneType)` in a key field and count_distinct)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    reasons = {}
    for value in (plain_value, numpy_value):
        got = []
        for fn in NUMERIC + ANY_VALUE:
            bolt = make_bolt(url, f"{unique_name}_{fn}", aggregates={"x": {"fn": fn, "field": "v"}})
            out = bolt.process([ev(1, T0 + 1, v=value), ev(2, T0 + 2, v=1)])
            got.append([(e.origin, e.failure.reason) for e in out.streams["error"]])
        bolt = make_bolt(url, f"{unique_name}_key", key=["app", "kn"])
        out = bolt.process([ev(1, T0 + 1, kn=value), ev(2, T0 + 2, kn=1)])
        got.append([(e.origin, e.failure.reason) for e in out.streams["error"]])
        reasons[type(value)] = got
    assert reasons[type(numpy_value)] == reasons[float]
    text = repr(plain_value)
    assert reasons[float][0] == [(1, f"win: not a finite number: {text}")]
    assert reasons[float][-1] == [(1, f"key field 'kn': not a finite number: {text}")]


def test_a_numpy_bool_is_a_boolean_in_where_and_sum_refuses_it_as_true(tmp_path, unique_name):
    """``where`` compares a ``bool_`` as JSON's ``true`` (it matched ``1``: Python's ``True ==
    1`` and ``hash``), an ``int64`` as its number; ``sum`` refuses a ``bool_`` as it refuses
    ``True`` (a boolean is no number), naming the Python value."""
    aggs = {
        "paid": {"fn": "count", "where": {"paid": True}},
        "ones": {"fn": "count", "where": {"paid": 1}},
        "twos": {"fn": "count", "where": {"k": [2, "x"]}},
    }
    url = f"sqlite:///{tmp_path / 's.db'}"
    counts = {}
    for plain in (True, False):
        bolt = make_bolt(url, f"{unique_name}_{plain}", aggregates=aggs)
        conv = (lambda v: v.item()) if plain else (lambda v: v)
        results, _ = run(
            bolt,
            [
                ev(0, T0, paid=conv(np.bool_(True)), k=conv(np.int64(2))),
                ev(1, T0 + 1, paid=conv(np.int8(1)), k=conv(np.float32(2.0))),
                ev(2, T0 + 2 * MIN),
            ],
        )
        [result] = results
        counts[plain] = (result["paid"], result["ones"], result["twos"])
    assert counts[False] == counts[True] == (1, 1, 2)
    bolt = make_bolt(url, f"{unique_name}_sum", aggregates={"s": {"fn": "sum", "field": "v"}})
    out = bolt.process([ev(1, T0 + 1, v=np.bool_(True)), ev(2, T0 + 2, v=True)])
    assert [e.failure.reason for e in out.streams["error"]] == ["win: not a number: True"] * 2


def test_a_numpy_event_time_is_its_number(tmp_path, unique_name):
    """An epoch time in an ``int64`` (pandas' milliseconds) or a ``float64``/``float32`` of
    seconds is in the window of its Python number (it failed: `not a time: int64`)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    starts = {}
    for plain in (True, False):
        times = [np.int64(T0 + 5), np.float32((T0 + MIN) / 1000), np.uint64(T0 + 2 * MIN)]
        if plain:
            times = [t.item() for t in times]
        bolt = make_bolt(url, f"{unique_name}_{plain}")
        results, _ = run(bolt, [*(ev(i, t) for i, t in enumerate(times)), ev(9, T0 + 10 * MIN)])
        starts[plain] = sorted((r["window_start"], r["n"]) for r in results)
    assert starts[False] == starts[True]
    assert [n for _, n in starts[True]] == [1, 1, 1]  # (a float32 of seconds: 128 s steps)
    bolt = make_bolt(url, f"{unique_name}_bool")
    out = bolt.process([ev(1, np.bool_(True))])
    assert [e.failure.reason for e in out.streams["error"]] == ["bad 'timestamp': not a time: True"]


def test_squall_never_imports_numpy():
    """NumPy is a dependency of the tests (and of datasketches), not of squall: its scalars are
    told by their type's module and dtype (``exact_json.as_number``), without importing it."""
    root = Path(__file__).resolve().parents[2] / "squall"
    importing = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "numpy" or n.startswith("numpy.") for n in names):
                importing.append(str(path.relative_to(root)))
    assert importing == []
