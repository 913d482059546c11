"""``count_distinct`` of JSON objects: one object is one value whatever the order of its keys.

An object's text was its JSON in the event's key order, so ``{"a":1,"b":2}`` and
``{"b":2,"a":1}`` counted as two. Its text is now canonical (keys sorted at every depth), and a
state written before is read with its objects' texts made canonical; a state of scalar values
(strings, numbers, booleans, lists of them) is the same text as before, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.bolts import window_aggs
from tests.bolts.test_window import MIN, T0, ev, finals, make_bolt, run

pytest.importorskip("datasketches")

SAME = [
    {"a": 1, "b": 2},
    {"b": 2, "a": 1},
]
NESTED = [
    {"user": {"id": "u1", "tier": "gold"}, "tags": [{"k": "x", "v": 1}]},
    {"tags": [{"v": 1, "k": "x"}], "user": {"tier": "gold", "id": "u1"}},
]


def count(values: list, limit: int = 64) -> int:
    agg = window_aggs.make("count_distinct", exact_limit=limit)
    state = agg.new()
    for v in values:
        state = agg.add(state, v, None)
    return agg.result(state)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (SAME, 1),
        (NESTED, 1),
        ([[{"a": 1, "b": 2}], [{"b": 2, "a": 1}]], 1),  # an object in a list
        ([[1, 2], [2, 1]], 2),  # a list's order is its value
        ([{"a": 1}, {"a": "1"}, {"a": 1, "b": None}], 3),  # values and keys still tell apart
    ],
    ids=["key-order", "nested", "in-a-list", "list-order", "different"],
)
def test_an_object_counts_once_whatever_the_order_of_its_keys(values: list, expected: int):
    assert count(values) == expected


def test_past_the_exact_list_the_sketch_counts_an_object_once_too():
    """Past ``exact_limit`` the texts are hashed into the HLL sketch: the same canonical text."""
    objects = [{"id": i, "kind": "k", "n": i % 7} for i in range(300)]
    reordered = [dict(reversed(list(o.items()))) for o in objects]
    both = count(objects + reordered, limit=8)
    assert both == count(objects, limit=8)
    assert both == pytest.approx(300, rel=0.05)


def test_a_window_counts_distinct_objects_through_the_bolt(tmp_path: Path, unique_name):
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        aggregates={"devices": {"fn": "count_distinct", "field": "device"}},
    )
    run(bolt, [ev(0, T0 + 1000, device=SAME[0]), ev(1, T0 + 2000, device=NESTED[0])])
    # another batch, the same objects with their keys in another order
    run(bolt, [ev(2, T0 + 3000, device=SAME[1]), ev(3, T0 + 4000, device=NESTED[1])])
    results, _ = run(bolt, [ev(4, T0 + MIN + 1000)])
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["devices"] == 2


#: Scalar values (strings, numbers in two forms, booleans, a string starting with the mark, lists
#: of scalars, integers beyond 64 bits) and the state the version before wrote for them: the
#: exact list with ``exact_limit`` 100, and the HLL image with the default 64.
SCALARS = [
    *(f"u{i}" for i in range(40)),
    *range(30),
    *(i + 0.5 for i in range(10)),
    *(True, False, 1.0, "1", "\x1fx", [1, "a"], [2, [3, "b"]], 2**70, -(2**70)),
]
EXACT_BEFORE = (
    [f"u{i}" for i in range(40)]
    + [f"\x1f{i}" for i in range(30)]
    + [f"\x1f{i}.5" for i in range(10)]
    + ["\x1ftrue", "\x1ffalse", "\x1f1.0", "1", "\x1f\x1fx", '\x1f[1,"a"]', '\x1f[2,[3,"b"]]']
    + ["\x1f1180591620717411303424", "\x1f-1180591620717411303424"]
)
HLL_BEFORE = {
    "h": "AwEHDAcIAAlZAAAAGe5cCoNbOgwEIJcIhX4oBggjgAZ1AlAPCl7pDguT6AobOF4GljsAC0/fiwaPAvQLEKX0BBJD"
    "kQQTOocLlKIXBRbXMQQXjkEK/4z+DBlNmgX850oHG+4QCCL/2goj/B4FpEYHBynDPxWqpg8GKyr7BCwC+Qst/bcIIwbB"
    "DTIT8ggz5JYKtMPFEN/VdQRt4akFt/RrCbnAdAQ6kzYNu6VOBHjgNwizBY8RwIT1EA+Z1RDE6LASR6TwCEg4wAfKlNUQ"
    "CmBJCM1RVwZPPwELUJGbClEdvQpSY2IFUzXOCVS8qxRTYNwG8/EZBVdLags+zTcZWituCzRTNhhdd2IM3oMVBgSkEAjj"
    "E84GZaamBMSI6Qyt78QJaOg2C2leHATqdTAF677cB7uYrQY3bSsMM53gC3BmCgVxvoYL8q76BHPMkwYU8GwL9qK4CPFD"
    "ggxsBhwKlNnzBVdQlwd9DOMKGzHwB/+oEAQ="
}


@pytest.mark.parametrize(("limit", "before"), [(100, EXACT_BEFORE), (64, HLL_BEFORE)])
def test_states_of_scalar_values_written_before_read_the_same_and_are_written_the_same(
    limit: int, before
):
    agg = window_aggs.make("count_distinct", exact_limit=limit)
    state = agg.new()
    for v in SCALARS:
        state = agg.add(state, v, None)
    assert state == before  # the same texts, the same image, byte for byte
    again = before
    for v in SCALARS:  # the values again into the stored state: nothing new (the sketch's
        again = agg.add(again, v, None)  # image may hold its hashes in another order)
    if limit == 100:
        assert again == before
    assert agg.result(before) == agg.result(state) == agg.result(again) == len(SCALARS)
    assert agg.result(agg.merge(before, agg.new())) == len(SCALARS)


def test_a_stored_list_with_an_object_in_the_old_key_order_meets_the_new_text():
    """An exact state written before holds an object's text in the event's key order (and may
    hold it in two): merged with the same object now, read, or grown into a sketch, it counts
    once."""
    agg = window_aggs.make("count_distinct", exact_limit=64)
    stored = ['\x1f{"b":2,"a":1}', '\x1f{"a":1,"b":2}', "u1", "\x1f7"]
    assert agg.result(stored) == 3
    delta = agg.add(agg.new(), {"b": 2, "a": 1}, None)
    assert agg.result(agg.merge(stored, delta)) == 3
    assert agg.merge(stored, delta) == sorted(['\x1f{"a":1,"b":2}', "u1", "\x1f7"])
    small = window_aggs.make("count_distinct", exact_limit=3)
    grown = small.add(stored, "u2", None)  # past 3 values: the sketch
    assert isinstance(grown, dict) and small.result(grown) == 4


class _CountingOrjson:
    """``orjson`` as a module sees it, its ``dumps`` calls counted."""

    def __init__(self, real):
        self._real, self.dumps_calls = real, 0

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def dumps(self, *args, **kwargs):
        self.dumps_calls += 1
        return self._real.dumps(*args, **kwargs)


def test_an_objects_text_is_serialized_once(monkeypatch):
    """An object's text was its JSON written twice: once by the exact-values check, then again
    with its keys sorted (~1.1 of the 9.6 µs of a 20-field object's event, measured). The
    sorted text is now written once and read back for the check; the same texts (and refusals)
    as before."""
    import orjson

    from squall import exact_json

    counting = _CountingOrjson(orjson)
    monkeypatch.setattr(window_aggs, "orjson", counting)
    monkeypatch.setattr(exact_json, "orjson", counting)
    value = {f"f{i:02d}": i if i % 2 else f"v{i}" for i in reversed(range(20))}
    text = window_aggs._distinct_text(value)
    assert counting.dumps_calls == 1
    assert text == "\x1f" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (
            {"b": [1, 2.5, None], "a": {"y": True, "x": "t"}},
            '{"a":{"x":"t","y":true},"b":[1,2.5,null]}',
        ),
        ([2**70, {"k": -(2**64)}], '[1180591620717411303424,{"k":-18446744073709551616}]'),
        ({"z": -0.0, "a": 1e308}, '{"a":1e+308,"z":-0.0}'),
        ([], "[]"),
        ({}, "{}"),
    ],
    ids=["nested", "wide-ints", "negative-zero", "empty-list", "empty-object"],
)
def test_an_objects_text_is_its_canonical_json(value, text):
    assert window_aggs._distinct_text(value) == "\x1f" + text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([float("nan")], "not a finite number"),
        ({"a": (1, 2)}, "tuple"),
        ({1: "a"}, "key is int"),
        ([b"x"], "without a JSON form"),
        ({"a": "\ud800"}, "UTF-8"),
    ],
    ids=["nan", "tuple", "int-key", "bytes", "surrogate"],
)
def test_an_object_without_an_exact_json_form_is_still_refused(value, reason):
    with pytest.raises(ValueError, match=reason):
        window_aggs._distinct_text(value)
