"""The warehouse sink's ``mode: upsert`` on SQLite files and the real PostgreSQL: one row per key,
the last event of a key wins, replays leave the table as it was."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.component import ComponentContext
from squall.errors import SinkError
from squall.event import Event, RecordMeta, derive_event_id
from squall.sinks.base import WriteContext
from squall.sinks.warehouse import WarehouseConfig, WarehouseSink
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from squall.topology.resources import ResourceConfig, Resources

COLUMNS: dict[str, Any] = {
    "minute": {"path": "minute", "type": "timestamp"},
    "app": "app",
    "events": {"path": "events", "type": "integer"},
    "users": {"path": "users", "type": "integer"},
    "meta": {"path": "info", "type": "json"},
}
KEY = ["minute", "app"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path, unique_name: str):
    """(url, table) on a real database; the table is dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
    else:
        url = request.getfixturevalue("pg_url").replace(
            "postgresql://", "postgresql+psycopg2://", 1
        )
    yield url, unique_name
    if request.param == "sqlite":
        return  # the file goes with tmp_path
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}" CASCADE')
    engine.dispose()


def open_sink(url: str, table: str, **options: Any) -> WarehouseSink:
    doc = {
        "id": "rows",
        "type": "warehouse",
        "resource": "db",
        "table": table,
        "mode": "upsert",
        "key": KEY,
        "columns": COLUMNS,
        **options,
    }
    sink = WarehouseSink(WarehouseConfig.model_validate(doc), ComponentContext("upsert"))
    sink.open(Resources({"db": ResourceConfig(url=url)}))
    return sink


_seq = iter(range(1, 10**9))


def event(payload: dict) -> Event:
    meta = RecordMeta("s", "shardId-000000000000", str(next(_seq)))
    return Event(orjson.dumps(payload), meta, derive_event_id(meta), 0, payload)


def write(sink: WarehouseSink, payloads: list[dict]) -> list[Event]:
    prepared = sink.prepare([event(p) for p in payloads])
    sink.write_batch(prepared, WriteContext())
    return prepared.rejected


def rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = conn.exec_driver_sql(
            f'SELECT app, events, users FROM "{table}" ORDER BY app, minute'
        ).fetchall()
    engine.dispose()
    return [tuple(r) for r in got]


def result(
    app: str, events: int, users: int | None = None, minute: str = "2026-11-28T20:01:00Z"
) -> dict:
    return {"minute": minute, "app": app, "events": events, "users": users, "info": {"v": events}}


def test_a_later_result_replaces_the_row_and_the_last_of_a_batch_wins(db):
    url, table = db
    sink = open_sink(url, table, copy_batch_size=2)  # PostgreSQL: duplicates across COPY chunks too
    write(sink, [result("a", 1, 1), result("b", 5, 2), result("a", 2, 1), result("a", 3, 2)])
    assert rows(url, table) == [("a", 3, 2), ("b", 5, 2)]
    write(sink, [result("b", 6), result("c", 1, 1)])
    assert rows(url, table) == [("a", 3, 2), ("b", 6, None), ("c", 1, 1)]
    # The same results again (a replay) leave the table as it was.
    write(sink, [result("b", 6), result("c", 1, 1)])
    assert rows(url, table) == [("a", 3, 2), ("b", 6, None), ("c", 1, 1)]
    sink.close()


def test_the_key_is_the_primary_key_and_no_event_id_column_is_added(db):
    url, table = db
    open_sink(url, table).close()
    inspector = sa.inspect(sa.create_engine(url))
    assert [c["name"] for c in inspector.get_columns(table)] == [
        "minute",
        "app",
        "events",
        "users",
        "meta",
    ]
    assert inspector.get_pk_constraint(table)["constrained_columns"] == KEY
    assert {c["name"]: c["nullable"] for c in inspector.get_columns(table)}["app"] is False


