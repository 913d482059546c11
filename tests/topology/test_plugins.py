"""Plugin packages register components through entry points; topologies use them by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from squall.testing import MemorySink, records_from, run_topology
from squall.topology import registry

PLUGIN = """
from squall.bolts import Bolt, Output
from squall.component import ComponentConfig


class ShoutConfig(ComponentConfig):
    field: str = "text"


class ShoutBolt(Bolt):
    Config = ShoutConfig
    summary = "Upper-case a field."

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            ev.value[self.config.field] = ev.value[self.config.field].upper()
            out.emit(ev)
        return out
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch):
    """A distribution 'squall-shout' on sys.path, with a squall.bolts entry point, as pip would leave it."""
    site = tmp_path / "site"
    (site / "squall_shout").mkdir(parents=True)
    (site / "squall_shout" / "__init__.py").write_text(PLUGIN)
    dist = site / "squall_shout-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: squall-shout\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[squall.bolts]\nshout = squall_shout:ShoutBolt\n")
    monkeypatch.syspath_prepend(str(site))
    registry._plugins.cache_clear()
    registry.resolve.cache_clear()
    yield
    registry._plugins.cache_clear()
    registry.resolve.cache_clear()
    sys.modules.pop("squall_shout", None)


def test_an_entry_point_plugin_is_used_by_its_type_name(installed_plugin, unique_name: str):
    assert registry.known_types("bolt")["shout"] == "squall_shout:ShoutBolt"
    yaml = f"""
name: plugin
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: loud, type: shout, field: msg}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {unique_name}}}
"""
    run_topology(yaml, records_from([{"msg": "hello"}]))
    assert [ev.value for ev in MemorySink.stores[unique_name]] == [{"msg": "HELLO"}]


def test_a_plugin_type_that_is_not_installed_suggests_close_names():
    with pytest.raises(registry.UnknownType, match="did you mean 'route'"):
        registry.resolve("bolt", "rout")


def test_a_plugin_cannot_replace_a_built_in_and_built_ins_need_no_metadata_scan(monkeypatch):
    # A plugin distribution registering "json" (a built-in name) and "shout".
    calls = []

    def fake_plugins():
        calls.append(1)
        return {
            "spout": {},
            "bolt": {"json": "squall_shout:ShoutBolt", "shout": "squall_shout:ShoutBolt"},
            "sink": {},
        }

    monkeypatch.setattr(registry, "_plugins", fake_plugins)
    registry.resolve.cache_clear()
    try:
        from squall.bolts.json_decode import JsonBolt

        assert registry.resolve("bolt", "json") is JsonBolt
        assert calls == []  # a built-in resolves without reading any plugin metadata
        assert registry.known_types("bolt")["json"] == "squall.bolts.json_decode:JsonBolt"
        assert list(registry.known_types("bolt"))[-1] == "shout"  # plugins after built-ins
    finally:
        registry.resolve.cache_clear()
