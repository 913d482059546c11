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
from typing import Any

import psycopg2
import pytest

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.errors import RecordError, SinkError, TransientError
from squall.testing import records_from
from squall.topology.driver_engine import DriverEngine
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.pg_driver import PgEngine, engine_for
from squall.topology.pg_url import connect_args
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
    db = engine_for(url, {}, 5, pool_size)
    assert isinstance(db, PgEngine)
    return db


# -- which engine, and the URL read as SQLAlchemy reads it ----------------------------------------

#: URLs whose reading differs between libpq and SQLAlchemy, or that SQLAlchemy refuses.
URLS = [
    "postgresql://u:p%40ss@h/db",
    "postgresql://u:s3cret%zz@h/db",  # a bad escape: libpq refuses it, quoting the password
    "postgresql://u:p%25@h/db",
    "postgresql://u:p%@h/db",
    "postgresql://u:p+w@h/db",
    "postgresql://u:p@ss@h/db",
    "postgresql://u:p:w@h/db",
    "postgresql://u:p?w@h/db",
    "postgresql://u:p#w@h/db",
    "postgresql://u%40x:pw@h/db",
    "postgresql://u@%2Fvar%2Frun%2Fpostgresql/db",
    "postgresql://u@/db?host=/var/run/postgresql",
    "postgresql://u@[::1]:5432/db",
    "postgresql://u@[::1]/db",
    "postgresql://u@h",
    "postgresql://u@h/",
    "postgresql://h:5432",
    "postgresql://",
    "postgresql:///db",
    "postgresql://u@h/db?sslmode=require",
    "postgresql://u@h/db?sslmode=require&sslmode=disable",
    "postgresql://u@/db?host=HostA:5432&host=HostB:5433",
    "postgresql://u@/db?host=HostA,HostB&port=5432,5433",
    "postgresql://u@h/my%20db",
    "postgresql://u@h/db?application_name=a%20b",
    "postgresql://u@h/db?application_name=a+b",  # a space, as SQLAlchemy reads it
    "postgresql://u@h/db?options=-c+statement_timeout%3D5000",
    "postgresql://u@h:0/db",
    "postgresql://u@h:/db",  # an empty port: refused
    "postgresql://u@h:x/db",
    "postgresql://u@h/db?connect_timeout=30",
    "postgresql://u@h/db?password=secret",
    "postgresql://u:@h/db",
    "postgresql://:pw@h/db",
    "postgresql://u@h/db#frag",
    "postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
    "postgresql+psycopg2://u@h/db",
    "POSTGRESQL://u@h/db",
    "postgresql:/db",  # refused
]


def sqlalchemy_reading(url: str):
    """SQLAlchemy's psycopg2 keywords for ``url``, or ValueError when it refuses the URL."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

    try:
        parsed = sa.make_url(url).set(drivername="postgresql+psycopg2")
        _, kwargs = PGDialect_psycopg2().create_connect_args(parsed)
    except (sa.exc.ArgumentError, ValueError):
        return ValueError
    return kwargs


@pytest.mark.parametrize("url", URLS)
def test_a_url_is_read_as_sqlalchemy_reads_it_or_left_to_sqlalchemy(url):
    try:
        ours = connect_args(url)
    except ValueError as exc:
        assert "secret" not in str(exc) and "s3cret" not in str(exc)
        ours = ValueError
    if ours is None:  # left to SQLAlchemy: multi-host forms, repeated keys, another scheme
        assert engine_for(url, {}, 5, 5) is None
        return
    assert ours == sqlalchemy_reading(url)


def test_a_bad_percent_escape_in_the_password_connects_as_on_sqlalchemy(schema):
    """libpq would refuse ``%zz`` and quote the password in its error; read as SQLAlchemy reads
    it, the password is the literal text, and the server's refusal names no password."""
    _, url = schema
    bad = url.replace("postgres@", "postgres:s3cret%zz@", 1)
    db = engine(bad)
    with db.connect() as conn:  # trust authentication: any password is accepted
        assert conn.exec_driver_sql("select 1").scalar() == 1
    db.dispose()


