"""The request context is the producer's: an event it cannot read itself (a gzip-compressed line
or element, an integer of 310 digits or more) went on as sent, the json bolt decoded it, and it
reached Kinesis with the client's own `request` (source IP, user agent, received time) or none."""

from __future__ import annotations

import gzip
import json

import pytest

from squall.testing import MemorySink
from tests.deploy.test_lambda_producer import body, handler_for  # noqa: F401 - the fixture
from tests.factories import api_gateway_event

FORGED = {"source_ip": "6.6.6.6", "user_agent": "forged", "request_id": "x", "received_at": "x"}


def gzip_line(event: dict) -> bytes:
    """The event gzip-compressed, with no newline byte in it (a JSON-lines body splits there)."""
    for pad in range(1000):
        data = gzip.compress(json.dumps({**event, "pad": "x" * pad}).encode(), mtime=0)
        if b"\n" not in data:
            return data
    raise AssertionError("no gzip member without a newline byte")


def wide(event_id: str) -> str:
    return json.dumps({"message_id": event_id, "event_type": "x", "request": FORGED})[:-1] + (
        ', "n": ' + "9" * 400 + "}"
    )


@pytest.mark.parametrize(
    "shape",
    [
        "gzip line",
        "wide integer in an array",
        "wide integer in JSON lines",
    ],
)
def test_an_event_the_producer_cannot_read_never_goes_on_with_a_forged_request_context(
    handler_for,  # noqa: F811
    shape,
):
    handler, tag = handler_for()
    ok = {"message_id": "ok", "event_type": "click"}
    if shape == "gzip line":
        forged = {"message_id": "f", "event_type": "x", "request": FORGED}
        raw = json.dumps(ok).encode() + b"\n" + gzip_line(forged) + b"\n"
        reason = "a gzip-compressed event in the body"
    elif shape == "wide integer in an array":
        raw = f"[{json.dumps(ok)}, {wide('f')}]".encode()
        reason = "is outside the 64-bit range"
    else:
        raw = f"{json.dumps(ok)}\n{wide('f')}\n".encode()
        reason = "is outside the 64-bit range"
    resp = handler(api_gateway_event(raw), None)
    assert resp["statusCode"] == 202
    [rejected] = body(resp)["rejected"]
    assert rejected["index"] == 1 and reason in rejected["reason"]
    [sent] = MemorySink.stores[tag]
    assert sent.event_id == "ok" and sent.value["request"]["source_ip"] == "81.2.69.142"


def test_a_line_that_is_not_json_is_still_rejected_by_the_json_bolt_with_its_reason(
    handler_for,  # noqa: F811
):
    handler, _ = handler_for()
    resp = handler(api_gateway_event('{"message_id": "a", "event_type": "x"}\n{broken\n'), None)
    [bad] = body(resp)["rejected"]
    assert bad["index"] == 1 and bad["reason"].startswith("decode: invalid JSON")
