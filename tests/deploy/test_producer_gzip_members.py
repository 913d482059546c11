"""A gzip body is read whole, as the json bolt reads a gzip record: every member (concatenated
gzip files are one gzip file, RFC 1952), and data after the stream is an error. The producer read
the first member only and dropped the rest — events the client sent, answered 202 as if there were
no more of them."""

from __future__ import annotations

import base64
import gzip
import json

from tests.deploy.test_lambda_producer import body, handler_for  # noqa: F401 - the fixture
from tests.factories import api_gateway_event


def gzip_request(raw: bytes) -> dict:
    event = api_gateway_event(b"x")
    event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    event["headers"]["Content-Encoding"] = "gzip"
    return event


def line(i: int) -> bytes:
    return json.dumps({"message_id": f"m{i}", "event_type": "click"}).encode() + b"\n"


def test_every_gzip_member_of_a_body_is_read(handler_for):  # noqa: F811
    handler, _ = handler_for()
    raw = gzip.compress(line(1) + line(2)) + gzip.compress(line(3))
    resp = handler(gzip_request(raw), None)
    assert resp["statusCode"] == 202 and body(resp) == {"accepted": 3, "rejected": []}


def test_data_after_the_gzip_stream_is_a_400_not_dropped(handler_for):  # noqa: F811
    handler, _ = handler_for()
    resp = handler(gzip_request(gzip.compress(line(1) + line(2)) + line(3)), None)
    assert resp["statusCode"] == 400
    assert "bytes after the end of the gzip stream" in body(resp)["error"]


def test_members_together_over_the_limit_are_a_413(handler_for):  # noqa: F811
    handler, _ = handler_for()
    member = gzip.compress(b" " * 3_000_000 + line(1))
    resp = handler(gzip_request(member + member), None)
    assert resp["statusCode"] == 413 and "decompresses to more than" in body(resp)["error"]
