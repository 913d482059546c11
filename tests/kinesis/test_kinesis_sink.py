"""KinesisSink against kinesis-mock: batching limits, partition keys, aggregation, partial failures."""

from __future__ import annotations

import uuid

import orjson
import pytest

from squall import exact_json
from squall.component import ComponentContext
from squall.errors import SinkError, TransientError
from squall.event import Event, RecordMeta
from squall.kinesis.putrecords import MAX_CALL_BYTES, Aggregator, Entry, ShardMap, chunks, hash_key
from squall.kinesis.shards import ShardInfo
from squall.sinks.base import WriteContext
from squall.sinks.kinesis import KinesisSink, KinesisSinkConfig
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.kinesis.kinesis_helpers import (
    Faults,
    assert_key_order,
    consume,
    make_spout,
    payloads,
    record_put_calls,
    shard_of,
)


def events(n: int, keys: int = 9, start: int = 0, **extra) -> list[Event]:
    out = []
    for i in range(start, start + n):
        meta = RecordMeta("source", "shardId-000000000000", str(1000 + i), partition_key=f"src-{i}")
        out.append(
            Event(
                b"raw-%d" % i,
                meta,
                f"event-{i}",
                i - start,
                value={"pk": f"user-{i % keys}", "n": i, **extra},
            )
        )
    return out


def make_sink(endpoint: str, stream: str, **options) -> KinesisSink:
    sink = KinesisSink(
        KinesisSinkConfig(
            id="out", type="kinesis", stream=stream, endpoint_url=endpoint, **options
        ),
        ComponentContext("test-app"),
    )
    sink.open(None)
    sink.writer.backoff.cap = 0.01  # keep retries quick
    return sink


def write(sink: KinesisSink, evs: list[Event]):
    prepared = sink.prepare(evs)
    return prepared, sink.write_batch(prepared, WriteContext())


def read_all(endpoint: str, stream: str):
    return consume(make_spout(endpoint, stream, store=MemoryCheckpointStore()), max_records=1000)


def test_events_are_written_in_calls_of_at_most_500(kinesis, kinesis_mock, make_stream):
    stream = make_stream(3)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    calls = record_put_calls(sink.client)
    prepared, result = write(sink, events(1201))
    assert result is None and not prepared.rejected
    assert [len(c["Records"]) for c in calls] == [500, 500, 201]
    seen = read_all(kinesis_mock.endpoint, stream)
    got = payloads(seen)
    assert sorted(d["n"] for d in got) == list(range(1201))
    assert_key_order(got)
    assert all(r.meta.partition_key == orjson.loads(r.data)["pk"] for r in seen)


def test_default_partition_key_is_the_source_records(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, format="raw")
    write(sink, events(5))
    seen = read_all(kinesis_mock.endpoint, stream)
    assert [r.meta.partition_key for r in seen] == [f"src-{i}" for i in range(5)]
    assert [r.data for r in seen] == [b"raw-%d" % i for i in range(5)]


def test_explicit_hash_key_picks_the_shard(kinesis, kinesis_mock, make_stream):
    stream = make_stream(2)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", explicit_hash_key="h")
    evs = events(4, h=0) + events(4, start=4, h=str(2**128 - 1))  # JSON numbers stop at 64 bits
    prepared, _ = write(sink, evs)
    assert not prepared.rejected
    seen = read_all(kinesis_mock.endpoint, stream)
    by_shard = {r.meta.shard_id: [] for r in seen}
    for r in seen:
        by_shard[r.meta.shard_id].append(orjson.loads(r.data)["n"])
    assert by_shard == {"shardId-000000000000": [0, 1, 2, 3], "shardId-000000000001": [4, 5, 6, 7]}


WIDE = b'{"n": 18446744073709551616, "m": -9223372036854775809}'  # beyond 64 bits, both


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_integers_beyond_64_bits_are_put_as_their_digits(
    kinesis, kinesis_mock, make_stream, aggregate
):
    """The json bolt keeps them exact (Python ints); orjson cannot write them: the event was
    rejected ("value cannot be serialized as JSON") instead of put."""
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, aggregate=aggregate)
    ev = events(1)[0]
    ev.value = exact_json.loads(WIDE)
    prepared, result = write(sink, [ev])
    assert result is None and not prepared.rejected
    [record] = read_all(kinesis_mock.endpoint, stream)
    assert record.data == b'{"n":18446744073709551616,"m":-9223372036854775809}'


