"""`squall kcl`'s start check of a stream given by ARN (``kcl_daemon.check_stream_account``)
says what went wrong: only a stream Kinesis says does not exist is "no stream"; a call the
credentials may not make, or one Kinesis did not answer, is a check not made — it said "no
stream … of these credentials' account" and pointed at cross-account reading for both, sending
the operator after a stream that is there."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from squall.deploy.kcl_daemon import check_stream_account
from squall.errors import SquallError

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/events"


@pytest.fixture
def answering() -> Iterator[callable]:
    """A local Kinesis endpoint answering every call with the error code it is given."""
    servers = []

    def start(code: str, status: int = 400) -> str:
        class Refusing(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                body = json.dumps({"__type": code, "message": "no"}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/x-amz-json-1.1")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def refusal(endpoint: str) -> str:
    with pytest.raises(SquallError) as info:
        check_stream_account(ARN, "us-east-1", endpoint)
    return str(info.value)


def test_no_such_stream_is_said_so(answering):
    message = refusal(answering("ResourceNotFoundException"))
    assert "no stream events in region us-east-1 of these credentials' account" in message
    assert "ResourceNotFoundException" in message


def test_a_denied_check_names_the_permission_not_a_missing_stream(answering):
    message = refusal(answering("AccessDeniedException"))
    assert "no stream" not in message and "another account" not in message
    assert "may not call kinesis:DescribeStreamSummary" in message
    assert "(AccessDeniedException" in message and "not checked" in message


def test_an_endpoint_that_does_not_answer_is_a_check_not_made():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = refusal(f"http://127.0.0.1:{port}")
    assert "no stream" not in message and "another account" not in message
    assert "not checked: the check failed (EndpointConnectionError" in message


def test_a_throttled_check_is_a_check_not_made(answering):
    message = refusal(answering("LimitExceededException"))
    assert "no stream" not in message
    assert "not checked: the check failed (LimitExceededException" in message


def test_a_region_set_as_a_kcl_property_is_the_region_an_arn_is_checked_against(tmp_path):
    """``--set regionName=…`` is the region the daemon reads in (the file's last word, as the
    lease check reads it): an ARN of another region is refused as with ``--region``, not
    written beside it (the daemon would read the ARN's name in eu-west-1: another stream)."""
    from click.testing import CliRunner

    from squall.cli import main
    from tests.kinesis.test_kcl_stream_arn import ARN as SHAPE
    from tests.kinesis.test_kcl_stream_arn import topology_file

    arn = SHAPE.format(region="ap-south-1", account="123456789012", name="pistats")
    topology = topology_file(tmp_path, arn)
    result = CliRunner().invoke(
        main,
        ["kcl", str(topology), "--print", "--set", "regionName=eu-west-1"],
        env={"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": None},
    )
    assert result.exit_code == 2, result.output
    assert f"stream ARN {arn} is in region ap-south-1" in result.output
    assert "reads eu-west-1" in result.output
    same = CliRunner().invoke(
        main,
        ["kcl", str(topology), "--print", "--set", "regionName=ap-south-1"],
        env={"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": None},
    )
    assert same.exit_code == 0, same.output
    assert f"streamArn = {arn}\n" in same.output and "regionName = ap-south-1\n" in same.output


@pytest.mark.parametrize("prop", ["streamArn", "streamName"])
def test_a_stream_set_as_a_kcl_property_is_refused_for_the_stream_option(tmp_path, prop):
    """``--set streamArn=…`` (the KCL's own name for it) went into the file unchecked beside the
    topology's stream, and the daemon reads it first: another account's stream read silently,
    the record processors labelling its records with the topology's stream name."""
    from click.testing import CliRunner

    from squall.cli import main
    from tests.kinesis.test_kcl_stream_arn import ARN as SHAPE
    from tests.kinesis.test_kcl_stream_arn import topology_file

    other = SHAPE.format(region="eu-west-1", account="111122223333", name="other")
    result = CliRunner().invoke(
        main,
        ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--set", f"{prop}={other}"],
        env={"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": None},
    )
    assert result.exit_code == 2, result.output
    assert f"error: --set {prop}: name the stream with --stream" in result.output
