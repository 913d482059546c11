"""The consumer template's event source: Kinesis, SQS or S3, from what the spout declares.

A spout says how Lambda delivers its records with ``Capabilities.lambda_trigger`` (source and
name); a spout that declares none but names a Kinesis stream (``kinesis_streams``) is consumed
from that stream, and any other (a file, during development) from the ``StreamName`` parameter.
Every source reads with the function's own role, granted on the named stream, queue or bucket
prefix only. The function is squall's consumer handler, which serves all three
(``squall.deploy.lambda_consumer`` dispatches SQS and S3 events to ``lambda_sources``). A Kinesis
trigger polls the stream, or with ``--retrieval fanout`` reads a stream consumer the template
registers for it (``squall.deploy.fanout``).

An S3 notification can only be configured by whoever owns the bucket's configuration: SAM's S3
event needs the bucket in the same template. ``--s3-bucket create`` (the default) declares it
there (kept when the stack is deleted); ``--s3-bucket existing`` leaves an existing bucket alone,
grants S3 the right to invoke the function, and outputs the notification to put on the bucket.
``--s3-delivery`` says how the notifications reach the function: ``direct`` (S3 invokes it),
``sqs`` (an existing queue the bucket or an SNS topic feeds: an SQS event source with partial
batch answers) or ``eventbridge`` (a rule on the default bus matching the bucket and prefix).

Size (~560 lines): one event source per delivery, each with its parameters, grants and outputs.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from squall.component import LambdaTrigger, TriggerSource
from squall.errors import SquallError
from squall.iam import AwsPermission, kinesis_stream_arn, s3_bucket_arn, sqs_queue_arn

if TYPE_CHECKING:
    from squall.deploy.template import TemplateOptions, _Builder
    from squall.topology.model import Topology

#: Lambda's largest batch from a Kinesis event source mapping.
MAX_KINESIS_BATCH = 10_000
#: Lambda's largest SQS batch: 10 without a batching window (and always for FIFO queues), else 10,000.
MAX_SQS_BATCH, MAX_SQS_WINDOWED_BATCH = 10, 10_000
#: What Lambda's Kinesis event source mapping calls with the function's role (standard iterators).
TRIGGER_READS = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
)
#: What Lambda's SQS event source mapping calls with the function's role: the documented three,
#: and ChangeMessageVisibility as CDK's grantConsumeMessages gives it (see docs/deploy.md).
SQS_TRIGGER_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
#: What the consumer handler calls for an S3 event: it reads each object the event names, the
#: version the event names on a versioned bucket (GetObject with a VersionId needs the second).
S3_TRIGGER_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
#: On the bucket itself: without it S3 answers a GetObject of a missing object (deleted after its
#: notification) AccessDenied, not NoSuchKey — a permission problem to retry, where the object's
#: is a dead letter (``squall.deploy.lambda_sources.run_object``). Keys only, not their content,
#: and under the trigger's prefix only (``s3_list_statement``): S3 checks this permission for a
#: missing object with the object's key as ``s3:prefix``.
S3_TRIGGER_BUCKET_ACTIONS = ("s3:ListBucket",)
S3_EVENTS = ["s3:ObjectCreated:*"]
#: How S3 notifications reach the function (``--s3-delivery``).
S3_DELIVERIES = ("direct", "sqs", "eventbridge")
#: S3 invokes asynchronously: Lambda retries a failed event at most twice.
MAX_ASYNC_RETRIES = 2


def declared_trigger(topology: Topology) -> LambdaTrigger | None:
    """The spout's trigger: declared, else its Kinesis stream, else None (the StreamName parameter)."""
    from squall.topology import registry

    caps = registry.capabilities("spout", topology.spout)
    if caps.lambda_trigger is not None:
        return caps.lambda_trigger
    if caps.kinesis_streams:
        return LambdaTrigger(TriggerSource.KINESIS, caps.kinesis_streams[0])
    return None


