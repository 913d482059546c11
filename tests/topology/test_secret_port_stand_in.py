"""A resource URL whose port is a secret reference (``postgresql://app:pw@db:${ssm:/db/port}/x``):
the run reads the port and connects, but ``squall package``, ``graph`` and ``validate
--skip-secrets`` load with stand-ins — letters and digits — and refused the topology ("the port
is not a number"), so it could not be packaged at all. A stand-in in the port's place is taken
as a port; a port written in the file is still checked."""

from __future__ import annotations

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load_text
from squall.topology.references import placeholder

RESOURCE = """
name: port
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: stdout}}]
"""


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.internal:${ssm:/db/port}/x",
        "postgresql+psycopg2://app:${ssm:/db/pw}@db.internal:${ssm:/db/port}/x?sslmode=require",
        "redis://:pw@cache.internal:${ssm:/cache/port}/0",
        "rediss://cache.internal:${secretsmanager:cache#port}",
    ],
)
def test_a_port_kept_in_a_secret_loads_with_its_stand_in_as_the_run_loads_it(url: str):
    load_text(RESOURCE.format(url=url), file="t.yaml", env={}, secrets=placeholder)
    load_text(RESOURCE.format(url=url), env={}, secrets=lambda ref: "6380")  # the run
    with pytest.raises(TopologyError, match="(?i)port"):  # a value that is no port: refused
        load_text(RESOURCE.format(url=url), env={}, secrets=lambda ref: "sixty")


def test_a_port_written_in_the_file_is_still_checked_with_stand_ins():
    url = "postgresql://app:${ssm:/db/pw}@db.internal:54x2/x"
    with pytest.raises(TopologyError, match="the port is not a number"):
        load_text(RESOURCE.format(url=url), env={}, secrets=placeholder)
