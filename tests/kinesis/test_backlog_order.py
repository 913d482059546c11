"""The kinesis spout reads a backlog of several shards in arrival-time order (hF).

It handed over each GetRecords answer (up to ``limit`` records) of one shard before the next
shard's: on a stream that already held records, one shard's records ran far ahead of the
others' and a ``window`` bolt sent the others' to ``late`` (979 of 2,000 clicks on a 2-shard
stream). Now each round's ``limit`` is shared by the shards still behind, their records are
merged by arrival time, and records later than what a shard still behind has fetched wait
(neither handed out nor checkpointed). Arrival times here are set from each record's ``n`` (one
second apart), as a producer writing in time order gives them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from pydantic import Field

from squall.component import ComponentConfig
from squall.errors import SinkError
from squall.kinesis.shards import is_shard_end
from squall.sinks.base import Prepared, Sink, WriteContext
from squall.topology.checkpoint import MemoryCheckpointStore, SqlCheckpointStore
from tests.kinesis.kinesis_helpers import (
    assert_key_order,
    consume,
    event_ids,
    make_spout,
    payloads,
    split_shard,
)

BASE = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SHARD0, SHARD1 = "shardId-000000000000", "shardId-000000000001"
HASH = {0: str(1), 1: str(2**127 + 1)}  # a hash key in each half: shard 0, shard 1 of 2


def put_to(kinesis, stream: str, docs: list[dict], shard: int | None = None) -> None:
    """Put ``docs`` in order, each on shard ``d["n"] % 2`` (or ``shard``) of a 2-shard stream."""
    for i in range(0, len(docs), 500):
        chunk = docs[i : i + 500]
        resp = kinesis.put_records(
            StreamName=stream,
            Records=[
                {
                    "Data": orjson.dumps(d),
                    "PartitionKey": d["pk"],
                    "ExplicitHashKey": HASH[d["n"] % 2 if shard is None else shard],
                }
                for d in chunk
            ],
        )
        assert resp["FailedRecordCount"] == 0


def arrive_at_n(spout) -> None:
    """Record ``n`` arrived ``n`` seconds after BASE — or ``arrived`` seconds, if it says so (the
    stream's answers say so)."""

    def arrivals(parsed, **kwargs):
        for r in parsed.get("Records", []):
            d = orjson.loads(r["Data"])
            r["ApproximateArrivalTimestamp"] = BASE + timedelta(seconds=d.get("arrived", d["n"]))

    spout.client.meta.events.register("after-call.kinesis.GetRecords", arrivals)


def clicks(ns) -> list[dict]:
    return [{"pk": f"user-{n % 5}", "n": n} for n in ns]


def numbers(records) -> list[int]:
    return [d["n"] for d in payloads(records)]


@pytest.fixture
def sqlite_store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'checkpoints.db'}")
    yield SqlCheckpointStore(engine, "test-app", resource="warehouse")
    engine.dispose()


def test_a_two_shard_backlog_is_handed_out_in_arrival_order(kinesis, kinesis_mock, make_stream):
    """2,000 records one second apart, alternating shards, all written before the read: they
    come out in time order (before: shard 0's 1,000, then shard 1's)."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(2000)))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    arrive_at_n(spout)
    seen = consume(spout, max_records=100)
    assert numbers(seen) == list(range(2000))
    assert len(set(event_ids(seen))) == 2000


def test_a_sparse_shard_waits_for_the_dense_one(kinesis, kinesis_mock, make_stream):
    """Shard 0 holds a record a second, shard 1 one every ten seconds: a page of each reaches
    ten times further in time on shard 1. Its records after what shard 0 has fetched wait for
    shard 0's next pages; the limit is shared by the two shards behind."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(0, 1000, 2)), shard=0)
    put_to(kinesis, stream, clicks(range(1, 1000, 20)), shard=1)
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), limit=400)
    arrive_at_n(spout)
    calls: list[int] = []
    spout.client.meta.events.register(
        "provide-client-params.kinesis.GetRecords",
        lambda params, **kw: calls.append(params["Limit"]),
    )
    seen = consume(spout, max_records=20)
    got = numbers(seen)
    assert got == sorted(got) and len(got) == 500 + 50
    # both behind (full pages to come): the limit is shared, down to what a shard written at its
    # limit takes between two calls (1,000 records a second, 0.2 s: 200)
    assert calls[:2] == [200, 200]


