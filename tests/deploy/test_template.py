"""The SAM templates `squall package --template` writes: least-privilege roles, parameters, CORS/auth/throttling.

Every template goes through aws-sam-translator (SAM → CloudFormation, offline) and cfn-lint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from squall.deploy.template import (
    TemplateOptions,
    sam_template,
    variable_defaults,
    variables,
    write_template,
)
from squall.topology.loader import load
from tests.conftest import EXAMPLES
from tests.deploy.sam import cfn_lint, translate

PISTATS = EXAMPLES / "pistats"
ARN = "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/"


def template_of(path: Path, handler: str, **options: Any) -> dict[str, Any]:
    return sam_template(
        load(path),
        path.read_text(),
        handler=handler,
        code_uri=f"../{handler}.zip",
        options=TemplateOptions(**options),
    )


def checked(template: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Write, lint and translate; returns the CloudFormation the transform makes."""
    path = tmp_path / "nested" / "template.yaml"  # the folder does not exist yet
    write_template(path, template)
    assert yaml.safe_load(path.read_text()) == template
    r = cfn_lint(path)
    assert r.returncode == 0, r.stdout + r.stderr
    return translate(template)


def policy(cfn: dict[str, Any], role: str = "FunctionRole") -> list[dict[str, Any]]:
    [doc] = cfn["Resources"][role]["Properties"]["Policies"]
    return doc["PolicyDocument"]["Statement"]


def grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """resource (as written) → actions, VPC statements (under Fn::If) apart."""
    out: dict[str, set[str]] = {}
    for st in statements:
        if "Fn::If" in st:
            cond, st = st["Fn::If"][0], st["Fn::If"][1]
            key = f"if {cond}: {st['Resource']}"
        else:
            res = st["Resource"]
            key = res.get("Fn::Sub") or (
                f"Ref {res['Ref']}" if "Ref" in res else f"GetAtt {'.'.join(res['Fn::GetAtt'])}"
            )
        out.setdefault(key, set()).update(st["Action"])
    return out


def test_pistats_consumer_grants_its_logs_and_the_trigger_reads_only(tmp_path: Path):
    topology = PISTATS / "topology.yaml"
    assert variables(topology.read_text()) == ["WAREHOUSE_URL", "STATE_URL", "EVENTS_TABLE"]
    t = template_of(topology, "consumer", stream="pistats-events")
    cfn = checked(t, tmp_path)
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": {"logs:CreateLogStream", "logs:PutLogEvents"},
        ARN + "${StreamName}": {
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards",
        },
        # Lambda's network interfaces when subnets are given: EC2 has no resource-level permission for them.
        "if InVpc: *": {
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        },
    }
    # SAM adds no managed policy (AWSLambdaKinesisExecutionRole grants on "*"): the function has its own role.
    assert "ManagedPolicyArns" not in cfn["Resources"]["FunctionRole"]["Properties"]
    params = t["Parameters"]
    assert params["WarehouseUrl"] == {
        "Type": "String",
        "Description": "Value of ${WAREHOUSE_URL} in the topology",
        "Default": "sqlite:///out/pistats.db",
        "NoEcho": True,
    }
    assert (
        params["EventsTable"]["Default"] == "events"
        and params["StreamName"]["Default"] == "pistats-events"
    )
    assert (
        params["SubnetIds"]["Default"] == ""
        and params["SecurityGroupIds"]["Type"] == "CommaDelimitedList"
    )
    esm = cfn["Resources"]["FunctionStream"]["Properties"]
    assert (
        esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        and esm["MaximumRetryAttempts"] == -1
    )
    assert esm["BatchSize"] == 500 and esm["BisectBatchOnFunctionError"] is False
    fn = cfn["Resources"]["Function"]["Properties"]
    assert fn["VpcConfig"]["Fn::If"][0] == "InVpc"
    assert fn["Environment"]["Variables"]["WAREHOUSE_URL"] == {"Ref": "WarehouseUrl"}


def test_pistats_producer_may_put_records_on_the_parameterised_stream_only(tmp_path: Path):
    t = template_of(
        PISTATS / "producer.yaml", "producer", cors_origins=("https://app.example.com",)
    )
    cfn = checked(t, tmp_path)
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": {"logs:CreateLogStream", "logs:PutLogEvents"},
        ARN + "${EventsStream}": {"kinesis:PutRecords"},
    }
    # The function reads the stream name from the same parameter it is granted on: deployed with
    # another name, it may write there.
    fn = cfn["Resources"]["Function"]["Properties"]
    assert fn["Environment"]["Variables"]["EVENTS_STREAM"] == {"Ref": "EventsStream"}
    assert t["Parameters"]["EventsStream"]["Default"] == "pistats-events"
    assert "SubnetIds" not in t["Parameters"]  # no SQL or Redis resource: no VPC
    assert grants(policy(cfn, "AuthorizerRole")) == {
        "GetAtt AuthorizerLogGroup.Arn": {"logs:CreateLogStream", "logs:PutLogEvents"}
    }


