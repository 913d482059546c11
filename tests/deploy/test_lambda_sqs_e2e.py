"""The kiosk kitchen as a Lambda SQS consumer under AWS's runtime client (awslambdaric), on moto.

Orders go into a FIFO queue with the sqs sink; the messages are handed to the function as the SQS
event source mapping would; the function answers with the message ids to retry, keeps its
warehouse rows once, and puts invalid orders on a durable dead-letter queue.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from squall.testing import records_from, run_topology
from tests.lambda_runtime import LambdaFunction
from tests.moto_standin import unique

CONSUMER = """
name: kitchen
resources: {{db: {{url: "sqlite:///{db}"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: order_id}}
  - {{id: validate, type: schema, schema: {{type: object, required: [order_id, kiosk_id]}}}}
sinks:
  - id: orders
    type: warehouse
    resource: db
    table: orders
    columns: {{order_id: order_id, kiosk: kiosk_id}}
  - {{id: flaky, type: 'squall.testing:FaultySink'}}
  - {{id: dlq, type: dead_letter_sqs, queue: "{dlq}", endpoint_url: "{endpoint}"}}
streams:
  - {{from: validate, stream: invalid, to: dlq}}
"""

PRODUCER = """
name: kiosk
spout: {{type: stdin}}
bolts: [{{id: decode, type: json, event_id_field: order_id}}]
sinks:
  - {{id: queue, type: sqs, queue: "{queue}", endpoint_url: "{endpoint}", message_group: kiosk_id}}
"""


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    """The event Lambda's SQS event source mapping builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {k: v for k, v in m.get("Attributes", {}).items()},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@pytest.mark.e2e
def test_kitchen_lambda_consumes_a_fifo_queue_with_partial_batch_responses(
    moto_server,  # noqa: F811 - the fixture
    tmp_path: Path,
):
    sqs = moto_server.client("sqs")
    name = unique("orders") + ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq = sqs.create_queue(QueueName=unique("kitchen-dlq"))["QueueUrl"]
    orders = [
        {"order_id": "o1", "kiosk_id": "k1"},
        {"order_id": "o2", "kiosk_id": "k2"},
        {"order_id": "o3", "kiosk_id": "k1", "sink_fail": True},
        {"order_id": "o4"},
        {"order_id": "o5", "kiosk_id": "k1"},
        {"order_id": "o6", "kiosk_id": "k2"},
    ]
    order_without_kiosk = orders[3]
    # The producer side: the sqs sink; an order without a kiosk has no group and is rejected there,
    # so it is sent to the kitchen by hand (as another producer might) to exercise the dead letter.
    # Run as a producer's engine: the rejected order fails alone (its later orders are not held
    # back behind it, as they would be from a source that delivers them again).
    run_topology(
        PRODUCER.format(queue=url, endpoint=moto_server.endpoint),
        records_from(orders),
        redelivers=False,
    )
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(order_without_kiosk),
        MessageGroupId="k3",
        MessageDeduplicationId="o4",
    )
    received = []
    while msgs := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
    ).get("Messages"):
        received += msgs
    assert len(received) == 6

    db = tmp_path / "kitchen.db"
    (tmp_path / "kitchen.yaml").write_text(
        CONSUMER.format(db=db, dlq=dlq, endpoint=moto_server.endpoint)
    )
    (tmp_path / "kitchen_app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\nhandler = make_handler('kitchen.yaml')\n"
    )
    fn = LambdaFunction("kitchen_app.handler", tmp_path)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
    try:
        first = fn.invoke(sqs_event(received, arn))
        retry = [
            m
            for m in received
            if m["MessageId"] in {f["itemIdentifier"] for f in first["batchItemFailures"]}
        ]
        second = fn.invoke(sqs_event(retry, arn))  # Lambda sends the reported messages again
    finally:
        fn.stop()

    by_id = {m["MessageId"]: json.loads(m["Body"])["order_id"] for m in received}
    # o3 failed in the flaky sink: it and the later order of its group (o5) are retried, in order
    assert [by_id[f["itemIdentifier"]] for f in first["batchItemFailures"]] == ["o3", "o5"]
    assert [by_id[f["itemIdentifier"]] for f in second["batchItemFailures"]] == ["o3", "o5"]
    rows = (
        sqlite3.connect(db)
        .execute("select order_id, kiosk from orders order by order_id")
        .fetchall()
    )
    # o3 failed in the flaky sink (written before the warehouse's transaction): neither it nor o5
    # after it in its group is written to the warehouse — they come again, in order, until o3
    # goes through; the other group's orders are written once
    assert rows == [("o1", "k1"), ("o2", "k2"), ("o6", "k2")]
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    docs = [json.loads(m["Body"]) for m in dead]
    assert [(d["component"], json.loads(d["record"])["order_id"]) for d in docs] == [
        ("validate", "o4")
    ]
