"""ListShards in a Lambda starts no call with no time left, as PutRecords does: neither the
re-listing after a misplaced aggregate (made mid-put, after the write's own check) nor a later
page of a paginated listing (a stream of many shards). Before, both were started with the time
spent — with a 0.1 s read timeout but the 5 s connect timeout, past the deadline."""

from __future__ import annotations

from typing import Any

import pytest

from squall import aws
from squall.errors import TransientError
from squall.kinesis.putrecords import Entry, PutRecordsWriter, load_shard_map

STREAM = aws.StreamRef("s")
HALF = 2**127


def _shard(shard_id: str, start: int, end: int) -> dict[str, Any]:
    return {
        "ShardId": shard_id,
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
    }


class FakeKinesis:
    """PutRecords lands every record on shard ``b``; ListShards answers two pages."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def put_records(self, Records: list[dict], **_: Any) -> dict[str, Any]:
        self.calls.append("PutRecords")
        return {
            "FailedRecordCount": 0,
            "Records": [{"ShardId": "b", "SequenceNumber": "1"} for _ in Records],
        }

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("ListShards")
        if "NextToken" not in kwargs:
            return {"Shards": [_shard("a", 0, HALF - 1)], "NextToken": "page-2"}
        return {"Shards": [_shard("b", HALF, 2**128 - 1)]}


def test_no_re_listing_after_a_misplaced_aggregate_with_no_time_left() -> None:
    kinesis = FakeKinesis()
    writer = PutRecordsWriter(kinesis, STREAM)
    # An aggregate built for shard `a` (its user records hash below HALF) that lands on `b`.
    users = [(b"x", "k1", "1"), (b"y", "k2", "2")]
    entry = Entry(b"agg", "k1", "1", ["e1", "e2"], shard="a", users=users)
    outcome = writer.put([entry], lambda: 0.0 if kinesis.calls else 5.0)  # spent after the put
    assert kinesis.calls == ["PutRecords"]
    assert [reason for _, reason in outcome.failed] == [
        f"landed on another shard and ListShards of 's': {aws.NOT_SENT}"
    ]


def test_no_later_page_of_list_shards_with_no_time_left() -> None:
    kinesis = FakeKinesis()
    with pytest.raises(TransientError, match=aws.NOT_SENT):
        load_shard_map(kinesis, STREAM, lambda: 0.0 if kinesis.calls else 5.0)
    assert kinesis.calls == ["ListShards"]


def test_with_time_left_or_no_deadline_every_page_is_listed() -> None:
    for time_left in (lambda: 5.0, lambda: None, None):
        kinesis = FakeKinesis()
        shard_map = load_shard_map(kinesis, STREAM, time_left)
        assert kinesis.calls == ["ListShards", "ListShards"]
        assert shard_map.shard_for("k", str(HALF)) == "b"
