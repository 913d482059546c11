"""Kinesis I/O review: defects found by an adversarial review, each tested against kinesis-mock
(or with the real AWS error shape injected where kinesis-mock cannot produce the condition)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from squall.errors import SquallError
from squall.kinesis.shards import is_shard_end
from squall.topology.checkpoint import SqlCheckpointStore
from tests.kinesis.kinesis_helpers import (
    FakeClock,
    consume,
    make_spout,
    payloads,
    put_plain,
    split_shard,
)


def docs(n: int, start: int = 0) -> list[dict]:
    return [{"pk": f"user-{i % 5}", "n": i} for i in range(start, start + n)]


@pytest.fixture
def sqlite_store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'checkpoints.db'}")
    yield SqlCheckpointStore(engine, "test-app", resource="warehouse")
    engine.dispose()


def recreate(kinesis, stream: str, shards: int) -> None:
    """Delete the stream and create it again under the same name."""
    kinesis.delete_stream(StreamName=stream)
    deadline = time.monotonic() + 20
    while kinesis.list_streams()["StreamNames"].count(stream):
        assert time.monotonic() < deadline, "stream not deleted"
        time.sleep(0.05)
    kinesis.create_stream(StreamName=stream, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def test_recreated_stream_with_a_shard_end_checkpoint_is_refused_not_skipped(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """A shard read to its end (SHARD_END stored) whose id is open again in a stream created
    anew under the same name: the spout skipped it as finished, reading nothing of the new
    stream and exiting cleanly. It now stops with an error naming the shard."""
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(10))
    split_shard(kinesis, stream, "shardId-000000000000")
    assert len(consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store))) == 10
    assert is_shard_end(sqlite_store.load(stream)["shardId-000000000000"])

    recreate(kinesis, stream, 1)
    put_plain(kinesis, stream, docs(10, start=10))
    with pytest.raises(SquallError, match=r"shardId-000000000000.*SHARD_END.*created again"):
        make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    # once the checkpoints are deleted (as the error says), the new stream is read whole
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM squall_checkpoints"))
    seen = consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store))
    assert sorted(d["n"] for d in payloads(seen)) == list(range(10, 20))


def test_explicit_hash_key_kinesis_refuses_is_rejected_not_failing_the_call(
    kinesis, kinesis_mock, make_stream
):
    """Explicit hash keys that are decimals to Python but not to Kinesis (leading zero, digits of
    another script) passed the check, and Kinesis refused the whole PutRecords call
    (InvalidArgumentException): SinkError, the batch failed on every delivery. They are now
    rejected in ``prepare`` (dead-lettered with the reason); the other records are written."""
    from squall.event import Event, RecordMeta
    from squall.sinks.base import WriteContext
    from tests.kinesis.test_kinesis_sink import make_sink, read_all

    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", explicit_hash_key="h")
    hashes = ["5", "007", "\u0661\u0662", "\u00b2", "0", "00"]
    evs = [
        Event(b"", RecordMeta("s", "shardId-0", str(10 + i)), f"e{i}", i, value={"pk": "a", "h": h})
        for i, h in enumerate(hashes)
    ]
    prepared = sink.prepare(evs)
    assert [ev.value["h"] for ev in prepared.events] == ["5", "0"]
    assert {ev.value["h"] for ev in prepared.rejected} == {"007", "\u0661\u0662", "\u00b2", "00"}
    assert all("explicit hash key" in ev.failure.reason for ev in prepared.rejected)
    assert sink.write_batch(prepared, WriteContext()) is None
    assert len(read_all(kinesis_mock.endpoint, stream)) == 2


RAW_TOPOLOGY = """
name: review-raw
spout: {type: stdin}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}
"""


def test_resume_inside_an_aggregate_keeps_a_user_record_that_starts_with_the_magic(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """Resuming inside a KPL aggregate, the spout hands out the aggregate's remaining user
    records; the engine de-aggregated them again, so a user record whose bytes start with the
    KPL magic (binary payloads, ``format: raw`` forwarding) was dead-lettered as a "corrupt KPL
    aggregate" — though its first delivery wrote it. A record with a sub-sequence number is a
    user record already: it is now taken as it is, as on the first delivery."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    from squall.event import Position
    from squall.kinesis.kpl import KPL_MAGIC
    from squall.testing import memory_stores, run_topology

    stream = make_stream(1)
    users = [b"plain-0", KPL_MAGIC + b"binary-1", b"plain-2"]
    agg = RecordAggregator()
    for data in users:
        agg.add_user_record("k", data)
    pk, _, data = agg.clear_and_get().get_contents()
    kinesis.put_record(StreamName=stream, PartitionKey=pk, Data=data)

    first = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    (whole,) = next(first.read(10))
    with memory_stores() as stores:  # the first delivery writes every user record
        run_topology(RAW_TOPOLOGY, [whole])
        assert [ev.raw for ev in stores["out"]] == users and not stores.get("dlq")
    # user record 0 was committed, then the process stopped
    commit_positions = first.test_store.save  # type: ignore[attr-defined]
    commit_positions(stream, {whole.meta.shard_id: Position(whole.meta.sequence_number, 0)})

    resumed = [
        r for b in make_spout(kinesis_mock.endpoint, stream, store=sqlite_store).read(10) for r in b
    ]
    with memory_stores() as stores:
        run_topology(RAW_TOPOLOGY, resumed)
        assert not stores.get("dlq"), stores["dlq"][0].failure
        assert [ev.raw for ev in stores["out"]] == users[1:]
        assert [ev.meta.sub_sequence_number for ev in stores["out"]] == [1, 2]