def test_a_declared_event_id_column_holds_the_last_writer(db):
    url, table = db
    sink = open_sink(url, table, columns={**COLUMNS, "event_id": "meta.event_id"})
    events = [event(result("a", 1)), event(result("a", 2))]
    sink.write_batch(sink.prepare(events), WriteContext())
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f'SELECT event_id FROM "{table}"').fetchall() == [
            (events[1].event_id,)
        ]
    engine.dispose()


def test_an_event_without_a_key_value_goes_to_the_dead_letter(db):
    url, table = db
    sink = open_sink(url, table)
    rejected = write(sink, [result("a", 1), {"minute": "2026-11-28T20:01:00Z", "events": 4}])
    assert [e.failure.reason for e in rejected] == ["column 'app': required value 'app' is missing"]
    assert rows(url, table) == [("a", 1, None)]


def test_an_existing_table_without_a_unique_key_on_the_key_is_refused_at_start(db):
    url, table = db
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{table}" (minute timestamp with time zone, app text, events integer, '
            f"users integer, meta text)"
        )
    engine.dispose()
    with pytest.raises(
        SinkError, match=r"no primary key or unique (index|constraint) on exactly \(minute, app\)"
    ):
        open_sink(url, table)
    with pytest.raises(
        SinkError, match=r"no primary key or unique (index|constraint) on exactly \(minute, app\)"
    ):
        open_sink(url, table, create=False)


def test_an_existing_table_with_a_unique_index_on_the_key_is_used(db):
    url, table = db
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{table}" (minute timestamp with time zone NOT NULL, app text NOT NULL, '
            f"events integer, users integer, meta text)"
        )
        conn.exec_driver_sql(f'CREATE UNIQUE INDEX "ux_{table}" ON "{table}" (minute, app)')
    engine.dispose()
    sink = open_sink(url, table, create=False)
    write(sink, [result("a", 1), result("a", 2)])
    assert rows(url, table) == [("a", 2, None)]


def test_partitioned_upsert_table_on_postgresql(pg_url, unique_name):
    url = pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        sink = open_sink(url, unique_name, partition_by={"column": "minute"})
        write(
            sink,
            [
                result("a", 1, minute="2026-11-28T23:59:00Z"),
                result("a", 2, minute="2026-11-29T00:00:00Z"),
                result("a", 3, minute="2026-11-28T23:59:00Z"),
            ],
        )
        assert rows(url, unique_name) == [("a", 3, None), ("a", 2, None)]
    finally:
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}" CASCADE')


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": None}, "mode: upsert needs key"),
        ({"key": ["app", "nope"]}, "key: nope not among the columns"),
        ({"key": ["app", "app"]}, "a column is listed twice"),
        ({"key": ["meta"]}, "meta is a json column"),
        ({"mode": "insert"}, "key: only with mode: upsert"),
        (
            {
                "partition_by": {"column": "day"},
                "columns": {**COLUMNS, "day": {"path": "d", "type": "date"}},
            },
            "must hold the partition column 'day'",
        ),
    ],
)
def test_invalid_upsert_options(options, message):
    doc = {
        "id": "rows",
        "type": "warehouse",
        "resource": "db",
        "table": "t",
        "mode": "upsert",
        "key": KEY,
        "columns": COLUMNS,
        **options,
    }
    with pytest.raises(pydantic.ValidationError, match=message):
        WarehouseConfig.model_validate(doc)


def test_upsert_through_a_topology_with_replays(tmp_path: Path, unique_name: str):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    yaml = f"""
name: upsert
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: per_app
    mode: upsert
    key: [app]
    columns: {{app: app, n: {{path: n, type: integer}}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}}}
"""
    records = records_from(
        [{"app": "a", "n": 1}, {"app": "b", "n": 1}, {"app": "a", "n": 2}, {"n": 9}]
    )
    for _ in range(2):
        run = run_topology(yaml, records)
        assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 3 + [
            Outcome.DEAD_LETTERED
        ]
        assert rows_of(url, "SELECT app, n FROM per_app ORDER BY app") == [("a", 2), ("b", 1)]
    assert len(MemorySink.stores[unique_name]) == 2


