"""`squall kcl` with a stream named by ARN: the daemon reads that stream, or squall refuses.

The KCL 2.5.8 MultiLangDaemon takes ``streamArn`` but keeps only its name, read in its configured
region and its credentials' account. So `squall kcl` writes ``streamArn``, refuses an ARN of
another region (located, before anything starts) and, at start, one whose same-named stream in
the credentials' account is another stream (another account's ARN: cross-account reading).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy import fleet
from squall.deploy.kcl_daemon import KclSettings
from squall.errors import SquallError
from squall.topology.loader import load
from tests.kinesis.test_kcl_daemon import precreate_leases, put, wait_rows
from tests.process_group import stop_group

ARN = "arn:aws:kinesis:{region}:{account}:stream/{name}"
TOPOLOGY = """
name: {name}
resources:
  db: {{url: "sqlite:///{db}"}}
spout:
  type: kinesis
  id: events
  stream: "{stream}"{region}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns: {{n: {{path: n, type: integer}}}}
"""


def topology_file(tmp_path: Path, stream: str, region: str = "", name: str = "arn-app") -> Path:
    path = tmp_path / "topology.yaml"
    line = f"\n  region: {region}" if region else ""
    path.write_text(TOPOLOGY.format(name=name, db=tmp_path / "w.db", stream=stream, region=line))
    return path


def print_props(tmp_path: Path, topology: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(
        main,
        ["kcl", str(topology), "--print", *args],
        env={"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": None, **(env or {})},
    )


def test_a_spout_stream_arn_is_written_as_stream_arn_in_its_region(tmp_path: Path):
    arn = ARN.format(region="ap-south-1", account="123456789012", name="pistats")
    result = print_props(tmp_path, topology_file(tmp_path, arn))
    assert result.exit_code == 0, result.output
    assert f"streamArn = {arn}\n" in result.output
    assert "streamName" not in result.output
    assert "regionName = ap-south-1\n" in result.output
    assert "applicationName = arn-app\n" in result.output  # the lease table: as for a name
    # the shard processes label their records and metrics with the name, as `squall run` does
    assert " pistats --lease-table arn-app " in result.output


def test_a_stream_name_is_still_written_as_stream_name(tmp_path: Path):
    result = print_props(tmp_path, topology_file(tmp_path, "pistats"))
    assert result.exit_code == 0, result.output
    assert "streamName = pistats\n" in result.output and "streamArn" not in result.output


def test_a_stream_option_arn_is_written_as_stream_arn_and_read_in_its_region(tmp_path: Path):
    """As the spout reads an ARN: in its region, not AWS_REGION's (eu-west-1 here), nor the
    spout's own stream's region (another stream)."""
    arn = ARN.format(region="ap-south-1", account="123456789012", name="other")
    topology = topology_file(tmp_path, "pistats", region="eu-central-1")
    result = print_props(tmp_path, topology, "--stream", arn)
    assert result.exit_code == 0, result.output
    assert f"streamArn = {arn}\n" in result.output
    assert "regionName = ap-south-1\n" in result.output
    assert " other --lease-table arn-app " in result.output


def test_the_fleet_unit_reads_a_stream_option_arn_in_its_region(tmp_path: Path):
    arn = ARN.format(region="ap-south-1", account="123456789012", name="other")
    (tmp_path / "p").mkdir()
    topology = topology_file(tmp_path / "p", "pistats")
    out = tmp_path / "fleet"
    fleet.write_fleet(load(topology), topology, out, stream=arn)
    unit = (out / "squall-arn-app.service").read_text()
    assert f"--stream {arn} " in unit and "--region" not in unit
    role = (out / "instance-role.yaml").read_text()
    assert "kinesis:ap-south-1:${AWS::AccountId}:stream/${StreamName}" in role
    assert "Default: other\n" in role  # the name: not arn:…:stream/arn:…


def test_a_spout_arn_of_another_region_than_the_spout_s_is_refused_located(tmp_path: Path):
    """The daemon would read the ARN's name in the spout's region: another stream, or none."""
    arn = ARN.format(region="ap-south-1", account="123456789012", name="pistats")
    topology = topology_file(tmp_path, arn, region="eu-central-1")
    result = print_props(tmp_path, topology)
    assert result.exit_code == 2, result.output
    assert f"{topology}:8:" in result.output  # the spout's stream line
    assert "spout 'events'" in result.output
    assert f"stream ARN {arn} is in region ap-south-1" in result.output
    assert "reads eu-central-1" in result.output


def test_a_stream_option_arn_of_another_region_than_the_region_is_refused(tmp_path: Path):
    arn = ARN.format(region="ap-south-1", account="123456789012", name="other")
    topology = topology_file(tmp_path, "pistats")
    result = print_props(tmp_path, topology, "--stream", arn, "--region", "us-west-2")
    assert result.exit_code == 2, result.output
    assert f"error: --stream: stream ARN {arn} is in region ap-south-1" in result.output
    assert "reads us-west-2" in result.output


def test_the_fleet_unit_keeps_the_arn_and_the_role_grants_its_region(tmp_path: Path):
    arn = ARN.format(region="ap-south-1", account="123456789012", name="pistats")
    (tmp_path / "p").mkdir()
    topology = topology_file(tmp_path / "p", arn)
    out = tmp_path / "fleet"
    fleet.write_fleet(load(topology), topology, out)
    unit = (out / "squall-arn-app.service").read_text()
    assert f"--stream {arn} " in unit and "--region" not in unit
    role = (out / "instance-role.yaml").read_text()
    assert "kinesis:ap-south-1:${AWS::AccountId}:stream/${StreamName}" in role
    assert "Default: pistats\n" in role


def test_the_fleet_refuses_an_arn_of_another_region_than_the_spout_s(tmp_path: Path):
    arn = ARN.format(region="ap-south-1", account="123456789012", name="pistats")
    (tmp_path / "p").mkdir()
    topology = topology_file(tmp_path / "p", arn, region="eu-central-1")
    with pytest.raises(SquallError, match="is in region ap-south-1"):
        fleet.write_fleet(load(topology), topology, tmp_path / "fleet")


def test_kcl_settings_write_the_arn_and_pass_the_name_to_the_processor(tmp_path: Path):
    arn = ARN.format(region="us-east-1", account="000000000000", name="s1")
    text = KclSettings(tmp_path / "t.yaml", "s1", "app", stream_arn=arn).properties()
    assert f"streamArn = {arn}\n" in text and "streamName" not in text
    assert f" {(tmp_path / 't.yaml').resolve()} s1 --lease-table app " in text


def kcl_env() -> dict[str, str]:
    """The environment of a `squall kcl` started here: the stand-ins' fake credentials, this tree."""
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def kcl_command(topology: Path, kinesis_mock, dynalite, props: Path, *extra: str) -> list[str]:
    """`squall kcl` on the stand-ins, writing its properties to ``props``."""
    return [
        sys.executable,
        "-m",
        "squall.cli",
        "kcl",
        str(topology),
        "--kinesis-endpoint",
        kinesis_mock.endpoint,
        "--dynamodb-endpoint",
        dynalite.endpoint,
        "--properties-out",
        str(props),
        *extra,
    ]


