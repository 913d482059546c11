"""The s3 and firehose sinks against moto: partitioned objects read back row by row, replays, partial failures."""

from __future__ import annotations

import gzip
import io
import json
import time
from datetime import UTC, datetime

import orjson
import pyarrow.parquet as pq
import pytest

from squall.component import ComponentContext
from squall.errors import TransientError
from squall.event import Event
from squall.sinks.base import WriteContext
from squall.sinks.firehose import FirehoseSink, FirehoseSinkConfig
from squall.sinks.s3 import S3Sink, S3SinkConfig
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.moto_standin import FlakyClient, client_error, unique

EVENTS = [
    {
        "user": "u1",
        "n": 1,
        "ts": "2026-11-03T18:59:59.500Z",
        "score": 1.5,
        "ok": True,
        "tags": ["a"],
    },
    {"user": "u2", "n": 2, "ts": "2026-11-03T19:00:00Z", "score": 2.0, "ok": False, "tags": []},
    {
        "user": "u3",
        "n": 3,
        "ts": 1793732400,
        "score": None,
        "ok": True,
        "tags": ["b", "c"],
    },  # 2026-11-03T19:00Z
    {
        "user": "u4",
        "n": 4,
        "ts": "2026-11-04T00:10:00+01:00",
        "score": 4.25,
        "ok": True,
    },  # 2026-11-03T23:10Z
    {"user": "u5", "n": "not a number", "ts": "2026-11-03T19:30:00Z"},
    {"user": "u6", "n": 6},  # no time
    {"user": "u7", "n": 7, "ts": "yesterday"},
]


def yaml(endpoint: str, bucket: str, extra: str) -> str:
    return f"""
name: lake
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, prefix: events, endpoint_url: "{endpoint}", time_field: ts{extra}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {bucket}-dlq}}
"""


def objects(s3, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_s3_jsonl_objects_are_partitioned_by_event_hour_and_a_replay_overwrites_them(
    moto_server, s3, bucket
):
    records = records_from(EVENTS[:4], stream="clicks", shard_id="shardId-000000000001", start=100)
    first = run_topology(yaml(moto_server.endpoint, bucket, ""), records)
    assert {o.outcome for o in first.outcomes} == {Outcome.COMMITTED}
    before = objects(s3, bucket)
    assert sorted(before) == [
        "events/dt=2026-11-03/hour=18/clicks.shardId-000000000001.100.0-100.0.jsonl.gz",
        "events/dt=2026-11-03/hour=19/clicks.shardId-000000000001.101.0-102.0.jsonl.gz",
        "events/dt=2026-11-03/hour=23/clicks.shardId-000000000001.103.0-103.0.jsonl.gz",
    ]
    lines = {k: [json.loads(x) for x in gzip.decompress(v).splitlines()] for k, v in before.items()}
    assert [row["user"] for k in sorted(lines) for row in lines[k]] == ["u1", "u2", "u3", "u4"]
    assert lines[sorted(lines)[1]] == EVENTS[1:3]  # row by row, as the payloads were
    run_topology(yaml(moto_server.endpoint, bucket, ""), records)  # the same batch again
    assert objects(s3, bucket) == before  # same names, same bytes: nothing added


def test_s3_rejects_events_without_a_usable_time_to_dead_letter(moto_server, s3, bucket):
    run = run_topology(yaml(moto_server.endpoint, bucket, ""), records_from(EVENTS))
    dead = {o.index: o.reason for o in run.outcomes if o.outcome is Outcome.DEAD_LETTERED}
    assert sorted(dead) == [5, 6]
    assert dead[5] == "time field 'ts' is missing"
    assert "'yesterday' is not a time" in dead[6]


def test_s3_parquet_objects_read_back_row_by_row_with_typed_columns(moto_server, s3, bucket):
    extra = (
        ", format: parquet, columns: {event_id: meta.event_id, user: user, n: {path: n, type: int64}, "
        "score: {path: score, type: float64}, ok: {path: ok, type: bool}, at: {path: ts, type: timestamp}, "
        "tags: {path: tags, type: json}}"
    )
    run = run_topology(yaml(moto_server.endpoint, bucket, extra), records_from(EVENTS[:5]))
    outcomes = run.outcomes
    assert [o.outcome for o in outcomes] == [Outcome.COMMITTED] * 4 + [Outcome.DEAD_LETTERED]
    assert outcomes[4].reason == "column 'n': 'not a number' is not an integer"
    got = objects(s3, bucket)
    assert all(k.endswith(".parquet") for k in got)
    rows = [row for k in sorted(got) for row in pq.read_table(io.BytesIO(got[k])).to_pylist()]
    expected = [
        {
            "event_id": outcomes[i].event_id,
            "user": e["user"],
            "n": e["n"],
            "score": e.get("score"),
            "ok": e["ok"],
            "at": at,
            "tags": json.dumps(e["tags"], separators=(",", ":")) if "tags" in e else None,
        }
        for i, (e, at) in enumerate(
            zip(
                EVENTS[:4],
                [
                    datetime(2026, 11, 3, 18, 59, 59, 500000, UTC),
                    datetime(2026, 11, 3, 19, tzinfo=UTC),
                    datetime(2026, 11, 3, 19, tzinfo=UTC),
                    datetime(2026, 11, 3, 23, 10, tzinfo=UTC),
                ],
                strict=True,
            )
        )
    ]
    assert rows == expected
    schema = pq.read_table(io.BytesIO(next(iter(got.values())))).schema
    assert [str(t) for t in schema.types] == [
        "string",
        "string",
        "int64",
        "double",
        "bool",
        "timestamp[us, tz=UTC]",
        "string",
    ]


def test_s3_parquet_needs_columns():
    with pytest.raises(ValueError, match="format parquet needs columns"):
        S3SinkConfig(id="lake", type="s3", bucket="b", format="parquet")


def test_s3_a_failed_put_is_transient_and_the_retry_writes_only_the_missing_objects(
    moto_server, s3, bucket
):
    calls = {"n": 0}

    def fail_second(kw, call):
        calls["n"] += 1
        if calls["n"] == 2:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    sink = S3Sink(
        S3SinkConfig(id="lake", type="s3", bucket=bucket, time_field="ts"), ComponentContext("t")
    )
    sink.client = FlakyClient(moto_server.client("s3"), put_object=fail_second)
    sink.open()
    events = [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(EVENTS[:4]))
    ]
    prepared = sink.prepare(events)
    with pytest.raises(TransientError, match="SlowDown"):
        sink.write_batch(prepared, None)
    assert sink.write_batch(prepared, None) is None
    assert calls["n"] == 4 and sink.puts == 3  # 3 objects: one failed once, none written twice
    assert len(objects(s3, bucket)) == 3


