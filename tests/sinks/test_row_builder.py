"""The SQLite row builder walks payload paths inline: same values and same refusals as the
path getters and converters it replaces (the reference implementation below)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.event import Event, RecordMeta
from squall.paths import META_FIELDS, MISSING, getter
from squall.sinks.warehouse.columns import (
    CONVERTERS,
    SQLITE_NULL,
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


def test_every_meta_field_is_read_as_its_getter_reads_it():
    """The generated function reads ``meta.<field>`` as an attribute (no getter call per row):
    every field, and an event id derived from the metadata, as ``getter`` gives them."""
    meta = RecordMeta(
        "s", "shard-0", "17", 2, "pk", datetime(2024, 5, 1, tzinfo=UTC), "123", "f" * 32
    )
    columns = {f"c{i}": ColumnSpec(path=f"meta.{name}") for i, name in enumerate(META_FIELDS)}
    builder = RowBuilder(columns, json_as_text=True, times_as_text=True)
    for eid in ("id-1", None):  # None: derived (``Event.event_id``), then kept
        ev = Event(b"{}", meta, eid, 0, {"a": 1})
        got = [getter(f"meta.{name}")(ev) for name in META_FIELDS]
        assert builder.row(ev) == builder.row_checked(ev)  # (the loop, through the getters)
        assert builder.row(ev)[:6] == (*got[:4], "2", "pk")


# -- the generated row function against the loop, on values a payload or a bolt can hold ----------


class Text(str):
    """A str subclass, as a user bolt may set."""


class Obj(dict):
    """A dict subclass, as a user bolt may set."""


ODD_KEYS = st.sampled_from(
    ["a", "b", "it's", 'q"uo', "back\\slash", "new\nline", "é", "class", "None", "{x}", "%s"]
)
ODD_LEAF = st.one_of(
    LEAF,
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(),
    st.sampled_from([" 12 ", "1e3", "nan", "inf", "YES", "2024-05-01", "9" * 5000]),
    st.sampled_from(["2024-05-01T10:00:00+05:00", "20240501T100000Z", "2024-05-01T10:00:00-00:00"]),
    st.builds(Text, st.sampled_from(["x", "1", "2024-05-01T10:00:00Z", "true"])),
    st.sampled_from(
        [
            datetime(2024, 5, 1, 10, tzinfo=ZoneInfo("UTC")),
            datetime(2024, 5, 1, 10, tzinfo=timezone(timedelta(0))),
            datetime(2024, 5, 1, 10),
            datetime(2024, 5, 1, 10, tzinfo=timezone(timedelta(hours=5))),
            date(2024, 5, 1),
            b"bytes",
            10**400,
            float("nan"),
            -0.0,
        ]
    ),
)
ODD_VALUE = st.recursive(
    ODD_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(ODD_KEYS, inner, max_size=3),
        st.dictionaries(ODD_KEYS, inner, max_size=2).map(Obj),
    ),
    max_leaves=8,
)
ODD_PATH = st.one_of(
    st.lists(ODD_KEYS, min_size=1, max_size=3).map(".".join),
    st.sampled_from(
        ["meta.event_id", "meta.arrival_time", "meta.sub_sequence_number", "payload.a"]
    ),
)
ANY_COLUMN = st.builds(
    lambda p, t, n: ColumnSpec(path=p, type=t, nullable=n),
    ODD_PATH,
    st.sampled_from(["text", "integer", "bigint", "float", "boolean", "timestamp", "date", "json"]),
    st.booleans(),
)


def outcome(row, ev: Event):
    """A row as text and types (NaN compares unequal to itself), or the exception it raised."""
    try:
        got = row(ev)
    except Exception as exc:
        return "raised", type(exc).__name__, str(exc)
    return "ok", repr(got), [type(v) for v in got]


@settings(max_examples=500, deadline=None)
@given(
    payload=st.one_of(st.dictionaries(ODD_KEYS, ODD_VALUE, max_size=4), ODD_VALUE),
    columns=st.lists(ANY_COLUMN, min_size=0, max_size=6),
    json_as_text=st.booleans(),
    arrival=st.sampled_from([None, datetime(2024, 1, 1, tzinfo=UTC)]),
    bools_as_int=st.booleans(),
    null=st.sampled_from([None, SQLITE_NULL]),
)
def test_the_generated_row_function_equals_the_loop(
    payload, columns, json_as_text, arrival, bools_as_int, null
):
    """Same row (values and types) or same error, whatever the values, path keys (quotes,
    backslashes, newlines) and column names (Python keywords), also with no column at all;
    booleans as they are or as SQLite's 1 and 0, NULL as None or a NaN."""
    names = ["event_id", "class", "None", "x", "def", "lambda"]
    builder = RowBuilder(
        dict(zip(names, columns, strict=False)),
        json_as_text=json_as_text,
        bools_as_int=bools_as_int,
        null=null,
    )
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1", 0, "pk", arrival), "id-1", 0, payload)
    assert outcome(builder.row, ev) == outcome(builder.row_checked, ev)


