"""The same time values through the warehouse sink on SQLite (its text fast path) and on the real
PostgreSQL (COPY): both store the same instant and date, or both dead-letter the event, naming
the column and the value (hA: one reading of a time, ``squall.times.read_time``).

Before: ``100000000000`` was stored in the year 5138 (the bolts read 1973), ``"1714557600"``
(protobuf's JSON int64) was refused, ``-1`` stored as 1969: see tests/test_times_readers.py."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg2
import pytest

from squall.testing import MemorySink, records_from, run_topology

#: payload "at" value → the instant stored (None: the event is dead-lettered)
VALUES = [
    ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00"),
    ("2024-05-01t15:30:00+05:30", "2024-05-01T10:00:00+00:00"),
    (1714557600, "2024-05-01T10:00:00+00:00"),
    (1714557600123, "2024-05-01T10:00:00.123000+00:00"),
    ("1714557600", "2024-05-01T10:00:00+00:00"),
    ("1714557600.25", "2024-05-01T10:00:00.250000+00:00"),
    (1714607999.9999995, "2024-05-01T23:59:59.999999+00:00"),  # (was the next day, rounded)
    (99_999_999_999.9, "5138-11-16T09:46:39.900000+00:00"),
    (100_000_000_000, "1973-03-03T09:46:40+00:00"),
    ("1969-07-20T20:17:40Z", "1969-07-20T20:17:40+00:00"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999000+00:00"),
    (-1, None),
    ("9999-12-31T23:59:59-01:00", None),
    (True, None),
    ("yesterday", None),
]


@pytest.fixture
def pg_table(pg_url: str, unique_name: str):
    """The real PostgreSQL (an autocommit connection) and a table name, dropped afterwards."""
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    yield conn, unique_name
    with conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{unique_name}"')
    conn.close()


def _topology(url: str, table: str) -> str:
    return json.dumps(
        {
            "name": "times",
            "resources": {"db": {"url": url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": [
                {
                    "id": "rows",
                    "type": "warehouse",
                    "resource": "db",
                    "table": table,
                    "columns": {
                        "n": {"path": "n", "type": "integer"},
                        "at": {"path": "at", "type": "timestamp"},
                        "day": {"path": "at", "type": "date"},
                    },
                },
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": table},
            ],
        }
    )


def _run(url: str, table: str) -> list[str]:
    payloads = [{"n": n, "at": value} for n, (value, _) in enumerate(VALUES)]
    run_topology(_topology(url, table), records_from(payloads))
    return [ev.failure.reason for ev in MemorySink.stores[table]]


def _expected() -> tuple[list[tuple[int, datetime, date]], list[str]]:
    rows, reasons = [], []
    for n, (value, stored) in enumerate(VALUES):
        if stored is None:
            shown = repr(value)
            reasons.append(f"column 'at': cannot store {shown} from 'at' as timestamp")
        else:
            when = datetime.fromisoformat(stored)
            day = date(2024, 5, 1) if isinstance(value, str) and "+05:30" in value else when.date()
            rows.append((n, when, day))
    return rows, reasons


def test_sqlite_stores_the_instants_the_rule_gives(tmp_path: Path, unique_name: str) -> None:
    db = tmp_path / "w.db"
    reasons = _run(f"sqlite:///{db}", unique_name)
    rows, expected_reasons = _expected()
    assert reasons == expected_reasons
    with closing(sqlite3.connect(db)) as conn:
        stored = conn.execute(f'SELECT n, at, day FROM "{unique_name}" ORDER BY n').fetchall()
    assert [(n, datetime.fromisoformat(at), date.fromisoformat(day)) for n, at, day in stored] == (
        rows
    )


def test_postgresql_stores_the_same(pg_url: str, pg_table) -> None:
    conn, table = pg_table
    reasons = _run(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1), table)
    rows, expected_reasons = _expected()
    assert reasons == expected_reasons
    with conn.cursor() as cur:
        cur.execute(f'SELECT n, at, day FROM "{table}" ORDER BY n')
        stored = cur.fetchall()
    assert [(n, at.astimezone(UTC), day) for n, at, day in stored] == rows
