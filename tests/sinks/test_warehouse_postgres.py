"""The warehouse sink on the real PostgreSQL of this machine (no fakes): COPY, idempotency, schema
management, partitioning, several tables, checkpoints in the same transaction.

Every test works on tables (and schemas) with unique names and drops them afterwards.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import orjson
import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig, ComponentContext
from squall.errors import BatchFailed, RecordError, SinkError, TopologyError, TransientError
from squall.event import Event, RecordMeta, derive_event_id
from squall.sinks.base import WriteContext
from squall.sinks.warehouse import WarehouseConfig, WarehouseSink
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from squall.topology.pg_driver import PgEngine
from squall.topology.resources import ResourceConfig, Resources

COLUMNS: dict[str, Any] = {
    "kind": {"path": "kind", "nullable": False, "index": True},
    "n": {"path": "n", "type": "integer"},
    "big": {"path": "big", "type": "bigint"},
    "price": {"path": "price", "type": "float"},
    "ok": {"path": "ok", "type": "boolean"},
    "at": {"path": "at", "type": "timestamp"},
    "day": {"path": "day", "type": "date"},
    "tags": {"path": "tags", "type": "json"},
    "country": "geo.country",
    "shard": "meta.shard_id",
}


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def url(pg_url: str) -> str:
    """The test database through psycopg2 (the driver the COPY writer uses)."""
    return pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)


class Admin:
    """An autocommit connection for setup and assertions, and the DROPs to run after the test."""

    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.drop: list[str] = []

    def cursor(self):
        return self.conn.cursor()


@pytest.fixture
def pg(pg_url: str):
    admin = Admin(pg_url.replace("postgresql+psycopg2://", "postgresql://"))
    yield admin
    with admin.cursor() as cur:
        for statement in reversed(admin.drop):
            cur.execute(statement)
    admin.conn.close()


@pytest.fixture
def table(pg, unique_name: str) -> str:
    pg.drop.append(f'DROP TABLE IF EXISTS "{unique_name}" CASCADE')
    return unique_name


def sql(pg, query: str, *args: Any) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def topology(
    url: str,
    table: str,
    *,
    columns: dict | None = None,
    sink: dict | None = None,
    bolts: list | None = None,
    sinks: list | None = None,
    streams: list | None = None,
    resource: dict | None = None,
    attempts: int = 3,
) -> str:
    """Topology text (JSON is YAML) with one warehouse sink named 'rows' and a memory dead letter."""
    doc = {
        "name": "whpg",
        "resources": {"db": {"url": url, **(resource or {})}},
        "spout": {"type": "squall.testing:ListSpout"},
        "settings": {"retry": {"attempts": attempts, "initial_backoff": 0.01, "max_backoff": 0.05}},
        "bolts": [{"id": "decode", "type": "json"}, *(bolts or [])],
        "sinks": sinks
        or [
            {
                "id": "rows",
                "type": "warehouse",
                "resource": "db",
                "table": table,
                "columns": columns or COLUMNS,
                **(sink or {}),
            },
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{table}-dlq"},
        ],
    }
    if streams:
        doc["streams"] = streams
    return json.dumps(doc)


def open_sink(
    url: str, table: str, *, columns: dict | None = None, **options: Any
) -> WarehouseSink:
    config = WarehouseConfig.model_validate(
        {
            "id": "rows",
            "type": "warehouse",
            "resource": "db",
            "table": table,
            "columns": columns or COLUMNS,
            **options,
        }
    )
    sink = WarehouseSink(config, ComponentContext("whpg"))
    sink.open(Resources({"db": ResourceConfig(url=url)}))
    return sink


def event(i: int, payload: Any, *, shard: str = "shardId-000000000000") -> Event:
    meta = RecordMeta("s", shard, str(1000 + i))
    return Event(orjson.dumps(payload), meta, derive_event_id(meta), i, payload)


def write(sink: WarehouseSink, events: list[Event], ctx: WriteContext | None = None) -> list[Event]:
    """prepare + write_batch, as the engine calls them; returns the rejected events."""
    prepared = sink.prepare(events)
    sink.write_batch(prepared, ctx or WriteContext())
    return prepared.rejected


def count(pg, table: str) -> int:
    return sql(pg, f'SELECT count(*) FROM "{table}"')[0][0]


# -- rows, types, escaping -------------------------------------------------------------------------


def test_rows_are_typed_escaped_and_unstorable_events_are_dead_lettered(url, pg, table):
    payloads = [
        {
            "kind": "tab\there",
            "n": 1,
            "big": 2**40,
            "price": 2.5,
            "ok": True,
            "at": "2026-11-03T18:00:00Z",
            "day": "2026-11-03",
            "tags": ["a", {"q": 'say "hi"\\n'}],
            "geo": {"country": "DE"},
        },
        {"kind": "line\nbreak\r\\back\\slash", "n": "2", "at": 1_762_192_800_000, "ok": "yes"},
        {"kind": "\\N", "at": "2026-11-03T20:00:00+02:00", "price": "1e300"},  # a string, not NULL
        {"kind": "", "n": -(2**31), "tags": "plain string", "geo": "not an object"},
        {"n": 3},  # kind is required
        {"kind": "buy", "n": "three"},  # not an integer
        {"kind": "buy", "n": 2**31},  # out of range for integer
        {"kind": "buy", "at": "yesterday"},  # not a timestamp
        {"kind": "nul\x00byte"},  # PostgreSQL cannot store NUL in text
        {"kind": "buy", "tags": {"k": "nul\x00"}},  # nor in jsonb
    ]
    run = run_topology(topology(url, table), records_from(payloads))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 4 + [
        Outcome.DEAD_LETTERED
    ] * 6
    reasons = [ev.failure.reason for ev in MemorySink.stores[f"{table}-dlq"]]
    assert reasons == [
        "column 'kind': required value 'kind' is missing",
        "column 'n': cannot store 'three' from 'n' as integer",
        "column 'n': cannot store 2147483648 from 'n' as integer: out of range (32-bit)",
        "column 'at': cannot store 'yesterday' from 'at' as timestamp",
        "column 'kind': value from 'kind' contains a NUL character (\\u0000), which PostgreSQL cannot store",
        "column 'tags': cannot store {'k': 'nul\\x00'} from 'tags' as json: contains a NUL character (\\u0000), "
        "which PostgreSQL jsonb cannot store",
    ]
    rows = sql(
        pg,
        f'SELECT kind, n, big, price, ok, at, day, tags, country, shard FROM "{table}" '
        f'ORDER BY kind COLLATE "C"',
    )
    shard = "shardId-000000000000"
    assert rows == [
        ("", -(2**31), None, None, None, None, None, "plain string", None, shard),
        (
            "\\N",
            None,
            None,
            1e300,
            None,
            datetime(2026, 11, 3, 18, tzinfo=UTC),
            None,
            None,
            None,
            shard,
        ),
        (
            "line\nbreak\r\\back\\slash",
            2,
            None,
            None,
            True,
            datetime(2025, 11, 3, 18, tzinfo=UTC),
            None,
            None,
            None,
            shard,
        ),
        (
            "tab\there",
            1,
            2**40,
            2.5,
            True,
            datetime(2026, 11, 3, 18, tzinfo=UTC),
            date(2026, 11, 3),
            ["a", {"q": 'say "hi"\\n'}],
            "DE",
            shard,
        ),
    ]


def test_the_table_is_created_from_the_yaml(url, pg, table):
    open_sink(url, table)
    cols = sql(
        pg,
        """SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns
                      WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position""",
        table,
    )
    assert cols == [
        ("event_id", "text", "NO", "C"),
        ("kind", "text", "NO", None),
        ("n", "integer", "YES", None),
        ("big", "bigint", "YES", None),
        ("price", "double precision", "YES", None),
        ("ok", "boolean", "YES", None),
        ("at", "timestamp with time zone", "YES", None),
        ("day", "date", "YES", None),
        ("tags", "jsonb", "YES", None),
        ("country", "text", "YES", None),
        ("shard", "text", "YES", None),
    ]
    indexes = dict(
        sql(pg, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", table)
    )
    assert indexes[f"{table}_pkey"].endswith("USING btree (event_id)")
    assert indexes[f"ix_{table}_kind"].endswith("USING btree (kind)")


def test_identifiers_are_quoted_mixed_case_and_reserved_words_work(url, pg, unique_name):
    schema = f"S_{unique_name}"
    pg.drop.append(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    sink = open_sink(
        url,
        "Events",
        schema=schema,
        columns={"order": "order", "User": "user", "select": {"path": "at", "type": "timestamp"}},
        partition_by={"column": "select"},
    )
    write(sink, [event(0, {"order": "o1", "user": "u", "at": "2026-01-02T03:04:05Z"})])
    assert sql(pg, f'SELECT "order", "User" FROM "{schema}"."Events"') == [("o1", "u")]
    assert sql(
        pg,
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE nspname = %s AND relkind IN ('r', 'p') ORDER BY 1",
        schema,
    ) == [("Events",), ("Events_p20260102",)]


@pytest.mark.parametrize("bad", ['events"; drop table x; --', "1abc", "a" * 64, "évents"])
def test_unsafe_identifiers_are_refused_at_load(url, bad):
    with pytest.raises(TopologyError, match="invalid"):
        load_text(topology(url, bad))
    with pytest.raises(TopologyError, match="invalid column name"):
        load_text(topology(url, "t", columns={bad: "x"}))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_float_nan_or_infinity_a_bolt_made_is_dead_lettered_not_stored(url, pg, table, bad):
    """A Python bolt's float NaN or infinity (``0/0``; JSON has none) in a ``float`` column is
    the event's dead letter, as NumPy's NaN, ``"NaN"``, SQLite's writer and the ``s3`` sink's
    ``float64`` column make it: the COPY text was its ``repr``, unchecked, and PostgreSQL
    stored ``NaN`` or ``Infinity``."""
    sink = open_sink(
        url,
        table,
        columns={"k": {"path": "k", "type": "integer"}, "x": {"path": "x", "type": "float"}},
    )
    events = []
    for i, x in enumerate([1.5, bad, None, -0.0]):
        meta = RecordMeta("s", "shardId-000000000000", str(1000 + i))
        events.append(Event(b"{}", meta, derive_event_id(meta), i, {"k": i, "x": x}))
    try:
        rejected = write(sink, events)
    finally:
        sink.close()
    assert [ev.value["k"] for ev in rejected] == [1]
    assert rejected[0].failure.reason == f"column 'x': cannot store {bad!r} from 'x' as float"
    assert sorted(sql(pg, f'SELECT k, x FROM "{table}"')) == [(0, 1.5), (2, None), (3, -0.0)]


# -- idempotency -------------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["\\N", "", "\t", "\\", "a\nb", "\r\n", "\\.", "x\x00y"]),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
MOMENT = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@st.composite
def payloads(draw) -> tuple[dict, dict | None]:
    """A payload and the row it must become (None: the event must be dead-lettered)."""
    moment = draw(MOMENT)
    shape = draw(st.sampled_from(["datetime", "iso", "offset", "epoch_ms"]))
    if shape == "epoch_ms" and moment.timestamp() > 1e8:  # numbers above 10^11 are milliseconds
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        at: Any = round(moment.timestamp() * 1000)
    elif shape == "iso":
        at = moment.isoformat().replace("+00:00", draw(st.sampled_from(["Z", "+00:00"])))
    elif shape == "offset":
        at = moment.astimezone(
            timezone(timedelta(minutes=draw(st.integers(-720, 720))))
        ).isoformat()
    else:
        at = moment
    p = {
        "txt": draw(TEXT),
        "n": draw(st.none() | st.integers(-(2**63), 2**63 + 5)),
        "at": at,
        "x": draw(st.none() | st.floats(allow_nan=False)),
        "flag": draw(st.none() | st.booleans()),
        "doc": draw(JSON),
    }
    storable = (
        "\x00" not in p["txt"]
        and (p["n"] is None or p["n"] < 2**63)
        and not _has_nul(p["doc"])
        and (p["x"] is None or math.isfinite(p["x"]))  # a float column takes finite numbers only
    )
    row = {
        "txt": p["txt"],
        "n": p["n"],
        "at": moment,
        "x": p["x"],
        "flag": p["flag"],
        "doc": p["doc"],
    }
    return p, row if storable else None


def _has_nul(doc: Any) -> bool:
    if isinstance(doc, str):
        return "\x00" in doc
    if isinstance(doc, list):
        return any(_has_nul(v) for v in doc)
    if isinstance(doc, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in doc.items())
    return False


def _exact(doc: Any) -> Any:
    """JSON with every number as a Decimal: jsonb keeps numbers as exact decimals (1e16 comes back as an int)."""
    if isinstance(doc, bool) or doc is None or isinstance(doc, str):
        return doc
    if isinstance(doc, int | float):
        return Decimal(repr(doc))
    if isinstance(doc, list):
        return [_exact(v) for v in doc]
    return {k: _exact(v) for k, v in doc.items()}


PROPERTY_COLUMNS = {
    "txt": "txt",
    "n": {"path": "n", "type": "bigint"},
    "at": {"path": "at", "type": "timestamp"},
    "x": {"path": "x", "type": "float"},
    "flag": {"path": "flag", "type": "boolean"},
    "doc": {"path": "doc", "type": "json"},
}


@pytest.fixture
def property_sink(url, table):
    return open_sink(url, table, columns=PROPERTY_COLUMNS, copy_batch_size=7)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(payloads(), min_size=1, max_size=25), data=st.data())
def test_replaying_any_batch_adds_no_rows_and_values_round_trip(
    property_sink, pg, table, items, data
):
    sql(pg, f'TRUNCATE "{table}"')
    events = [event(i, p) for i, (p, _) in enumerate(items)]
    n = len(events)
    slices = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n)), min_size=1, max_size=6)
    )
    written: set[int] = set()
    for lo, size in slices:
        batch = events[lo : lo + size]
        if data.draw(
            st.booleans()
        ):  # the same event twice in one batch, as a producer retry makes it
            batch = batch + batch[: data.draw(st.integers(0, len(batch)))]
        rejected = write(property_sink, batch)
        assert {ev.origin for ev in rejected} == {
            ev.origin for ev in batch if items[ev.origin][1] is None
        }
        written |= {ev.origin for ev in batch if items[ev.origin][1] is not None}
        assert count(pg, table) == len(written)  # a replay adds nothing; new events are all there
    stored = {
        r[0]: r[1:] for r in sql(pg, f'SELECT event_id, txt, n, at, x, flag, doc FROM "{table}"')
    }
    for i in written:
        row = items[i][1]
        *scalars, doc = stored[events[i].event_id]
        assert scalars == [row["txt"], row["n"], row["at"], row["x"], row["flag"]]
        assert _exact(doc) == _exact(row["doc"])


def test_a_replay_goes_through_the_staging_merge_and_fresh_batches_copy_directly(url, pg, table):
    sink = open_sink(url, table)
    events = [event(i, {"kind": f"k{i}"}) for i in range(30)]
    write(sink, events[:20])
    assert sink.writer._direct  # fresh rows: straight COPY
    write(
        sink, events[10:30]
    )  # half replayed: the COPY stops at the key, the merge adds the new half
    assert count(pg, table) == 30
    assert not sink.writer._direct
    write(sink, events)  # replays stay on the merge path
    assert not sink.writer._direct
    write(sink, [event(100 + i, {"kind": "new"}) for i in range(5)])  # a fresh batch: back to COPY
    assert sink.writer._direct
    assert count(pg, table) == 35


def test_a_large_batch_is_split_into_several_copies_in_one_transaction(url, pg, table):
    sink = open_sink(url, table, copy_batch_size=100)
    events = [event(i, {"kind": "k", "n": i}) for i in range(1_050)]
    prepared = sink.prepare(events)
    assert [n for _, n in prepared.payload.chunks] == [100] * 10 + [50]
    sql(pg, f'ALTER TABLE "{table}" ADD CONSTRAINT no_1049 CHECK (n <> 1049)')  # one chunk fails
    with pytest.raises(RecordError, match="no_1049"):  # one row's value: the engine isolates it
        sink.write_batch(prepared, WriteContext())
    assert count(pg, table) == 0  # the first ten COPYs rolled back with it
    sql(pg, f'ALTER TABLE "{table}" DROP CONSTRAINT no_1049')
    sink.write_batch(prepared, WriteContext())
    assert count(pg, table) == 1_050


# -- schema changes ----------------------------------------------------------------------------------


def test_a_new_column_in_the_yaml_is_added_to_the_table(url, pg, table):
    write(open_sink(url, table), [event(0, {"kind": "a"})])
    wider = {
        **COLUMNS,
        "seq": "meta.sequence_number",
        "score": {"path": "score", "type": "float", "index": True},
    }
    sink = open_sink(url, table, columns=wider)
    write(sink, [event(1, {"kind": "b", "score": 0.5})])
    write(
        sink, [event(1, {"kind": "b", "score": 0.5}), event(2, {"kind": "c", "score": 1})]
    )  # the merge path
    assert not sink.writer._direct
    assert sql(pg, f'SELECT kind, seq, score FROM "{table}" ORDER BY kind') == [
        ("a", None, None),
        ("b", "1001", 0.5),
        ("c", "1002", 1.0),
    ]
    assert sql(
        pg,
        "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%(score)'",
        table,
    ) == [(1,)]


def test_a_new_required_column_cannot_be_added_to_a_table_with_rows(url, pg, table):
    write(open_sink(url, table), [event(0, {"kind": "a"})])
    with pytest.raises(SinkError, match=rf"table {table}: cannot add column 'must' as NOT NULL"):
        open_sink(url, table, columns={**COLUMNS, "must": {"path": "must", "nullable": False}})


@pytest.mark.parametrize(
    "ddl, columns, message",
    [
        (
            "event_id text PRIMARY KEY, kind text NOT NULL, n text",
            None,
            "column 'n' is text in the table, but the YAML declares integer, which needs integer, bigint or numeric",
        ),
        (
            "event_id text PRIMARY KEY, kind text NOT NULL, n smallint",
            None,
            "column 'n' is smallint in the table",
        ),
        (
            "event_id text PRIMARY KEY, kind varchar(3) NOT NULL",
            None,
            "column 'kind' is character varying(3)",
        ),
        (
            "event_id text PRIMARY KEY, kind text",
            None,
            "column 'kind' is nullable in the table but nullable: false in the YAML",
        ),
        (
            "event_id text PRIMARY KEY, kind text NOT NULL, n integer NOT NULL",
            None,
            "column 'n' is NOT NULL in the table but nullable in the YAML",
        ),
        (
            "event_id text, kind text NOT NULL",
            None,
            "has no primary key or unique constraint on exactly (event_id)",
        ),
        (
            "event_id text, kind text NOT NULL, UNIQUE (event_id, kind)",
            None,
            "has no primary key or unique constraint on exactly (event_id)",
        ),
        (
            "event_id text PRIMARY KEY, kind text NOT NULL, owner text NOT NULL",
            None,
            "column 'owner' is NOT NULL without a default and not in the YAML",
        ),
        (
            "event_id text PRIMARY KEY, kind text NOT NULL",
            {"partition_by": {"column": "at"}},
            "is not partitioned, but partition_by asks for at",
        ),
        (
            "event_id text, at timestamptz NOT NULL, kind text NOT NULL, PRIMARY KEY (event_id, at)) "
            "PARTITION BY RANGE (at",
            None,
            "is partitioned on (at); set partition_by",
        ),
        (
            "event_id text PRIMARY KEY, kind text NOT NULL",
            {"create": False},
            "has no column 'n' (create: false",
        ),
    ],
)
def test_an_incompatible_table_is_refused_at_open_naming_table_and_column(
    url, pg, table, ddl, columns, message
):
    sql(pg, f'CREATE TABLE "{table}" ({ddl})')
    with pytest.raises(SinkError) as err:
        open_sink(url, table, **(columns or {}))
    assert message in str(err.value)
    assert str(err.value).startswith(f"rows: table {table}")


def test_a_compatible_hand_made_table_is_accepted_as_it_is(url, pg, table):
    sql(
        pg,
        f'''CREATE TABLE "{table}" (id bigserial, event_id varchar NOT NULL UNIQUE, kind text NOT NULL,
               n bigint, big numeric, price numeric, ok boolean, at timestamp, day date, tags json,
               country text, shard text, note text DEFAULT 'x' NOT NULL)''',
    )
    sink = open_sink(url, table)
    write(sink, [event(0, {"kind": "a", "n": 5, "at": "2026-01-01T10:00:00+01:00", "tags": [1]})])
    write(sink, [event(0, {"kind": "a"}), event(1, {"kind": "b"})])
    assert sql(pg, f'SELECT kind, n, at, tags::text, note FROM "{table}" ORDER BY kind') == [
        ("a", 5, datetime(2026, 1, 1, 9), "[1]", "x"),
        ("b", None, None, None, "x"),
    ]


def test_a_missing_table_with_create_false_is_refused(url, table):
    with pytest.raises(SinkError, match=f"table {table} does not exist"):
        open_sink(url, table, create=False)


# -- partitioning ------------------------------------------------------------------------------------


def partitions(pg, table: str) -> list[str]:
    return [
        r[0]
        for r in sql(
            pg,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            f'"{table}"',
        )
    ]


def test_day_partitions_are_created_for_the_days_of_each_batch(url, pg, table):
    sink = open_sink(url, table, partition_by={"column": "at"})
    batch = [
        event(0, {"kind": "a", "at": "2026-03-01T23:59:59.999999Z"}),
        event(1, {"kind": "b", "at": "2026-03-02T01:30:00+02:00"}),  # 2026-03-01 in UTC
        event(2, {"kind": "c", "at": 1_772_409_600_000}),  # 2026-03-02T00:00:00Z
        event(3, {"kind": "no day"}),
    ]  # the partition column is required
    rejected = write(sink, batch)
    assert [ev.failure.reason for ev in rejected] == ["column 'at': required value 'at' is missing"]
    assert partitions(pg, table) == [f"{table}_p20260301", f"{table}_p20260302"]
    assert sql(pg, f'SELECT kind, tableoid::regclass::text FROM "{table}" ORDER BY kind') == [
        ("a", f"{table}_p20260301"),
        ("b", f"{table}_p20260301"),
        ("c", f"{table}_p20260302"),
    ]
    write(
        sink, batch[:3] + [event(4, {"kind": "d", "at": "2026-03-05T00:00:00Z"})]
    )  # replay + a new day
    assert count(pg, table) == 4
    assert partitions(pg, table)[-1] == f"{table}_p20260305"
    key = sql(
        pg,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
        "AND contype = 'p'",
        f'"{table}"',
    )
    assert key == [("PRIMARY KEY (event_id, at)",)]
    # A second process (a new sink) finds the partitions that exist and replays without duplicates.
    write(open_sink(url, table, partition_by={"column": "at"}), batch[:3])
    assert count(pg, table) == 4


def test_month_partitions_on_a_date_column(url, pg, table):
    sink = open_sink(
        url,
        table,
        columns={"kind": "kind", "on": {"path": "on", "type": "date"}},
        partition_by={"column": "on", "granularity": "month"},
    )
    write(
        sink,
        [
            event(i, {"kind": "k", "on": d})
            for i, d in enumerate(["2026-12-31", "2027-01-01", "2026-12-01"])
        ],
    )
    assert partitions(pg, table) == [f"{table}_p202612", f"{table}_p202701"]
    assert count(pg, table) == 3


@pytest.mark.parametrize(
    "partition_by, message",
    [
        ({"column": "nope"}, "'nope' is not one of the columns"),
        ({"column": "kind"}, "column 'kind' must be of type timestamp or date"),
        ({"column": "at", "granularity": "hour"}, "granularity"),
    ],
)
def test_partition_by_is_checked_at_load(url, partition_by, message):
    with pytest.raises(TopologyError, match=message):
        load_text(topology(url, "t", sink={"partition_by": partition_by}))


def test_partition_by_is_refused_on_sqlite(tmp_path):
    with pytest.raises(SinkError, match="partition_by needs PostgreSQL"):
        open_sink(f"sqlite:///{tmp_path}/w.db", "t", partition_by={"column": "at"})


# -- several tables from one topology ---------------------------------------------------------------


def test_a_route_bolt_feeds_two_tables_on_one_connection_pool(url, pg, unique_name):
    events_table, subs_table = f"{unique_name}_events", f"{unique_name}_subs"
    pg.drop.extend(
        [f'DROP TABLE IF EXISTS "{events_table}"', f'DROP TABLE IF EXISTS "{subs_table}"']
    )
    text = topology(
        url,
        unique_name,
        bolts=[
            {
                "id": "router",
                "type": "route",
                "field": "kind",
                "routes": {"subscribe": "subs", "unsubscribe": "subs"},
            }
        ],
        sinks=[
            {
                "id": "events",
                "type": "warehouse",
                "resource": "db",
                "table": events_table,
                "columns": {"kind": "kind", "page": "page"},
            },
            {
                "id": "subscriptions",
                "type": "warehouse",
                "resource": "db",
                "table": subs_table,
                "columns": {
                    "kind": {"path": "kind", "nullable": False},
                    "token": {"path": "token", "nullable": False},
                },
            },
        ],
        streams=[{"from": "router", "stream": "subs", "to": "subscriptions"}],
    )
    payloads = [
        {"kind": "page_view", "page": "/"},
        {"kind": "subscribe", "token": "t1"},
        {"kind": "click", "page": "/a"},
        {"kind": "unsubscribe", "token": "t1"},
    ]
    run = run_topology(text, records_from(payloads))
    assert all(o.outcome is Outcome.COMMITTED for o in run.outcomes)
    engine = run.engine
    sinks = [c for c in engine.components if isinstance(c, WarehouseSink)]
    assert sinks[0].engine is sinks[1].engine  # one SQLAlchemy engine: one pool for the process
    run_topology(text, records_from(payloads))  # replay
    assert sql(pg, f'SELECT kind, page FROM "{events_table}" ORDER BY kind') == [
        ("click", "/a"),
        ("page_view", "/"),
    ]
    assert sql(pg, f'SELECT kind, token FROM "{subs_table}" ORDER BY kind') == [
        ("subscribe", "t1"),
        ("unsubscribe", "t1"),
    ]


# -- checkpoints in the same transaction --------------------------------------------------------------


class FailingCheckpoints(SqlCheckpointStore):
    """Saves the positions, then fails in the same transaction: permanently, or transiently N times."""

    def __init__(self, *args: Any, transient: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.transient = transient
        self.calls = 0

    def save_in(self, connection, stream, positions) -> None:
        self.calls += 1
        super().save_in(connection, stream, positions)
        if self.calls <= self.transient:
            raise TransientError("checkpoint store: injected transient failure")
        if not self.transient:
            connection.exec_driver_sql("SELECT 1 / 0")  # a real database error after the rows


def checkpoint_engine(
    url, pg, table, store_cls=SqlCheckpointStore, **store_kwargs
) -> tuple[Engine, Any]:
    topo = load_text(topology(url, table, attempts=3))
    resources = Resources(topo.resources)
    cp_table = f"{table}_cp"
    pg.drop.append(f'DROP TABLE IF EXISTS "{cp_table}"')
    store = store_cls(resources.sql("db"), "whpg", resource="db", table=cp_table, **store_kwargs)
    engine = Engine(
        topo.plan,
        resources=resources,
        checkpointer=Checkpointer(store),
        sleep=lambda s: None,
    )
    engine.open()
    assert engine.checkpoint_in_transaction
    return engine, store


def test_the_checkpoint_commits_with_the_rows(url, pg, table):
    engine, store = checkpoint_engine(url, pg, table)
    with engine:
        result = engine.process(records_from([{"kind": "a"}, {"kind": "b"}, {"n": 1}], start=5))
    assert (
        store.load("test")
        == result.checkpoint
        == {"shardId-000000000000": result.records[-1].position}
    )
    assert count(pg, table) == 2


def test_a_failing_checkpoint_write_leaves_no_rows(url, pg, table):
    engine, store = checkpoint_engine(url, pg, table, FailingCheckpoints)
    with engine, pytest.raises(BatchFailed, match="division by zero"):
        engine.process(records_from([{"kind": "a"}, {"kind": "b"}]))
    assert count(pg, table) == 0
    assert store.load("test") == {}


def test_a_failing_copy_leaves_no_checkpoint(url, pg, table):
    engine, store = checkpoint_engine(url, pg, table)
    pg.drop.append(f'DROP FUNCTION IF EXISTS "{table}_refuse"() CASCADE')
    with engine:
        # A failure of the table, not of a row (SQLSTATE P0001): the whole batch fails.
        sql(
            pg,
            f"""CREATE FUNCTION "{table}_refuse"() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'no_boom: the table is closed'; END $$""",
        )
        sql(
            pg,
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION "{table}_refuse"()',
        )
        with pytest.raises(BatchFailed, match="no_boom"):
            engine.process(records_from([{"kind": "a"}, {"kind": "boom"}]))
    assert count(pg, table) == 0
    assert store.load("test") == {}


def test_a_row_the_table_refuses_is_dead_lettered_and_the_rest_commits_with_the_checkpoint(
    url, pg, table
):
    engine, store = checkpoint_engine(url, pg, table)
    with engine:
        sql(pg, f"ALTER TABLE \"{table}\" ADD CONSTRAINT no_boom CHECK (kind <> 'boom')")
        result = engine.process(records_from([{"kind": "a"}, {"kind": "boom"}, {"kind": "c"}]))
    assert result.ok and result.count(Outcome.DEAD_LETTERED) == 1
    assert sorted(r[0] for r in sql(pg, f'SELECT kind FROM "{table}"')) == ["a", "c"]
    assert store.load("test") == result.checkpoint


def test_a_transient_failure_after_the_checkpoint_retries_the_whole_transaction(url, pg, table):
    engine, store = checkpoint_engine(url, pg, table, FailingCheckpoints, transient=2)
    with engine:
        result = engine.process(records_from([{"kind": "a"}, {"kind": "b"}]))
    assert store.calls == 3 and next(s for s in engine.stats if s.id == "rows").retries == 2
    assert count(pg, table) == 2
    assert store.load("test") == result.checkpoint


# -- connection loss, restarts, timeouts ---------------------------------------------------------------

KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = %s AND pid <> pg_backend_pid()"
)


def kill_backends(dsn: str, application: str, *, wait: bool = True) -> int:
    """Terminate the sessions of one application (never anyone else's) and wait until they are gone."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True  # pg_stat_activity is a snapshot for the length of a transaction
    with conn.cursor() as cur:
        cur.execute(KILL, (application,))
        killed = cur.fetchone()[0]
        deadline = time.monotonic() + 5
        while wait and time.monotonic() < deadline:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
            )
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.01)
    conn.close()
    return killed


