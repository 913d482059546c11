"""hF's review of held records (engine: ``Outcome.HELD``): what the first version missed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from squall.event import Failure, Record, RecordMeta
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.testing import MemorySinkConfig, run_topology
from squall.topology.outcomes import Outcome


def records(spec: list[tuple[str, dict]]) -> list[Record]:
    seq: dict[str, int] = {}
    out = []
    for shard, payload in spec:
        seq[shard] = seq.get(shard, 0) + 1
        out.append(Record(orjson.dumps(payload), RecordMeta("s", shard, str(seq[shard]), 0, "pk")))
    return out


class TxSink(Sink):
    """Rows ``(sink, n)`` in table ``rows`` of resource ``db``: in the batch's transaction when the
    engine gives one, else in a transaction of its own (the isolation's part writes). An event
    whose payload names this sink in ``poison`` fails its write (a record fault); one naming it
    in ``refuse`` is refused for good (``WriteResult.rejected``); one naming it in ``fail`` is
    not written, the rest are (``WriteResult.failed``: a partial failure)."""

    Config = MemorySinkConfig

    def open(self, resources=None) -> None:
        self.engine = resources.sql("db")
        with self.engine.begin() as conn:
            conn.execute(text("create table if not exists rows (sink text, n int)"))

    def transaction_resource(self) -> str | None:
        return "db"

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if any(ev.value.get("poison") == self.id for ev in prepared.events):
            raise ValueError(f"{self.id} cannot take it")
        refused = [ev for ev in prepared.events if ev.value.get("refuse") == self.id]
        for ev in refused:
            ev.failure = Failure(self.id, "refused")
        if refused:
            return WriteResult(rejected=refused)
        failed = [ev for ev in prepared.events if ev.value.get("fail") == self.id]
        rows = [{"s": self.id, "n": ev.value["n"]} for ev in prepared.events if ev not in failed]
        if ctx.connection is not None:
            ctx.connection.execute(text("insert into rows values (:s, :n)"), rows)
        else:
            with self.engine.begin() as conn:
                conn.execute(text("insert into rows values (:s, :n)"), rows)
        return WriteResult(failed=failed) if failed else None


def rows(db: Path, sink: str) -> list[int]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return sorted(n for (n,) in conn.execute("select n from rows where sink = ?", (sink,)))


def two_tx_sinks(name: str, db: Path) -> str:
    """A topology whose two sinks, ``one`` then ``two``, write in the batch's transaction on ``db``."""
    return f"""
name: {name}
resources: {{db: {{url: 'sqlite:///{db}'}}}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: one, type: '{__name__}:TxSink'}}
  - {{id: two, type: '{__name__}:TxSink'}}
"""


@pytest.mark.parametrize("fault", ["poison", "refuse"])
def test_a_record_failed_in_the_transaction_holds_back_the_rest_of_its_shard(
    tmp_path: Path, fault: str
):
    """The first sink of the batch's transaction fails record 1 alone, or refuses it (no
    dead-letter sink: it fails). The second sink of the transaction was written with it and
    record 2 after it all the same — the failure was known before the transaction ran again."""
    db = tmp_path / "w.db"
    text_ = two_tx_sinks("txhold", db)
    batch = records([("A", {"n": 0}), ("A", {"n": 1, fault: "one"}), ("A", {"n": 2})])
    run = run_topology(text_, batch, batch_size=3)
    [result] = run.results
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED, Outcome.FAILED, Outcome.HELD]
    assert rows(db, "two") == [0]


@pytest.mark.parametrize("failing", ["one", "two"])
def test_a_record_a_transaction_sink_reports_failed_is_written_by_no_sink_of_it(
    tmp_path: Path, failing: str
):
    """A sink of the batch's transaction reports record 1 failed (``WriteResult.failed``: not
    written, comes again). The transaction's other sink wrote it in the same transaction — before
    it (`two` failing) or after it — and record 2 after it: the transaction is rolled back and
    written again without them, so the redelivery is their only write."""
    db = tmp_path / "w.db"
    text_ = two_tx_sinks("txfail", db)
    batch = records(
        [("A", {"n": 0}), ("A", {"n": 1, "fail": failing}), ("A", {"n": 2}), ("B", {"n": 3})]
    )
    run = run_topology(text_, batch, batch_size=4)
    [result] = run.results
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.FAILED,
        Outcome.HELD,
        Outcome.COMMITTED,
    ]
    assert rows(db, "one") == rows(db, "two") == [0, 3]
    stats = {s.id: s for s in run.engine.stats}
    # the failing sink was given record 1 and failed it; record 2 is held (counted when it comes)
    assert (stats[failing].received, stats[failing].emitted, stats[failing].failed) == (3, 2, 1)
    other = "two" if failing == "one" else "one"
    assert (stats[other].received, stats[other].emitted, stats[other].failed) == (2, 2, 0)