def trigger_permissions(topology: Topology) -> list[AwsPermission]:
    """What the function's role needs for its trigger (Kinesis from ``StreamName`` aside; an S3
    trigger's listing is narrowed to its prefix by ``s3_list_statement``)."""
    trigger = declared_trigger(topology)
    if trigger is None:
        return []
    if trigger.source is TriggerSource.KINESIS:
        return [AwsPermission(TRIGGER_READS, kinesis_stream_arn(trigger.name, trigger.region))]
    if trigger.source is TriggerSource.SQS:
        return [AwsPermission(SQS_TRIGGER_ACTIONS, sqs_queue_arn(trigger.name, trigger.region))]
    return [
        AwsPermission(S3_TRIGGER_ACTIONS, s3_object_arn(trigger)),
        AwsPermission(S3_TRIGGER_BUCKET_ACTIONS, s3_bucket_arn(trigger.name)),
    ]


def s3_object_arn(trigger: LambdaTrigger) -> str:
    """The objects the trigger can name: ``bucket/prefix*suffix``."""
    return f"{s3_bucket_arn(trigger.name)}/{trigger.prefix}*{trigger.suffix}"


def s3_list_statement(trigger: LambdaTrigger) -> dict[str, Any]:
    """``s3:ListBucket`` on the trigger's bucket, for the key names under its prefix only: an
    ``s3:prefix`` condition (``StringLike prefix*``), as AWS's IAM examples narrow a listing to
    a folder. A GetObject of a missing object is checked against it with the object's key as
    the prefix (S3 answers NoSuchKey only if that listing is allowed): the trigger's objects,
    all under the prefix, are answered NoSuchKey still. No prefix: the whole bucket, no
    condition (one on ``*`` would refuse a listing that names no prefix)."""
    from squall.deploy.template import resource_sub, value_sub

    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Action": list(S3_TRIGGER_BUCKET_ACTIONS),
        "Resource": resource_sub(s3_bucket_arn(trigger.name)),
    }
    if trigger.prefix:
        statement["Condition"] = {"StringLike": {"s3:prefix": value_sub(f"{trigger.prefix}*")}}
    return statement


def add_consumer_trigger(
    b: _Builder,
    topology: Topology,
    marked: Topology,
    props: dict[str, Any],
    statements: list[dict[str, Any]],
    opts: TemplateOptions,
) -> None:
    """The function's ``Events`` entry and the role's statements for its trigger."""
    from squall.deploy.fanout import check_retrieval

    trigger = declared_trigger(marked)
    if opts.s3_delivery not in S3_DELIVERIES:
        raise SquallError(f"--s3-delivery must be one of {', '.join(S3_DELIVERIES)}")
    check_retrieval(opts.retrieval)
    source = trigger.source if trigger else TriggerSource.KINESIS
    if source is not TriggerSource.KINESIS and opts.retrieval != "polling":
        raise SquallError(
            f"--retrieval {opts.retrieval} is a way to read a Kinesis stream (enhanced fan-out); "
            f"this spout is triggered by {source.upper()}"
        )
    if source is not TriggerSource.S3 and (opts.s3_delivery != "direct" or opts.s3_bucket):
        flag = "--s3-delivery" if opts.s3_delivery != "direct" else "--s3-bucket"
        raise SquallError(f"{flag} is for an s3 spout; this spout is triggered by {source.upper()}")
    if trigger is None or trigger.source is TriggerSource.KINESIS:
        _kinesis(b, topology, trigger, props, statements, opts)
        return
    if opts.stream:
        raise SquallError(
            f"--stream names a Kinesis stream, but the spout is triggered by {trigger.source.upper()}"
        )
    # The real values (not the parameter markers) say what the names do not: a FIFO queue.
    literal = declared_trigger(topology) or trigger
    if trigger.source is TriggerSource.SQS:
        _sqs(b, topology, trigger, literal, props, statements, opts)
    else:
        _s3(b, trigger, props, statements, opts)


def _grant(statements: list[dict[str, Any]], actions: tuple[str, ...], arn: Any) -> None:
    statements.insert(1, {"Effect": "Allow", "Action": list(actions), "Resource": arn})


