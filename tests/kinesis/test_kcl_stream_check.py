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


STS_PROVIDER = "KclSTSAssumeRoleSessionCredentialsProvider|arn:aws:iam::111122223333:role/r|s"


@pytest.mark.parametrize("provider", [STS_PROVIDER, "DefaultAWSCredentialsProviderChain"])
def test_the_account_is_checked_with_the_daemon_s_credentials_only(
    tmp_path, answering, monkeypatch, provider
):
    """The KCL's documented cross-account reading: ``--set AWSCredentialsProvider=
    KclSTSAssumeRoleSessionCredentialsProvider|ROLE|SESSION`` (shipped in the 2.5.8 multilang
    jar), the daemon reading in the role's account. The check, made with squall's own
    credentials (this account: here an endpoint without the stream), refused that valid setup
    ("no stream …", "run squall kcl with that account's credentials"). It says now that it
    cannot check the account of credentials it does not hold, and the daemon starts; with the
    default chain (squall's own credentials) it still refuses."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import kcl_daemon
    from tests.kinesis.test_kcl_stream_arn import ARN as SHAPE
    from tests.kinesis.test_kcl_stream_arn import topology_file

    started = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(cmd) or 0)
    arn = SHAPE.format(region="us-east-1", account="111122223333", name="pistats")
    args = ["kcl", str(topology_file(tmp_path, arn)), "--set", f"AWSCredentialsProvider={provider}"]
    args += ["--kinesis-endpoint", answering("ResourceNotFoundException")]
    args += ["--properties-out", str(tmp_path / "kcl.properties")]
    result = CliRunner().invoke(main, args, env={"AWS_REGION": "us-east-1"})
    if provider == STS_PROVIDER:
        assert result.exit_code == 0, result.output
        assert len(started) == 1
        assert (
            f"warning: stream ARN {arn}: its account not checked: the daemon reads with "
            "AWSCredentialsProvider=KclSTSAssumeRoleSessionCredentialsProvider" in result.stderr
        )
        assert "role/r" not in result.stderr  # the provider's class only
    else:
        assert result.exit_code == 2, result.output
        assert "no stream pistats in region us-east-1" in result.stderr and not started


def test_a_set_without_a_value_is_named(tmp_path):
    """``--set retrievalMode`` (no ``=``) said ``error: not enough values to unpack (expected 2,
    got 1)``."""
    from click.testing import CliRunner

    from squall.cli import main
    from tests.kinesis.test_kcl_stream_arn import topology_file

    result = CliRunner().invoke(
        main, ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--set", "retrievalMode"]
    )
    assert result.exit_code == 2, result.output
    assert "error: --set 'retrievalMode': KEY=VALUE expected" in result.output


@pytest.mark.parametrize("key", ["AwsCredentialsProvider", "awsCredentialsProvider"])
def test_the_daemon_s_credentials_are_found_in_any_case_of_their_property(
    tmp_path, answering, monkeypatch, key
):
    """The daemon reads ``AwsCredentialsProvider`` (the KCL's own javadoc spelling), or any case
    of ``AWSCredentialsProvider``, as the one credentials property
    (``KinesisClientLibConfigurator.processKey``). squall looked for ``AWSCredentialsProvider``
    only: it checked the account with its own credentials and refused the cross-account setup,
    and it wrote its default beside the user's — two values for one property, the daemon's
    choice between them the order of a Java ``Hashtable``."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import kcl_daemon
    from tests.kinesis.test_kcl_stream_arn import ARN as SHAPE
    from tests.kinesis.test_kcl_stream_arn import topology_file

    started = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(cmd) or 0)
    arn = SHAPE.format(region="us-east-1", account="111122223333", name="pistats")
    out = tmp_path / "kcl.properties"
    args = ["kcl", str(topology_file(tmp_path, arn)), "--set", f"{key}={STS_PROVIDER}"]
    args += ["--kinesis-endpoint", answering("ResourceNotFoundException")]
    args += ["--properties-out", str(out)]
    result = CliRunner().invoke(main, args, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    assert len(started) == 1 and "its account not checked" in result.stderr
    providers = [
        line
        for line in out.read_text().splitlines()
        if line.split("=", 1)[0].strip().lower() == "awscredentialsprovider"
    ]
    assert len(providers) == 1 and providers[0].startswith(f"{key} = KclSTSAssumeRole"), providers


def test_the_credentials_property_set_twice_in_two_cases_is_refused():
    """The daemon would take one of them (its ``Hashtable``'s order): refused, naming both."""
    from squall.deploy.kcl_daemon import DEFAULT_CREDENTIALS, credentials_provider
    from squall.errors import SquallError

    assert credentials_provider({}) == DEFAULT_CREDENTIALS
    assert credentials_provider({"awscredentialsprovider": "X"}) == "X"
    assert credentials_provider({"AWSCredentialsProviderDynamoDB": "X"}) == DEFAULT_CREDENTIALS
    with pytest.raises(SquallError, match="AWSCredentialsProvider, AwsCredentialsProvider"):
        credentials_provider({"AWSCredentialsProvider": "A", "AwsCredentialsProvider": "B"})


def test_the_kinesis_client_s_own_endpoint_is_where_an_arn_is_checked(
    tmp_path, answering, monkeypatch
):
    """``--set kinesisClient.endpointOverride=…`` is the daemon's Kinesis endpoint (as
    ``kinesisEndpoint``, which sets that same property): the check asked another endpoint — here
    the environment's, which denies — and said nothing of the stream the daemon reads."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import kcl_daemon
    from tests.kinesis.test_kcl_stream_arn import ARN as SHAPE
    from tests.kinesis.test_kcl_stream_arn import topology_file

    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: 0)
    arn = SHAPE.format(region="us-east-1", account="111122223333", name="pistats")
    daemons = answering("ResourceNotFoundException")
    args = ["kcl", str(topology_file(tmp_path, arn))]
    args += ["--set", f"kinesisClient.endpointOverride={daemons}"]
    args += ["--properties-out", str(tmp_path / "kcl.properties")]
    env = {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_KINESIS": answering("AccessDenied")}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "no stream pistats in region us-east-1" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("client_prop", "general"),
    [
        ("kinesisClient.region=eu-west-1", ["--region", "us-east-1"]),
        ("kinesisClient.endpointOverride=http://127.0.0.1:9", ["--kinesis-endpoint", "http://h:1"]),
        (
            "dynamoDbClient.endpointOverride=http://127.0.0.1:9",
            ["--dynamodb-endpoint", "http://h:1"],
        ),
    ],
)
def test_a_client_s_own_setting_that_differs_from_the_general_one_is_refused(
    tmp_path, client_prop, general
):
    """The daemon applies its properties in the order of a hash table: with ``regionName =
    us-east-1`` and ``kinesisClient.region = eu-west-1`` in one file, which region its Kinesis
    client reads in is not known — nor which stream the ARN check should have asked for. (A
    ``dynamoDbClient.region`` of its own is the lease table's: written per client, not refused;
    test_kcl_lease_region.)"""
    from click.testing import CliRunner

    from squall.cli import main
    from tests.kinesis.test_kcl_stream_arn import topology_file

    args = ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--set", client_prop]
    result = CliRunner().invoke(main, args + general, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 2, result.output
    key = client_prop.split("=", 1)[0]
    assert f"error: --set {key}=" in result.output and "set one" in result.output


def test_a_client_s_own_setting_equal_to_the_general_one_is_what_the_daemon_uses(tmp_path):
    """Alone (or equal to the general property), a client's own setting is the daemon's: the
    record processors' lease reads go to the DynamoDB endpoint and region it names."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy.kcl_lease import LeaseTable
    from tests.kinesis.test_kcl_stream_arn import topology_file

    args = ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--worker-id", "w1"]
    args += ["--set", "dynamoDbClient.endpointOverride=http://127.0.0.1:9"]
    args += ["--set", "kinesisClient.region=eu-west-1", "--region", "eu-west-1"]
    result = CliRunner().invoke(main, args, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("executableName = "))
    lease = LeaseTable.from_args(line.split(" = ", 1)[1].split(" ")[3:])[1]
    assert lease is not None
    assert (lease.region, lease.endpoint) == ("eu-west-1", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("client_prop", "general"),
    [
        (
            "kinesisClient.endpointOverride=http://127.0.0.1:9/",
            ["--kinesis-endpoint", "http://127.0.0.1:9"],
        ),
        (
            "dynamoDbClient.endpointOverride=http://127.0.0.1:9",
            ["--dynamodb-endpoint", "http://127.0.0.1:9/"],
        ),
        (
            "kinesisClient.endpointOverride=http://127.0.0.1:9/",
            ["--set", "kinesisEndpoint=http://127.0.0.1:9"],
        ),
    ],
)
def test_a_client_s_own_endpoint_written_with_a_trailing_slash_is_the_same_endpoint(
    tmp_path, client_prop, general
):
    """One endpoint with and without its trailing '/' is one endpoint to the daemon's clients,
    whichever property it applies last: a configuration that started before the client settings
    were compared is not refused at its upgrade."""
    from click.testing import CliRunner

    from squall.cli import main
    from tests.kinesis.test_kcl_stream_arn import topology_file

    args = ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--set", client_prop]
    result = CliRunner().invoke(main, args + general, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    assert "set one" not in result.output
