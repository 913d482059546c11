"""KPL aggregates meet resharding: `squall produce --aggregate` and the kinesis sink across a split.

The KCL drops a whole aggregate when one of its user records hashes outside the shard it arrived
on. `kcl_view` reads the stream as the KCL does; the polling spout reads everything. After a
split in the middle of an aggregated produce, the KCL must see every record exactly once, and the
polling spout every record, its duplicates being exactly the records re-sent after a misplacement.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from squall.aws import client as aws_client
from squall.deploy.produce import produce_file
from squall.event import Record, RecordMeta
from squall.kinesis.kpl import deaggregate, is_aggregated
from squall.kinesis.putrecords import effective_hash_key
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.kinesis.kinesis_helpers import consume, make_spout, split_shard
from tests.kinesis.test_kinesis_sink import events, make_sink, write
from tests.kinesis.test_produce import write_lines


def kcl_view(kinesis: Any, stream: str) -> tuple[list[dict], int]:
    """User records as the KCL delivers them, and how many aggregates it drops as misplaced."""
    out, dropped = [], 0
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        lo, hi = (
            int(shard["HashKeyRange"]["StartingHashKey"]),
            int(shard["HashKeyRange"]["EndingHashKey"]),
        )
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10_000)
            for r in resp["Records"]:
                subs = deaggregate(
                    Record(
                        r["Data"],
                        RecordMeta(
                            stream,
                            shard["ShardId"],
                            r["SequenceNumber"],
                            partition_key=r["PartitionKey"],
                        ),
                    )
                )
                if is_aggregated(r["Data"]) and any(
                    not lo
                    <= effective_hash_key(s.meta.partition_key, s.meta.explicit_hash_key)
                    <= hi
                    for s in subs
                ):
                    dropped += 1  # KCL AggregatorUtil.deaggregate: the whole aggregate goes
                    continue
                out.extend(orjson.loads(s.data) for s in subs)
            if not resp["Records"] and not resp.get("MillisBehindLatest"):
                break
            it = resp.get("NextShardIterator")
    return out, dropped


def reshard(kinesis: Any, stream: str, how: str) -> None:
    if how == "split":
        split_shard(kinesis, stream, "shardId-000000000000")
    elif how == "merge":
        kinesis.merge_shards(
            StreamName=stream,
            ShardToMerge="shardId-000000000000",
            AdjacentShardToMerge="shardId-000000000001",
        )
    else:
        kinesis.update_shard_count(
            StreamName=stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING"
        )
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def produce_across(
    kinesis, kinesis_mock, stream: str, tmp_path, how: str, lines: int = 3000, client=None
):
    """An aggregated produce at 200 records/s (fake clock) with a reshard after the third round."""
    docs = [{"pk": f"k{i % 200}", "n": i} for i in range(lines)]
    path = write_lines(tmp_path / "events.jsonl", docs)
    now = [0.0]  # produce flushes every 0.5 s of this clock, i.e. every 100 lines at 200/s
    rounds = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def on_progress(done: int, report) -> None:
        rounds.append(report.sent)
        if len(rounds) == 3:  # mid-file: the open aggregates were built on the old shard map
            reshard(kinesis, stream, how)

    return produce_file(
        path,
        stream=stream,
        endpoint_url=kinesis_mock.endpoint,
        aggregate=True,
        client=client,
        partition_key="pk",
        rate=200,
        sleep=sleep,
        clock=lambda: now[0],
        on_progress=on_progress,
    )


@pytest.mark.parametrize("how", ["split", "update_shard_count"])
def test_aggregated_produce_across_a_split_loses_nothing_under_the_kcl(
    kinesis, kinesis_mock, make_stream, tmp_path, how
):
    stream = make_stream(2)
    report = produce_across(kinesis, kinesis_mock, stream, tmp_path, how)
    assert (report.sent, report.failed) == (3000, 0)
    assert report.resent > 0  # the reshard hit aggregates built on the old shard map

    seen, dropped = kcl_view(kinesis, stream)
    counts = Counter(d["n"] for d in seen)
    assert sorted(counts) == list(range(3000))
    assert max(counts.values()) == 1, [n for n, c in counts.items() if c > 1][:10]
    assert dropped >= 1  # the misplaced aggregates are in the stream; the KCL skips them

    polled = consume(
        make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore()), max_records=1000
    )
    polled_counts = Counter(orjson.loads(r.data)["n"] for r in polled)
    assert sorted(polled_counts) == list(range(3000))
    assert (
        sum(polled_counts.values()) - 3000 == report.resent
    )  # read twice: the stale aggregate and the re-send


def test_after_a_merge_misplaced_aggregates_fit_and_are_not_sent_twice(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    stream = make_stream(3)
    client = aws_client("kinesis", region="us-east-1", endpoint_url=kinesis_mock.endpoint)
    calls = []
    client.meta.events.register(
        "before-parameter-build.kinesis.ListShards", lambda **kw: calls.append(1)
    )
    report = produce_across(kinesis, kinesis_mock, stream, tmp_path, "merge", client=client)
    assert (report.sent, report.failed, report.resent) == (3000, 0, 0)
    assert len(calls) >= 2, "a misplaced aggregate lists the shards again"
    seen, dropped = kcl_view(kinesis, stream)
    assert dropped == 0 and sorted(d["n"] for d in seen) == list(range(3000))
    polled = consume(
        make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore()), max_records=1000
    )
    assert sorted(orjson.loads(r.data)["n"] for r in polled) == list(
        range(3000)
    )  # each once: nothing re-sent


def test_kinesis_sink_regroups_after_a_split(kinesis, kinesis_mock, make_stream):
    stream = make_stream(2)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", aggregate=True)
    _, result = write(sink, events(400, keys=50))
    assert result is None
    split_shard(kinesis, stream, "shardId-000000000000")
    calls = []
    sink.client.meta.events.register(
        "before-parameter-build.kinesis.ListShards", lambda **kw: calls.append(1)
    )
    _, result = write(
        sink, events(400, keys=50, start=400)
    )  # built on the map from before the split
    assert result is None
    assert len(calls) == 1, "a misplaced aggregate lists the shards again"
    _, result = write(
        sink, events(400, keys=50, start=800)
    )  # built on the new map: lands where planned
    assert result is None and len(calls) == 1
    seen, dropped = kcl_view(kinesis, stream)
    assert sorted(d["n"] for d in seen) == list(range(1200))
    assert dropped >= 1


PRODUCER = """
name: producer
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: stream, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}", partition_key: pk, aggregate: true}}
"""


def test_lambda_producer_aggregates_safely_across_a_split(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    from squall.deploy.lambda_producer import make_handler
    from tests.factories import api_gateway_event

    stream = make_stream(2)
    topology = tmp_path / "producer.yaml"
    topology.write_text(PRODUCER.format(stream=stream, endpoint=kinesis_mock.endpoint))
    handler = make_handler(
        topology, context_key=None
    )  # one warm function: its shard map outlives requests
    for request in range(4):
        if request == 2:
            split_shard(kinesis, stream, "shardId-000000000000")
        body = [{"pk": f"k{i % 60}", "n": i} for i in range(request * 300, (request + 1) * 300)]
        answer = handler(api_gateway_event(orjson.dumps(body).decode()), None)
        assert answer["statusCode"] == 202 and orjson.loads(answer["body"])["accepted"] == 300, (
            answer
        )
    seen, dropped = kcl_view(kinesis, stream)
    counts = Counter(d["n"] for d in seen)
    assert sorted(counts) == list(range(1200)) and max(counts.values()) == 1
    assert dropped >= 1
