"""Runners ask components what they do (``Component.capabilities``), never match ``type`` names."""

from __future__ import annotations

import pytest

from squall.component import Capabilities, Component, ComponentConfig, ComponentContext
from squall.deploy.fleet import stream_of
from squall.deploy.kcl import check_kcl_safe
from squall.deploy.localaws import streams_of
from squall.errors import SquallError
from squall.sinks.base import Sink
from squall.topology import registry
from squall.topology.loader import load_text


class PrintingSink(Sink):
    """A user sink that prints: it says so, and the KCL runner refuses it by that alone."""

    @classmethod
    def capabilities(cls, config):
        return Capabilities(needs_stdout=True)

    def write_batch(self, prepared, ctx):
        return None


TOPOLOGY = """\
name: t
spout: {spout}
sinks:
  - {{id: out, type: "{sink}"}}
  - {{id: copy, type: kinesis, stream: "arn:aws:kinesis:eu-west-1:123456789012:stream/copy", region: eu-west-1}}
"""


def topo(spout="{type: file, path: e.jsonl}", sink="squall.testing:MemorySink"):
    return load_text(TOPOLOGY.format(spout=spout, sink=sink))


def test_a_component_declares_nothing_by_default():
    cfg = ComponentConfig(id="c", type="t")
    assert Component.capabilities(cfg) == Capabilities()
    assert Component.aws_permissions(cfg) == []
    assert Component(cfg, ComponentContext("t")).capabilities(cfg).kinesis_streams == ()


def test_the_kcl_refuses_any_sink_that_declares_stdout_whatever_its_type():
    check_kcl_safe(topo())
    with pytest.raises(SquallError, match="sink 'out'.*protocol channel"):
        check_kcl_safe(topo(sink=f"{__name__}:PrintingSink"))
    with pytest.raises(SquallError, match="sink 'out': the stdout sink"):
        check_kcl_safe(topo(sink="stdout"))


def test_kinesis_streams_come_from_the_spout_and_sinks_declarations():
    t = topo(spout="{type: kinesis, stream: clicks, region: eu-west-1}")
    assert [(k, c.id, caps.kinesis_streams) for k, c, caps in registry.declared(t)] == [
        ("spout", "spout", ("clicks",)),
        ("sink", "out", ()),
        ("sink", "copy", ("arn:aws:kinesis:eu-west-1:123456789012:stream/copy",)),
    ]
    assert streams_of([t]) == ["clicks", "copy"]
    assert stream_of(t, None) == "clicks"
    assert stream_of(t, "other") == "other"
    with pytest.raises(SquallError, match="not kinesis"):
        stream_of(topo(), None)
