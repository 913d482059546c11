"""Producer Lambda → Kinesis → consumer Lambda → warehouse, in AWS's own Python runtime client.

Both functions run under awslambdaric (tests/lambda_runtime.py) with the same bolts. The Kinesis
event source mapping is not emulated by anything here, so the test applies its documented rule
itself: with ReportBatchItemFailures, Lambda retries a batch from the lowest reported sequence
number.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from tests.factories import api_gateway_event
from tests.lambda_runtime import LambdaFunction

pytestmark = pytest.mark.e2e

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)

PRODUCER = """
name: producer
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: validate, type: schema, schema: {{type: object, required: [message_id, event_type, device_token]}}}}
sinks:
  - {{id: stream, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}", partition_key: device_token}}
"""

CONSUMER = """
name: consumer
resources:
  warehouse: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: outage, type: 'squall.testing:FaultyBolt', transient_failures: 5}}
  - {{id: geo, type: geo, ip_field: request.source_ip}}
  - {{id: device, type: device, ua_field: request.user_agent}}
sinks:
  - id: events
    type: warehouse
    resource: warehouse
    table: events
    columns: {{event_type: event_type, country: geo.country_code, device_class: device.device_class}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def lambda_event(records: list[dict], shard: str, stream: str) -> dict:
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode(),
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{r['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}",
            }
            for r in records
        ]
    }


def deliver(consumer: LambdaFunction, records: list[dict], shard: str, stream: str) -> int:
    """The event source mapping's retry rule; returns how many invocations the shard took."""
    pending, invocations = records, 0
    while pending:
        invocations += 1
        assert invocations <= 10, "the batch never succeeded"
        failures = consumer.invoke(lambda_event(pending, shard, stream))["batchItemFailures"]
        if not failures:
            break
        lowest = min(int(f["itemIdentifier"]) for f in failures)
        pending = [r for r in pending if int(r["SequenceNumber"]) >= lowest]
    return invocations


def test_producer_and_consumer_lambdas_run_the_same_bolts_end_to_end(
    kinesis, kinesis_mock, make_stream, tmp_path: Path
):
    stream = make_stream(2, prefix="lambda")
    db, dlq = tmp_path / "w.db", tmp_path / "dlq.jsonl"
    (tmp_path / "producer.yaml").write_text(
        PRODUCER.format(stream=stream, endpoint=kinesis_mock.endpoint)
    )
    (tmp_path / "consumer.yaml").write_text(CONSUMER.format(db=db, dlq=dlq))
    (tmp_path / "producer_app.py").write_text(
        "from squall.deploy.lambda_producer import make_handler\nhandler = make_handler('producer.yaml')\n"
    )
    (tmp_path / "consumer_app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\nhandler = make_handler('consumer.yaml')\n"
    )

    producer = LambdaFunction("producer_app.handler", tmp_path)
    consumer = LambdaFunction("consumer_app.handler", tmp_path)
    try:
        events = [
            {"message_id": f"m{i}", "event_type": "page_view", "device_token": f"t{i % 7}"}
            for i in range(40)
        ]
        events.append({"message_id": "no-token", "event_type": "click"})
        resp = producer.invoke(
            api_gateway_event(json.dumps(events), source_ip="81.2.69.142", user_agent=IPHONE)
        )
        assert resp["statusCode"] == 202, resp
        assert json.loads(resp["body"]) == {
            "accepted": 40,
            "rejected": [
                {
                    "index": 40,
                    "reason": "validate: schema: $: 'device_token' is a required property",
                }
            ],
        }
        # a client retry of the same request: accepted again, stored once downstream (event ids)
        assert (
            producer.invoke(api_gateway_event(json.dumps(events[:5]), user_agent=IPHONE))[
                "statusCode"
            ]
            == 202
        )

        invocations = []
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            it = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records = kinesis.get_records(ShardIterator=it, Limit=1000)["Records"]
            if records:
                invocations.append(deliver(consumer, records, shard["ShardId"], stream))
    finally:
        producer.stop()
        consumer.stop()

    # The outage (5 failing calls, 2 attempts per invocation) spans three invocations of one warm
    # process: the engine and its resources were set up once, at init.
    assert invocations[0] == 3 and all(n == 1 for n in invocations[1:])
    rows = (
        sqlite3.connect(db)
        .execute(
            "select count(*), count(distinct event_id), min(country), max(country), min(device_class) from events"
        )
        .fetchone()
    )
    assert rows == (40, 40, "GB", "GB", "mobile")
    assert dlq.read_text() == ""  # nothing was dead-lettered
