"""The review of the one-attempt bound on AWS calls in a Lambda (``aws.time_bounded``), against
moto's server and a stalled local TCP server: what the bound must not take away (S3's region
redirect, botocore's retry quota outside the bound, whatever botocore reads a handler's answer
as), what it adds (a read no longer than the time left), and the calls it must not start (no
time left: the kinesis sinks, the S3 ones, a rolling s3 sink's release)."""

from __future__ import annotations

import select
import socket
import types
from collections.abc import Iterator

import botocore.endpoint
import orjson
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from squall import aws
from squall.component import ComponentContext
from squall.errors import BatchFailed, TransientError
from squall.event import Event, Failure
from squall.sinks.base import WriteContext
from squall.sinks.batchio import Item, Retry, send_all
from squall.sinks.dead_letter_aws import (
    DeadLetterKinesisConfig,
    DeadLetterKinesisSink,
    DeadLetterS3Config,
    DeadLetterS3Sink,
)
from squall.sinks.kinesis import KinesisSink, KinesisSinkConfig
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


def _events(payloads: list[dict], failed: bool = False) -> list[Event]:
    out = []
    for i, r in enumerate(records_from(payloads)):
        ev = Event(r.data, r.meta, None, i, orjson.loads(r.data))
        if failed:
            ev.failure = Failure("validate", "bad")  # what a dead letter carries
        out.append(ev)
    return out


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data


def _redirect_first(client, region: str) -> list[str]:
    """Answer the first attempt as S3 does a bucket of another region (301 PermanentRedirect,
    ``x-amz-bucket-region``); the rest reach the server. Returns the attempts' URLs."""
    attempts: list[str] = []
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect</Code>'
        b"<Message>The bucket you are attempting to access must be addressed using the "
        b"specified endpoint.</Message></Error>"
    )

    def before_send(request, **_):
        attempts.append(request.url)
        if len(attempts) == 1:
            headers = {"x-amz-bucket-region": region, "Content-Type": "application/xml"}
            return AWSResponse(request.url, 301, headers, _Body(body))
        return None

    client.meta.events.register("before-send", before_send)
    return attempts


def _s3_sink(moto_server, bucket: str, **extra) -> S3Sink:
    sink = S3Sink(
        S3SinkConfig(
            id="lake",
            type="s3",
            bucket=bucket,
            endpoint_url=moto_server.endpoint,
            time_field="ts",
            **extra,
        ),
        ComponentContext("t"),
    )
    sink.open()
    return sink


def test_an_s3_region_redirect_is_still_followed_inside_the_bound(moto_server, botocore_sleeps):
    """S3's region redirector answers botocore's needs-retry event too ("again at once, in the
    bucket's region"): the bound vetoes botocore's retries, not that. A veto answering ahead of
    every handler swallowed it, and an s3 sink whose bucket is in another region than its client
    failed every write in a Lambda (PermanentRedirect, refused for good) and none outside."""
    s3 = moto_server.client("s3")
    bucket = unique("lake")
    s3.create_bucket(Bucket=bucket)
    sink = _s3_sink(moto_server, bucket)
    attempts = _redirect_first(sink.client, "us-west-2")
    at = "2026-12-06T10:00:00Z"
    prepared = sink.prepare(_events([{"n": 1, "ts": at}]))
    assert sink.write_batch(prepared, WriteContext(time_left=lambda: 10.0)) is None
    assert len(attempts) == 2 and botocore_sleeps == [0]  # the redirect: at once, no backoff
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def test_calls_inside_the_bound_take_none_of_botocores_retry_quota(moto_server, botocore_sleeps):
    """botocore's retry quota (500 tokens, 5 a retry, 1 back a success) is for the retries it
    makes: a warm Lambda throttled for a while (here 120 calls, each one attempt) must not leave
    the client's calls outside the bound (a sink's open, a runner without a deadline) without
    retries. botocore's handler, still asked behind the old veto, took the tokens of every
    retry it did not make."""
    client = aws.client("sqs", region=None, endpoint_url=moto_server.endpoint)
    attempts = throttle_first(client, 120)
    with aws.time_bounded(lambda: 10.0):
        for _ in range(120):
            with pytest.raises(ClientError):
                client.list_queues()
    assert len(attempts) == 120 and botocore_sleeps == []
    later = throttle_first(client, 1)  # outside the bound: botocore retries a 503 as configured
    client.list_queues()
    assert len(later) == 2 and len(botocore_sleeps) == 1