# -- firehose -------------------------------------------------------------------------------------


@pytest.fixture
def delivery(moto_server, s3):
    """A Firehose stream delivering into a fresh bucket (moto writes the objects at once)."""
    bucket = unique("fh")
    s3.create_bucket(Bucket=bucket)
    name = unique("stream")
    moto_server.client("firehose").create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/fh",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        },
    )
    return name, bucket


def delivered(s3, bucket: str, want: int, timeout: float = 10.0) -> list[dict]:
    """The JSON lines Firehose wrote to the bucket, once ``want`` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [
            json.loads(line)
            for body in objects(s3, bucket).values()
            for line in body.splitlines()
            if line
        ]
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_firehose_sink_puts_every_event_with_its_id_and_retries_partial_failures(
    moto_server, s3, delivery
):
    name, bucket = delivery
    state = {"n": 0}

    def partly(kw, call):
        state["n"] += 1
        if state["n"] > 1:
            return call(**kw)
        recs = kw["Records"]  # the first call: Firehose takes all but the 2nd and 5th records
        resp = call(
            DeliveryStreamName=kw["DeliveryStreamName"],
            Records=[r for i, r in enumerate(recs) if i not in (1, 4)],
        )
        taken = iter(resp["RequestResponses"])
        resp["RequestResponses"] = [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "busy"}
            if i in (1, 4)
            else next(taken)
            for i in range(len(recs))
        ]
        resp["FailedPutCount"] = 2
        return resp

    sink = FirehoseSink(
        FirehoseSinkConfig(id="fh", type="firehose", delivery_stream=name, event_id_key="event_id"),
        ComponentContext("t"),
    )
    sink.client = FlakyClient(moto_server.client("firehose"), put_record_batch=partly)
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()
    events = [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from([{"n": i} for i in range(6)]))
    ]
    assert sink.write_batch(sink.prepare(events), None) is None
    assert len(sink.sleeps) == 1
    rows = delivered(s3, bucket, 6)
    assert sorted(r["n"] for r in rows) == list(
        range(6)
    )  # each once: only the failed two were sent again
    assert {r["event_id"] for r in rows} == {ev.event_id for ev in events}


def test_firehose_sink_reports_records_still_failing_and_rejects_oversized_ones(
    moto_server, delivery
):
    name, _ = delivery

    def always_fail_first(kw, call):
        resp = (
            call(DeliveryStreamName=kw["DeliveryStreamName"], Records=kw["Records"][1:])
            if len(kw["Records"]) > 1
            else {"RequestResponses": [], "FailedPutCount": 0}
        )
        resp["RequestResponses"] = [{"ErrorCode": "InternalFailure", "ErrorMessage": "x"}] + resp[
            "RequestResponses"
        ]
        return resp

    sink = FirehoseSink(
        FirehoseSinkConfig(id="fh", type="firehose", delivery_stream=name, max_attempts=2),
        ComponentContext("t"),
    )
    sink.client = FlakyClient(moto_server.client("firehose"), put_record_batch=always_fail_first)
    sink.sleep = lambda s: None
    sink.open()
    payloads = [{"n": 0}, {"blob": "x" * 1_100_000}, {"n": 2}]
    events = [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]
    prepared = sink.prepare(events)
    assert [ev.value.get("n") for ev in prepared.rejected] == [None]
    assert "Firehose takes at most 1024000" in prepared.rejected[0].failure.reason
    result = sink.write_batch(prepared, None)
    assert [ev.value["n"] for ev in result.failed] == [0]
    assert result.failed[0].failure.reason == "PutRecordBatch: InternalFailure: x"


@pytest.mark.parametrize(("left", "retried"), [(0.04, False), (900.0, True)])
def test_firehose_sink_retries_failed_records_only_while_the_backoff_fits_in_the_time_left(
    moto_server, delivery, left, retried
):
    """``WriteContext.time_left`` (a Lambda runner's deadline less its margin): 40 ms is under the
    sink's shortest backoff (50 ms), so the record Firehose failed is not retried — it fails now,
    with the reason; with time left it is put again."""
    name, _ = delivery
    put: list[int] = []  # the records Firehose took, by n

    def partly(kw, call):  # the first call: the 2nd record fails
        first = not put
        recs = [r for i, r in enumerate(kw["Records"]) if not (first and i == 1)]
        resp = call(DeliveryStreamName=kw["DeliveryStreamName"], Records=recs)
        put.extend(orjson.loads(r["Data"])["n"] for r in recs)
        if first:
            resp["RequestResponses"].insert(
                1, {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "busy"}
            )
            resp["FailedPutCount"] = 1
        return resp

    sink = FirehoseSink(
        FirehoseSinkConfig(id="fh", type="firehose", delivery_stream=name), ComponentContext("t")
    )
    sink.client = FlakyClient(moto_server.client("firehose"), put_record_batch=partly)
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()
    events = [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from([{"n": i} for i in range(3)]))
    ]
    result = sink.write_batch(sink.prepare(events), WriteContext(time_left=lambda: left))
    if retried:
        assert result is None and len(sink.sleeps) == 1 and sorted(put) == [0, 1, 2]
    else:
        assert sink.sleeps == [] and put == [0, 2]
        assert [ev.value["n"] for ev in result.failed] == [1]
        assert result.failed[0].failure.reason == (
            "PutRecordBatch: ServiceUnavailableException: busy "
            "(not retried: the time left before the deadline is spent)"
        )


def test_firehose_throttled_call_is_transient(moto_server, delivery):
    name, _ = delivery

    def throttle(kw, call):
        raise client_error("ThrottlingException", "Rate exceeded", 400)

    sink = FirehoseSink(
        FirehoseSinkConfig(id="fh", type="firehose", delivery_stream=name), ComponentContext("t")
    )
    sink.client = FlakyClient(moto_server.client("firehose"), put_record_batch=throttle)
    sink.open()
    events = [
        Event(r.data, r.meta, None, 0, orjson.loads(r.data)) for r in records_from([{"n": 1}])
    ]
    with pytest.raises(TransientError, match="ThrottlingException"):
        sink.write_batch(sink.prepare(events), None)