def _kinesis(
    b: _Builder,
    topology: Topology,
    trigger: LambdaTrigger | None,
    props: dict[str, Any],
    statements: list[dict[str, Any]],
    opts: TemplateOptions,
) -> None:
    from squall.deploy.template import _MARKER, resource_sub

    # Where the topology places the stream (an ARN, the spout's region) is kept, and the stack
    # is ruled to be there: a Lambda trigger reads a stream of its own region only (and a
    # fan-out consumer is registered in the stack's account). Polling read the same-named
    # stream of whatever region the stack was deployed in.
    fanout = opts.retrieval == "fanout"
    spout_stream = trigger.name if trigger else None
    spout_region = trigger.region if trigger else None
    named = opts.stream or spout_stream or ""
    if spout_stream and _MARKER.search(spout_stream):
        if opts.stream:  # it was ignored: the variable's parameter takes it as its default
            _stream_into_variable(b, spout_stream, opts.stream)
        arn = kinesis_stream_arn(spout_stream, spout_region)
    elif named.startswith("arn:"):
        arn = kinesis_stream_arn(named)
    else:
        b.params["StreamName"] = {
            "Type": "String",
            "Description": "Name of the Kinesis stream to consume",
            "AllowedPattern": "[a-zA-Z0-9_.-]+",
        }
        if named and not named.startswith("arn:"):
            b.params["StreamName"]["Default"] = named
        # --stream NAME names a stream of the stack's region; the spout's, one of its region.
        arn = kinesis_stream_arn("${StreamName}", None if opts.stream else spout_region)
    stream_arn = resource_sub(arn)
    _grant(statements, TRIGGER_READS, stream_arn)
    source_arn = stream_arn
    from squall.deploy.fanout import home_assertions

    assertions = home_assertions(arn, opts.retrieval)
    if assertions:
        rule = "StreamInStackRegionAndAccount" if fanout else "StreamInStackRegion"
        b.rules[rule] = {"Assertions": assertions}
    if fanout:
        from squall.deploy.fanout import FANOUT_READS, add_stream_consumer

        source_arn = add_stream_consumer(b, topology, stream_arn)
        _grant(statements, FANOUT_READS, source_arn)
    source: dict[str, Any] = {
        "Stream": source_arn,
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": min(topology.settings.batch_size, MAX_KINESIS_BATCH),
        "MaximumBatchingWindowInSeconds": 1 if opts.batch_window is None else opts.batch_window,
        # squall answers batchItemFailures; Lambda retries from the first failed record.
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "MaximumRetryAttempts": -1,
        "BisectBatchOnFunctionError": False,
        "ParallelizationFactor": 1,
    }
    if opts.on_failure:
        source.update(
            _on_failure(
                b,
                opts,
                statements,
                "the metadata of a batch Lambda gave up on (the records stay in the stream)",
                retries=(10, 10000, "Retries of a failing batch before it is skipped"),
            )
        )
    props["Events"] = {"Stream": {"Type": "Kinesis", "Properties": source}}


def _stream_into_variable(b: _Builder, spout_stream: str, stream: str) -> None:
    """``--stream NAME`` where the spout's stream is a ``${VAR}``: that variable's parameter
    defaults to NAME. Refused where it cannot stand for the stream (an ARN, or a stream written
    as text around the variable)."""
    from squall.deploy.template import _MARKER, param_name

    whole = _MARKER.fullmatch(spout_stream)
    param = b.params.get(param_name(whole.group(1))) if whole else None
    if param is None or stream.startswith("arn:"):
        written = _MARKER.sub(lambda m: "${" + m.group(1) + "}", spout_stream)
        raise SquallError(
            f"--stream {stream}: the spout's stream is written as '{written}': give the stream "
            "as that variable's value when deploying (its template parameter), not --stream"
        )
    param["Default"] = stream


def _on_failure(
    b: _Builder,
    opts: TemplateOptions,
    statements: list[dict[str, Any]],
    what: str,
    *,
    retries: tuple[int, int, str],
) -> dict[str, Any]:
    """The ``--on-failure`` destination: its two parameters, the grant to send to it, and the
    ``MaximumRetryAttempts``/``DestinationConfig`` properties of the event source."""
    kind = _on_failure_kind(opts)
    default, most, description = retries
    b.params["OnFailureDestinationArn"] = {
        "Type": "String",
        "Description": f"ARN of the {kind.upper()} destination that receives {what}",
    }
    b.params["MaximumRetryAttempts"] = {
        "Type": "Number",
        "Default": default,
        "MinValue": 0,
        "MaxValue": most,
        "Description": description,
    }
    _grant_destination(statements, kind)
    return {
        "MaximumRetryAttempts": {"Ref": "MaximumRetryAttempts"},
        "DestinationConfig": {
            "OnFailure": {"Type": kind.upper(), "Destination": {"Ref": "OnFailureDestinationArn"}}
        },
    }