def test_prepare_rejects_what_kinesis_would_refuse(kinesis_mock, make_stream):
    sink = make_sink(
        kinesis_mock.endpoint, make_stream(), partition_key="pk", explicit_hash_key="h"
    )
    ok = events(1, h=5)[0]
    too_big = events(1, h=5, blob="x" * (1024 * 1024))[0]
    no_key = Event(b"", ok.meta, "e-nokey", 2, value={"n": 1, "h": 5})
    long_key = Event(b"", ok.meta, "e-long", 3, value={"pk": "k" * 257, "h": 5})
    bad_hash = Event(b"", ok.meta, "e-hash", 4, value={"pk": "a", "h": str(2**128)})
    not_decoded = Event(b"{}", ok.meta, "e-raw", 5)
    prepared = sink.prepare([ok, too_big, no_key, long_key, bad_hash, not_decoded])
    assert prepared.events == [ok]
    reasons = {ev.event_id: ev.failure.reason for ev in prepared.rejected}
    assert "at most 1048576" in reasons[too_big.event_id]
    assert "partition key 'pk' is missing" in reasons["e-nokey"]
    assert "257 characters" in reasons["e-long"]
    assert "explicit hash key" in reasons["e-hash"]
    assert "no decoded value" in reasons["e-raw"]
    assert all(ev.failure.component == "out" for ev in prepared.rejected)


def test_calls_stay_under_5_mib(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, format="raw")
    # kinesis-mock moves ~2 MB/s: 6 MB is enough to need two calls, and not slow
    evs = [
        Event(b"x" * 1_000_000, RecordMeta("s", "sh", str(i), partition_key=f"k{i}"), f"e{i}", i)
        for i in range(6)
    ]
    calls = record_put_calls(sink.client)
    _, result = write(sink, evs)
    assert result is None
    sizes = [sum(len(r["Data"]) + len(r["PartitionKey"]) for r in c["Records"]) for c in calls]
    assert [len(c["Records"]) for c in calls] == [5, 1] and max(sizes) <= MAX_CALL_BYTES


def test_aggregated_writes_round_trip_and_keep_keys_on_their_shard(
    kinesis, kinesis_mock, make_stream
):
    stream = make_stream(4)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", aggregate=True)
    calls = record_put_calls(sink.client)
    _, result = write(sink, events(3000, keys=40, pad="p" * 100))
    assert result is None
    kinesis_records = sum(len(c["Records"]) for c in calls)
    assert kinesis_records < 3000 / 20
    seen = read_all(kinesis_mock.endpoint, stream)
    got = payloads(seen)
    assert sorted(d["n"] for d in got) == list(range(3000))
    assert_key_order(got)
    shard_by_key = {f"user-{k}": shard_of(kinesis, stream, f"user-{k}") for k in range(40)}
    assert all(r.meta.shard_id == shard_by_key[r.meta.partition_key] for r in seen)


# -- partial and whole-call failures, injected around a real client ---------------------------------