def rows_of(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = [tuple(r) for r in conn.exec_driver_sql(query).fetchall()]
    engine.dispose()
    return got


# -- property: any split into batches, any replay, ends as "the last value of each key" ------------

updates = st.lists(st.tuples(st.sampled_from("abcde"), st.integers(-5, 5)), min_size=1, max_size=25)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=updates, data=st.data())
def test_any_batches_and_replays_end_with_the_last_value_of_each_key(db, items, data):
    url, table = db
    sink = open_sink(url, table)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{table}"')
    engine.dispose()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(items)), max_size=4)) | {len(items)})
    start = 0
    for cut in cuts:
        batch = [result(app, n) for app, n in items[start:cut]]
        write(sink, batch)
        if data.draw(st.booleans()):  # the batch comes again
            write(sink, batch)
        start = cut
    expected = {}
    for app, n in items:
        expected[app] = n
    assert rows(url, table) == [(app, n, None) for app, n in sorted(expected.items())]
    sink.close()


# -- version: the newer row wins, not the row written last -----------------------------------------


def versioned(url: str, table: str, **options: Any) -> WarehouseSink:
    columns = {**COLUMNS, "at": {"path": "at", "type": "timestamp"}}
    return open_sink(url, table, columns=columns, version="at", **options)


def at(app: str, events: int, when: str) -> dict:
    return {**result(app, events), "at": when}


def test_a_version_keeps_the_newer_row_across_batches_and_in_a_batch(db, caplog):
    url, table = db
    sink = versioned(url, table, copy_batch_size=2)  # PostgreSQL: across COPY chunks too
    # In a batch: the greatest version of a key wins wherever it is, a tie the last of them.
    write(
        sink,
        [
            at("a", 1, "2026-11-03T10:00:00Z"),
            at("a", 2, "2026-11-03T09:00:00Z"),
            at("b", 1, "2026-11-03T09:00:00Z"),
            at("b", 2, "2026-11-03T09:00:00Z"),
            at("c", 1, "2026-11-03T08:00:00.5Z"),  # a fraction: later than the whole second
            at("c", 2, "2026-11-03T08:00:00Z"),
        ],
    )
    assert rows(url, table) == [("a", 1, None), ("b", 2, None), ("c", 1, None)]
    # Later batches: an older row is not written (no error, no dead letter); a newer one is, and
    # the same version again (a replay) writes its values again.
    caplog.set_level(logging.INFO, logger="squall.sinks.warehouse")
    rejected = write(
        sink,
        [
            at("a", 3, "2026-11-03T09:59:59Z"),
            at("b", 3, "2026-11-03T09:00:00Z"),
            at("c", 3, "2026-11-03T10:00:00+02:00"),  # 08:00 UTC: older than 08:00:00.5
            at("d", 1, "2026-11-03T07:00:00Z"),
        ],
    )
    assert rejected == []
    assert rows(url, table) == [("a", 1, None), ("b", 3, None), ("c", 1, None), ("d", 1, None)]
    assert "2 of 4 row(s) not written: a row of their key with a greater at" in caplog.text
    write(sink, [at("a", 4, "2026-11-03T11:00:00Z")])
    assert rows(url, table) == [("a", 4, None), ("b", 3, None), ("c", 1, None), ("d", 1, None)]
    sink.close()


