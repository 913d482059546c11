"""Sinks that keep each event's JSON for the batch (until written, and through the engine's
retries) keep a copy of its own size: the bytes orjson returns hold its whole output buffer,
~4 KB however short the JSON (a Kinesis sink's 2,500 prepared records held 10.4 MB, now
~0.6 MB, tracemalloc). The bound, 1 KB a record, is far from both."""

from __future__ import annotations

import gc
import tracemalloc

import orjson
import pytest

from squall import exact_json
from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.sinks.firehose import FirehoseSink, FirehoseSinkConfig
from squall.sinks.http import HttpSink, HttpSinkConfig
from squall.sinks.kinesis import KinesisSink, KinesisSinkConfig

N = 2500


def _held(make) -> int:
    """The bytes tracemalloc sees still held by what ``make()`` returned."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held


def _batch() -> list[Event]:
    meta = RecordMeta("s", "shardId-000000000000", "1", 0, "pk")
    return [Event(b"", meta, None, i, {"user": f"u{i}", "n": i}) for i in range(N)]


def test_owned_is_an_equal_copy_of_its_own_size():
    made = [orjson.dumps({"user": f"u{i}"}) for i in range(N)]
    copies = [exact_json.owned(m) for m in made]
    assert copies == made and all(type(c) is bytes for c in copies)
    assert _held(lambda: [exact_json.owned(orjson.dumps({"user": f"u{i}"})) for i in range(N)]) < (
        N * 1024
    )


@pytest.mark.parametrize(
    "sink",
    [
        lambda: KinesisSink(
            KinesisSinkConfig(id="k", type="kinesis", stream="s", region="us-east-1"),
            ComponentContext("t"),
        ),
        lambda: HttpSink(
            HttpSinkConfig(id="h", type="http", url="http://127.0.0.1:9/", mode="single"),
            ComponentContext("t"),
        ),
        lambda: FirehoseSink(
            FirehoseSinkConfig(id="f", type="firehose", delivery_stream="s", region="us-east-1"),
            ComponentContext("t"),
        ),
    ],
    ids=["kinesis", "http-single", "firehose"],
)
def test_a_prepared_batch_holds_no_orjson_buffer_per_record(sink):
    s, batch = sink(), _batch()
    prepared = s.prepare(batch)
    assert len(prepared.events) == N
    assert _held(lambda: s.prepare(batch)) < N * 1024