def _on_failure_kind(opts: TemplateOptions) -> str:
    kind = (opts.on_failure or "").lower()
    if kind not in ("sqs", "sns"):
        raise SquallError("--on-failure must be sqs or sns")
    return kind


def _grant_destination(statements: list[dict[str, Any]], kind: str) -> None:
    action = "sqs:SendMessage" if kind == "sqs" else "sns:Publish"
    statements.append(
        {"Effect": "Allow", "Action": [action], "Resource": {"Ref": "OnFailureDestinationArn"}}
    )


def _sqs(
    b: _Builder,
    topology: Topology,
    trigger: LambdaTrigger,
    literal: LambdaTrigger,
    props: dict[str, Any],
    statements: list[dict[str, Any]],
    opts: TemplateOptions,
) -> None:
    from squall.deploy.template import resource_sub

    if opts.on_failure:
        raise SquallError(
            "--on-failure is for Kinesis and S3 triggers: an SQS queue sends messages that keep "
            "failing to its own dead-letter queue (its redrive policy)"
        )
    arn = sqs_queue_arn(trigger.name, trigger.region)
    queue_arn = resource_sub(arn)
    _grant(statements, SQS_TRIGGER_ACTIONS, queue_arn)
    assertions = _queue_home_assertions(arn)
    if assertions:  # else the mapping failed mid-deployment, after the role and the function
        b.rules["QueueInStackRegion"] = {"Assertions": assertions}
    fifo = literal.name.rstrip("/").endswith(".fifo")
    window = opts.batch_window
    if fifo and window:
        raise SquallError("--batch-window: Lambda has no batching window for FIFO queues")
    limit = MAX_SQS_WINDOWED_BATCH if window else MAX_SQS_BATCH
    props["Events"] = {
        "Queue": _sqs_event(b, queue_arn, min(topology.settings.batch_size, limit), props, opts)
    }


#: The region in a queue ARN the template writes (``${AWS::Partition}`` has colons of its own).
_QUEUE_REGION = re.compile(r"^arn:(?:\$\{AWS::Partition\}|[^:]+):sqs:(?P<region>[^:]*):")


def _queue_home_assertions(queue_arn_text: str) -> list[dict[str, Any]]:
    """A rule that the stack is in the queue's region, where its ARN, AWS URL or the spout's
    ``region`` names one: Lambda's SQS event source reads a queue of its own region only (another
    account's is allowed, by the queue's policy)."""
    from squall.deploy.fanout import rule_value

    m = _QUEUE_REGION.match(queue_arn_text)
    expected = rule_value(m["region"]) if m else None
    if expected is None:
        return []
    shown = expected if isinstance(expected, str) else "parameter " + expected["Ref"]
    return [
        {
            "Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, expected]},
            "AssertDescription": f"deploy this stack in the queue's region ({shown}): a Lambda "
            "SQS trigger reads a queue of its own region only",
        }
    ]


