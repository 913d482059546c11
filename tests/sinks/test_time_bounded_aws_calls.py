"""AWS calls of the sinks inside a Lambda (a ``WriteContext.time_left``) against moto's server:
botocore makes one attempt (its own retries do not know the deadline; the sinks' loops and the
engine's retry, which do, decide), and no call is started once the time left is spent."""

from __future__ import annotations

import types

import botocore.endpoint
import orjson
import pytest
from botocore.exceptions import ClientError, ProxyConnectionError, SSLError

from squall import aws
from squall.component import ComponentContext
from squall.errors import BatchFailed, TransientError
from squall.event import Event, Failure
from squall.sinks.base import WriteContext
from squall.sinks.batchio import NOT_SENT
from squall.sinks.dead_letter_aws import (
    DeadLetterS3Config,
    DeadLetterS3Sink,
    DeadLetterSqsConfig,
    DeadLetterSqsSink,
)
from squall.sinks.firehose import FirehoseSink, FirehoseSinkConfig
from squall.sinks.s3 import S3Sink, S3SinkConfig
from squall.sinks.sqs import SqsSink, SqsSinkConfig
from squall.testing import records_from, topology_from
from squall.topology.executor import Engine
from tests.moto_standin import throttle_first, unique


@pytest.fixture
def botocore_sleeps(monkeypatch) -> list[float]:
    """botocore's retry backoff recorded, not slept."""
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


def _events(payloads):
    return [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]


def _sqs_sink(moto_server, url: str) -> SqsSink:
    sink = SqsSink(
        SqsSinkConfig(id="out", type="sqs", queue=url, endpoint_url=moto_server.endpoint),
        ComponentContext("t"),
    )
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()  # its client from aws.client, as in a deployment
    return sink


def _received(sqs, url: str) -> list[int]:
    got = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return sorted(got)
        for m in msgs:
            got.append(orjson.loads(m["Body"])["n"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_a_throttled_call_with_a_time_left_is_one_attempt_and_the_engines_retry_sends_it(
    moto_server, botocore_sleeps
):
    """With a deadline, botocore does not retry the throttled SendMessageBatch (it would sleep
    and try again, blind to the time left): the sink's TransientError goes to the engine, whose
    retry — time-aware — sends the messages, once each."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    sink = _sqs_sink(moto_server, url)
    attempts = throttle_first(sink.client, 1)
    prepared = sink.prepare(_events([{"n": i} for i in range(3)]))
    ctx = WriteContext(time_left=lambda: 10.0)
    with pytest.raises(TransientError):
        sink.write_batch(prepared, ctx)
    assert len(attempts) == 1 and botocore_sleeps == []
    assert sink.write_batch(prepared, ctx) is None  # the engine's retry of the write
    assert _received(sqs, url) == [0, 1, 2]


@pytest.mark.parametrize("ctx", [WriteContext(), WriteContext(time_left=lambda: None)])
def test_without_a_deadline_botocore_still_retries_as_configured(moto_server, botocore_sleeps, ctx):
    """Outside a Lambda (no time_left, or one answering None) nothing changes: botocore retries
    the throttled call itself and the write succeeds."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    sink = _sqs_sink(moto_server, url)
    attempts = throttle_first(sink.client, 1)
    assert sink.write_batch(sink.prepare(_events([{"n": 1}])), ctx) is None
    assert len(attempts) == 2 and len(botocore_sleeps) == 1
    assert _received(sqs, url) == [1]


def test_time_bounded_ends_with_its_block(moto_server, botocore_sleeps):
    """The bound holds for the calls inside the block only (a context variable)."""
    client = aws.client("sqs", region=None, endpoint_url=moto_server.endpoint)
    attempts = throttle_first(client, 2)
    with aws.time_bounded(lambda: 5.0), pytest.raises(Exception, match="503"):
        client.list_queues()
    assert len(attempts) == 1
    client.list_queues()  # outside: the 503 is retried by botocore
    assert len(attempts) == 3 and len(botocore_sleeps) == 1


@pytest.mark.parametrize("left", [0.0, -0.5])
def test_sqs_firehose_and_dead_letter_sqs_start_no_call_with_no_time_left(moto_server, left):
    """As the http and push sinks: once the time left is spent no call is started; the call
    fails as transient with the reason, and the engine's retry (bounded by the same time left)
    is not made: the runner answers the records for a retry."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    ctx = WriteContext(time_left=lambda: left)
    firehose = FirehoseSink(
        FirehoseSinkConfig(
            id="fh", type="firehose", delivery_stream="s", endpoint_url=moto_server.endpoint
        ),
        ComponentContext("t"),
    )
    dead = DeadLetterSqsSink(
        DeadLetterSqsConfig(
            id="dlq", type="dead_letter_sqs", queue=url, endpoint_url=moto_server.endpoint
        ),
        ComponentContext("t"),
    )
    for component in (_sqs_sink(moto_server, url), firehose, dead):
        component.open()
        attempts = throttle_first(component.client, 0)  # records every attempt, answers none
        letters = _events([{"n": 1}, {"n": 2}])
        for ev in letters:
            ev.failure = Failure("validate", "bad")  # what a dead letter carries
        with pytest.raises(TransientError, match=f"{component.id}: .*: {NOT_SENT}$"):
            component.write_batch(component.prepare(letters), ctx)
        assert attempts == [], component.id
    assert _received(sqs, url) == []


def test_the_engine_answers_a_batch_whose_sqs_sink_has_no_time_left_failed(moto_server):
    """End to end in the engine: the write is not retried past the deadline — the batch fails
    (the runner answers it for a retry) with the reason, and SQS got nothing."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    engine = Engine(
        topology_from(
            f"""
name: t
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: sqs, queue: "{url}", endpoint_url: "{moto_server.endpoint}"}}
"""
        ).plan
    )
    engine.time_left = lambda: 0.0
    slept: list[float] = []
    engine._sleep = slept.append
    with engine, pytest.raises(BatchFailed, match=NOT_SENT):
        engine.process(records_from([{"n": 1}]))
    assert slept == [] and _received(sqs, url) == []


def test_dead_letter_s3_put_object_with_a_time_left_is_one_attempt(moto_server, botocore_sleeps):
    """The S3 dead letters' PutObject (no retry loop of its own): inside a Lambda a throttled
    call is one attempt, the engine's time-aware retry writes the object."""
    s3 = moto_server.client("s3")
    bucket = unique("dl")
    s3.create_bucket(Bucket=bucket)
    dead = DeadLetterS3Sink(
        DeadLetterS3Config(
            id="dl", type="dead_letter_s3", bucket=bucket, endpoint_url=moto_server.endpoint
        ),
        ComponentContext("t"),
    )
    dead.open()
    attempts = throttle_first(dead.client, 1)
    letters = _events([{"n": 1}])
    letters[0].failure = Failure("validate", "bad")
    prepared = dead.prepare(letters)
    ctx = WriteContext(time_left=lambda: 10.0)
    with pytest.raises(TransientError):
        dead.write_batch(prepared, ctx)
    assert len(attempts) == 1 and botocore_sleeps == []
    dead.write_batch(prepared, ctx)
    assert len(attempts) == 2
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Call",
    )


