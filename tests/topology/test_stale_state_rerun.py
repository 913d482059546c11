"""A stateful bolt's commit refused because another process committed the stored state it read
(``StateMoved``, ``MarkMoved``: a ``StaleState``) is not retried as it is — the same staged state
would be refused every time, the retry budget spent and the batch failed (``squall run`` then
stopped) — the engine runs the batch again from the stored state as it is now."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.deploy.test_window_concurrent_commits import HandOff
from tests.enrichment.test_concurrent_updates import TOPOLOGY as SUBSCRIPTION_TOPOLOGY

# The subscription topology of tests/enrichment/test_concurrent_updates.py, its store on its own
# database (`state`) or on the warehouse's (`db`: one transaction).
TOPOLOGY = SUBSCRIPTION_TOPOLOGY.replace("store: state,", "store: {store},")


def subscribe(topic: str, second: int) -> dict:
    at = f"2024-05-01T10:00:{second:02d}Z"
    return {"event_type": "subscribe", "device_token": "k", "timestamp": at, "topics": [topic]}


@pytest.mark.parametrize("shared", [False, True], ids=["own-database", "warehouse-transaction"])
def test_a_state_moved_meanwhile_runs_the_batch_again_at_once(tmp_path: Path, shared: bool):
    store = "db" if shared else "state"  # (db: the warehouse's, one transaction)
    text = TOPOLOGY.format(
        state=f"sqlite:///{tmp_path / 'state.db'}",
        db=tmp_path / "w.db",
        store=store,
        options="table: subs",
    )
    first, second = Engine(load_text(text).plan), Engine(load_text(text).plan)
    HandOff.then[:] = []
    assert first.process(records_from([subscribe("news", 0)], shard_id="a")).ok
    # while the first engine's sinks write, the second commits an update of the same key
    HandOff.then[:] = [
        lambda: second.process(records_from([subscribe("sport", 5)], shard_id="b", start=10))
    ]
    result = first.process(records_from([subscribe("weather", 9)], shard_id="a", start=2))
    assert result.ok and result.checkpoint  # not BatchFailed after retrying the same commit
    first.process(
        records_from([{"event_type": "click", "device_token": "k"}], shard_id="a", start=3)
    )
    rows = sqlite3.connect(tmp_path / "w.db").execute("select topics from events").fetchall()
    assert json.loads(rows[-1][0]) == ["news", "sport", "weather"]
    assert first.stats[1].received == 3  # the batch run twice counts its record once