class KillerConfig(ComponentConfig):
    dsn: str
    application: str


class KillerBolt(Bolt):
    """Passes events on after terminating the warehouse's pooled connections (between two batches)."""

    Config = KillerConfig
    kills: ClassVar[list[int]] = []

    def process(self, batch):
        KillerBolt.kills.append(kill_backends(self.config.dsn, self.config.application))
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
        return out


def faulty_engine(
    url: str,
    pg_url: str,
    table: str,
    *,
    bolts: list | None = None,
    sink: dict | None = None,
    resource: dict | None = None,
    attempts: int = 5,
    kind: str = "driver",
) -> tuple[Engine, str]:
    """``kind``: the pool the resource opens on, ``driver`` (psycopg2's, the default for a plain
    URL) or ``sqlalchemy`` (with ``resource`` as its engine options)."""
    application = f"squall-test-{table}"
    if kind == "driver":  # psycopg2's own pool (pg_driver): libpq reads the name from the URL
        url, resource = f"{url}?application_name={application}", {}
    else:  # any engine option keeps the resource on SQLAlchemy
        options = {"connect_args": {"application_name": application}, **(resource or {})}
        resource = {"options": options}
    topo = load_text(
        topology(url, table, bolts=bolts, sink=sink, resource=resource, attempts=attempts)
    )
    engine = Engine(topo.plan, sleep=lambda s: time.sleep(min(s, 0.02)))
    assert isinstance(engine.resources.database("db"), PgEngine) == (kind == "driver")
    return engine, application


