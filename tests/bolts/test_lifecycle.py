"""One lifecycle hook: ``open`` on every component; ``Bolt.setup`` is a deprecated alias that works."""

from __future__ import annotations

import warnings

import pytest

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig, ComponentContext
from squall.testing import MemorySink, records_from, run_topology

CTX = ComponentContext(topology="t")


def _config() -> ComponentConfig:
    return ComponentConfig(id="b", type="t")


class Opens(Bolt):
    def open(self, resources) -> None:
        self.opened_with = resources

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            ev.value["opened"] = self.opened_with is not None
            out.emit(ev)
        return out


def test_a_bolt_defining_open_is_opened_by_either_name():
    bolt = Opens(_config(), CTX)
    bolt.open("res")
    assert bolt.opened_with == "res"
    bolt = Opens(_config(), CTX)
    bolt.setup("old")  # the old name, called by code written for it
    assert bolt.opened_with == "old"


def test_a_bolt_defining_setup_warns_once_at_definition_and_still_opens():
    with pytest.warns(DeprecationWarning, match="Bolt.setup is deprecated; name the hook 'open'"):

        class Legacy(Bolt):
            def setup(self, resources) -> None:
                self.opened_with = resources

            def process(self, batch):
                return Output(self.id)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opening it does not warn again
        bolt = Legacy(_config(), CTX)
        bolt.open("res")
    assert bolt.opened_with == "res"
    bolt = Legacy(_config(), CTX)
    bolt.setup("direct")
    assert bolt.opened_with == "direct"


def test_a_bolt_with_neither_hook_opens_as_a_no_op():
    class Plain(Bolt):
        def process(self, batch):
            return Output(self.id)

    bolt = Plain(_config(), CTX)
    bolt.open(None)
    bolt.setup(None)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)

    class LegacyTagger(Bolt):
        """A user bolt written for the old hook name, run by the engine."""

        def setup(self, resources) -> None:
            self.tag = "set-up"

        def process(self, batch):
            out = Output(self.id)
            for ev in batch:
                ev.value["tag"] = self.tag
                out.emit(ev)
            return out


TOPOLOGY = """\
name: t
spout: {type: "squall.testing:ListSpout"}
bolts:
  - {id: decode, type: json}
  - {id: legacy, type: "tests.bolts.test_lifecycle:LegacyTagger"}
sinks:
  - {id: out, type: "squall.testing:MemorySink", name: lifecycle}
"""


def test_the_engine_opens_a_bolt_written_for_setup():
    MemorySink.stores.pop("lifecycle", None)
    run_topology(TOPOLOGY, records_from([{"n": 1}]))
    assert [ev.value for ev in MemorySink.stores["lifecycle"]] == [{"n": 1, "tag": "set-up"}]
