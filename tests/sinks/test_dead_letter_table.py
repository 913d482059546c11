"""The dead-letter table on SQLite files and the real PostgreSQL: durable, idempotent, with reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.conftest import ROOT

YAML = """
name: dlt
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [id]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {table}-out}}
  - {{id: dlq, type: dead_letter_table, resource: db, table: {table}, include_payload: true}}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path: Path, unique_name: str):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dl.db'}"
        return
    pg = request.getfixturevalue("pg_url")
    yield pg
    with sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg2://")).begin() as conn:
        conn.exec_driver_sql(f'drop table if exists "{unique_name}"')


def test_dead_letters_are_rows_with_reason_and_original_bytes_and_replays_add_none(
    url: str, unique_name: str
):
    yaml = YAML.format(url=url, table=unique_name)
    records = records_from([{"id": 1}, b"\xff\xfe not json", {"no": "id"}])
    for _ in range(2):  # the replay adds no row
        run = run_topology(yaml, records)
        assert [o.outcome for o in run.outcomes] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.DEAD_LETTERED,
        ]
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"select component, reason, record, record_base64, payload, meta "
            f'from "{unique_name}" order by component'
        ).fetchall()
    assert len(rows) == 2
    decode, validate = rows
    assert (
        decode[0] == "decode"
        and decode[1].startswith("invalid JSON")
        and decode[2] is None
        and decode[3]
    )
    assert validate[0] == "validate" and "'id' is a required property" in validate[1]
    assert json.loads(validate[2]) == {"no": "id"} and json.loads(validate[4]) == {"no": "id"}
    assert json.loads(validate[5])["sequence_number"] == "3"


def test_an_unreachable_dead_letter_database_is_transient_not_fatal(unique_name: str):
    from squall.errors import TransientError

    yaml = YAML.format(url="postgresql://postgres@127.0.0.1:1/test", table=unique_name)
    with pytest.raises(TransientError, match="database unavailable"):
        run_topology(yaml, records_from([b"bad"]), sleep=lambda s: None)


CHILD = """
import json, sys
from squall.deploy.lambda_consumer import make_handler
make_handler(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy")))
"""

LAMBDA_YAML = """
name: dlt-init
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: {table}_rows, columns: {{n: n}}}}
  - {{id: dlq, type: dead_letter_table, resource: db, table: {table}}}
"""


def test_a_lambda_init_with_a_dead_letter_table_imports_no_sqlalchemy(
    url: str, unique_name: str, tmp_path: Path
):
    """The durable dead letter a Lambda consumer needs (a local file is lost with the container)
    writes driver SQL: SQLAlchemy's ~100–150 ms of imports stay out of the init, as they do for
    the warehouse beside it."""
    topology = tmp_path / "t.yaml"
    topology.write_text(LAMBDA_YAML.format(url=url, table=unique_name))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(topology)],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_REGION": "us-east-1", "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    if url.startswith("postgresql"):
        with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://")).begin() as c:
            c.exec_driver_sql(f'drop table if exists "{unique_name}_rows"')


def test_the_table_is_the_one_sqlalchemy_made(url: str, unique_name: str):
    """Created by the sink's driver SQL, the table has the columns, types, nullability and key
    that SQLAlchemy's ``dead_letters_table`` (what ``squall replay`` reads) gives it."""
    from squall.sinks.dead_letter_table import dead_letters_table

    run_topology(YAML.format(url=url, table=unique_name), records_from([b"bad"]))
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    reference = f"{unique_name}_sa"
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateTable(dead_letters_table(reference, sa.MetaData())))
        inspector = sa.inspect(engine)

        def shape(table: str) -> tuple:
            columns = [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ]
            return columns, inspector.get_pk_constraint(table)["constrained_columns"]

        assert shape(unique_name) == shape(reference)
        assert shape(unique_name)[1] == ["event_id", "component"]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'drop table if exists "{reference}"')
        engine.dispose()
