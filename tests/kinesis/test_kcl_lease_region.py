"""`squall kcl` with the lease table in another region than the stream (`--dynamodb-region`, or
`--set dynamoDbClient.region=…`). It was refused: the KCL 2.5.8 MultiLangDaemon sets
`regionName` on all three of its clients and each property in the order of a hash table, so
`regionName` beside a differing `dynamoDbClient.region` left the DynamoDB client's region to
chance. squall now writes each client's region instead of `regionName` when they differ."""

from __future__ import annotations

import http.client
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy.kcl_daemon import KclSettings
from squall.deploy.kcl_lease import LeaseTable
from tests.kinesis.test_kcl_daemon import precreate_leases, put, wait_rows
from tests.kinesis.test_kcl_stream_arn import kcl_command, kcl_env, topology_file
from tests.process_group import stop_group
from tests.sinks.local_http import Answer, LocalHttp, Request


def written(text: str) -> dict[str, str]:
    """The properties as the daemon reads them (``java.util.Properties``: one value per key)."""
    lines = [line.split(" = ", 1) for line in text.splitlines() if " = " in line]
    keys = [k for k, _ in lines]
    assert len(keys) == len(set(keys)), keys
    return dict(lines)


def kcl_print(tmp_path: Path, *args: str):
    topology = topology_file(tmp_path, "pistats")
    return CliRunner().invoke(
        main,
        ["kcl", str(topology), "--print", "--worker-id", "w1", *args],
        env={"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": None},
    )


def lease_of(props: dict[str, str]) -> LeaseTable:
    lease = LeaseTable.from_args(props["executableName"].split(" ")[3:])[1]
    assert lease is not None
    return lease


@pytest.mark.parametrize(
    "args",
    [
        ["--dynamodb-region", "eu-west-1"],
        ["--set", "dynamoDbClient.region=eu-west-1"],
        ["--set", "dynamoDbClient.region=eu-west-1", "--set", "regionName=us-east-1"],
        ["--dynamodb-region", "eu-west-1", "--set", "dynamoDbClient.region=eu-west-1"],
    ],
)
def test_a_lease_table_in_another_region_is_written_per_client(tmp_path, args):
    result = kcl_print(tmp_path, *args)
    assert result.exit_code == 0, result.output
    props = written(result.output)
    assert "regionName" not in props  # the daemon would set it on every client, in any order
    regions = {k: v for k, v in props.items() if k.endswith(".region")}
    assert regions == {
        "kinesisClient.region": "us-east-1",
        "dynamoDbClient.region": "eu-west-1",
        "cloudWatchClient.region": "us-east-1",
    }
    # the record processors read their leases there too
    assert lease_of(props).region == "eu-west-1"


def test_the_same_region_for_the_lease_table_keeps_region_name(tmp_path):
    result = kcl_print(tmp_path, "--dynamodb-region", "us-east-1")
    assert result.exit_code == 0, result.output
    props = written(result.output)
    assert props["regionName"] == "us-east-1" and props["dynamoDbClient.region"] == "us-east-1"
    assert "kinesisClient.region" not in props and lease_of(props).region == "us-east-1"


def test_two_regions_for_the_lease_table_are_refused(tmp_path):
    result = kcl_print(
        tmp_path, "--dynamodb-region", "eu-west-1", "--set", "dynamoDbClient.region=eu-central-1"
    )
    assert result.exit_code == 2, result.output
    assert "two regions for the lease table" in result.output


def test_a_cloudwatch_region_of_its_own_is_not_left_to_the_daemon_s_order(tmp_path):
    """``cloudWatchClient.region`` beside ``regionName`` was written as given: the metrics'
    region, and now the other clients', were whichever the daemon applied last."""
    result = kcl_print(tmp_path, "--set", "cloudWatchClient.region=eu-west-1")
    assert result.exit_code == 0, result.output
    props = written(result.output)
    assert "regionName" not in props
    assert (props["kinesisClient.region"], props["dynamoDbClient.region"]) == ("us-east-1",) * 2
    assert props["cloudWatchClient.region"] == "eu-west-1"


def test_kcl_settings_write_the_lease_region(tmp_path):
    settings = KclSettings(
        tmp_path / "t.yaml", "s", "app", region="us-east-1", dynamodb_region="eu-west-1"
    )
    props = written(settings.properties())
    assert "regionName" not in props
    assert props["dynamoDbClient.region"] == "eu-west-1"
    assert props["kinesisClient.region"] == props["cloudWatchClient.region"] == "us-east-1"


class Recorder:
    """A pass-through to dynalite that records the region each request is signed for (its
    SigV4 credential scope): dynalite itself serves one region whatever a request says."""

    def __init__(self, target: str):
        self.regions: list[str | None] = []
        self.host, self.port = urlsplit(target).hostname, urlsplit(target).port
        self.server = LocalHttp(self.forward)
        self.endpoint = self.server.url

    def forward(self, request: Request) -> Answer:
        scope = re.search(
            r"Credential=[^/,]+/\d{8}/([^/,]+)/dynamodb/", request.headers["authorization"]
        )
        self.regions.append(scope[1] if scope else None)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k not in ("host", "connection", "content-length")
        }
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(request.method, request.path, request.body, headers)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        kept = {
            k: v
            for k, v in answer.getheaders()
            if k.lower() not in ("content-length", "connection", "date", "server")
        }
        return answer.status, kept, data

    def close(self) -> None:
        self.server.close()


@pytest.mark.e2e
def test_the_daemon_keeps_its_leases_in_the_lease_table_s_region(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    """End to end: the real daemon (KCL 2.5.8) started by `squall kcl --dynamodb-region
    eu-west-1` signs every DynamoDB call for eu-west-1, and reads the stream in us-east-1
    (kinesis-mock keeps streams per region: it would not find the stream in another)."""
    stream = make_stream(1, prefix="leasergn")
    app = f"app-{stream}"
    topology = topology_file(tmp_path, stream, name=app)
    precreate_leases(dynamodb, kinesis, app, stream)
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(20)])
    recorder = Recorder(dynalite.endpoint)
    props = tmp_path / "kcl.properties"
    cmd = kcl_command(topology, kinesis_mock, recorder, props, "--no-metrics")
    cmd += ["--worker-id", "w1", "--dynamodb-region", "eu-west-1"]
    cmd += ["--set", "failoverTimeMillis=2000", "--set", "shardSyncIntervalMillis=1000"]
    try:
        with open(tmp_path / "w1.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=kcl_env(), start_new_session=True
            )
            try:
                wait_rows(tmp_path / "w.db", 20, proc, tmp_path, "w1")
            finally:
                stop_group(proc, 30)
    finally:
        recorder.close()
    assert recorder.regions and set(recorder.regions) == {"eu-west-1"}, recorder.regions
    checkpoint = dynamodb.scan(TableName=app)["Items"][0]["checkpoint"]["S"]
    assert checkpoint.isdigit()  # its checkpoints went through the recorder, to dynalite