def test_a_restart_mid_backlog_loses_and_repeats_nothing(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """Stopped after a few batches, with records of shard 1 fetched and waiting: they were not
    checkpointed, and the next run reads them (no loss, no duplicate)."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(0, 1000, 2)), shard=0)
    put_to(kinesis, stream, clicks(range(1, 1000, 20)), shard=1)
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store, limit=100)
    arrive_at_n(spout)

    class Stop(Exception):
        pass

    def stop(i, users):
        if i == 3:
            raise Stop

    first: list = []
    with pytest.raises(Stop):
        consume(spout, max_records=20, on_batch=lambda i, u: (first.extend(u), stop(i, u)))
    waiting = list(spout._lineage.states[SHARD1].buffer)  # noqa: SLF001
    assert waiting  # fetched, not handed out
    stored = sqlite_store.load(stream)
    assert int(stored[SHARD1].sequence_number) < int(waiting[0].meta.sequence_number)
    again = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store, limit=100)
    arrive_at_n(again)
    second = consume(again, max_records=20)
    got = numbers(first) + numbers(second)
    assert sorted(got) == sorted([*range(0, 1000, 2), *range(1, 1000, 20)])
    assert len(set(event_ids(first + second))) == len(got)
    assert numbers(second) == sorted(numbers(second))


def test_a_split_during_the_backlog_keeps_arrival_order_and_parents_first(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(600)))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store, limit=100)
    arrive_at_n(spout)

    def split_then_write(i, users):
        if i == 0:
            split_shard(kinesis, stream, SHARD0)
            put_to_children = clicks(range(600, 1200))
            for i in range(0, 600, 500):
                kinesis.put_records(
                    StreamName=stream,
                    Records=[
                        {"Data": orjson.dumps(d), "PartitionKey": d["pk"]}
                        for d in put_to_children[i : i + 500]
                    ],
                )

    seen = consume(spout, max_records=40, on_batch=split_then_write)
    got = numbers(seen)
    assert sorted(got) == list(range(1200)) and len(set(event_ids(seen))) == 1200
    assert got == sorted(got)
    assert_key_order(payloads(seen))
    children = {sid for sid in spout.shards() if sid not in (SHARD0, SHARD1)}
    order = [r.meta.shard_id for r in seen]
    last_parent = max(i for i, s in enumerate(order) if s == SHARD0)
    assert all(i > last_parent for i, s in enumerate(order) if s in children)
    assert is_shard_end(sqlite_store.load(stream)[SHARD0])


def test_an_empty_shard_holds_nothing_and_a_caught_up_read_is_one_batch(
    kinesis, kinesis_mock, make_stream
):
    """Shard 1 holds nothing: its first answer (empty, at its tip) lets shard 0's records go.
    Every shard at its tip: a round's records come out together, as before."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(300)), shard=0)
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    arrive_at_n(spout)
    batches = []
    seen = consume(spout, max_records=500, on_batch=lambda i, u: batches.append(len(u)))
    assert numbers(seen) == list(range(300))
    assert batches == [300]


WINDOW_TOPOLOGY = """
name: clicks
resources:
  warehouse: {{url: "sqlite:///{db}"}}
spout:
  type: kinesis
  stream: {stream}
  endpoint_url: {endpoint}
  poll_interval: 0.05
  idle_exit: 1.5
  checkpoint: {{store: sql, resource: warehouse}}
bolts:
  - {{id: decode, type: json}}
  - {{id: minutely, type: window, store: warehouse, key: [app], time_field: ts, size: 1m,
     aggregates: {{n: {{fn: count}}}}}}
sinks:
  - id: results
    type: warehouse
    resource: warehouse
    table: minutely
    mode: upsert
    key: [window_start, app]
    columns:
      window_start: {{path: window_start, type: timestamp}}
      app: app
      n: {{path: n, type: integer}}
  - {{id: dlq, type: dead_letter, path: "{dlq}"}}
"""


@pytest.mark.e2e
def test_squall_run_windows_a_two_shard_backlog_without_late_records(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    """The walkthrough's case: a new topology counting clicks per minute on a 2-shard stream
    that already holds 2,000 clicks one second apart (in time order on each shard). Before:
    979 went to `late` (all of shard 1's) with the default `limit`. Now none; each minute's
    count is exact."""
    from click.testing import CliRunner

    from squall.cli import main

    stream = make_stream(2)
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    docs = [
        {
            "pk": f"user-{n % 5}",
            "n": n,
            "app": "kiosk",
            "ts": (start + timedelta(seconds=n)).isoformat(),
        }
        for n in range(2000)
    ]
    put_to(kinesis, stream, docs)
    topo = tmp_path / "clicks.yaml"
    db, dlq = tmp_path / "wh.db", tmp_path / "dlq.jsonl"
    topo.write_text(
        WINDOW_TOPOLOGY.format(db=db, stream=stream, endpoint=kinesis_mock.endpoint, dlq=dlq)
    )
    result = CliRunner().invoke(main, ["run", str(topo), "--no-progress"])
    assert result.exit_code == 0, result.output
    late = dlq.read_text().splitlines() if dlq.exists() else []
    assert late == []
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT window_start, n FROM minutely")).all())
    engine.dispose()
    # 2,000 s from 09:00:00: minutes 09:00..09:32 closed, 60 each; 09:33's 20 clicks stay in
    # its open window (a stream has no end: no later record closes it yet)
    assert list(rows.values()) == [60] * 33
    assert sorted(rows)[0].startswith("2026-12-01 09:00") and sorted(rows)[-1].startswith(
        "2026-12-01 09:32"
    )


def test_a_parent_whose_commit_is_held_back_holds_the_others_one_round_only(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """A split in the backlog: shard 1's records after the parent's end wait for its children,
    which start at the commit of the parent's last records. A sink may hold that commit back
    until more records come (here: no commit at all): then the others go on a round later
    instead of waiting for ever."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(200)))
    split_shard(kinesis, stream, SHARD0)
    put_to(kinesis, stream, clicks(range(200, 400)))  # even: the lower child; odd: shard 1
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store, limit=100, idle_exit=0.5)
    arrive_at_n(spout)
    got = numbers(consume(spout, max_records=40, commit=False))
    assert got == sorted([*range(0, 200, 2), *range(1, 400, 2)])
    assert spout.shards()[SHARD0] == "ended"


def test_the_lag_of_a_held_back_shard_is_the_age_of_its_first_waiting_record(
    kinesis, kinesis_mock, make_stream
):
    """Records held back behind another shard have not reached the engine: the shard's lag is
    their age, not its last answer's MillisBehindLatest."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(0, 1000, 2)), shard=0)
    put_to(kinesis, stream, clicks(range(1, 1000, 20)), shard=1)
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), limit=400)
    arrive_at_n(spout)
    spout._now = lambda: BASE + timedelta(seconds=2000)  # noqa: SLF001
    batches = spout.read(1000)
    first = numbers(next(batches))
    assert first == sorted(first) and max(first) <= 398  # shard 0's first page (200) reaches 398 s
    waiting = spout._lineage.states[SHARD1].buffer[0]  # noqa: SLF001
    n = orjson.loads(waiting.data)["n"]
    assert n > 398
    assert spout.lag()[SHARD1] == (2000 - n) * 1000
    batches.close()


class CrashConfig(ComponentConfig):
    after: int = Field(5)


class CrashSink(Sink):
    """Fails the run at its ``after``-th batch (that batch is not committed): a crash mid-backlog."""

    Config = CrashConfig
    batches = 0

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        CrashSink.batches += 1
        if CrashSink.batches >= self.config.after:
            raise SinkError("crash mid-backlog (test)")


CRASH_SINK = "  - {id: crash, type: 'tests.kinesis.test_backlog_order:CrashSink', after: 5}\n"


@pytest.mark.e2e
def test_squall_run_crashed_mid_backlog_resumes_without_loss_or_double_counts(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    """The same backlog, read in batches of 50; the run fails at its 5th batch (records fetched
    and held back then were never checkpointed). The next run resumes: no click lost, none
    counted twice, none late."""
    from click.testing import CliRunner

    from squall.cli import main

    stream = make_stream(2)
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    docs = [
        {
            "pk": f"user-{n % 5}",
            "n": n,
            "app": "kiosk",
            "ts": (start + timedelta(seconds=n)).isoformat(),
        }
        for n in range(2000)
    ]
    put_to(kinesis, stream, docs)
    db, dlq = tmp_path / "wh.db", tmp_path / "dlq.jsonl"
    text = WINDOW_TOPOLOGY.format(db=db, stream=stream, endpoint=kinesis_mock.endpoint, dlq=dlq)
    crashing, topo = tmp_path / "crashing.yaml", tmp_path / "clicks.yaml"
    crashing.write_text(text + CRASH_SINK)
    topo.write_text(text)
    CrashSink.batches = 0
    runner = CliRunner()
    first = runner.invoke(main, ["run", str(crashing), "--no-progress", "--batch-size", "50"])
    assert first.exit_code != 0 and CrashSink.batches == 5
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert 0 < conn.execute(sa.text("SELECT count(*) FROM minutely")).scalar() < 33
    again = runner.invoke(main, ["run", str(topo), "--no-progress", "--batch-size", "50"])
    assert again.exit_code == 0, again.output
    assert not dlq.exists() or dlq.read_text() == ""
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT window_start, n FROM minutely")).all())
    engine.dispose()
    assert list(rows.values()) == [60] * 33  # every click counted once, none late


def test_an_arrival_time_out_of_order_within_a_shard_does_not_stall_it(
    kinesis, kinesis_mock, make_stream
):
    """Arrival times are approximate: a record may say it arrived after the next ones of its
    shard. The shard's bound is the latest arrival fetched, not its last record's: else that
    record waited for its own shard, which is not read while its records wait — for ever."""
    stream = make_stream(2)
    put_to(kinesis, stream, clicks(range(0, 400, 2)), shard=0)
    odd = clicks(range(1, 120, 2))
    odd[5]["arrived"] = 60  # record 11 says it arrived at 60 s, after 13..59
    put_to(kinesis, stream, odd, shard=1)
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), limit=60)
    arrive_at_n(spout)
    got = numbers(consume(spout, max_records=20))
    assert sorted(got) == sorted([*range(0, 400, 2), *range(1, 120, 2)])
