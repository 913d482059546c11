"""The warehouse sink on SQLite files (real files, no fakes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from squall.testing import MemorySink, records_from, run_topology
from squall.topology.checkpoint import SqlCheckpointStore
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from squall.topology.resources import Resources

YAML = """
name: wh
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns:
      kind: {{path: kind, nullable: false, index: true}}
      n: {{path: n, type: integer}}
      price: {{path: price, type: float}}
      ok: {{path: ok, type: boolean}}
      at: {{path: at, type: timestamp}}
      tags: {{path: tags, type: json}}
      shard: meta.shard_id
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}}}
"""


def payloads():
    return [
        {
            "kind": "click",
            "n": 1,
            "price": 2.5,
            "ok": True,
            "at": "2026-11-03T18:00:00Z",
            "tags": ["a"],
        },
        {"kind": "view", "n": "2", "at": 1_762_192_800_000},  # numeric text, epoch milliseconds
        {"n": 3},  # kind is required
        {"kind": "buy", "n": "three"},  # not an integer
        {"kind": "buy", "at": "yesterday"},  # not a timestamp
    ]


def test_rows_are_typed_and_unconvertible_events_are_dead_lettered(
    tmp_path: Path, unique_name: str
):
    db = tmp_path / "w.db"
    run = run_topology(YAML.format(db=db, tag=unique_name), records_from(payloads()))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 2 + [
        Outcome.DEAD_LETTERED
    ] * 3
    reasons = [ev.failure.reason for ev in MemorySink.stores[unique_name]]
    assert reasons == [
        "column 'kind': required value 'kind' is missing",
        "column 'n': cannot store 'three' from 'n' as integer",
        "column 'at': cannot store 'yesterday' from 'at' as timestamp",
    ]
    rows = (
        sqlite3.connect(db)
        .execute("select kind, n, price, ok, tags, shard from events order by n")
        .fetchall()
    )
    assert rows == [
        ("click", 1, 2.5, 1, '["a"]', "shardId-000000000000"),
        ("view", 2, None, None, None, "shardId-000000000000"),
    ]


def test_replaying_a_batch_adds_no_rows(tmp_path: Path, unique_name: str):
    db = tmp_path / "w.db"
    yaml = YAML.format(db=db, tag=unique_name)
    run_topology(yaml, records_from(payloads()))
    run_topology(yaml, records_from(payloads()))
    run_topology(yaml, records_from(payloads()[:1]))
    assert sqlite3.connect(db).execute("select count(*) from events").fetchone()[0] == 2


def test_a_new_column_in_the_yaml_is_added_to_the_table(tmp_path: Path, unique_name: str):
    db = tmp_path / "w.db"
    run_topology(YAML.format(db=db, tag=unique_name), records_from(payloads()[:1]))
    wider = YAML.format(db=db, tag=unique_name).replace(
        "      shard: meta.shard_id", "      shard: meta.shard_id\n      seq: meta.sequence_number"
    )
    run_topology(wider, records_from(payloads()[:2], start=10))
    cols = [r[1] for r in sqlite3.connect(db).execute("pragma table_info(events)")]
    assert "seq" in cols
    assert sqlite3.connect(db).execute("select seq from events order by seq").fetchall() == [
        (None,),
        ("10",),
        ("11",),
    ]


def test_checkpoint_is_written_in_the_same_transaction_as_the_rows(
    tmp_path: Path, unique_name: str
):
    db = tmp_path / "w.db"
    topo = load_text(
        YAML.format(db=db, tag=unique_name).replace(
            f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}}}\n",
            "",
        )
    )
    resources = Resources(topo.resources)
    store = SqlCheckpointStore(resources.sql("db"), "wh", resource="db")
    from squall.topology.checkpoint import Checkpointer
    from squall.topology.executor import Engine

    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    with engine:
        assert engine.checkpoint_in_transaction
        result = engine.process(records_from(payloads()[:2], start=5))
    assert (
        store.load("test")
        == result.checkpoint
        == {"shardId-000000000000": result.records[-1].position}
    )


def test_sqlite_path_resolves_next_to_the_topology(tmp_path: Path, unique_name: str):
    (tmp_path / "sub").mkdir()
    topo = load_text(YAML.format(db="data/rel.db", tag=unique_name), base_dir=tmp_path / "sub")
    run_topology(topo, records_from(payloads()[:1]))
    assert (tmp_path / "sub" / "data" / "rel.db").exists()


@pytest.mark.parametrize("bad", ["events;drop", "1abc", "a" * 64])
def test_table_names_are_validated(bad: str, tmp_path: Path):
    from squall.errors import TopologyError

    with pytest.raises(TopologyError, match="invalid table name"):
        load_text(
            YAML.format(db=tmp_path / "x.db", tag="x").replace("table: events", f"table: '{bad}'")
        )


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1e500"])
def test_non_finite_floats_are_dead_lettered_not_stored_as_null(
    bad: str, tmp_path: Path, unique_name: str
):
    run = run_topology(
        YAML.format(db=tmp_path / "w.db", tag=unique_name),
        records_from([{"kind": "a", "price": bad}, {"kind": "b", "price": "2.5"}]),
    )
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED, Outcome.COMMITTED]
    assert "as float" in MemorySink.stores[unique_name][0].failure.reason


def test_create_false_refuses_a_missing_table_at_start(tmp_path: Path, unique_name: str):
    from squall.errors import SinkError

    yaml = YAML.format(db=tmp_path / "w.db", tag=unique_name).replace(
        "table: events", "table: events\n    create: false"
    )
    with pytest.raises(SinkError, match="does not exist"):
        run_topology(yaml, records_from(payloads()[:1]))


def test_sqlite_errors_other_than_busy_are_permanent(tmp_path: Path):
    import sqlalchemy as sa

    from squall.topology.sql import is_transient

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sa.exc.OperationalError) as missing:
        with engine.begin() as conn:
            conn.exec_driver_sql("insert into nowhere values (1)")
    assert not is_transient(missing.value)
    # a second connection holding the write lock: busy, which may pass
    locked = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}", connect_args={"timeout": 0})
    with engine.connect() as holder:
        holder.exec_driver_sql("create table t (x int)")
        holder.commit()
        holder.exec_driver_sql("begin exclusive")
        with pytest.raises(sa.exc.OperationalError) as busy:
            with locked.begin() as conn:
                conn.exec_driver_sql("insert into t values (1)")
        holder.rollback()
    assert is_transient(busy.value)


def test_timestamps_are_stored_in_utc_whatever_offset_they_came_with(
    tmp_path: Path, unique_name: str
):
    db = tmp_path / "w.db"
    same_instant = [
        {"kind": "a", "n": 1, "at": "2026-11-03T18:00:00Z"},
        {"kind": "b", "n": 2, "at": "2026-11-03T20:00:00+02:00"},
        {"kind": "c", "n": 3, "at": "2026-11-03T13:00:00-05:00"},
        {"kind": "d", "n": 4, "at": 1_793_728_800},
        {"kind": "e", "n": 5, "at": "2026-11-03T18:00:00"},
    ]  # no offset: UTC
    run = run_topology(YAML.format(db=db, tag=unique_name), records_from(same_instant))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 5
    stored = [at for (at,) in sqlite3.connect(db).execute("select at from events order by n")]
    assert stored == ["2026-11-03 18:00:00+00:00"] * 5
    assert sorted(stored) == stored  # text order is time order only because every value is UTC


def test_processes_starting_together_on_one_database_all_open(tmp_path: Path, monkeypatch):
    """A KCL worker starts one record processor per shard, each opening the warehouse at once: a
    check-then-create lets each see no table (or no new column) and all but one fail. Here the
    table and a column appear between the check and the create, as another process makes them."""
    from squall.component import ComponentContext
    from squall.sinks.warehouse import WarehouseSink
    from squall.sinks.warehouse.writers import SqlWriter
    from squall.topology.resource_config import ResourceConfig

    db = tmp_path / "w.db"
    cfg = dict(id="rows", type="warehouse", resource="db", table="events")
    columns = {"kind": {"path": "kind", "index": True}, "n": {"path": "n", "type": "integer"}}

    def opened(columns):
        resources = Resources({"db": ResourceConfig(url=f"sqlite:///{db}")})
        sink = WarehouseSink(WarehouseSink.Config(**cfg, columns=columns), ComponentContext("t"))
        sink.open(resources)
        return sink

    opened({"kind": columns["kind"]})  # another process made the table, without column n
    # This process's view before it acts: no table, then no column n (the other one adds both).
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect

    monkeypatch.setattr(SQLiteDialect, "has_table", lambda *a, **k: False)
    real_columns = SqlWriter._columns
    seen: list[int] = []

    def racing_columns(self):
        seen.append(1)
        if len(seen) == 1:  # the first look misses n; the other process adds it right then
            with sqlite3.connect(db) as conn:
                conn.execute("ALTER TABLE events ADD COLUMN n BIGINT")
            return {"kind"}
        return real_columns(self)

    monkeypatch.setattr(SqlWriter, "_columns", racing_columns)
    sink = opened(columns)
    with sqlite3.connect(db) as conn:
        assert [row[1] for row in conn.execute("PRAGMA table_info(events)")][-2:] == ["kind", "n"]
    assert sink.writer is not None


def test_rows_hold_booleans_and_nulls_as_values_sqlite3_binds_as_they_are(tmp_path: Path):
    """``sqlite3`` binds a bool or None only after "adapting" it (a tuple built, a registry
    look-up, the adapter's call per value): the SQLite writer's rows carry a boolean column's 1
    and 0 — what it stored for True and False anyway — and a NaN for NULL, which SQLite stores
    as NULL, so every value is bound as it is; the table holds what it held."""
    import math

    from squall.component import ComponentContext
    from squall.event import Event, RecordMeta
    from squall.sinks.warehouse import WarehouseSink
    from squall.topology.resource_config import ResourceConfig

    db = tmp_path / "w.db"
    columns = {"ok": {"path": "ok", "type": "boolean"}, "kind": "kind"}
    cfg = WarehouseSink.Config(
        id="rows", type="warehouse", resource="db", table="events", columns=columns
    )
    sink = WarehouseSink(cfg, ComponentContext("t"))
    sink.open(Resources({"db": ResourceConfig(url=f"sqlite:///{db}")}))
    meta = RecordMeta("s", "shard-0", "1")
    values = [True, False, "yes", 0, None]
    events = [
        Event(b"{}", meta, f"id-{i}", i, {"ok": v, "kind": "k"} if v is not None else {})
        for i, v in enumerate(values)
    ]
    rows = [sink.writer.rows.row(ev) for ev in events]
    ok, kind = sink.writer.rows.names.index("ok"), sink.writer.rows.names.index("kind")
    assert [row[ok] for row in rows[:4]] == [1, 0, 1, 0]
    assert math.isnan(rows[4][ok]) and math.isnan(rows[4][kind])
    assert {type(v) for row in rows for v in row} <= {int, str, float}
    with sink.writer.engine.begin() as conn:
        sink.writer.write(conn, rows)
    sink.close()
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT ok, typeof(ok), kind, typeof(kind) FROM events ORDER BY event_id"
        ).fetchall()
    assert stored == [
        (1, "integer", "k", "text"),
        (0, "integer", "k", "text"),
        (1, "integer", "k", "text"),
        (0, "integer", "k", "text"),
        (None, "null", None, "null"),
    ]


def test_an_applications_own_adapters_still_decide_what_is_stored(tmp_path: Path):
    """With an application's adapters for bools and None registered, the warehouse hands
    sqlite3 the bools and None and those adapters decide what is stored, as before."""
    import subprocess
    import sys

    code = f"""
import sqlite3
sqlite3.register_adapter(bool, lambda b: "yes" if b else "no")
sqlite3.register_adapter(type(None), lambda n: None)
from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.sinks.warehouse import WarehouseSink
from squall.sinks.base import WriteContext
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources

cfg = WarehouseSink.Config(
    id="rows", type="warehouse", resource="db", table="events",
    columns={{"ok": {{"path": "ok", "type": "boolean"}}}},
)
sink = WarehouseSink(cfg, ComponentContext("t"))
sink.open(Resources({{"db": ResourceConfig(url="sqlite:///{tmp_path / "w.db"}")}}))
events = [Event(b"{{}}", RecordMeta("s", "0", str(i)), f"id-{{i}}", i, {{"ok": v}})
          for i, v in enumerate([True, False, None])]
ok = sink.writer.rows.names.index("ok")
print(repr([sink.writer.rows.row(ev)[ok] for ev in events]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[True, False, None]"


def test_an_applications_float_and_int_adapters_get_no_stand_ins(tmp_path: Path):
    """The writer's stand-ins — a NaN for NULL, 1 and 0 for a bool — are bound as they are only
    while no adapter is registered for float or int: an application's float adapter (here
    ``repr``) would turn every NULL into the text 'nan', its int adapter would get the
    booleans. With such adapters the rows hold None and the bools, stored as before."""
    import subprocess
    import sys

    db = tmp_path / "w.db"
    code = f"""
import sqlite3
sqlite3.register_adapter(float, repr)
sqlite3.register_adapter(int, lambda i: i * 10)
from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.sinks.warehouse import WarehouseSink
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources

cfg = WarehouseSink.Config(
    id="rows", type="warehouse", resource="db", table="events",
    columns={{"ok": {{"path": "ok", "type": "boolean"}}, "kind": "kind"}},
)
sink = WarehouseSink(cfg, ComponentContext("t"))
sink.open(Resources({{"db": ResourceConfig(url="sqlite:///{db}")}}))
events = [Event(b"{{}}", RecordMeta("s", "0", str(i)), f"id-{{i}}", i, p)
          for i, p in enumerate([{{"ok": True, "kind": "k"}}, {{}}])]
rows = [sink.writer.rows.row(ev) for ev in events]
with sink.writer.engine.begin() as conn:
    sink.writer.write(conn, rows)
sink.close()
"""
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT ok, typeof(ok), kind, typeof(kind) FROM events ORDER BY event_id"
        ).fetchall()
    assert stored == [(1, "integer", "k", "text"), (None, "null", None, "null")]


def test_adapters_registered_after_the_sink_opened_get_no_stand_ins(tmp_path: Path):
    """The rows' form is read again each batch: an application (or a component opened after
    the sink) that registers a float or bool adapter later still gets None and the bools, and
    a NULL is not handed to its float adapter as a NaN (``repr``: the text 'nan')."""
    import subprocess
    import sys

    db = tmp_path / "w.db"
    code = f"""
import sqlite3
from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.sinks.warehouse import WarehouseSink
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources

cfg = WarehouseSink.Config(
    id="rows", type="warehouse", resource="db", table="events",
    columns={{"ok": {{"path": "ok", "type": "boolean"}}, "kind": "kind"}},
)
sink = WarehouseSink(cfg, ComponentContext("t"))
sink.open(Resources({{"db": ResourceConfig(url="sqlite:///{db}")}}))
sqlite3.register_adapter(float, repr)
sqlite3.register_adapter(bool, lambda b: "yes" if b else "no")
events = [Event(b"{{}}", RecordMeta("s", "0", str(i)), f"id-{{i}}", i, p)
          for i, p in enumerate([{{"ok": True, "kind": "k"}}, {{}}])]
kept, rows = sink.writer.prepare(events, lambda ev, reason: None)
with sink.writer.engine.begin() as conn:
    sink.writer.write(conn, rows)
sink.close()
"""
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT ok, typeof(ok), kind, typeof(kind) FROM events ORDER BY event_id"
        ).fetchall()
    assert stored == [("yes", "text", "k", "text"), (None, "null", None, "null")]
