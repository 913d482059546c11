"""`squall package --template --s3-delivery`: an s3 spout's function fed by S3 notifications
through an SQS queue or an EventBridge rule, as the handler reads them (test_s3_envelopes.py).

Every template goes through aws-sam-translator and cfn-lint (``checked``); the EventBridge
rule's pattern is tried on moto's TestEventPattern with the event shape the handler reads.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from squall.errors import SquallError
from tests.deploy.test_s3_envelopes import eventbridge_event
from tests.deploy.test_template import (
    LOGS,
    SQS_READS,
    checked,
    grants,
    of_type,
    policy,
    template_of,
    topology_file,
)

KIN = "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/orders"
SPOUT = '{type: s3, bucket: "${LOG_BUCKET:-etl-logs}", prefix: logs/}'
SUFFIXED = (
    '{type: "tests.deploy.test_template:TriggeredS3Spout", bucket: "${LOG_BUCKET:-etl-logs}", '
    "prefix: logs/, suffix: .jsonl.gz}"
)
OBJECTS = "arn:${AWS::Partition}:s3:::${LogBucket}/logs/*"
BUCKET = "arn:${AWS::Partition}:s3:::${LogBucket}"


def test_through_sqs_the_queue_is_a_parameter_answered_per_message(tmp_path: Path):
    t = template_of(topology_file(tmp_path, SUFFIXED), "consumer", s3_delivery="sqs")
    cfn = checked(t, tmp_path)
    fn = t["Resources"]["Function"]["Properties"]
    assert fn["Events"] == {
        "Notifications": {
            "Type": "SQS",
            "Properties": {
                "Queue": {"Ref": "NotificationQueueArn"},
                "BatchSize": {"Ref": "ObjectsPerInvocation"},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        }
    }
    assert t["Parameters"]["ObjectsPerInvocation"]["Default"] == 1
    assert fn["Timeout"] == {"Ref": "FunctionTimeout"}  # at most the queue's visibility timeout
    [esm] = of_type(cfn, "AWS::Lambda::EventSourceMapping")
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # The queue's reads on the queue; the objects' reads under the prefix; no bucket declared.
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        OBJECTS + ".jsonl.gz": {"s3:GetObject", "s3:GetObjectVersion"},
        BUCKET: {"s3:ListBucket"},
        "Ref NotificationQueueArn": SQS_READS,
        KIN: {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
    }
    assert "SourceBucket" not in cfn["Resources"]
    assert not of_type(cfn, "AWS::Lambda::Permission")
    notification = t["Outputs"]["BucketNotification"]["Value"]["Fn::Sub"]
    assert json.loads(notification.replace("${NotificationQueueArn}", "Q")) == {
        "QueueConfigurations": [
            {
                "QueueArn": "Q",
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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_failure": "sqs"}, "the queue's own dead-letter queue"),
        ({"s3_bucket": "create"}, "leaves the bucket alone"),
    ],
)
def test_through_sqs_refuses_what_belongs_to_the_queue_or_the_bucket(
    tmp_path: Path, options: dict, message: str
):
    with pytest.raises(SquallError, match=message):
        template_of(topology_file(tmp_path, SPOUT), "consumer", s3_delivery="sqs", **options)


def test_a_delivery_is_for_an_s3_spout_only(tmp_path: Path):
    path = topology_file(tmp_path, "{type: sqs, queue: q}")
    with pytest.raises(SquallError, match="--s3-delivery is for an s3 spout; .* SQS"):
        template_of(path, "consumer", s3_delivery="eventbridge")
    with pytest.raises(SquallError, match="--s3-bucket is for an s3 spout"):
        template_of(path, "consumer", s3_bucket="existing")


def test_through_eventbridge_a_rule_matches_the_bucket_s_new_objects_under_the_prefix(
    tmp_path: Path,
    moto_server,  # noqa: F811
):
    t = template_of(topology_file(tmp_path, SPOUT), "consumer", s3_delivery="eventbridge")
    cfn = checked(t, tmp_path)
    fn = t["Resources"]["Function"]["Properties"]
    assert list(fn["Events"]) == ["ObjectCreated"]
    assert fn["Events"]["ObjectCreated"]["Type"] == "EventBridgeRule"
    [rule] = of_type(cfn, "AWS::Events::Rule")
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [{"Fn::Sub": "${LogBucket}"}]},
            "object": {"key": [{"prefix": "logs/"}]},
        },
    }
    [permission] = of_type(cfn, "AWS::Lambda::Permission")
    assert permission["Principal"] == "events.amazonaws.com"
    bucket = cfn["Resources"]["SourceBucket"]["Properties"]
    assert bucket["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert grants(policy(cfn)) == {
        "GetAtt LogGroup.Arn": LOGS,
        OBJECTS: {"s3:GetObject", "s3:GetObjectVersion"},
        BUCKET: {"s3:ListBucket"},
        KIN: {"kinesis:PutRecords", "kinesis:DescribeStreamSummary"},
    }
    # The rule on moto's EventBridge (its target a queue), the bucket's name filled in: which of
    # the events of the shape S3 sends (test_s3_envelopes.py) it passes on.
    pattern = json.dumps(rule["EventPattern"]).replace('{"Fn::Sub": "${LogBucket}"}', '"etl-logs"')
    events, sqs = moto_server.client("events"), moto_server.client("sqs")
    queue = sqs.create_queue(QueueName=f"rule-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    name = f"objects-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=name, EventPattern=pattern)
    events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn["QueueArn"]}])
    sent = [("etl-logs", "logs/2026/a.jsonl"), ("etl-logs", "other/a.jsonl"), ("x", "logs/b")]
    for bucket, key in sent:
        event = eventbridge_event(bucket, key)
        entry = {"Source": event["source"], "DetailType": event["detail-type"]}
        events.put_events(Entries=[{**entry, "Detail": json.dumps(event["detail"])}])
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    details = [json.loads(m["Body"])["detail"] for m in got.get("Messages", [])]
    assert [(d["bucket"]["name"], d["object"]["key"]) for d in details] == [sent[0]]


def test_through_eventbridge_on_an_existing_bucket_with_a_suffix(tmp_path: Path):
    t = template_of(
        topology_file(tmp_path, SUFFIXED),
        "consumer",
        s3_delivery="eventbridge",
        s3_bucket="existing",
        on_failure="sns",
    )
    cfn = checked(t, tmp_path)
    [rule] = of_type(cfn, "AWS::Events::Rule")
    assert rule["EventPattern"]["detail"]["object"] == {"key": [{"wildcard": "logs/*.jsonl.gz"}]}
    assert "SourceBucket" not in cfn["Resources"]
    assert json.loads(t["Outputs"]["BucketNotification"]["Value"]) == {
        "EventBridgeConfiguration": {}
    }
    # A failed event (asynchronous invocation: retried twice) goes to the destination.
    [invoke] = of_type(cfn, "AWS::Lambda::EventInvokeConfig")
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Ref": "OnFailureDestinationArn"
    }


def test_the_package_command_passes_the_delivery_to_the_template(tmp_path: Path):
    from click.testing import CliRunner

    from squall.cli import main as cli

    path = topology_file(tmp_path, "{type: sqs, queue: q}")
    args = ["package", str(path), "--handler", "consumer", "--template", str(tmp_path / "sam.yaml")]
    result = CliRunner().invoke(cli, [*args, "--s3-delivery", "sqs"])
    assert result.exit_code == 1, result.output
    assert "--s3-delivery is for an s3 spout" in result.output
    assert not (tmp_path / "sam.yaml").exists()


def test_flags_that_would_change_nothing_are_refused(tmp_path: Path):
    """A trigger flag the template cannot apply was silently dropped: a batching window on a
    function S3 or EventBridge invokes per event, consumer flags on the producer, template flags
    without --template or for a KCL fleet."""
    from click.testing import CliRunner

    from squall.cli import main as cli

    spout = topology_file(tmp_path, SPOUT)
    for delivery in ("direct", "eventbridge"):
        with pytest.raises(SquallError, match="--batch-window is for a Kinesis or SQS"):
            template_of(spout, "consumer", s3_delivery=delivery, batch_window=5)
    with pytest.raises(SquallError, match="--on-failure configures a consumer's trigger"):
        template_of(spout, "producer", on_failure="sqs")
    for flags in (["--batch-window", "5"], ["--s3-delivery", "sqs"], ["--on-failure", "sqs"]):
        result = CliRunner().invoke(cli, ["package", str(spout), "--handler", "consumer", *flags])
        assert result.exit_code == 2 and "give --template" in result.output, result.output
        result = CliRunner().invoke(cli, ["package", str(spout), "--handler", "kcl", *flags])
        assert result.exit_code == 2 and "not a KCL fleet" in result.output, result.output