@pytest.mark.e2e
def test_the_daemon_reads_a_stream_given_by_its_arn(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    """End to end: the real daemon (KCL 2.5.8) started by `squall kcl` reads the stream its
    spout names by ARN (kinesis-mock's account, 000000000000)."""
    if not shutil.which("java"):
        pytest.fail("java is needed for the KCL MultiLangDaemon")
    stream = make_stream(1, prefix="arn")
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    assert arn == ARN.format(region="us-east-1", account="000000000000", name=stream)
    app = f"app-{stream}"
    topology = topology_file(tmp_path, arn, name=app)
    precreate_leases(dynamodb, kinesis, app, stream)
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(20)])
    props = tmp_path / "kcl.properties"
    cmd = kcl_command(
        topology,
        kinesis_mock,
        dynalite,
        props,
        "--no-metrics",
        "--worker-id",
        "w1",
        *[
            a
            for kv in ("failoverTimeMillis=2000", "shardSyncIntervalMillis=1000")
            for a in ("--set", kv)
        ],
    )
    env = kcl_env()
    with open(tmp_path / "w1.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            wait_rows(tmp_path / "w.db", 20, proc, tmp_path, "w1")
            assert f"streamArn = {arn}\n" in props.read_text()
        finally:
            stop_group(proc, 30)


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["another account", "no such stream"])
def test_an_arn_the_daemon_would_not_read_is_refused_at_start(
    tmp_path: Path, kinesis, make_stream, kinesis_mock, dynalite, case: str
):
    """Another account's ARN: the daemon would read this account's same-named stream (silently
    the wrong data) or find none. `squall kcl` says so and starts no daemon."""
    stream = make_stream(1, prefix="arnx")
    name = stream if case == "another account" else f"{stream}-missing"
    arn = ARN.format(region="us-east-1", account="111122223333", name=name)
    topology = topology_file(tmp_path, arn)
    props = tmp_path / "kcl.properties"
    result = subprocess.run(
        kcl_command(topology, kinesis_mock, dynalite, props),
        capture_output=True,
        text=True,
        timeout=60,
        env=kcl_env(),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: stream ARN {arn}" in result.stderr
    if case == "another account":
        here = ARN.format(region="us-east-1", account="000000000000", name=stream)
        assert f"which is {here}, not the stream asked for" in result.stderr
    else:
        assert "ResourceNotFoundException" in result.stderr
    assert "MultiLangDaemon" in result.stderr and "java" not in result.stdout
