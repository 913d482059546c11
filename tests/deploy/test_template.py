"""The SAM templates `squall package --template` writes: least-privilege roles, parameters, CORS/auth/throttling.

Every template goes through aws-sam-translator (SAM → CloudFormation, offline) and cfn-lint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from squall.component import Capabilities, LambdaTrigger, TriggerSource
from squall.deploy.package import aws_services
from squall.deploy.template import (
    TemplateOptions,
    sam_template,
    variable_defaults,
    variables,
    write_template,
)
from squall.errors import SquallError
from squall.iam import sqs_queue_arn
from squall.spouts.s3 import S3Spout, S3SpoutConfig
from squall.spouts.sqs import SqsSpout
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
    assert variables(topology.read_text()) == [
        "WAREHOUSE_URL",
        "STATE_URL",
        "EVENTS_TABLE",
        "REJECTS_FILE",
    ]
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
        ARN + "${EventsStream}": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
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
        "kinesis:DescribeStreamSummary",
    }


def test_variable_defaults_keep_the_first_default_written():
    assert variable_defaults("a: ${A:-x}\nb: ${B}\nc: ${A:-y}\nd: ${E:-}") == {
        "A": "x",
        "B": None,
        "E": "",
    }


def test_a_variable_in_a_comment_or_written_as_a_literal_is_no_parameter(tmp_path: Path):
    """A resource commented out (`#  cache: {url: "${CACHE_URL}"}`) made a parameter without
    default, which a deploy must be given a value for; `$${X}`, a literal, made one too."""
    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: t\n"
        "# set ${OLD_NOTE} before deploying\n"
        "resources:\n"
        '#  cache: {url: "redis://:${CACHE_PASSWORD}@cache:6379/0"}\n'
        '  warehouse: {url: "${WAREHOUSE_URL:-sqlite:///w.db}"}\n'
        "spout: {type: stdin}\n"
        "bolts:\n  - {id: decode, type: json}\n"
        '  - {id: p, type: project, defaults: {template: "$${NAME}"}}\n'
        "sinks: [{id: out, type: warehouse, resource: warehouse, table: t, columns: {a: a}}]\n"
    )
    assert variables(path.read_text()) == ["WAREHOUSE_URL"]
    params = template_of(path, "consumer", stream="s")["Parameters"]
    assert "WarehouseUrl" in params
    assert not {"OldNote", "CachePassword", "Name"} & set(params)


# --- SQS and S3 triggers -------------------------------------------------------------------------
# The template asks the spout for its trigger (``Capabilities.lambda_trigger``): the built-in sqs
# and s3 spouts, and subclasses declaring it as a plugin would (the S3 one with a suffix filter).


class TriggeredSqsSpout(SqsSpout):
    @classmethod
    def capabilities(cls, config):
        return Capabilities(
            lambda_trigger=LambdaTrigger(TriggerSource.SQS, config.queue, config.region)
        )


class SuffixS3SpoutConfig(S3SpoutConfig):
    suffix: str = ""


class TriggeredS3Spout(S3Spout):
    Config = SuffixS3SpoutConfig

    @classmethod
    def capabilities(cls, config):
        return Capabilities(
            lambda_trigger=LambdaTrigger(
                TriggerSource.S3, config.bucket, config.region, config.prefix, config.suffix
            )
        )


SQS_SPOUTS = [f"{__name__}:TriggeredSqsSpout", "sqs"]
S3_SPOUTS = [f"{__name__}:TriggeredS3Spout", "s3"]
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
SQS_READS = {
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
}


def topology_file(tmp_path: Path, spout: str, settings: str = "") -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: kiosk\nspout: {spout}\n{settings}bolts: [{{id: decode, type: json}}]\n"
        "sinks: [{id: orders, type: kinesis, stream: orders}]\n"
    )
    return path


def of_type(cfn: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in cfn["Resources"].values() if r["Type"] == kind]


@pytest.mark.parametrize("spout", SQS_SPOUTS)
def test_sqs_spout_is_an_sqs_trigger_reporting_failed_message_ids(tmp_path: Path, spout: str):
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/kiosk-high"
    t = template_of(topology_file(tmp_path, f'{{type: "{spout}", queue: "{url}"}}'), "consumer")
    cfn = checked(t, tmp_path)
    queue_arn = {"Fn::Sub": "arn:${AWS::Partition}:sqs:eu-west-1:123456789012:kiosk-high"}
    fn = t["Resources"]["Function"]["Properties"]
    # The consumer handler serves SQS events (lambda_sources) and answers batchItemFailures.
    assert fn["Handler"] == "squall_lambda.handler" and "consumer" in fn["Description"]
    assert fn["Events"] == {
        "Queue": {
            "Type": "SQS",
            "Properties": {
                "Queue": queue_arn,
                "BatchSize": 10,  # Lambda's most without a batching window
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        }
    }
    [esm] = of_type(cfn, "AWS::Lambda::EventSourceMapping")
    assert esm["EventSourceArn"] == queue_arn
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        queue_arn["Fn::Sub"]: SQS_READS,
        ARN + "orders": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
    }
    assert "StreamName" not in t["Parameters"]
    # Lambda refuses a mapping when the function may outlive the queue's visibility timeout.
    assert fn["Timeout"] == {"Ref": "FunctionTimeout"}
    assert t["Parameters"]["FunctionTimeout"]["Default"] == 30


@pytest.mark.parametrize(
    "spout,region",
    [
        ('{type: sqs, queue: "arn:aws:sqs:eu-west-1:123456789012:kiosk-high.fifo"}', "eu-west-1"),
        ('{type: sqs, queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/q"}', "eu-west-1"),
        ("{type: sqs, queue: kiosk-high, region: eu-west-1}", "eu-west-1"),
        ('{type: sqs, queue: "${QUEUE:-q}"}', None),  # whatever it holds: not known here
        ("{type: sqs, queue: kiosk-high}", None),  # the stack's own region
    ],
)
def test_an_sqs_trigger_is_ruled_to_be_deployed_in_its_queue_s_region(
    tmp_path: Path, spout: str, region: str | None
):
    """Lambda's SQS event source reads a queue of its own region only: a stack deployed in
    us-east-1 for a queue of eu-west-1 created its role and function, then failed on the
    mapping. As for a Kinesis stream, a rule now refuses it before anything is created."""
    t = template_of(topology_file(tmp_path, spout), "consumer")
    checked(t, tmp_path)
    if region is None:
        assert "Rules" not in t or "QueueInStackRegion" not in t["Rules"]
        return
    [assertion] = t["Rules"]["QueueInStackRegion"]["Assertions"]
    assert assertion == {
        "Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, region]},
        "AssertDescription": f"deploy this stack in the queue's region ({region}): a Lambda SQS "
        "trigger reads a queue of its own region only",
    }


@pytest.mark.parametrize("spout", SQS_SPOUTS)
def test_sqs_trigger_with_a_batching_window_takes_the_topology_batch(tmp_path: Path, spout: str):
    path = topology_file(
        tmp_path, f'{{type: "{spout}", queue: kiosk-low}}', "settings: {batch_size: 200}\n"
    )
    t = template_of(path, "consumer", batch_window=5)
    cfn = checked(t, tmp_path)
    source = t["Resources"]["Function"]["Properties"]["Events"]["Queue"]["Properties"]
    assert (source["BatchSize"], source["MaximumBatchingWindowInSeconds"]) == (200, 5)
    arn = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:kiosk-low"
    assert grants(policy(cfn))[arn] == SQS_READS


@pytest.mark.parametrize("spout", SQS_SPOUTS)
def test_fifo_queue_from_a_variable_is_its_parameter_in_batches_of_ten(tmp_path: Path, spout: str):
    path = topology_file(
        tmp_path,
        f'{{type: "{spout}", queue: "${{KIOSK_QUEUE:-kiosk.fifo}}", region: eu-west-1}}',
        "settings: {batch_size: 200}\n",
    )
    t = template_of(path, "consumer")
    cfn = checked(t, tmp_path)
    arn = "arn:${AWS::Partition}:sqs:eu-west-1:${AWS::AccountId}:${KioskQueue}"
    source = t["Resources"]["Function"]["Properties"]["Events"]["Queue"]["Properties"]
    assert source["Queue"] == {"Fn::Sub": arn} and source["BatchSize"] == 10
    assert grants(policy(cfn))[arn] == SQS_READS
    assert t["Parameters"]["KioskQueue"]["Default"] == "kiosk.fifo"
    with pytest.raises(SquallError, match="no batching window for FIFO"):
        template_of(path, "consumer", batch_window=2)


def test_a_queue_from_a_whole_variable_takes_a_name_only(tmp_path: Path, monkeypatch):
    """The docs said a `queue: "${KIOSK_QUEUE}"` variable could hold the queue's ARN, and the
    sinks take an ARN at run time: the template built `arn:…:sqs:REGION:ACCOUNT:arn:aws:sqs:…`
    for the trigger (refused mid-deployment) and for a sink's grant (every start then denied).
    The parameter of a whole queue now takes a name only, checked before anything is created."""
    monkeypatch.setenv("IN_QUEUE", "arn:aws:sqs:eu-west-1:123456789012:in")
    monkeypatch.setenv("OUT_QUEUE", "https://sqs.eu-west-1.amazonaws.com/123456789012/out")
    path = tmp_path / "t.yaml"
    path.write_text(
        'name: kiosk\nspout: {type: sqs, queue: "${IN_QUEUE}"}\n'
        "bolts: [{id: decode, type: json}]\n"
        'sinks: [{id: out, type: sqs, queue: "${OUT_QUEUE}"}, '
        '{id: other, type: sqs, queue: "orders-${STAGE:-dev}"}]\n'
    )
    t = template_of(path, "consumer")
    checked(t, tmp_path)
    for name in ("InQueue", "OutQueue"):
        assert t["Parameters"][name]["AllowedPattern"] == "[A-Za-z0-9_-]{1,80}(\\.fifo)?"
        assert "not its URL or ARN" in t["Parameters"][name]["ConstraintDescription"]
    assert "AllowedPattern" not in t["Parameters"]["Stage"]  # a part of the name only


@pytest.mark.parametrize(
    "options,message",
    [
        ({"on_failure": "sqs"}, "own dead-letter queue"),
        ({"stream": "clicks"}, "triggered by SQS"),
    ],
)
def test_sqs_trigger_refuses_kinesis_only_options(tmp_path: Path, options: dict, message: str):
    path = topology_file(tmp_path, f'{{type: "{__name__}:TriggeredSqsSpout", queue: q}}')
    with pytest.raises(SquallError, match=message):
        template_of(path, "consumer", **options)


S3_SPOUT = '{{type: "{spout}", bucket: "${{LOG_BUCKET:-etl-logs}}", prefix: logs/}}'
OBJECTS = "arn:${AWS::Partition}:s3:::${LogBucket}/logs/*"


@pytest.mark.parametrize("spout", S3_SPOUTS)
def test_s3_spout_creates_its_bucket_notifying_the_function_of_new_objects(
    tmp_path: Path, spout: str
):
    t = template_of(topology_file(tmp_path, S3_SPOUT.format(spout=spout)), "consumer")
    cfn = checked(t, tmp_path)
    fn = t["Resources"]["Function"]["Properties"]
    assert fn["Events"] == {
        "Objects": {
            "Type": "S3",
            "Properties": {
                "Bucket": {"Ref": "SourceBucket"},
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "logs/"}]}},
            },
        }
    }
    # The handler reads the objects (GetObject; on a versioned bucket the version its event
    # names: GetObjectVersion) under the prefix, nothing else of the bucket; it may list the
    # bucket's keys, so that S3 answers a deleted object NoSuchKey (its dead letter), not
    # AccessDenied (a failure retried until the event is given up).
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        OBJECTS: {"s3:GetObject", "s3:GetObjectVersion"},
        "arn:${AWS::Partition}:s3:::${LogBucket}": {"s3:ListBucket"},
        ARN + "orders": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
    }
    bucket = cfn["Resources"]["SourceBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["Properties"]["BucketName"] == {"Fn::Sub": "${LogBucket}"}
    [notified] = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert notified["Function"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert notified["Event"] == "s3:ObjectCreated:*"
    [permission] = of_type(cfn, "AWS::Lambda::Permission")
    assert permission["Principal"] == "s3.amazonaws.com"
    assert (
        not of_type(cfn, "AWS::Lambda::EventSourceMapping") and "StreamName" not in t["Parameters"]
    )


def _string_like(pattern: str, value: str) -> bool:
    """IAM's ``StringLike``: ``*`` any run of characters, ``?`` one, the rest literal."""
    return (
        re.fullmatch(".*".join(map(re.escape, pattern.split("*"))).replace("\\?", "."), value)
        is not None
    )


