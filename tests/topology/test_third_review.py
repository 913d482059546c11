"""The fixes of the second reviews, reviewed again: what they refused that worked, and what they
left (resource URLs, the engine's sinks, the dead-letter file's distrusted ranges)."""

from __future__ import annotations

import pytest

from squall import redact
from squall.errors import TopologyError
from squall.topology.loader import load_text
from squall.topology.resources import Resources


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """Values resolved here are masked process-wide (``redact.remember``): forgotten after each test."""
    monkeypatch.setattr(redact, "_known", redact._known)


# --- a resource URL from a variable kept with its trailing newline ---------------------------

RESOURCE = """
name: nl
resources:
  cache: {url: "${CACHE_URL}"}
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: stdout}]
"""


def test_a_redis_url_with_a_trailing_newline_connects_as_it_did_before_the_load_refused_it(
    redis_url,
):
    """redis-py reads a URL through ``urllib``, which removes tabs and line breaks: a Redis URL
    kept in a variable with its trailing newline connected to its database. The load's refusal of
    control characters in URLs (right for SQL URLs: database "x\\n", SQLite file "w.db\\n")
    stopped such a deployment at its upgrade; the URL is kept as the driver reads it."""
    topology = load_text(RESOURCE, file="t.yaml", env={"CACHE_URL": redis_url + "\n"})
    assert topology.resources["cache"].url == redis_url
    resources = Resources(topology.resources)
    try:
        client = resources.redis("cache")
        assert client.ping()
        assert str(client.connection_pool.connection_kwargs.get("db", 0)) == redis_url.rsplit(
            "/", 1
        )[1]
    finally:
        resources.close()


def test_a_sql_url_with_a_trailing_newline_is_still_a_located_error(tmp_path):
    """A SQLite URL with its newline named another file (``w.db\\n``): still refused at load."""
    with pytest.raises(TopologyError) as err:
        load_text(RESOURCE, file="t.yaml", env={"CACHE_URL": f"sqlite:///{tmp_path}/w.db\n"})
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (4, "resources.cache.url")
    assert "line break or another control character" in problem.message
