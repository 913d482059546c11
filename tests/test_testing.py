"""The test kit isolates itself: memory sinks write to the caller's lists, never a shared store."""

from __future__ import annotations

import threading

from squall.testing import MemorySink, memory_stores, records_from, run_topology

TOPOLOGY = """\
name: t
spout: {type: "squall.testing:ListSpout"}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: out, type: "squall.testing:MemorySink", name: kept}
"""


def test_a_memory_sink_appends_to_the_callers_list():
    mine: list = []
    with memory_stores({"kept": mine}) as stores:
        run_topology(TOPOLOGY, records_from([{"n": 1}, {"n": 2}]))
    assert [ev.value for ev in mine] == [{"n": 1}, {"n": 2}]
    assert stores["kept"] is mine


def test_blocks_nest_and_do_not_see_each_other(sink_stores):
    with memory_stores() as inner:
        run_topology(TOPOLOGY, records_from([{"n": 1}]))
        assert MemorySink.stores is inner
    run_topology(TOPOLOGY, records_from([{"n": 2}, {"n": 3}]))
    assert [ev.value["n"] for ev in inner["kept"]] == [1]
    assert [ev.value["n"] for ev in sink_stores["kept"]] == [2, 3]  # this test's own (fixture)


def test_a_sink_opened_in_another_thread_uses_the_callers_block():
    with memory_stores() as stores:
        t = threading.Thread(target=run_topology, args=(TOPOLOGY, records_from([{"n": 7}])))
        t.start()
        t.join()
    assert [ev.value for ev in stores["kept"]] == [{"n": 7}]