@pytest.mark.parametrize(
    ("prefix", "condition"),
    [
        ("logs/", {"StringLike": {"s3:prefix": "logs/*"}}),
        ('"${LOG_PREFIX:-logs/}"', {"StringLike": {"s3:prefix": {"Fn::Sub": "${LogPrefix}*"}}}),
        ('""', None),
    ],
    ids=["prefix", "prefix-from-a-variable", "no-prefix"],
)
@pytest.mark.parametrize("delivery", ["direct", "sqs"])
def test_s3_trigger_may_list_the_key_names_under_its_prefix_only(
    tmp_path: Path, prefix: str, condition: Any, delivery: str
):
    """``s3:ListBucket`` (so that S3 answers a deleted object NoSuchKey, not AccessDenied) let
    the role list the key names of the whole bucket. With a prefix it is an ``s3:prefix``
    condition (StringLike ``prefix*``): S3 checks a missing object's GetObject against it with
    the object's key as the prefix, and every key the trigger names is under the prefix. No
    prefix, no condition (one on ``*`` would refuse a listing naming no prefix)."""
    spout = f'{{type: s3, bucket: "${{LOG_BUCKET:-etl-logs}}", prefix: {prefix}}}'
    cfn = checked(
        template_of(topology_file(tmp_path, spout), "consumer", s3_delivery=delivery), tmp_path
    )
    [listing] = [st for st in policy(cfn) if st.get("Action") == ["s3:ListBucket"]]
    assert listing["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${LogBucket}"}
    assert listing.get("Condition") == condition
    if condition is not None and not isinstance(condition["StringLike"]["s3:prefix"], dict):
        pattern = condition["StringLike"]["s3:prefix"]
        assert _string_like(pattern, "logs/2026/12/07/a.jsonl.gz")
        assert not _string_like(pattern, "private/payroll.csv")
        assert not _string_like(pattern, "")  # a listing of the whole bucket


