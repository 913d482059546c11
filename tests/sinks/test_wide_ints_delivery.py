"""An integer beyond 64 bits (the json bolt keeps it exact) delivered by the firehose, sqs, http and
push sinks as its digits, against each sink's local stand-in. orjson cannot write such an int
(TypeError): these events were rejected to the dead letter ("value cannot be serialized as JSON")
or, from a push template or an SQS attribute, failed the whole batch. The kinesis sink's test is
in tests/kinesis/test_kinesis_sink.py (kinesis-mock)."""

from __future__ import annotations

import json

import pytest

from squall import exact_json
from squall.event import Event
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.moto_standin import unique
from tests.sinks import test_push_sink as push_standin
from tests.sinks import test_s3_firehose_sinks as firehose_standin
from tests.sinks.local_http import LocalHttp
from tests.sinks.test_sqs_sink import drain, make_queue, sink_yaml

fcm, key_pair = push_standin.fcm, push_standin.key_pair  # the FCM stand-in's fixtures
delivery = firehose_standin.delivery  # moto's Firehose into S3 (the s3 fixture: conftest.py)

WIDE = b'{"n": 18446744073709551616, "m": -9223372036854775809}'
EXACT = b'{"n":18446744073709551616,"m":-9223372036854775809}'


def topology(sink: str, dlq: str) -> str:
    return f"""
name: wide
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {sink}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {dlq}}}
"""


def committed(run) -> bool:
    return {o.outcome for o in run.outcomes} == {Outcome.COMMITTED}


def test_firehose_puts_them_as_digits(moto_server, s3, delivery):
    name, bucket = delivery
    sink = f'{{id: fh, type: firehose, delivery_stream: {name}, endpoint_url: "{moto_server.endpoint}"}}'
    run = run_topology(topology(sink, name), records_from([WIDE]))
    assert committed(run)
    bodies = firehose_standin.objects(s3, bucket).values()
    assert b"".join(bodies) == EXACT + b"\n"


def test_sqs_sends_them_as_digits_in_the_body_and_in_attributes(moto_server):
    sqs = moto_server.client("sqs")
    url = make_queue(sqs)
    extra = ", attributes: {doc: doc, big: n}"
    payload = WIDE[:-1] + b', "doc": {"k": 18446744073709551616}}'
    run = run_topology(sink_yaml(moto_server.endpoint, url, extra), records_from([WIDE, payload]))
    assert committed(run)
    first, second = drain(sqs, url)
    assert first["Body"].encode() == EXACT
    attrs = second["MessageAttributes"]
    assert attrs["doc"] == {"DataType": "String", "StringValue": '{"k":18446744073709551616}'}
    assert attrs["big"] == {"DataType": "Number", "StringValue": "18446744073709551616"}


def test_sqs_fifo_sends_them_as_digits(moto_server):
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    payload = WIDE[:-1] + b', "g": "k1"}'
    run = run_topology(
        sink_yaml(moto_server.endpoint, url, ", message_group: g"), records_from([payload])
    )
    assert committed(run)
    [msg] = drain(sqs, url)
    assert msg["Body"].encode() == EXACT[:-1] + b',"g":"k1"}'


@pytest.mark.parametrize(
    ("mode", "body"),
    [
        ("single", EXACT),
        ("json_batch", b"[" + EXACT + b"," + EXACT + b"]"),
        ("ndjson_batch", EXACT + b"\n" + EXACT + b"\n"),
    ],
)
def test_http_posts_them_as_digits(mode, body):
    with LocalHttp(lambda req: (200, {}, "ok")) as srv:
        sink = f'{{id: hook, type: http, url: "{srv.url}/in", mode: {mode}}}'
        run = run_topology(topology(sink, unique("hook")), records_from([WIDE, WIDE]))
    assert committed(run)
    sent = [r.body for r in srv.requests]
    assert sent == ([body] * 2 if mode == "single" else [body])


def test_push_templates_render_them_as_digits(fcm, key_pair):
    sink = push_standin.make_sink(fcm, key_pair, title="n={n}", body="m={m}", data={"doc": "{doc}"})
    raw = WIDE[:-1] + b', "doc": {"k": -9223372036854775809}, "device_token": "tok-1"}'
    [record] = records_from([raw])
    ev = Event(record.data, record.meta, None, 0, exact_json.loads(raw))  # as the json bolt does
    prepared = sink.prepare([ev])
    assert not prepared.rejected
    sink.write_batch(prepared, None)
    sink.close()
    [sent] = [r.body for r in fcm.http.requests if r.path.endswith(":send")]
    assert b'"title":"n=18446744073709551616"' in sent
    assert b'"body":"m=-9223372036854775809"' in sent
    assert json.loads(sent)["message"]["data"] == {"doc": '{"k":-9223372036854775809}'}
