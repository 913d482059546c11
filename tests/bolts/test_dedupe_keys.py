"""The dedupe bolt compares keys as JSON values, numbers by value, at every depth: a NumPy scalar
is its Python number (its ``bool_`` was the key ``1``: Python's ``True == 1``), and ``0.0`` and
``-0.0`` (``1`` and ``1.0``) are one key inside an object or a list as they are alone (they were
two keys there: the object's JSON text told them apart)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.bolts.dedupe import DedupeBolt, compared
from squall.component import ComponentContext
from squall.event import Event, RecordMeta


def passed(keys: list[object]) -> list[int]:
    """The positions of the events the bolt lets through, one event per key."""
    bolt = DedupeBolt(DedupeBolt.Config(id="d", type="dedupe", key="k"), ComponentContext("t"))
    meta = RecordMeta("s", "shardId-000000000000", "1", 0, "pk")
    out = bolt.process([Event(b"", meta, None, i, {"k": k}) for i, k in enumerate(keys)])
    return [e.origin for e in out.streams["default"]]


def test_numbers_are_one_key_by_value_alone_and_inside_an_object():
    keys = [0.0, -0.0, {"a": 0.0}, {"a": -0.0}, [1], [1.0], {"b": [2.0, {"c": -0.0}]}]
    keys += [{"b": [2, {"c": 0}]}, 1e20, {"x": 1e20}, {"x": 10**20}, (3.0,), [3]]
    assert passed(keys) == [0, 2, 4, 6, 8, 9, 11]


def test_true_is_not_1_alone_inside_an_object_or_a_tuple():
    assert passed([1, True, [1], [True], (1,), (True,), {"a": 1.0}, {"a": True}]) == [
        0,
        1,
        2,
        3,
        6,
        7,
    ]


def test_a_numpy_scalar_key_is_its_python_number():
    np = pytest.importorskip("numpy")
    keys = [np.bool_(True), 1, True, np.int64(1), np.float32(0.5), 0.5, np.uint8(7), 7.0]
    keys += [{"a": np.float32(-0.0)}, {"a": 0}, [np.bool_(False)], [False], [np.int64(0)]]
    # bool_ was 1 (and 1 then a duplicate of it), the object with -0.0 was not {"a": 0}
    assert passed(keys) == [0, 1, 4, 6, 8, 10, 12]


def test_floats_that_are_no_integer_and_keys_without_a_json_form():
    assert passed([{"a": 0.5}, {"a": 0.05}, {"a": 1e-7}, {"a": 0.5}, {"n": "1.0"}, {"n": 1}]) == [
        0,
        1,
        2,
        4,
        5,
    ]
    with pytest.raises(TypeError, match="not JSON serializable: set"):
        compared({1, 2})  # (that event's failure, as before)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_whole_float_in_an_object_is_its_integer(value):
    """The bolt writes an object's JSON again only when orjson's text may hold a whole float
    (``.0`` or ``e+``): every whole float's text does, so none is missed."""
    if value.is_integer():
        assert b".0" in orjson.dumps(value) or b"e+" in orjson.dumps(value)
        assert compared({"v": [value]}) == compared({"v": [int(value)]})
    else:
        assert compared({"v": [value]}) != compared({"v": [round(value)]})


def test_an_infinity_or_nan_inside_an_object_is_no_null_and_no_other_infinity():
    """orjson writes NaN and both infinities as ``null``: inside an object or a list they were
    one key with each other and with ``None`` — the bolt dropped ``{"a": -inf}`` as a duplicate
    of ``{"a": inf}``, and ``{"a": None}`` of both. They compare as Python compares them, as
    they do alone: an infinity is equal to itself only, a NaN to nothing (its event passes)."""
    inf, nan = float("inf"), float("nan")
    keys = [{"a": inf}, {"a": -inf}, {"a": None}, [inf], [None], {"a": nan}, {"a": nan}]
    keys += [{"a": inf}, [-inf], [-inf], {"a": None}]
    assert passed(keys) == [0, 1, 2, 3, 4, 5, 6, 8]
    assert passed([inf, -inf, inf, nan, float("nan")]) == [0, 1, 3, 4]  # (alone: as before)
    # one NaN object (a bolt's math.nan for each event): Python's ``in`` found it by identity
    assert passed([nan, nan, [nan], [nan]]) == [0, 1, 2, 3]


def test_a_numpy_infinity_inside_an_object_is_the_python_infinity():
    np = pytest.importorskip("numpy")
    keys = [{"a": np.float32("inf")}, {"a": float("inf")}, {"a": np.float64("-inf")}, {"a": 0}]
    assert passed(keys) == [0, 2, 3]
