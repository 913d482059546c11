"""The engine's user records are the events ``Event(data, meta, None, index)`` builds.

``Engine._expand`` sets a new event's slots itself rather than calling ``Event.__init__`` (a
Python call per record): a slot added to ``Event`` must be set there too, and this fails until it
is.
"""

from __future__ import annotations

from squall.event import Event, Record, RecordMeta
from squall.testing import topology_from
from squall.topology.executor import Engine

TOPOLOGY = """
name: slots
spout: {type: 'squall.testing:ListSpout'}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: out, type: 'squall.testing:MemorySink', name: slots-out}
"""


def test_the_engine_builds_the_events_event_init_builds():
    records = [
        Record(b'{"i": 1}', RecordMeta("s", "shard-0", "7", 0, "pk")),
        Record(b"", RecordMeta("s", "shard-0", "8")),
        Record(b"\xf3", RecordMeta("s", "shard-0", "9")),  # the KPL magic's first byte alone
    ]
    units, bad = Engine(topology_from(TOPOLOGY).plan)._expand(records)
    assert bad == []
    assert len(units) == len(records)
    for i, (ev, rec) in enumerate(zip(units, records, strict=True)):
        built = Event(rec.data, rec.meta, None, i)
        assert type(ev) is Event
        for slot in Event.__slots__:
            assert getattr(ev, slot) == getattr(built, slot), slot
        assert ev.event_id == built.event_id
    assert units[0].extra is not units[1].extra  # each event's own dict