def test_no_columns_give_the_empty_row():
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, {"a": 1})
    assert RowBuilder({}, json_as_text=True).row(ev) == ()


def test_a_missing_required_value_runs_the_loop_once():
    calls = []

    class Counting(RowBuilder):
        def row_checked(self, ev):
            calls.append(ev)
            return super().row_checked(ev)

    builder = Counting({"x": ColumnSpec(path="a", nullable=False)}, json_as_text=True)
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, {"b": 1})
    try:
        builder.row(ev)
    except ConversionError as exc:
        assert str(exc) == "column 'x': required value 'a' is missing"
        assert exc.__context__ is None  # no earlier attempt chained to the reason's traceback
    else:
        raise AssertionError("a missing required value was stored")
    assert len(calls) == 1


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.sampled_from(["t", "d"]), ODD_LEAF, max_size=2),
    arrival=st.sampled_from([None, datetime(2024, 1, 1, tzinfo=UTC)]),
)
def test_times_as_text_store_what_sqlite3s_adapters_stored(payload, arrival):
    """The SQLite writer's rows carry timestamps and dates as text: a table gets exactly the
    text it got when ``sqlite3``'s default adapters turned the datetime and date values into
    text (the same refusals too), and the generated function equals the loop."""
    import sqlite3
    import warnings

    columns = {
        "t": ColumnSpec(path="t", type="timestamp"),
        "d": ColumnSpec(path="d", type="date"),
        "a": ColumnSpec(path="meta.arrival_time", type="timestamp"),
    }
    as_text = RowBuilder(columns, json_as_text=True, times_as_text=True)
    as_objects = RowBuilder(columns, json_as_text=True)
    ev = Event(b"{}", RecordMeta("s", "shard-0", "1", 0, "pk", arrival), "id-1", 0, payload)
    assert outcome(as_text.row, ev) == outcome(as_text.row_checked, ev)
    try:
        text_row = as_text.row(ev)
    except ConversionError as exc:
        try:
            as_objects.row(ev)
        except ConversionError as same:
            assert str(same) == str(exc)
            return
        raise AssertionError("refused as text only") from exc
    object_row = as_objects.row(ev)
    db = sqlite3.connect(":memory:")
    db.execute("create table x (t DATETIME, d DATE, a DATETIME)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the default adapters, Python 3.12+
        db.execute("insert into x values (?, ?, ?)", object_row)
    db.execute("insert into x values (?, ?, ?)", text_row)
    stored = db.execute("select t, d, a, typeof(t), typeof(d), typeof(a) from x").fetchall()
    assert stored[0] == stored[1]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-03T18:00:00.329Z",  # JavaScript's toISOString: cut from the text
        "2026-11-03T18:00:00.029001Z",
        "2026-11-03T18:00:00.000Z",  # a fraction of zeros: none, as isoformat writes it
        "2026-11-03T18:00:00.000000Z",
        "2026-11-03T18:00:00Z",
        "0999-01-01T00:00:00.100Z",
        # texts of the same lengths that are other readings: the general path
        "2026-11-03 18:00:00.329Z",
        "2026-11-03T18:00:00,329Z",
        "2026-W45-2T18:00:00.329Z",
        "20261103T180000.329000000Z",
        "2026-11-03T18:00:00.329z",
        "2026-11-03T18:00:00.3290Z",
    ],
)
def test_timestamp_text_of_the_usual_sdk_times(text):
    """The usual SDK time is cut from its text (no datetime fields formatted): the same text as
    ``isoformat(" ")`` of the time it reads as, and any other reading of a text of that length
    still takes the general path."""
    from squall.sinks.warehouse.columns import _timestamp_text, to_datetime

    assert _timestamp_text(text) == to_datetime(text).isoformat(" ")


