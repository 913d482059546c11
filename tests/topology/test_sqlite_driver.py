"""SQLite files on the plain sqlite3 driver: same tables, same transactions, same errors as on
SQLAlchemy, and no SQLAlchemy import where no component needs it (real files, no fakes)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from squall.errors import RecordError, SinkError, TransientError
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources
from squall.topology.sql import as_squall_error, is_transient, store_errors, transaction
from squall.topology.sqlite_driver import SqliteEngine, plain_path

ROOT = Path(__file__).resolve().parents[2]


def schema(db: Path, table: str) -> dict:
    """What a table is to SQLite: columns (name, type, not null, default, key position) and
    indexes (name, unique, columns)."""
    with sqlite3.connect(db) as conn:
        columns = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        indexes = {}
        for _, name, unique, origin, _ in conn.execute(f'PRAGMA index_list("{table}")'):
            cols = [c[2] for c in conn.execute(f'PRAGMA index_info("{name}")')]
            # a primary key's automatic index is named by SQLite itself
            shown = name if origin == "c" else f"<{origin}>"
            indexes[shown] = (unique, cols)
    return {"columns": columns, "indexes": indexes}


def resources(tmp_path: Path, **urls: str) -> Resources:
    return Resources({k: ResourceConfig(url=v) for k, v in urls.items()}, base_dir=tmp_path)


# -- which engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "plain"),
    [
        ("sqlite:///out/x.db", {}, "out/x.db"),
        ("sqlite:////abs/x.db", {}, "/abs/x.db"),
        ("sqlite+pysqlite:///x.db", {}, "x.db"),
        ("sqlite:///x.db?timeout=3", {}, None),  # a query string: SQLAlchemy reads it
        ("sqlite:///:memory:", {}, None),  # one connection per thread: SQLAlchemy's pool
        ("sqlite://", {}, None),
        ("sqlite:///x.db", {"echo": True}, None),  # options only SQLAlchemy knows
        ("sqlite:///x%20y.db", {}, None),
        ("postgresql://u@h/db", {}, None),
    ],
)
def test_which_urls_open_on_the_plain_driver(url, options, plain):
    assert plain_path(url, options) == plain


def test_database_is_plain_until_a_component_asks_for_sqlalchemy(tmp_path: Path):
    res = resources(tmp_path, warehouse="sqlite:///w.db", state="sqlite:///w.db")
    plain = res.database("warehouse")
    assert isinstance(plain, SqliteEngine)
    assert plain.path == str(tmp_path / "w.db")  # relative to the topology, as SQLAlchemy's
    assert res.database("state") is plain  # same database, same settings: one engine
    core = res.sql("state")
    assert not isinstance(core, SqliteEngine)
    # from now on every driver-SQL user of that database gets SQLAlchemy's engine, so the batch's
    # transaction runs on a connection the SQLAlchemy component can use too
    assert res.database("warehouse") is core is res.sql("warehouse")
    with plain.begin() as conn:  # the plain engine handed out before keeps working
        conn.exec_driver_sql("create table t (x int)")
    res.close()
    assert plain._idle == []  # closed with the others


def test_other_databases_get_sqlalchemy(tmp_path: Path):
    res = resources(tmp_path, mem="sqlite:///:memory:")
    assert not isinstance(res.database("mem"), SqliteEngine)
    res.close()


# -- transactions ---------------------------------------------------------------------------------


def test_begin_commits_and_rolls_back_and_connect_leaves_nothing_open(tmp_path: Path):
    engine = SqliteEngine(str(tmp_path / "t.db"), timeout=5)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x int primary key)")
        conn.exec_driver_sql("insert into t values (?)", (1,))
        assert conn.exec_driver_sql("insert into t values (?)", [(2,), (3,)]).rowcount == 2
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.exec_driver_sql("insert into t values (?)", (4,))
        1 / 0  # noqa: B018
    with engine.connect() as conn:
        conn.exec_driver_sql("insert into t values (?)", (5,))  # never committed
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("select x from t order by x")] == [1, 2, 3]
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 3
    # WAL with a full fsync per commit, as the SQLAlchemy engine squall creates
    with engine.connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("pragma wal_autocheckpoint").scalar() == 10_000
    engine.dispose()


def test_connections_are_pooled_and_shared_across_threads(tmp_path: Path):
    engine = SqliteEngine(str(tmp_path / "t.db"), timeout=5)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x int)")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with engine.begin() as c:
                c.exec_driver_sql("insert into t values (?)", (i,))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 8
    assert 1 <= len(engine._idle) <= 5  # kept for reuse, never more than the pool's size
    idle = list(engine._idle)
    with engine.connect() as conn:
        assert conn.raw is idle[-1]  # a returned connection is used again, not a new one
    engine.dispose()
    assert engine._idle == []


def test_a_sqlalchemy_statement_on_a_plain_connection_is_refused_with_the_reason(tmp_path: Path):
    engine = SqliteEngine(str(tmp_path / "t.db"), timeout=5)
    with engine.connect() as conn, pytest.raises(TypeError, match="Resources.sql"):
        conn.execute("select 1")
    engine.dispose()


# -- errors ---------------------------------------------------------------------------------------


def test_driver_errors_map_as_sqlalchemy_wrapped_ones_do(tmp_path: Path):
    db = str(tmp_path / "t.db")
    engine = SqliteEngine(db, timeout=5)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x int primary key)")
        conn.exec_driver_sql("insert into t values (1)")
    with pytest.raises(sqlite3.IntegrityError) as dup, transaction(engine) as conn:
        conn.exec_driver_sql("insert into t values (1)")
    assert isinstance(as_squall_error(dup.value, "w"), RecordError)
    with pytest.raises(sqlite3.OperationalError) as missing, engine.begin() as conn:
        conn.exec_driver_sql("insert into nowhere values (1)")
    assert not is_transient(missing.value)
    assert isinstance(as_squall_error(missing.value, "w"), SinkError)
    # another connection holds the write lock: busy, which may pass
    locked = SqliteEngine(db, timeout=0)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin exclusive")
    try:
        with pytest.raises(sqlite3.OperationalError) as busy, locked.begin() as conn:
            conn.exec_driver_sql("insert into t values (2)")
        with pytest.raises(TransientError), store_errors("state store write"):
            with locked.begin() as conn:
                conn.exec_driver_sql("insert into t values (3)")
    finally:
        holder.execute("rollback")
        holder.close()
    assert is_transient(busy.value)
    assert isinstance(as_squall_error(busy.value, "w"), TransientError)
    engine.dispose()
    locked.dispose()


# -- tables: the same as SQLAlchemy's -------------------------------------------------------------

WAREHOUSE = {
    "kind": {"path": "kind", "nullable": False, "index": True},
    "n": {"path": "n", "type": "integer"},
    "big": {"path": "big", "type": "bigint", "index": True},
    "price": {"path": "price", "type": "float"},
    "ok": {"path": "ok", "type": "boolean"},
    "at": {"path": "at", "type": "timestamp"},
    "day": {"path": "day", "type": "date"},
    "tags": {"path": "tags", "type": "json"},
}


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_warehouse_tables_are_created_as_sqlalchemy_creates_them(tmp_path: Path, mode: str):
    from squall.component import ComponentContext
    from squall.sinks.warehouse import WarehouseSink

    extra = {"mode": "upsert", "key": ["kind", "day"]} if mode == "upsert" else {}
    made = {}
    for how in ("plain", "sqlalchemy"):
        db = tmp_path / f"{how}.db"
        res = resources(tmp_path, db=f"sqlite:///{db}")
        if how == "sqlalchemy":
            res.sql("db")  # another component asked for SQLAlchemy first
        config = WarehouseSink.Config(
            id="rows", type="warehouse", resource="db", table="events", columns=WAREHOUSE, **extra
        )
        sink = WarehouseSink(config, ComponentContext("t"))
        sink.open(res)
        assert isinstance(sink.engine, SqliteEngine) == (how == "plain")
        res.close()
        made[how] = schema(db, "events")
    assert made["plain"] == made["sqlalchemy"]
    assert made["plain"]["indexes"].keys() >= {"ix_events_kind", "ix_events_big"}


def test_a_column_added_to_the_yaml_is_added_with_sqlalchemys_type(tmp_path: Path):
    from squall.component import ComponentContext
    from squall.sinks.warehouse import WarehouseSink

    made = {}
    for how in ("plain", "sqlalchemy"):
        db = tmp_path / f"{how}.db"
        for columns in ({"kind": WAREHOUSE["kind"]}, WAREHOUSE):
            res = resources(tmp_path, db=f"sqlite:///{db}")
            if how == "sqlalchemy":
                res.sql("db")
            config = WarehouseSink.Config(
                id="rows", type="warehouse", resource="db", table="events", columns=columns
            )
            WarehouseSink(config, ComponentContext("t")).open(res)
            res.close()
        made[how] = schema(db, "events")
    assert made["plain"] == made["sqlalchemy"]
    assert [c[1] for c in made["plain"]["columns"]] == ["event_id", *WAREHOUSE]


def test_upsert_refuses_a_table_without_a_key_on_the_plain_driver(tmp_path: Path):
    from squall.component import ComponentContext
    from squall.sinks.warehouse import WarehouseSink

    db = tmp_path / "w.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table events (kind text, n integer)")
    res = resources(tmp_path, db=f"sqlite:///{db}")
    config = WarehouseSink.Config(
        id="rows",
        type="warehouse",
        resource="db",
        table="events",
        mode="upsert",
        key=["kind"],
        columns={"kind": "kind", "n": {"path": "n", "type": "integer"}},
    )
    with pytest.raises(SinkError, match="no primary key or unique index on exactly"):
        WarehouseSink(config, ComponentContext("t")).open(res)
    with sqlite3.connect(db) as conn:
        conn.execute("create unique index events_kind on events (kind)")
    WarehouseSink(config, ComponentContext("t")).open(res)  # a unique index is a key
    res.close()


def test_the_subscription_table_is_created_as_sqlalchemy_creates_it(tmp_path: Path):
    from squall.enrichment.stores import SqlStateStore

    made = {}
    for how in ("plain", "sqlalchemy"):
        db = tmp_path / f"{how}.db"
        res = resources(tmp_path, db=f"sqlite:///{db}")
        engine = res.database("db") if how == "plain" else res.sql("db")
        assert isinstance(engine, SqliteEngine) == (how == "plain")
        SqlStateStore(engine, "subs").load(["k"])  # creates the table on first use
        res.close()
        made[how] = schema(db, "subs")
    assert made["plain"] == made["sqlalchemy"]


# -- a topology mixing both ------------------------------------------------------------------------

MIXED = """
name: mixed
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subs, type: subscription, store: db, key: device_token}}
  - id: per_minute
    type: window
    store: db
    key: [event_type]
    time_field: timestamp
    size: 1m
    aggregates: {{n: {{fn: count}}}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{t: event_type}}}}
  - id: counts
    type: warehouse
    resource: db
    table: counts
    mode: upsert
    key: [t, start]
    columns: {{t: event_type, start: window_start, n: {{path: n, type: integer}}}}
