"""The Lambda producer's answer for the events a ``RecordBolt`` of the team's fails: an HTTP
client outside gets the reason without where in the server's code it was raised (its paths,
lines and function names: the operator's, kept in the dead letter), and a reason cut for its
length still says how long it was. An outage in such a bolt is a 503 for the whole request."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from squall.bolts.base import RecordBolt
from squall.deploy.lambda_producer import make_handler
from squall.deploy.producer_answer import MAX_ANSWER_BYTES, SHORT_REASON, answer_bytes
from squall.event import Event
from squall.testing import MemorySink
from tests.factories import api_gateway_event


class ScoreBolt(RecordBolt):
    """A team's bolt: a bug on an event without ``amount``, a long message on ``long``, and
    Redis as ``redis`` says (down, or refusing the password)."""

    def process_event(self, event: Event) -> str:
        import redis

        value = event.value
        if value.get("redis") == "down":
            raise redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.5:6379.")
        if value.get("redis") == "wrongpass":
            raise redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair")
        if value.get("long"):
            raise ValueError("é" * 5000)
        value["score"] = value["amount"] * 2
        return "default"


TOPOLOGY = """
name: producer-record-bolt
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: score, type: 'tests.deploy.test_producer_record_bolt:ScoreBolt'}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: 'p{tag}'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: 'd{tag}'}}
"""


@pytest.fixture
def producer(tmp_path: Path):
    tag = uuid.uuid4().hex
    t = tmp_path / "producer.yaml"
    t.write_text(TOPOLOGY.format(tag=tag))
    return make_handler(t, context_key=None, max_events=0), tag


def _send(handler, events: list) -> tuple[dict, dict]:
    resp = handler(api_gateway_event(json.dumps(events)), None)
    return resp, json.loads(resp["body"])


def test_a_bug_in_a_record_bolt_is_answered_without_the_servers_code_location(producer):
    """The answer said ``score: KeyError: 'amount' (at /var/task/…/bolts.py, line 13, in
    process_event)``: the server's file layout, line numbers and function names, to any caller
    of the API. The client gets the type and message; the dead letter keeps where."""
    handler, tag = producer
    resp, got = _send(handler, [{"message_id": "m0", "amount": 1}, {"message_id": "m1"}])
    assert resp["statusCode"] == 202
    assert got == {"accepted": 1, "rejected": [{"index": 1, "reason": "score: KeyError: 'amount'"}]}
    [dead] = MemorySink.stores[f"d{tag}"]
    assert dead.failure.reason.startswith(f"KeyError: 'amount' (at {__file__}, line ")
    assert dead.failure.reason.endswith(", in process_event)")


def test_a_long_reason_cut_to_fit_says_how_long_it_was(producer):
    """A message of 5,000 characters: the location appended to the reason cut it again, without
    the ``… [truncated, 5000 chars]`` marker, so an answer that had to shorten its reasons to fit
    (1,100 of them: over Lambda's 6 MB) said ``… [964 chars]``, the length of the cut."""
    handler, _ = producer
    events = [{"message_id": "ok", "amount": 1}] + [
        {"message_id": f"m{i}", "long": True} for i in range(1_100)
    ]
    resp, got = _send(handler, events)
    assert answer_bytes(resp) <= MAX_ANSWER_BYTES
    assert resp["statusCode"] == 202 and len(got["rejected"]) == 1_100
    cut = SHORT_REASON - len("score: ValueError: ")
    assert got["rejected"][0]["reason"] == f"score: ValueError: {'é' * cut}… [5000 chars]"


def test_a_record_bolts_outage_is_a_503_for_the_whole_request(producer):
    """Redis down under a ``RecordBolt``: every event was rejected (a 400 telling the client
    its events were bad, with Redis' address); now the engine retries, then the request is
    answered 503 with ``Retry-After`` and no lists (resend it all). A refused password is the
    function's configuration: 500 with ``Retry-After: 60``, the cause in the log only."""
    handler, tag = producer
    resp, got = _send(handler, [{"message_id": "m0", "amount": 1, "redis": "down"}])
    assert (resp["statusCode"], resp["headers"]["Retry-After"]) == (503, "1")
    assert set(got) == {"error"} and "10.0.0.5" not in resp["body"]
    resp, got = _send(handler, [{"message_id": "m0", "amount": 1, "redis": "wrongpass"}])
    assert (resp["statusCode"], resp["headers"]["Retry-After"]) == (500, "60")
    assert "WRONGPASS" not in resp["body"]
    assert MemorySink.stores.get(f"d{tag}", []) == [] == MemorySink.stores.get(f"p{tag}", [])
