"""Dead push tokens unsubscribed in the subscription state, through the batch's staged commit.

The push sink (``unsubscribe: {state: subscription}``) returns an ``unsubscribe`` per token the
local FCM stand-in answers UNREGISTERED for; the engine stages it in the subscription bolt and
commits it with the batch's state (SQLite and PostgreSQL), so the next campaign does not target
the token. A later subscribe of the token still wins (the unsubscribe carries the push's time).
An INVALID_ARGUMENT about the message, not the token, unsubscribes nothing: a dead letter each.
"""

from __future__ import annotations

import json
import uuid

import pytest

from squall.errors import TopologyError
from squall.sinks.push import PushSinkConfig
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.sinks import test_push_sink as standin
from tests.sinks.test_push_sink import service_account

fcm, key_pair = standin.fcm, standin.key_pair  # the FCM stand-in's fixtures

SHARD = "shardId-000000000000"


def topology(fcm, key_pair, state_url: str, table: str, **unsubscribe) -> str:
    return json.dumps(
        {
            "name": f"notify{uuid.uuid4().hex[:6]}",
            "resources": {"state": {"url": state_url}},
            "spout": {"type": "stdin"},
            "bolts": [
                {"id": "decode", "type": "json", "event_id_field": "message_id"},
                {"id": "subscription", "type": "subscription", "store": "state", "table": table},
                {
                    "id": "subscribed_campaigns",
                    "type": "filter",
                    "where": [
                        {"field": "event_type", "equals": "campaign"},
                        {"field": "subscription.subscribed", "equals": True},
                    ],
                },
            ],
            "sinks": [
                {
                    "id": "push",
                    "type": "push",
                    "project_id": "demo",
                    "credentials": service_account(fcm, key_pair[0]),
                    "endpoint": fcm.http.url,
                    "title": "{campaign}",
                    "unsubscribe": {"state": "subscription", **unsubscribe},
                },
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
            ],
        }
    )


