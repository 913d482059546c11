"""The s3 spout's `suffix`: only the objects whose keys end with it are input — in a local run's
listing, in the Lambda handler's scope, and in the template's notification filter and read grant.

docs/deploy.md described "ending in `suffix`, when the spout declares one", and the trigger code
handled one, but the `s3` spout had no such option: `suffix: .jsonl` was refused as an unknown
key, and a landing prefix that also gets `_SUCCESS` markers or CSV files had every line of them
dead-lettered as invalid JSON.
"""

from __future__ import annotations

from pathlib import Path

from squall.deploy.lambda_consumer import make_handler
from squall.deploy.local import LocalRunner
from squall.testing import MemorySink
from squall.topology.loader import load_text
from tests.deploy.test_sqs_s3_sources import s3_lambda_event, topology_text, write_topology
from tests.deploy.test_template import template_of, topology_file
from tests.moto_standin import unique


def landing(moto_server) -> tuple[object, str]:
    s3 = moto_server.client("s3")
    bucket = unique("suffix")
    s3.create_bucket(Bucket=bucket)
    for key in ("in/a.jsonl", "in/_SUCCESS", "in/b.csv", "in/c.jsonl"):
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"n": 1}\n')
    return s3, bucket


def test_a_local_run_lists_only_the_keys_ending_with_the_suffix(moto_server):
    _, bucket = landing(moto_server)
    store = unique("suffix")
    spout = (
        f"{{type: s3, bucket: {bucket}, prefix: in/, suffix: .jsonl, "
        f'endpoint_url: "{moto_server.endpoint}"}}'
    )
    LocalRunner(load_text(topology_text(spout, store))).run()
    assert [ev.meta.shard_id for ev in MemorySink.stores[store]] == ["in/a.jsonl", "in/c.jsonl"]
    assert MemorySink.stores.get(f"{store}-dlq", []) == []


def test_the_lambda_handler_skips_an_object_without_the_suffix(moto_server, tmp_path: Path):
    _, bucket = landing(moto_server)
    store = unique("suffix")
    spout = (
        f"{{type: s3, bucket: {bucket}, prefix: in/, suffix: .jsonl, "
        f'endpoint_url: "{moto_server.endpoint}"}}'
    )
    handler = make_handler(write_topology(tmp_path, spout, store))
    assert handler(s3_lambda_event(bucket, "in/b.csv"), None)["skipped"] == 1
    assert handler(s3_lambda_event(bucket, "in/a.jsonl"), None)["records"] == 1
    assert [ev.meta.shard_id for ev in MemorySink.stores[store]] == ["in/a.jsonl"]


def test_the_template_filters_the_notification_and_grants_reads_on_the_suffix(tmp_path: Path):
    t = template_of(
        topology_file(tmp_path, "{type: s3, bucket: etl-logs, prefix: logs/, suffix: .jsonl.gz}"),
        "consumer",
    )
    [event] = t["Resources"]["Function"]["Properties"]["Events"].values()
    rules = event["Properties"]["Filter"]["S3Key"]["Rules"]
    assert {r["Name"]: r["Value"] for r in rules} == {"prefix": "logs/", "suffix": ".jsonl.gz"}
    statements = t["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    reads = [s for s in statements["Statement"] if "s3:GetObject" in s["Action"]]
    assert [s["Resource"]["Fn::Sub"] for s in reads] == [
        "arn:${AWS::Partition}:s3:::etl-logs/logs/*.jsonl.gz"
    ]
