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

from squall.deploy.produce import produce_file
from squall.event import Record, RecordMeta
from squall.sinks.putrecords import effective_hash_key
from squall.spouts.kinesis import MemoryCheckpointStore
from squall.spouts.kpl import deaggregate, is_aggregated
from tests.kinesis.kinesis_helpers import consume, make_spout, split_shard
from tests.kinesis.test_kinesis_sink import events, make_sink, write
from tests.kinesis.test_produce import write_lines


def kcl_view(kinesis: Any, stream: str) -> tuple[list[dict], int]:
    """User records as the KCL delivers them, and how many aggregates it drops as misplaced."""
    out, dropped = [], 0
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        lo, hi = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10_000)
            for r in resp["Records"]:
                subs = deaggregate(Record(r["Data"], RecordMeta(stream, shard["ShardId"], r["SequenceNumber"],
                                                                partition_key=r["PartitionKey"])))
                if is_aggregated(r["Data"]) and any(
                        not lo <= effective_hash_key(s.meta.partition_key, s.meta.explicit_hash_key) <= hi
                        for s in subs):
                    dropped += 1  # KCL AggregatorUtil.deaggregate: the whole aggregate goes
                    continue
                out.extend(orjson.loads(s.data) for s in subs)
            if not resp["Records"] and not resp.get("MillisBehindLatest"):
                break
            it = resp.get("NextShardIterator")
    return out, dropped


def test_aggregated_produce_across_a_split_loses_nothing_under_the_kcl(kinesis, kinesis_mock, make_stream, tmp_path):
    stream = make_stream(2)
    docs = [{"pk": f"k{i % 200}", "n": i} for i in range(3000)]
    path = write_lines(tmp_path / "events.jsonl", docs)
    now = [0.0]  # a fake clock: produce flushes every 0.5 s of it, i.e. every 100 lines at 200/s
    rounds = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def on_progress(done: int, report) -> None:
        rounds.append(report.sent)
        if len(rounds) == 3:  # mid-file: aggregates built for shard 0 now span both children
            split_shard(kinesis, stream, "shardId-000000000000")

    report = produce_file(path, stream=stream, endpoint_url=kinesis_mock.endpoint, aggregate=True,
                          partition_key="pk", rate=200, sleep=sleep, clock=lambda: now[0], on_progress=on_progress)
    assert (report.sent, report.failed) == (3000, 0)
    assert report.resent > 0  # the split hit aggregates built on the old shard map

    seen, dropped = kcl_view(kinesis, stream)
    counts = Counter(d["n"] for d in seen)
    assert sorted(counts) == list(range(3000))
    assert max(counts.values()) == 1, [n for n, c in counts.items() if c > 1][:10]
    assert dropped >= 1  # the misplaced aggregates are in the stream; the KCL skips them

    polled = consume(make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore()), max_records=1000)
    polled_counts = Counter(orjson.loads(r.data)["n"] for r in polled)
    assert sorted(polled_counts) == list(range(3000))
    assert sum(polled_counts.values()) - 3000 == report.resent  # read twice: the stale aggregate and the re-send


def test_kinesis_sink_regroups_after_a_split(kinesis, kinesis_mock, make_stream):
    stream = make_stream(2)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", aggregate=True)
    _, result = write(sink, events(400, keys=50))
    assert result is None
    split_shard(kinesis, stream, "shardId-000000000000")
    calls = []
    sink.client.meta.events.register("before-parameter-build.kinesis.ListShards", lambda **kw: calls.append(1))
    _, result = write(sink, events(400, keys=50, start=400))  # built on the map from before the split
    assert result is None
    assert calls, "a misplaced aggregate lists the shards again"
    _, result = write(sink, events(400, keys=50, start=800))  # built on the new map: lands where planned
    assert result is None
    seen, dropped = kcl_view(kinesis, stream)
    assert sorted(d["n"] for d in seen) == list(range(1200))
    assert dropped >= 1
