"""The producer's body: one bad event is that event's rejection, never the whole request's."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from squall.deploy.lambda_producer import make_handler
from squall.testing import MemorySink
from tests.factories import api_gateway_event

TOPOLOGY = """
name: producer
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""


@pytest.fixture
def producer(tmp_path: Path):
    def make(**options):
        tag = uuid.uuid4().hex
        t = tmp_path / f"{tag}.yaml"
        t.write_text(TOPOLOGY.format(tag=tag))
        handler = make_handler(t, **options)

        def send(body: str | bytes, **event):
            answer = handler(api_gateway_event(body, **event), None)
            return (
                answer["statusCode"],
                orjson.loads(answer["body"]),
                MemorySink.stores.get(f"{tag}-out", []),
                MemorySink.stores.get(f"{tag}-dlq", []),
            )

        return send

    return make


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


GOOD = [b'{"n": 0}', b'{"n": 2, "s": "[{,\\"]"}', b'{"n": 4}']
BAD = {1: b'{"too": ' + deep(70) + b"}", 3: b'{"huge": 1e999}', 5: b'{"big": 18446744073709551616}'}
REASONS = {
    1: "spout: nested 71 levels deep, over the limit (64)",
    3: "decode: invalid JSON: number is infinity when parsed as double: line 1 column 10 (char 9)",
    5: "spout: integer 18446744073709551616 is outside the 64-bit range "
    "(-9223372036854775808 to 18446744073709551615); decoding would round it to a float",
}


def _events() -> list[bytes]:
    good = iter(GOOD)
    return [BAD[i] if i in BAD else next(good) for i in range(6)]


@pytest.mark.parametrize("shape", ["array", "lines"])
def test_a_bad_element_is_rejected_alone_and_dead_lettered_as_sent(producer, shape):
    """A too-deep element, a number orjson cannot read and an integer beyond 64 bits made the
    whole request a 400 (the array) or went on silently as a float (the lines)."""
    events = _events()
    body = b"[" + b" ,\n ".join(events) + b"]" if shape == "array" else b"\n".join(events)
    status, answer, out, dlq = producer()(body)
    assert status == 202
    assert answer == {
        "accepted": 3,
        "rejected": [{"index": i, "reason": REASONS[i]} for i in sorted(BAD)],
    }
    assert [ev.value["n"] for ev in out] == [0, 2, 4]
    assert out[1].value["s"] == '[{,"]'
    assert all(ev.value["request"]["source_ip"] == "81.2.69.142" for ev in out)
    assert sorted(ev.raw for ev in dlq) == sorted(BAD.values())  # the bytes as sent


def test_json_lines_indexes_are_the_bodys_lines_blank_ones_included(producer):
    body = b'\n{"n": 1}\n\n{broken\r\n{"n": 2}\n\n'
    status, answer, out, _ = producer()(body)
    assert status == 202 and answer["accepted"] == 2
    [bad] = answer["rejected"]
    assert bad["index"] == 3 and bad["reason"].startswith("decode: invalid JSON")
    assert body.split(b"\n")[bad["index"]] == b"{broken\r"


BOM_BODIES = {
    "one event": '{"n": 0}',
    "an array": '[{"n": 0}, {"n": 1}]',
    "JSON lines": '{"n": 0}\n{"n": 1}\n',
}


@pytest.mark.parametrize("shape", sorted(BOM_BODIES))
@pytest.mark.parametrize("sent", ["text", "base64", "gzip"])
def test_a_utf8_bom_opening_the_body_is_dropped(producer, shape, sent):
    """A body a Windows tool or .NET's default encoder wrote opens with a BOM: one event, an
    array or the first line was unreadable (400, or the first line rejected)."""
    body = "\ufeff" + BOM_BODIES[shape]
    wire = {"text": body, "base64": body.encode(), "gzip": body}[sent]
    status, answer, out, dlq = producer()(wire, gzip_body=sent == "gzip")
    n = 1 if shape == "one event" else 2
    assert (status, answer) == (202, {"accepted": n, "rejected": []})
    assert [ev.value["n"] for ev in out] == list(range(n)) and dlq == []


def test_an_array_that_never_closes_is_not_json(producer):
    status, answer, _, _ = producer()(b'[{"n": 1}, {"n": 2')
    assert status == 400
    assert answer["error"].startswith("body is not JSON, a JSON array, or JSON lines: ")
    status, answer, _, _ = producer()(b'[{"n": 1}, "open]')
    assert status == 400


@pytest.mark.parametrize("body", [b"[]", b" [ \n ] "])
def test_an_empty_array_says_there_is_no_event(producer, body):
    """It was ``400 {"accepted": 0, "rejected": []}``: every event refused, and none named."""
    status, answer, out, _ = producer()(body)
    assert (status, answer) == (400, {"error": "no events: the body is an empty array"})
    assert out == []


