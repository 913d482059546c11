"""`squall package --handler consumer --template T --retrieval fanout`: the trigger reads through a
stream consumer of its own (enhanced fan-out), with exactly the reads Lambda needs for it.

Every template goes through aws-sam-translator (SAM → CloudFormation, offline) and cfn-lint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy.fanout import CONSUMER_NAME_PATTERN, MAX_CONSUMER_NAME
from squall.errors import SquallError
from squall.topology.loader import load_text
from tests.deploy.test_template import (
    ARN,
    PISTATS,
    S3_SPOUT,
    SQS_SPOUTS,
    checked,
    grants,
    policy,
    template_of,
    topology_file,
)

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
STREAM_READS = {
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
}
CONSUMER = "GetAtt Consumer.ConsumerARN"
CONSUMER_READS = {"kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"}
VPC = "if InVpc: *"
SOURCE_ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"


def mapping(cfn: dict[str, Any]) -> dict[str, Any]:
    [esm] = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    return esm["Properties"]


def reader(tmp_path: Path, spout: str) -> Path:
    path = tmp_path / "reader.yaml"
    path.write_text(
        f"name: reader\nspout: {spout}\nbolts: [{{id: decode, type: json}}]\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    return path


def test_fanout_trigger_reads_the_stream_through_its_own_consumer(tmp_path: Path):
    t = template_of(
        PISTATS / "topology.yaml", "consumer", stream="pistats-events", retrieval="fanout"
    )
    cfn = checked(t, tmp_path)
    consumer = cfn["Resources"]["Consumer"]
    assert consumer == {
        "Type": "AWS::Kinesis::StreamConsumer",
        "Properties": {
            "ConsumerName": {"Ref": "ConsumerName"},
            "StreamARN": {"Fn::Sub": ARN + "${StreamName}"},
        },
    }
    # The mapping reads the consumer: CloudFormation creates it after the consumer (and deletes
    # it before), as the reference says.
    esm = mapping(cfn)
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["Consumer", "ConsumerARN"]}
    assert esm["StartingPosition"] == "TRIM_HORIZON"
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Exactly: the stream's reads on the stream, the consumer's two on the consumer's ARN.
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        ARN + "${StreamName}": STREAM_READS,
        CONSUMER: CONSUMER_READS,
        VPC: {
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        },
    }
    assert "ManagedPolicyArns" not in cfn["Resources"]["FunctionRole"]["Properties"]
    params = t["Parameters"]
    assert params["ConsumerName"]["Default"] == "pistats-lambda"  # not the KCL fleet's "pistats"
    assert params["ConsumerName"]["AllowedPattern"] == CONSUMER_NAME_PATTERN
    assert params["StreamName"]["Default"] == "pistats-events"
    assert "Rules" not in t  # the stream is in the stack's region and account


def test_polling_stays_without_a_consumer(tmp_path: Path):
    t = template_of(PISTATS / "topology.yaml", "consumer", stream="pistats-events")
    assert "Consumer" not in t["Resources"] and "ConsumerName" not in t["Parameters"]
    assert t == template_of(
        PISTATS / "topology.yaml", "consumer", stream="pistats-events", retrieval="polling"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"snapstart": True, "python": "3.12"},
        {"provisioned": 2},
        {"on_failure": "sqs", "batch_window": 5},
    ],
    ids=["snapstart", "provisioned-concurrency", "on-failure-batch-window"],
)
def test_fanout_with_an_alias_a_destination_or_a_batch_window(tmp_path: Path, options: dict):
    t = template_of(PISTATS / "topology.yaml", "consumer", retrieval="fanout", **options)
    cfn = checked(t, tmp_path)
    esm = mapping(cfn)
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["Consumer", "ConsumerARN"]}
    if "on_failure" in options:
        assert esm["MaximumBatchingWindowInSeconds"] == 5
        assert esm["DestinationConfig"] == {
            "OnFailure": {"Destination": {"Ref": "OnFailureDestinationArn"}}
        }
        assert grants(policy(cfn))["Ref OnFailureDestinationArn"] == {"sqs:SendMessage"}
        assert esm["FunctionName"] == {"Ref": "Function"}
    else:  # the alias 'live' is what the consumer's records invoke
        assert esm["FunctionName"] == {"Ref": "FunctionAliaslive"}
    assert grants(policy(cfn))[CONSUMER] == CONSUMER_READS


@pytest.mark.parametrize("where", ["spout", "--stream"])
def test_a_stream_given_by_arn_is_used_as_written_and_the_stack_must_be_in_its_account_and_region(
    tmp_path: Path, where: str
):
    if where == "spout":
        t = template_of(
            reader(tmp_path, f"{{type: kinesis, stream: '{SOURCE_ARN}'}}"),
            "consumer",
            retrieval="fanout",
        )
    else:
        t = template_of(
            PISTATS / "topology.yaml", "consumer", stream=SOURCE_ARN, retrieval="fanout"
        )
    cfn = checked(t, tmp_path)
    assert "StreamName" not in t["Parameters"]
    assert cfn["Resources"]["Consumer"]["Properties"]["StreamARN"] == {"Fn::Sub": SOURCE_ARN}
    assert grants(policy(cfn))[SOURCE_ARN] == STREAM_READS
    assert grants(policy(cfn))[CONSUMER] == CONSUMER_READS
    # CloudFormation registers the consumer in the stack's account and region, and Lambda reads a
    # stream of its own region only: a stack elsewhere is refused before anything is created.
    [rule] = t["Rules"].values()
    asserted = [a["Assert"]["Fn::Equals"] for a in rule["Assertions"]]
    assert asserted == [
        [{"Ref": "AWS::Region"}, "eu-west-1"],
        [{"Ref": "AWS::AccountId"}, "123456789012"],
    ]
    assert all(
        "deploy this stack in the stream's" in a["AssertDescription"] for a in rule["Assertions"]
    )


@pytest.mark.parametrize(
    "region,written,expected",
    [
        ("eu-west-1", "eu-west-1", "eu-west-1"),
        ('"${SOURCE_REGION:-eu-west-1}"', "${SourceRegion}", {"Ref": "SourceRegion"}),
    ],
)
def test_a_spout_region_places_the_stream_and_rules_the_stack_region(
    tmp_path: Path, region: str, written: str, expected: Any
):
    """The consumer is registered on the stream there, and the stack must be deployed in that
    region."""
    t = template_of(
        reader(tmp_path, f"{{type: kinesis, stream: clicks, region: {region}}}"),
        "consumer",
        retrieval="fanout",
    )
    cfn = checked(t, tmp_path)
    arn = f"arn:${{AWS::Partition}}:kinesis:{written}:${{AWS::AccountId}}:stream/${{StreamName}}"
    assert t["Parameters"]["StreamName"]["Default"] == "clicks"
    assert cfn["Resources"]["Consumer"]["Properties"]["StreamARN"] == {"Fn::Sub": arn}
    assert grants(policy(cfn))[arn] == STREAM_READS
    [rule] = t["Rules"].values()
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, expected]}
    assert "deploy this stack in the stream's region" in assertion["AssertDescription"]


def test_a_spout_stream_from_a_variable_is_the_consumer_stream(tmp_path: Path):
    t = template_of(
        reader(tmp_path, '{type: kinesis, stream: "${SOURCE_STREAM:-clicks}"}'),
        "consumer",
        retrieval="fanout",
    )
    cfn = checked(t, tmp_path)
    assert "StreamName" not in t["Parameters"] and "Rules" not in t
    assert cfn["Resources"]["Consumer"]["Properties"]["StreamARN"] == {
        "Fn::Sub": ARN + "${SourceStream}"
    }
    assert grants(policy(cfn))[ARN + "${SourceStream}"] == STREAM_READS


def test_the_consumer_name_is_the_topology_name_within_aws_limits(tmp_path: Path):
    name = "a" + "b" * 127  # the longest topology name
    text = (
        f"name: {name}\nspout: {{type: kinesis, stream: s}}\nsinks: [{{id: out, type: stdout}}]\n"
    )
    t = template_of_text(tmp_path, text)
    default = t["Parameters"]["ConsumerName"]["Default"]
    assert len(default) == MAX_CONSUMER_NAME and default.endswith("-lambda")
    assert re.fullmatch(CONSUMER_NAME_PATTERN, default)


def template_of_text(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    load_text(text, file=str(path))  # valid as written
    return template_of(path, "consumer", retrieval="fanout")


# --- where fan-out means nothing ----------------------------------------------------------------


def test_the_producer_refuses_fanout():
    with pytest.raises(SquallError, match="--retrieval configures a consumer's trigger"):
        template_of(PISTATS / "producer.yaml", "producer", retrieval="fanout")


@pytest.mark.parametrize("spout", SQS_SPOUTS)
def test_an_sqs_trigger_refuses_fanout(tmp_path: Path, spout: str):
    path = topology_file(tmp_path, f'{{type: "{spout}", queue: q}}')
    with pytest.raises(
        SquallError, match="--retrieval fanout is a way to read a Kinesis stream.*SQS"
    ):
        template_of(path, "consumer", retrieval="fanout")


def test_an_s3_trigger_refuses_fanout(tmp_path: Path):
    path = topology_file(tmp_path, S3_SPOUT.format(spout="s3"))
    with pytest.raises(
        SquallError, match="--retrieval fanout is a way to read a Kinesis stream.*S3"
    ):
        template_of(path, "consumer", retrieval="fanout")


def test_an_unknown_retrieval_is_refused():
    with pytest.raises(SquallError, match="--retrieval must be one of polling, fanout"):
        template_of(PISTATS / "topology.yaml", "consumer", retrieval="push")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--handler", "producer", "--retrieval", "fanout"], "the producer reads none"),
        (
            ["--handler", "consumer", "--retrieval", "fanout"],
            "--retrieval configures the SAM template",
        ),
    ],
)
def test_the_cli_refuses_fanout_where_it_means_nothing(args: list[str], message: str):
    topology = PISTATS / ("producer.yaml" if "producer" in args else "topology.yaml")
    result = CliRunner().invoke(main, ["package", str(topology), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_cli_passes_the_retrieval_to_the_template(tmp_path: Path, monkeypatch):
    """The option reaches the template (the zip is not built: it is the same either way)."""
    from squall.deploy import package, template

    seen = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["options"].retrieval)
        raise SquallError("stopped before the zip")

    monkeypatch.setattr(template, "sam_template", spy)
    monkeypatch.setattr(package, "build", spy)
    result = CliRunner().invoke(
        main,
        [
            "package",
            str(PISTATS / "topology.yaml"),
            "--handler",
            "consumer",
            "--retrieval",
            "fanout",
            "--template",
            str(tmp_path / "template.yaml"),
            "-o",
            str(tmp_path / "consumer.zip"),
        ],
    )
    assert result.exit_code == 1 and "stopped before the zip" in result.output
    assert seen == ["fanout"]


def test_stream_option_names_a_stream_of_the_stack_region_whatever_the_spout_region(
    tmp_path: Path,
):
    t = template_of(
        reader(tmp_path, "{type: kinesis, stream: clicks, region: eu-west-1}"),
        "consumer",
        retrieval="fanout",
        stream="views",
    )
    cfn = checked(t, tmp_path)
    assert t["Parameters"]["StreamName"]["Default"] == "views" and "Rules" not in t
    assert cfn["Resources"]["Consumer"]["Properties"]["StreamARN"] == {
        "Fn::Sub": ARN + "${StreamName}"
    }


def test_written_templates_hold_no_yaml_anchors_or_aliases(tmp_path: Path):
    """An object used twice in a template (the stream's ARN in the consumer and the policy; a
    dashboard's dimensions) was written once as `&id001` and then as `*id001`: valid YAML that
    CloudFormation's own parser refuses (a template uploaded directly or through the console)."""
    from squall.deploy.template import write_template

    t = template_of(
        PISTATS / "topology.yaml", "consumer", stream="pistats-events", retrieval="fanout"
    )
    path = tmp_path / "t.yaml"
    write_template(path, t)
    text = path.read_text()
    assert not re.search(r"[&*]id\d+", text)
    import yaml

    assert yaml.safe_load(text) == t


@pytest.mark.parametrize(
    "spout, arn",
    [
        (
            "{type: kinesis, stream: clicks, region: eu-west-1}",
            "arn:${AWS::Partition}:kinesis:eu-west-1:${AWS::AccountId}:stream/${StreamName}",
        ),
        (f"{{type: kinesis, stream: '{SOURCE_ARN}'}}", SOURCE_ARN),
    ],
    ids=["spout-region", "spout-arn"],
)
def test_a_polling_trigger_reads_the_stream_where_the_spout_places_it(
    tmp_path: Path, spout: str, arn: str
):
    """A polling trigger read `arn:…:${AWS::Region}:…:stream/clicks` whatever the spout's region
    (or dropped the ARN the spout gave for a StreamName parameter): deployed in us-east-1 for a
    stream in eu-west-1 it read another stream of the same name, or none. The stack is now ruled
    to be in the stream's region (Lambda reads a stream of its own region only); not its
    account: a polling trigger may read another account's stream through the stream's policy."""
    t = template_of(reader(tmp_path, spout), "consumer")
    cfn = checked(t, tmp_path)
    assert mapping(cfn)["EventSourceArn"] == {"Fn::Sub": arn}
    assert grants(policy(cfn))[arn] == STREAM_READS
    assert list(t["Rules"]) == ["StreamInStackRegion"]  # the region only, not the account
    [rule] = t["Rules"].values()
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]}
    assert assertion["AssertDescription"].startswith(
        "--retrieval polling: deploy this stack in the stream's region (eu-west-1)"
    )
    assert "Consumer" not in t["Resources"]


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
def test_a_region_from_aws_region_is_the_stacks_and_never_a_function_variable(
    tmp_path: Path, retrieval: str
):
    """`region: "${AWS_REGION:-eu-west-1}"` made a parameter `AwsRegion` and set `AWS_REGION`
    in the function's environment: a variable Lambda reserves (cfn-lint E3663), so creating the
    function failed. Lambda sets it to the function's region: the template says `AWS::Region`."""
    t = template_of(
        reader(
            tmp_path,
            '{type: kinesis, stream: clicks, region: "${AWS_REGION:-eu-west-1}"}',
        ),
        "consumer",
        retrieval=retrieval,
    )
    cfn = checked(t, tmp_path)  # cfn-lint passes
    assert "AwsRegion" not in t["Parameters"]
    env = t["Resources"]["Function"]["Properties"].get("Environment", {}).get("Variables", {})
    assert "AWS_REGION" not in env
    arn = "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/${StreamName}"
    assert grants(policy(cfn))[arn] == STREAM_READS
    assert "Rules" not in t  # the stack's own region: nothing to assert


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
def test_stream_option_sets_the_variable_a_spout_stream_is_written_with(
    tmp_path: Path, retrieval: str
):
    """`--stream views` with a spout stream `${SOURCE_STREAM:-clicks}` was silently ignored: the
    template read `clicks`. The variable's parameter now defaults to the option's stream."""
    spout = '{type: kinesis, stream: "${SOURCE_STREAM:-clicks}"}'
    t = template_of(reader(tmp_path, spout), "consumer", retrieval=retrieval, stream="views")
    checked(t, tmp_path)
    assert t["Parameters"]["SourceStream"]["Default"] == "views"
    assert "StreamName" not in t["Parameters"]
    with pytest.raises(SquallError, match="written as 'events-\\$\\{ENV\\}': give the stream"):
        template_of(
            reader(tmp_path, '{type: kinesis, stream: "events-${ENV:-dev}"}'),
            "consumer",
            retrieval=retrieval,
            stream="views",
        )
