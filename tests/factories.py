"""Event factories: Lambda Kinesis events shaped as AWS sends them."""

from __future__ import annotations

import base64
from typing import Any

import orjson


def kinesis_lambda_event(payloads: list[Any], *, shard: str = "shardId-000000000000", stream: str = "pistats",
                         start: int = 49590338271490256608559692538361571095921575989136588800) -> dict[str, Any]:
    """A Lambda event from a Kinesis event source mapping; bytes pass as they are, others become JSON."""
    records = []
    for i, p in enumerate(payloads):
        data = p if isinstance(p, bytes) else orjson.dumps(p)
        seq = str(start + i)
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": f"pk-{i % 3}", "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1762192800.123},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard}:{seq}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/squall",
            "awsRegion": "us-east-1", "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
        })
    return {"Records": records}
