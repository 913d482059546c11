"""Property tests of the delivery contract with sinks written in the batch's SQL transaction.

Two sinks share the batch's SQLite transaction (``one``, ``two``), a third may write on its own
(``three``); each record may meet, at one sink: a poison write (a record's fault), a write that
fails whole but not in parts (a size limit), a refusal for good (the event, or a copy of it), a
partial failure, a transient error, a ``prepare`` that raises on it or leaves it out. Over random
batches of two shards, with or without a dead-letter sink, redelivering or not (the Lambda
producer): every record has one outcome; a committed one is a row in every sink; a dead-lettered
one is in the dead letters with its reason; a failed or held one is written by no sink of the
transaction (unless an isolation's part writes ran); the checkpoint stops before each shard's
first failed or held record; sink ``three`` (on its own) writes each record at most once (a
poison record's isolation wrote every other event twice). Sink ``two``'s ``prepare`` makes new
events, which it cannot read back. It found the refusals the isolation's part writes dropped, the refused copies
written again for ever, and such a sink prepared again with its own events
(``test_fourth_review.py``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from squall.errors import SinkError, TransientError
from squall.event import Event, Failure, Record, RecordMeta
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.testing import MemorySink, MemorySinkConfig, memory_stores, run_topology
from squall.topology.outcomes import Outcome

SINKS = ("one", "two", "three")
KINDS = ("poison", "big", "refuse", "copy", "fail", "transient", "ppoison", "lose")
FAULT = st.sampled_from(["ok"] * 6 + [f"{k}:{s}" for k in KINDS for s in SINKS])


class ChaosSink(Sink):
    """Rows ``(sink, n)`` of table ``rows``; the faults a payload names for this sink (above)."""

    Config = MemorySinkConfig

    def open(self, resources=None) -> None:
        self.engine = resources.sql("db")
        self.blipped = False
        self.writes = 0
        with self.engine.begin() as conn:
            conn.execute(text("create table if not exists rows (sink text, n int)"))

    def transaction_resource(self) -> str | None:
        return "db" if self.id != "three" else None

    def _is(self, ev: Event, kind: str) -> bool:
        return ev.value.get(kind) == self.id

    def prepare(self, events: list[Event]) -> Prepared:
        if self.id == "two" and not all(ev.value.get("orig") for ev in events):
            raise KeyError("orig")  # (as a record's fault)
        if any(self._is(ev, "ppoison") for ev in events):
            raise KeyError("prepare cannot take it")
        kept = [ev for ev in events if not self._is(ev, "lose")]
        if self.id != "two":
            return Prepared(kept)
        rows = []  # ``two`` makes new events of them, which it cannot read back ("orig")
        for ev in kept:
            row = ev.fork()
            row.value = {k: v for k, v in ev.value.items() if k != "orig"}
            rows.append(row)
        return Prepared(rows)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        events = prepared.events
        self.writes += 1
        if self.writes > 200:  # a batch written again and again (the test fails, never hangs)
            raise SinkError(f"{self.id}: written {self.writes} times")
        if not self.blipped and any(self._is(ev, "transient") for ev in events):
            self.blipped = True
            raise TransientError(f"{self.id}: connection reset")
        if any(self._is(ev, "poison") for ev in events):
            raise ValueError("cannot take it")
        if len(events) > 1 and any(self._is(ev, "big") for ev in events):
            raise ValueError("request too large")
        refused, failed, rows = [], [], []
        for ev in events:
            if self._is(ev, "refuse") or self._is(ev, "copy"):
                out = ev.fork() if self._is(ev, "copy") else ev
                out.failure = Failure(self.id, "refused")
                refused.append(out)
            elif self._is(ev, "fail"):
                failed.append(ev)
            else:
                rows.append({"s": self.id, "n": ev.value["n"]})
        if rows and ctx.connection is not None:
            ctx.connection.execute(text("insert into rows values (:s, :n)"), rows)
        elif rows:
            with self.engine.begin() as conn:
                conn.execute(text("insert into rows values (:s, :n)"), rows)
        return WriteResult(failed=failed, rejected=refused) if refused or failed else None


def topology(db, tag: str, *, third: bool, dead_letter: bool) -> str:
    sinks = [f"  - {{id: {s}, type: '{__name__}:ChaosSink'}}" for s in SINKS[: 3 if third else 2]]
    if dead_letter:
        sinks.append(
            f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}"
        )
    body = "\n".join(sinks)
    return f"""
name: txprop
resources: {{db: {{url: 'sqlite:///{db}'}}}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts: [{{id: decode, type: json}}]
sinks:
{body}
"""


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.lists(st.tuples(FAULT, st.integers(0, 1)), min_size=1, max_size=10),
    dead_letter=st.booleans(),
    third=st.booleans(),
    redelivers=st.booleans(),
)
def test_transaction_sinks_keep_the_delivery_contract(
    tmp_path_factory, data, dead_letter, third, redelivers
):
    db = tmp_path_factory.mktemp("tx") / "w.db"
    tag = uuid.uuid4().hex[:8]
    seq = {0: 0, 1: 0}
    records = []
    for n, (fault, shard) in enumerate(data):
        seq[shard] += 1
        payload: dict = {"n": n, "orig": True}
        if fault != "ok":
            kind, sink = fault.split(":")
            payload[kind] = sink
        meta = RecordMeta("s", f"sh{shard}", str(seq[shard]), 0, "pk")
        records.append(Record(orjson.dumps(payload), meta))
    yaml = topology(db, tag, third=third, dead_letter=dead_letter)
    with memory_stores():
        run = run_topology(
            yaml, records, batch_size=len(records), sleep=lambda s: None, redelivers=redelivers
        )
        dead = {ev.value["n"] for ev in MemorySink.stores.get(f"{tag}-dlq", [])}
    [result] = run.results
    outcomes = result.records
    assert [o.index for o in outcomes] == list(range(len(records)))
    rows: dict[str, set[int]] = {s: set() for s in SINKS}
    sent: Counter[int] = Counter()  # rows of ``three`` (on its own: plain inserts, visible)
    with sqlite3.connect(db) as conn:
        for sink, n in conn.execute("select sink, n from rows"):
            rows[sink].add(n)
            if sink == "three":
                sent[n] += 1
    # A sink written on its own sends each event at most once a batch, whatever another
    # record's fault made the engine do (the isolation's parts are its write, not a rehearsal).
    assert all(k == 1 for k in sent.values()), (sent, data)
    isolating = any(f.split(":")[0] in ("poison", "big", "ppoison") for f, _ in data)
    for o in outcomes:
        if o.outcome is Outcome.COMMITTED:
            assert all(o.index in rows[s] for s in SINKS[: 3 if third else 2]), (o, data)
        elif o.outcome is Outcome.DEAD_LETTERED:
            assert o.index in dead and o.component and o.reason, (o, data)
        elif o.outcome is Outcome.FAILED:
            assert o.reason, (o, data)
        if redelivers and not isolating and o.outcome in (Outcome.FAILED, Outcome.HELD):
            assert o.index not in rows["one"] | rows["two"], (o, data)
    if not redelivers:
        return
    for shard in ("sh0", "sh1"):
        safe = None
        for o in outcomes:
            if o.shard_id != shard:
                continue
            if o.outcome in (Outcome.FAILED, Outcome.HELD):
                break
            safe = o.position
        assert result.checkpoint.get(shard) == safe, (shard, data)
