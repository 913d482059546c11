"""What the Lambda producer keeps of one device's order, against kinesis-mock (docs/deploy.md).

PutRecords takes the records of a call one by one: when it refuses one (a throttled shard,
``InternalFailure``) and takes a later one of the same partition key, the sink's retry puts the
refused one after it. The request is answered ``202`` (every event is in the stream); a consumer
that needs a device's order orders by the events' own time (the ``subscription`` bolt's
``time_field``), not by stream order. The docs said ``partition_key`` kept one device's events
in order, without the exception.
"""

from __future__ import annotations

import json
from pathlib import Path

from squall.deploy.lambda_producer import make_handler
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.factories import api_gateway_event
from tests.kinesis.kinesis_helpers import Faults, consume, make_spout, payloads


def producer(tmp_path: Path, endpoint: str, stream: str):
    path = tmp_path / "producer.yaml"
    path.write_text(
        f"""
name: producer
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
sinks:
  - {{id: out, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}", partition_key: device_token}}
"""
    )
    handler = make_handler(path)
    [sink] = [c for c in handler.engine.components if c.id == "out"]
    sink.writer._sleep = lambda seconds: None  # backoff recorded nowhere, never slept
    return handler, sink


def test_a_record_retried_after_a_partial_failure_lands_after_its_keys_later_records(
    tmp_path, kinesis, kinesis_mock, make_stream
):
    stream = make_stream()
    handler, sink = producer(tmp_path, kinesis_mock.endpoint, stream)
    Faults(sink, kinesis, {0: {0}})  # the first call refuses the device's first event only
    events = [{"message_id": f"m{i}", "device_token": "d1", "timestamp": i} for i in range(3)]
    resp = handler(api_gateway_event(json.dumps(events)), None)
    assert (resp["statusCode"], json.loads(resp["body"])) == (202, {"accepted": 3, "rejected": []})
    spout = make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore())
    in_stream = [d["message_id"] for d in payloads(consume(spout, max_records=10))]
    assert in_stream == ["m1", "m2", "m0"]
