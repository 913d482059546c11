"""The API-Gateway producer adapter: HTTP request in, topology run, HTTP answer out."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import make_handler
from squall.testing import MemorySink
from tests.factories import api_gateway_event

TOPOLOGY = """
name: producer
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: validate, type: schema, schema: {{type: object, required: [message_id, event_type]}}}}
sinks:
  - {{id: out, type: 'squall.testing:FaultySink', name: '{tag}', transient_failures: {transient}}}
"""


@pytest.fixture
def handler_for(tmp_path: Path):
    def make(transient: int = 0):
        tag = uuid.uuid4().hex
        t = tmp_path / f"{tag}.yaml"
        t.write_text(TOPOLOGY.format(tag=tag, transient=transient))
        return make_handler(t), tag

    return make


def body(resp) -> dict:
    return json.loads(resp["body"])


@pytest.mark.parametrize("version", [1, 2])
def test_batch_request_is_enriched_with_request_context_and_partially_rejected(
    handler_for, version
):
    handler, tag = handler_for()
    events = [
        {"message_id": "m1", "event_type": "click"},
        {"message_id": "m2"},
        {"message_id": "m3", "event_type": "x"},
    ]
    resp = handler(api_gateway_event(json.dumps(events), version=version), None)
    assert resp["statusCode"] == 202
    assert body(resp) == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "reason": "validate: schema: $: 'event_type' is a required property"}
        ],
    }
    [first, _] = MemorySink.stores[tag]
    assert first.event_id == "m1"
    assert first.value["request"]["source_ip"] == "81.2.69.142"
    assert first.value["request"]["user_agent"] == "pistats-js/3.3.0"


def test_json_lines_and_gzip_bodies(handler_for):
    handler, tag = handler_for()
    lines = '{"message_id": "a1", "event_type": "click"}\n{broken\n{"message_id": "a2", "event_type": "view"}\n'
    resp = handler(api_gateway_event(lines, gzip_body=True), None)
    assert resp["statusCode"] == 202
    assert body(resp)["accepted"] == 2
    [bad] = body(resp)["rejected"]
    assert bad["index"] == 1 and bad["reason"].startswith("decode: invalid JSON")


def test_nothing_accepted_is_a_400(handler_for):
    handler, _ = handler_for()
    assert handler(api_gateway_event("not json at all"), None)["statusCode"] == 400
    resp = handler(api_gateway_event(json.dumps({"message_id": "zz"})), None)
    assert resp["statusCode"] == 400 and len(body(resp)["rejected"]) == 1


def test_sink_outage_is_a_503_with_retry_after(handler_for):
    handler, tag = handler_for(transient=5)
    resp = handler(api_gateway_event(json.dumps({"message_id": "m1", "event_type": "click"})), None)
    assert resp["statusCode"] == 503 and resp["headers"]["Retry-After"] == "1"
    assert MemorySink.stores.get(tag, []) == []


def test_partial_sink_failure_is_a_503(handler_for):
    handler, _ = handler_for()
    events = [
        {"message_id": "m1", "event_type": "click"},
        {"message_id": "m2", "event_type": "c", "sink_fail": 1},
    ]
    assert handler(api_gateway_event(json.dumps(events)), None)["statusCode"] == 503


def test_method_and_size_limits(handler_for):
    handler, _ = handler_for()
    assert handler(api_gateway_event("{}", method="GET"), None)["statusCode"] == 405
    big = json.dumps([{"message_id": f"m{i}", "event_type": "c"} for i in range(501)])
    assert handler(api_gateway_event(big), None)["statusCode"] == 413


def test_bad_gzip_bodies_are_400_not_a_crash(handler_for):
    handler, _ = handler_for()
    event = api_gateway_event(json.dumps({"message_id": "m1", "event_type": "click"}))
    event["headers"]["Content-Encoding"] = "gzip"  # but the body is plain JSON
    resp = handler(event, None)
    assert resp["statusCode"] == 400 and "not" in body(resp)["error"]
    truncated = api_gateway_event(
        json.dumps([{"message_id": "m1", "event_type": "click"}] * 50), gzip_body=True
    )
    raw = __import__("base64").b64decode(truncated["body"])
    truncated["body"] = __import__("base64").b64encode(raw[: len(raw) // 2]).decode()
    resp = handler(truncated, None)
    assert resp["statusCode"] == 400 and "truncated" in body(resp)["error"]


KINESIS_TOPOLOGY = """
name: producer-kinesis
spout: {type: stdin}
settings: {retry: {attempts: 1}}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
sinks:
  - id: stream
    type: kinesis
    stream: never-called
    region: us-east-1
    endpoint_url: "http://127.0.0.1:9"
    partition_key: device_token
"""


def test_event_a_sink_refuses_is_rejected_not_a_503(tmp_path: Path):
    """An event the Kinesis sink refuses before any call (no partition key, an empty one) is that
    event's problem: the client learns which one and why; a 503 would make it retry forever."""
    t = tmp_path / "producer.yaml"
    t.write_text(KINESIS_TOPOLOGY)
    handler = make_handler(t)
    events = [{"message_id": "m1"}, {"message_id": "m2", "device_token": ""}]
    resp = handler(api_gateway_event(json.dumps(events)), None)
    assert resp["statusCode"] == 400
    assert body(resp) == {
        "accepted": 0,
        "rejected": [
            {
                "index": 0,
                "reason": "stream: partition key 'device_token' is missing or not a scalar",
            },
            {"index": 1, "reason": "stream: empty partition key"},
        ],
    }


def test_a_refused_event_beside_an_unwritten_one_is_still_a_503(handler_for):
    """A write that failed after retries wins: the request is retried whole."""
    handler, _ = handler_for()
    events = [
        {"message_id": "m1", "event_type": "click", "sink_fail": 1},
        {"message_id": "m2"},  # rejected by the schema
    ]
    assert handler(api_gateway_event(json.dumps(events)), None)["statusCode"] == 503
