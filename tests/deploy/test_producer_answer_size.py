"""The Lambda producer's answer always fits in what a synchronous Lambda invocation may return
(6 MB): a 503 listing every event of a large request, or a 202/400 listing long reasons, made
answers of 7 to 14 MB, which Lambda refuses (API Gateway then answers an error of its own and
the client learns nothing of what was taken). Sizes are measured as the runtime writes them
(``answer_bytes``: the whole return value as JSON, non-ASCII escaped)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import make_handler
from squall.deploy.producer_answer import (
    MAX_ALB_ANSWER_BYTES,
    MAX_ANSWER_BYTES,
    SHORT_REASON,
    WHOLE_REQUEST,
    answer_bytes,
)
from squall.limits import MAX_EVENT_ID_BYTES
from squall.testing import MemorySink
from tests.factories import api_gateway_event

TOPOLOGY = """
name: producer-size
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: out, type: 'squall.testing:FaultySink', name: 'p{tag}'}}
"""

#: The longest event id the json bolt takes, in the characters whose escapes grow the most: a
#: control character (1 byte, ``\u0001`` in the body, 7 characters in the runtime's JSON), and
#: one beyond U+FFFF (4 bytes of the request, 12 characters escaped).
LONGEST_ID = "\x01" * MAX_EVENT_ID_BYTES
WIDE_ID = "\U0001f600" * (MAX_EVENT_ID_BYTES // 4)


@pytest.fixture
def producer(tmp_path: Path):
    def make(**options):
        tag = uuid.uuid4().hex
        t = tmp_path / f"{tag}.yaml"
        t.write_text(TOPOLOGY.format(tag=tag))
        return make_handler(t, context_key=None, **options), f"p{tag}"

    return make


def _send(handler, events: list) -> tuple[dict, dict]:
    body = json.dumps(events, ensure_ascii=False)
    resp = handler(api_gateway_event(body), None)
    assert answer_bytes(resp) <= MAX_ANSWER_BYTES
    return resp, json.loads(resp["body"])


def test_the_largest_request_of_the_default_limits_is_answered_with_its_whole_lists(producer):
    """5 MB, 500 events (the defaults), each with the longest event id in the characters that
    grow the most: the 503 lists every event, and fits."""
    handler, _ = producer()
    pad = "p" * (5_000_000 // 500 - 3_200)
    events = [{"message_id": f"{i:03}{LONGEST_ID[3:]}", "pad": pad} for i in range(500)]
    events[7]["sink_fail"] = 1
    body = json.dumps(events, ensure_ascii=False)
    assert 4_900_000 < len(body.encode()) <= 5_000_000
    resp = handler(api_gateway_event(body), None)
    assert resp["statusCode"] == 503
    got = json.loads(resp["body"])
    assert [e["index"] for e in got["not_written"]] == [7]
    assert len(got["written"]) == 499 and got["written"][0]["event_id"] == events[0]["message_id"]
    assert 1_700_000 < answer_bytes(resp) <= MAX_ANSWER_BYTES  # 3.6 KB an event


def test_a_503_whose_lists_do_not_fit_still_names_the_events_to_send_again(producer):
    """With ``max_events=0`` (any number): 4,000 events with wide ids, one not written — the
    lists took 6.1 MB. The 503 leaves out ``written`` (counted), not ``not_written``: the client
    resends the one event. (It left out every list: the client resent the whole request, and
    the 3,999 events written went to the stream again.)"""
    handler, store = producer(max_events=0)
    events = [{"message_id": f"{i:04}{WIDE_ID[4:]}"} for i in range(4_000)]
    events[1]["sink_fail"] = 1
    resp, got = _send(handler, events)
    assert resp["statusCode"] == 503 and resp["headers"]["Retry-After"] == "1"
    assert got["not_written"] == [{"index": 1, "event_id": events[1]["message_id"]}]
    assert got["written_not_listed"] == 3_999 and "written" not in got
    assert got["rejected"] == []
    assert len(MemorySink.stores[store]) == 3_999


def test_a_503_whose_events_to_send_again_do_not_fit_asks_for_the_whole_request(producer):
    """4,000 events with wide ids, none written: ``not_written`` alone takes 6.1 MB. The 503 is
    then the one without lists: resend the whole request (nothing of it was written)."""
    handler, store = producer(max_events=0)
    events = [{"message_id": f"{i:04}{WIDE_ID[4:]}", "sink_fail": 1} for i in range(4_000)]
    resp, got = _send(handler, events)
    assert resp["statusCode"] == 503 and got == {"error": WHOLE_REQUEST}
    assert len(MemorySink.stores.get(store, [])) == 0


def test_a_503_with_more_rejected_events_than_fit_keeps_those_to_send_again(producer):
    """Rejected events with long reasons beside one not written: the 503 keeps ``not_written``
    whole and lists the first rejected events that fit (``rejected_not_listed``)."""
    handler, _ = producer(max_events=0)
    events = [{"message_id": f"m{i}", "fail": "é" * 150} for i in range(7_000)]
    events.append({"message_id": "last", "sink_fail": 1})
    resp, got = _send(handler, events)
    assert resp["statusCode"] == 503
    assert got["not_written"] == [{"index": 7_000, "event_id": "last"}]
    listed = [r["index"] for r in got["rejected"]]
    assert 5_000 < len(listed) < 7_000 and listed == list(range(len(listed)))
    assert got["rejected_not_listed"] == 7_000 - len(listed)


def alb_event(body: str) -> dict:
    """The event of an Application Load Balancer's target group (``requestContext.elb``)."""
    event = api_gateway_event(body)
    event["requestContext"] = {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:..."}}
    return event


@pytest.mark.parametrize("multi", [False, True])
def test_an_answer_to_a_load_balancer_fits_in_its_1_mb(producer, multi):
    """An Application Load Balancer takes at most 1 MB of response JSON from a Lambda target
    (it answers 502 past it): 400 events rejected with reasons of 990 characters made a 2.4 MB
    202, under Lambda's 6 MB but not under the balancer's. Measured against 1,000,000 bytes,
    each reason is cut and every event listed."""
    handler, _ = producer()
    events = [{"message_id": "ok"}] + [
        {"message_id": f"m{i}", "fail": "é" * 990} for i in range(400)
    ]
    event = alb_event(json.dumps(events, ensure_ascii=False))
    if multi:  # multi-value headers on: the balancer sends and reads only those
        event["multiValueHeaders"] = {k: [v] for k, v in event.pop("headers").items()}
    resp = handler(event, None)
    assert answer_bytes(resp) <= MAX_ALB_ANSWER_BYTES
    got = json.loads(resp["body"])
    assert resp["statusCode"] == 202 and got["accepted"] == 1
    assert [r["index"] for r in got["rejected"]] == list(range(1, 401))
    assert got["rejected"][0]["reason"].endswith("… [998 chars]")
    # the same request through API Gateway is answered whole (it fits in Lambda's 6 MB)
    whole = handler(api_gateway_event(json.dumps(events, ensure_ascii=False)), None)
    assert 2_000_000 < answer_bytes(whole) <= MAX_ANSWER_BYTES
    assert json.loads(whole["body"])["rejected"][0]["reason"] == "faulty: " + "é" * 990


def test_long_reasons_are_cut_when_the_answer_would_not_fit_whole(producer):
    """1,100 events a bolt rejects with a reason of 990 characters (under the engine's cut of a
    failure's reason, 1,000; 2 bytes each in the request, 6 in the answer's JSON): a 6.5 MB 202.
    Each reason is cut, every rejected event listed."""
    handler, _ = producer(max_events=0)
    events = [{"message_id": "ok"}] + [
        {"message_id": f"m{i}", "fail": "é" * 990} for i in range(1_100)
    ]
    resp, got = _send(handler, events)
    assert resp["statusCode"] == 202 and got["accepted"] == 1
    assert [r["index"] for r in got["rejected"]] == list(range(1, 1_101))
    reason = got["rejected"][0]["reason"]
    assert reason == f"faulty: {'é' * (SHORT_REASON - len('faulty: '))}… [998 chars]"


def test_a_400_with_more_rejected_events_than_fit_lists_the_first_and_counts_the_rest(producer):
    """7,000 events rejected with reasons of 150 characters (under the cut): 6.6 MB. The answer
    lists the first that fit, in order, and how many more were rejected."""
    handler, _ = producer(max_events=0)
    events = [{"message_id": f"m{i}", "fail": "é" * 150} for i in range(7_000)]
    resp, got = _send(handler, events)
    assert resp["statusCode"] == 400 and got["accepted"] == 0
    listed = [r["index"] for r in got["rejected"]]
    assert 5_000 < len(listed) < 7_000 and listed == list(range(len(listed)))
    assert got["rejected_not_listed"] == 7_000 - len(listed)
    assert got["rejected"][0]["reason"] == "faulty: " + "é" * 150


def test_a_reason_the_engine_cut_is_shortened_with_its_whole_length():
    """A bolt's reason of 80,000 characters is cut by the engine (``Failure``: 1,000 and
    ``… [truncated, 80000 chars]``); shortened again to fit the answer, it said ``… [1036 chars]``
    — the length of the engine's cut, not the reason's."""
    from squall.deploy.producer_answer import fitted
    from squall.event import Failure

    cut = Failure("faulty", "é" * 80_000).reason
    rejected = [{"index": i, "reason": f"faulty: {cut}"} for i in range(700)]
    out = fitted(400, {"accepted": 0, "rejected": rejected}, None, "r1", MAX_ALB_ANSWER_BYTES)
    assert answer_bytes(out) <= MAX_ALB_ANSWER_BYTES
    got = json.loads(out["body"])["rejected"]
    assert len(got) == 700
    assert got[0]["reason"] == f"faulty: {'é' * (SHORT_REASON - len('faulty: '))}… [80008 chars]"
