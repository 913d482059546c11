"""The third review's fixes (the engine's re-prepares and copies), reviewed again: what a sink
refused for good on the paths that write or prepare again."""

from __future__ import annotations

import json
import uuid

import orjson

from squall.errors import SinkError
from squall.event import Event, Failure, Record, RecordMeta
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import MemorySink, MemorySinkConfig, records_from, run_topology
from squall.topology.outcomes import Outcome

# --- a write that fails whole, each part written on its own, one part refusing an event ------


class SizeLimited(MemorySink):
    """A user's sink whose service takes at most two events a request (more: ``ValueError``, a
    size limit — the engine writes the halves on their own) and refuses for good an event with
    ``"refuse": true`` (``WriteResult.rejected``, a 4xx)."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if len(prepared.events) > 2:
            raise ValueError("request too large")
        refused = [ev for ev in prepared.events if ev.value.get("refuse")]
        for ev in refused:
            ev.failure = Failure(self.id, "refused: 400")
        self.store.extend(ev for ev in prepared.events if ev not in refused)
        return WriteResult(rejected=refused) if refused else None


def test_an_event_a_part_write_of_the_isolation_refused_is_dead_lettered():
    """A write failed whole (a size limit) and each part was written on its own: the engine took
    the parts' failed events and feedback, not the events a part's write refused for good
    (``WriteResult.rejected``) — the record was counted committed, never written nor
    dead-lettered, and the checkpoint passed it."""
    tag = f"s{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "iso",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {"id": "out", "type": f"{__name__}:SizeLimited", "name": f"{tag}-out"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
        ],
    }
    payloads = [{"i": 0}, {"i": 1, "refuse": True}, {"i": 2}, {"i": 3}]
    try:
        run = run_topology(json.dumps(spec), records_from(payloads), batch_size=4)
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,  # was: committed
            Outcome.COMMITTED,
            Outcome.COMMITTED,
        ]
        assert (result.records[1].component, result.records[1].reason) == ("out", "refused: 400")
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"]] == [1]
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 2, 3]
        out = next(s for s in run.engine.stats if s.id == "out")
        assert (out.received, out.emitted, out.dead_lettered, out.failed) == (4, 3, 1, 0)
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)


def test_with_no_dead_letter_sink_an_event_a_part_write_refused_fails_and_holds_its_shard():
    """The same refusal with no dead-letter sink: the record fails (it comes again), and the
    checkpoint stops before it — it had been counted committed and checkpointed past."""
    tag = f"s{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "iso",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [{"id": "out", "type": f"{__name__}:SizeLimited", "name": f"{tag}-out"}],
    }
    payloads = [{"i": 0}, {"i": 1, "refuse": True}, {"i": 2}, {"i": 3}]
    try:
        run = run_topology(json.dumps(spec), records_from(payloads), batch_size=4)
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.FAILED,
            Outcome.HELD,
            Outcome.HELD,
        ]
        assert result.checkpoint["shardId-000000000000"].sequence_number == "1"
    finally:
        MemorySink.stores.pop(f"{tag}-out", None)


# --- a sink in the batch's transaction refusing copies of its events -------------------------


class CopyRefusingTxConfig(MemorySinkConfig):
    resource: str


class CopyRefusingTx(MemorySink):
    """A user's sink written in the batch's SQL transaction that refuses an event with
    ``"refuse": true`` for good, answering a copy of it (``Event.fork``, its failure set on the
    copy: the event it was given left as it was). Past 20 writes of one run it raises
    ``SinkError`` (the batch fails): the engine wrote it again and again."""

    Config = CopyRefusingTxConfig
    writes = 0

    def transaction_resource(self) -> str | None:
        return self.config.resource

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        CopyRefusingTx.writes += 1
        if CopyRefusingTx.writes > 20:
            raise SinkError(f"{self.id}: written {CopyRefusingTx.writes} times")
        refused = []
        for ev in prepared.events:
            if ev.value.get("refuse"):
                copy = ev.fork()
                copy.failure = Failure(self.id, "refused")
                refused.append(copy)
        if refused:
            return WriteResult(rejected=refused)
        self.store.extend(prepared.events)
        return None


def test_a_transaction_sink_refusing_copies_of_its_events_is_not_written_for_ever(tmp_path):
    """A sink in the transaction refused an event, answering a copy of it: the engine took out
    of the rest only the very objects refused — none —, dead-lettered the copy, rolled back and
    wrote the same events again: refused again, for ever (a dead letter each time; the batch
    never ended). The refused record is taken out by its event now, as a copy names it."""
    CopyRefusingTx.writes = 0
    tag = f"c{uuid.uuid4().hex[:8]}"
    text = f"""
