"""The Lambda producer's answers when Kinesis refuses for good, against kinesis-mock.

A stream that does not exist, or a role without ``kinesis:PutRecords``, fails every request
alike until the function is fixed. The producer answered ``503`` with ``Retry-After: 1`` — the
answer for a passing outage — so every SDK of a surge came back each second, for hours. It now
answers ``500`` with ``Retry-After: 60`` (the longest it ever asks) after one PutRecords call,
and says nothing of the stream to the client (its logs say which and why).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import MAX_RETRY_AFTER, make_handler
from tests.factories import api_gateway_event
from tests.kinesis.kinesis_helpers import Faults
from tests.kinesis.test_producer_deadline import producer as deadline_producer


def producer(tmp_path: Path, endpoint: str, stream: str):
    """The deadline tests' producer on kinesis-mock (sleeps recorded, never slept); its
    PutRecords calls are counted too."""
    handler, sink, slept = deadline_producer(tmp_path, endpoint, stream)
    calls: list[int] = []
    sink.client.meta.events.register("before-call.kinesis.PutRecords", lambda **_: calls.append(1))
    return handler, sink, slept, calls


def request(n: int = 3) -> dict:
    return api_gateway_event(json.dumps([{"message_id": f"m{i}"} for i in range(n)]))


@pytest.mark.parametrize("refusal", ["missing stream", "AccessDeniedException"])
def test_a_stream_kinesis_refuses_for_good_is_a_500_asking_for_the_longest_wait(
    tmp_path, kinesis_mock, kinesis, make_stream, refusal
):
    if refusal == "missing stream":  # deleted after the start (one missing at it stops the init)
        stream = f"deleted-{uuid.uuid4().hex[:8]}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
        handler, sink, slept, calls = producer(tmp_path, kinesis_mock.endpoint, stream)
        kinesis.delete_stream(StreamName=stream)
        kinesis.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    else:
        stream = make_stream()
        handler, sink, slept, calls = producer(tmp_path, kinesis_mock.endpoint, stream)
        Faults(sink, kinesis, dict.fromkeys(range(10), refusal))
    resp = handler(request(), None)
    assert resp["statusCode"] == 500
    assert resp["headers"]["Retry-After"] == str(MAX_RETRY_AFTER)
    assert stream not in resp["body"] and "configuration" in json.loads(resp["body"])["error"]
    assert len(calls) == 1 and slept == []  # one call, no retry storm inside the function either


def test_a_throttled_stream_is_still_a_503_to_retry_soon(
    tmp_path, kinesis_mock, kinesis, make_stream
):
    stream = make_stream()
    handler, sink, slept, calls = producer(tmp_path, kinesis_mock.endpoint, stream)
    Faults(sink, kinesis, dict.fromkeys(range(10), "ProvisionedThroughputExceededException"))
    resp = handler(request(), None)
    assert resp["statusCode"] == 503 and resp["headers"]["Retry-After"] == "1"


def shards_of(kinesis, stream: str) -> dict[str, set[str]]:
    """Each shard's message ids, read from its start."""
    out: dict[str, set[str]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=it, Limit=1000)["Records"]
        out[shard["ShardId"]] = {json.loads(r["Data"])["message_id"] for r in records}
    return out


def test_without_a_partition_key_a_requests_events_spread_over_the_shards(
    tmp_path, kinesis_mock, kinesis, make_stream
):
    """The sink's default key is the source record's: the producer gave every record of a
    request the request id, so a request's events all went to one shard — one shard's 1 MiB/s
    for a body of up to 5 MB, throttled in part whatever the shard count, and a retry of the
    whole request pinned again. Now each event is keyed by its event id (the SDK's message id
    with ``event_id_field``): spread over the shards, and a retried request puts each event on
    the shard it went to before."""
    stream = make_stream(shards=4)
    path = tmp_path / "producer.yaml"
    path.write_text(
        f"""
name: producer
spout: {{type: stdin}}
bolts: [{{id: decode, type: json, event_id_field: message_id}}]
sinks: [{{id: out, type: kinesis, stream: {stream}, endpoint_url: "{kinesis_mock.endpoint}"}}]
"""
    )
    handler = make_handler(path)
    body = json.dumps([{"message_id": f"m{i}"} for i in range(64)])
    assert handler(api_gateway_event(body, request_id="first"), None)["statusCode"] == 202
    first = shards_of(kinesis, stream)
    assert all(first.values()), {s: len(ids) for s, ids in first.items()}  # every shard has some
    assert handler(api_gateway_event(body, request_id="again"), None)["statusCode"] == 202
    again = shards_of(kinesis, stream)
    assert again == first  # each event on the shard it went to the first time