@pytest.mark.parametrize(
    ("spec", "older", "newer"),
    [
        ({"path": "v", "type": "integer"}, 9, 10),  # not "10" < "9" as text
        ({"path": "v", "type": "bigint"}, 2**40, 2**40 + 1),
        ({"path": "v", "type": "float"}, 9.5, 10.25),
        ({"path": "v", "type": "date"}, "2026-09-30", "2026-10-01"),
        ({"path": "v", "type": "timestamp"}, 1_700_000_000, "2023-11-14T22:13:21Z"),
    ],
)
def test_each_version_type_compares_as_its_values(db, spec, older, newer):
    url, table = db
    sink = open_sink(url, table, columns={**COLUMNS, "v": spec}, version="v")
    write(sink, [{**result("a", 1), "v": newer}])
    write(sink, [{**result("a", 2), "v": older}])
    assert rows(url, table) == [("a", 1, None)]
    write(sink, [{**result("a", 3), "v": newer}])
    assert rows(url, table) == [("a", 3, None)]
    sink.close()


def test_an_event_without_a_version_goes_to_the_dead_letter(db):
    url, table = db
    sink = versioned(url, table)
    rejected = write(sink, [at("a", 1, "2026-11-03T10:00:00Z"), result("a", 2)])
    assert [e.failure.reason for e in rejected] == ["column 'at': required value 'at' is missing"]
    assert rows(url, table) == [("a", 1, None)]


def test_a_version_column_added_to_an_existing_table_is_older_than_any_version(db):
    url, table = db
    sink = open_sink(url, table)
    write(sink, [result("a", 1), result("b", 1)])
    sink.close()
    sink = versioned(url, table)  # adds the column: the stored rows have NULL there
    write(sink, [at("a", 2, "2020-01-01T00:00:00Z")])
    write(sink, [at("a", 3, "2019-01-01T00:00:00Z")])
    assert rows(url, table) == [("a", 2, None), ("b", 1, None)]
    sink.close()
    versioned(url, table).close()  # and opens again: the column's NULLs are no problem


def test_a_versioned_partitioned_table_on_postgresql(pg_url, unique_name):
    url = pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        sink = versioned(url, unique_name, partition_by={"column": "minute"})
        day1, day2 = "2026-11-28T23:59:00Z", "2026-11-29T00:00:00Z"
        write(
            sink,
            [
                {**at("a", 1, "2026-12-01T00:00:02Z"), "minute": day1},
                {**at("a", 2, "2026-12-01T00:00:01Z"), "minute": day1},
                {**at("a", 3, "2026-12-01T00:00:01Z"), "minute": day2},
            ],
        )
        write(sink, [{**at("a", 4, "2026-12-01T00:00:00Z"), "minute": day2}])
        assert rows(url, unique_name) == [("a", 1, None), ("a", 3, None)]
    finally:
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}" CASCADE')


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "insert", "key": None}, "only with mode: upsert"),
        ({"version": "nope"}, "'nope' is not one of the columns"),
        ({"version": "minute"}, "'minute' is a key column"),
        ({"version": "app"}, "column 'app' is text; a version must be of type"),
        ({"version": "meta"}, "column 'meta' is json"),
    ],
)
def test_invalid_version_options(options, message):
    doc = {
        "id": "rows",
        "type": "warehouse",
        "resource": "db",
        "table": "t",
        "mode": "upsert",
        "key": ["minute"],
        "columns": COLUMNS,
        "version": "events",
        **options,
    }
    with pytest.raises(pydantic.ValidationError, match=message) as info:
        WarehouseConfig.model_validate(doc)
    assert [e["loc"] for e in info.value.errors()] == [("version",)]  # located at its line


def test_a_versioned_upsert_through_a_topology_with_an_older_batch_after_a_newer(
    tmp_path: Path, unique_name: str
):
    """The engine's one transaction per batch (rows, then the checkpoint), on a file read twice: a
    newer and an older line of a key, in batches of one, the run repeated."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    yaml = f"""
name: versioned
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: per_app
    mode: upsert
    key: [app]
    version: v
    columns: {{app: app, n: {{path: n, type: integer}}, v: {{path: v, type: integer}}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}}}
