"""Options in seconds take a duration's text as the window and subscription bolts' durations do:
the lookup's cache TTLs refused ``ttl: 5m`` ("Input should be a valid number") while the window
beside it took ``size: 5m`` (found by a walkthrough, 7 December)."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load

TOPOLOGY = """\
name: t
resources:
  state: {{url: "sqlite:///{tmp}/state.db"}}
  cache: {{url: "redis://127.0.0.1:6379/15"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: apps
    type: lookup
    key: app_id
    target: app
    source: {{type: redis, resource: cache}}
    cache: {{ttl: {ttl}, missing_ttl: {missing}}}
  - {{id: sub, type: subscription, store: state, cache: cache, cache_ttl: {cache_ttl}}}
sinks:
  - {{id: out, type: stdout}}
"""


def write(tmp_path: Path, ttl="300", missing="60", cache_ttl="3600") -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(tmp=tmp_path, ttl=ttl, missing=missing, cache_ttl=cache_ttl))
    return path


def options(path: Path):
    topo = load(path, env={})
    nodes = {n.id: n for n in topo.plan.nodes}
    return nodes["apps"].config.cache, nodes["sub"].config.cache_ttl


def test_seconds_options_take_a_durations_text(tmp_path: Path):
    cache, cache_ttl = options(write(tmp_path, ttl="5m", missing="90s", cache_ttl="2h"))
    assert (cache.ttl, cache.missing_ttl, cache_ttl) == (300.0, 90.0, 7200)


def test_seconds_options_still_take_numbers(tmp_path: Path):
    cache, cache_ttl = options(write(tmp_path, ttl="2.5", missing="0", cache_ttl="60"))
    assert (cache.ttl, cache.missing_ttl, cache_ttl) == (2.5, 0, 60)


def test_a_text_that_is_no_duration_says_what_is_taken(tmp_path: Path):
    path = write(tmp_path, ttl="5 minutes", cache_ttl="1.5s")
    with pytest.raises(TopologyError) as exc:
        load(path, env={})
    found = "\n".join(str(p) for p in exc.value.problems)
    assert "bolts[1].cache.ttl" in found
    assert "not a duration: '5 minutes' (seconds, or e.g. 500ms, 30s, 5m, 1h, 1d)" in found
    assert "bolts[2].cache_ttl" in found  # a Redis TTL is whole seconds
    assert f"{path}:" in found


def test_an_octal_ttl_is_refused_as_the_other_durations_are(tmp_path: Path):
    path = write(tmp_path, ttl="010")
    with pytest.raises(TopologyError) as exc:
        load(path, env={})
    assert [str(p) for p in exc.value.problems] == [
        f"{path}:13:18: bolts[1].cache.ttl: YAML reads the unquoted 010 as an octal number, "
        "8 seconds: write 10s (or 8s if that is the one meant)"
    ]
