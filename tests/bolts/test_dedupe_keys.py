"""The dedupe bolt compares keys as JSON values, numbers by value, at every depth: a NumPy scalar
is its Python number (its ``bool_`` was the key ``1``: Python's ``True == 1``), and ``0.0`` and
``-0.0`` (``1`` and ``1.0``) are one key inside an object or a list as they are alone (they were
two keys there: the object's JSON text told them apart)."""

from __future__ import annotations

from enum import StrEnum

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


def _traced_peak(make) -> int:
    """The peak bytes tracemalloc saw while ``make()`` ran, above what was held before."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    del kept
    return peak


def test_a_batch_keyed_by_objects_holds_no_orjson_buffer_per_key():
    """An object key is kept as its JSON text, not as the bytes orjson returned: each of those
    held orjson's ~4 KB output buffer however short the JSON (a batch of 3,000 events keyed by
    a small object peaked at ~12 MB more, where the keys' text is ~0.5 MB). The bound, 1 KB a
    key, is far from both."""
    n = 3000
    bolt = DedupeBolt(DedupeBolt.Config(id="d", type="dedupe", key="k"), ComponentContext("t"))
    meta = RecordMeta("s", "shardId-000000000000", "1", 0, "pk")
    batch = [
        Event(b"", meta, None, i, {"k": {"device": i % (n - 10), "os": "ios"}}) for i in range(n)
    ]
    out = bolt.process(batch)
    assert len(out.streams["default"]) == n - 10  # (the last ten repeat the first ten's keys)
    assert _traced_peak(lambda: bolt.process(batch)) < n * 1024


@pytest.mark.parametrize(
    "make",
    [
        lambda i: {"device": i},  # written once
        lambda i: {"device": float(i)},  # written twice (a whole float: its integer)
        lambda i: [i, "ios"],
    ],
)
def test_each_kind_of_object_key_is_kept_in_its_own_size(make):
    n = 2000
    assert _traced_peak(lambda: [compared(make(i)) for i in range(n)]) < n * 1024


def test_a_key_without_hash_is_kept_in_its_own_size():
    """A dataclass (no hash) is compared by its JSON, kept as text too."""
    import dataclasses

    @dataclasses.dataclass
    class Device:
        id: int

    n = 2000
    keys = [Device(i) for i in range(n)]
    assert compared(Device(1)) == compared(Device(1)) != compared(Device(2))
    assert _traced_peak(lambda: [compared(k) for k in keys]) < n * 1024


class _Kind(StrEnum):
    A = "a"
    B = "b"


class _Text(str):
    """A text subclass (as a Python bolt may set): equal to its text, not of the usual class."""


IDS = st.one_of(
    st.none(),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 2),
    # ids of other classes a bolt may set: one key with the text or the number they equal
    st.sampled_from([_Kind.A, _Kind.B, _Text("a"), _Text("c"), 0.0, 1.0]),
)


@given(st.lists(IDS, max_size=12))
def test_by_event_id_the_first_of_each_id_passes_whatever_the_ids(ids):
    """By event id (the default key) a batch whose ids are all text and all different passes
    whole at C speed; any other batch (a duplicate, an id to derive, an id of another class)
    takes the event-by-event rule: the first of each id passes, the others are dropped."""
    bolt = DedupeBolt(DedupeBolt.Config(id="d", type="dedupe"), ComponentContext("t"))
    events = [
        Event(b"", RecordMeta("s", "shardId-000000000000", str(i), 0, "pk"), None, i)
        for i in range(len(ids))
    ]
    for ev, eid in zip(events, ids, strict=True):
        ev._event_id = eid
    expected, seen = [], set()
    for ev in events:
        key = ev.event_id
        if key not in seen:
            seen.add(key)
            expected.append(ev.origin)
    out = bolt.process(events)
    assert [e.origin for e in out.streams.get("default", [])] == expected
    assert [e.origin for e in out.dropped] == [i for i in range(len(ids)) if i not in expected]
    assert out.streams.get("default") is not events  # a list of its own