"""
    records = records_from(
        [{"app": "a", "n": 1, "v": 2}, {"app": "a", "n": 2, "v": 1}, {"app": "a", "n": 3}]
    )
    for _ in range(2):
        run = run_topology(yaml, records, batch_size=1)
        assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 2 + [
            Outcome.DEAD_LETTERED
        ]
        assert rows_of(url, "SELECT app, n, v FROM per_app") == [("a", 1, 2)]


def sqlite_table(path: Path, version_type: str) -> str:
    """An existing SQLite table of the COLUMNS and a version column ``v`` of the given SQL type."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE t (minute DATETIME, app TEXT, events INTEGER, users INTEGER, meta TEXT, "
            f"v {version_type}, PRIMARY KEY (minute, app))"
        )
    return f"sqlite:///{path}"


@pytest.mark.parametrize("sql_type", ["TEXT", "VARCHAR(20)", "CLOB"])
def test_a_numeric_version_in_an_existing_sqlite_text_column_is_refused_at_start(
    tmp_path: Path, sql_type: str
):
    """A TEXT-affinity column stores 10 as '10', which sorts before '9': every newer row would be
    kept out, silently. Refused at start, naming the column and its type."""
    url = sqlite_table(tmp_path / "w.db", sql_type)
    with pytest.raises(SinkError, match=rf"column 'v' is {re.escape(sql_type)} in the table"):
        open_sink(url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "integer"}}, version="v")


@pytest.mark.parametrize("version_type", ["integer", "bigint"])
@pytest.mark.parametrize("sql_type", ["REAL", "DOUBLE", "FLOAT"])
def test_an_integer_version_in_an_existing_sqlite_real_column_is_refused_at_start(
    tmp_path: Path, sql_type: str, version_type: str
):
    """A REAL-affinity column stores integers as floats: 1767614400000000000 (a time in
    nanoseconds) and the next one are the same float, so the older replaced the newer. Refused at
    start, naming the column and its type."""
    url = sqlite_table(tmp_path / "w.db", sql_type)
    with pytest.raises(SinkError, match=rf"column 'v' is {sql_type} in the table \(real affinity"):
        open_sink(
            url, "t", columns={**COLUMNS, "v": {"path": "v", "type": version_type}}, version="v"
        )


def test_an_integer_version_in_an_existing_sqlite_numeric_column_keeps_every_digit(
    tmp_path: Path,
):
    url = sqlite_table(tmp_path / "w.db", "NUMERIC")
    sink = open_sink(
        url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "bigint"}}, version="v"
    )
    write(sink, [{**result("a", 1), "v": 1767614400000000001}])
    write(sink, [{**result("a", 2), "v": 1767614400000000000}])  # older by one: kept out
    assert rows(url, "t") == [("a", 1, None)]
    sink.close()


@pytest.mark.parametrize("sql_type", ["INTEGER", "REAL", "NUMERIC", "BIGINT", ""])
def test_a_numeric_version_in_an_existing_sqlite_numeric_column_compares_as_numbers(
    tmp_path: Path, sql_type: str
):
    url = sqlite_table(tmp_path / "w.db", sql_type)
    sink = open_sink(
        url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "float"}}, version="v"
    )
    write(sink, [{**result("a", 1), "v": 9}])
    write(sink, [{**result("a", 2), "v": 10.5}])
    write(sink, [{**result("a", 3), "v": 10}])
    assert rows(url, "t") == [("a", 2, None)]
    sink.close()


