"""KinesisSpout against kinesis-mock: checkpoints, restarts, resharding, KPL resume, injected errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from aws_kinesis_agg.aggregator import RecordAggregator

from squall.event import Position
from squall.kinesis.shards import SHARD_END, is_shard_end
from squall.spouts.kinesis import KinesisSpoutConfig
from squall.topology.checkpoint import MemoryCheckpointStore, SqlCheckpointStore
from squall.topology.resources import ResourceConfig, Resources
from tests.kinesis.kinesis_helpers import (
    FakeClock,
    assert_key_order,
    commit_positions,
    consume,
    event_ids,
    make_spout,
    payloads,
    put_plain,
    split_shard,
)


def docs(n: int, keys: int = 7, start: int = 0) -> list[dict]:
    return [{"pk": f"user-{i % keys}", "n": i} for i in range(start, start + n)]


@pytest.fixture
def sqlite_store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'checkpoints.db'}")
    yield SqlCheckpointStore(engine, "test-app", resource="warehouse")
    engine.dispose()


def test_reads_every_record_once_with_metadata(kinesis, kinesis_mock, make_stream):
    stream = make_stream(3)
    put_plain(kinesis, stream, docs(300))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    seen = consume(spout, max_records=64)
    got = payloads(seen)
    assert sorted(d["n"] for d in got) == list(range(300))
    assert len(set(event_ids(seen))) == 300
    assert_key_order(got)
    meta = seen[0].meta
    assert meta.stream == stream and meta.shard_id.startswith("shardId-")
    assert meta.partition_key.startswith("user-")
    assert meta.arrival_time is not None and meta.arrival_time.tzinfo is not None
    assert spout.stats.records == 300
    assert set(spout.lag()) == {
        s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]
    }
    assert spout.progress().done == 300


def test_batches_respect_max_records(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(250))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    sizes = [len(b) for b in spout.read(40)]
    assert max(sizes) <= 40 and sum(sizes) == 250


def test_lag_counts_the_records_read_but_not_yet_handed_out(kinesis, kinesis_mock, make_stream):
    """One GetRecords answer (up to ``limit`` records) is handed out ``max_records`` at a time: its
    MillisBehindLatest (here 0: the read reached the tip) is not the engine's lag while most of
    it still waits. The shard's lag is then the age of the first waiting record (it read 0 for
    a consumer minutes behind)."""
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(100))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    base = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    spout._now = lambda: base + timedelta(seconds=120)  # noqa: SLF001

    def arrivals(parsed, **kwargs):  # record i arrived i seconds after `base`; the read is at tip
        for r in parsed.get("Records", []):
            r["ApproximateArrivalTimestamp"] = base + timedelta(
                seconds=orjson.loads(r["Data"])["n"]
            )
        parsed["MillisBehindLatest"] = 0

    spout.client.meta.events.register("after-call.kinesis.GetRecords", arrivals)
    batches = spout.read(10)
    first = next(batches)
    assert [d["n"] for d in payloads(first)] == list(range(10))
    (shard,) = spout.lag()
    assert spout.lag() == {shard: 110_000}  # record 10 waits, 110 s old
    assert spout.progress().millis_behind_latest == 110_000
    for _ in range(8):
        next(batches)
    assert spout.lag() == {shard: 30_000}  # 90..99 wait
    assert [d["n"] for d in payloads(next(batches))] == list(range(90, 100))
    assert spout.lag() == {shard: 0}  # all handed out: the read's own answer
    batches.close()


def test_idle_batches_tell_the_runner_that_time_moves(kinesis, kinesis_mock, make_stream):
    """With ``idle_batches`` (a sink rolls files by age) a round that finds nothing yields an
    empty batch before sleeping; without it, only records are yielded."""
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    quiet = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    assert [len(b) for b in quiet.read(10)] == [5]
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    spout.idle_batches = True
    sizes = [len(b) for b in spout.read(10)]
    assert sizes[0] == 5 and sum(sizes) == 5
    assert sizes[1:] and set(sizes[1:]) == {0}  # idle rounds until idle_exit


def test_restart_resumes_after_the_checkpoint_without_duplicates(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(4)
    put_plain(kinesis, stream, docs(400))
    first = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)

    def stop_early(i, users):
        if i == 2:
            first.stop()

    seen1 = consume(first, max_records=50, on_batch=stop_early)
    assert 0 < len(seen1) < 400
    put_plain(kinesis, stream, docs(100, start=400))
    second = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    seen2 = consume(second, max_records=50)
    ids = event_ids(seen1) + event_ids(seen2)
    assert len(ids) == len(set(ids)) == 500
    assert sorted(d["n"] for d in payloads(seen1 + seen2)) == list(range(500))
    assert_key_order(payloads(seen1 + seen2))
    # and a third run finds nothing new
    assert consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)) == []


def test_uncommitted_batch_is_read_again_after_a_crash(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(100))
    first = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    batches = first.read(30)
    b1 = next(batches)
    commit_positions(first, {b1[-1].meta.shard_id: b1[-1].meta.position})
    b2 = next(batches)  # processed but never committed: the process "crashes" here
    seen = consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store), max_records=30)
    assert event_ids(seen)[: len(b2)] == event_ids(b2)
    assert sorted(d["n"] for d in payloads(b1 + seen)) == list(range(100))


def test_default_checkpoint_store_is_the_warehouse_resource(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    stream = make_stream(2)
    put_plain(kinesis, stream, docs(50))
    resources = Resources({"warehouse": ResourceConfig(url=f"sqlite:///{tmp_path / 'wh.db'}")})
    spout = make_spout(kinesis_mock.endpoint, stream, resources=resources, topology="pistats")
    assert isinstance(spout.test_store, SqlCheckpointStore)
    assert len(consume(spout)) == 50
    stored = SqlCheckpointStore(resources.sql("warehouse"), "pistats").load(stream)
    assert set(stored) == set(spout.shards())
    resources.close()


def test_split_while_reading_keeps_order_and_loses_nothing(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(2)
    put_plain(kinesis, stream, docs(300, keys=11))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    parent = "shardId-000000000000"

    def split_then_write(i, users):
        if i == 0:
            split_shard(kinesis, stream, parent)
            put_plain(kinesis, stream, docs(300, keys=11, start=300))

    seen = consume(spout, max_records=40, on_batch=split_then_write)
    got = payloads(seen)
    assert sorted(d["n"] for d in got) == list(range(600))
    assert len(set(event_ids(seen))) == 600
    assert_key_order(got)
    children = {sid for sid in spout.shards() if sid not in (parent, "shardId-000000000001")}
    assert len(children) == 2
    # every parent record was read before any record of its children
    order = [r.meta.shard_id for r in seen]
    last_parent = max(i for i, s in enumerate(order) if s == parent)
    assert all(i > last_parent for i, s in enumerate(order) if s in children)
    assert is_shard_end(sqlite_store.load(stream)[parent])
    assert spout.shards()[parent] == "finished"


def test_merge_reads_both_parents_before_the_child(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(2)
    put_plain(kinesis, stream, docs(200, keys=5))
    kinesis.merge_shards(
        StreamName=stream,
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000001",
    )
    put_plain(kinesis, stream, docs(200, keys=5, start=200))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    seen = consume(spout, max_records=50)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(400))
    assert_key_order(payloads(seen))
    stored = sqlite_store.load(stream)
    assert is_shard_end(stored["shardId-000000000000"]) and is_shard_end(
        stored["shardId-000000000001"]
    )


def test_restart_after_resharding_starts_children_from_their_checkpoints(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(100, keys=3))
    split_shard(kinesis, stream, "shardId-000000000000")
    put_plain(kinesis, stream, docs(100, keys=3, start=100))
    seen1 = consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store))
    put_plain(kinesis, stream, docs(50, keys=3, start=200))
    seen2 = consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store))
    assert sorted(d["n"] for d in payloads(seen1)) == list(range(200))
    assert sorted(d["n"] for d in payloads(seen2)) == list(range(200, 250))


def test_parent_without_commit_holds_back_its_children(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(20, keys=2))
    split_shard(kinesis, stream, "shardId-000000000000")
    put_plain(kinesis, stream, docs(20, keys=2, start=20))
    spout = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store, idle_exit=0.5)
    seen = consume(spout, commit=False)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(20))  # parent only
    assert spout.shards()["shardId-000000000000"] == "ended"
    assert "shardId-000000000000" not in sqlite_store.load(stream)


def put_aggregates(kinesis, stream, groups: list[list[dict]], key="pk") -> None:
    for group in groups:
        agg = RecordAggregator()
        for d in group:
            agg.add_user_record(str(d[key]), orjson.dumps(d))
        pk, _, data = agg.clear_and_get().get_contents()
        kinesis.put_record(StreamName=stream, PartitionKey=pk, Data=data)


def test_resume_inside_a_kpl_aggregate_skips_committed_sub_records(
    kinesis, kinesis_mock, make_stream, sqlite_store
):
    stream = make_stream(1)
    put_aggregates(kinesis, stream, [docs(10, keys=1), docs(10, keys=1, start=10)])
    first = make_spout(kinesis_mock.endpoint, stream, store=sqlite_store)
    batch = next(first.read(1))
    (agg,) = batch
    # the engine committed the first 4 user records of the first aggregate, then failed
    commit_positions(first, {agg.meta.shard_id: Position(agg.meta.sequence_number, 3)})
    seen = consume(make_spout(kinesis_mock.endpoint, stream, store=sqlite_store))
    assert [d["n"] for d in payloads(seen)] == list(range(4, 20))
    assert [r.meta.sub_sequence_number for r in seen[:6]] == [4, 5, 6, 7, 8, 9]
    # the same event ids as the first read would have given
    from squall.kinesis.kpl import deaggregate

    assert event_ids(seen[:6]) == event_ids(deaggregate(agg)[4:])


def test_latest_reads_only_new_records(kinesis, kinesis_mock, make_stream):
    stream = make_stream(2)
    put_plain(kinesis, stream, docs(50))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), start="latest")
    batches = spout.read(100)
    put_plain(kinesis, stream, docs(30, start=50))
    seen = [r for b in batches for r in b]
    assert sorted(d["n"] for d in payloads(seen)) == list(range(50, 80))


def arrival_times(kinesis, stream: str) -> list[datetime]:
    """The arrival time kinesis-mock gave each record of a one-shard stream, in order."""
    (shard,) = kinesis.list_shards(StreamName=stream)["Shards"]
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out: list[datetime] = []
    while True:
        resp = kinesis.get_records(ShardIterator=it, Limit=10_000)
        if not resp["Records"]:
            return out
        out += [r["ApproximateArrivalTimestamp"] for r in resp["Records"]]
        it = resp["NextShardIterator"]


def test_at_timestamp_starts_at_the_time(kinesis, kinesis_mock, make_stream):
    import time

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(20))
    # kinesis-mock stamps arrivals with this machine's clock, to the millisecond: the start time
    # is a millisecond after the first records' last arrival, and the second put waits until the
    # clock is past it (a few milliseconds, polled)
    later = max(arrival_times(kinesis, stream)) + timedelta(milliseconds=1)
    deadline = time.monotonic() + 10
    while datetime.now(UTC) <= later:
        assert time.monotonic() < deadline, f"the clock did not pass {later}"
        time.sleep(0.001)
    put_plain(kinesis, stream, docs(20, start=20))
    assert min(arrival_times(kinesis, stream)[20:]) > later  # else the test proves nothing
    spout = make_spout(
        kinesis_mock.endpoint,
        stream,
        store=MemoryCheckpointStore(),
        start="at_timestamp",
        timestamp=later,
    )
    assert sorted(d["n"] for d in payloads(consume(spout))) == list(range(20, 40))


def test_config_validation():
    with pytest.raises(ValueError, match="needs a `timestamp`"):
        KinesisSpoutConfig(id="s", type="kinesis", stream="s", start="at_timestamp")
    with pytest.raises(ValueError, match="not a Kinesis stream ARN"):
        KinesisSpoutConfig(id="s", type="kinesis", stream="arn:aws:sqs:us-east-1:123456789012:q")
    with pytest.raises(ValueError):
        KinesisSpoutConfig(id="s", type="kinesis", stream="s", limit=10_001)
    with pytest.raises(ValueError):
        KinesisSpoutConfig(id="s", type="kinesis", stream="s", checkpoint={"store": "redis"})
    cfg = KinesisSpoutConfig(
        id="s",
        type="kinesis",
        stream="arn:aws:kinesis:eu-west-1:123456789012:stream/x",
        checkpoint={"store": "dynamodb", "table": "cps"},
    )
    assert cfg.checkpoint.table == "cps"


def test_stream_arn_is_accepted(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(10))
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    spout = make_spout(kinesis_mock.endpoint, arn, store=MemoryCheckpointStore())
    seen = consume(spout)
    assert len(seen) == 10 and seen[0].meta.stream == stream


# -- injected errors (kinesis-mock never throttles nor expires iterators within a test) --------------


def inject(client, operation: str, failures: list[str]):
    """Answer the next len(failures) calls of ``operation`` with these error codes, then pass through."""
    queue = list(failures)

    def before_call(model, params, **kwargs):
        if not queue:
            return None
        code = queue.pop(0)
        status = 400 if code != "InternalFailure" else 500

        class Http:
            status_code = status

        return Http(), {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    client.meta.events.register(f"before-call.kinesis.{operation}", before_call)


def record_calls(client, operation: str) -> list[dict]:
    """The API parameters of every later call of ``operation``."""
    calls: list[dict] = []
    client.meta.events.register(
        f"before-parameter-build.kinesis.{operation}",
        lambda params, **kwargs: calls.append(dict(params)),
    )
    return calls


def test_throttling_backs_off_and_loses_nothing(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(100))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), limit=30)
    attempts = []
    backoff = spout._backoff  # noqa: SLF001
    backoff.cap = 0.05
    real_delay = backoff.delay
    backoff.delay = lambda n: attempts.append(n) or real_delay(n)
    inject(
        spout.client,
        "GetRecords",
        ["ProvisionedThroughputExceededException"] * 3 + ["LimitExceededException"],
    )
    seen = consume(spout)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(100))
    assert spout.stats.throttled == 4
    assert attempts == [0, 1, 2, 3]  # consecutive throttles of the shard back off further each time


def test_backoff_grows_with_consecutive_throttles():
    from squall.aws import Backoff

    b = Backoff(base=0.1, cap=10.0, rng=lambda: 1.0)
    assert [b.delay(i) for i in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]
    assert Backoff(base=0.1, cap=10, rng=lambda: 0.0).delay(5) == 0.05  # never zero


def test_expired_iterator_is_renewed_after_the_last_record(kinesis, kinesis_mock, make_stream):
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(90))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), limit=30)
    batches = spout.read(30)
    first = next(batches)
    iterator_calls = record_calls(spout.client, "GetShardIterator")
    inject(spout.client, "GetRecords", ["ExpiredIteratorException"])
    rest = [r for b in batches for r in b]
    assert sorted(d["n"] for d in payloads(first + rest)) == list(range(90))
    assert spout.stats.expired_iterators == 1
    (renewal,) = iterator_calls
    assert renewal["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert renewal["StartingSequenceNumber"] == first[-1].meta.sequence_number


def test_server_errors_retry_then_fail_the_read(kinesis, kinesis_mock, make_stream):
    from squall.errors import TransientError

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    spout = make_spout(
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=FakeClock()
    )
    inject(spout.client, "GetRecords", ["InternalFailure"] * 2)
    assert len(consume(spout)) == 5
    assert spout.stats.errors == 2

    spout = make_spout(
        kinesis_mock.endpoint,
        stream,
        store=MemoryCheckpointStore(),
        clock=FakeClock(),
        idle_exit=3600,  # fake seconds: the backoff's growing delays never look idle
    )
    inject(spout.client, "GetRecords", ["InternalFailure"] * 50)
    with pytest.raises(
        TransientError, match="8 server or network errors without an answer between"
    ):
        consume(spout)


def test_one_server_error_after_a_run_of_throttles_is_retried(kinesis, kinesis_mock, make_stream):
    """Throttling is backed off without limit (consumers sharing a shard); only server errors
    and network failures end the read, after MAX_ERRORS of them. Throttles counted toward
    that limit: a shard throttled 10 times in a row, then answered one 500, failed the read
    (TransientError, ``squall run`` exit 1) at its first server error."""
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    spout = make_spout(  # idle_exit 1 s: a shard backing off is not idle
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=FakeClock()
    )
    inject(
        spout.client,
        "GetRecords",
        ["ProvisionedThroughputExceededException"] * 10 + ["InternalFailure"],
    )
    assert len(consume(spout)) == 5
    assert (spout.stats.throttled, spout.stats.errors) == (10, 1)


def test_list_shards_throttling_is_retried(kinesis, kinesis_mock, make_stream):
    stream = make_stream(2)
    put_plain(kinesis, stream, docs(10))
    spout = make_spout(
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=FakeClock()
    )
    inject(spout.client, "ListShards", ["LimitExceededException"] * 2)
    spout._next_sync = 0  # noqa: SLF001 - force a re-list now
    assert len(consume(spout)) == 10
    assert spout.stats.throttled >= 2


def test_missing_stream_is_a_clear_error(kinesis_mock):
    from squall.errors import SquallError

    with pytest.raises(SquallError, match="not found"):
        make_spout(kinesis_mock.endpoint, "no-such-stream", store=MemoryCheckpointStore())


def test_unexpected_client_errors_are_not_swallowed(kinesis, kinesis_mock, make_stream):
    from squall.errors import SquallError

    stream = make_stream(1)
    put_plain(kinesis, stream, docs(5))
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    inject(spout.client, "GetRecords", ["AccessDeniedException"])
    with pytest.raises(SquallError, match="AccessDenied"):
        consume(spout)


def test_shard_end_sentinel_is_above_any_sequence_number():
    assert SHARD_END > Position("9" * 60, 2**40)


def test_lag_counts_the_waiting_records_of_a_shard_read_to_its_end(
    kinesis, kinesis_mock, make_stream
):
    """The parent of a split answers its last records and its end in one GetRecords call: the
    shard is ended at once, and lag() left it out while its records still waited for a batch —
    lag {} (progress: none; the Prometheus series at 0) while a consumer worked through the
    parent's backlog, the defect the waiting records' age was added for. Its lag now counts them
    until the last one is handed out; then the shard leaves the lag as documented."""
    stream = make_stream(1)
    put_plain(kinesis, stream, docs(100))
    parent = "shardId-000000000000"
    split_shard(kinesis, stream, parent)
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    base = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    spout._now = lambda: base + timedelta(seconds=120)  # noqa: SLF001
    ends: list[bool] = []

    def arrivals(parsed, **kwargs):  # record i arrived i seconds after `base`
        for r in parsed.get("Records", []):
            r["ApproximateArrivalTimestamp"] = base + timedelta(
                seconds=orjson.loads(r["Data"])["n"]
            )
        if parsed.get("Records"):
            ends.append(parsed.get("NextShardIterator") is None)
        parsed["MillisBehindLatest"] = 0

    spout.client.meta.events.register("after-call.kinesis.GetRecords", arrivals)
    batches = spout.read(10)
    first = next(batches)
    assert [d["n"] for d in payloads(first)] == list(range(10))
    assert ends == [True]  # the records and the shard's end in one answer
    assert spout.lag() == {parent: 110_000}  # record 10 waits, 110 s old
    assert spout.progress().millis_behind_latest == 110_000
    for _ in range(8):
        next(batches)
    assert spout.lag() == {parent: 30_000}
    assert [d["n"] for d in payloads(next(batches))] == list(range(90, 100))
    assert parent not in spout.lag()  # all handed out: the ended shard leaves the lag
    batches.close()
