"""An adversarial review of the generic and lookup bolts: one defect per test, each failing before its fix."""

from __future__ import annotations

from squall.topology.outcomes import Outcome
from tests.bolts.test_builtin_bolts import run


def test_project_gives_each_event_its_own_copy_of_an_object_default():
    # One shared `{}` took what a later bolt wrote into one event to every event of the batch
    # (and to the config's default, so to later batches): all three ended with n 3.
    bolts = """  - {id: decode, type: json}
  - {id: p, type: project, defaults: {extra: {}, tags: []}}
  - {id: q, type: project, rename: {n: extra.n}}"""
    _, stores = run(bolts, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert [ev.value for ev in stores["out"]] == [
        {"extra": {"n": 1}, "tags": []},
        {"extra": {"n": 2}, "tags": []},
        {"extra": {"n": 3}, "tags": []},
    ]
    stores["out"][0].value["tags"].append("x")
    assert stores["out"][1].value["tags"] == []


def test_dedupe_does_not_take_true_for_the_key_1():
    # Python's True == 1: the event keyed `true` was filtered as a duplicate of the one keyed 1
    # (acknowledged, never written).
    bolts = "  - {id: decode, type: json}\n  - {id: d, type: dedupe, key: k}"
    outcomes, stores = run(bolts, [{"k": 1}, {"k": True}, {"k": "1"}, {"k": 1}, {"k": True}])
    assert [ev.value["k"] for ev in stores["out"]] == [1, True, "1"]
    assert [o.outcome for o in outcomes][3:] == [Outcome.FILTERED, Outcome.FILTERED]