def test_s3_trigger_on_an_existing_bucket_outputs_the_notification_to_add(tmp_path: Path):
    spout = (
        f'{{type: "{__name__}:TriggeredS3Spout", bucket: "${{LOG_BUCKET:-etl-logs}}", '
        "prefix: logs/, suffix: .jsonl.gz}"
    )
    t = template_of(
        topology_file(tmp_path, spout), "consumer", s3_bucket="existing", on_failure="sqs"
    )
    cfn = checked(t, tmp_path)
    assert (
        "SourceBucket" not in cfn["Resources"]
        and "Events" not in t["Resources"]["Function"]["Properties"]
    )
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        "arn:${AWS::Partition}:s3:::${LogBucket}/logs/*.jsonl.gz": {
            "s3:GetObject",
            "s3:GetObjectVersion",
        },
        "arn:${AWS::Partition}:s3:::${LogBucket}": {"s3:ListBucket"},
        ARN + "orders": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
        "Ref OnFailureDestinationArn": {"sqs:SendMessage"},
    }
    [permission] = of_type(cfn, "AWS::Lambda::Permission")
    assert permission["Principal"] == "s3.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${LogBucket}"}
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    notification = json.loads(
        t["Outputs"]["BucketNotification"]["Value"]["Fn::Sub"].replace("${Function.Arn}", "FN")
    )
    assert notification == {
        "LambdaFunctionConfigurations": [
            {
                "LambdaFunctionArn": "FN",
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {
                        "FilterRules": [
                            {"Name": "prefix", "Value": "logs/"},
                            {"Name": "suffix", "Value": ".jsonl.gz"},
                        ]
                    }
                },
            }
        ]
    }
    # A failed S3 event (Lambda retries twice) goes to the on-failure destination.
    [invoke] = of_type(cfn, "AWS::Lambda::EventInvokeConfig")
    assert invoke["MaximumRetryAttempts"] == 2  # the parameter, resolved by the transform
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Ref": "OnFailureDestinationArn"
    }


