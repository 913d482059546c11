"""A device whose clock runs ahead: an event time more than ``max_future`` after its record's
arrival is taken as the arrival time, by the bolts that order or window by event time.

Without the bound, one event stamped years ahead (a phone whose clock was set to 2030) outranked
every later update of its key — the subscription bolt ignored the device's real unsubscribe — and
pushed the window bolt's watermark so far that every later event of the stream was late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from squall.bolts.window import WindowBolt
from squall.component import ComponentContext
from squall.enrichment.subscription import SubscriptionBolt
from squall.event import Event, RecordMeta, derive_event_id
from squall.times import not_after_arrival, parse_time
from tests.enrichment.support import resources

ARRIVAL = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
AHEAD = "2030-01-01T00:00:00Z"


def event(value: dict, seq: int, arrival: datetime | None = ARRIVAL) -> Event:
    meta = RecordMeta("s", "shardId-000000000000", str(seq), 0, "pk", arrival)
    return Event(raw=b"", meta=meta, event_id=derive_event_id(meta), origin=seq, value=value)


def test_the_bound_keeps_times_up_to_the_slack_and_takes_later_ones_as_the_arrival():
    arrived = parse_time("2024-05-01T10:00:00Z")
    slack = 5 * 60_000
    assert not_after_arrival(arrived + slack, ARRIVAL, slack) == arrived + slack
    assert not_after_arrival(arrived + slack + 1, ARRIVAL, slack) == arrived
    assert not_after_arrival(arrived - 10**9, ARRIVAL, slack) == arrived - 10**9  # late: kept
    assert not_after_arrival(arrived + 10**9, None, slack) == arrived + 10**9  # no arrival
    assert not_after_arrival(arrived + 10**9, ARRIVAL, None) == arrived + 10**9  # no bound
    naive = ARRIVAL.replace(tzinfo=None)  # naive arrival times are UTC, as elsewhere
    assert not_after_arrival(arrived + slack + 1, naive, slack) == arrived
    broken = datetime(1960, 1, 1, tzinfo=UTC)  # an arrival out of range bounds nothing
    assert not_after_arrival(arrived, broken, slack) == arrived


def subscription(tmp_path: Path, **options) -> SubscriptionBolt:
    bolt = SubscriptionBolt(
        SubscriptionBolt.Config(id="subs", type="subscription", store="state", **options),
        ComponentContext("test"),
    )
    bolt.open(resources(state=f"sqlite:///{tmp_path / 's.db'}"))
    return bolt


def states(bolt: SubscriptionBolt, batches: list[list[Event]]) -> list[dict]:
    seen = []
    for batch in batches:
        out = bolt.process(batch)
        bolt.commit_state(lambda _e: True)
        bolt.state_committed()
        seen += [dict(e.value["subscription"]) for e in out.streams["default"]]
    return seen


def test_a_subscribe_stamped_years_ahead_does_not_outrank_the_devices_later_unsubscribe(
    tmp_path: Path,
):
    later = ARRIVAL + timedelta(minutes=30)
    batches = [
        [event({"event_type": "subscribe", "device_token": "d1", "timestamp": AHEAD}, 1)],
        [
            event(
                {
                    "event_type": "unsubscribe",
                    "device_token": "d1",
                    "timestamp": "2024-05-01T10:29:00Z",
                },
                2,
                later,
            ),
            event(
                {"event_type": "click", "device_token": "d1", "timestamp": "2024-05-01T10:29:30Z"},
                3,
                later,
            ),
        ],
    ]
    first, unsubscribed, click = states(subscription(tmp_path), batches)
    assert first["status"] == "subscribed"
    assert first["last_change_at"] == "2024-05-01T10:00:00.000Z"  # taken as its arrival
    assert unsubscribed["status"] == click["status"] == "unsubscribed"
    assert click["last_change_at"] == "2024-05-01T10:29:00.000Z"


def test_without_a_bound_the_state_keeps_the_time_as_stamped(tmp_path: Path):
    batches = [
        [event({"event_type": "subscribe", "device_token": "d1", "timestamp": AHEAD}, 1)],
        [
            event(
                {
                    "event_type": "unsubscribe",
                    "device_token": "d1",
                    "timestamp": "2024-05-01T10:29:00Z",
                },
                2,
            )
        ],
    ]
    first, second = states(subscription(tmp_path / "a", max_future=None), batches)
    assert first["last_change_at"] == "2030-01-01T00:00:00.000Z"
    assert second["status"] == "subscribed"  # the older update is not applied: as documented


def test_a_bad_max_future_is_refused_at_load():
    with pytest.raises(ValueError, match="not a duration"):
        SubscriptionBolt.Config(id="s", type="subscription", store="x", max_future="soon")
    with pytest.raises(ValueError, match="not a duration"):
        WindowBolt.Config(
            id="w",
            type="window",
            store="x",
            key=["app"],
            size="1m",
            aggregates={"n": {"fn": "count"}},
            max_future="-1",
        )
    for endless in (float("inf"), float("nan")):  # YAML's .inf and .nan: refused, not a crash
        with pytest.raises(ValueError, match="finite number"):
            SubscriptionBolt.Config(id="s", type="subscription", store="x", max_future=endless)


def test_an_event_stamped_years_ahead_does_not_make_the_window_watermark_jump(tmp_path: Path):
    bolt = WindowBolt(
        WindowBolt.Config(
            id="win",
            type="window",
            store="state",
            key=["app"],
            size="1m",
            aggregates={"n": {"fn": "count"}},
            table="w_clock",
        ),
        ComponentContext("t"),
    )
    (tmp_path / "w").mkdir()
    bolt.open(resources(state=f"sqlite:///{tmp_path / 'w' / 'state.db'}"))
    minute = timedelta(minutes=1)
    batch = [
        event({"app": "a", "timestamp": "2024-05-01T10:00:10Z"}, 1),
        event({"app": "a", "timestamp": AHEAD}, 2),  # counted in its arrival's minute
        event({"app": "a", "timestamp": "2024-05-01T10:00:40Z"}, 3, ARRIVAL + minute),
        event({"app": "a", "timestamp": "2024-05-01T10:01:20Z"}, 4, ARRIVAL + 2 * minute),
    ]
    out = bolt.process(batch)
    bolt.commit_state(lambda _e: True, None)
    bolt.state_committed()
    assert out.streams.get("late", []) == []
    results = {r["window_start"]: r["n"] for r in (e.value for e in out.streams.get("default", []))}
    assert results == {"2024-05-01T10:00:00.000Z": 3}  # 10:01 is still open


def test_an_epoch_ms_time_years_ahead_is_bounded_on_the_window_fast_path_too(tmp_path: Path):
    # Epoch-ms integers of a key seen before take the bolt's inline path: it bounds them too.
    bolt = WindowBolt(
        WindowBolt.Config(
            id="win",
            type="window",
            store="state",
            key=["app"],
            size="1m",
            aggregates={"n": {"fn": "count"}},
            table="w_fast",
        ),
        ComponentContext("t"),
    )
    bolt.open(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    minute = timedelta(minutes=1)
    batch = [
        event({"app": "a", "timestamp": parse_time("2024-05-01T10:00:10Z")}, 1),
        event({"app": "a", "timestamp": parse_time(AHEAD)}, 2),  # the key is cached by now
        event({"app": "a", "timestamp": parse_time("2024-05-01T10:00:40Z")}, 3, ARRIVAL + minute),
        event(
            {"app": "a", "timestamp": parse_time("2024-05-01T10:01:20Z")}, 4, ARRIVAL + 2 * minute
        ),
    ]
    out = bolt.process(batch)
    bolt.commit_state(lambda _e: True, None)
    bolt.state_committed()
    assert out.streams.get("late", []) == []