def test_partial_failure_retries_only_the_failed_entries(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    calls = record_put_calls(sink.client)
    Faults(sink, kinesis, {0: {1, 3, 5}, 1: {0}})
    _, result = write(sink, events(10))
    assert result is None
    assert [len(c["Records"]) for c in calls] == [10, 3, 1]
    assert sorted(d["n"] for d in payloads(read_all(kinesis_mock.endpoint, stream))) == list(
        range(10)
    )


def test_entries_failing_every_attempt_fail_the_batch(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", max_attempts=3)
    Faults(sink, kinesis, {0: {2}, 1: {0}, 2: {0}})
    evs = events(5)
    _, result = write(sink, evs)
    assert [ev.event_id for ev in result.failed] == [evs[2].event_id]
    assert "ProvisionedThroughputExceededException" in result.failed[0].failure.reason
    assert sorted(d["n"] for d in payloads(read_all(kinesis_mock.endpoint, stream))) == [0, 1, 3, 4]


def test_failed_aggregate_fails_all_its_events(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(
        kinesis_mock.endpoint, stream, partition_key="pk", aggregate=True, max_attempts=2
    )
    Faults(sink, kinesis, {0: {0}, 1: {0}})
    evs = events(50)
    _, result = write(sink, evs)
    assert len(result.failed) == 50


def test_whole_call_throttling_is_transient(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    Faults(sink, kinesis, {0: "ProvisionedThroughputExceededException"})
    with pytest.raises(TransientError):
        write(sink, events(3))
    assert read_all(kinesis_mock.endpoint, stream) == []
    _, result = write(sink, events(3))  # the engine's retry
    assert result is None


def test_whole_call_failure_after_a_written_chunk_is_retried_not_raised(
    kinesis, kinesis_mock, make_stream
):
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    Faults(sink, kinesis, {1: "ThrottlingException"})
    _, result = write(sink, events(600))
    assert result is None
    assert sorted(d["n"] for d in payloads(read_all(kinesis_mock.endpoint, stream))) == list(
        range(600)
    )


def test_a_stream_deleted_after_the_open_is_a_permanent_sink_error(kinesis_mock, kinesis):
    """(A stream missing at the open stops it: tests/kinesis/test_kinesis_sink_start.py.)"""
    stream = f"deleted-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    kinesis.delete_stream(StreamName=stream)
    kinesis.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    with pytest.raises(SinkError, match=stream):
        write(sink, events(1))


# -- pure helpers ----------------------------------------------------------------------------------


def test_chunks_respect_count_and_size():
    entries = [Entry(b"x" * 1000, "k") for _ in range(1234)]
    assert [len(c) for c in chunks(entries)] == [500, 500, 234]
    big = [Entry(b"x" * (2 * 1024 * 1024), "k") for _ in range(5)]
    assert [len(c) for c in chunks(big)] == [2, 2, 1]


def test_shard_map_follows_hash_ranges():
    half = 2**127
    m = ShardMap(
        [
            ShardInfo("a", (), 0, half - 1),
            ShardInfo("b", (), half, 2**128 - 1),
            ShardInfo("old", (), 0, 2**128 - 1, closed=True),
        ]
    )
    assert m.shard_for("x", "0") == "a" and m.shard_for("x", str(2**128 - 1)) == "b"
    assert m.shard_for("k") == ("a" if hash_key("k") < half else "b")


def test_aggregator_sends_single_records_plain_and_big_ones_alone():
    agg = Aggregator(None, max_bytes=1000)
    assert agg.add(b"a" * 10, "k1", None, 1) == []
    out = agg.add(b"b" * 2000, "k2", None, 2)  # too big for an aggregate: flush, then alone
    assert [e.items for e in out] == [[1], [2]]
    assert out[0].data == b"a" * 10 and out[0].partition_key == "k1"  # an aggregate of one is plain
    for i in range(30):
        agg.add(b"c" * 50, f"k{i}", None, 100 + i)
    flushed = agg.flush()
    assert sum(len(e.items) for e in flushed) <= 30 and all(
        e.data[:4] == b"\xf3\x89\x9a\xc2" for e in flushed
    )


def test_a_lone_record_that_looks_like_an_aggregate_is_wrapped_in_one():
    from squall.event import Record
    from squall.kinesis.kpl import KPL_MAGIC, deaggregate

    agg = Aggregator(None)
    assert agg.add(KPL_MAGIC + b"not really", "k", None, 1) == []
    (entry,) = agg.flush()
    (sub,) = deaggregate(Record(entry.data, RecordMeta("s", "sh", "1")))
    assert sub.data == KPL_MAGIC + b"not really" and sub.meta.partition_key == "k"
    big = Aggregator(None, max_bytes=100).add(KPL_MAGIC + b"y" * 500, "k", None, 2)
    (sub,) = deaggregate(Record(big[0].data, RecordMeta("s", "sh", "1")))
    assert sub.data == KPL_MAGIC + b"y" * 500


def test_event_id_key_carries_the_id_so_a_replayed_put_adds_no_rows_downstream(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    """A replayed batch is put again with new sequence numbers: a consumer deriving ids from them
    writes every row twice. With ``event_id_key`` each record carries the event id, the consumer's
    decode bolt keeps it (``event_id_field``) and the warehouse's idempotent insert absorbs the
    replay."""
    import sqlite3

    from squall.testing import run_topology

    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", event_id_key="source_id")
    batch = events(5)
    write(sink, batch)
    write(sink, batch)  # the same batch delivered again upstream (a Lambda retry)
    prepared = sink.prepare([Event(b"[1]", batch[0].meta, "e-list", 0, value=[1])])
    assert "event_id_key needs an object payload" in prepared.rejected[0].failure.reason
    seen = read_all(kinesis_mock.endpoint, stream)
    assert len(seen) == 10
    assert orjson.loads(seen[0].data) == {"pk": "user-0", "n": 0, "source_id": "event-0"}
    db = tmp_path / "wh.db"
    run_topology(
        f"""name: downstream
resources: {{warehouse: {{url: "sqlite:///{db}"}}}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json, event_id_field: source_id}}]
sinks:
  - {{id: rows, type: warehouse, resource: warehouse, table: rows, columns: {{n: {{path: n, type: integer}}}}}}
""",
        seen,
    )
    with sqlite3.connect(db) as conn:
        assert sorted(n for (n,) in conn.execute("SELECT n FROM rows")) == [0, 1, 2, 3, 4]


def test_a_throttled_put_records_with_a_time_left_is_one_attempt(
    kinesis, kinesis_mock, make_stream, monkeypatch
):
    """Inside a Lambda (a ``WriteContext.time_left``) botocore does not retry the throttled
    PutRecords itself (its backoff does not know the deadline): the call is the sink's
    TransientError, which the engine retries only while the backoff fits; the retry puts every
    record once. Without a time left botocore retries it, as configured."""
    import types

    import botocore.endpoint

    from tests.moto_standin import throttle_first

    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=slept.append))
    stream = make_stream(1)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk")
    attempts = throttle_first(sink.client, 2)
    prepared = sink.prepare(events(3))
    ctx = WriteContext(time_left=lambda: 10.0)
    with pytest.raises(TransientError):
        sink.write_batch(prepared, ctx)
    assert len(attempts) == 1 and slept == []
    assert sink.write_batch(prepared, WriteContext()) is None  # no deadline: botocore retries
    assert len(attempts) == 3 and len(slept) == 1
    assert sorted(d["n"] for d in payloads(read_all(kinesis_mock.endpoint, stream))) == [0, 1, 2]
