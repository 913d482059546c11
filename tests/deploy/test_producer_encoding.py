"""A body in a Content-Encoding the producer cannot read is answered 415, never read as JSON.

Browsers compress with ``CompressionStream("deflate")`` as readily as with ``"gzip"``, and the
generated API allows the ``content-encoding`` header. A deflate (or brotli) body was read as JSON
lines of binary: each "line" refused as not UTF-8, answered ``400`` — the SDK's cue to drop its
events as bad — with indexes that were not its events'. ``x-gzip`` (RFC 9110: the same as
``gzip``) was refused the same way.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
import zlib
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import make_handler
from squall.testing import MemorySink
from tests.factories import api_gateway_event

TOPOLOGY = """
name: producer
spout: {{type: stdin}}
bolts: [{{id: decode, type: json, event_id_field: message_id}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink', name: '{tag}'}}]
"""

LINES = b"".join(b'{"message_id": "m%d"}\n' % i for i in range(40))


def post(tmp_path: Path, encoding: str, data: bytes) -> tuple[dict, list]:
    tag = uuid.uuid4().hex
    path = tmp_path / f"{tag}.yaml"
    path.write_text(TOPOLOGY.format(tag=tag))
    event = api_gateway_event(LINES)
    event["headers"]["Content-Encoding"] = encoding
    event["body"] = base64.b64encode(data).decode()
    return make_handler(path)(event, None), MemorySink.stores.get(tag, [])


@pytest.mark.parametrize(
    ("encoding", "data"),
    [("deflate", zlib.compress(LINES)), ("br", b"\x1b\x27\x00\xf8\x8d\x94\x6e\xde\n\n\n")],
)
def test_an_encoding_the_producer_cannot_read_is_a_415_naming_it(tmp_path, encoding, data):
    resp, stored = post(tmp_path, encoding, data)
    assert resp["statusCode"] == 415
    assert json.loads(resp["body"]) == {
        "error": f"Content-Encoding '{encoding}' is not supported: send gzip, or no Content-Encoding"
    }
    assert stored == []


@pytest.mark.parametrize("encoding", ["x-gzip", "GZIP", "identity"])
def test_x_gzip_is_gzip_and_identity_is_none(tmp_path, encoding):
    data = LINES if encoding == "identity" else gzip.compress(LINES)
    resp, stored = post(tmp_path, encoding, data)
    assert resp["statusCode"] == 202 and json.loads(resp["body"])["accepted"] == 40
    assert len(stored) == 40


def alb_multi_value_event(encoding: str, data: bytes) -> dict:
    """An ALB target group's event with multi-value headers on: only ``multiValueHeaders``."""
    event = api_gateway_event(LINES)
    event["requestContext"] = {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:..."}}
    headers = {**event.pop("headers"), "Content-Encoding": encoding}
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    event["body"] = base64.b64encode(data).decode()
    return event


def test_an_alb_event_with_multi_value_headers_is_read_and_answered_in_them(tmp_path):
    """Such an event has no ``headers``: its Content-Encoding went unseen, the gzip body was read
    as binary JSON lines (every "line" refused, a 400), and the answer's headers (Retry-After
    among them) were in the ``headers`` the load balancer does not read in that mode."""
    tag = uuid.uuid4().hex
    path = tmp_path / f"{tag}.yaml"
    path.write_text(TOPOLOGY.format(tag=tag))
    handle = make_handler(path)
    resp = handle(alb_multi_value_event("gzip", gzip.compress(LINES)), None)
    assert resp["statusCode"] == 202, resp
    assert json.loads(resp["body"]) == {"accepted": 40, "rejected": []}
    assert len(MemorySink.stores[tag]) == 40
    assert "headers" not in resp
    assert resp["multiValueHeaders"] == {"Content-Type": ["application/json"]}
    refused = handle(alb_multi_value_event("deflate", zlib.compress(LINES)), None)
    assert refused["statusCode"] == 415
    assert refused["multiValueHeaders"] == {"Content-Type": ["application/json"]}


def post_without_encoding(tmp_path: Path, data: bytes, version: int = 1) -> tuple[dict, list]:
    """``data`` as the body (base64, as API Gateway sends binary) with no Content-Encoding."""
    tag = uuid.uuid4().hex
    path = tmp_path / f"{tag}.yaml"
    path.write_text(TOPOLOGY.format(tag=tag))
    event = api_gateway_event(data, version=version)
    assert not any(k.lower() == "content-encoding" for k in event["headers"])
    return make_handler(path)(event, None), MemorySink.stores.get(tag, [])


@pytest.mark.parametrize("version", [1, 2])
def test_a_gzip_body_without_content_encoding_is_read_as_gzip(tmp_path, version):
    """navigator.sendBeacon cannot set Content-Encoding (a proxy may drop it): the gzip body was
    read as JSON lines of binary, its "lines" rejected one by one — a 400 whose indexes were not
    the events', the SDK's cue to drop events that were never read, the others unnamed."""
    resp, stored = post_without_encoding(tmp_path, gzip.compress(LINES, mtime=0), version)
    assert resp["statusCode"] == 202, resp
    assert json.loads(resp["body"]) == {"accepted": 40, "rejected": []}
    assert [e.event_id for e in stored] == [f"m{i}" for i in range(40)]
    assert stored[0].value["request"]["source_ip"] == "81.2.69.142"


def test_a_gzip_body_without_the_header_is_held_to_the_same_limits(tmp_path):
    truncated = gzip.compress(LINES, mtime=0)[:-12]
    resp, stored = post_without_encoding(tmp_path, truncated)
    assert (resp["statusCode"], json.loads(resp["body"])) == (
        400,
        {"error": "cannot read body: truncated gzip body"},
    )
    bomb = gzip.compress(b"[" + b" " * 6_000_000 + b"]")
    resp, stored = post_without_encoding(tmp_path, bomb)
    assert resp["statusCode"] == 413 and "decompresses to more than" in resp["body"]
    assert stored == []


def test_a_first_line_that_is_a_gzip_event_is_still_that_lines_problem(tmp_path):
    """A body that is not one gzip stream (a gzip event, then JSON lines) is answered per line."""
    from tests.deploy.test_producer_context_forgery import gzip_line

    raw = gzip_line({"message_id": "g"}) + b"\n" + LINES
    resp, stored = post_without_encoding(tmp_path, raw)
    answer = json.loads(resp["body"])
    assert resp["statusCode"] == 202 and answer["accepted"] == 40, answer
    [bad] = answer["rejected"]
    assert bad["index"] == 0 and "a gzip-compressed event in the body" in bad["reason"]


@pytest.mark.parametrize("after", [b"\n", b"\r\n", b"xyz", b"\x00junk", b"\x1f\x8bcorrupt"])
def test_a_gzip_body_without_the_header_followed_by_other_bytes_is_a_bad_body(tmp_path, after):
    """A gzip body then bytes that are neither gzip nor JSON lines (a trailing newline, garbage)
    fell back to JSON lines: its binary "lines" were rejected one by one — a 400 naming indexes
    0 and 1, which were not its events', the other events unnamed — the failure the header-less
    gzip reading was added to end. It is a malformed body, as with ``Content-Encoding: gzip``."""
    resp, stored = post_without_encoding(tmp_path, gzip.compress(LINES, mtime=0) + after)
    answer = json.loads(resp["body"])
    assert resp["statusCode"] == 400 and "rejected" not in answer, answer
    assert "followed by" in answer["error"] and stored == []