def test_what_botocore_retries_squall_retries_too():
    """With botocore making one attempt, squall's loops must retry what it retried: every
    throttling and transient code of its standard mode (whatever the status), a 5xx and a 429,
    every connection and HTTP client failure (a reset, a proxy or TLS failure)."""
    from botocore.retries.standard import ThrottledRetryableChecker, TransientRetryableChecker

    codes = [*ThrottledRetryableChecker()._throttled_error_codes]
    codes += TransientRetryableChecker()._transient_error_codes
    missed = [c for c in codes if not aws.is_retryable(_client_error(c, 400))]
    assert missed == []
    for status in TransientRetryableChecker()._transient_status_codes + [429]:
        assert aws.is_retryable(_client_error("Unknown", status)), status
    for exc_cls in TransientRetryableChecker()._transient_exception_cls:
        assert issubclass(exc_cls, aws.NETWORK_ERRORS), exc_cls
    assert aws.is_retryable(ProxyConnectionError(proxy_url="http://p", error="x"))
    assert aws.is_retryable(SSLError(endpoint_url="https://e", error="x"))
    assert not aws.is_retryable(_client_error("AccessDenied", 403))
    # ... and not what the server says will never work: 501 (an S3-compatible store without the
    # feature: "NotImplemented"), 505 — botocore does not retry them either
    for status in (501, 505):
        assert status not in TransientRetryableChecker()._transient_status_codes
        assert not aws.is_retryable(_client_error("NotImplemented", status)), status


def test_only_the_5xx_botocore_retries_are_retried():
    """squall's retryable statuses are botocore's standard mode's: its transient 500, 502, 503
    and 504 and its throttling 429. Every other 5xx was retried (all but 501 and 505) — 506 to
    599 are no AWS answer (a proxy's, an S3-compatible store's 507 Insufficient Storage) and
    botocore gives them up at once: retried until the attempts ran out, the same failure."""
    from botocore.retries.standard import ThrottlingStatusCodeChecker, TransientRetryableChecker

    botocore_statuses = {
        *TransientRetryableChecker()._transient_status_codes,
        *ThrottlingStatusCodeChecker()._throttling_status_codes,
    }
    retried = [s for s in range(400, 600) if aws.is_retryable(_client_error("Unknown", s))]
    assert retried == sorted(botocore_statuses) == [429, 500, 502, 503, 504]
    assert aws.TRANSIENT_STATUSES == botocore_statuses
    # an error code botocore counts as transient or throttling is still retried whatever its status
    assert aws.is_retryable(_client_error("SlowDown", 599))
    assert aws.is_retryable(_client_error("InternalError", 507))


def test_a_429_with_an_unmodelled_code_is_transient_in_a_lambda(moto_server, botocore_sleeps):
    """A 429 answer botocore retried (its throttling status) is the sqs sink's TransientError
    (the engine's retry) in a Lambda, not a failure for good."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    sink = _sqs_sink(moto_server, url)
    throttle_first(sink.client, 1, status=429)
    with pytest.raises(TransientError):
        sink.write_batch(sink.prepare(_events([{"n": 1}])), WriteContext(time_left=lambda: 10.0))


def test_s3_sink_put_object_with_a_time_left_is_one_attempt(moto_server, botocore_sleeps):
    """The s3 sink's PutObject (written at each batch, not rolling) in a Lambda: a throttled
    call is one attempt; the engine's time-aware retry writes the object once."""
    s3 = moto_server.client("s3")
    bucket = unique("lake")
    s3.create_bucket(Bucket=bucket)
    sink = S3Sink(
        S3SinkConfig(
            id="lake", type="s3", bucket=bucket, endpoint_url=moto_server.endpoint, time_field="ts"
        ),
        ComponentContext("t"),
    )
    sink.open()
    attempts = throttle_first(sink.client, 1)
    at = "2026-12-06T10:00:00Z"
    prepared = sink.prepare(_events([{"n": 1, "ts": at}, {"n": 2, "ts": at}]))
    assert prepared.payload  # one object to put
    ctx = WriteContext(time_left=lambda: 10.0)
    with pytest.raises(TransientError):
        sink.write_batch(prepared, ctx)
    assert len(attempts) == 1 and botocore_sleeps == []
    assert sink.write_batch(prepared, ctx) is None
    assert len(attempts) == 2 and len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 1
