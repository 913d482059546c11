"""The Lambda producer's 503 names the events written and those not, against kinesis-mock.

When some records of a PutRecords stay refused after every retry (throttled shards), the events
of the others are in the stream. The 503 said only "retry": the client resent the whole request
and the written events went in twice (harmless downstream only with ``event_id_field``). The
body now lists ``written`` and ``not_written`` (index in the request and event id) beside
``rejected``, so a client resends only the unwritten ones (docs/deploy.md's example).
"""

from __future__ import annotations

import base64
import json

from squall.deploy.lambda_producer import make_handler
from tests.factories import api_gateway_event
from tests.kinesis.kinesis_helpers import Faults
from tests.kinesis.test_producer_deadline import producer, stored

BODY = "[" + ", ".join([*(json.dumps({"message_id": f"m{i}"}) for i in range(5)), "oops"]) + "]"


def test_the_503_lists_what_was_written_and_a_client_resends_only_the_rest(
    tmp_path, kinesis, kinesis_mock, make_stream
):
    stream = make_stream()
    handler, sink, slept = producer(tmp_path, kinesis_mock.endpoint, stream)
    # The first call refuses m1 and m3; every retry refuses whatever it is sent.
    faults = Faults(sink, kinesis, {0: {1, 3}, **{n: set(range(5)) for n in range(1, 50)}})
    resp = handler(api_gateway_event(BODY), None)
    assert resp["statusCode"] == 503 and resp["headers"]["Retry-After"] == "1"
    answer = json.loads(resp["body"])
    assert answer["error"] == "temporarily unavailable, retry"
    assert answer["written"] == [{"index": i, "event_id": f"m{i}"} for i in (0, 2, 4)]
    assert answer["not_written"] == [{"index": i, "event_id": f"m{i}"} for i in (1, 3)]
    [bad] = answer["rejected"]
    assert bad["index"] == 5 and bad["reason"].startswith("decode: invalid JSON")
    assert stored(kinesis_mock.endpoint, stream) == ["m0", "m2", "m4"]

    # The client (docs/deploy.md) resends only the unwritten events: each is in the stream once.
    faults.plan.clear()
    sent = json.loads(BODY.replace(", oops", ""))
    again = [sent[e["index"]] for e in answer["not_written"]]
    resp = handler(api_gateway_event(json.dumps(again)), None)
    assert (resp["statusCode"], json.loads(resp["body"])) == (202, {"accepted": 2, "rejected": []})
    assert stored(kinesis_mock.endpoint, stream) == [f"m{i}" for i in range(5)]


def test_a_batch_failed_as_a_whole_names_no_event(tmp_path, kinesis, kinesis_mock, make_stream):
    """Every call throttled whole: which events a sink wrote before is not known, so the 503
    has no lists (the client resends the request)."""
    stream = make_stream()
    handler, sink, slept = producer(tmp_path, kinesis_mock.endpoint, stream)
    Faults(sink, kinesis, dict.fromkeys(range(50), "ProvisionedThroughputExceededException"))
    resp = handler(api_gateway_event(BODY), None)
    assert resp["statusCode"] == 503, resp
    assert json.loads(resp["body"]) == {"error": "temporarily unavailable, retry"}


def test_with_two_sinks_an_event_not_written_by_one_is_in_the_other(
    tmp_path, kinesis, kinesis_mock, make_stream
):
    """`not_written` means not written by every sink: an event one sink could not put is in
    the others' streams already (the producer's engine holds nothing back: ``redelivers=False``),
    and resending it puts it there again — under the same event id only with `event_id_field`
    (docs/deploy.md said resending only `not_written` puts nothing twice)."""
    archive, stream = make_stream(), make_stream()
    path = tmp_path / "producer.yaml"
    path.write_text(
        f"""
name: producer
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
sinks:
  - {{id: archive, type: kinesis, stream: {archive}, endpoint_url: "{kinesis_mock.endpoint}"}}
  - {{id: out, type: kinesis, stream: {stream}, endpoint_url: "{kinesis_mock.endpoint}"}}
"""
    )
    handler = make_handler(path)
    sinks = {c.id: c for c in handler.engine.components if c.id in ("archive", "out")}
    for sink in sinks.values():
        sink.writer._sleep = lambda s: None
    handler.engine._sleep = lambda s: None
    # "out" refuses m1 (the 2nd entry of the first call, the only one of each retry)
    faults = Faults(sinks["out"], kinesis, {0: {1}, **{n: {0} for n in range(1, 50)}})
    body = json.dumps([{"message_id": f"m{i}"} for i in range(3)])
    answer = json.loads(handler(api_gateway_event(body), None)["body"])
    assert answer["not_written"] == [{"index": 1, "event_id": "m1"}]
    assert stored(kinesis_mock.endpoint, archive) == ["m0", "m1", "m2"]
    assert stored(kinesis_mock.endpoint, stream) == ["m0", "m2"]

    faults.plan.clear()
    resp = handler(api_gateway_event(json.dumps([{"message_id": "m1"}])), None)
    assert resp["statusCode"] == 202
    assert stored(kinesis_mock.endpoint, archive) == ["m0", "m1", "m1", "m2"]  # twice
    assert stored(kinesis_mock.endpoint, stream) == ["m0", "m1", "m2"]


def test_an_event_whose_call_went_unanswered_is_not_written_for_all_the_producer_knows(
    tmp_path, kinesis, kinesis_mock, make_stream
):
    """A PutRecords whose answer never came (a read timeout: a slow Kinesis in a surge, or the
    call's read cut at the deadline) may have been written: its events are in `not_written`,
    and a client resending them puts them twice — harmless downstream only with
    `event_id_field` (docs/deploy.md said resending only `not_written` put nothing twice)."""
    from botocore.exceptions import ReadTimeoutError

    stream = make_stream()
    handler, sink, slept = producer(tmp_path, kinesis_mock.endpoint, stream)
    faults = Faults(sink, kinesis, {0: {1}, **{n: {0} for n in range(2, 50)}})
    calls = {"n": 0}

    def written_then_unanswered(params, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the retry of m1: Kinesis writes it, its answer never arrives
            entries = json.loads(params["body"])["Records"]
            kinesis.put_records(
                StreamName=stream,
                Records=[
                    {"Data": base64.b64decode(e["Data"]), "PartitionKey": e["PartitionKey"]}
                    for e in entries
                ],
            )
            faults.call += 1
            raise ReadTimeoutError(endpoint_url=kinesis_mock.endpoint)
        return None

    sink.client.meta.events.register_first(
        "before-call.kinesis.PutRecords", written_then_unanswered
    )
    body = json.dumps([{"message_id": f"m{i}"} for i in range(3)])
    answer = json.loads(handler(api_gateway_event(body), None)["body"])
    assert answer["not_written"] == [{"index": 1, "event_id": "m1"}]
    assert stored(kinesis_mock.endpoint, stream) == ["m0", "m1", "m2"]