def test_the_bound_holds_whatever_botocore_reads_a_handlers_false_as(
    moto_server, botocore_sleeps, monkeypatch
):
    """Before botocore 1.43.3 a needs-retry answer of False was a delay of 0 ("retry at once");
    the bound answers None (no retry, in every botocore) in place of botocore's handler, so it
    holds there too (it was off on such a botocore)."""

    def old_needs_retry(
        self, attempts, operation_model, request_dict, response=None, caught_exception=None
    ):
        service_id = operation_model.service_model.service_id.hyphenize()
        responses = self._event_emitter.emit(
            f"needs-retry.{service_id}.{operation_model.name}",
            response=response,
            endpoint=self,
            operation=operation_model,
            attempts=attempts,
            caught_exception=caught_exception,
            request_dict=request_dict,
        )
        answer = botocore.endpoint.first_non_none_response(responses)
        if answer is None:
            return False
        if attempts >= 5:  # a handler answering False: "retry at once", again and again
            raise AssertionError(f"attempt {attempts}: retried at once, answer {answer!r}")
        botocore_sleeps.append(answer)  # the old reading: any other answer is a delay
        return True

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_needs_retry", old_needs_retry)
    client = aws.client("sqs", region=None, endpoint_url=moto_server.endpoint)
    attempts = throttle_first(client, 1)
    with aws.time_bounded(lambda: 5.0), pytest.raises(ClientError):
        client.list_queues()
    assert len(attempts) == 1 and botocore_sleeps == []


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """A local TCP server that takes connections and never answers (its backlog accepts them)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def _read_timeout(exc: BaseException) -> str:
    """urllib3's message inside botocore's ReadTimeoutError: '… (read timeout=N)'."""
    while exc is not None and not isinstance(exc, ReadTimeoutError):
        exc = exc.__cause__
    assert exc is not None
    return str(exc.kwargs["error"])


@pytest.mark.parametrize("left", [0.3, 0.05])
def test_a_call_waits_for_its_answer_no_longer_than_the_time_left(stalled_endpoint, aws_env, left):
    """An AWS call made with little time left reads its answer no longer than that (each read:
    botocore's per-request read timeout), not the client's 30 s: a stalled endpoint fails the
    write as transient in time for the runner to answer, where Lambda would have killed it.
    Under ``aws.MIN_READ_TIMEOUT`` the floor applies (urllib3 takes 0 for "fail at once")."""
    assert aws.PER_REQUEST_READ_TIMEOUT  # the botocore installed here has it
    sink = SqsSink(
        SqsSinkConfig(
            id="out", type="sqs", queue=f"{stalled_endpoint}/1/q", endpoint_url=stalled_endpoint
        ),
        ComponentContext("t"),
    )
    sink.open()
    with pytest.raises(TransientError, match="Read timeout") as caught:
        sink.write_batch(sink.prepare(_events([{"n": 1}])), WriteContext(time_left=lambda: left))
    assert f"read timeout={max(left, aws.MIN_READ_TIMEOUT)})" in _read_timeout(caught.value)


def test_outside_the_bound_a_call_keeps_the_clients_read_timeout(stalled_endpoint, aws_env):
    """The control: a request made outside ``time_bounded`` carries no timeout of its own (the
    client's applies)."""
    client = aws.client("sqs", region=None, endpoint_url=stalled_endpoint)
    seen: list[object] = []
    client.meta.events.register(
        "before-send", lambda request, **_: seen.append(request.context.get("read_timeout"))
    )
    client.meta.events.register(
        "before-send", lambda request, **_: AWSResponse(request.url, 200, {}, _Body(b"{}"))
    )
    client.list_queues()
    with aws.time_bounded(lambda: 2.5):
        client.list_queues()
    with aws.time_bounded(lambda: None):  # a deadline that answers none: no bound
        client.list_queues()
    assert seen == [None, 2.5, None]


@pytest.fixture
def unanswered_endpoint() -> Iterator[str]:
    """A local TCP port whose listener's accept queue is full: a connection to it is never
    answered (Linux drops the SYN), as an endpoint cut off by the network."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers: list[socket.socket] = []
    try:
        while len(fillers) < 16:  # until one is not connected: the queue is full
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
            if not select.select([], [filler], [], 1.0)[1]:
                break
        else:
            pytest.fail("the listener's accept queue never filled")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def _connect_timeout(exc: BaseException) -> str:
    """urllib3's message inside botocore's ConnectTimeoutError: '… (connect timeout=N)'."""
    while exc is not None and not isinstance(exc, ConnectTimeoutError):
        exc = exc.__cause__
    assert exc is not None
    return str(exc.kwargs["error"])


@pytest.mark.parametrize("left", [0.3, 0.05])
def test_a_call_waits_for_its_connection_no_longer_than_the_time_left(
    unanswered_endpoint, aws_env, left
):
    """An AWS call made with little time left waits for its connection no longer than that, not
    the client's 5 s connect timeout (botocore's per-request timeout took the pool's connect
    timeout): an endpoint the network has cut off fails the write as transient in time for the
    runner to answer. Under ``aws.MIN_READ_TIMEOUT`` the floor applies."""
    sink = SqsSink(
        SqsSinkConfig(
            id="out",
            type="sqs",
            queue=f"{unanswered_endpoint}/1/q",
            endpoint_url=unanswered_endpoint,
        ),
        ComponentContext("t"),
    )
    sink.open()
    with pytest.raises(TransientError) as caught:
        sink.write_batch(sink.prepare(_events([{"n": 1}])), WriteContext(time_left=lambda: left))
    assert f"connect timeout={max(left, aws.MIN_READ_TIMEOUT)})" in _connect_timeout(caught.value)


def test_the_connect_timeout_is_the_clients_outside_the_bound_and_at_most_it_inside():
    """The control: outside ``time_bounded`` (or with more time left than the client's connect
    timeout) an attempt keeps the client's connect timeout; its read timeout is the time left."""
    client = aws.client("sqs", region=None, endpoint_url="http://127.0.0.1:9")
    seen: list[object] = []
    session = client._endpoint.http_session
    client.meta.events.register(
        "before-send",
        lambda request, **_: seen.append(session._get_request_timeout(request)),
    )
    client.meta.events.register(
        "before-send", lambda request, **_: AWSResponse(request.url, 200, {}, _Body(b"{}"))
    )
    client.list_queues()
    with aws.time_bounded(lambda: 12.0):
        client.list_queues()
    with aws.time_bounded(lambda: 2.5):
        client.list_queues()
    assert seen[0] is None  # the pool's timeouts: the client's
    assert (seen[1].connect_timeout, seen[1].read_timeout) == (aws.CONNECT_TIMEOUT, 12.0)
    assert (seen[2].connect_timeout, seen[2].read_timeout) == (2.5, 2.5)


def _sink(kind: str, moto_server):
    """One of the sinks that started a call with no time left, and whether it takes failures."""
    context = ComponentContext("t")
    endpoint = moto_server.endpoint
    if kind.startswith(("kinesis", "dead_letter_kinesis")):  # its stream exists (checked at open)
        stream = unique("s")
        moto_server.client("kinesis").create_stream(StreamName=stream, ShardCount=1)
    if kind == "kinesis":
        config = KinesisSinkConfig(id="out", type="kinesis", stream=stream, endpoint_url=endpoint)
        return KinesisSink(config, context), False
    if kind == "kinesis-aggregate":  # its ListShards first
        config = KinesisSinkConfig(
            id="agg", type="kinesis", stream=stream, endpoint_url=endpoint, aggregate=True
        )
        return KinesisSink(config, context), False
    if kind == "dead_letter_kinesis":
        config = DeadLetterKinesisConfig(
            id="dlk", type="dead_letter_kinesis", stream=stream, endpoint_url=endpoint
        )
        return DeadLetterKinesisSink(config, context), True
    if kind == "s3":
        config = S3SinkConfig(
            id="lake", type="s3", bucket="b", endpoint_url=endpoint, time_field="ts"
        )
        return S3Sink(config, context), False
    config = DeadLetterS3Config(id="dls3", type="dead_letter_s3", bucket="b", endpoint_url=endpoint)
    return DeadLetterS3Sink(config, context), True


@pytest.mark.parametrize("left", [0.0, -0.5])
@pytest.mark.parametrize(
    "kind", ["kinesis", "kinesis-aggregate", "dead_letter_kinesis", "s3", "dead_letter_s3"]
)
def test_the_kinesis_and_s3_sinks_start_no_call_with_no_time_left(moto_server, kind, left):
    """As the sqs, firehose, http and push sinks: once the time left is spent the kinesis sink
    (its ListShards too, aggregating), dead_letter_kinesis, the s3 sink and dead_letter_s3 start
    no call; the write fails as transient with the reason, and the engine's retry (bounded by
    the same time left) is not made. They made the call (or calls) regardless."""
    sink, failed = _sink(kind, moto_server)
    sink.open()
    attempts = throttle_first(sink.client, 0)  # records every attempt, answers none
    at = "2026-12-06T10:00:00Z"
    prepared = sink.prepare(_events([{"n": 1, "ts": at}, {"n": 2, "ts": at}], failed))
    with pytest.raises(TransientError, match=f"^{sink.id}: .*: {aws.NOT_SENT}$"):
        sink.write_batch(prepared, WriteContext(time_left=lambda: left))
    assert attempts == []


def test_a_put_whose_time_runs_out_between_its_calls_sends_no_more(moto_server):
    """PutRecords of more than one call (over 500 records): the time spent after the first call,
    the next is not made — its records fail with the reason (what was written stays written:
    no TransientError after a write, whose retry would put it again)."""
    kinesis = moto_server.client("kinesis")
    stream = unique("s")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    sink = KinesisSink(
        KinesisSinkConfig(
            id="out", type="kinesis", stream=stream, endpoint_url=moto_server.endpoint
        ),
        ComponentContext("t"),
    )
    sink.open()
    attempts = throttle_first(sink.client, 0)
    result = sink.write_batch(
        sink.prepare(_events([{"n": i} for i in range(501)])),
        WriteContext(time_left=lambda: 0.0 if attempts else 5.0),  # spent once a call was made
    )
    assert len(attempts) == 1
    assert result is not None and len(result.failed) == 1
    assert result.failed[0].failure.reason == f"PutRecords: {aws.NOT_SENT}"


def _lambda_engine(moto_server, bucket: str) -> Engine:
    """A Lambda runner's engine (hold=False: it releases after every batch) over a rolling s3
    sink."""
    engine = Engine(
        topology_from(
            f"""
name: t
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0.1, max_backoff: 0.1}}}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}",
      time_field: ts, roll_bytes: 1048576}}
"""
        ).plan
    )
    engine.slept = []
    engine._sleep = engine.slept.append
    return engine


def test_a_rolling_s3_sinks_release_in_a_lambda_is_one_attempt(moto_server, botocore_sleeps):
    """The release (the object a roll closes; a Lambda's engine releases after every batch) is
    bounded as a write's: a throttled PutObject is one attempt and the engine's time-aware retry
    writes it. It was retried by botocore, blind to the time left."""
    s3 = moto_server.client("s3")
    bucket = unique("roll")
    s3.create_bucket(Bucket=bucket)
    engine = _lambda_engine(moto_server, bucket)
    engine.time_left = lambda: 10.0
    with engine:
        lake = next(c for c in engine.components if c.id == "lake")
        attempts = throttle_first(lake.client, 1)
        engine.process(records_from([{"n": 1, "ts": "2026-12-06T10:00:00Z"}]))
        assert len(attempts) == 2 and botocore_sleeps == [] and len(engine.slept) == 1
        assert not engine.holding
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def test_a_rolling_s3_sinks_release_starts_no_put_with_no_time_left(moto_server):
    """With the time spent the release puts nothing: the batch fails with the reason (the runner
    answers it for a retry), no retry is made past the deadline."""
    s3 = moto_server.client("s3")
    bucket = unique("roll")
    s3.create_bucket(Bucket=bucket)
    engine = _lambda_engine(moto_server, bucket)
    engine.time_left = lambda: 0.0
    with engine:
        lake = next(c for c in engine.components if c.id == "lake")
        attempts = throttle_first(lake.client, 0)
        with pytest.raises(BatchFailed, match=aws.NOT_SENT):
            engine.process(records_from([{"n": 1, "ts": "2026-12-06T10:00:00Z"}]))
        assert attempts == [] and engine.slept == []
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


@pytest.mark.parametrize(("left", "retried"), [(0.05, 0), (None, 2)])
def test_send_all_counts_only_the_retries_it_makes(left, retried):
    """SendOutcome.retried counts items sent again: one the deadline left out (its backoff past
    the time left) is failed, not retried — it was counted as both."""
    items = [Item([], {"n": 1}), Item([], {"n": 2})]
    answers = iter([[Retry("throttled"), Retry("throttled")], [None, None]])
    outcome = send_all(
        "out: Send",
        iter([items]),
        lambda chunk: next(answers),
        max_attempts=3,
        backoff=aws.Backoff(base=0.2, cap=0.2, rng=lambda: 1.0),
        sleep=lambda s: None,
        time_left=lambda: left,
    )
    assert outcome.retried == retried
    assert len(outcome.failed) == (2 if left is not None else 0)
