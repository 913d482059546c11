"""Hostile Lambda input: bad records are record failures, a foreign event is refused by name, the producer answers 400."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from squall.deploy.lambda_consumer import NotAKinesisEvent, event_source
from squall.deploy.lambda_producer import make_handler as make_producer
from tests.deploy.test_lambda_consumer import handler_for
from tests.factories import api_gateway_event, kinesis_lambda_event


def test_bad_base64_or_missing_data_is_a_dead_letter_not_a_failed_invocation(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}])
    event["Records"][1]["kinesis"]["data"] = "!!not base64!!"
    del event["Records"][2]["kinesis"]["data"]
    event["Records"][3]["kinesis"]["data"] = 42
    event["Records"][4]["kinesis"]["approximateArrivalTimestamp"] = "yesterday"
    assert handler(event, None) == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute(
        "select group_concat(n) from events"
    ).fetchone() == ("1,5",)
    dead = [orjson.loads(line) for line in (tmp_path / "dlq.jsonl").read_bytes().splitlines()]
    reasons = [d["reason"] for d in dead]
    assert (
        reasons[0].startswith("kinesis.data is not valid base64")
        and dead[0]["record"] == "!!not base64!!"
    )
    assert reasons[1:] == [
        "kinesis.data is missing, not base64 text",
        "kinesis.data is a JSON number, not base64 text",
    ]
    assert {d["meta"]["sequence_number"] for d in dead} == {
        r["kinesis"]["sequenceNumber"] for r in event["Records"][1:4]
    }


SQS = {
    "Records": [
        {
            "messageId": "1",
            "body": "{}",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        }
    ]
}
DYNAMODB = {
    "Records": [
        {"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {}}
    ]
}
FIREHOSE = {
    "invocationId": "x",
    "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/d",
    "records": [{"recordId": "1", "data": "e30="}],
}


@pytest.mark.parametrize(
    ("event", "named"),
    [
        (DYNAMODB, "received aws:dynamodb"),
        (FIREHOSE, "received firehose"),
        ({}, "received an object without Records (keys: none)"),
        ({"Records": []}, "an empty Records list"),
        ([1, 2], "a JSON array"),
        (
            {"Records": [{"eventSource": "aws:kinesis", "kinesis": {"data": "e30="}}]},
            "Records[0]: no kinesis.sequenceNumber",
        ),
    ],
)
def test_an_event_that_is_not_a_kinesis_batch_is_refused_naming_what_arrived(
    tmp_path: Path, event, named
):
    handler = handler_for(tmp_path, dlq=True)
    with pytest.raises(
        NotAKinesisEvent, match=named.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        handler(event, None)
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        0,
    )


def test_event_source_is_the_one_dispatch_point():
    assert event_source(kinesis_lambda_event([{"n": 1}])) == "aws:kinesis"
    assert event_source(SQS) == "aws:sqs" and event_source(FIREHOSE) == "firehose"


PRODUCER = """
name: p
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks:
  - {id: out, type: 'squall.testing:MemorySink', name: lambda-input-producer}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: lambda-input-producer-dlq}
"""


@pytest.fixture
def producer(tmp_path: Path):
    t = tmp_path / "topology.yaml"
    t.write_text(PRODUCER)
    return make_producer(t)


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(body={"event": "click"}), "body is a JSON object, not a string"),
        (lambda e: e.update(httpMethod=None), "no HTTP method"),
        (lambda e: e.update(headers=["x"]), "headers is a JSON array"),
        (lambda e: e.update(requestContext="nope"), "requestContext is a JSON string"),
        (
            lambda e: e["requestContext"].update(identity=[]),
            "requestContext.identity is a JSON array",
        ),
        (lambda e: e["requestContext"].update(requestTimeEpoch="soon"), "is not a number"),
        (lambda e: e.update(body="!!!", isBase64Encoded=True), "not base64"),
    ],
)
def test_a_malformed_request_is_a_400_with_the_reason_never_a_502(producer, mutate, reason):
    event = api_gateway_event('{"event": "click"}')
    mutate(event)
    answer = producer(event, None)
    assert answer["statusCode"] == 400, answer
    assert reason in orjson.loads(answer["body"])["error"]


@pytest.mark.parametrize("body", [_deep(300), "[" + _deep(65) + "]", f"[{_deep(2000)}]"])
def test_an_event_nested_too_deep_is_that_events_rejection(producer, body):
    """Over the producer's limit (64): rejected with the depth; an element over orjson's own
    (1024) is not JSON to orjson: the json bolt rejects it with orjson's reason."""
    answer = producer(api_gateway_event(body), None)
    assert answer["statusCode"] == 400, answer
    [rejected] = orjson.loads(answer["body"])["rejected"]
    assert rejected["index"] == 0
    if "2000" not in body and body.count("{") < 1000:
        depth = body.count("{")
        assert rejected["reason"] == f"spout: nested {depth} levels deep, over the limit (64)"
    else:
        assert rejected["reason"].startswith("decode: invalid JSON: depth limit exceeded")


