"""One reading of a time everywhere (hA): the same value means the same instant, or is refused,
in every component that reads a time — ``squall.times.parse_time`` (the window and subscription
bolts' event times), the warehouse's ``timestamp`` and ``date`` columns (the row converter, the
SQLite text and PostgreSQL's COPY text), the s3 sink's Parquet/partition times, and ``squall
replay --since/--until``.

Before, for the same value: ``100000000000`` (10^11) was 1973 for the bolts and 5138 in the
warehouse (``>= 10^11`` against ``> 10^11``); a text of digits (``"1714557600"``, protobuf's JSON
int64) was an event time for the bolts and refused by every sink (in a ``date`` column with
``month must be in 1..12``); a negative number was refused by the bolts and stored as 1969 by the
sinks; a NumPy integer time was refused by the s3 sink's ``time_field``; a text with spaces
around was refused by the s3 sink only; ``9999-12-31T23:59:59-01:00`` raised ``OverflowError`` in
``squall replay`` (a traceback) and in a dead letter's ``failed_at`` read back.

The rule (docs/warehouse.md, "How a time is read"): ``squall.times.read_time``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.deploy.dead_letters import parse_time as replay_time
from squall.sinks.s3 import _timestamp as s3_time
from squall.sinks.warehouse.columns import CONVERTERS, _date_text, _timestamp_text
from squall.sinks.warehouse.copytext import FORMATTERS
from squall.times import parse_time

np = pytest.importorskip("numpy")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


MAY = _utc("2024-05-01T10:00:00+00:00")
HALF = _utc("2024-05-01T10:00:00.500000+00:00")
E11 = _utc("1973-03-03T09:46:40+00:00")  # 10^11 milliseconds

#: value → the instant every reader means by it (None: every reader refuses it).
CASES: list[tuple[Any, datetime | None]] = [
    (0, _utc("1970-01-01T00:00:00+00:00")),
    (1714557600, MAY),
    (1714557600000, MAY),
    (1714557600.5, HALF),
    (1714557600500.0, HALF),
    ("1714557600", MAY),
    ("1714557600000", MAY),
    ("1714557600.5", HALF),
    # a float is its shortest decimal text, floored as that text is (timedelta rounded its
    # binary value to the microsecond: the next day in a date column, the bolts' day before)
    (1714607999.9999995, _utc("2024-05-01T23:59:59.999999+00:00")),
    ("1714607999.9999995", _utc("2024-05-01T23:59:59.999999+00:00")),
    (np.float64(1714607999.9999995), _utc("2024-05-01T23:59:59.999999+00:00")),
    (1714557600123.9996, _utc("2024-05-01T10:00:00.123999+00:00")),
    (99_999_999_999.9, _utc("5138-11-16T09:46:39.900000+00:00")),  # (timedelta: .899994)
    (" 1714557600 ", MAY),
    # eight digits alone: ISO 8601's basic date (as an epoch, 1970-08-23: no event's time);
    # any other count of digits is an epoch number, and so is the JSON number
    ("20240501", _utc("2024-05-01T00:00:00+00:00")),
    (" 20240501 ", _utc("2024-05-01T00:00:00+00:00")),
    (20240501, _utc("1970-08-23T06:21:41+00:00")),
    ("202405011", _utc("1976-05-31T15:36:51+00:00")),
    (99_999_999_999, _utc("5138-11-16T09:46:39+00:00")),
    (100_000_000_000, E11),
    (100_000_000_000.0, E11),
    ("100000000000", E11),
    (np.int64(1714557600000), MAY),
    (np.int32(1714557600), MAY),
    (np.float64(1714557600.5), HALF),
    ("2024-05-01", _utc("2024-05-01T00:00:00+00:00")),
    # a Python bolt's datetime (naive: UTC) and date, read as their texts are — by the bolts too
    # (parse_time refused them: "not a time: datetime"), and a date in a date column (refused)
    (datetime(2024, 5, 1, 10), MAY),
    (_utc("2024-05-01T10:00:00+00:00").astimezone(timezone(timedelta(hours=5, minutes=30))), MAY),
    (date(2024, 5, 1), _utc("2024-05-01T00:00:00+00:00")),
    ("2024-05-01T10:00:00", MAY),  # no offset: UTC
    ("2024-05-01T10:00:00Z", MAY),
    ("2024-05-01t10:00:00z", MAY),
    (" 2024-05-01T10:00:00Z ", MAY),
    ("2024-05-01 10:00:00+00", MAY),
    ("20240501T100000Z", MAY),
    ("2024-05-01T15:30:00+05:30", MAY),
    ("2024-05-01T10:00:00.5000009Z", HALF),  # beyond microseconds: dropped
    ("9999-12-31T23:59:59Z", _utc("9999-12-31T23:59:59+00:00")),
    (253_402_300_799_999, _utc("9999-12-31T23:59:59.999000+00:00")),
    (-1, None),
    (-1000.5, None),
    ("-1", None),
    (253_402_300_800_000, None),
    ("253402300800000", None),
    ("9999-12-31T23:59:59-01:00", None),  # 10000-01-01 in UTC
    (float("nan"), None),
    (float("inf"), None),
    ("NaN", None),
    ("", None),
    ("yesterday", None),
    (True, None),
    (False, None),
    (np.bool_(True), None),
]
#: Times the sinks store and the event-time bolts refuse (their times are epoch ms from 1970).
BEFORE_1970 = [
    ("1969-12-31T23:59:59Z", _utc("1969-12-31T23:59:59+00:00")),
    ("0001-01-01T00:00:00+00:00", _utc("0001-01-01T00:00:00+00:00")),
]


def _sqlite(value: Any) -> datetime:
    return _utc(_timestamp_text(value))


def _copy(value: Any) -> datetime:
    text = FORMATTERS["timestamp"](value)
    return _utc(text + ":00" if text.endswith("+00") else text)


#: reader → value → the UTC instant it stores or orders by.
SINK_READERS = {
    "warehouse row": CONVERTERS["timestamp"],
    "warehouse sqlite text": _sqlite,
    "warehouse copy text": _copy,
    "s3": lambda v: s3_time(v, None),
}


def _ids(cases: list) -> list[str]:
    return [repr(value) for value, _ in cases]


@pytest.mark.parametrize("reader", list(SINK_READERS))
@pytest.mark.parametrize(("value", "meant"), CASES + BEFORE_1970, ids=_ids(CASES + BEFORE_1970))
def test_every_sink_reads_a_value_as_the_same_instant(reader, value, meant) -> None:
    read = SINK_READERS[reader]
    if meant is None:
        with pytest.raises(ValueError):
            read(value)
    else:
        assert read(value) == meant


@pytest.mark.parametrize(("value", "meant"), CASES + BEFORE_1970, ids=_ids(CASES + BEFORE_1970))
def test_the_event_time_bolts_agree_to_the_millisecond(value, meant) -> None:
    if meant is None or meant.year < 1970:
        with pytest.raises(ValueError):
            parse_time(value)
    else:
        assert parse_time(value) == (meant - datetime(1970, 1, 1, tzinfo=UTC)) // _MS


_MS = datetime.fromtimestamp(0.001, UTC) - datetime.fromtimestamp(0, UTC)


@pytest.mark.parametrize(("value", "meant"), CASES + BEFORE_1970, ids=_ids(CASES + BEFORE_1970))
def test_a_date_column_takes_the_same_time(value, meant) -> None:
    if meant is None:
        with pytest.raises(ValueError):
            CONVERTERS["date"](value)
        with pytest.raises(ValueError):
            FORMATTERS["date"](value)
        return
    written = meant.date()
    if isinstance(value, str) and value.endswith("+05:30"):
        written = date(2024, 5, 1)  # the calendar date as written (here the same)
    assert CONVERTERS["date"](value) == written
    assert _date_text(value) == FORMATTERS["date"](value) == written.isoformat()


def test_a_date_column_takes_a_times_date_as_written() -> None:
    # 23:30 at -05:00 is the next day in UTC: a date column keeps the day the sender wrote
    value = "2024-05-01T23:30:00-05:00"
    assert CONVERTERS["timestamp"](value) == _utc("2024-05-02T04:30:00+00:00")
    assert (
        CONVERTERS["date"](value)
        == date(2024, 5, 1)
        == date.fromisoformat(FORMATTERS["date"](value))
    )


@pytest.mark.parametrize(
    ("value", "meant"),
    [(v, m) for v, m in CASES + BEFORE_1970 if isinstance(v, str)],
    ids=_ids([(v, m) for v, m in CASES + BEFORE_1970 if isinstance(v, str)]),
)
def test_replay_since_and_until_read_text_as_the_sinks_do(value, meant) -> None:
    if meant is None:
        with pytest.raises(ValueError):
            replay_time(value)
    else:
        assert replay_time(value) == meant


def test_the_s3_sinks_unit_names_what_a_number_is() -> None:
    # (its documented time_unit: a number is in that unit, whatever its size; text as above)
    assert s3_time(1714557600, "s") == MAY
    assert s3_time(1714557600000, "ms") == MAY
    assert s3_time("1714557600000", "ms") == MAY
    assert s3_time(np.int64(1714557600000), "ms") == MAY
    assert s3_time("2024-05-01T10:00:00Z", "ms") == MAY
    with pytest.raises(ValueError, match="after the year 9999"):
        s3_time(1714557600000, "s")
    with pytest.raises(ValueError, match="not a time: -1"):
        s3_time(-1, "ms")


def test_a_refused_value_is_named_in_the_reason() -> None:
    with pytest.raises(ValueError, match=r"not a time: -1\b"):
        s3_time(-1, None)
    with pytest.raises(ValueError, match="time after the year 9999: '9999-12-31T23:59:59-01:00'"):
        replay_time("9999-12-31T23:59:59-01:00")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=0, max_value=253_402_300_799_999),
        st.floats(min_value=0, max_value=253_402_300_799_999.0),
    )
)
def test_sqlite_and_postgresql_store_a_number_as_the_same_instant(value) -> None:
    # (the COPY text's own fast path for plain numbers, and the row converter SQLite's text and
    # the PostgreSQL rows of other drivers come from)
    assert _copy(value) == _sqlite(value) == CONVERTERS["timestamp"](value)
    assert CONVERTERS["date"](value) == CONVERTERS["timestamp"](value).date()


def test_the_event_time_bolts_refuse_a_datetime_before_1970_naming_it() -> None:
    with pytest.raises(ValueError, match=r"time before 1970: datetime\.date\(1969, 7, 20\)"):
        parse_time(date(1969, 7, 20))
