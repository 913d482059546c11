"""The Lambda producer retries PutRecords only while the invocation has time left.

Against kinesis-mock, with throttling injected (``Faults``) and a Lambda context whose remaining
time the test sets: no sleeping, no timing assertions. A retry whose backoff would outlast the
time left less ``settings.lambda_deadline_margin`` is not made: the request is answered ``503``
with ``Retry-After`` while the function still can — killed at its timeout, it answered nothing of
its own (API Gateway's 502/504, no Retry-After) and the client could not tell what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import make_handler
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.factories import api_gateway_event
from tests.kinesis.kinesis_helpers import Faults, consume, make_spout, payloads

THROTTLED = "ProvisionedThroughputExceededException"


class Context:
    """A Lambda context whose remaining time the test sets."""

    function_name = "producer"  # Powertools' ColdStart metric names it

    def __init__(self, remaining_ms: float):
        self.remaining_ms = remaining_ms
        self.asked = 0

    def get_remaining_time_in_millis(self) -> float:
        self.asked += 1
        return self.remaining_ms


def producer(tmp_path: Path, endpoint: str, stream: str):
    """A producer handler on kinesis-mock; sleeps are recorded, never slept."""
    path = tmp_path / "producer.yaml"
    path.write_text(
        f"""
name: producer
spout: {{type: stdin}}
settings: {{lambda_deadline_margin: 2.0, retry: {{attempts: 3}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
sinks:
  - {{id: out, type: kinesis, stream: {stream}, endpoint_url: "{endpoint}", partition_key: message_id}}
"""
    )
    handler = make_handler(path)
    [sink] = [c for c in handler.engine.components if c.id == "out"]
    slept: list[float] = []
    sink.writer._sleep = slept.append
    handler.engine._sleep = slept.append
    return handler, sink, slept


def request(n: int = 3) -> dict:
    return api_gateway_event(
        json.dumps([{"message_id": f"m{i}", "event_type": "click"} for i in range(n)])
    )


def stored(endpoint: str, stream: str) -> list[str]:
    spout = make_spout(endpoint, stream, store=MemoryCheckpointStore())
    return sorted(d["message_id"] for d in payloads(consume(spout, max_records=100)))


@pytest.mark.parametrize(("remaining_ms", "retried"), [(2_040, False), (900_000, True)])
def test_throttled_records_are_retried_only_while_the_backoff_fits(
    tmp_path, kinesis, kinesis_mock, make_stream, remaining_ms, retried
):
    """PutRecords throttles one record. 40 ms left past the margin is under the writer's
    shortest backoff (50 ms): no retry, a 503 at once; with time left it is retried and put."""
    stream = make_stream(1)
    handler, sink, slept = producer(tmp_path, kinesis_mock.endpoint, stream)
    Faults(sink, kinesis, {0: {1}})
    context = Context(remaining_ms)
    resp = handler(request(), context)
    if retried:
        assert resp["statusCode"] == 202 and json.loads(resp["body"])["accepted"] == 3
        assert len(slept) == 1 and stored(kinesis_mock.endpoint, stream) == ["m0", "m1", "m2"]
    else:
        assert resp["statusCode"] == 503 and resp["headers"]["Retry-After"] == "1"
        assert slept == [] and context.asked >= 1
        assert stored(kinesis_mock.endpoint, stream) == ["m0", "m2"]  # m1 comes with the retry
    assert handler.engine.time_left is None  # the request's deadline does not outlive it


def test_a_whole_call_throttled_is_not_retried_by_the_engine_past_the_deadline(
    tmp_path, kinesis, kinesis_mock, make_stream
):
    """The first PutRecords call throttled whole is the engine's retry (a ``TransientError``):
    with no time left for its backoff (40 ms past the margin; the engine's backoff, its jitter
    fixed at the top, 100 ms) the request is answered 503 at once, nothing put."""
    stream = make_stream(1)
    handler, sink, slept = producer(tmp_path, kinesis_mock.endpoint, stream)
    handler.engine._rng = lambda: 1.0
    faults = Faults(sink, kinesis, {0: THROTTLED})
    resp = handler(request(), Context(2_040))
    assert resp["statusCode"] == 503 and slept == [] and faults.call == 1
    assert stored(kinesis_mock.endpoint, stream) == []
    # With no time left at all, no call is made (the sink's own check): 503, nothing asked.
    resp = handler(request(), Context(2_000))
    assert resp["statusCode"] == 503 and slept == [] and faults.call == 1
    # The next request, with time: retried by the engine and put (the fault was one call).
    Faults(sink, kinesis, {0: THROTTLED})
    resp = handler(request(), Context(900_000))
    assert resp["statusCode"] == 202 and len(slept) == 1
    assert stored(kinesis_mock.endpoint, stream) == ["m0", "m1", "m2"]
