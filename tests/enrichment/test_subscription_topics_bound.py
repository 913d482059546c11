"""A key's topics are bounded (`max_topics`, FCM's 2,000 per app instance by default; a topic at
most 900 characters): a client's subscribes grew a key's topics without end, and each event's
cost with them — 200 events of 1,000 new topics took 10 s, the next 500 quadratically more."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from squall.enrichment.subscription import MAX_TOPICS, SubscriptionBolt
from squall.testing import MemorySink, records_from, run_topology


def run(tmp_path: Path, events: list[dict], **options) -> tuple[list, dict[str, list]]:
    tag = uuid.uuid4().hex
    extra = "".join(f", {k}: {orjson.dumps(v).decode()}" for k, v in options.items())
    yaml = f"""
name: subs
spout: {{type: 'squall.testing:ListSpout'}}
resources: {{state: {{url: "sqlite:///{tmp_path / "state.db"}"}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subs, type: subscription, store: state, key: device_token{extra}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    result = run_topology(yaml, records_from(events))
    stores = {k.split("-", 1)[1]: v for k, v in MemorySink.stores.items() if k.startswith(tag)}
    return result.outcomes, stores


def subscribe(topics: list[str], t: int) -> dict:
    return {"event_type": "subscribe", "device_token": "tok", "topics": topics, "timestamp": t}


def test_the_default_is_fcms_limit():
    assert MAX_TOPICS == 2000
    config = SubscriptionBolt.Config(id="s", type="subscription", store="state")
    assert config.max_topics == 2000


def test_a_subscribe_that_would_leave_more_than_max_topics_fails_alone(tmp_path: Path):
    t0 = 1714557600000
    events = [
        subscribe(["a", "b"], t0),
        subscribe(["c", "d"], t0 + 1),  # 4 topics: over 3
        subscribe(["c"], t0 + 2),
        {"event_type": "app_open", "device_token": "tok", "timestamp": t0 + 3},
    ]
    outcomes, stores = run(tmp_path, events, max_topics=3)
    assert [o.outcome.value for o in outcomes] == [
        "committed",
        "dead_lettered",
        "committed",
        "committed",
    ]
    [dead] = stores["dlq"]
    assert "would leave 4 topics on key 'tok', over max_topics (3)" in dead.failure.reason
    assert [ev.value["subscription"]["topics"] for ev in stores["out"]] == [
        ["a", "b"],
        ["a", "b", "c"],
        ["a", "b", "c"],
    ]
    # The stored state is the bounded one: a later batch starts from it.
    outcomes, stores = run(tmp_path, [subscribe(["d"], t0 + 4)], max_topics=3)
    assert [o.outcome.value for o in outcomes] == ["dead_lettered"]


def test_an_event_naming_too_many_or_too_long_topics_is_refused(tmp_path: Path):
    t0 = 1714557600000
    events = [subscribe(["a", "b", "c", "d"], t0), subscribe(["x" * 901], t0 + 1)]
    outcomes, stores = run(tmp_path, events, max_topics=3)
    assert [o.outcome.value for o in outcomes] == ["dead_lettered", "dead_lettered"]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons[0] == "subscribe event with 4 topics, over max_topics (3)"
    assert reasons[1] == "subscribe event with bad 'topics': a topic longer than 900 characters"


def test_a_key_already_over_the_bound_still_takes_unsubscribes_and_reads(tmp_path: Path):
    """A key stored with more topics than `max_topics` (before the bound existed, or the bound
    lowered): an unsubscribe that leaves it still over the bound was refused as if it added
    topics — the opt-out lost, and pushes going on to the topics the user left."""
    t0 = 1714557600000
    outcomes, _ = run(tmp_path, [subscribe(["a", "b", "c", "d", "e"], t0)], max_topics=5)
    assert [o.outcome.value for o in outcomes] == ["committed"]
    events = [
        {"event_type": "unsubscribe", "device_token": "tok", "topics": ["a"], "timestamp": t0 + 1},
        {"event_type": "app_open", "device_token": "tok", "timestamp": t0 + 2},
        subscribe(["z"], t0 + 3),  # adds: back to 5 → over 3, refused
    ]
    outcomes, stores = run(tmp_path, events, max_topics=3)
    assert [o.outcome.value for o in outcomes] == ["committed", "committed", "dead_lettered"]
    assert [ev.value["subscription"]["topics"] for ev in stores["out"]] == [
        ["b", "c", "d", "e"],
        ["b", "c", "d", "e"],
    ]
