"""Event factories: Lambda Kinesis events shaped as AWS sends them."""

from __future__ import annotations

import base64
from typing import Any

import orjson


def kinesis_lambda_event(
    payloads: list[Any],
    *,
    shard: str = "shardId-000000000000",
    stream: str = "pistats",
    start: int = 49590338271490256608559692538361571095921575989136588800,
) -> dict[str, Any]:
    """A Lambda event from a Kinesis event source mapping; bytes pass as they are, others become JSON."""
    records = []
    for i, p in enumerate(payloads):
        data = p if isinstance(p, bytes) else orjson.dumps(p)
        seq = str(start + i)
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": f"pk-{i % 3}",
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": 1762192800.123,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/squall",
                "awsRegion": "us-east-1",
                "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
            }
        )
    return {"Records": records}


def api_gateway_event(
    body: str | bytes,
    *,
    version: int = 1,
    source_ip: str = "81.2.69.142",
    user_agent: str = "pistats-js/3.3.0",
    method: str = "POST",
    gzip_body: bool = False,
    request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
) -> dict[str, Any]:
    """An API Gateway proxy event: REST API (payload v1) or HTTP API (payload v2)."""
    import gzip as _gzip

    raw = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/json", "User-Agent": user_agent}
    if gzip_body:
        raw = _gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    b64 = gzip_body or isinstance(body, bytes)
    payload = base64.b64encode(raw).decode() if b64 else raw.decode()
    if version == 2:
        return {
            "version": "2.0",
            "routeKey": "POST /events",
            "rawPath": "/events",
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {
                "requestId": request_id,
                "timeEpoch": 1762192800123,
                "http": {
                    "method": method,
                    "path": "/events",
                    "sourceIp": source_ip,
                    "userAgent": user_agent,
                },
            },
            "body": payload,
            "isBase64Encoded": b64,
        }
    return {
        "resource": "/events",
        "path": "/events",
        "httpMethod": method,
        "headers": headers,
        "requestContext": {
            "requestId": request_id,
            "requestTimeEpoch": 1762192800123,
            "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        },
        "body": payload,
        "isBase64Encoded": b64,
    }


def kcl_message(doc: dict[str, Any]) -> Any:
    """A MultiLangDaemon message decoded exactly as amazon-kclpy decodes the protocol line."""
    import json

    from amazon_kclpy import dispatch

    return json.loads(json.dumps(doc), object_hook=dispatch.message_decode)


def kcl_initialize(shard: str = "shardId-000000000001") -> Any:
    return kcl_message(
        {
            "action": "initialize",
            "shardId": shard,
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        }
    )


def kcl_record(payload: Any, seq: int) -> dict[str, Any]:
    """One record of a processRecords message as the daemon writes it; bytes pass as they are,
    other payloads become JSON."""
    return {
        "action": "record",
        "data": base64.b64encode(
            payload if isinstance(payload, bytes) else orjson.dumps(payload)
        ).decode(),
        "partitionKey": "pk",
        "sequenceNumber": str(seq),
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1762192800123,
    }


def kcl_process_records(payloads: list[Any], start: int = 100) -> Any:
    """A processRecords message; bytes pass as they are, other payloads become JSON."""
    records = [kcl_record(p, start + i) for i, p in enumerate(payloads)]
    return kcl_message({"action": "processRecords", "millisBehindLatest": 0, "records": records})


class KclCheckpointer:
    """Records checkpoint calls the way the daemon would receive them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        self.calls.append((sequence_number, sub_sequence_number))
