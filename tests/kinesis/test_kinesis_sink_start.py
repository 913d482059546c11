"""The ``kinesis`` and ``dead_letter_kinesis`` sinks check their stream when they open.

A stream that does not exist (a ``${VAR}`` unset or mistyped, another region's stream) was found
at the first batch: ``squall run`` started, a Lambda producer's init passed and every request was
then a 500. One DescribeStreamSummary at open now stops the start with a line naming the sink,
the stream and the region; a role refused the check (one that may only put records), or a check
Kinesis throttles, goes on with a WARNING. Against kinesis-mock (its streams are per region).
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from squall import aws
from squall.component import ComponentContext
from squall.deploy.lambda_producer import make_handler
from squall.errors import SinkError
from squall.sinks.base import WriteContext
from squall.sinks.dead_letter_aws import DeadLetterKinesisConfig, DeadLetterKinesisSink
from squall.sinks.kinesis import KinesisSink, KinesisSinkConfig
from tests.deploy.test_local_runner import run_cli
from tests.factories import api_gateway_event
from tests.kinesis.test_kinesis_sink import events


def kinesis_sink(endpoint: str, stream: str, region: str | None = None) -> KinesisSink:
    config = KinesisSinkConfig(
        id="out", type="kinesis", stream=stream, region=region, endpoint_url=endpoint
    )
    return KinesisSink(config, ComponentContext("t"))


def dead_letter_sink(endpoint: str, stream: str, region: str | None = None):
    config = DeadLetterKinesisConfig(
        id="dlq", type="dead_letter_kinesis", stream=stream, region=region, endpoint_url=endpoint
    )
    return DeadLetterKinesisSink(config, ComponentContext("t"))


@pytest.mark.parametrize(("make", "sink_id"), [(kinesis_sink, "out"), (dead_letter_sink, "dlq")])
def test_a_stream_of_another_region_stops_the_open_naming_sink_stream_and_region(
    kinesis_mock, make_stream, make, sink_id
):
    stream = make_stream()  # in us-east-1: not the one eu-west-1 is asked for
    sink = make(kinesis_mock.endpoint, stream, "eu-west-1")
    with pytest.raises(SinkError) as err:
        sink.open()
    assert str(err.value).startswith(
        f"{sink_id}: stream '{stream}' in eu-west-1 does not exist "
        "(DescribeStreamSummary: ResourceNotFoundException: "
    )
    make(kinesis_mock.endpoint, stream, "us-east-1").open()  # where it is: opens


def test_a_stream_arn_is_checked_in_its_own_region(kinesis_mock, make_stream):
    arn = f"arn:aws:kinesis:eu-west-1:000000000000:stream/{make_stream()}"
    with pytest.raises(SinkError, match=f"out: stream '{arn}' in eu-west-1 does not exist"):
        kinesis_sink(kinesis_mock.endpoint, arn).open()


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("AccessDeniedException", "the role may not call kinesis:DescribeStreamSummary"),
        ("LimitExceededException", "the check failed"),
    ],
)
@pytest.mark.parametrize("make", [kinesis_sink, dead_letter_sink])
def test_a_check_refused_or_throttled_does_not_stop_a_sink_that_may_put(
    kinesis_mock, kinesis, make_stream, caplog, make, code, says
):
    """A role with only kinesis:PutRecords (hand-written) is a valid deployment: the start goes
    on, says the stream was not checked, and the sink writes."""
    stream = make_stream()
    sink = make(kinesis_mock.endpoint, stream)
    sink.client = aws.client("kinesis", region=None, endpoint_url=kinesis_mock.endpoint)
    refused: list[str] = []

    def refuse(**_):
        refused.append(code)

        class Http:
            status_code = 400

        return Http(), {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {}}

    sink.client.meta.events.register("before-call.kinesis.DescribeStreamSummary", refuse)
    with caplog.at_level(logging.WARNING, logger="squall.kinesis"):
        sink.open()
    assert refused  # the check was made
    [line] = [r.getMessage() for r in caplog.records if r.name == "squall.kinesis"]
    assert line.startswith(
        f"{sink.id}: stream '{stream}' in us-east-1 not checked at start: {says}"
    )
    assert line.endswith("a missing stream fails the first batch")
    evs = events(2)
    assert sink.write_batch(sink.prepare(evs), WriteContext()) is None
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert len(kinesis.get_records(ShardIterator=it)["Records"]) == 2


TOPOLOGY = """
name: missing-stream
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: {sink_id}, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}"}}
"""


def test_squall_run_exits_2_with_one_line_naming_the_missing_stream(kinesis_mock, tmp_path):
    stream = f"no-such-{uuid.uuid4().hex[:8]}"
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(sink_id="to_stream", stream=stream, endpoint=kinesis_mock.endpoint)
    )
    result = run_cli(["run", str(t)], input='{"n": 1}\n')
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if "does not exist" in x]
    assert f"to_stream: stream '{stream}' in us-east-1 does not exist" in line


def test_the_producers_init_fails_on_a_missing_stream(kinesis_mock, tmp_path):
    """Before, the function started and answered every request 500."""
    stream = f"no-such-{uuid.uuid4().hex[:8]}"
    t = tmp_path / "t.yaml"
    t.write_text(TOPOLOGY.format(sink_id="out", stream=stream, endpoint=kinesis_mock.endpoint))
    with pytest.raises(SinkError, match=f"out: stream '{stream}' in us-east-1 does not exist"):
        make_handler(t)


def test_a_stream_deleted_after_the_start_still_fails_the_batch_for_good(
    kinesis_mock, kinesis, tmp_path
):
    """The check is at start only: a stream deleted later is the write's SinkError (the
    producer's 500), as before."""
    stream = f"gone-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    t = tmp_path / "t.yaml"
    t.write_text(TOPOLOGY.format(sink_id="out", stream=stream, endpoint=kinesis_mock.endpoint))
    handler = make_handler(t)
    kinesis.delete_stream(StreamName=stream)
    kinesis.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    resp = handler(api_gateway_event(json.dumps({"n": 1})), None)
    assert resp["statusCode"] == 500


@pytest.mark.parametrize("make", [kinesis_sink, dead_letter_sink])
def test_the_start_check_is_one_attempt(make, caplog):
    """A Lambda's init has 10 s and each KCL shard process checks at its start: a check Kinesis
    throttles is not retried with botocore's backoff (3 attempts; an endpoint that did not
    answer held the start for up to ~100 s). Against a local endpoint that throttles every
    call: one request, a WARNING, and the sink opens."""
    import http.server
    import threading

    asked: list[str] = []

    class Throttling(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            asked.append(self.headers["x-amz-target"])
            body = json.dumps({"__type": "LimitExceededException", "message": "slow down"})
            self.send_response(400)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = make(f"http://127.0.0.1:{server.server_address[1]}", "events", "us-east-1")
        with caplog.at_level(logging.WARNING, logger="squall.kinesis"):
            sink.open()
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["Kinesis_20131202.DescribeStreamSummary"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "squall.kinesis"]
    assert "not checked at start: the check failed (LimitExceededException" in line