def test_sqlite_timestamps_stored_with_an_offset_compare_as_times(tmp_path: Path):
    """Rows an earlier squall wrote kept the event's offset ('13:00:00+01:00' is 12:00 UTC), or
    another writer's ISO text ('T', 'Z'): compared as the times they are, not as text."""
    url = sqlite_table(tmp_path / "w.db", "DATETIME")
    stored = [
        ("a", "2026-01-05 13:00:00+01:00"),  # 12:00 UTC
        ("b", "2026-01-05 11:00:00-01:00"),  # 12:00 UTC
        ("c", "2026-01-05T12:00:00Z"),
        ("d", "2026-01-05 12:00:00.250+00:00"),  # a fraction with fewer digits
    ]
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.executemany(
            "INSERT INTO t VALUES ('2026-11-28 20:01:00+00:00', ?, 1, NULL, '{}', ?)", stored
        )
    sink = open_sink(
        url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "timestamp"}}, version="v"
    )
    # a: 12:30 UTC is newer than 12:00 UTC (as text '12:30' < '13:00'); b: 11:30 UTC is older (as
    # text '11:30' > '11:00'); c: newer ('2026-01-05 12:30' < '2026-01-05T' as text); d: 12:00:00.2
    # is older than 12:00:00.25 (as text '.200000' < '.250')
    write(
        sink,
        [
            {**result("a", 2), "v": "2026-01-05T12:30:00Z"},
            {**result("b", 2), "v": "2026-01-05T11:30:00Z"},
            {**result("c", 2), "v": "2026-01-05T12:30:00Z"},
            {**result("d", 2), "v": "2026-01-05T12:00:00.2Z"},
        ],
    )
    assert rows(url, "t") == [("a", 2, None), ("b", 1, None), ("c", 2, None), ("d", 1, None)]
    sink.close()


def test_sqlite_timestamps_stored_with_an_offset_compare_to_the_microsecond(tmp_path: Path):
    """A stored time not in squall's UTC form (an earlier squall kept the event's offset, with
    microseconds) against a new one less than a millisecond apart: julianday rounds both to the
    same millisecond, where the older replaced the newer. Stored text SQLite cannot read as a
    time is older than any version, as NULL is (julianday's NULL kept every row out)."""
    url = sqlite_table(tmp_path / "w.db", "DATETIME")
    stored = [
        ("a", "2026-01-05 13:00:00.000800+01:00"),  # 12:00:00.0008 UTC
        ("b", "2026-01-05T12:00:00.0004Z"),
        ("c", "2026-01-05 11:00:00.999900-01:00"),  # 11:59:59.9999 UTC (by julianday: 12:00:00)
        ("d", "2026-01-05T12:00:00Z"),
        ("e", "not a time"),  # older than any version, as NULL is: replaced
    ]
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.executemany(
            "INSERT INTO t VALUES ('2026-11-28 20:01:00+00:00', ?, 1, NULL, '{}', ?)", stored
        )
    sink = open_sink(
        url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "timestamp"}}, version="v"
    )
    write(
        sink,
        [
            {**result("a", 2), "v": "2026-01-05T12:00:00.0004Z"},  # older: kept out
            {**result("b", 2), "v": "2026-01-05T12:00:00.0008Z"},  # newer: replaces
            {**result("c", 2), "v": "2026-01-05T11:59:59.9998Z"},  # older: kept out
            {**result("d", 2), "v": "2026-01-05T11:59:59.9999Z"},  # older: kept out
            {**result("e", 2), "v": "2026-01-05T12:00:00Z"},
        ],
    )
    assert rows(url, "t") == [
        ("a", 1, None),
        ("b", 2, None),
        ("c", 1, None),
        ("d", 1, None),
        ("e", 2, None),
    ]
    sink.close()


