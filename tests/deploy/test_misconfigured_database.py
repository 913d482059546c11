"""A misconfigured database (it does not exist, the role does not exist, authentication fails)
is not an outage: every runner stops with a located message, retries nothing, checkpoints
nothing. The KCL record processor used to wait for it forever with backoff, as for a database
that is down (libpq reports both without a SQLSTATE). Real PostgreSQL: a database and a role
that do not exist on the test server, and a database this test creates and drops."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from squall.deploy.kcl import EXIT_MISCONFIGURED, RecordProcessor
from squall.deploy.lambda_consumer import make_handler
from squall.errors import SinkError, TransientError
from squall.topology import sql
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.deploy.test_local_runner import run_cli
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

SECRET = "pw-kcl-9f3b"

TOPOLOGY = """
name: misconfigured-{tag}
resources: {{warehouse: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0}}}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: rows, type: warehouse, resource: warehouse, table: rows_{tag}, columns: {{n: {{path: n, type: integer}}}}}}
"""


def with_parts(url: str, *, user: str | None = None, database: str | None = None) -> str:
    """The test URL with another user (and a password) or another database."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    name = user or parts.username or "postgres"
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=f"{name}:{SECRET}@{netloc}", path=path))


def missing_database(pg_url: str) -> str:
    return with_parts(pg_url, database=f"squall_hA_no_such_db_{uuid.uuid4().hex[:8]}")


def missing_role(pg_url: str) -> str:
    return with_parts(pg_url, user=f"squall_hA_no_such_role_{uuid.uuid4().hex[:8]}")


class Waited(Exception):
    """The processor waited for the database as for an outage (it would wait forever)."""


def no_wait(slept: list[float]):
    """A ``sleep`` for the processor that records the wait and stops it: before the fix the
    processor waited with backoff for ever."""

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise Waited(f"the processor waited {seconds}s for a misconfigured database")

    return sleep


def topology(url: str) -> str:
    return TOPOLOGY.format(url=url, tag=uuid.uuid4().hex[:8])


def test_a_refusal_for_good_is_not_transient_and_a_refused_connection_still_is(pg_url: str):
    for url in (missing_database(pg_url), missing_role(pg_url)):
        with pytest.raises(psycopg2.OperationalError) as err:
            psycopg2.connect(url, connect_timeout=5)
        assert sql.refused_for_good(err.value) and not sql.is_transient(err.value)
        assert isinstance(sql.as_squall_error(err.value, "where"), SinkError)
    down = urlsplit(pg_url)._replace(netloc="postgres@127.0.0.1:1").geturl()
    with pytest.raises(psycopg2.OperationalError) as err:
        psycopg2.connect(down, connect_timeout=5)
    assert not sql.refused_for_good(err.value) and sql.is_transient(err.value)
    assert isinstance(sql.as_squall_error(err.value, "where"), TransientError)


@pytest.mark.parametrize("make_url", [missing_database, missing_role], ids=["database", "role"])
def test_kcl_stops_at_initialize_on_a_misconfigured_database_instead_of_waiting(
    pg_url: str, make_url, caplog
):
    url = make_url(pg_url)
    slept: list[float] = []
    engine = Engine.for_topology(load_text(topology(url)), hold=True)
    processor = RecordProcessor(engine, stream="s", sleep=no_wait(slept))
    cp = KclCheckpointer()
    with caplog.at_level(logging.ERROR, logger="squall.kcl"), pytest.raises(SystemExit) as exited:
        kcl_initialize().dispatch(cp, processor)
    assert exited.value.code == EXIT_MISCONFIGURED
    assert slept == [] and cp.calls == []  # before: waited 1, 2, 4, … 30, 30, … s for ever
    [line] = [r.getMessage() for r in caplog.records]
    what = "does not exist"
    assert "opening the topology: rows (table rows_" in line and what in line
    assert "a misconfiguration, not an outage" in line and SECRET not in line


def test_kcl_stops_when_its_database_is_dropped_and_checkpoints_only_what_was_written(
    pg_url: str, caplog
):
    name = f"squall_hA_dropped_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        engine = Engine.for_topology(load_text(topology(with_parts(pg_url, database=name))))
        slept: list[float] = []
        processor = RecordProcessor(engine, stream="s", sleep=no_wait(slept))
        cp = KclCheckpointer()
        kcl_initialize().dispatch(cp, processor)
        kcl_process_records([{"n": 1}, {"n": 2}], start=100).dispatch(cp, processor)
        assert cp.calls == [("101", 0)]
        admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with caplog.at_level(logging.ERROR, logger="squall.kcl"):
            with pytest.raises(SystemExit) as exited:
                kcl_process_records([{"n": 3}], start=200).dispatch(cp, processor)
        assert exited.value.code == EXIT_MISCONFIGURED
        assert slept == [] and cp.calls == [("101", 0)]  # nothing past the written batch
        assert any(f'database "{name}" does not exist' in r.getMessage() for r in caplog.records)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_local_runner_refuses_to_start_on_a_missing_database_with_the_config_exit_code(
    pg_url: str, tmp_path: Path
):
    t = tmp_path / "t.yaml"
    t.write_text(topology(missing_database(pg_url)))
    result = run_cli(["run", str(t)], input='{"n": 1}\n')
    assert result.returncode == 2  # a component refused to start (before: 1, as if unreachable)
    assert "cannot start:" in result.stderr and "does not exist" in result.stderr
    assert SECRET not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_lambda_init_fails_at_once_on_a_missing_database(pg_url: str, tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(topology(missing_database(pg_url)))
    with pytest.raises(SinkError, match="does not exist") as err:
        make_handler(t)
    assert SECRET not in str(err.value)


def test_a_sql_lookup_whose_database_is_dropped_fails_the_batch_not_every_key(pg_url: str):
    """A lookup source's database dropped while the topology runs: every key's query fails with
    'database does not exist' (no SQLSTATE). It used to be bisected key by key and then retried
    as an outage ('the lookup fails for every key'); it is a SinkError at once."""
    from squall.errors import BatchFailed
    from squall.testing import records_from
    from tests.bolts.test_lookup import create_apps

    name = f"squall_hA_lookup_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        parts = urlsplit(pg_url)  # psycopg2 named: SQLAlchemy's default driver is psycopg 3
        url = parts._replace(scheme="postgresql+psycopg2", path=f"/{name}").geturl()
        create_apps(url, "apps")
        engine = Engine.for_topology(
            load_text(
                f"""
name: lookup-dropped
resources: {{apps: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: [app_id, platform]
    target: app
    source: {{type: sql, resource: apps, table: apps}}
sinks:
  - {{id: out, type: stdout}}
"""
            )
        )
        engine.open()
        admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(BatchFailed) as failed:
            engine.process(records_from([{"app_id": 1, "platform": "ios"}, {"app_id": 2}]))
        assert failed.value.attempts == 1 and isinstance(failed.value.__cause__, SinkError)
        assert "does not exist" in str(failed.value)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
