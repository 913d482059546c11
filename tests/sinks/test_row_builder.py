"""The SQLite row builder walks payload paths inline: same values and same refusals as the
path getters and converters it replaces (the reference implementation below)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.event import Event, RecordMeta
from squall.paths import MISSING, getter
from squall.sinks.warehouse.columns import (
    CONVERTERS,
    ColumnSpec,
    ConversionError,
    RowBuilder,
    describe_value,
)

KEYS = st.sampled_from(["a", "b", "c"])
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=3),
    st.just("2024-05-01T10:00:00Z"),
)
VALUE = st.recursive(
    LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
PATH = st.one_of(
    st.lists(KEYS, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["meta.event_id", "meta.shard_id", "payload.a", "payload.a.b"]),
)
TYPE = st.sampled_from(["text", "integer", "float", "boolean", "timestamp", "json"])
COLUMN = st.builds(
    lambda p, t, n: ColumnSpec(path=p, type=t, nullable=n), PATH, TYPE, st.booleans()
)


def reference(columns: dict[str, ColumnSpec], ev: Event) -> tuple:
    out = []
    for name, spec in columns.items():
        v = getter(spec.path)(ev)
        if v is MISSING or v is None:
            if not spec.nullable:
                raise ConversionError(f"column '{name}': required value '{spec.path}' is missing")
            out.append(None)
            continue
        conv = CONVERTERS[spec.type]
        try:
            out.append(conv(v))
        except (ConversionError, ValueError, TypeError, OverflowError, OSError):
            raise ConversionError(
                f"column '{name}': cannot store {describe_value(v)} from '{spec.path}' "
                f"as {spec.type}"
            ) from None
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(st.dictionaries(KEYS, VALUE, max_size=3), VALUE),
    columns=st.lists(COLUMN, min_size=1, max_size=5),
)
def test_rows_equal_the_getter_and_converter_reference(payload, columns):
    """Both row functions: the generated straight-line one (``row``) and the loop (``row_checked``)."""
    cols = {f"c{i}": c for i, c in enumerate(columns) if c.type not in ("integer",)}
    if not cols:
        return
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1"), None, 0, payload)
    builder = RowBuilder(cols, json_as_text=False)
    for row in (builder.row, builder.row_checked):
        try:
            expected = reference(cols, ev)
        except ConversionError as exc:
            try:
                row(ev)
            except ConversionError as got:
                assert str(got) == str(exc)
                continue
            raise AssertionError("the builder stored what the reference refuses") from exc
        got = row(ev)
        assert got == expected
        assert [type(v) for v in got] == [type(v) for v in expected]


def test_the_generated_row_function_handles_one_column_and_meta_paths():
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, {"a": {"b": 3}})
    one = RowBuilder({"x": ColumnSpec(path="a.b", type="integer")}, json_as_text=True)
    assert one.row(ev) == (3,)
    meta = RowBuilder(
        {"e": ColumnSpec(path="meta.event_id"), "s": ColumnSpec(path="meta.shard_id")},
        json_as_text=True,
    )
    assert meta.row(ev) == ("id-1", "shard-0")
