"""Every request's events get event ids of their own, with or without a request id.

Without an ``event_id_field`` an event's id comes from its place: the request id and its number
in the request. An event without ``requestContext.requestId`` — an Application Load Balancer's
(same shape as a REST API's, no request id), a direct invoke — numbered every request's events
from 1 under the same empty id: the second request's first event had the first's event id, and
an idempotent sink downstream (a warehouse upsert on the event id) kept one of them, silently.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from squall.deploy.lambda_producer import make_handler
from squall.testing import MemorySink
from tests.factories import api_gateway_event

TOPOLOGY = """
name: producer
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink', name: '{tag}'}}]
"""


def handler(tmp_path: Path):
    tag = uuid.uuid4().hex
    path = tmp_path / f"{tag}.yaml"
    path.write_text(TOPOLOGY.format(tag=tag))
    return make_handler(path), tag


def alb_event(body: str) -> dict:
    """An ALB target's event: a REST API's shape, ``requestContext`` without a request id."""
    event = api_gateway_event(body)
    event["requestContext"] = {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:..."}}
    return event


def test_requests_without_a_request_id_never_share_event_ids(tmp_path):
    handle, tag = handler(tmp_path)
    for n in range(3):
        resp = handle(alb_event(json.dumps([{"n": n}, {"n": n + 10}])), None)
        assert resp["statusCode"] == 202
    stored = MemorySink.stores[tag]
    assert len(stored) == 6
    assert len({ev.event_id for ev in stored}) == 6
    assert len({ev.value["request"]["request_id"] for ev in stored}) == 3


def test_a_request_id_that_is_not_a_string_is_a_400(tmp_path):
    handle, _ = handler(tmp_path)
    event = api_gateway_event(json.dumps({"n": 1}))
    event["requestContext"]["requestId"] = 7
    resp = handle(event, None)
    assert resp["statusCode"] == 400
    assert "requestContext.requestId is a JSON number" in json.loads(resp["body"])["error"]


def test_an_event_that_is_not_an_object_is_named_by_its_json_type(tmp_path):
    """bff2677 named JSON's types in the producer's messages but for the event itself: "the
    event is a JSON list"."""
    handle, _ = handler(tmp_path)
    resp = handle([{"body": "{}"}], None)
    assert resp["statusCode"] == 400
    assert json.loads(resp["body"])["error"] == (
        "cannot read body: the event is a JSON array, not an API Gateway proxy event"
    )


def test_an_alb_request_s_source_ip_is_the_address_the_load_balancer_appended(tmp_path):
    """An ALB's event has no ``requestContext.identity``: the client's address is only in the
    X-Forwarded-For header the load balancer appends it to. Every ALB event's ``source_ip`` was
    "" (so ``geo`` with ``ip_field: request.source_ip`` located none)."""
    handle, tag = handler(tmp_path)
    single = alb_event(json.dumps({"n": 1}))
    single["headers"] = {"X-Forwarded-For": "203.0.113.9", "User-Agent": "sdk/2"}
    # A client that sent its own X-Forwarded-For: the ALB appends the address it saw.
    chained = alb_event(json.dumps({"n": 2}))
    chained["headers"] = None
    chained["multiValueHeaders"] = {"x-forwarded-for": ["6.6.6.6, 198.51.100.4"]}
    bare = alb_event(json.dumps({"n": 3}))  # no header at all: nothing to say
    bare["headers"] = {}
    for event in (single, chained, bare):
        assert handle(event, None)["statusCode"] == 202
    requests = [ev.value["request"] for ev in MemorySink.stores[tag]]
    assert [r["source_ip"] for r in requests] == ["203.0.113.9", "198.51.100.4", ""]
    assert requests[0]["user_agent"] == "sdk/2"


def test_an_api_gateway_request_s_source_ip_ignores_x_forwarded_for(tmp_path):
    handle, tag = handler(tmp_path)
    event = api_gateway_event(json.dumps({"n": 1}))
    event["headers"] = {**(event.get("headers") or {}), "x-forwarded-for": "6.6.6.6"}
    assert handle(event, None)["statusCode"] == 202
    [stored] = MemorySink.stores[tag]
    assert stored.value["request"]["source_ip"] == "81.2.69.142"  # requestContext.identity
