"""`squall replay TOPOLOGY sql://RESOURCE`: without a table, the dead letters of the topology's
own `dead_letter_table` on that resource are read (not a `squall_dead_letters` it never wrote),
and a table that is not there says so and how to name another."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from squall.cli import main
from squall.testing import records_from, run_topology

TOPOLOGY = """
name: replay-default-{table}
resources:
  warehouse: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [event_type]}}}}
sinks:
  - {{id: events, type: warehouse, resource: warehouse, table: {table}_events,
     columns: {{event_type: event_type}}}}
  - {{id: dead, type: dead_letter_table, resource: warehouse, table: {table}_dead}}
streams:
  - {{from: validate, stream: invalid, to: dead}}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def topology(request, tmp_path: Path, unique_name: str) -> tuple[Path, str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wh.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(url=url, table=unique_name))
    yield path, url
    if request.param == "postgresql":
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        with engine.begin() as conn:
            for t in (f"{unique_name}_events", f"{unique_name}_dead"):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{t}"'))
        engine.dispose()


def _replay(path: Path, where: str):
    return CliRunner().invoke(main, ["replay", str(path), where, "--dry-run"])


def test_without_a_table_the_topologys_dead_letter_table_is_read(topology):
    path, _ = topology
    run_topology(path, records_from([{"event_type": "click"}, {"no_type": 1}]))

    result = _replay(path, "sql://warehouse")

    assert result.exit_code == 0, result.output
    assert "read 1 dead letters" in result.output
    assert "validate: schema: $: 'event_type' is a required property" in result.output


def test_a_table_that_is_not_there_says_how_to_name_the_right_one(topology, unique_name):
    path, _ = topology
    run_topology(path, records_from([{"no_type": 1}]))

    result = _replay(path, "sql://warehouse/squall_dead_letters")

    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no table squall_dead_letters in warehouse" in message
    assert f"sql://warehouse/{unique_name}_dead" in message
