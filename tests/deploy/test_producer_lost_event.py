"""The Lambda producer's answer for an event a user's bolt lost (returned it neither emitted nor
dropped: the engine's "no outcome", naming the bolt): that event's failure, answered in ``rejected`` like an event
a bolt rejects — not ``not_written`` in a 503, which made the client resend it for ever (the
bolt loses it again on every resend). An outage stays a 503 (tests/deploy/test_lambda_producer.py)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from squall.bolts.base import Bolt, Output
from squall.deploy.lambda_producer import make_handler
from squall.event import Event
from squall.testing import MemorySink
from tests.factories import api_gateway_event


class ForgetfulBolt(Bolt):
    """A user's bolt with a bug: an event with ``"lose": true`` is neither emitted nor dropped."""

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            if not (isinstance(ev.value, dict) and ev.value.get("lose")):
                out.emit(ev)
        return out


TOPOLOGY = """
name: producer-lost
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt'}}
  - {{id: forgetful, type: 'tests.deploy.test_producer_lost_event:ForgetfulBolt'}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: 'p{tag}'}}
"""


LOST = "engine: no outcome: bolt 'forgetful' returned without emitting, dropping or failing it"


def _handler(tmp_path: Path):
    tag = uuid.uuid4().hex
    t = tmp_path / "producer.yaml"
    t.write_text(TOPOLOGY.format(tag=tag))
    return make_handler(t), f"p{tag}"


def test_an_event_a_bolt_lost_is_rejected_with_the_reason_like_one_a_bolt_fails(tmp_path, caplog):
    handler, store = _handler(tmp_path)
    events = [
        {"message_id": "m0"},
        {"message_id": "m1", "lose": True},
        {"message_id": "m2", "fail": "bad record"},
    ]
    with caplog.at_level(logging.ERROR, logger="squall.producer"):
        resp = handler(api_gateway_event(json.dumps(events)), None)
    # was: 503 {"not_written": [{"index": 1, …}]}, Retry-After: 1 — resent for ever
    assert resp["statusCode"] == 202, resp
    assert json.loads(resp["body"]) == {
        "accepted": 1,
        "rejected": [
            {"index": 1, "reason": LOST},
            {"index": 2, "reason": "faulty: bad record"},
        ],
    }
    assert [e.event_id for e in MemorySink.stores[store]] == ["m0"]
    # kept nowhere but the answer (not dead-lettered): the log names the request's lost event
    [line] = [r.getMessage() for r in caplog.records if r.name == "squall.producer"]
    assert line.endswith(f"1 event(s) rejected ({LOST}) at index 1")


def test_a_request_whose_every_event_a_bolt_lost_is_a_400_not_a_503(tmp_path, caplog):
    handler, _ = _handler(tmp_path)
    events = [{"message_id": f"m{i}", "lose": True} for i in range(12)]
    with caplog.at_level(logging.ERROR, logger="squall.producer"):
        resp = handler(api_gateway_event(json.dumps(events)), None)
    assert resp["statusCode"] == 400 and "Retry-After" not in resp["headers"]
    assert json.loads(resp["body"])["rejected"] == [{"index": i, "reason": LOST} for i in range(12)]
    # one line for the request, not one per event
    [line] = [r.getMessage() for r in caplog.records if r.name == "squall.producer"]
    assert line.endswith("at index 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more")
