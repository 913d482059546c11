"""The AWS-writing sinks declare what they call: `squall package` grants exactly that.

Each sink below is run against moto with every botocore call recorded; what it called must be
what its `aws_permissions` declares (IAM authorizes SendMessageBatch as sqs:SendMessage), on the
resource it wrote to. Without declarations the template's role could not write the lake or a
durable dead letter: every such write was AccessDenied once deployed.
"""

from __future__ import annotations

import pytest

from squall.deploy.template import component_permissions
from squall.errors import BatchFailed
from squall.testing import records_from, run_topology
from squall.topology.checkpoint import Checkpointer
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.moto_standin import unique
from tests.sinks.test_s3_rolling_failed_batch import _FlakyStore

#: IAM's action for an API operation, where the two differ (batch calls are authorized singly).
IAM_ACTION = {"sqs:SendMessageBatch": "sqs:SendMessage"}
PARTITION = "arn:${AWS::Partition}"


def test_aws_sinks_and_durable_dead_letters_declare_the_calls_they_make(moto_server, called):  # noqa: F811
    s3, sqs = moto_server.client("s3"), moto_server.client("sqs")
    bucket, queue, dlq, stream, delivery = (unique(x) for x in ("lake", "out", "dlq", "dls", "fh"))
    s3.create_bucket(Bucket=bucket)
    sqs.create_queue(QueueName=queue)
    sqs.create_queue(QueueName=dlq)
    kinesis = moto_server.client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    moto_server.client("firehose").create_delivery_stream(
        DeliveryStreamName=delivery,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/fh",
            "BucketARN": f"arn:aws:s3:::{bucket}",
        },
    )
    at = f'endpoint_url: "{moto_server.endpoint}"'
    text = f"""
name: perms
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [ts]}}}}
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, prefix: events/, time_field: ts, {at}}}
  - {{id: queue, type: sqs, queue: {queue}, {at}}}
  - {{id: fh, type: firehose, delivery_stream: {delivery}, {at}}}
  - {{id: dl_s3, type: dead_letter_s3, bucket: {bucket}, {at}}}
  - {{id: dl_sqs, type: dead_letter_sqs, queue: {dlq}, {at}}}
  - {{id: dl_kinesis, type: dead_letter_kinesis, stream: {stream}, {at}}}
"""
    run_topology(text, records_from([{"ts": "2026-11-03T10:00:00Z"}, {"no": "ts"}]))
    declared = component_permissions(load_text(text))
    # (the lake deletes only a failed batch's objects: the test below)
    assert {IAM_ACTION.get(c, c) for c in called} | {"s3:DeleteObject"} == {
        a for p in declared for a in p.actions
    }
    region, account = "${AWS::Region}", "${AWS::AccountId}"
    assert {p.resource: set(p.actions) for p in declared} == {
        f"{PARTITION}:s3:::{bucket}/events/*": {"s3:PutObject", "s3:DeleteObject"},
        f"{PARTITION}:s3:::{bucket}/dead-letters/*": {"s3:PutObject"},
        f"{PARTITION}:sqs:{region}:{account}:{queue}": {"sqs:GetQueueUrl", "sqs:SendMessage"},
        f"{PARTITION}:sqs:{region}:{account}:{dlq}": {"sqs:GetQueueUrl", "sqs:SendMessage"},
        f"{PARTITION}:firehose:{region}:{account}:deliverystream/{delivery}": {
            "firehose:PutRecordBatch"
        },
        f"{PARTITION}:kinesis:{region}:{account}:stream/{stream}": {
            "kinesis:PutRecords",
            "kinesis:DescribeStreamSummary",
        },
    }


def test_a_queue_given_by_its_url_needs_no_get_queue_url():
    text = """
name: perms-url
spout: {type: stdin}
sinks:
  - {id: queue, type: sqs, queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"}
"""
    [perm] = component_permissions(load_text(text))
    assert perm.actions == ("sqs:SendMessage",)
    assert perm.resource == f"{PARTITION}:sqs:eu-west-1:123456789012:orders"


@pytest.mark.parametrize("roll", ["", ", roll_seconds: 60"], ids=["per-batch", "rolling"])
def test_a_lake_declares_the_delete_of_a_failed_batchs_objects(moto_server, called, roll):  # noqa: F811
    """hC: the s3 sink deletes the objects a failed batch put (rolling: its release put alone,
    which a Lambda's engine makes after every batch); here the checkpoint store is down after
    the write. DeleteObject is declared with PutObject, on the prefix."""
    s3 = moto_server.client("s3")
    bucket = unique("lake")
    s3.create_bucket(Bucket=bucket)
    text = f"""
name: perms-roll
resources: {{db: {{url: "sqlite:///:memory:"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, prefix: events/, time_field: ts{roll},
     endpoint_url: "{moto_server.endpoint}"}}
"""
    topo = load_text(text)
    resources = Resources.for_topology(topo)
    store = _FlakyStore(resources.sql("db"), topo.name)
    store.down = 1
    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    with engine, pytest.raises(BatchFailed, match="checkpoint store down"):
        engine.process(records_from([{"ts": "2026-11-03T10:00:00Z"}]))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # put, then deleted
    declared = component_permissions(load_text(text))
    assert {c for c in called if c.startswith("s3:")} == {"s3:PutObject", "s3:DeleteObject"}
    assert {p.resource: set(p.actions) for p in declared} == {
        f"{PARTITION}:s3:::{bucket}/events/*": {"s3:PutObject", "s3:DeleteObject"}
    }