def sink_stats(engine: Engine):
    return next(s for s in engine.stats if s.id == "rows")


@pytest.fixture(params=["driver", "sqlalchemy"])
def kind(request) -> str:
    """Outage tests run on both pools a PostgreSQL resource can open on."""
    return request.param


def test_connections_killed_between_batches_are_never_handed_out_again(
    url, pg_url, pg, table, kind
):
    application = f"squall-test-{table}"
    killer = {
        "id": "killer",
        "type": f"{__name__}:KillerBolt",
        "dsn": pg_url,
        "application": application,
    }
    engine, _ = faulty_engine(url, pg_url, table, bolts=[killer], kind=kind)
    KillerBolt.kills.clear()
    with engine:
        for i in range(4):
            result = engine.process(
                records_from([{"kind": f"b{i}-{j}"} for j in range(50)], start=100 * i)
            )
            assert result.ok
    assert KillerBolt.kills[1:] and all(
        k >= 1 for k in KillerBolt.kills[1:]
    )  # each batch killed the pool
    assert (
        sink_stats(engine).retries == 0
    )  # pre-ping replaced each dead connection: no failed write
    assert count(pg, table) == 200


def self_kill_trigger(pg, table: str, times: int) -> None:
    """The next ``times`` INSERT/COPY statements into the table kill their own session mid-statement.

    The counter is a sequence: nextval is not rolled back with the killed transaction.
    """
    pg.drop.extend(
        [
            f'DROP FUNCTION IF EXISTS "{table}_kill"() CASCADE',
            f'DROP SEQUENCE IF EXISTS "{table}_kills"',
        ]
    )
    sql(pg, f'CREATE SEQUENCE "{table}_kills"')
    sql(
        pg,
        f"""CREATE FUNCTION "{table}_kill"() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF nextval('"{table}_kills"') <= {times} THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
                  RETURN NULL;
                END $$""",
    )
    sql(
        pg,
        f'CREATE TRIGGER kill BEFORE INSERT ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION "{table}_kill"()',
    )