def _sqs_event(
    b: _Builder, queue_arn: Any, batch_size: Any, props: dict[str, Any], opts: TemplateOptions
) -> dict[str, Any]:
    """An SQS event source answered per message, and the function's timeout parameter."""
    source: dict[str, Any] = {
        "Queue": queue_arn,
        "BatchSize": batch_size,
        # squall answers batchItemFailures by message id: only those messages come back.
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    if opts.batch_window:
        source["MaximumBatchingWindowInSeconds"] = opts.batch_window
    # Lambda refuses a mapping whose function may run longer than the queue hides a message.
    b.params["FunctionTimeout"] = {
        "Type": "Number",
        "Default": 30,
        "MinValue": 1,
        "MaxValue": 900,
        "Description": "Function timeout in seconds: at most the queue's visibility timeout "
        "(AWS advises a visibility of six times this)",
    }
    props["Timeout"] = {"Ref": "FunctionTimeout"}
    return {"Type": "SQS", "Properties": source}


def _s3(
    b: _Builder,
    trigger: LambdaTrigger,
    props: dict[str, Any],
    statements: list[dict[str, Any]],
    opts: TemplateOptions,
) -> None:
    from squall.deploy.template import resource_sub

    # Written as a name, not a reference to the bucket: the bucket's notification depends on
    # the function, which depends on this role.
    statements.insert(1, s3_list_statement(trigger))
    _grant(statements, S3_TRIGGER_ACTIONS, resource_sub(s3_object_arn(trigger)))
    if opts.batch_window is not None and opts.s3_delivery != "sqs":
        raise SquallError(
            f"--batch-window is for a Kinesis or SQS event source; S3 notifications delivered "
            f"{'by S3' if opts.s3_delivery == 'direct' else 'by EventBridge'} invoke the function "
            "per event (with --s3-delivery sqs the queue's batching window applies)"
        )
    if opts.s3_delivery == "sqs":
        _s3_through_sqs(b, trigger, props, statements, opts)
        return
    if opts.s3_delivery == "eventbridge":
        _s3_through_eventbridge(b, trigger, props, opts)
    else:
        _s3_direct(b, trigger, props, opts)
    if opts.on_failure:
        props["EventInvokeConfig"] = _on_failure(
            b,
            opts,
            statements,
            "an S3 event Lambda gave up on (the objects stay in the bucket)",
            retries=(
                MAX_ASYNC_RETRIES,
                MAX_ASYNC_RETRIES,
                "Retries of a failing S3 event before it goes to the destination",
            ),
        )


def _s3_direct(
    b: _Builder, trigger: LambdaTrigger, props: dict[str, Any], opts: TemplateOptions
) -> None:
    """S3 invokes the function: SAM's S3 event on a bucket of the template, or the permission
    and the notification to add to an existing bucket."""
    from squall.deploy.template import resource_sub, value_sub

    rules = [
        {"Name": name, "Value": value_sub(value)}
        for name, value in (("prefix", trigger.prefix), ("suffix", trigger.suffix))
        if value
    ]
    if opts.s3_bucket in (None, "create"):
        _source_bucket(b, trigger)
        source: dict[str, Any] = {"Bucket": {"Ref": "SourceBucket"}, "Events": S3_EVENTS}
        if rules:
            source["Filter"] = {"S3Key": {"Rules": rules}}
        props["Events"] = {"Objects": {"Type": "S3", "Properties": source}}
    elif opts.s3_bucket == "existing":
        from squall.deploy.snapstart import alias_resource

        # With an alias (SnapStart, provisioned concurrency) S3 invokes the alias, as SAM makes
        # a bucket of the template do: the unqualified function is $LATEST.
        alias = alias_resource(opts)
        b.resources["SourceBucketInvokes"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": alias or "Function"},
                "Principal": "s3.amazonaws.com",
                "SourceArn": resource_sub(s3_bucket_arn(trigger.name)),
                "SourceAccount": {"Ref": "AWS::AccountId"},
            },
        }
        b.outputs["BucketNotification"] = {
            "Description": "Add to the bucket's notification configuration "
            "(aws s3api put-bucket-notification-configuration replaces the whole of it)",
            "Value": _notification(
                trigger,
                "LambdaFunctionConfigurations",
                "LambdaFunctionArn",
                f"${{{alias}}}" if alias else "${Function.Arn}",
            ),
        }
    else:
        raise SquallError("--s3-bucket must be create or existing")


def _source_bucket(b: _Builder, trigger: LambdaTrigger, **properties: Any) -> None:
    """The spout's bucket, declared by the template (``--s3-bucket create``)."""
    from squall.deploy.template import value_sub

    b.resources["SourceBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",  # the data outlives the stack
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": value_sub(trigger.name),
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            **properties,
        },
    }