def test_s3_trigger_keeps_the_s3_service_model_in_the_package(tmp_path: Path):
    path = topology_file(tmp_path, S3_SPOUT.format(spout=f"{__name__}:TriggeredS3Spout"))
    assert "s3" in aws_services(load(path))
    assert "s3" not in aws_services(load(PISTATS / "producer.yaml"))


@pytest.mark.parametrize(
    "queue,arn",
    [
        ("kiosk", "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:kiosk"),
        (
            "https://sqs.us-east-2.amazonaws.com/123456789012/k.fifo",
            "arn:${AWS::Partition}:sqs:us-east-2:123456789012:k.fifo",
        ),
        (
            "https://eu-west-1.queue.amazonaws.com/123456789012/k",
            "arn:${AWS::Partition}:sqs:eu-west-1:123456789012:k",
        ),
        # us-east-1's legacy endpoint and an interface VPC endpoint's name: they name the
        # queue's region and account (were read as a name: the stack's region and account)
        (
            "https://queue.amazonaws.com/123456789012/k",
            "arn:${AWS::Partition}:sqs:us-east-1:123456789012:k",
        ),
        (
            "https://vpce-0a1b2c3d-4e5f6a7b.sqs.eu-west-1.vpce.amazonaws.com/123456789012/k",
            "arn:${AWS::Partition}:sqs:eu-west-1:123456789012:k",
        ),
        (
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/k",
            "arn:${AWS::Partition}:sqs:cn-north-1:123456789012:k",
        ),
        # A local stand-in's URL says nothing of the deployed queue but its name.
        (
            "http://127.0.0.1:5000/000000000000/k",
            "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:k",
        ),
        ("arn:aws:sqs:eu-west-1:123456789012:k", "arn:aws:sqs:eu-west-1:123456789012:k"),
    ],
)
def test_queue_arn_from_a_name_url_or_arn(queue: str, arn: str):
    assert sqs_queue_arn(queue) == arn