@pytest.mark.parametrize("path", ["copy", "merge"])
def test_a_connection_killed_during_the_write_is_retried_without_loss_or_duplicates(
    url, pg_url, pg, table, path, kind
):
    # SQLAlchemy with pre-ping off: only the sink's own invalidation keeps the dead connection
    # out of the pool (the driver's pool always checks; the kill comes mid-write either way).
    engine, _ = faulty_engine(url, pg_url, table, resource={"pool_pre_ping": False}, kind=kind)
    with engine:
        engine.process(records_from([{"kind": f"a{i}"} for i in range(20)]))
        if path == "merge":  # a replay puts the writer on its staging-merge path
            engine.process(records_from([{"kind": f"a{i}"} for i in range(20)]))
        sink = next(c for c in engine.components if isinstance(c, WarehouseSink))
        assert sink.writer._direct is (path == "copy")
        self_kill_trigger(pg, table, times=1)
        result = engine.process(records_from([{"kind": f"b{i}"} for i in range(30)], start=100))
    assert result.ok
    assert (
        sink_stats(engine).retries == 1
    )  # killed once, then a fresh connection at the first retry
    assert sql(pg, f"SELECT nextval('\"{table}_kills\"')") == [(3,)]  # the trigger ran twice
    assert count(pg, table) == 50


