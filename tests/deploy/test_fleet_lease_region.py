"""`squall package --handler kcl --dynamodb-region REGION`: a fleet whose lease table is in
another region than its stream. `squall kcl --dynamodb-region` could run one, but the packaged
unit had no way to ask for it and the instance role granted the lease table in the stream's
region only: the unit's ExecStart and the role had to be edited by hand."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from squall.cli import main
from tests.deploy.sam import cfn_lint
from tests.kinesis.test_kcl_lease_region import lease_of, written

TOPOLOGY = """
name: copier
spout: {{type: kinesis, stream: clicks{region}}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: "squall.testing:MemorySink"}}]
"""


def exec_start(out: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string((out / "squall-copier.service").read_text())
    return parser["Service"]["ExecStart"].split()


def statements(out: Path) -> list[dict]:
    role = yaml.safe_load((out / "instance-role.yaml").read_text())
    policy = role["Resources"]["InstanceRole"]["Properties"]["Policies"][0]
    return policy["PolicyDocument"]["Statement"]


def resource(statement: dict) -> str:
    found = statement["Resource"]
    return found["Fn::Sub"] if isinstance(found, dict) else found


@pytest.mark.parametrize(
    ("spout_region", "stream_region"), [("", "${AWS::Region}"), ("eu-central-1", "eu-central-1")]
)
def test_the_fleet_keeps_its_leases_in_the_region_it_is_given(
    tmp_path: Path, spout_region: str, stream_region: str
):
    source = tmp_path / "copy.yaml"
    source.write_text(TOPOLOGY.format(region=f", region: {spout_region}" if spout_region else ""))
    out = tmp_path / "kcl"
    args = ["package", str(source), "--handler", "kcl", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--dynamodb-region", "eu-west-1"])
    assert result.exit_code == 0, result.output

    # the unit asks squall kcl for the lease region
    argv = exec_start(out)
    assert argv[argv.index("--dynamodb-region") + 1] == "eu-west-1"
    # the role grants the lease table there, the stream where it is
    leases = [s for s in statements(out) if "dynamodb:UpdateItem" in s["Action"]]
    assert [resource(s) for s in leases] == [
        "arn:${AWS::Partition}:dynamodb:eu-west-1:${AWS::AccountId}:table/${ApplicationName}"
    ]
    [reads] = [s for s in statements(out) if "kinesis:GetRecords" in s["Action"]]
    assert resource(reads) == (
        f"arn:${{AWS::Partition}}:kinesis:{stream_region}:${{AWS::AccountId}}:stream/${{StreamName}}"
    )
    lint = cfn_lint(out / "instance-role.yaml")
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # and the unit's command, as squall kcl reads it, keeps the leases in that region
    argv = [
        str(source)
        if a.endswith("/topology/copy.yaml")
        else a.replace("${AWS_REGION}", "us-east-2")
        for a in argv[1:]
    ]
    argv[argv.index("--properties-out") + 1] = str(tmp_path / "kcl.properties")
    result = CliRunner().invoke(
        main, [*argv, "--print", "--worker-id", "w1"], env={"AWS_REGION": "us-east-2"}
    )
    assert result.exit_code == 0, result.output
    props = written(result.output)
    assert "regionName" not in props
    assert props["dynamoDbClient.region"] == "eu-west-1"
    assert props["kinesisClient.region"] == (spout_region or "us-east-2")
    assert lease_of(props).region == "eu-west-1"


def test_without_a_lease_region_the_role_grants_the_table_in_the_stream_s_region(tmp_path: Path):
    source = tmp_path / "copy.yaml"
    source.write_text(TOPOLOGY.format(region=", region: eu-central-1"))
    out = tmp_path / "kcl"
    result = CliRunner().invoke(main, ["package", str(source), "--handler", "kcl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "--dynamodb-region" not in exec_start(out)
    leases = [s for s in statements(out) if "dynamodb:UpdateItem" in s["Action"]]
    assert [resource(s) for s in leases] == [
        "arn:${AWS::Partition}:dynamodb:eu-central-1:${AWS::AccountId}:table/${ApplicationName}"
    ]


@pytest.mark.parametrize("region", ["eu west 1", "${LEASE_REGION}", "eu-west-1;x", "EU-WEST-1"])
def test_a_lease_region_that_is_no_region_is_refused(tmp_path: Path, region: str):
    source = tmp_path / "copy.yaml"
    source.write_text(TOPOLOGY.format(region=""))
    out = tmp_path / "kcl"
    args = ["package", str(source), "--handler", "kcl", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--dynamodb-region", region])
    assert result.exit_code == 1
    assert f"--dynamodb-region {region!r}: an AWS region is expected" in result.output
    assert not (out / "squall-copier.service").exists()


def test_a_lease_region_is_for_a_kcl_fleet_only(tmp_path: Path):
    source = tmp_path / "copy.yaml"
    source.write_text(TOPOLOGY.format(region=""))
    args = ["package", str(source), "--handler", "consumer", "--dynamodb-region", "eu-west-1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--dynamodb-region is the lease table's region of a KCL fleet" in result.output
