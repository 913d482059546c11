"""A shard's part of a round's ``limit`` on a backlog has a floor (hI).

The kinesis spout shares each round's ``limit`` among the shards behind their tip. Divided
without a floor, the part of each shard fell below what a shard can be written at: with
``limit: 100`` and 8 shards each shard got 12 records a call, at most 60 a second, and a stream
written at 150 records a second per shard fell further behind forever (lag 107 s after two
minutes, and growing); at the tip a caught-up shard's page filled its small part, so it counted
as behind and was called every 0.2 s instead of every ``poll_interval`` (3 calls a second per
shard instead of 1.1 with ``limit: 1000``, 8 shards). A fake stream and clock stand in for
Kinesis: kinesis-mock writes too slowly to load 8 shards for minutes.

Also: a shard answering no record behind its tip is placed by Kinesis's clock (the answer's
Date), not this host's (kinesis-mock never answers so).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from squall.component import ComponentContext
from squall.spouts.kinesis import KinesisSpout, KinesisSpoutConfig
from tests.kinesis.kinesis_helpers import FakeClock

BASE = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class SteadyStream:
    """``shards`` shards each written ``rate`` records a second, from ``backlog`` seconds before
    the read starts; a GetRecords call takes 20 ms of the fake clock."""

    def __init__(self, clock: FakeClock, shards: int, rate: int, backlog: float) -> None:
        self.clock, self.shards, self.rate, self.backlog = clock, shards, rate, backlog
        self.limits: list[int] = []

    def written(self) -> int:
        """Records on each shard by now."""
        return int((self.clock.t + self.backlog) * self.rate)

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "Shards": [
                {
                    "ShardId": f"shardId-{i:012d}",
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                }
                for i in range(self.shards)
            ]
        }

    def get_shard_iterator(self, ShardId: str, ShardIteratorType: str, **kwargs: Any) -> dict:
        assert ShardIteratorType == "TRIM_HORIZON"
        return {"ShardIterator": f"{ShardId}:0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.clock.t += 0.02
        self.limits.append(Limit)
        shard, start = ShardIterator.rsplit(":", 1)
        end = min(self.written(), int(start) + Limit)
        arrival = lambda k: BASE + timedelta(seconds=k / self.rate - self.backlog)  # noqa: E731
        records = [
            {
                "Data": b"{}",
                "PartitionKey": "k",
                "SequenceNumber": str(k),
                "ApproximateArrivalTimestamp": arrival(k),
            }
            for k in range(int(start), end)
        ]
        behind = 0
        if end < self.written():
            behind = round((self.clock.t - (end / self.rate - self.backlog)) * 1000)
        return {
            "Records": records,
            "MillisBehindLatest": behind,
            "NextShardIterator": f"{shard}:{end}",
        }


def read_for(seconds: float, *, shards: int, rate: int, backlog: float, limit: int):
    clock = FakeClock()
    config = KinesisSpoutConfig(id="spout", type="kinesis", stream="clicks", limit=limit)
    spout = KinesisSpout(config, ComponentContext("app"), clock=clock.now, sleep=clock.sleep)
    stream = SteadyStream(clock, shards, rate, backlog)
    spout.client = stream
    spout._now = lambda: BASE + timedelta(seconds=clock.t)
    spout.resume({})
    read = 0
    for batch in spout.read(500):
        read += len(batch)
        spout.commit({r.meta.shard_id: r.meta.position for r in batch})
        if clock.t >= seconds:
            break
    return spout, stream, read


def test_eight_shards_behind_with_a_small_limit_catch_up():
    """8 shards, 150 records a second each, 30 s behind, ``limit: 100``: each call asks for 100
    records (not 12), and after two minutes every shard is at its tip (it was 107 s behind)."""
    spout, stream, read = read_for(120, shards=8, rate=150, backlog=30, limit=100)
    assert set(stream.limits) == {100}
    assert stream.written() * 8 - read < 8 * 150  # within a second of writes
    assert max(spout.lag().values()) < 1_000


def test_caught_up_shards_are_called_as_often_as_before_the_merge():
    """8 shards at their tip, 300 records a second each, ``limit: 1000``, ``poll_interval`` 1 s:
    a second's page (300) does not fill a shard's part (it filled 125 and the shard was called
    again 0.2 s later): about one call a second per shard, each asking for the whole limit."""
    spout, stream, read = read_for(120, shards=8, rate=300, backlog=0, limit=1000)
    assert set(stream.limits) == {1000}
    assert len(stream.limits) / 8 / 120 < 1.2


class EmptyBehind:
    """Shard 0 holds records that arrived 0–100 s after BASE; shard 1 answers no record, 60 s
    behind its tip (a stretch without records on a backlog). Kinesis's clock reads BASE + 100 s;
    its answers carry that time in their Date header, as every AWS answer does."""

    def __init__(self) -> None:
        self.server_now = BASE + timedelta(seconds=100)

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        return {"Shards": [{"ShardId": f"shardId-00000000000{i}"} for i in range(2)]}

    def get_shard_iterator(self, ShardId: str, **kwargs: Any) -> dict:
        return {"ShardIterator": ShardId}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        headers = {"date": format_datetime(self.server_now, usegmt=True)}
        meta = {"HTTPStatusCode": 200, "HTTPHeaders": headers}
        if ShardIterator.endswith("1"):
            return {
                "Records": [],
                "MillisBehindLatest": 60_000,
                "NextShardIterator": "x1",
                "ResponseMetadata": meta,
            }
        records = (
            [
                {
                    "Data": b"{}",
                    "PartitionKey": "k",
                    "SequenceNumber": str(k),
                    "ApproximateArrivalTimestamp": BASE + timedelta(seconds=k),
                }
                for k in range(101)
            ]
            if ShardIterator == "shardId-000000000000"
            else []
        )
        return {
            "Records": records,
            "MillisBehindLatest": 0,
            "NextShardIterator": "x0",
            "ResponseMetadata": meta,
        }


def test_an_empty_answer_behind_the_tip_is_placed_by_kinesis_clock_not_ours():
    """Shard 1 answered nothing 60 s behind its tip: what it has not read arrived after
    BASE + 40 s by Kinesis's clock. This host's clock is 10 minutes ahead: counted from it, shard
    1 stood at BASE + 640 s and all of shard 0's records went out before shard 1's older ones
    (a `window` sends those to `late`). Counted from the answer's Date, shard 0's records up to
    BASE + 40 s go out and the rest wait."""
    clock = FakeClock()
    config = KinesisSpoutConfig(id="spout", type="kinesis", stream="clicks")
    spout = KinesisSpout(config, ComponentContext("app"), clock=clock.now, sleep=clock.sleep)
    stream = EmptyBehind()
    spout.client = stream
    spout._now = lambda: stream.server_now + timedelta(minutes=10)
    spout.resume({})
    batches = spout.read(500)
    first = next(batches)
    batches.close()
    assert [int(r.meta.sequence_number) for r in first] == list(range(41))
