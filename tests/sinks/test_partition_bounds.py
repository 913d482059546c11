"""A partitioned warehouse table gets a partition (a table) per day its rows fall on, and the day
is the event's: a client's 500 events stamped on 500 days made 500 tables in one producer request,
as many again with each request. `partition_by`'s `max_future` (1 day) and `max_age` (366 days)
around the record's arrival make a row beyond them its event's failure instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg2

from squall.event import Record, RecordMeta
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome

ARRIVAL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def records(days: list[str], arrival: datetime | None = ARRIVAL) -> list[Record]:
    return [
        Record(
            json.dumps({"i": i, "ts": f"{day}T10:00:00Z"}).encode(),
            RecordMeta("s", "shardId-0", str(i + 1), 0, "pk", arrival),
        )
        for i, day in enumerate(days)
    ]


def engine_for(pg_url: str, table: str, **partition) -> Engine:
    spec = {
        "name": "partitions",
        "resources": {"warehouse": {"url": pg_url}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {
                "id": "rows",
                "type": "warehouse",
                "resource": "warehouse",
                "table": table,
                "columns": {"ts": {"path": "ts", "type": "timestamp"}, "i": "i"},
                "partition_by": {"column": "ts", **partition},
            },
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": table},
        ],
    }
    return Engine(load_text(json.dumps(spec)).plan, sleep=lambda s: None)


def partitions(pg_url: str, table: str) -> list[str]:
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s ORDER BY 1",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def test_rows_beyond_the_bounds_around_their_arrival_fail_and_open_no_partition(
    pg_url, unique_name
):
    days = ["2024-05-01", "2024-05-02", "2024-05-03", "2023-05-01", "2023-04-30", "0001-01-01"]
    with engine_for(pg_url, unique_name) as engine:
        result = engine.process(records(days))
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.COMMITTED,  # one day ahead: max_future 1d
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,  # 366 days before
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
    ]
    reasons = [o.reason for o in result.records if o.outcome is Outcome.DEAD_LETTERED]
    assert reasons[0] == (
        "partition_by: the row's day 2024-05-03 is more than max_future after its record's "
        "arrival (2024-05-01)"
    )
    assert "day 2023-04-30 is more than max_age before" in reasons[1]
    assert partitions(pg_url, unique_name) == [
        f"{unique_name}_p20230501",
        f"{unique_name}_p20240501",
        f"{unique_name}_p20240502",
    ]


def test_null_bounds_and_records_without_an_arrival_are_not_bounded(pg_url, unique_name):
    with engine_for(pg_url, unique_name, max_age=None, max_future=None) as engine:
        result = engine.process(records(["2024-05-09", "2020-01-01"]))
    with engine_for(pg_url, unique_name) as engine:  # files and stdin: no arrival time
        unbounded = engine.process(records(["2030-01-01"], arrival=None))
    assert {o.outcome for o in [*result.records, *unbounded.records]} == {Outcome.COMMITTED}
    assert len(partitions(pg_url, unique_name)) == 3