def test_sqlite_timestamps_stored_with_trailing_zeros_in_utc_are_equal_versions(tmp_path: Path):
    """A stored time in UTC with a space and ``+00:00`` but a fraction of zeros or of more than
    six digits (another writer's ``.000000``, pandas's; ``.5000000``) was compared as text, as
    squall's own form is: an equal version, ``'…:00+00:00'`` or ``'….500000+00:00'`` as squall
    writes it, sorted before it and was not written (an equal version is, the docs say). Only
    squall's own form is compared as text now; the others as the times they are."""
    url = sqlite_table(tmp_path / "w.db", "DATETIME")
    stored = [
        ("a", "2026-01-05 12:00:00.000000+00:00"),
        ("b", "2026-01-05 12:00:00.0+00:00"),
        ("c", "2026-01-05 12:00:00.5000000+00:00"),
        ("d", "2026-01-05 12:00:00.5000001+00:00"),  # newer by 0.1 µs: kept
        ("e", "2026-01-05 12:00:00.400000+00:00"),  # squall's form, older: replaced
    ]
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.executemany(
            "INSERT INTO t VALUES ('2026-11-28 20:01:00+00:00', ?, 1, NULL, '{}', ?)", stored
        )
    sink = open_sink(
        url, "t", columns={**COLUMNS, "v": {"path": "v", "type": "timestamp"}}, version="v"
    )
    write(
        sink,
        [
            {**result("a", 2), "v": "2026-01-05T12:00:00Z"},
            {**result("b", 2), "v": "2026-01-05T12:00:00Z"},
            {**result("c", 2), "v": "2026-01-05T12:00:00.5Z"},
            {**result("d", 2), "v": "2026-01-05T12:00:00.5Z"},
            {**result("e", 2), "v": "2026-01-05T12:00:00.5Z"},
        ],
    )
    assert rows(url, "t") == [
        ("a", 2, None),
        ("b", 2, None),
        ("c", 2, None),
        ("d", 1, None),
        ("e", 2, None),
    ]
    sink.close()


# -- property: with a version, any batches and replays end as "the newest of each key" -----------

