"""A lookup's ``shared_cache`` on a resource whose URL is empty (``"${CACHE_URL:-}"`` unset): no
shared cache, said once at INFO at start. Any other use of an empty URL stays refused at load."""

from __future__ import annotations

import logging

import pytest

from squall.errors import TopologyError
from squall.testing import memory_stores, records_from, run_topology
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.bolts.test_lookup import create_apps

TOPOLOGY = """
name: optional-cache
resources:
  db: {{url: "{db}"}}
  cache: {{url: "${{CACHE_URL:-}}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: sql, resource: {source}, table: apps, columns: [name]}}
    shared_cache: {{resource: cache}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
"""


def test_a_shared_cache_on_an_empty_url_is_off_and_said_once(tmp_path, caplog):
    """Before: "resources.cache.url: the URL is empty" at load — the example kept the cache as
    two commented-out lines."""
    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    topo = load_text(TOPOLOGY.format(db=db, source="db"), env={}, base_dir=tmp_path)
    records = records_from([{"app_id": 1}, {"app_id": 3}])
    with memory_stores() as stores, caplog.at_level(logging.INFO, logger="squall.bolts"):
        result = run_topology(topo, records)
    assert [o.outcome for o in result.outcomes] == [Outcome.COMMITTED] * 2
    assert [e.value["app"] for e in stores["out"]] == [{"name": "Weather"}, {"name": "Chess"}]
    said = [r for r in caplog.records if "shared cache" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        ("INFO", "lookup 'app': no shared cache (resource 'cache' has an empty URL)")
    ]


def test_an_empty_url_named_by_an_option_that_cannot_be_off_is_refused_at_its_line(tmp_path):
    """The lookup's source on the empty resource: refused at the URL, as before (at start it
    would be "resource 'cache' is not a SQL database ()", no line)."""
    text = TOPOLOGY.format(db="sqlite:///apps.db", source="cache")
    with pytest.raises(TopologyError) as err:
        load_text(text, env={}, base_dir=tmp_path)
    assert [str(p) for p in err.value.problems] == [
        "<string>:5:16: resources.cache.url: the URL is empty: set its variable, or write a URL "
        "(sqlite:///…)"
    ]


@pytest.mark.parametrize("name", ["cache", "warehouse"])
def test_an_empty_url_no_optional_option_names_alone_is_still_refused(tmp_path, name):
    """Named by nothing (or `warehouse`, a Kinesis spout's default checkpoint): refused."""
    text = TOPOLOGY.format(db="sqlite:///apps.db", source="db")
    if name == "warehouse":
        text = text.replace("  cache: {", "  warehouse: {").replace(
            "shared_cache: {resource: cache}", "shared_cache: {resource: warehouse}"
        )
    else:
        text = text.replace("    shared_cache: {resource: cache}\n", "")
    with pytest.raises(TopologyError) as err:
        load_text(text, env={}, base_dir=tmp_path)
    assert [p.path for p in err.value.problems] == [f"resources.{name}.url"]
    assert "the URL is empty" in str(err.value)


def test_a_set_url_still_opens_the_shared_cache(tmp_path, redis_url):
    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    topo = load_text(
        TOPOLOGY.format(db=db, source="db"), env={"CACHE_URL": redis_url}, base_dir=tmp_path
    )
    assert topo.resources["cache"].url == redis_url
    from squall.bolts.lookup import LookupBolt
    from squall.component import ComponentContext
    from squall.topology.resources import Resources

    bolt = LookupBolt(topo.bolts[1], ComponentContext(topo.name, topo.base_dir))
    resources = Resources.for_topology(topo)
    try:
        bolt.open(resources)
        assert bolt.shared is not None
    finally:
        resources.close()


def test_no_shared_cache_is_said_once_when_a_failed_open_is_retried(tmp_path, caplog):
    """A KCL shard process opens its engine again until its resources answer (a warehouse down
    here): the lookup, opened at each attempt, said "no shared cache" at each one."""
    from squall.errors import TransientError
    from squall.topology.executor import Engine
    from tests.ports import free_port

    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    down = f"postgresql://u@127.0.0.1:{free_port()}/x"  # nothing listens: refused
    text = TOPOLOGY.format(db=db, source="db").replace(
        "  cache:", f'  down: {{url: "{down}", connect_timeout: 1}}\n  cache:'
    )
    text = text.replace(
        "{id: out, type: 'squall.testing:MemorySink'}",
        "{id: out, type: warehouse, resource: down, table: t, columns: {n: app_id}}",
    )
    engine = Engine.for_topology(load_text(text, env={}, base_dir=tmp_path))
    try:
        with caplog.at_level(logging.INFO, logger="squall.bolts"):
            for _ in range(3):
                with pytest.raises(TransientError, match="Connection refused"):
                    engine.open()
    finally:
        engine.close()
    said = [r.getMessage() for r in caplog.records if "no shared cache" in r.getMessage()]
    assert said == ["lookup 'app': no shared cache (resource 'cache' has an empty URL)"]