def test_idle_exit_waits_for_a_throttled_shard(kinesis, kinesis_mock, make_stream):
    """``idle_exit`` means "the stream is drained": a shard throttled (or failing with 5xx) for
    longer than ``idle_exit`` ended the run with its records unread (exit 0, as if drained).
    Backing off now counts as activity."""
    from squall.aws import Backoff
    from squall.topology.checkpoint import MemoryCheckpointStore
    from tests.kinesis.kinesis_helpers import FakeClock
    from tests.kinesis.test_kinesis_spout import inject

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    spout = make_spout(
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=FakeClock()
    )
    spout._backoff = Backoff(base=0.1, cap=10.0, rng=lambda: 1.0)  # noqa: SLF001
    inject(spout.client, "GetRecords", ["ProvisionedThroughputExceededException"] * 5)
    seen = consume(spout)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(5))
    assert spout.stats.throttled == 5


def test_idle_exit_waits_while_a_shard_is_behind(kinesis, kinesis_mock, make_stream):
    """GetRecords may answer no record while the shard is still behind its tip
    (``MillisBehindLatest`` > 0: a stretch of the shard without data): the run ended there."""
    from squall.topology.checkpoint import MemoryCheckpointStore
    from tests.kinesis.kinesis_helpers import FakeClock

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    spout = make_spout(
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=FakeClock()
    )
    empty_answers = [10]

    def behind(model, params, **kwargs):
        if not empty_answers[0]:
            return None
        empty_answers[0] -= 1

        class Http:
            status_code = 200

        body = {"Records": [], "NextShardIterator": params["body"] and _iterator(params)}
        return Http(), {**body, "MillisBehindLatest": 60_000}

    spout.client.meta.events.register("before-call.kinesis.GetRecords", behind)
    seen = consume(spout)
    assert not empty_answers[0]
    assert sorted(d["n"] for d in payloads(seen)) == list(range(5))


def _iterator(params) -> str:
    import orjson

    return orjson.loads(params["body"])["ShardIterator"]


def test_expired_latest_iterator_before_any_record_loses_nothing(
    kinesis, kinesis_mock, make_stream
):
    """``start: latest``, nothing read yet, and the iterator expires (no GetRecords for 5
    minutes: a long batch elsewhere): the renewal asked for LATEST again, skipping every record
    that arrived in between. It now starts at the time of the first LATEST iterator."""
    from squall.topology.checkpoint import MemoryCheckpointStore
    from tests.kinesis.test_kinesis_spout import inject, record_calls

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))  # before the spout opened: not read with `latest`
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), start="latest")
    put_plain(kinesis, stream, docs(5, start=5))  # while the iterator was idle, then expired
    inject(spout.client, "GetRecords", ["ExpiredIteratorException"])
    renewals = record_calls(spout.client, "GetShardIterator")
    seen = consume(spout)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(5, 10))
    assert spout.stats.expired_iterators == 1
    assert [c["ShardIteratorType"] for c in renewals] == ["AT_TIMESTAMP"]


