"""The warehouse's pure parts, without a database: COPY text lines, timestamps, partition keys,
and how database failures are classified (transient or permanent) by SQLSTATE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg2
import pytest
import sqlalchemy as sa

from squall.errors import RecordError, SinkError, TransientError
from squall.event import Event, RecordMeta
from squall.sinks.warehouse import pgschema
from squall.sinks.warehouse.columns import parse_columns
from squall.sinks.warehouse.copytext import (
    CopyRowBuilder,
    escape,
    partition_key_date,
    timestamp_text,
)
from squall.sinks.warehouse.writers import TableSpec, WriteOptions, writer_for
from squall.topology.sql import as_squall_error, is_disconnect


def ev(i: int, payload) -> Event:
    return Event(b"", RecordMeta("s", "shard-1", str(i)), f"id{i}", i, payload)


def build(columns: dict, payloads: list, **kwargs):
    rejected: list[tuple[int, str]] = []
    builder = CopyRowBuilder(parse_columns(columns), **kwargs)
    rows = builder.build(
        [ev(i, p) for i, p in enumerate(payloads)], lambda e, r: rejected.append((e.origin, r))
    )
    return rows, rejected


def test_lines_are_tab_separated_with_nulls_and_escapes_only_where_needed():
    rows, rejected = build(
        {"a": "a", "b": "x.y", "n": {"path": "n", "type": "integer"}},
        [
            {"a": "plain", "x": {"y": "z"}, "n": 1},
            {"a": "t\tn\nr\rb\\", "n": None},
            {"a": "\\N", "x": "not an object"},  # the text \N, not NULL
            {"a": "", "x": {"y": 5}},  # a number in a text column is its text
        ],
    )
    assert rejected == []
    assert rows.lines == [
        "id0\tplain\tz\t1",
        "id1\tt\\tn\\nr\\rb\\\\\t\\N\t\\N",
        "id2\t\\\\N\t\\N\t\\N",
        "id3\t\t5\t\\N",
    ]


def test_events_that_cannot_be_stored_are_rejected_with_the_first_failing_column():
    rows, rejected = build(
        {
            "a": {"path": "a", "nullable": False},
            "n": {"path": "n", "type": "integer"},
            "j": {"path": "j", "type": "json"},
        },
        [
            {"a": "ok", "n": 2**31 - 1, "j": {"k": "a\\b"}},
            {"n": "x"},  # both a and n fail: a is named
            {"a": "ok", "n": -(2**31) - 1},
            {"a": "nul\x00"},
            {"a": "ok", "j": ["\x00"]},
            {
                "a": "ok",
                "j": {"\\u0000": 1},
            },  # an escaped backslash before "u0000" is ordinary text
        ],
    )
    assert [i for i, _ in rejected] == [1, 2, 3, 4]
    assert rejected[0][1] == "column 'a': required value 'a' is missing"
    assert (
        rejected[1][1]
        == "column 'n': cannot store -2147483649 from 'n' as integer: out of range (32-bit)"
    )
    assert "PostgreSQL cannot store" in rejected[2][1] and "jsonb cannot store" in rejected[3][1]
    assert [e.origin for e in rows.events] == [0, 5]
    assert rows.lines[0] == 'id0\tok\t2147483647\t{"k":"a\\\\\\\\b"}'


def test_buffers_are_utf8_chunks_and_lone_surrogates_are_rejected():
    rows, _ = build({"a": "a"}, [{"a": "é"}, {"a": "\ud800"}, {"a": "ü"}])
    rejected = []
    chunks = rows.encode(1, lambda e, r: rejected.append((e.origin, r)))
    assert chunks == [("id0\té\n".encode(), 1), ("id2\tü\n".encode(), 1)]
    assert rejected == [
        (1, "a value is not valid Unicode (a lone surrogate), which PostgreSQL cannot store")
    ]


@pytest.mark.parametrize(
    "value, text",
    [
        ("2026-01-03T10:00:00Z", "2026-01-03T10:00:00Z"),  # already UTC: passed through
        ("2026-01-03 10:00:00.123456+00:00", "2026-01-03 10:00:00.123456+00:00"),
        ("2026-01-03T10:00:00+02:00", "2026-01-03T08:00:00+00"),
        ("2026-01-03T10:00:00", "2026-01-03T10:00:00+00"),  # no offset: UTC
        (1_767_434_400, "2026-01-03T10:00:00+00"),  # epoch seconds
        (1_767_434_400_500, "2026-01-03T10:00:00.500000+00"),  # epoch milliseconds
        (datetime(2026, 1, 3, 11, tzinfo=timezone(timedelta(hours=1))), "2026-01-03T10:00:00+00"),
    ],
)
def test_timestamps_become_utc_text(value, text):
    assert timestamp_text(value) == text


@pytest.mark.parametrize(
    "value", ["2026-02-30T00:00:00Z", "yesterday", True, "2026-13-01T00:00:00Z", 1e300]
)
def test_impossible_timestamps_are_refused(value):
    with pytest.raises((ValueError, OverflowError, TypeError)):
        timestamp_text(value)


def test_partition_keys_are_utc_days_or_months_of_the_written_rows():
    cols = {"at": {"path": "at", "type": "timestamp"}, "k": {"path": "k", "nullable": False}}
    payloads = [
        {"at": "2026-03-01T23:30:00-01:00", "k": "x"},
        {"at": 1_772_323_200_000, "k": "x"},
        {"at": "2026-04-09T00:00:00Z"},
    ]  # rejected: its day needs no partition
    rows, _ = build(cols, payloads, key_column="at", key_length=10)
    assert rows.keys == {"2026-03-02", "2026-03-01"}
    rows, _ = build(cols, payloads, key_column="at", key_length=7)
    assert rows.keys == {"2026-03"}
    assert partition_key_date("2026-03") == datetime(2026, 3, 1).date()


def test_escape_doubles_backslashes_and_refuses_nul():
    assert escape("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    with pytest.raises(ValueError):
        escape("a\x00")


def test_partition_ddl_bounds_and_names():
    spec = TableSpec(
        "Sales", "Events", parse_columns({"at": {"path": "at", "type": "timestamp"}}), "at", "month"
    )
    assert pgschema.partition_sql(spec, "2026-12") == (
        'CREATE TABLE IF NOT EXISTS "Sales"."Events_p202612" PARTITION OF "Sales"."Events" '
        "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    )
    assert pgschema.partition_keys(spec, ["Events_p202612", "Events_p2026", "other_p202601"]) == {
        "2026-12"
    }


# -- failures ----------------------------------------------------------------------------------------


class Orig(Exception):
    """Stands for a driver error carrying a SQLSTATE."""

    def __init__(self, pgcode: str | None):
        super().__init__(f"error {pgcode}")
        self.pgcode = pgcode


@pytest.mark.parametrize(
    "code, kind",
    [
        ("08006", TransientError),
        ("08001", TransientError),
        ("57P01", TransientError),
        ("57P03", TransientError),
        ("57014", TransientError),
        ("40001", TransientError),
        ("40P01", TransientError),
        ("55P03", TransientError),
        ("53300", TransientError),
        ("25P03", TransientError),
        # a row's data: the engine isolates the record and dead-letters it
        ("23505", RecordError),
        ("23514", RecordError),
        ("22P02", RecordError),
        ("22001", RecordError),
        ("54000", RecordError),
        # the table or the rights: the batch fails
        ("42P01", SinkError),
        ("42501", SinkError),
        ("XX000", SinkError),
    ],
)
def test_database_errors_are_classified_by_sqlstate(code, kind):
    err = as_squall_error(sa.exc.OperationalError("COPY …", None, Orig(code)), "rows (table t)")
    assert type(err) is kind
    assert str(err).endswith(f"(SQLSTATE {code})") and str(err).startswith("rows (table t): ")


def test_connection_level_driver_errors_without_sqlstate_are_transient_and_disconnects():
    lost = psycopg2.OperationalError("server closed the connection unexpectedly")
    assert isinstance(as_squall_error(lost, "w"), TransientError)
    assert is_disconnect(lost)
    assert is_disconnect(Orig("57P01")) and not is_disconnect(Orig("57014"))
    assert is_disconnect(ValueError(), SimpleNamespace(closed=2))
    other = ValueError("not a database error")
    assert as_squall_error(other, "w") is other


@pytest.mark.parametrize(
    "dialect, message", [("redshift", "docs/warehouse.md"), ("mysql", "not mysql")]
)
def test_unsupported_databases_are_refused_with_the_reason(dialect, message):
    with pytest.raises(SinkError, match=message):
        writer_for(dialect)


def test_the_postgres_writer_needs_psycopg2_and_refuses_redshift():
    engine = SimpleNamespace(dialect=SimpleNamespace(name="postgresql", driver="psycopg"))
    spec = TableSpec(None, "t", parse_columns({"a": "a"}))
    with pytest.raises(SinkError, match=r"postgresql\+psycopg2://"):
        writer_for("postgresql")(engine, spec, WriteOptions())
    assert pgschema.is_redshift(
        "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 "
        "20041017 (Red Hat 3.4.2-6.fc3), Redshift 1.0.77467"
    )
    assert not pgschema.is_redshift(
        "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu"
    )


def test_utc_is_utc():
    assert timestamp_text(datetime(2026, 1, 3, 10, tzinfo=UTC)) == "2026-01-03T10:00:00+00"
