"""Each runner feeds its recorder: the KCL's MillisBehindLatest, the Lambda invocation's line and EMF."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
from pathlib import Path

import orjson

from squall.observability.logs import JsonFormatter, configure
from tests.deploy.test_kcl_processor import processor
from tests.deploy.test_lambda_consumer import handler_for
from tests.factories import KclCheckpointer, kcl_message, kinesis_lambda_event


def test_kcl_processor_records_millis_behind_latest_of_its_shard(tmp_path: Path):
    p, _ = processor(tmp_path)
    records = [
        {
            "action": "record",
            "data": base64.b64encode(orjson.dumps({"n": i})).decode(),
            "partitionKey": "pk",
            "sequenceNumber": str(100 + i),
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": 1762192800123,
        }
        for i in range(3)
    ]
    kcl_message(
        {"action": "processRecords", "millisBehindLatest": 4321, "records": records}
    ).dispatch(KclCheckpointer(), p)
    sample = p.metrics.last
    assert sample.millis_behind == {p.shard_id: 4321} and sample.shard == p.shard_id
    # the checkpoint counts once the daemon stored it (``Recorder.checkpoint_stored``), not here
    assert sample.outcomes["committed"] == 3 and not sample.checkpointed
    assert (sample.positions["sequence_first"], sample.positions["sequence_last"]) == ("100", "102")


def test_lambda_invocation_logs_one_line_with_the_first_failed_record_and_prints_emf(
    tmp_path: Path, caplog, capsys
):
    handler = handler_for(tmp_path, dlq=False)
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        answer = handler(kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": "bad n"}, {"n": 3}]))
    [line] = [r for r in caplog.records if r.name == "squall.invocation"]
    assert line.levelno == logging.ERROR
    f = line.fields
    assert (f["records"], f["status"], f["committed"], f["failed"], f["held"]) == (
        3,
        "records_failed",
        1,
        1,
        1,
    )  # the third is held (not written): Lambda retries from the second
    assert f["first_failed"]["sequence"] == answer["batchItemFailures"][0]["itemIdentifier"]
    assert f["first_failed"]["component"] == "chaos" and "bad n" in f["first_failed"]["reason"]
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    [top] = [d for d in docs if "Component" not in d and "Topology" in d]
    assert top["BatchesRecordsFailed"] == [1.0] and top["RecordsFailed"] == [1.0]
    assert top["RecordsHeld"] == [1.0] and top["RecordsCommitted"] == [1.0]


def test_squall_log_format_env_selects_json(monkeypatch):
    monkeypatch.setenv("SQUALL_LOG_FORMAT", "json")
    stream = io.StringIO()
    configure(stream=stream)
    try:
        handler = [h for h in logging.getLogger().handlers if getattr(h, "_squall", False)][0]
        assert isinstance(handler.formatter, JsonFormatter)
        logging.getLogger("squall.test.env").warning("hello")
        assert json.loads(stream.getvalue())["message"] == "hello"
    finally:
        monkeypatch.delenv("SQUALL_LOG_FORMAT")
        configure("text", stream=sys.stderr)


def test_an_sqs_triggered_invocation_prints_emf_and_its_log_line(tmp_path: Path, caplog, capsys):
    from squall.deploy.lambda_consumer import make_handler
    from tests.deploy.test_sqs_s3_sources import sqs_lambda_event, write_topology

    handler = make_handler(write_topology(tmp_path, "{type: stdin}", "sqs-metrics"))
    event = sqs_lambda_event(
        [("m-0", {"n": 0}, None), ("m-1", {"n": 1, "fail": "bad"}, None), ("m-2", {"n": 2}, None)]
    )
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        assert handler(event, None) == {"batchItemFailures": []}
    [line] = [r for r in caplog.records if r.name == "squall.invocation"]
    assert (line.fields["records"], line.fields["committed"], line.fields["dead_lettered"]) == (
        3,
        2,
        1,
    )
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    [top] = [d for d in docs if "Component" not in d and "Topology" in d]
    assert top["RecordsCommitted"] == [2.0] and top["RecordsDeadLettered"] == [1.0]
    assert {d["Component"]: d["RecordsIn"] for d in docs if "Component" in d}["decode"] == [3.0]


def test_an_s3_triggered_invocation_prints_emf_and_its_log_line(
    moto_server,
    tmp_path: Path,
    caplog,
    capsys,
):
    from squall.deploy.lambda_consumer import make_handler
    from tests.deploy.test_sqs_s3_sources import put_lines, s3_lambda_event, write_topology
    from tests.moto_standin import unique

    s3 = moto_server.client("s3")
    bucket = unique("metered")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/a.jsonl", [{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}], gz=False)
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, "s3-metrics"))
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        assert handler(s3_lambda_event(bucket, "in/a.jsonl"), None)["records"] == 3
    [line] = [r for r in caplog.records if r.name == "squall.invocation"]
    assert (line.fields["committed"], line.fields["dead_lettered"]) == (2, 1)
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    [top] = [d for d in docs if "Component" not in d and "Topology" in d]
    assert top["RecordsCommitted"] == [2.0] and top["BatchesOk"] == [1.0]


def test_a_producer_request_prints_emf_and_its_log_line(tmp_path: Path, caplog, capsys):
    from squall.deploy.lambda_producer import make_handler
    from tests.factories import api_gateway_event

    (tmp_path / "producer.yaml").write_text(
        "name: metered-producer\nspout: {type: stdin}\n"
        "bolts: [{id: decode, type: json}, {id: chaos, type: 'squall.testing:FaultyBolt'}]\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    handler = make_handler(tmp_path / "producer.yaml")
    body = json.dumps([{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}])
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        assert handler(api_gateway_event(body), None)["statusCode"] == 202
    [line] = [r for r in caplog.records if r.name == "squall.invocation"]
    assert (line.fields["records"], line.fields["committed"], line.fields["failed"]) == (3, 2, 1)
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    [top] = [d for d in docs if "Component" not in d and "Topology" in d]
    assert top["Topology"] == "metered-producer" and top["RecordsCommitted"] == [2.0]
    assert top["BatchesRecordsFailed"] == [1.0] and top["RecordsFailed"] == [1.0]


def test_an_idle_kcl_poll_updates_the_lag_of_its_shard(tmp_path: Path):
    """After a backlog, the KCL's idle polls say the shard is caught up (MillisBehindLatest 0):
    the lag gauge must follow, not keep the last batch's value (SquallLagHigh, SquallStalled)."""
    from prometheus_client import CollectorRegistry

    from squall.observability.prometheus import PrometheusBackend

    p, _ = processor(tmp_path)
    backend = PrometheusBackend(CollectorRegistry())
    p.metrics.backends.append(backend)
    totals = p.metrics.backends[0]
    cp = KclCheckpointer()
    batch = [
        {
            "action": "record",
            "data": base64.b64encode(orjson.dumps({"n": 1})).decode(),
            "partitionKey": "pk",
            "sequenceNumber": "100",
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": 1762192800123,
        }
    ]
    labels = {"topology": "kcl-test", "shard": p.shard_id}
    kcl_message(
        {"action": "processRecords", "millisBehindLatest": 90_000, "records": batch}
    ).dispatch(cp, p)
    assert backend.registry.get_sample_value("squall_millis_behind_latest", labels) == 90_000
    kcl_message({"action": "processRecords", "millisBehindLatest": 0, "records": []}).dispatch(
        cp, p
    )
    assert backend.registry.get_sample_value("squall_millis_behind_latest", labels) == 0
    assert totals.lag_ms == 0 and totals.batches == 1  # an idle poll is not a batch