#: One instant written several ways (offsets, fractions, epoch seconds): equal versions, and
#: versions whose text sorts otherwise than their times.
INSTANTS = {
    0: ["2026-01-05T12:00:00Z", "2026-01-05T13:00:00+01:00", 1767614400],
    1: ["2026-01-05T12:00:00.5Z", "2026-01-05T11:00:00.500-01:00"],
    2: ["2026-01-05T12:00:01Z", "2026-01-05T12:00:01.000000+00:00"],
    3: ["2026-01-05T12:30:00Z", "2026-01-05T10:30:00-02:00"],
}
versioned_updates = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from(sorted(INSTANTS)), st.integers(0, 2)),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=versioned_updates, data=st.data())
def test_any_versioned_batches_and_replays_end_with_the_newest_row_of_each_key(db, items, data):
    """Against the documented rule, row by row: a row replaces its key's row if its version is at
    least the stored one (of a batch's rows of a key: the greatest, a tie the last). SQLite's row
    by row update and PostgreSQL's DISTINCT ON must both end so, so they end alike."""
    url, table = db
    sink = versioned(url, table, copy_batch_size=3)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{table}"')
    engine.dispose()
    numbered = [
        (app, t, INSTANTS[t][form % len(INSTANTS[t])], n) for n, (app, t, form) in enumerate(items)
    ]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(items)), max_size=4)) | {len(items)})
    model: dict[str, tuple[int, int]] = {}
    start = 0
    for cut in cuts:
        batch = numbered[start:cut]
        for _ in range(2 if data.draw(st.booleans()) else 1):  # the batch may come again
            write(sink, [at(app, n, when) for app, _t, when, n in batch])
            for app, t, _when, n in batch:
                if app not in model or model[app][0] <= t:
                    model[app] = (t, n)
        start = cut
    assert rows(url, table) == [(app, n, None) for app, (_t, n) in sorted(model.items())]
    sink.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_versioned_table_named_excluded(request, tmp_path: Path, backend: str):
    """The stored version is the target's by its alias: by its own name, "excluded".v would be the
    new row's (SQLite: every row compared with itself; PostgreSQL: every batch refused)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
    else:
        url = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg2://")
    try:
        sink = open_sink(
            url, "excluded", columns={**COLUMNS, "v": {"path": "v", "type": "integer"}}, version="v"
        )
        write(sink, [{**result("a", 1), "v": 2}])
        write(sink, [{**result("a", 2), "v": 1}])
        assert rows(url, "excluded") == [("a", 1, None)]
        write(sink, [{**result("a", 3), "v": 3}])
        assert rows(url, "excluded") == [("a", 3, None)]
        sink.close()
    finally:
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql('DROP TABLE IF EXISTS "excluded"')


def _other_form(rng, t, digits: str) -> str:
    """``t`` (UTC) as another writer might store it: an offset (``Z``, ``+00:00``, ``-00:00``,
    none, or hours and minutes either way), a ``T`` or a space, a fraction of any length."""
    from datetime import timedelta, timezone

    off = rng.choice([0, 0, 60, -60, 330, -330, 14 * 60, -14 * 60, -300])
    local = t.astimezone(timezone(timedelta(minutes=off)))
    text = f"{local.date().isoformat()}{rng.choice(' T')}{local:%H:%M:%S}"
    text += f".{digits}" if digits else ""
    if off == 0:
        return text + rng.choice(["Z", "+00:00", "-00:00", ""])
    return text + f"{'+' if off > 0 else '-'}{abs(off) // 60:02d}:{abs(off) % 60:02d}"


def test_sqlite_timestamp_version_compare_agrees_with_the_times_over_random_forms():
    """The upsert's SQL on SQLite (``on_conflict``) against the exact times, over 10,000 pairs of
    a stored time in another form (offsets crossing midnight and the year, ``T`` or space,
    ``Z``, fractions of 1–9 digits with trailing zeros, years 1 to 9999) and a new version in
    squall's form, a third of them the same time to the microsecond: a row is replaced exactly
    when the stored time is not after the new one."""
    import random
    import sqlite3
    from datetime import UTC, datetime, timedelta
    from fractions import Fraction

    from squall.sinks.warehouse.columns import ColumnSpec, _timestamp_text
    from squall.sinks.warehouse.writers import TableSpec, on_conflict, quote

    spec = TableSpec(
        None,
        "t",
        {"k": ColumnSpec(path="k"), "v": ColumnSpec(path="v", type="timestamp")},
        upsert_key=("k",),
        version_column="v",
    )
    rng = random.Random(20261207)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stored, new, want = [], [], []
    for k in range(10_000):
        if rng.random() < 0.1:  # the ends of the calendar
            y = rng.choice([1, 1969, 1970, 9998])
            t1 = datetime(y, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), tzinfo=UTC)
        else:
            t1 = base + timedelta(seconds=rng.randint(-3 * 86400, 3 * 86400))
        digits = ""
        if rng.random() < 0.7:
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9)))
            if rng.random() < 0.3:
                digits = digits[: max(1, len(digits) // 2)].ljust(len(digits), "0")
        f1 = Fraction(int(digits), 10 ** len(digits)) if digits else Fraction(0)
        us = int(f1 * 1_000_000) if rng.random() < 0.33 else rng.randint(0, 999_999)
        t2 = t1 + timedelta(seconds=rng.choice([0, 0, 0, 1, -1]), microseconds=us)
        stored.append((str(k), _other_form(rng, t1, digits)))
        new.append((str(k), _timestamp_text(t2)))
        # stored t1 + f1 s, new t2: exact, in microseconds (f1 may hold more digits)
        want.append(f1 * 1_000_000 <= (t2 - t1) // timedelta(microseconds=1))
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT, x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?, 1)", stored)
    conn.executemany(
        f"INSERT INTO t AS squall_stored (k, v, x) VALUES (?, ?, 2) ON CONFLICT (k) "
        f"{on_conflict(spec, quote, sqlite=True).replace('DO UPDATE SET', 'DO UPDATE SET x = 2,', 1)}",
        new,
    )
    got = dict(conn.execute("SELECT k, x FROM t"))
    wrong = [(stored[k][1], new[k][1]) for k in range(10_000) if (got[str(k)] == 2) != want[k]]
    assert wrong == [], wrong[:5]
