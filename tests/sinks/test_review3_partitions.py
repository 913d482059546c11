"""Review 3: two warehouse sinks on one partitioned PostgreSQL table, in the batch's transaction.

The second sink created the partition its batch needed on another connection of the pool while
the batch's transaction held the first sink's rows in that table: ``CREATE TABLE … PARTITION OF``
waited for that lock forever (with ``statement_timeout``: timed out on every attempt, so the
batch failed on every delivery).
"""

from __future__ import annotations

import json

import psycopg2

from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome


def test_two_sinks_on_one_partitioned_table_create_new_partitions_without_waiting_for_themselves(
    pg_url, unique_name
):
    columns = {"ts": {"path": "ts", "type": "timestamp"}, "i": {"path": "i", "type": "integer"}}

    def sink(name: str) -> dict:
        return {
            "id": name,
            "type": "warehouse",
            "resource": "warehouse",
            "table": unique_name,
            "columns": columns,
            "partition_by": {"column": "ts"},
            "statement_timeout": 1,  # a wait for a lock fails the attempt instead of hanging
        }

    spec = {
        "name": "partitions",
        "resources": {"warehouse": {"url": pg_url}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {"id": "route", "type": "route", "field": "kind", "routes": {"a": "a", "b": "b"}},
        ],
        "sinks": [sink("wa"), sink("wb")],
        "streams": [
            {"from": "route", "stream": "a", "to": "wa"},
            {"from": "route", "stream": "b", "to": "wb"},
        ],
    }
    engine = Engine(load_text(json.dumps(spec)).plan, sleep=lambda s: None)
    day1, day2 = "2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z"
    try:
        with engine:
            first = engine.process(
                records_from([{"i": 1, "kind": "a", "ts": day1}, {"i": 2, "kind": "b", "ts": day1}])
            )
            # wa writes into the table first; wb's record needs a new partition.
            second = engine.process(
                records_from(
                    [{"i": 3, "kind": "a", "ts": day1}, {"i": 4, "kind": "b", "ts": day2}], start=3
                )
            )
        assert first.ok and second.count(Outcome.COMMITTED) == 2
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT i FROM "{unique_name}" ORDER BY i')
            assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4]
    finally:
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{unique_name}" CASCADE')