def test_random_kills_during_a_run_lose_nothing_and_duplicate_nothing(url, pg_url, pg, table, kind):
    engine, application = faulty_engine(url, pg_url, table, attempts=4, kind=kind)
    payloads = [{"kind": f"e{i}"} for i in range(3_000)]
    records = records_from(payloads)
    # Batches overlap (a redelivery after a crash replays part of what was written).
    batches = [records[i : i + 150] for i in range(0, len(records), 100)]
    stop = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        rng = random.Random(5)
        while not stop.is_set():
            time.sleep(rng.uniform(0.005, 0.03))
            kills.append(kill_backends(pg_url, application, wait=False))

    redelivered = 0

    def deliver(batch) -> None:
        nonlocal redelivered
        while True:  # a failed batch is delivered again, as every source does
            try:
                assert engine.process(batch).ok
                return
            except BatchFailed as exc:
                assert isinstance(exc.cause, TransientError), exc
                redelivered += 1

    with engine:
        engine.process(batches[0])  # open the pool before the killing starts
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            for batch in batches[1:]:
                deliver(batch)
            # Until enough kills have hit a write, replay batches (they add no rows).
            deadline = time.monotonic() + 20
            replay = iter(batches * 10)
            while sink_stats(engine).retries + redelivered < 5 and time.monotonic() < deadline:
                deliver(next(replay))
        finally:
            stop.set()
            thread.join()
    assert sum(kills) >= 1
    assert sink_stats(engine).retries + redelivered >= 5  # kills did hit writes
    assert count(pg, table) == len(payloads)
    assert sql(pg, f'SELECT count(DISTINCT kind) FROM "{table}"') == [(len(payloads),)]