def test_lambda_reports_the_aggregates_sequence_number_for_a_failed_sub_record(tmp_path):
    """Lambda retries from a Kinesis sequence number: a failed user record of a KPL aggregate is
    reported as its aggregate's sequence number (there is no other for Lambda to resume at)."""
    import sqlite3

    import orjson
    from aws_kinesis_agg.aggregator import RecordAggregator

    from squall.deploy.lambda_consumer import make_handler
    from tests.deploy.test_lambda_consumer import topology_for
    from tests.factories import kinesis_lambda_event

    agg = RecordAggregator()
    for doc in ({"n": 2}, {"n": 3, "fail": "bad"}, {"n": 4}):
        agg.add_user_record("k", orjson.dumps(doc))
    _, _, aggregate = agg.clear_and_get().get_contents()
    handler = make_handler(topology_for(tmp_path, dlq=False))
    event = kinesis_lambda_event([{"n": 1}, aggregate, {"n": 5}])
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}
    db = sqlite3.connect(tmp_path / "w.db")
    assert 1 in {n for (n,) in db.execute("select n from events")}


def test_child_of_a_parent_trimmed_after_this_application_read_it_starts_at_its_start(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """``start: latest``: a child without a checkpoint starts at TRIM_HORIZON when this
    application read its parent — but a parent trimmed past retention is no longer listed, and
    the child then started at LATEST although the parent's SHARD_END is in the store, skipping
    every record written to the child so far. The stored checkpoint now counts too."""
    from squall.component import ComponentContext
    from squall.kinesis.shards import SHARD_END
    from squall.spouts.kinesis import KinesisSpout, KinesisSpoutConfig

    stream = make_stream(1)
    parent = "shardId-000000000000"
    put_plain(kinesis, stream, docs(5))
    split_shard(kinesis, stream, parent)
    put_plain(kinesis, stream, docs(10, start=5))  # the children's records
    sqlite_store.save(stream, {parent: SHARD_END})  # an earlier run read the parent to its end

    def trimmed(parsed, **kwargs):  # ListShards no longer lists a shard past retention
        parsed["Shards"] = [s for s in parsed.get("Shards", []) if s["ShardId"] != parent]

    spout = KinesisSpout(
        KinesisSpoutConfig(
            id="spout",
            type="kinesis",
            stream=stream,
            endpoint_url=kinesis_mock.endpoint,
            start="latest",
            poll_interval=0.05,
            idle_exit=1.0,
        ),
        ComponentContext("test-app"),
    )
    spout.open(None)
    spout.client.meta.events.register("after-call.kinesis.ListShards", trimmed)
    spout.test_store = sqlite_store  # type: ignore[attr-defined]
    spout.resume(sqlite_store.load(stream))
    assert parent not in spout.shards()
    seen = consume(spout)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(5, 15))


def test_partition_key_length_counts_utf16_code_units_as_kinesis_does(
    kinesis, kinesis_mock, make_stream
):
    """Kinesis (and the KPL, in Java) counts a partition key's 256 characters in UTF-16 code
    units: an emoji counts two. A key of 129-256 emoji passed the sink's check, and Kinesis
    refused the whole PutRecords call — every record of the batch failed on every delivery. Such
    keys are now rejected in ``prepare``; an event id that long is keyed by its digest."""
    from squall.event import Event, RecordMeta
    from squall.kinesis.putrecords import key_for_id
    from squall.sinks.base import WriteContext
    from tests.kinesis.test_kinesis_sink import make_sink, read_all

    emoji = "\U0001f600"
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    keys = ["a", emoji * 128, emoji * 129, emoji * 256]
    evs = [
        Event(b"", RecordMeta("s", "shardId-0", str(10 + i)), f"e{i}", i, value={"pk": k})
        for i, k in enumerate(keys)
    ]
    prepared = sink.prepare(evs)
    assert [ev.value["pk"] for ev in prepared.events] == keys[:2]
    assert all("UTF-16" in ev.failure.reason for ev in prepared.rejected)
    assert len(prepared.rejected) == 2
    assert sink.write_batch(prepared, WriteContext()) is None
    assert len(read_all(kinesis_mock.endpoint, stream)) == 2

    long_id = emoji * 200  # event ids from a payload field
    assert key_for_id(long_id) != long_id and len(key_for_id(long_id)) == 32
    assert key_for_id(emoji * 128) == emoji * 128


