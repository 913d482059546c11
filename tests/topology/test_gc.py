"""The engine and Python's garbage collector.

The engine freezes the heap once (``gc.freeze``) and raises the young-collection threshold while a
batch is in memory: the batch's live objects are then not scanned again and again. Between
batches the process's own thresholds apply, so reference cycles that outlive a batch — user
code or a library keeping an exception with its traceback, say — are collected as Python
would, not after tens of thousands of further allocations while they hold whole batches.
"""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

from squall.bolts.base import Bolt, Output
from squall.event import Event
from squall.testing import records_from, run_topology
from squall.topology import executor

MARKERS: list[weakref.ref] = []


class Marker:
    """Weak-referenceable: tells whether a batch's cycle was collected."""


class CyclicBolt(Bolt):
    """Leaves one reference cycle per batch that holds the batch: its frame keeps
    ``sys.exc_info()``, whose traceback refers to the frame (as user code or libraries may)."""

    def process(self, batch: list[Event]) -> Output:
        marker = Marker()
        MARKERS.append(weakref.ref(marker))
        try:
            raise KeyError("kept")
        except KeyError:
            info = sys.exc_info()  # frame -> info -> traceback -> frame
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
        assert info is not None and marker is not None
        return out


TOPOLOGY = f"""
name: gc
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cyclic, type: '{__name__}:CyclicBolt'}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: gc-out}}
"""


@pytest.fixture
def interpreter_gc(monkeypatch):
    """Python's default thresholds, and an engine that settles the heap as if first in the process."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(executor, "_heap_settled", False)
    yield
    gc.set_threshold(*saved)


def test_the_processs_gc_thresholds_are_unchanged_between_batches(interpreter_gc):
    run_topology(TOPOLOGY, records_from({"i": i} for i in range(20)), batch_size=5)
    assert gc.get_threshold() == (700, 10, 10)


def test_cycles_that_outlive_their_batch_are_collected_as_python_would(interpreter_gc):
    MARKERS.clear()
    pad = "x" * 1_000
    run_topology(TOPOLOGY, records_from({"i": i, "pad": pad} for i in range(4_000)), batch_size=20)
    alive = sum(1 for ref in MARKERS if ref() is not None)
    assert alive <= 20, f"{alive} of {len(MARKERS)} batches still held by garbage cycles"