def test_producer_api_answers_preflights_itself_checks_an_app_key_and_throttles(tmp_path: Path):
    """What can be checked offline of the HTTP API: API Gateway answers an OPTIONS preflight itself when
    CORS is configured and no OPTIONS route exists (so neither the authorizer nor the function sees it);
    the only route is POST /events behind the app-key authorizer; the stage throttles every route."""
    t = template_of(
        PISTATS / "producer.yaml",
        "producer",
        cors_origins=("https://app.example.com", "https://m.example.com"),
        throttle_rate=50,
        throttle_burst=80,
    )
    cfn = checked(t, tmp_path)
    body = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    assert list(body["paths"]) == ["/events"] and list(body["paths"]["/events"]) == ["post"]
    cors = body["x-amazon-apigateway-cors"]
    assert cors["allowOrigins"] == ["https://app.example.com", "https://m.example.com"]
    assert cors["allowMethods"] == ["POST"]
    assert {"content-type", "content-encoding", "x-api-key"} <= set(cors["allowHeaders"])
    assert body["paths"]["/events"]["post"]["security"] == [{"AppKey": []}]
    authorizer = body["components"]["securitySchemes"]["AppKey"]["x-amazon-apigateway-authorizer"]
    assert authorizer["identitySource"] == ["$request.header.x-api-key"]
    assert (
        authorizer["enableSimpleResponses"] is True
        and authorizer["authorizerResultTtlInSeconds"] == 300
    )
    assert (
        cfn["Resources"]["Authorizer"]["Properties"]["Handler"]
        == "squall.deploy.authorizer.handler"
    )
    assert t["Parameters"]["AppKeys"]["NoEcho"] is True
    assert any(
        r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Fn::GetAtt": ["Authorizer", "Arn"]}
        for r in cfn["Resources"].values()
    )
    stage = cfn["Resources"]["HttpApiApiGatewayDefaultStage"]["Properties"]["DefaultRouteSettings"]
    assert stage == {
        "ThrottlingRateLimit": {"Ref": "ThrottleRate"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurst"},
    }
    assert (
        t["Parameters"]["ThrottleRate"]["Default"],
        t["Parameters"]["ThrottleBurst"]["Default"],
    ) == (50, 80)


def test_producer_without_auth_has_no_authorizer(tmp_path: Path):
    cfn = checked(template_of(PISTATS / "producer.yaml", "producer", auth="none"), tmp_path)
    assert "Authorizer" not in cfn["Resources"]
    assert (
        "security"
        not in cfn["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]["/events"]["post"]
    )


@pytest.mark.parametrize("kind,action", [("sqs", "sqs:SendMessage"), ("sns", "sns:Publish")])
def test_consumer_with_an_on_failure_destination_on_arm64_with_a_layer(
    tmp_path: Path, kind: str, action: str
):
    t = template_of(
        PISTATS / "topology.yaml",
        "consumer",
        on_failure=kind,
        arch="arm64",
        layer_uri="../deps.zip",
    )
    cfn = checked(t, tmp_path)
    esm = cfn["Resources"]["FunctionStream"]["Properties"]
    assert esm["MaximumRetryAttempts"] == {"Ref": "MaximumRetryAttempts"}
    assert esm["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Ref": "OnFailureDestinationArn"}}
    }
    assert grants(policy(cfn))["Ref OnFailureDestinationArn"] == {action}
    fn = cfn["Resources"]["Function"]["Properties"]
    assert fn["Architectures"] == ["arm64"]
    [layer] = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::LayerVersion"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert t["Parameters"]["MaximumRetryAttempts"]["Default"] == 10


def test_kinesis_spout_stream_from_a_variable_is_the_trigger_parameter(tmp_path: Path):
    text = """
name: reader
spout: {type: kinesis, stream: "${SOURCE_STREAM:-clicks}"}
bolts: [{id: decode, type: json}]
sinks:
  - {id: copy, type: kinesis, stream: "arn:aws:kinesis:eu-west-1:123456789012:stream/archive", aggregate: true}
"""
    path = tmp_path / "reader.yaml"
    path.write_text(text)
    t = template_of(path, "consumer")
    cfn = checked(t, tmp_path)
    assert "StreamName" not in t["Parameters"]
    assert cfn["Resources"]["FunctionStream"]["Properties"]["EventSourceArn"] == {
        "Fn::Sub": ARN + "${SourceStream}"
    }
    assert grants(policy(cfn))["arn:aws:kinesis:eu-west-1:123456789012:stream/archive"] == {
        "kinesis:ListShards",
        "kinesis:PutRecords",
    }


def test_variable_defaults_keep_the_first_default_written():
    assert variable_defaults("a: ${A:-x}\nb: ${B}\nc: ${A:-y}\nd: ${E:-}") == {
        "A": "x",
        "B": None,
        "E": "",
    }