def test_variables_holding_secrets_are_no_echo_whatever_their_names(tmp_path: Path, monkeypatch):
    """A password inside a URL's user info, a header's API key, a `password:`: `sam deploy --guided`
    and the console must not show them, whatever the variable is called."""
    path = tmp_path / "topology.yaml"
    path.write_text(
        """name: t
resources:
  warehouse: {url: "postgresql://${DB_USER:-app}:${DB_PW}@db.internal/events"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - id: apps
    type: lookup
    key: app_id
    target: app
    source:
      type: http
      url: "https://apps.internal/{key}"
      headers: {Authorization: "Bearer ${APPS_API}", X-Client: "${CLIENT_NAME:-squall}"}
sinks:
  - id: events
    type: warehouse
    resource: warehouse
    table: "${EVENTS_TABLE:-events}"
    columns: {app: app.name}
"""
    )
    monkeypatch.setenv("DB_PW", "s3cret")
    monkeypatch.setenv("APPS_API", "k-123")
    template = template_of(path, "consumer", stream="s")
    text = json.dumps(template)
    assert "s3cret" not in text and "k-123" not in text  # the values here never go in
    params = template["Parameters"]
    no_echo = {name for name, p in params.items() if p.get("NoEcho")}
    assert {"DbUser", "DbPw", "AppsApi"} <= no_echo
    assert not {"EventsTable", "ClientName"} & no_echo


