"""A SQL resource whose `options` make its engine autocommit (`isolation_level: AUTOCOMMIT`,
passed to SQLAlchemy's `create_engine`) must not break squall's one-commit guarantee. Before:
`engine.begin()` opened no transaction there, so every statement committed alone — the
checkpoint store's, the state stores' and a dead-letter table's writes, a SQLite warehouse's rows
(a failure between two statements left the first visible) — the PostgreSQL warehouse failed
every batch ("SAVEPOINT can only be used in transaction blocks") and its `SET LOCAL
statement_timeout` was ignored. squall's own transactions now take one on the connection they
use (its level set back when it returns to the pool)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from squall.errors import BatchFailed
from squall.testing import records_from
from squall.topology.checkpoint import Checkpointer
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from squall.topology.sql import transaction
from tests.sinks import test_warehouse_postgres as wh
from tests.sinks.test_warehouse_postgres import FailingCheckpoints, count, topology

url, pg, table = wh.url, wh.pg, wh.table  # the warehouse tests' fixtures

AUTOCOMMIT = {"options": {"isolation_level": "AUTOCOMMIT"}}


def test_a_transaction_on_an_autocommit_engine_leaves_nothing_when_it_fails(url, pg, table):
    pg.drop.append(f'DROP TABLE IF EXISTS "{table}"')
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE TABLE "{table}" (n int)')
        with pytest.raises(sa.exc.DataError), transaction(engine) as conn:
            conn.exec_driver_sql(f'INSERT INTO "{table}" VALUES (1)')
            conn.exec_driver_sql("SELECT 1 / 0")
        assert count(pg, table) == 0
        with engine.connect() as conn:  # the pooled connection is autocommit again
            assert conn.connection.dbapi_connection.autocommit
    finally:
        engine.dispose()


def checkpoint_engine(url: str, pg: Any, table: str, **resource: Any) -> tuple[Engine, Any]:
    topo = load_text(topology(url, table, attempts=3, resource=resource))
    resources = Resources(topo.resources)
    pg.drop.append(f'DROP TABLE IF EXISTS "{table}_cp"')
    store = FailingCheckpoints(resources.sql("db"), "whpg", resource="db", table=f"{table}_cp")
    engine = Engine(
        topo.plan, resources=resources, checkpointer=Checkpointer(store), sleep=lambda s: None
    )
    engine.open()
    assert engine.checkpoint_in_transaction
    return engine, store


@pytest.mark.parametrize(
    "options",
    [AUTOCOMMIT["options"], {"execution_options": {"isolation_level": "AUTOCOMMIT"}}],
    ids=["isolation_level", "execution_options"],
)
def test_rows_and_checkpoint_commit_together_on_an_autocommit_resource(url, pg, table, options):
    engine, store = checkpoint_engine(url, pg, table, options=options)
    with engine, pytest.raises(BatchFailed, match="division by zero"):
        engine.process(records_from([{"kind": "a"}, {"kind": "b"}]))
    assert count(pg, table) == 0
    assert store.load("test") == {}


def test_the_warehouse_statement_timeout_holds_on_an_autocommit_resource(url, pg, table, caplog):
    import psycopg2

    topo = load_text(
        topology(url, table, attempts=1, sink={"statement_timeout": 0.2}, resource=AUTOCOMMIT)
    )
    engine = Engine(topo.plan, resources=Resources(topo.resources), sleep=lambda s: None)
    with engine:
        engine.process(records_from([{"kind": "a"}]))  # the table exists
        locker = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        try:
            with locker.cursor() as cur:  # holds a lock that blocks inserts until rolled back
                cur.execute("SET idle_in_transaction_session_timeout = 5000")
                cur.execute(f'LOCK TABLE "{table}" IN SHARE MODE')
            with pytest.raises(BatchFailed, match="statement timeout"):
                engine.process(records_from([{"kind": "b"}], start=10))
        finally:
            locker.close()
    assert count(pg, table) == 1


def test_a_checkpoint_saved_alone_on_an_autocommit_resource_is_all_or_nothing(url, pg, table):
    """The checkpoint store's own transaction (no sink shares its database)."""
    from squall.event import Position
    from squall.topology.resource_config import ResourceConfig

    resources = Resources({"db": ResourceConfig(url=url, **AUTOCOMMIT)})
    pg.drop.append(f'DROP TABLE IF EXISTS "{table}"')
    store = FailingCheckpoints(resources.sql("db"), "whpg", resource="db", table=table)
    try:
        with pytest.raises(sa.exc.DataError):  # fails after writing the positions
            store.save("s", {"shardId-000000000000": Position("1001", 0)})
        assert store.load("s") == {}
    finally:
        resources.close()


def test_a_sqlite_file_made_autocommit_still_writes_in_one_transaction(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}", isolation_level="AUTOCOMMIT")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n int)")
        with pytest.raises(ZeroDivisionError), transaction(engine) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()
