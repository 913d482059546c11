"""A ``RecordBolt`` whose ``process_event`` forgets its ``return`` drops every event: the run ends
with ``committed 0, filtered N`` and exit code 0, the warehouse empty. Found by a new user's
first bolt (a price computed in place, no ``return``): nothing said why nothing was written."""

from __future__ import annotations

import logging

from squall.bolts import RecordBolt
from squall.component import ComponentConfig, ComponentContext
from squall.event import Event
from squall.testing import memory_stores, records_from, run_topology


class Price(RecordBolt):
    """Sets the total in place and forgets ``return "default"``."""

    def process_event(self, event):
        event.value["total"] = event.value["qty"] * 2


class EvenOnly(RecordBolt):
    """A filter: passes even numbers, drops the others on purpose."""

    def process_event(self, event):
        return "default" if event.value["n"] % 2 == 0 else None


TOPOLOGY = """
name: record-bolt-drops
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: price, type: "tests.bolts.test_record_bolt_drops:%s"}
sinks:
  - {id: out, type: "squall.testing:MemorySink"}
"""


def _run(bolt: str, *batches: list[dict]) -> list[str]:
    """The outcomes of each batch run through the engine, in order."""
    outcomes = []
    with memory_stores():
        for batch in batches:
            run = run_topology(TOPOLOGY % bolt, records_from(batch))
            outcomes += [o.outcome.value for o in run.outcomes]
    return outcomes


def test_a_bolt_dropping_its_whole_first_batch_by_returning_none_is_warned_once(caplog):
    with caplog.at_level(logging.WARNING, logger="squall.bolts"):
        outcomes = _run("Price", [{"qty": 1}, {"qty": 2}])
    assert outcomes == ["filtered", "filtered"]  # the contract is unchanged: None drops
    warned = [r.getMessage() for r in caplog.records if r.name == "squall.bolts"]
    assert warned == [
        "bolt 'price': process_event returned None for all 2 event(s) of its first batch, so "
        'they were dropped (counted as filtered, written nowhere): return "default" to pass an '
        "event on (warned once)"
    ]


def test_the_warning_is_given_once_per_bolt_not_per_batch(caplog):
    bolt = Price(ComponentConfig(id="price", type="t"), ComponentContext(topology="t"))
    with caplog.at_level(logging.WARNING, logger="squall.bolts"):
        for _ in range(3):
            out = bolt.process([_event({"qty": 1})])
            assert len(out.dropped) == 1
    assert len([r for r in caplog.records if r.name == "squall.bolts"]) == 1


def test_a_filter_passing_some_events_of_its_first_batch_is_not_warned(caplog):
    bolt = EvenOnly(ComponentConfig(id="even", type="t"), ComponentContext(topology="t"))
    with caplog.at_level(logging.WARNING, logger="squall.bolts"):
        bolt.process([_event({"n": 1}), _event({"n": 2})])
        bolt.process([_event({"n": 3})])  # a later batch all dropped: a filter's business
    assert [r for r in caplog.records if r.name == "squall.bolts"] == []


def _event(value: dict) -> Event:
    record = records_from([value])[0]
    return Event(record.data, record.meta, None, 0, dict(value))