def test_the_lake_and_s3_dead_letters_are_granted_put_object_under_their_prefixes(tmp_path: Path):
    """Sinks that write to AWS declare it (tests/sinks/test_sink_permissions.py): the role may
    write the lake and the dead letters, under their prefixes only. It could write neither."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: lake\nspout: {type: kinesis, stream: raw}\nbolts: [{id: decode, type: json}]\n"
        "sinks:\n"
        "  - {id: lake, type: s3, bucket: '${LAKE_BUCKET:-lake}', prefix: orders, time_field: ts}\n"
        "  - {id: dl, type: dead_letter_s3, bucket: '${LAKE_BUCKET:-lake}'}\n"
    )
    g = grants(policy(checked(template_of(path, "consumer"), tmp_path)))
    assert g["arn:${AWS::Partition}:s3:::${LakeBucket}/orders/*"] == {
        "s3:PutObject",
        "s3:DeleteObject",
    }
    assert g["arn:${AWS::Partition}:s3:::${LakeBucket}/dead-letters/*"] == {"s3:PutObject"}


def test_etl_example_functions_may_write_their_stream_lake_and_dead_letters_only(
    tmp_path: Path,
):
    """examples/etl: ingest reads the landing prefix and writes the raw stream and its dead
    letters; transform reads the raw stream and writes the curated stream and the lake."""
    s3 = "arn:${AWS::Partition}:s3:::"
    vpc = {"if InVpc: *"}
    ingest = grants(
        policy(checked(template_of(EXAMPLES / "etl/ingest.yaml", "consumer"), tmp_path))
    )
    assert ingest == {
        "GetAtt LogGroup.Arn": LOGS,
        s3 + "${LandingBucket}/incoming/*": {"s3:GetObject", "s3:GetObjectVersion"},
        s3 + "${LandingBucket}": {"s3:ListBucket"},
        ARN + "${RawStream}": {
            "kinesis:ListShards",
            "kinesis:PutRecords",
            "kinesis:DescribeStreamSummary",
        },
        s3 + "${LakeBucket}/dead-letters/ingest/*": {"s3:PutObject"},
    }
    transform = template_of(EXAMPLES / "etl/transform.yaml", "consumer")
    got = grants(policy(checked(transform, tmp_path)))
    assert {k: v for k, v in got.items() if k not in vpc} == {
        "GetAtt LogGroup.Arn": LOGS,
        ARN + "${RawStream}": {
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards",
        },
        ARN + "${CuratedStream}": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
        s3 + "${LakeBucket}/orders/*": {"s3:PutObject", "s3:DeleteObject"},
    }
    assert transform["Parameters"]["WarehouseUrl"]["NoEcho"] is True


@pytest.mark.parametrize(("handler", "timeout"), [("producer", 29), ("consumer", 300)])
def test_a_deadline_margin_leaving_no_time_in_the_functions_timeout_is_refused(
    tmp_path: Path, handler: str, timeout: int
):
    """``settings.lambda_deadline_margin`` as long as the function's timeout: the time left less
    the margin is never positive, so no retry is ever made and the ``http`` and ``push`` sinks
    send nothing — every invocation fails the same way, for ever. Refused when packaging, with
    the setting and the timeout named; a margin under the timeout is packaged."""
    spout = "{type: kinesis, stream: clicks}"
    path = topology_file(tmp_path, spout, f"settings: {{lambda_deadline_margin: {timeout}}}\n")
    with pytest.raises(SquallError, match=rf"lambda_deadline_margin \({timeout} s\).*{timeout} s"):
        template_of(path, handler)
    path = topology_file(tmp_path, spout, f"settings: {{lambda_deadline_margin: {timeout - 1}}}\n")
    assert template_of(path, handler)["Resources"]["Function"]["Properties"]["Timeout"] == timeout


@pytest.mark.parametrize("spout", SQS_SPOUTS)
def test_the_function_timeout_parameter_leaves_time_beyond_the_deadline_margin(
    tmp_path: Path, spout: str
):
    """An SQS trigger's ``FunctionTimeout`` is a parameter: its least value is over the margin
    (CloudFormation refuses a smaller one), and its default too."""
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/kiosk-high"
    settings = "settings: {lambda_deadline_margin: 45.5}\n"
    t = template_of(
        topology_file(tmp_path, f'{{type: "{spout}", queue: "{url}"}}', settings), "consumer"
    )
    param = t["Parameters"]["FunctionTimeout"]
    assert param["MinValue"] == 46 and param["Default"] == 46
    checked(t, tmp_path)