streams:
  - {{from: subs, to: per_minute}}
  - {{from: subs, to: rows}}
  - {{from: per_minute, to: counts}}
"""


def test_a_sqlalchemy_component_beside_driver_sql_ones_shares_the_batch_transaction(
    tmp_path: Path,
):
    """The window store builds SQLAlchemy statements; the warehouse and the subscription store
    write driver SQL. On one SQLite file all of them commit in one transaction — on SQLAlchemy's
    connection, whichever component opened the database first."""
    from squall.testing import records_from
    from squall.topology.executor import Engine
    from squall.topology.loader import load_text

    db = tmp_path / "m.db"
    topo = load_text(MIXED.format(db=db))
    engine = Engine(topo.plan, resources=Resources(topo.resources, base_dir=tmp_path))
    events = [
        {"event_type": "register", "device_token": f"d{i}", "timestamp": 1_764_000_000_000 + i}
        for i in range(5)
    ]
    with engine:
        assert not isinstance(engine.resources.database("db"), SqliteEngine)
        assert len(engine._tx_states) == 2 and len(engine._tx_sinks) == 2
        engine.process(records_from(events))
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from events").fetchone() == (5,)
        assert conn.execute("select count(*) from squall_subscriptions").fetchone() == (5,)
        assert conn.execute("select count(*) from squall_windows_log").fetchone()[0] >= 1


# -- no SQLAlchemy where nothing needs it ----------------------------------------------------------

CHILD = """
import json, os, sys
from squall.deploy.lambda_consumer import make_handler
make_handler(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy")))
"""


def test_the_example_consumer_starts_without_importing_sqlalchemy(tmp_path: Path):
    """The packaged example's init (Lambda): its SQLite warehouse and subscription state run on
    the plain driver, so SQLAlchemy (~100 ms of imports) is never loaded."""
    env = {
        **os.environ,
        "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "STATE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "AWS_REGION": "us-east-1",
    }
    topology = ROOT / "examples" / "pistats" / "topology.yaml"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(topology)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_a_sqlite_resource_keeps_at_most_its_pool_size_of_idle_connections(tmp_path: Path):
    """``pool_size`` counts for SQLite files too, on the plain driver and on SQLAlchemy."""
    res = Resources({"db": ResourceConfig(url=f"sqlite:///{tmp_path / 'p.db'}", pool_size=2)})
    try:
        engine = res.database("db")
        held = [engine.connect() for _ in range(4)]
        for c in held:
            c.__enter__()
        for c in held:
            c.__exit__(None, None, None)
        assert len(engine._idle) == 2
        assert res.sql("db").pool.size() == 2
    finally:
        res.close()


def test_both_engines_open_a_file_with_the_same_settings(tmp_path: Path):
    """WAL, a full fsync of the log per commit, a checkpoint every 10,000 pages — on the plain
    driver and on SQLAlchemy's engine alike."""
    res = resources(tmp_path, plain="sqlite:///p.db", core="sqlite:///c.db")
    plain, core = res.database("plain"), res.sql("core")
    with plain.connect() as a, core.connect() as b:
        for pragma, value in (
            ("journal_mode", "wal"),
            ("synchronous", 2),
            ("wal_autocheckpoint", 10_000),
        ):
            assert a.exec_driver_sql(f"pragma {pragma}").scalar() == value
            assert b.exec_driver_sql(f"pragma {pragma}").scalar() == value
    res.close()


def test_none_and_bools_are_bound_from_the_adapter_registry_with_the_same_values(tmp_path):
    """``sqlite3`` "adapts" None and bools before binding them; without an adapter registered for
    their type it formats and clears an AttributeError per parameter (``__adapt__`` of its
    ``PrepareProtocol``: ~2.5k instructions, 8.8k an event of the example). The driver registers
    adapters giving what it binds anyway: NULL, and a bool's integer."""
    engine = SqliteEngine(str(tmp_path / "x.db"), 1.0)
    for type_ in (type(None), bool):
        assert (type_, sqlite3.PrepareProtocol) in sqlite3.adapters
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a, b, c, d)")
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?, ?, ?)", (None, True, False, 2))
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?, ?, ?)", [(None, False, True, 3)])
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT a, b, c, typeof(a), typeof(b), typeof(c) FROM t ORDER BY d"
        ).fetchall()
    assert rows == [
        (None, 1, 0, "null", "integer", "integer"),
        (None, 0, 1, "null", "integer", "integer"),
    ]
    engine.dispose()


def test_an_applications_own_adapter_for_bools_is_kept():
    """Registered before squall's driver is imported, an application's adapter stays in use."""
    code = (
        "import sqlite3\n"
        "sqlite3.register_adapter(bool, lambda b: 'yes' if b else 'no')\n"
        "import squall.topology.sqlite_driver\n"
        "db = sqlite3.connect(':memory:')\n"
        "print(db.execute('SELECT ?, ?', (True, None)).fetchone())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('yes', None)"
