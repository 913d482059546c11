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


class Fed:
    """zlib's decompressor, counting the input bytes it is given."""

    total = 0

    def __init__(self, wbits: int) -> None:
        import zlib

        self._d = zlib.decompressobj(wbits)

    def decompress(self, data, max_length: int = 0) -> bytes:
        Fed.total += len(data)
        return self._d.decompress(data, max_length)

    def __getattr__(self, name: str):
        return getattr(self._d, name)


def test_a_body_of_many_gzip_members_is_read_in_one_pass(handler_for, monkeypatch):  # noqa: F811
    """Each member was given the rest of the body, which zlib copies whole at the member's end
    (``unused_data``): a public endpoint did quadratic work for a body of many empty members —
    4 MB (200,000 of them, within the limits) took 14 s of the function's time, 1 MB 1.2 s.
    The input each member is given is now bounded by a window doubling from 64 bytes: the body
    is fed to zlib about once, whatever its number of members."""
    import types
    import zlib

    from squall.bolts import json_decode

    monkeypatch.setattr(
        json_decode, "zlib", types.SimpleNamespace(**{**vars(zlib), "decompressobj": Fed})
    )
    handler, _ = handler_for()
    empty = gzip.compress(b"", mtime=0)  # 20 bytes
    raw = empty * 20_000 + gzip.compress(line(1) + line(2))
    Fed.total = 0
    resp = handler(gzip_request(raw), None)
    assert resp["statusCode"] == 202 and body(resp) == {"accepted": 2, "rejected": []}
    assert Fed.total <= 5 * len(raw)  # (the rest of the body per member: 20,000 × 200 kB)
