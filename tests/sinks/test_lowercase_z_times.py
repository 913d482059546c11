"""A time in RFC 3339 with a lower-case "z" (UTC), which the window and subscription bolts read
since 6 December (a9353af), is a time for the sinks' timestamp columns too: the warehouse's
(SQLite/PostgreSQL rows and PostgreSQL COPY text) and the S3 sink's Parquet columns."""

from __future__ import annotations

from datetime import UTC, datetime

from squall.sinks.s3 import _timestamp
from squall.sinks.warehouse.columns import to_datetime
from squall.sinks.warehouse.copytext import timestamp_text
from squall.times import parse_time

TEXT = "2024-05-01T10:00:00.250z"
WHEN = datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)


def test_the_bolts_read_it() -> None:
    assert parse_time(TEXT) == int(WHEN.timestamp() * 1000)


def test_warehouse_timestamp_column() -> None:
    assert to_datetime(TEXT) == WHEN
    assert to_datetime(" 2024-05-01 10:00z ") == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_warehouse_copy_text() -> None:
    assert datetime.fromisoformat(timestamp_text(TEXT)).replace(tzinfo=UTC) == WHEN


def test_s3_parquet_timestamp() -> None:
    assert _timestamp(TEXT, "ms") == WHEN
