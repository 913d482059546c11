"""examples/etl's ingest schema against what its transform can store: an order's time `ts`.

The ingest schema checked `ts` with a pattern anchored at its start only
(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}`): `2026-13-45T99:99:99Z` and
`2026-11-03T09:12:00 junk` were valid orders, put into orders-raw, and the transform then sent
them to the curated stream while its lake and warehouse dead-lettered them (`is not a time`) —
one order in one of its three destinations, against the README's "a line that is not a valid
order is dead-lettered" at ingest. The schema now takes an RFC 3339 time with its offset, whose
date exists; every time it takes, the lake's and the warehouse's converters store.
"""

from __future__ import annotations

import calendar
import json

import pytest

from squall.sinks.s3 import _timestamp
from squall.sinks.warehouse.columns import to_datetime
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.conftest import EXAMPLES

SCHEMA = EXAMPLES / "etl" / "schemas" / "order.json"
TOPOLOGY = f"""
name: etl-schema
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: "{SCHEMA}"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
streams:
  - {{from: validate, stream: invalid, to: dlq}}
"""
ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "kind": "order",
    "amount": 1.5,
    "updated_at": "2026-11-03T09:12:00Z",
}


def valid(times: list[str]) -> list[bool]:
    """Whether the ingest schema takes an order with each time."""
    run = run_topology(TOPOLOGY, records_from([dict(ORDER, ts=t) for t in times]))
    return [o.outcome is Outcome.COMMITTED for o in run.outcomes]


def storable(ts: str) -> bool:
    """Whether transform.yaml's lake (time_field, timestamp column) and warehouse store it."""
    try:
        _timestamp(ts, "ms")
        to_datetime(ts)
    except (ValueError, OverflowError):  # (as the sinks catch: a time past the year 9999 in UTC)
        return False
    return True


def test_the_sample_orders_times_are_valid():
    times = []
    for line in (EXAMPLES / "etl" / "orders.jsonl").read_text().splitlines():
        try:
            times.append(json.loads(line)["ts"])
        except ValueError:  # the torn line and the blank one
            continue
    assert len(times) == 7 and all(valid(times))


def test_updated_at_the_warehouse_version_is_required_and_a_time_as_ts_is():
    """transform.yaml's warehouse keeps an order's version with the latest `updated_at` (a
    required value there): an order without one, or with one it cannot store, is ingest's dead
    letter, not transform's."""
    ts = "2026-11-03T09:12:00Z"
    orders = [
        dict(ORDER, ts=ts),
        {k: v for k, v in dict(ORDER, ts=ts).items() if k != "updated_at"},
        dict(ORDER, ts=ts, updated_at="2026-13-45T99:99:99Z"),
        dict(ORDER, ts=ts, updated_at=1762160000),
    ]
    run = run_topology(TOPOLOGY, records_from(orders))
    assert [o.outcome is Outcome.COMMITTED for o in run.outcomes] == [True, False, False, False]


@pytest.mark.parametrize(
    "ts",
    [
        "2026-13-45T99:99:99Z",  # passed the old pattern; no month 13
        "2026-11-03T09:12:00 junk",
        "2026-11-03T24:00:00Z",
        "2026-11-03T23:59:60Z",  # a leap second: Python's datetime has none
        "0000-01-01T00:00:00Z",  # no year 0
        "2026-11-03T09:12:00",  # no offset: whose 09:12?
        "2026-11-03T09:12Z",
        "2026-11-03",
        "2026-11-03T09:12:00+2:00",
    ],
)
def test_a_time_that_is_not_an_rfc3339_time_is_an_invalid_order(ts):
    assert valid([ts]) == [False]


def test_every_date_the_schema_takes_exists_and_the_transform_stores_it():
    """Every day of every month, in a leap year, a common one, a century (1900: not leap) and
    2000 (leap): valid exactly when the date exists, and then stored by the lake and warehouse."""
    times, exists = [], []
    for year in (2023, 2024, 1900, 2000):
        for month in range(1, 13):
            for day in range(1, 32):
                times.append(f"{year}-{month:02d}-{day:02d}T10:00:00.5+05:30")
                exists.append(day <= calendar.monthrange(year, month)[1])
    got = valid(times)
    assert got == exists
    assert all(storable(t) for t, ok in zip(times, got, strict=True) if ok)


@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        # its UTC time is in the year 10000, past Python's datetime: OverflowError in the lake and
        # the warehouse (both dead-lettered it) after the curated stream had taken it
        ("9999-12-31T23:30:00-01:00", False),
        ("9999-12-31T23:30:00Z", True),
        ("9999-12-31T23:30:00+01:00", True),
        ("1000-01-01T00:30:00+01:00", True),  # 0999-12-31 in UTC: stored
        # RFC 3339 allows a lower-case t (and z), which both store: it was an invalid order
        ("2026-11-03t09:12:00Z", True),
        ("2026-11-03t09:12:00z", True),
    ],
)
def test_the_edges_of_the_times_the_schema_takes_are_the_times_the_transform_stores(ts, ok):
    assert storable(ts) is ok
    assert valid([ts]) == [ok]


@pytest.mark.parametrize("ts", ["2026-11-03T09:12:00Z\n", "2026-11-03T09:12:00+01:00\n"])
def test_a_time_with_a_final_line_break_is_refused_by_the_schema_and_stored_by_the_transform(ts):
    """A pattern's $ matches before a final line break too: the lake refused what ingest took.
    The schema refuses it now, so the transform never sees it; the sinks themselves, which read
    a time as every reader does (spaces around it ignored: docs/warehouse.md), would store it —
    the safe way round (nothing the schema takes is refused downstream)."""
    assert valid([ts]) == [False]
    assert storable(ts) is True