def test_a_null_body_says_it_is_null(producer):
    status, answer, _, _ = producer()(b" null ")
    assert status == 400
    assert answer == {"error": "body is JSON null, not an event, an array of events, or JSON lines"}


def test_an_event_with_its_own_context_field_is_rejected_not_overwritten(producer):
    mine = b'{"n": 1, "request": {"source_ip": "10.0.0.1"}}'
    status, answer, out, dlq = producer()(b'[{"n": 0}, ' + mine + b"]")
    assert status == 202
    assert answer["rejected"] == [
        {
            "index": 1,
            "reason": "spout: the event has a field 'request', where the producer puts the "
            "request context (context_key): rename it in the client",
        }
    ]
    assert [ev.value["n"] for ev in out] == [0] and [ev.raw for ev in dlq] == [mine]
    # With another context_key (or none), the client's field is the client's.
    status, answer, out, _ = producer(context_key="ctx")(b"[" + mine + b"]")
    assert status == 202 and out[0].value["request"] == {"source_ip": "10.0.0.1"}
    assert out[0].value["ctx"]["source_ip"] == "81.2.69.142"


def test_integers_at_the_64_bit_bounds_pass_exactly_floats_stay_floats(producer):
    values = [
        b"18446744073709551615",
        b"-9223372036854775808",
        b"1e19",
        b"1.8446744073709552e+19",
        b"123456789012345678901e0",
        b"-12345678901234567890.5",
        b'"184467440737095516160000"',
    ]
    body = b"[" + b",".join(b'{"v": %s}' % v for v in values) + b"]"
    status, answer, out, _ = producer()(body)
    assert (status, answer["rejected"]) == (202, [])
    assert [ev.value["v"] for ev in out] == [
        2**64 - 1,
        -(2**63),
        1e19,
        1.8446744073709552e19,
        123456789012345678901.0,
        -12345678901234567890.5,
        "184467440737095516160000",
    ]
    status, answer, _, _ = producer()(b'[{"v": -9223372036854775809}, {"v": 1}]')
    assert answer["rejected"][0]["index"] == 0
    assert (
        "integer -9223372036854775809 is outside the 64-bit range"
        in answer["rejected"][0]["reason"]
    )


def test_array_elements_respect_strings_and_nesting():
    from squall.deploy.lambda_producer import array_elements

    assert array_elements(b'[ 1 , "a,]\\"", {"b": [2, 3]}, [] ]') == [
        b"1",
        b'"a,]\\""',
        b'{"b": [2, 3]}',
        b"[]",
    ]
    assert array_elements(b"[]") == [] and array_elements(b"[1,]") == [b"1", b""]
    assert array_elements(b'[{"a": 1], 2]') == [b'{"a": 1]', b"2"]  # the bad one stays one
    for not_one_array in (b"[1, 2", b'["abc]', b"[1] [2]", b"[1}", b"{}"):
        assert array_elements(not_one_array) is None


@pytest.mark.parametrize("version", [1, 2])
def test_a_body_that_is_not_utf8_is_answered_with_the_byte_and_its_place(producer, version):
    """A Latin-1 body (one event, not JSON lines) was answered `400 {"error": "body is not JSON,
    a JSON array, or JSON lines: str is not valid UTF-8: surrogates not allowed: line 1 column 1
    (char 0)"}` (seen from the packaged pistats producer under awslambdaric): orjson's words
    about a Python string the client never sent, the same whatever the byte and wherever it is.
    The answer now names the first byte that is not UTF-8 and its place, as the json bolt's
    dead letters do."""
    send = producer()
    body = '{"city": "Montr\xe9al"}'.encode("latin-1")
    status, answer, out, _ = send(body, version=version)
    assert status == 400 and out == []
    assert answer == {
        "error": "body is not JSON, a JSON array, or JSON lines: not UTF-8: byte 0xE9 at "
        "offset 15 (line 1, column 16)"
    }


@pytest.mark.parametrize(
    ("body", "place"),
    [
        (b'\r\n\n{"city": "Montreal",}', "line 3 column 20 (char 22)"),
        (b'  {"ok": tru}', "line 1 column 10 (char 9)"),
        (b'\n\n{"city": "Montr\xe9al"}', "byte 0xE9 at offset 17 (line 3, column 16)"),
    ],
)
def test_a_body_that_is_not_json_is_answered_with_its_place_as_sent(producer, body, place):
    """Review of ddc4511: the byte that is not UTF-8 was placed in the body as sent, orjson's
    other errors in the body stripped of its leading blank lines: `\\r\\n\\n{…,}` was answered
    "line 1" in the same answer that says "line 3" for a Latin-1 byte."""
    send = producer()
    status, answer, out, _ = send(body)
    assert status == 400 and out == []
    assert answer["error"].startswith("body is not JSON, a JSON array, or JSON lines: ")
    assert answer["error"].endswith(place), answer