def event(n: int, kind: str, token: str, at: str, **extra) -> dict:
    return {
        "message_id": f"m-{n:03d}",
        "event_type": kind,
        "device_token": token,
        "timestamp": at,
        **extra,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


def test_a_dead_token_is_unsubscribed_with_the_batch_and_the_next_campaign_skips_it(
    fcm, key_pair, state_url
):
    table = f"subs_{uuid.uuid4().hex[:10]}"
    engine = Engine(load_text(topology(fcm, key_pair, state_url, table)).plan)
    with engine:
        subs = next(c for c in engine.components if c.id == "subscription")
        push = next(c for c in engine.components if c.id == "push")
        subscribe = [
            event(1, "subscribe", "tok-1", "2026-11-03T18:00:00Z"),
            event(2, "subscribe", "tok-dead", "2026-11-03T18:00:01Z"),
        ]
        assert engine.process(records_from(subscribe, start=1)).ok
        first = [
            event(3, "campaign", "tok-1", "2026-11-03T18:05:00Z", campaign="c-1"),
            event(4, "campaign", "tok-dead", "2026-11-03T18:05:00Z", campaign="c-1"),
        ]
        result = engine.process(records_from(first, start=3))
        assert result.ok and result.checkpoint[SHARD].sequence_number == "4"
        assert push.dead_tokens_seen == 1
        stored = subs.store.load(["tok-1", "tok-dead"])
        assert stored["tok-1"].status == "subscribed"
        assert stored["tok-dead"].status == "unsubscribed"
        sent_before = len(fcm.sent)
        second = [
            event(5, "campaign", "tok-1", "2026-11-03T19:00:00Z", campaign="c-2"),
            event(6, "campaign", "tok-dead", "2026-11-03T19:00:00Z", campaign="c-2"),
        ]
        assert engine.process(records_from(second, start=5)).ok
        assert [m["token"] for m in fcm.sent[sent_before:]] == ["tok-1"]  # not targeted
        assert fcm.tries["tok-dead"] == 1 and push.dead_tokens_seen == 1
        # the device comes back later: its subscribe is newer than the push that found it dead
        back = [event(7, "subscribe", "tok-dead", "2026-11-03T20:00:00Z")]
        assert engine.process(records_from(back, start=7)).ok
        assert subs.store.load(["tok-dead"])["tok-dead"].status == "subscribed"


def test_a_failed_batch_commits_no_unsubscribe_and_its_replay_commits_it(fcm, key_pair, tmp_path):
    """The unsubscribe is staged, not written: a push that fails (FCM unavailable for one token
    after every retry) holds the dead token's record behind it, and its unsubscribe is not
    committed; the same records delivered again, FCM back, commit it."""
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = Engine(load_text(topology(fcm, key_pair, state_url, "subs")).plan, sleep=lambda s: 0)
    answer, back = fcm.http.answer, {"up": False}

    def heal(req):  # tok-down answers 503 until FCM is back
        if back["up"] and req.path.endswith(":send") and b'"tok-down"' in req.body:
            return 200, {}, json.dumps({"name": "projects/demo/messages/x"})
        return answer(req)

    fcm.http.answer = heal
    with engine:
        subs = next(c for c in engine.components if c.id == "subscription")
        push = next(c for c in engine.components if c.id == "push")
        push.sleep = lambda s: None
        subscribe = [
            event(1, "subscribe", "tok-down", "2026-11-03T18:00:00Z"),
            event(2, "subscribe", "tok-dead", "2026-11-03T18:00:01Z"),
        ]
        assert engine.process(records_from(subscribe, start=1)).ok
        campaign = records_from(
            [
                event(3, "campaign", "tok-down", "2026-11-03T18:05:00Z", campaign="c-1"),
                event(4, "campaign", "tok-dead", "2026-11-03T18:05:00Z", campaign="c-1"),
            ],
            start=3,
        )
        failed = engine.process(campaign)  # FCM is up (it answered UNREGISTERED): tok-down's
        assert not failed.ok  # push fails after max_attempts, tok-dead's record is held behind it
        assert SHARD not in failed.checkpoint
        assert fcm.tries["tok-dead"] == 1  # FCM did answer UNREGISTERED
        assert subs.store.load(["tok-dead"])["tok-dead"].status == "subscribed"
        back["up"] = True
        result = engine.process(campaign)
        assert result.ok and result.checkpoint[SHARD].sequence_number == "4"
        assert subs.store.load(["tok-dead"])["tok-dead"].status == "unsubscribed"


def test_a_push_failing_after_max_attempts_sends_the_records_after_it_again(
    fcm, key_pair, tmp_path
):
    """As docs/sinks.md says (Replays): a message failing after `max_attempts` beside delivered
    ones stops the checkpoint before its record; the record after it in its shard was pushed in
    the same write and comes again with it, so its device gets the notification twice (the
    change's note said those records were "held", as if not sent)."""
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = Engine(load_text(topology(fcm, key_pair, state_url, "subs")).plan, sleep=lambda s: 0)
    answer, back = fcm.http.answer, {"up": False}

    def heal(req):  # tok-down answers 503 until FCM is back
        if back["up"] and req.path.endswith(":send") and b'"tok-down"' in req.body:
            return 200, {}, json.dumps({"name": "projects/demo/messages/x"})
        return answer(req)

    fcm.http.answer = heal
    with engine:
        next(c for c in engine.components if c.id == "push").sleep = lambda s: None
        subscribe = [
            event(1, "subscribe", "tok-down", "2026-11-03T18:00:00Z"),
            event(2, "subscribe", "tok-1", "2026-11-03T18:00:01Z"),
        ]
        assert engine.process(records_from(subscribe, start=1)).ok
        campaign = records_from(
            [
                event(3, "campaign", "tok-down", "2026-11-03T18:05:00Z", campaign="c-1"),
                event(4, "campaign", "tok-1", "2026-11-03T18:05:00Z", campaign="c-1"),
            ],
            start=3,
        )
        failed = engine.process(campaign)
        assert not failed.ok and SHARD not in failed.checkpoint
        assert [r.event_id for r in failed.failed] == ["m-003"]
        assert fcm.tries == {"tok-down": 5, "tok-1": 1}  # max_attempts (5); m-004 sent, not held
        back["up"] = True
        result = engine.process(campaign)
        assert result.ok and result.checkpoint[SHARD].sequence_number == "4"
        assert [m["token"] for m in fcm.sent] == ["tok-1", "tok-1"]  # the documented duplicate


def test_a_message_fcm_refuses_is_dead_lettered_and_no_token_of_the_campaign_is_unsubscribed(
    fcm, key_pair, state_url
):
    """INVALID_ARGUMENT naming a field of the message, not the token (a bad template, a payload
    FCM will not take): each push is that record's dead letter with FCM's reason, and every
    device of the campaign stays subscribed, so the next campaign reaches them."""
    answer = fcm.http.answer

    def bad_campaign(req):
        if req.path.endswith(":send") and b'"c-bad"' in req.body:
            return 400, {}, standin.INVALID_ARGUMENT["tok-payload"]
        return answer(req)

    fcm.http.answer = bad_campaign
    table = f"subs_{uuid.uuid4().hex[:10]}"
    engine = Engine(load_text(topology(fcm, key_pair, state_url, table)).plan)
    with engine:
        subs = next(c for c in engine.components if c.id == "subscription")
        push = next(c for c in engine.components if c.id == "push")
        dlq = next(c for c in engine.components if c.id == "dlq")
        subscribe = [
            event(1, "subscribe", "tok-1", "2026-11-03T18:00:00Z"),
            event(2, "subscribe", "tok-2", "2026-11-03T18:00:01Z"),
        ]
        assert engine.process(records_from(subscribe, start=1)).ok
        bad = [
            event(3, "campaign", "tok-1", "2026-11-03T18:05:00Z", campaign="c-bad"),
            event(4, "campaign", "tok-2", "2026-11-03T18:05:00Z", campaign="c-bad"),
        ]
        result = engine.process(records_from(bad, start=3))
        assert result.ok and result.checkpoint[SHARD].sequence_number == "4"
        assert push.dead_tokens_seen == 0
        assert [
            (ev.value["device_token"], ev.failure.component, ev.failure.reason) for ev in dlq.store
        ] == [
            (
                tok,
                "push",
                "FCM 400 INVALID_ARGUMENT: Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
            )
            for tok in ("tok-1", "tok-2")
        ]
        stored = subs.store.load(["tok-1", "tok-2"])
        assert (stored["tok-1"].status, stored["tok-2"].status) == ("subscribed", "subscribed")
        good = [
            event(5, "campaign", "tok-1", "2026-11-03T19:00:00Z", campaign="c-2"),
            event(6, "campaign", "tok-2", "2026-11-03T19:00:00Z", campaign="c-2"),
        ]
        assert engine.process(records_from(good, start=5)).ok
        assert sorted(m["token"] for m in fcm.sent) == ["tok-1", "tok-2"]  # still targeted


def test_the_unsubscribe_must_go_to_a_stateful_bolt_of_the_topology(fcm, key_pair, tmp_path):
    yaml = topology(fcm, key_pair, f"sqlite:///{tmp_path / 's.db'}", "subs").replace(
        '"unsubscribe": {"state": "subscription"}', '"unsubscribe": {"state": "decode"}'
    )
    engine = Engine(load_text(yaml).plan)
    with pytest.raises(TopologyError, match="sink 'push': feedback goes to 'decode'"):
        engine.open()
    engine.close()


def test_unsubscribe_config_is_checked():
    with pytest.raises(ValueError, match="state"):
        PushSinkConfig(
            id="p", type="push", project_id="d", credentials="{}", title="x", unsubscribe={}
        )