def test_a_statement_timeout_is_a_transient_error_and_the_batch_is_retried(
    url, pg_url, pg, table, caplog, kind
):
    engine, _ = faulty_engine(
        url, pg_url, table, sink={"statement_timeout": 0.2}, attempts=40, kind=kind
    )
    with engine:
        engine.process(records_from([{"kind": "a"}]))
        locker = psycopg2.connect(pg_url)
        with locker.cursor() as cur:  # hold a lock that blocks inserts until the timer releases it
            cur.execute(f'LOCK TABLE "{table}" IN SHARE MODE')
        timer = threading.Timer(1.0, locker.rollback)
        timer.start()
        try:
            with caplog.at_level("WARNING", logger="squall.engine"):
                result = engine.process(records_from([{"kind": "b"}, {"kind": "c"}], start=10))
        finally:
            timer.join()
            locker.close()
    assert result.ok
    assert sink_stats(engine).retries >= 1
    assert "canceling statement due to statement timeout (SQLSTATE 57014)" in caplog.text
    assert count(pg, table) == 3


def test_real_driver_errors_map_to_transient_or_permanent(pg_url):
    from squall.topology.sql import as_squall_error, is_disconnect

    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as missing:
            cur.execute("SELECT * FROM squall_no_such_table")
        assert isinstance(as_squall_error(missing.value, "w"), SinkError)  # 42P01
        conn.rollback()
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as cancelled:
            cur.execute("SET LOCAL statement_timeout = 50; SELECT pg_sleep(5)")
        assert isinstance(as_squall_error(cancelled.value, "w"), TransientError)  # 57014
        assert not is_disconnect(cancelled.value, conn)
        conn.rollback()
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as killed:
            cur.execute("SELECT pg_terminate_backend(pg_backend_pid()); SELECT pg_sleep(5)")
        assert isinstance(as_squall_error(killed.value, "w"), TransientError)
        assert is_disconnect(killed.value, conn)
    finally:
        conn.close()