def test_a_parent_trimmed_while_listed_is_done_not_a_stopped_run(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """A closed parent trimmed past retention between ListShards and its reading answers
    ResourceNotFoundException (the real AWS shape is injected: kinesis-mock never trims). The
    spout stopped with "reading shard … failed"; it now lists the shards again and, the shard
    being gone, is done with it — its children are read."""
    from tests.kinesis.test_kinesis_spout import inject

    stream = make_stream(1)
    parent = "shardId-000000000000"
    put_plain(kinesis, stream, docs(5))
    split_shard(kinesis, stream, parent)
    put_plain(kinesis, stream, docs(10, start=5))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    assert spout.shards()[parent] == "reading"
    gone = []

    def trimmed(parsed, **kwargs):
        if gone:
            parsed["Shards"] = [s for s in parsed.get("Shards", []) if s["ShardId"] != parent]

    spout.client.meta.events.register("after-call.kinesis.ListShards", trimmed)
    gone.append(parent)
    spout._lineage.states[parent].iterator = None  # noqa: SLF001 - it asks for a new iterator
    inject(spout.client, "GetShardIterator", ["ResourceNotFoundException"])
    seen = consume(spout)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(5, 15))
    assert spout.shards()[parent] == "finished"


def test_a_parents_last_record_a_corrupt_aggregate_does_not_hold_back_its_children(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    """An aggregate whose digest is right but whose user record points out of the key table is
    dead-lettered whole, as sub-record 0 — but the spout took its last position as that of its
    last user record (the protobuf's record count), so the engine's checkpoint never covered it:
    the parent it ended never finished and its children were never read (at every restart)."""
    import hashlib

    from squall.errors import DecodeError
    from squall.event import Position, Record, RecordMeta
    from squall.kinesis.kpl import KPL_MAGIC, _message_class, deaggregate, last_position
    from tests.kinesis.kinesis_helpers import commit_positions, last_positions

    msg = _message_class()()
    msg.partition_key_table.append("pk")
    for index in (0, 5):  # the second user record's key index is out of the table
        r = msg.records.add()
        r.partition_key_index = index
        r.data = b'{"pk": "x", "n": -1}'
    body = msg.SerializeToString()
    corrupt = KPL_MAGIC + body + hashlib.md5(body).digest()
    assert last_position(Record(corrupt, RecordMeta("s", "sh", "7"))) == Position("7", 0)

    stream = make_stream(1)
    parent = "shardId-000000000000"
    put_plain(kinesis, stream, docs(3))
    kinesis.put_record(StreamName=stream, PartitionKey="pk", Data=corrupt)
    split_shard(kinesis, stream, parent)
    put_plain(kinesis, stream, docs(5, start=3))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    seen, dead = [], []
    for batch in spout.read(100):  # as the engine does: a corrupt aggregate is one unit
        units = []
        for rec in batch:
            try:
                units.extend(deaggregate(rec))
            except DecodeError:
                dead.append(rec)
                units.append(rec)
        seen.extend(u for u in units if u.data[:4] != KPL_MAGIC)
        commit_positions(spout, last_positions(units))
    commit_positions(spout, {})
    assert len(dead) == 1
    assert sorted(d["n"] for d in payloads(seen)) == list(range(8))
    assert spout.shards()[parent] == "finished"


@pytest.mark.parametrize(
    ("code", "status", "retried", "transient"),
    [
        ("AccessDeniedException", 400, False, False),
        ("LimitExceededException", 400, True, True),
    ],
)
def test_list_shards_refused_for_good_is_not_an_outage(
    kinesis_mock, make_stream, monkeypatch, code, status, retried, transient
):
    """ListShards answered AccessDenied (the role lacks kinesis:ListShards) was raised as a
    TransientError — "may pass": `squall run` exited 1 (a failure to retry) instead of 2 (a
    misconfiguration). A throttled ListShards is still retried, then transient."""
    from squall.errors import TransientError
    from squall.spouts import kinesis as kinesis_spout
    from tests.moto_standin import client_error

    stream = make_stream(1)
    calls = []

    def refused(client, ref):
        calls.append(1)
        raise client_error(code, "not allowed", status)

    monkeypatch.setattr(kinesis_spout, "list_shards", refused)
    with pytest.raises(SquallError, match=f"ListShards failed.*{code}") as raised:
        make_spout(kinesis_mock.endpoint, stream, clock=FakeClock())  # backoff not slept
    assert isinstance(raised.value, TransientError) is transient
    assert (len(calls) > 1) is retried