def test_a_sink_counts_in_only_the_events_it_was_given_to_write():
    """Events held back from a sink are not its records in: they count when they come again.
    They were counted in and never out, dead-lettered, filtered or failed, so every stuck
    delivery showed the sink losing them (``squall_records_total{component}``, the summary)."""
    text_ = """
name: hold-counts
spout: {type: 'squall.testing:ListSpout'}
bolts:
  - {id: decode, type: json}
  - {id: faulty, type: 'squall.testing:FaultyBolt'}
sinks:
  - {id: first, type: 'squall.testing:FaultySink'}
  - {id: second, type: 'squall.testing:MemorySink'}
"""
    batch = records(
        [
            ("A", {"n": 0}),
            ("B", {"n": 1}),
            ("B", {"n": 2, "sink_fail": True}),  # the first sink writes B's rest, the second not
            ("A", {"n": 3, "fail": "bad"}),  # no dead-letter sink: fails before the sinks
            ("B", {"n": 4}),
            ("A", {"n": 5}),
        ]
    )
    run = run_topology(text_, batch, batch_size=len(batch))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.COMMITTED,
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.HELD,
        Outcome.HELD,
    ]
    stats = {s.id: s for s in run.engine.stats}
    first, second = stats["first"], stats["second"]
    # first: 0, 1, 2 (failed in its write) and 4 (written with them); 3 and 5 held back
    assert (first.received, first.emitted, first.failed) == (4, 3, 1)
    # second: 0 and 1; 2 failed and 4 after it held back, 3 and 5 held back
    assert (second.received, second.emitted, second.failed) == (2, 2, 0)


def test_a_batch_without_failure_looks_no_record_up_among_the_held():
    """A batch with a filtered record (any filter bolt) takes ``_codes``' record-by-record path:
    each committed record was looked up among the held ones first (+23 % of that path's time,
    ~70 µs per 10,000 records) though none can be held without a failure."""
    from squall.topology.executor import Engine
    from squall.topology.outcomes import _Ledger

    class Counted(frozenset):
        lookups = 0

        def __contains__(self, item: object) -> bool:
            Counted.lookups += 1
            return super().__contains__(item)

    ledger = _Ledger(1000)
    ledger.committed = [1] * 1000
    ledger.committed[3], ledger.dropped[3] = 0, 1
    ledger.held = Counted()
    codes = Engine._codes(ledger)
    assert codes.count(0) == 999 and Counted.lookups == 0


class CountingSink(Sink):
    """Keeps the payloads of each ``prepare`` call (``CountingSink.prepared[id]``)."""

    Config = MemorySinkConfig
    prepared: dict[str, list[list[int]]] = {}

    def open(self, resources=None) -> None:
        CountingSink.prepared[self.id] = []

    def prepare(self, events: list) -> Prepared:
        CountingSink.prepared[self.id].append([ev.value["n"] for ev in events])
        return Prepared(events)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        return None


def test_records_failing_before_the_sinks_hold_back_before_any_sink_prepares():
    """A record rejected with no dead-letter sink fails at step 1, known before the sinks
    prepare: every sink prepared the whole batch, then the events left after the hold again —
    ~20 ms per sink for 9,000 warehouse rows on SQLite (10,000 events over 10 shards, the first
    record of one failing). Each sink prepares once now, without the held events."""
    text_ = f"""
name: hold-prepare
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: one, type: '{__name__}:CountingSink'}}
  - {{id: two, type: '{__name__}:CountingSink'}}
"""
    batch = records(
        [("A", {"n": 0}), ("A", {"n": 1, "fail": "x"}), ("B", {"n": 2}), ("A", {"n": 3})]
    )
    run = run_topology(text_, batch, batch_size=len(batch))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.FAILED,
        Outcome.COMMITTED,
        Outcome.HELD,
    ]
    assert CountingSink.prepared == {"one": [[0, 2]], "two": [[0, 2]]}
    stats = {s.id: s for s in run.engine.stats}
    assert (stats["one"].received, stats["one"].emitted) == (2, 2)