name: tx
resources:
  db: {{url: "sqlite:///{tmp_path}/tx.db"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: '{__name__}:CopyRefusingTx', name: {tag}-out, resource: db}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    payloads = [{"i": 0}, {"i": 1, "refuse": True}, {"i": 2}]
    try:
        run = run_topology(text, records_from(payloads), batch_size=3)  # was: BatchFailed
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
        assert CopyRefusingTx.writes == 2
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"]] == [1]
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 2]
        out = next(s for s in run.engine.stats if s.id == "out")
        assert (out.received, out.emitted, out.dead_lettered) == (3, 2, 1)
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)


# --- a sink's prepare that splits one record and leaves out another ---------------------------


class RowPerItem(MemorySink):
    """A user's sink whose ``prepare`` makes one event per item of the payload's ``items`` (a
    row each): a record with two items becomes two events, one with none becomes none (left
    out: neither to write nor rejected)."""

    def prepare(self, events: list[Event]) -> Prepared:
        rows = []
        for ev in events:
            for item in ev.value["items"]:
                row = ev.fork()
                row.value = {"i": ev.value["i"], "item": item}
                rows.append(row)
        return Prepared(rows)


def test_a_record_a_sinks_prepare_left_out_while_it_split_another_is_dead_lettered():
    """The engine looked for records a sink's ``prepare`` left out only when it returned fewer
    events than it was given: with another record split into two rows in the same batch, the
    count was even, and the record left out had no outcome — it failed on every delivery as
    "engine: no outcome: a bolt lost the event" (no bolt had), holding its shard, though the
    same record in a batch of its own is dead-lettered naming the sink."""
    tag = f"r{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "rows",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {"id": "out", "type": f"{__name__}:RowPerItem", "name": f"{tag}-out"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
        ],
    }
    payloads = [{"i": 0, "items": ["a"]}, {"i": 1, "items": []}, {"i": 2, "items": ["b", "c"]}]
    try:
        run = run_topology(json.dumps(spec), records_from(payloads), batch_size=3)
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,  # was: failed, "engine: no outcome: a bolt lost the event"
            Outcome.COMMITTED,
        ]
        assert result.records[1].reason == (
            "no outcome: sink 'out' prepared it neither to write nor to reject"
        )
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"]] == [1]
        assert [ev.value["item"] for ev in MemorySink.stores[f"{tag}-out"]] == ["a", "b", "c"]
        assert result.checkpoint["shardId-000000000000"].sequence_number == "3"
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)


def test_a_sink_whose_prepare_makes_new_events_is_prepared_again_from_what_it_was_given():
    """The engine prepared a sink again with the events its ``prepare`` had returned (to hold
    back the records after another sink's failure, to write again without what it refused or
    what failed alone): a ``prepare`` making new events (rows made of an event) cannot read its
    own rows (``KeyError: 'items'``), so every record of the sink failed alone and was
    dead-lettered — records 0 and 3 here, never written, because record 1 failed in another
    sink. It is prepared again with the events it was given, of the records still to write."""
    tag = f"r{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "rows",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {"id": "first", "type": "squall.testing:FaultySink", "name": f"{tag}-first"},
            {"id": "out", "type": f"{__name__}:RowPerItem", "name": f"{tag}-out"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
        ],
    }
    records = []
    for i, (shard, extra) in enumerate(
        [("A", {}), ("A", {"sink_fail": True}), ("A", {}), ("B", {})]
    ):
        payload = {"i": i, "items": [f"x{i}"], **extra}
        records.append(Record(orjson.dumps(payload), RecordMeta("s", shard, str(i + 1), 0, "pk")))
    try:
        run = run_topology(json.dumps(spec), records, batch_size=4)
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,  # was: dead-lettered, KeyError: 'items'
            Outcome.FAILED,
            Outcome.HELD,
            Outcome.COMMITTED,  # was: dead-lettered
        ]
        assert [ev.value["item"] for ev in MemorySink.stores[f"{tag}-out"]] == ["x0", "x3"]
        assert MemorySink.stores.get(f"{tag}-dlq", []) == []
        out = next(s for s in run.engine.stats if s.id == "out")
        assert (out.received, out.emitted, out.dead_lettered) == (2, 2, 0)
    finally:
        for suffix in ("first", "out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)