@pytest.mark.parametrize(
    ("url", "options", "plain"),
    [
        ("postgresql://u@h/db", {}, True),
        ("postgresql+psycopg2://u:p@h:5433/db?sslmode=require", {}, True),
        ("postgresql://u@h/db", {"pool_recycle": 300}, False),  # options only SQLAlchemy knows
        ("postgresql+pg8000://u@h/db", {}, False),  # another driver
        ("postgresql://u@/db?host=a:1&host=b:2", {}, False),  # multi-host: SQLAlchemy's reading
    ],
)
def test_which_urls_open_on_the_plain_driver(url, options, plain):
    assert isinstance(engine_for(url, options, 5, 5), PgEngine) == plain


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


def test_at_most_pool_size_plus_ten_connections_are_open_at_once(schema):
    """As SQLAlchemy's QueuePool: beyond pool_size + 10 in use, a checkout waits, then fails as
    transient (the server's max_connections is never reached by one process's threads)."""
    _, url = schema
    db = engine(url, pool_size=1)
    db.pool_timeout = 0.1
    held = [db.connect() for _ in range(11)]
    with pytest.raises(TransientError, match="all 1 \\+ 10 connections in use"):
        db.connect()
    held.pop().close()
    with db.connect() as conn:  # a returned place is taken again
        assert conn.exec_driver_sql("select 1").scalar() == 1
    for conn in held:
        conn.invalidate()  # an invalidated connection gives its place back too
        conn.close()
    again = [db.connect() for _ in range(11)]
    for conn in again:
        conn.close()
    db.dispose()


# -- a component written to the documented API ----------------------------------------------------


class CountConfig(ComponentConfig):
    resource: str
    table: str


class CountBolt(Bolt):
    """A user's stateful bolt: writes its count in the batch's transaction with SQLAlchemy Core,
    as ``Bolt.commit_state`` documents (it does not set ``driver_sql``)."""

    Config = CountConfig
    stateful = True
    staged = 0

    def process(self, batch):
        self.staged += len(batch)
        out = Output(self.id)
        out.emit_all(list(batch))
        return out

    def state_resource(self):
        return self.config.resource

    def commit_state(self, covered, connection: Any = None) -> None:
        import sqlalchemy as sa

        connection.execute(
            sa.text(f'insert into "{self.config.table}" (n) values (:n)'), {"n": self.staged}
        )

    def state_committed(self):
        self.staged = 0

    def discard_state(self):
        self.staged = 0


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_stateful_bolt_without_driver_sql_gets_a_sqlalchemy_connection(
    database, schema, tmp_path
):
    """Beside the warehouse sink (driver SQL) on one database, a bolt that does not say it
    writes driver SQL only gets SQLAlchemy's connection for the batch's one transaction."""
    _, pg = schema
    url = pg if database == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite'}"
    doc = {
        "name": "custom",
        "resources": {"db": {"url": url}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {"id": "count", "type": f"{__name__}:CountBolt", "resource": "db", "table": "counts"},
        ],
        "sinks": [
            {
                "id": "rows",
                "type": "warehouse",
                "resource": "db",
                "table": "rows",
                "columns": {"k": "k"},
            }
        ],
    }
    engine = Engine(load_text(json.dumps(doc)).plan)
    with engine:
        with engine.resources.database("db").begin() as conn:
            conn.exec_driver_sql('create table "counts" (n int)')
        assert not engine._tx_driver_sql
        result = engine.process(records_from([{"k": f"x{i}"} for i in range(5)]))
        assert result.ok
        with engine.resources.database("db").connect() as conn:
            assert conn.exec_driver_sql('select n from "counts"').fetchall() == [(5,)]
            assert conn.exec_driver_sql('select count(*) from "rows"').scalar() == 5


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("postgresql://u:s3cret@h:/db", "the port is not a number"),
        ("postgresql://u:s3cret@h:5x/db", "not a valid URL"),
        ("postgresql:/db", "is not a URL: write scheme://"),  # no "//": refused before SQLAlchemy
        ("postgresql://u:s3cret%zz@h/db", None),  # read as SQLAlchemy reads it
        ("postgresql://u:8/s3cret@h/db", None),  # a '/' in the password is not a port
        ("postgresql://u:12/s3cret@h:x/db", "the port is not a number"),
        ("postgresql://u@h: 5432/db", None),  # int() reads it, as SQLAlchemy does
        ("postgresql://u:s3cret@h:543200/db", "the port is not in 0-65535"),  # libpq's refusal
        ("postgresql://u@/db?host=a:1&host=b:2", None),
    ],
)
def test_postgresql_urls_are_checked_at_load_as_sqlalchemy_checks_them(url, refused):
    from squall.topology.resource_config import check_url

    if refused is None:
        check_url(url)
        return
    with pytest.raises(ValueError, match=refused) as exc:
        check_url(url)
    assert "s3cret" not in str(exc.value)


