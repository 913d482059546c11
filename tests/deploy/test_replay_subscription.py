"""``squall replay`` through the ``subscription`` bolt: a bad deploy dead-lettered some of a
device's events while its later events passed; the fix is deployed and the dead letters are
re-driven. The warehouse rows and the states must end as one in-order delivery would have left
them (the run without the bad deploy), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from squall.cli import main
from squall.event import Record

#: The bad deploy: only app "a" is valid (app "b"'s events are dead-lettered by validate).
STRICT = {"type": "object", "properties": {"app": {"enum": ["a"]}}}
FIXED = {"type": "object", "properties": {"app": {"enum": ["a", "b"]}}}

TOPOLOGY = """
name: replay-subscription
resources:
  warehouse: {{url: "{url}"}}
spout: {{type: kinesis, stream: events, endpoint_url: "http://127.0.0.1:9", checkpoint: {{store: sql, resource: warehouse, table: {table}_cp}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: schema.json}}
  - {{id: subscription, type: subscription, store: warehouse, key: device_token, table: {table}_subs}}
sinks:
  - id: rows
    type: warehouse
    resource: warehouse
    table: {table}
    columns:
      event_id: meta.event_id
      n: {{path: n, type: integer}}
      subscribed: {{path: subscription.subscribed, type: boolean}}
      status: subscription.status
  - {{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}}
"""


def event(n: int, kind: str, token: str, minute: int, app: str = "a") -> bytes:
    return json.dumps(
        {
            "n": n,
            "event_type": kind,
            "device_token": token,
            "app": app,
            "timestamp": f"2026-11-03T10:{minute:02d}:00Z",
        }
    ).encode()


#: Two devices, one shard, in stream order; app "b"'s events fail under the strict schema.
EVENTS = [
    # K: subscribed, a page view (dead-lettered), unsubscribed: the page view was seen while
    # K was subscribed.
    event(1, "subscribe", "K", 0),
    event(2, "page_view", "K", 1, app="b"),
    event(3, "unsubscribe", "K", 2),
    # J: subscribed, unsubscribed (dead-lettered), then registered again from another app: the
    # register changes no subscription, so J is unsubscribed.
    event(4, "subscribe", "J", 3),
    event(5, "unsubscribe", "J", 4, app="b"),
    event(6, "register", "J", 5),
    event(7, "page_view", "J", 6),
]


def run(path: Path) -> None:
    from squall.testing import records_from, run_topology

    arrived = datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
    records = [
        Record(r.data, r.meta._replace(arrival_time=arrived))
        for r in records_from(EVENTS, stream="events", shard_id="shardId-000000000000", start=100)
    ]
    run_topology(path, records)


def make(tmp_path: Path, name: str, url: str, schema: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(schema))
    path = folder / "topology.yaml"
    path.write_text(TOPOLOGY.format(url=url, table=name))
    return path


def plain(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def table_rows(url: str, name: str) -> tuple[list[tuple], list[tuple]]:
    with sa.create_engine(plain(url)).connect() as conn:
        rows = conn.execute(sa.text(f"SELECT n, subscribed, status FROM {name} ORDER BY n"))
        states = conn.execute(
            sa.text(f"SELECT key, status, subscribed FROM {name}_subs ORDER BY key")
        )
        return [tuple(r) for r in rows], [tuple(s) for s in states]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path, unique_name: str):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wh.db'}"
        return
    pg = request.getfixturevalue("pg_url")
    yield pg
    with sa.create_engine(plain(pg)).begin() as conn:
        for suffix in ("a", "b"):
            for t in ("", "_cp", "_subs"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {unique_name}{suffix}{t}"))


def replayed(tmp_path: Path, url: str, name: str) -> tuple[tuple, tuple]:
    """The rows and states of a run without the bad deploy, and of the bad run once its dead
    letters were replayed with the fix (twice: the second changes nothing)."""
    truth = make(tmp_path, f"{name}a", url, FIXED)
    run(truth)
    bad = make(tmp_path, f"{name}b", url, STRICT)
    run(bad)
    dead = (bad.parent / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(json.loads(d)["record"])["n"] for d in dead] == [2, 5]

    (bad.parent / "schema.json").write_text(json.dumps(FIXED))  # the fix is deployed
    result = CliRunner().invoke(main, ["replay", str(bad), str(bad.parent / "rejects.jsonl")])
    assert result.exit_code == 0, result.output
    assert "committed 2, dead-lettered again 0" in result.output
    got = table_rows(url, f"{name}b")
    again = CliRunner().invoke(main, ["replay", str(bad), str(bad.parent / "rejects.jsonl")])
    assert again.exit_code == 0, again.output
    assert table_rows(url, f"{name}b") == got
    want = table_rows(url, f"{name}a")
    assert want[1] == [("J", "unsubscribed", False), ("K", "unsubscribed", False)]
    return want, got


def test_a_replayed_event_is_enriched_with_the_state_as_of_its_own_position(
    tmp_path: Path, url: str, unique_name: str
):
    """K's page view (n 2) came while K was subscribed (n 1), before its unsubscribe (n 3). The
    replay enriched it with K's latest state, unsubscribed: each re-driven record was a lineage
    of its own, whose position compared with none of the state's."""
    (want_rows, _), (got_rows, _) = replayed(tmp_path, url, unique_name)
    assert want_rows[1] == (2, True, "subscribed")
    assert got_rows[:4] == want_rows[:4]


def test_a_late_unsubscribe_is_applied_when_only_registers_came_after_it(
    tmp_path: Path, url: str, unique_name: str
):
    """J's unsubscribe (n 5) was dead-lettered; J registered again (n 6) from another app. The
    replayed unsubscribe, older than J's state (made by the register), was not applied: J stayed
    subscribed and would have been sent pushes. A register changes no subscription, so an older
    subscribe or unsubscribe still applies over it."""
    (want_rows, want_states), (got_rows, got_states) = replayed(tmp_path, url, unique_name)
    assert got_states == want_states
    assert got_rows[4] == want_rows[4] == (5, False, "unsubscribed")
    # (J's events after it, n 6 and 7, were written during the bad deploy, enriched with the
    # state of then: rows are not rewritten.)
