"""The Lambda producer's answers when Kinesis refuses for good, against kinesis-mock.

A stream that does not exist, or a role without ``kinesis:PutRecords``, fails every request
alike until the function is fixed. The producer answered ``503`` with ``Retry-After: 1`` — the
answer for a passing outage — so every SDK of a surge came back each second, for hours. It now
answers ``500`` with ``Retry-After: 60`` (the longest it ever asks) after one PutRecords call,
and says nothing of the stream to the client (its logs say which and why).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import MAX_RETRY_AFTER, make_handler
from tests.factories import api_gateway_event
from tests.kinesis.kinesis_helpers import Faults


def producer(tmp_path: Path, endpoint: str, stream: str):
    """A producer on kinesis-mock; its PutRecords calls are counted, its sleeps recorded."""
    path = tmp_path / "producer.yaml"
    path.write_text(
        f"""
name: producer
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
sinks:
  - {{id: out, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}", partition_key: message_id}}
"""
    )
    handler = make_handler(path)
    [sink] = [c for c in handler.engine.components if c.id == "out"]
    slept: list[float] = []
    sink.writer._sleep = slept.append
    handler.engine._sleep = slept.append
    calls: list[int] = []
    sink.client.meta.events.register("before-call.kinesis.PutRecords", lambda **_: calls.append(1))
    return handler, sink, slept, calls


def request(n: int = 3) -> dict:
    return api_gateway_event(json.dumps([{"message_id": f"m{i}"} for i in range(n)]))


@pytest.mark.parametrize("refusal", ["missing stream", "AccessDeniedException"])
def test_a_stream_kinesis_refuses_for_good_is_a_500_asking_for_the_longest_wait(
    tmp_path, kinesis_mock, kinesis, make_stream, refusal
):
    if refusal == "missing stream":
        stream = "no-such-stream-hw"
        handler, sink, slept, calls = producer(tmp_path, kinesis_mock.endpoint, stream)
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