def test_a_lone_event_too_deep_for_orjson_is_a_400_saying_so(producer):
    answer = producer(api_gateway_event(_deep(2000)), None)
    assert answer["statusCode"] == 400
    assert "not JSON, a JSON array, or JSON lines: depth limit exceeded" in answer["body"]


def test_a_null_method_in_an_http_api_event_is_a_400(producer):
    event = api_gateway_event('{"event": "click"}', version=2)
    event["requestContext"]["http"]["method"] = None
    answer = producer(event, None)
    assert answer["statusCode"] == 400 and "no HTTP method" in answer["body"]


def test_consumer_keeps_working_after_a_refused_event(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    with pytest.raises(NotAKinesisEvent):
        handler(DYNAMODB, None)  # (SQS and S3 events are triggers of their own: docs/sinks.md)
    assert handler(kinesis_lambda_event([{"n": 7}]), None) == {"batchItemFailures": []}


def _reference_records(event: dict) -> list[tuple]:
    """What records_from_event must produce, decoded the plain way (one call per record)."""
    import base64
    import binascii
    from datetime import UTC, datetime

    out = []
    for r in event["Records"]:
        k = r["kinesis"]
        try:
            data = base64.b64decode(k["data"], validate=True)
        except (binascii.Error, ValueError):
            data = None  # a defect: the prefix is kept, checked by the test above
        ts = k.get("approximateArrivalTimestamp")
        arrival = None
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            try:
                arrival = datetime.fromtimestamp(ts, UTC)
            except (OverflowError, OSError, ValueError):
                pass  # out of range: no arrival time
        arn = r.get("eventSourceARN")
        out.append(
            (
                data,
                arn.rsplit("/", 1)[-1] if isinstance(arn, str) else "",
                r["eventID"].split(":", 1)[0],
                k["sequenceNumber"],
                k.get("partitionKey", ""),
                arrival,
            )
        )
    return out


def test_records_from_event_matches_a_plain_decode_of_every_record():
    """The decoding loop shares arrival times and stream names between records and decodes base64
    without the regular-expression check: randomized events (valid and broken base64, repeated,
    integer, boolean and missing timestamps, several streams) decode as the plain way does."""
    import base64
    import random

    from squall.deploy.lambda_consumer import records_from_event

    rng = random.Random(18)
    for _ in range(30):
        event = kinesis_lambda_event([b"x"] * rng.randint(1, 60))
        for r in event["Records"]:
            k = r["kinesis"]
            payload = rng.randbytes(rng.randint(0, 40))
            k["data"] = rng.choice(
                [
                    base64.b64encode(payload).decode(),
                    base64.b64encode(payload).decode().rstrip("="),  # padding lost
                    base64.b64encode(payload).decode() + "=",
                    "a b",
                    "é",
                ]
            )
            k["approximateArrivalTimestamp"] = rng.choice(
                [1.7e9, 1.7e9 + 0.5, 1_700_000_001, True, None, "soon", 1e300]
            )
            r["eventSourceARN"] = rng.choice(
                ["arn:aws:kinesis:us-east-1:1:stream/a", "arn:aws:kinesis:us-east-1:1:stream/b"]
            )
        got = [
            (
                None if rec.meta.defect else rec.data,
                rec.meta.stream,
                rec.meta.shard_id,
                rec.meta.sequence_number,
                rec.meta.partition_key,
                rec.meta.arrival_time,
            )
            for rec in records_from_event(event)
        ]
        assert got == _reference_records(event)
