"""The Lambda consumer's EMF lines and invocation log line, under AWS's own runtime client (awslambdaric)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.lambda_runtime import LambdaFunction

pytestmark = pytest.mark.e2e

CONSUMER = """
name: metered-lambda
resources:
  warehouse: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: events, type: warehouse, resource: warehouse, table: events, columns: {{n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def event(payloads: list, first_seq: int, arrived: datetime) -> dict:
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "pk",
                    "sequenceNumber": str(first_seq + i),
                    "data": base64.b64encode(
                        p if isinstance(p, bytes) else json.dumps(p).encode()
                    ).decode(),
                    "approximateArrivalTimestamp": arrived.timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{first_seq + i}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                "awsRegion": "us-east-1",
            }
            for i, p in enumerate(payloads)
        ]
    }


def emf_documents(log: str) -> list[dict]:
    """EMF lines of the log; a metric recorded once in a document (Powertools writes [v]) becomes v."""
    docs = []
    for line in log.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            d = json.loads(line)
            for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                assert len(d[m["Name"]]) == 1, d  # one batch per invocation
                d[m["Name"]] = d[m["Name"]][0]
            docs.append(d)
    return docs


def wait_for(fn, what: str, log, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"no {what}:\n{log()[-3000:]}")


def test_each_invocation_prints_emf_documents_and_one_log_line_matching_its_outcomes(
    tmp_path: Path,
):
    (tmp_path / "consumer.yaml").write_text(
        CONSUMER.format(db=tmp_path / "w.db", dlq=tmp_path / "dlq.jsonl")
    )
    (tmp_path / "consumer_app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\nhandler = make_handler('consumer.yaml')\n"
    )
    fn = LambdaFunction(
        "consumer_app.handler",
        tmp_path,
        {
            "PYTHONUNBUFFERED": "1",
            "SQUALL_LOG_FORMAT": "json",
            "POWERTOOLS_METRICS_NAMESPACE": "squall-test",
        },
    )
    try:
        arrived = datetime.now(UTC) - timedelta(seconds=30)
        first = [
            {"id": "a", "n": 1},
            b"not json",
            {"id": "b", "n": 2, "fail": "bad"},
            {"id": "c", "n": 3},
        ]
        assert fn.invoke(event(first, 100, arrived)) == {"batchItemFailures": []}
        assert fn.invoke(event([{"id": "d", "n": 4}, {"id": "e", "n": 5}], 200, arrived)) == {
            "batchItemFailures": []
        }

        def topology_docs():
            docs = [d for d in emf_documents(fn.log()) if "Topology" in d and "Component" not in d]
            return docs if len(docs) >= 2 else None

        docs = wait_for(topology_docs, "EMF documents of two invocations", fn.log)
        lines = wait_for(
            lambda: (
                [
                    json.loads(x)
                    for x in fn.log().splitlines()
                    if x.startswith("{") and '"squall.invocation"' in x
                ]
                or None
            ),
            "invocation log lines",
            fn.log,
        )
    finally:
        fn.stop()
    everything = emf_documents(fn.log())
    cold = [d for d in everything if "ColdStart" in d]
    assert (
        len(cold) == 1 and cold[0]["function_name"] == "consumer_app"
    )  # the first invocation only
    one, two = docs
    for d in (one, two):
        [directive] = d["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "squall-test"
        assert sorted(directive["Dimensions"][0]) == ["Topology", "service"]
        assert d["Topology"] == "metered-lambda"
        assert d["IteratorAge"] >= 30_000 and d["BatchDuration"] > 0 and d["BatchesOk"] == 1
    assert (one["RecordsCommitted"], one["RecordsDeadLettered"], one["RecordsFiltered"]) == (
        2,
        2,
        0,
    )
    assert (two["RecordsCommitted"], two["RecordsDeadLettered"]) == (2, 0)
    components = {(d["Component"], d["RecordsIn"]) for d in everything if "Component" in d}
    assert ("decode", 4) in components and ("chaos", 3) in components and ("dlq", 2) in components
    assert ("events", 2) in components and ("decode", 2) in components
    first_line, second_line = lines
    assert first_line["level"] == "INFO" and first_line["topology"] == "metered-lambda"
    assert (first_line["records"], first_line["committed"], first_line["dead_lettered"]) == (
        4,
        2,
        2,
    )
    assert (first_line["sequence_first"], first_line["sequence_last"]) == ("100", "103")
    assert first_line["iterator_age_ms"] >= 30_000
    assert (second_line["committed"], second_line["batch_id"]) == (2, 2)