def _s3_through_sqs(
    b: _Builder,
    trigger: LambdaTrigger,
    props: dict[str, Any],
    statements: list[dict[str, Any]],
    opts: TemplateOptions,
) -> None:
    """An existing queue fed by the bucket (or by an SNS topic, or an EventBridge rule): an SQS
    event answered per message. The bucket is not touched: the queue's policy must let S3 (or
    the topic) send first, so its notification is an output to add."""
    if opts.on_failure:
        raise SquallError(
            "--on-failure: with --s3-delivery sqs, messages that keep failing go to the queue's "
            "own dead-letter queue (its redrive policy)"
        )
    if opts.s3_bucket == "create":
        raise SquallError(
            "--s3-bucket create: with --s3-delivery sqs the template leaves the bucket alone (the "
            "queue's policy must allow S3 first); it outputs the notification to add to it"
        )
    b.params["NotificationQueueArn"] = {
        "Type": "String",
        "Description": "ARN of the SQS queue the bucket's object-created notifications arrive "
        "in (from S3, through SNS, or from EventBridge)",
        "AllowedPattern": "arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,80}(\\.fifo)?",
    }
    queue = {"Ref": "NotificationQueueArn"}
    _grant(statements, SQS_TRIGGER_ACTIONS, queue)
    most = MAX_SQS_WINDOWED_BATCH if opts.batch_window else MAX_SQS_BATCH
    b.params["ObjectsPerInvocation"] = {
        "Type": "Number",
        "Default": 1,
        "MinValue": 1,
        "MaxValue": most,
        "Description": "Messages (objects, usually one each) per invocation: every object is "
        "read whole within FunctionTimeout",
    }
    props["Events"] = {
        "Notifications": _sqs_event(b, queue, {"Ref": "ObjectsPerInvocation"}, props, opts)
    }
    b.outputs["BucketNotification"] = {
        "Description": "For S3 -> SQS: add to the bucket's notification configuration (aws "
        "s3api put-bucket-notification-configuration replaces the whole of it)",
        "Value": _notification(
            trigger, "QueueConfigurations", "QueueArn", "${NotificationQueueArn}"
        ),
    }


def _s3_through_eventbridge(
    b: _Builder, trigger: LambdaTrigger, props: dict[str, Any], opts: TemplateOptions
) -> None:
    """A rule on the default event bus for the bucket's "Object Created" events under the
    prefix; the bucket sends its events to EventBridge once that is turned on for it."""
    from squall.deploy.template import value_sub

    detail: dict[str, Any] = {"bucket": {"name": [value_sub(trigger.name)]}}
    prefix, suffix = trigger.prefix, trigger.suffix
    if prefix and suffix:  # one wildcard; a '*' or a backslash of the key's own is escaped
        escaped = (v.replace("\\", "\\\\").replace("*", "\\*") for v in (prefix, suffix))
        detail["object"] = {"key": [{"wildcard": value_sub("*".join(escaped))}]}
    elif prefix or suffix:
        match = {"prefix": prefix} if prefix else {"suffix": suffix}
        detail["object"] = {"key": [{k: value_sub(v) for k, v in match.items()}]}
    pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail}
    props["Events"] = {
        "ObjectCreated": {"Type": "EventBridgeRule", "Properties": {"Pattern": pattern}}
    }
    if opts.s3_bucket in (None, "create"):
        _source_bucket(
            b,
            trigger,
            NotificationConfiguration={"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
        )
    elif opts.s3_bucket == "existing":
        b.outputs["BucketNotification"] = {
            "Description": "Turns on EventBridge delivery for the bucket: add to its notification "
            "configuration (aws s3api put-bucket-notification-configuration replaces the whole of it)",
            "Value": json.dumps({"EventBridgeConfiguration": {}}),
        }
    else:
        raise SquallError("--s3-bucket must be create or existing")


def _notification(trigger: LambdaTrigger, kind: str, key: str, arn: str) -> dict[str, Any]:
    """The bucket notification (``kind``: ``LambdaFunctionConfigurations``, ``QueueConfigurations``)
    that sends new objects to ``arn`` (a ``Fn::Sub`` reference), as JSON (``Fn::Sub``)."""
    from squall.deploy.template import resource_sub

    config: dict[str, Any] = {key: arn, "Events": S3_EVENTS}
    rules = [
        {"Name": name, "Value": value}
        for name, value in (("prefix", trigger.prefix), ("suffix", trigger.suffix))
        if value
    ]
    if rules:
        config["Filter"] = {"Key": {"FilterRules": rules}}
    return resource_sub(json.dumps({kind: [config]}))
