"""Every line a runner logs about a batch names the topology, and the shard where there is one:
the batch's own lines, and the runner's lines about its failure (which are written after it)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from squall.deploy.local import LocalRunner
from squall.observability.logs import configure
from squall.topology.loader import load_text
from tests.deploy.test_kcl_processor import processor
from tests.deploy.test_lambda_consumer import handler_for
from tests.factories import KclCheckpointer, kcl_process_records, kinesis_lambda_event


@contextmanager
def json_lines() -> Iterator[list[dict]]:
    stream = io.StringIO()
    configure("json", level=logging.INFO, stream=stream)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        configure("text", level=logging.WARNING, stream=sys.stderr)
        lines += [json.loads(x) for x in stream.getvalue().splitlines()]


def test_the_local_runners_batch_failure_line_names_the_topology(tmp_path: Path):
    topo = load_text(
        "name: failing\nspout: {type: 'squall.testing:ListSpout', records: [{n: 1}]}\n"
        "settings: {retry: {attempts: 1}}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: rows, type: 'squall.testing:FaultySink', transient_failures: 1}]\n",
        base_dir=tmp_path,
    )
    with json_lines() as lines:
        report = LocalRunner(topo).run()
    assert report.error is not None
    [line] = [x for x in lines if "batch failed" in x["message"]]
    assert line["logger"] == "squall.local" and line["topology"] == "failing", line


def test_the_kcl_processors_retry_and_failure_lines_name_topology_and_shard(tmp_path: Path):
    p, _ = processor(tmp_path, transient=1)
    with json_lines() as lines:
        kcl_process_records([{"n": 1}]).dispatch(KclCheckpointer(), p)
    [line] = [x for x in lines if "retrying the batch" in x["message"]]
    assert (line["topology"], line["shard"]) == ("kcl-test", p.shard_id), line


def test_a_lambda_invocations_lines_name_the_topology_and_the_shard(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=False)
    event = kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": "bad"}])
    with json_lines() as lines:
        handler(event)
    shard = event["Records"][0]["eventID"].split(":")[0]
    failed = [x for x in lines if x["logger"] == "squall.lambda" and "failed in" in x["message"]]
    invocation = [x for x in lines if x["logger"] == "squall.invocation"]
    assert failed and invocation
    for line in failed + invocation:
        assert (line["topology"], line["shard"]) == ("lambda-test", shard), line
