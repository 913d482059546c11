"""PostgreSQL on the plain psycopg2 driver: same tables, transactions and errors as on SQLAlchemy,
and no SQLAlchemy import where no component needs it (the real server; outages in
tests/sinks/test_warehouse_postgres.py run on both pools)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg2
import pytest

from squall.errors import RecordError, SinkError, TransientError
from squall.topology.driver_engine import DriverEngine
from squall.topology.pg_driver import PgEngine, plain_dsn
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources
from squall.topology.sql import as_squall_error, store_errors, transaction
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(pg_url: str):
    """A schema of its own; ``url`` puts it first on the search path (libpq's ``options``)."""
    name = f"s_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in pg_url else "?"
    yield name, f"{pg_url}{sep}options=-csearch_path%3D{name}"
    with admin.cursor() as cur:
        cur.execute(f'DROP SCHEMA "{name}" CASCADE')
    admin.close()


def engine(url: str, pool_size: int = 5) -> PgEngine:
    dsn = plain_dsn(url, {})
    assert dsn is not None
    return PgEngine(dsn, 5, pool_size, url)


# -- which engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "dsn"),
    [
        ("postgresql://u@h/db", {}, "postgresql://u@h/db"),
        (
            "postgresql+psycopg2://u:p@h:5433/db?sslmode=require",
            {},
            "postgresql://u:p@h:5433/db?sslmode=require",
        ),
        ("POSTGRESQL://u@h/db", {}, "postgresql://u@h/db"),
        ("postgresql://u@h/db", {"pool_recycle": 300}, None),  # options only SQLAlchemy knows
        ("postgresql+pg8000://u@h/db", {}, None),  # another driver
        ("sqlite:///x.db", {}, None),
    ],
)
def test_which_urls_open_on_the_plain_driver(url, options, dsn):
    assert plain_dsn(url, options) == dsn


def test_database_is_plain_until_a_component_asks_for_sqlalchemy(schema):
    _, url = schema
    res = Resources({"w": ResourceConfig(url=url), "s": ResourceConfig(url=url)})
    plain = res.database("w")
    assert isinstance(plain, PgEngine)
    assert res.database("s") is plain  # same database, same settings: one engine
    core = res.sql("s")
    assert not isinstance(core, DriverEngine)
    # from now on every driver-SQL user of that database gets SQLAlchemy's engine
    assert res.database("w") is core is res.sql("w")
    with plain.begin() as conn:  # the plain engine handed out before keeps working
        conn.exec_driver_sql("create table t (x int)")
    res.close()
    assert plain._idle == []  # closed with the others


# -- transactions ---------------------------------------------------------------------------------


def test_begin_commits_and_rolls_back_and_connect_leaves_nothing_open(schema):
    _, url = schema
    db = engine(url)
    with db.begin() as conn:
        conn.exec_driver_sql("create table t (x int primary key)")
        conn.exec_driver_sql("insert into t values (%s)", (1,))
        assert conn.exec_driver_sql("insert into t values (%s)", [(2,), (3,)]).rowcount == 2
    with pytest.raises(ZeroDivisionError), db.begin() as conn:
        conn.exec_driver_sql("insert into t values (%s)", (4,))
        1 / 0  # noqa: B018
    with db.connect() as conn:
        conn.exec_driver_sql("insert into t values (%s)", (5,))  # never committed
    with db.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("select x from t order by x")] == [1, 2, 3]
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 3
        # no parameters: the statement is sent as written (a % needs no escaping)
        assert conn.exec_driver_sql("select '100%'").scalar() == "100%"
        in_tx = psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        assert conn.raw.get_transaction_status() == in_tx  # the driver began one
    with db.connect() as conn:
        # returned, it was rolled back; the liveness check at checkout opened no transaction
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        assert conn.raw.get_transaction_status() == idle
    db.dispose()


def test_connections_are_pooled_shared_across_threads_and_bounded_by_pool_size(schema):
    _, url = schema
    db = engine(url, pool_size=2)
    with db.begin() as conn:
        conn.exec_driver_sql("create table t (x int)")
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        try:
            with db.begin() as c:
                barrier.wait(5)  # four connections at once
                c.exec_driver_sql("insert into t values (%s)", (i,))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(db._idle) == 2  # the resource's pool_size, whatever was open at once
    idle = list(db._idle)
    with db.connect() as conn:
        assert conn.raw is idle[-1]  # a returned connection is used again
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 4
    db.dispose()
    assert db._idle == [] and all(raw.closed for raw in idle)