def test_the_plain_engine_never_shows_a_password(schema):
    """Its repr, the run lock's messages and the pool's are built from the parsed keywords: a
    password urlsplit would read as a port (``8/…``) is masked too."""
    from squall.deploy.lock import _advisory
    from squall.errors import SquallError

    _, url = schema
    leaky = url.replace("postgres@", "postgres:8/Zq-s3cret@", 1)
    db = engine(leaky)
    assert "s3cret" not in repr(db) and "***" in repr(db)
    lock = _advisory("leak-check", db, leaky)
    try:
        with pytest.raises(SquallError) as again:
            _advisory("leak-check", engine(leaky), leaky)
        assert "already running" in str(again.value) and "s3cret" not in str(again.value)
        assert "s3cret" not in lock.where
    finally:
        lock.release()
    db.dispose()


def test_a_connection_dropped_without_close_gives_its_place_back(schema):
    """As SQLAlchemy's pool takes back a garbage-collected connection: without it, pool_size + 10
    dropped connections would block every later checkout."""
    import gc

    _, url = schema
    db = engine(url, pool_size=1)
    db.pool_timeout = 0.1
    for _ in range(30):  # more than the 11 places
        db.connect().exec_driver_sql("select 1")  # never closed
    gc.collect()
    held = [db.connect() for _ in range(11)]  # every place is free again
    for conn in held:
        conn.close()
    assert len(db._idle) == 1  # the dropped ones were closed, not pooled
    db.dispose()


# -- tables made by processes starting together ------------------------------------------------


@pytest.mark.parametrize("second_by", ["driver", "sqlalchemy", "sqlalchemy_table"])
def test_a_table_two_processes_create_at_once_is_created_once(schema, second_by):
    """Two processes starting together on a new database (two `squall run` of one dedupe store,
    Lambda shards in parallel) both find no table; ``IF NOT EXISTS`` alone let the later one
    fail with a unique violation (23505 on ``pg_type``) once the first committed, and its batch
    failed. Now the later waits for the first and finds the table."""
    from squall.bolts.dedupe_store import SqlKeys
    from squall.topology import driver_engine

    _, url = schema
    db = engine(url)
    table = f"keys_{uuid.uuid4().hex[:8]}"
    keys = SqlKeys(db, table)
    errors: list[BaseException] = []

    def second() -> None:
        import sqlalchemy as sa

        from squall.topology.sql import create_table

        # (psycopg2 named: SQLAlchemy 2.1 defaults to psycopg 3)
        sa_url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        try:
            if second_by == "driver":
                SqlKeys(db, table).load(["k"], 0)  # creates the table on first use
            elif second_by == "sqlalchemy":
                SqlKeys(sa.create_engine(sa_url), table).load(["k"], 0)
            else:  # (the SQL checkpoint's and the warehouse's way)
                meta = sa.MetaData()
                t = sa.Table(table, meta, sa.Column("key", sa.String(32), primary_key=True))
                create_table(sa.create_engine(sa_url), t)
        except BaseException as exc:  # (reported by the test's thread)
            errors.append(exc)

    with db.begin() as conn:  # the first process: its table made, not yet committed
        driver_engine.lock_ddl(conn, "postgresql", table)
        col = driver_engine.Column
        columns = (
            col("key", "VARCHAR(32)", primary_key=True),
            col("position", "VARCHAR(32)", nullable=False),
            col("seen_ms", "BIGINT", nullable=False, index=True),
        )
        conn.exec_driver_sql(driver_engine.create_table_sql(table, columns)[0])
        thread = threading.Thread(target=second)
        thread.start()
        waiting = psycopg2.connect(url)
        waiting.autocommit = True
        with waiting.cursor() as cur:
            for _ in range(10_000):  # until the second waits for a lock (bounded, no timing)
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s",
                    (f"%{table}%",),
                )
                if cur.fetchone()[0]:
                    break
                thread.join(0.01)
            else:
                pytest.fail(f"the second process never waited for the first: {errors}")
        waiting.close()
    thread.join()
    assert errors == []
    assert keys.load(["k"], 0) == {}
    db.dispose()