@pytest.mark.parametrize("text", ["2026-02-30T18:00:00.329Z", "2026-11-03T24:00:00.000Z"])
def test_timestamp_text_refuses_an_impossible_usual_time(text):
    from squall.sinks.warehouse.columns import _timestamp_text

    with pytest.raises(ValueError):
        _timestamp_text(text)


class _Stamp(datetime):
    """A datetime subclass (as a Python bolt may put in a payload) with its own isoformat."""

    def isoformat(self, sep="T", timespec="auto"):
        return "stamp:" + super().isoformat(sep, timespec)


@settings(max_examples=500, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30)), None]),
    ),
    whole=st.booleans(),
    form=st.sampled_from(["iso", "z", "js", "object", "ms", "subclass"]),
)
def test_timestamp_text_is_isoformat_with_a_space(when, whole, form):
    """``_timestamp_text`` writes a plain UTC datetime from its fields and tables, not by
    ``isoformat``: the same text for every time (years below 1000, no microseconds, other
    offsets, naive values), and a datetime subclass still by its own ``isoformat``."""
    from squall.sinks.warehouse.columns import _timestamp_text, to_datetime

    if whole:
        when = when.replace(microsecond=0)
    value: object = {
        "iso": when.isoformat(),
        "z": when.replace(tzinfo=None).isoformat() + "Z",
        "js": when.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z",
        "object": when,
        "ms": int(when.replace(tzinfo=when.tzinfo or UTC).timestamp() * 1000),
        "subclass": _Stamp.fromisoformat(when.isoformat()),
    }[form]
    try:
        expected = to_datetime(value).isoformat(" ")
    except (ValueError, OverflowError, OSError) as exc:
        try:
            _timestamp_text(value)
        except type(exc):
            return
        raise AssertionError("accepted what isoformat refused") from exc
    assert _timestamp_text(value) == expected
    if form == "subclass":
        assert expected.startswith("stamp:")


def _general_path(text: str) -> tuple[str, str]:
    """``_timestamp_text``'s answer without its usual-text cut: ``isoformat(" ")`` of the time
    ``to_datetime`` reads, or the class of its error."""
    from squall.sinks.warehouse.columns import to_datetime

    try:
        return ("text", to_datetime(text).isoformat(" "))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc).__name__)


def _outcome(text: str) -> tuple[str, str]:
    from squall.sinks.warehouse.columns import _timestamp_text

    try:
        return ("text", _timestamp_text(text))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc).__name__)


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:Z\x00:00Z",  # Python 3.11 reads "12:" then a "Z" and a NUL as the end
        "2024-05-01T12:00:Z\x00Z",
        "2024-05-01T12:00:00.1Z\x00Z",
        "2024-05-01T12:00:00.1Z\x00T11Z",
    ],
)
def test_timestamp_text_of_a_usual_length_with_a_nul_is_the_general_paths(text):
    """A text of the usual shape that fromisoformat reads only up to a NUL (CPython 3.11) is
    not cut from its text (which is no time): the general path's time, or its error."""
    assert _outcome(text) == _general_path(text)


_USUAL = st.sampled_from(
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123Z", "0999-12-31T23:59:59.123456Z"]
)


@settings(max_examples=400, deadline=None)
@given(
    usual=_USUAL,
    changes=st.lists(
        st.tuples(st.integers(0, 26), st.sampled_from("0123456789+-:.,Z zTW\x00\u0663\u00e9")),
        max_size=5,
    ),
)
def test_timestamp_text_cut_is_the_general_paths_for_any_text_of_its_shape(usual, changes):
    """Texts of the usual lengths, a few characters changed (other separators, marks, digits,
    NULs, non-ASCII): the usual-text cut gives what the general path gives."""
    chars = list(usual)
    for at, c in changes:
        chars[at % len(chars)] = c
    text = "".join(chars)
    assert _outcome(text) == _general_path(text)