def test_an_idle_connection_the_server_dropped_is_replaced_on_checkout(schema, pg_url):
    _, url = schema
    db = engine(url)
    with db.connect() as conn:
        pid = conn.exec_driver_sql("select pg_backend_pid()").scalar()
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("select pg_terminate_backend(%s)", (pid,))
    admin.close()
    with db.connect() as conn:  # the check found it dead: a new session
        assert conn.exec_driver_sql("select pg_backend_pid()").scalar() != pid
    db.dispose()


def test_a_connection_lost_in_a_transaction_is_invalidated_and_the_error_is_transient(schema):
    _, url = schema
    db = engine(url)
    with pytest.raises(psycopg2.OperationalError) as lost, transaction(db) as conn:
        conn.exec_driver_sql("select pg_terminate_backend(pg_backend_pid())")
    assert isinstance(as_squall_error(lost.value, "w"), TransientError)
    assert conn.invalidated and conn.raw.closed
    assert db._idle == []  # never handed out again
    with db.connect() as conn:
        assert conn.exec_driver_sql("select 1").scalar() == 1
    db.dispose()


def test_a_sqlalchemy_statement_on_a_plain_connection_is_refused_with_the_reason(schema):
    _, url = schema
    db = engine(url)
    with db.connect() as conn, pytest.raises(TypeError, match="Resources.sql"):
        conn.execute("select 1")
    db.dispose()


# -- errors ---------------------------------------------------------------------------------------


def test_driver_errors_map_as_sqlalchemy_wrapped_ones_do(schema):
    _, url = schema
    db = engine(url)
    with db.begin() as conn:
        conn.exec_driver_sql("create table t (x int primary key)")
        conn.exec_driver_sql("insert into t values (1)")
    with pytest.raises(psycopg2.IntegrityError) as dup, transaction(db) as conn:
        conn.exec_driver_sql("insert into t values (1)")
    assert isinstance(as_squall_error(dup.value, "w"), RecordError)
    with pytest.raises(psycopg2.Error) as missing, db.begin() as conn:
        conn.exec_driver_sql("insert into nowhere values (1)")
    assert isinstance(as_squall_error(missing.value, "w"), SinkError)
    with pytest.raises(SinkError, match="nowhere"), store_errors("state store read"):
        with db.connect() as conn:
            conn.exec_driver_sql("select * from nowhere")
    db.dispose()
    # nothing listens: the server is down, which may pass
    down = engine(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    with pytest.raises(TransientError, match="state store read"), store_errors("state store read"):
        with down.connect():
            pass


# -- tables ---------------------------------------------------------------------------------------

COLUMNS = """
    SELECT column_name, data_type, character_maximum_length, is_nullable, collation_name,
           column_default
    FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
    ORDER BY ordinal_position"""
KEY = """
    SELECT a.attname FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = %s::regclass AND i.indisprimary"""


def test_the_subscription_table_is_created_as_sqlalchemy_creates_it(schema, pg_url):
    from squall.enrichment.stores import SqlStateStore

    name, url = schema
    res = Resources(
        {"plain": ResourceConfig(url=url), "core": ResourceConfig(url=url, pool_size=4)}
    )
    plain, core = res.database("plain"), res.sql("core")
    assert isinstance(plain, PgEngine) and not isinstance(core, DriverEngine)
    SqlStateStore(plain, "subs_plain").load(["k"])  # creates the table on first use
    SqlStateStore(core, "subs_core").load(["k"])
    res.close()
    admin = psycopg2.connect(pg_url)
    made = {}
    with admin.cursor() as cur:
        for table in ("subs_plain", "subs_core"):
            cur.execute(COLUMNS, (name, table))
            columns = cur.fetchall()
            cur.execute(KEY, (f'"{name}"."{table}"',))
            made[table] = (columns, cur.fetchall())
    admin.close()
    assert made["subs_plain"] == made["subs_core"]
    assert ("version", "text", None, "NO", "C", None) in made["subs_plain"][0]


# -- no SQLAlchemy where nothing needs it ----------------------------------------------------------

CHILD = """
import json, sys
from squall.deploy.lambda_consumer import make_handler
make_handler(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy")))
"""


def test_the_example_consumer_on_postgresql_starts_without_importing_sqlalchemy(schema, tmp_path):
    """The example with its warehouse and subscription state on PostgreSQL: the COPY writer, the
    state store and the batch's transaction run on psycopg2's own pool."""
    name, url = schema
    env = {**os.environ, "WAREHOUSE_URL": url, "STATE_URL": url, "AWS_REGION": "us-east-1"}
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
    tables = psycopg2.connect(url)
    with tables.cursor() as cur:  # created in the schema the URL named
        cur.execute("select tablename from pg_tables where schemaname = %s order by 1", (name,))
        assert [t for (t,) in cur.fetchall()] == ["events"]  # the state table: at first use
    tables.close()
