"""The window bolt against real stores (SQLite, PostgreSQL, Redis): windows, aggregates,
lateness, replays, partial commits, two writers, idle shards, and Lambda invocations across a split."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pydantic
import pytest
import redis

from squall.bolts.window import WindowBolt
from squall.component import ComponentContext
from squall.deploy.lambda_consumer import make_handler
from squall.event import Event, RecordMeta, lineage
from squall.testing import records_from, run_topology
from squall.times import duration_ms
from tests.enrichment.support import resources
from tests.factories import kinesis_lambda_event

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z, a minute boundary
MIN = 60_000


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_url(request, tmp_path: Path, unique_name: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    elif request.param == "postgresql":
        yield request.getfixturevalue("pg_url")
    else:
        url = request.getfixturevalue("redis_url")
        yield url
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"test:{unique_name}:*"))
        if keys:
            client.delete(*keys)


def make_bolt(url: str, name: str, **config) -> WindowBolt:
    c = {
        "id": "win",
        "type": "window",
        "store": "state",
        "key": ["app"],
        "size": "1m",
        "aggregates": {"n": {"fn": "count"}},
        "name": name,
        "table": f"w_{name}",
        "key_prefix": "test:",
        **config,
    }
    bolt = WindowBolt(WindowBolt.Config(**c), ComponentContext("t"))
    bolt.open(resources(state=url))
    return bolt


def ev(i: int, t: int, shard: str = "shardId-000000000000", **payload) -> Event:
    meta = RecordMeta("s", shard, str(1000 + i), 0, "pk")
    return Event(b"", meta, None, i, {"timestamp": t, "app": "a", **payload})


def mark_name(shard: str) -> str:
    """The name of the mark of ``ev``'s records of ``shard``: their lineage (shard and stream)."""
    return lineage(ev(0, 0, shard).meta)


def run(
    bolt: WindowBolt, events: list[Event], covered=lambda e: True
) -> tuple[list[dict], list[Event]]:
    """One batch through the bolt and its commit: (results, late events)."""
    out = bolt.process(events)
    bolt.commit_state(covered, None)
    bolt.state_committed()
    return [e.value for e in out.streams.get("default", [])], out.streams.get("late", [])


def finals(results: list[dict]) -> dict[tuple, dict]:
    return {(r["window_start"], r.get("app")): r for r in results if r["final"]}


# -- configuration ----------------------------------------------------------------------------------


def test_durations_parse_seconds_and_units():
    assert [duration_ms(v) for v in (60, "30s", "1m", "500ms", "2h", "1d", 1.5)] == [
        60_000,
        30_000,
        60_000,
        500,
        7_200_000,
        86_400_000,
        1500,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        duration_ms("soon")


def test_a_day_by_ten_seconds_is_accepted():
    """The bound on windows an event falls in (10,000) leaves real hopping windows alone."""
    c = WindowBolt.Config(
        id="w", type="window", store="s", size="1d", hop="10s", aggregates={"n": {"fn": "count"}}
    )
    assert c.hop == "10s"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"hop": "7s"}, "hop must divide size"),
        ({"size": "1d", "hop": "1s"}, "each event in 86,400 windows"),
        ({"aggregates": {"u": {"fn": "count_distinct"}}}, "count_distinct needs a field"),
        ({"aggregates": {}}, "name at least one"),
        ({"aggregates": {"app": {"fn": "count"}}}, "clash"),
        ({"size": "soon"}, "not a duration"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(config, message):
    c = {
        "id": "w",
        "type": "window",
        "store": "s",
        "key": ["app"],
        "size": "1m",
        "aggregates": {"n": {"fn": "count"}},
        **config,
    }
    with pytest.raises(pydantic.ValidationError, match=message):
        WindowBolt.Config(**c)


# -- windows, lateness, aggregates ------------------------------------------------------------------


def test_tumbling_counts_close_when_the_watermark_passes_and_late_events_go_to_late(
    store_url, unique_name
):
    bolt = make_bolt(store_url, unique_name, allowed_lateness="10s")
    results, late = run(bolt, [ev(0, T0 + 1000), ev(1, T0 + 30_000, app="b"), ev(2, T0 + 59_999)])
    assert results == []  # nothing closed yet
    results, late = run(bolt, [ev(3, T0 + MIN + 5000), ev(4, T0 + 50_000)])  # still within lateness
    assert results == [] and late == []
    # The watermark moves with each event: ev 6 comes after 10:01:10, so 10:00 is closed for it.
    results, late = run(bolt, [ev(5, T0 + MIN + 10_000), ev(6, T0 + 20_000)])
    assert late and late[0].value["timestamp"] == T0 + 20_000 and late[0].failure.stream == "late"
    assert "late" in late[0].failure.reason
    got = finals(results)
    assert got == {
        ("2024-05-01T10:00:00.000Z", "a"): {
            "window_start": "2024-05-01T10:00:00.000Z",
            "window_end": "2024-05-01T10:01:00.000Z",
            "app": "a",
            "n": 3,
            "final": True,
        },
        ("2024-05-01T10:00:00.000Z", "b"): {
            "window_start": "2024-05-01T10:00:00.000Z",
            "window_end": "2024-05-01T10:01:00.000Z",
            "app": "b",
            "n": 1,
            "final": True,
        },
    }
    # closed windows are not emitted again; the next minute closes with its own count
    results, _ = run(bolt, [ev(8, T0 + 3 * MIN)])
    assert {k: r["n"] for k, r in finals(results).items()} == {("2024-05-01T10:01:00.000Z", "a"): 2}


def test_hopping_windows_count_an_event_in_each_window_it_falls_in(tmp_path: Path, unique_name):
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, size="3m", hop="1m")
    first, _ = run(bolt, [ev(0, T0 + 30_000), ev(1, T0 + MIN + 1), ev(2, T0 + 2 * MIN + 1)])
    # no lateness: the windows ending by the watermark (10:02:00.001) close in the same batch
    assert sorted(r["window_start"][11:16] for r in first) == ["09:58", "09:59"]
    results, _ = run(bolt, [ev(3, T0 + 10 * MIN)])
    results += first
    counts = {r["window_start"][11:16]: r["n"] for r in results}
    assert counts == {"09:58": 1, "09:59": 2, "10:00": 3, "10:01": 2, "10:02": 1}
    assert all(r["window_end"] > r["window_start"] for r in results)


def test_every_aggregate_and_where_filters(tmp_path: Path, unique_name):
    aggs = {
        "events": {"fn": "count"},
        "subscribes": {"fn": "count", "where": {"type": ["subscribe", "register"]}},
        "users": {"fn": "count_distinct", "field": "user", "exact_limit": 4},
        "few_users": {"fn": "count_distinct", "field": "user", "where": {"type": "subscribe"}},
        "total": {"fn": "sum", "field": "ms"},
        "low": {"fn": "min", "field": "ms"},
        "high": {"fn": "max", "field": "ms"},
        "avg": {"fn": "mean", "field": "ms"},
        "first_user": {"fn": "first", "field": "user"},
        "last_user": {"fn": "last", "field": "user"},
        "p90": {"fn": "percentile", "field": "ms", "q": 0.9},
    }
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates=aggs)
    rng = random.Random(3)
    events = []
    for i in range(1000):
        t = T0 + rng.randrange(MIN)
        events.append(
            ev(i, t, user=f"u{i % 300}", ms=i, type=rng.choice(["subscribe", "click", "register"]))
        )
    for i in range(0, 1000, 100):  # ten batches: the stored state and the deltas merge
        run(bolt, events[i : i + 100])
    results, _ = run(bolt, [ev(2000, T0 + 5 * MIN)])
    [r] = [r for r in results if r["window_start"].endswith("10:00:00.000Z")]
    values = [e.value for e in events]
    assert r["events"] == 1000
    assert r["subscribes"] == sum(v["type"] in ("subscribe", "register") for v in values)
    assert abs(r["users"] - 300) <= 300 * 0.05  # HLL beyond 4 exact values
    assert abs(r["few_users"] - len({v["user"] for v in values if v["type"] == "subscribe"})) <= 15
    assert (r["total"], r["low"], r["high"]) == (sum(range(1000)), 0, 999)
    assert r["avg"] == pytest.approx(499.5)
    by_time = sorted(events, key=lambda e: (e.value["timestamp"], int(e.meta.sequence_number)))
    assert r["first_user"] == by_time[0].value["user"]
    assert r["last_user"] == by_time[-1].value["user"]
    assert abs(r["p90"] - 900) <= 30


NUMERIC = {
    "n": {"fn": "count"},
    "total": {"fn": "sum", "field": "v"},
    "low": {"fn": "min", "field": "v"},
    "high": {"fn": "max", "field": "v"},
    "avg": {"fn": "mean", "field": "v"},
    "low_s": {"fn": "min", "field": "s"},
    "high_s": {"fn": "max", "field": "s"},
}


def test_deltas_folded_from_the_log_give_what_one_batch_gives(
    store_url, unique_name, tmp_path: Path
):
    """Four batches' deltas, one event per key each, folded from the store's log when the window
    closes, give what one batch gives — float sums to the last bit, min/max in one
    order (numbers before text, text by code point: 'Z' < 'a' < 'é'), a batch without the field."""
    merged = make_bolt(store_url, unique_name, aggregates=NUMERIC)
    values = {
        "x": [(1 / 3, "b"), (0.2, 5), (0.7, None), (-3, "a")],
        "y": [(10**15 + 1, "é"), (2, "Z"), (2.5, "a"), (1e300, None)],
        "z": [(1, None), (2, None), (3, "Z"), (4, None)],
    }
    batches = [
        [
            ev(
                10 * b + i,
                T0 + 1000 * b + i,
                app=k,
                v=vs[b][0],
                **({"s": vs[b][1]} if vs[b][1] is not None else {}),
            )
            for i, (k, vs) in enumerate(values.items())
        ]
        for b in range(4)
    ]
    for batch in batches:
        run(merged, batch)
    results, _ = run(merged, [ev(99, T0 + 2 * MIN, app="x", v=0)])
    got = {r["app"]: r for r in results if r["window_start"].endswith("10:00:00.000Z")}

    reference = make_bolt(f"sqlite:///{tmp_path / 'ref.db'}", unique_name, aggregates=NUMERIC)
    want, _ = run(
        reference, [e for batch in batches for e in batch] + [ev(99, T0 + 2 * MIN, app="x", v=0)]
    )
    want = {r["app"]: r for r in want if r["window_start"].endswith("10:00:00.000Z")}
    assert got == want
    assert got["x"]["total"] == 1 / 3 + 0.2 + 0.7 - 3 and got["x"]["low_s"] == 5
    assert (got["y"]["low_s"], got["y"]["high_s"], got["y"]["n"]) == ("Z", "é", 4)
    assert got["y"]["total"] == 10**15 + 1 + 2 + 2.5 + 1e300


def test_a_bad_record_is_its_own_failure_and_changes_nothing(tmp_path: Path, unique_name):
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}",
        unique_name,
        aggregates={"n": {"fn": "count"}, "total": {"fn": "sum", "field": "v"}},
    )
    good, no_time, no_key, text = ev(0, T0, v=1), ev(1, T0, v=1), ev(2, T0, v=1), ev(3, T0, v="x")
    no_time.value.pop("timestamp")
    no_key.value.pop("app")
    out = bolt.process([good, no_time, no_key, text])
    failed = {e.origin: e.failure.reason for e in out.streams["error"]}
    assert set(failed) == {1, 2, 3}
    assert "timestamp" in failed[1] and "app" in failed[2] and "not a number" in failed[3]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(9, T0 + 2 * MIN)])
    assert [(r["n"], r["total"]) for r in results] == [(1, 1)]


# -- exactly once -----------------------------------------------------------------------------------


def reference(events: list[Event], batches: list[int], url: str, name: str) -> dict:
    bolt = make_bolt(
        url,
        name,
        allowed_lateness="5s",
        aggregates={"n": {"fn": "count"}, "s": {"fn": "sum", "field": "v"}},
    )
    out: dict = {}
    for i in range(0, len(events), 25):
        results, _ = run(bolt, events[i : i + 25])
        out.update(finals(results))
    return out


def workload(n: int = 300, seed: int = 5) -> list[Event]:
    rng = random.Random(seed)
    return [
        ev(
            i,
            T0 + i * 1500 - rng.choice([0, 0, 4000, 9000]),
            app=rng.choice("abc"),
            v=rng.randrange(10),
        )
        for i in range(n)
    ]


def test_replays_after_partial_commits_and_lost_checkpoints_end_with_the_same_results(
    store_url, unique_name
):
    """A batch fails after record k (only records before it are covered), or its state is committed
    but the checkpoint lost: delivered again, the results upserted by key are those of one clean run."""
    events = workload()
    want = reference(events, [], store_url, unique_name + "r")
    rng = random.Random(11)
    bolt = make_bolt(
        store_url,
        unique_name,
        allowed_lateness="5s",
        aggregates={"n": {"fn": "count"}, "s": {"fn": "sum", "field": "v"}},
    )
    table: dict = {}  # the warehouse, upsert by (window_start, app)
    pos = 0
    while pos < len(events):
        batch = [
            Event(b"", e.meta, None, j, dict(e.value)) for j, e in enumerate(events[pos : pos + 25])
        ]
        out = bolt.process(batch)
        table.update(
            finals([e.value for e in out.streams.get("default", [])])
        )  # sinks commit first
        fate = rng.random()
        if fate < 0.3:  # record k failed downstream: the checkpoint stops before it
            k = rng.randrange(len(batch))
            bolt.commit_state(lambda e, k=k: e.origin < k)
            bolt.state_committed()
            pos += k
        elif fate < 0.45:  # crash between the state and the checkpoint: the same batch comes again
            bolt.commit_state(lambda e: True)
            bolt.state_committed()
        elif fate < 0.55:  # the state store failed: nothing committed
            bolt.discard_state()
        else:
            bolt.commit_state(lambda e: True)
            bolt.state_committed()
            pos += len(batch)
    assert table == want
    assert sum(r["n"] for r in want.values()) < len(
        events
    )  # some were late, so the check has teeth
    assert len(want) > 5


def test_a_batch_delivered_again_before_its_state_commit_gives_the_same_results(
    tmp_path: Path, unique_name
):
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name)
    run(bolt, [ev(0, T0), ev(1, T0 + 1)])
    batch = [ev(2, T0 + 2), ev(3, T0 + 3 * MIN)]
    first = [e.value for e in bolt.process(batch).streams["default"]]
    bolt.discard_state()  # the sink failed: nothing committed
    again, _ = run(bolt, [ev(2, T0 + 2), ev(3, T0 + 3 * MIN)])
    assert first == again and [r["n"] for r in first] == [3]


def test_two_writers_on_one_window_never_lose_an_update(store_url, unique_name):
    """Two processes (two shards under Lambda) add to the same window; one closes it while the other
    commits meanwhile: the cell stays open and is emitted again, complete."""
    a = make_bolt(store_url, unique_name)
    b = make_bolt(store_url, unique_name)
    s1, s2 = "shardId-000000000001", "shardId-000000000002"
    run(a, [ev(0, T0, s1)])
    run(b, [ev(0, T0 + 1, s2)])
    out_a = a.process([ev(1, T0 + 2 * MIN, s1)])  # shard 2's watermark still holds the window open
    assert "default" not in out_a.streams
    a.commit_state(lambda e: True)
    a.state_committed()
    out_b = b.process([ev(1, T0 + 5, s2), ev(2, T0 + 2 * MIN, s2)])  # one more, then closes 10:00
    assert [e.value["n"] for e in out_b.streams["default"]] == [3]
    # Before b commits, a takes a last event for 10:00: its view of shard 2 is still 10:00:00.001.
    out_a = a.process([ev(2, T0 + 10, s1)])
    assert "default" not in out_a.streams and "late" not in out_a.streams
    b.commit_state(lambda e: True)  # closes the cell it read (revision unchanged)
    b.state_committed()
    a.commit_state(lambda e: True)  # adds to the closed cell: open again
    a.state_committed()
    results, _ = run(b, [ev(3, T0 + 3 * MIN, s2)])
    assert [r["n"] for r in results if r["window_start"].endswith("10:00:00.000Z")] == [4]


def test_a_close_after_another_writer_added_to_the_window_is_refused(store_url, unique_name):
    """b emits 10:00 (n = 3), but a commits one more event to it before b commits: b's close finds
    another revision and leaves the cell open; a later batch emits it again, complete."""
    a = make_bolt(store_url, unique_name)
    b = make_bolt(store_url, unique_name)
    s1, s2 = "shardId-000000000001", "shardId-000000000002"
    run(a, [ev(0, T0, s1)])
    run(b, [ev(0, T0 + 1, s2)])
    run(a, [ev(1, T0 + 2 * MIN, s1)])
    out_b = b.process([ev(1, T0 + 5, s2), ev(2, T0 + 2 * MIN, s2)])
    assert [e.value["n"] for e in out_b.streams["default"]] == [3]
    out_a = a.process([ev(2, T0 + 10, s1)])
    assert "default" not in out_a.streams
    a.commit_state(lambda e: True)
    a.state_committed()
    b.commit_state(lambda e: True)  # the revision moved: not closed
    b.state_committed()
    results, _ = run(b, [ev(3, T0 + 3 * MIN, s2)])
    assert [r["n"] for r in results if r["window_start"].endswith("10:00:00.000Z")] == [4]
    results, _ = run(b, [ev(4, T0 + 4 * MIN, s2)])  # closed now: not emitted again
    assert not [r for r in results if r["window_start"].endswith("10:00:00.000Z")]


@pytest.mark.parametrize("aggregates", ["count", "numeric"])
def test_concurrent_writers_adding_to_the_same_cells_lose_no_count(
    store_url, unique_name, aggregates
):
    """Four writers (shards in parallel, as under Lambda) add to the same 40 keys of one window in
    batches, each commit retried when the store says transient (lock conflicts): no count lost —
    nor any sum, minimum or maximum, which the store merges itself like the counts."""
    import threading

    from squall.errors import TransientError

    aggs = {"n": {"fn": "count"}} if aggregates == "count" else NUMERIC
    bolts = [make_bolt(store_url, unique_name, aggregates=aggs) for _ in range(4)]
    per_writer, batch = 600, 50

    def write(k: int) -> None:
        bolt, rng = bolts[k], random.Random(k)
        events = [
            ev(
                i,
                T0 + rng.randrange(50_000),
                f"shardId-00000000000{k}",
                app=f"k{rng.randrange(40)}",
                v=1000 * k + i,
            )
            for i in range(per_writer)
        ]
        for i in range(0, per_writer, batch):
            for _ in range(50):
                try:
                    run(bolt, events[i : i + batch])
                    break
                except TransientError:
                    bolt.discard_state()
            else:
                raise AssertionError("the store stayed busy")

    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            write(k)
        except BaseException as exc:  # a writer that dies must fail the test, not lose its counts
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    # one more event per shard moves every watermark past 10:00: the window closes, complete
    closer = bolts[0]
    results = []
    for k in range(4):
        results += run(closer, [ev(per_writer + k, T0 + 2 * MIN, f"shardId-00000000000{k}")])[0]
    mine = [r for r in results if r["window_start"].endswith("10:00:00.000Z")]
    got = {r["app"]: r["n"] for r in mine}
    assert sum(got.values()) == 4 * per_writer and len(got) == 40
    if aggregates == "numeric":  # v: 1000 * writer + its event number, 0 … 3599 in all
        assert sum(r["total"] for r in mine) == sum(
            1000 * k + i for k in range(4) for i in range(per_writer)
        )
        assert (
            min(r["low"] for r in mine) == 0
            and max(r["high"] for r in mine) == 3000 + per_writer - 1
        )
        assert all(r["avg"] == pytest.approx(r["total"] / r["n"]) for r in mine)


def test_an_idle_parent_shard_stops_holding_windows_open(tmp_path: Path, unique_name):
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, idle_shard_after="2m")
    parent, child = "shardId-000000000000", "shardId-000000000001"
    run(bolt, [ev(0, T0, parent), ev(1, T0 + 30_000, parent)])
    results, _ = run(bolt, [ev(0, T0 + MIN + 1, child)])
    assert results == []  # the parent's watermark (10:00:30) holds 10:00 open
    results, _ = run(bolt, [ev(1, T0 + 3 * MIN, child)])  # parent 2.5 min behind: idle
    assert {r["window_start"][11:16]: r["n"] for r in results} == {"10:00": 2, "10:01": 1}


# -- through the engine and the Lambda runner -------------------------------------------------------


TOPOLOGY = """
name: win
resources:
  db: {{url: "sqlite:///{db}"}}
  state: {{url: "{state}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - id: minutely
    type: window
    store: state
    key: [app]
    size: 1m
    allowed_lateness: 5s
    idle_shard_after: 1m
    key_prefix: "{prefix}"
    table: "{prefix}win"
    aggregates:
      n: {{fn: count}}
      users: {{fn: count_distinct, field: user}}
sinks:
  - id: results
    type: warehouse
    resource: db
    table: minutely
    mode: upsert
    key: [window_start, app]
    columns:
      window_start: {{path: window_start, type: timestamp}}
      window_end: {{path: window_end, type: timestamp}}
      app: app
      n: {{path: n, type: integer}}
      users: {{path: users, type: integer}}
  - {{id: dlq, type: dead_letter, path: "{dlq}"}}
"""


def test_the_engine_writes_results_and_dead_letters_late_events(tmp_path: Path, unique_name):
    t = tmp_path / "w.yaml"
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db",
            state=f"sqlite:///{tmp_path / 'w.db'}",
            prefix=unique_name,
            dlq=tmp_path / "dlq.jsonl",
        )
    )
    payloads = [
        {"timestamp": T0 + i * 10_000, "app": "ab"[i % 2], "user": f"u{i % 3}"} for i in range(20)
    ]
    payloads.append({"timestamp": T0, "app": "a", "user": "late"})
    runs = run_topology(t, records_from(payloads), batch_size=7)
    counts = Counter(o.outcome.name for o in runs.outcomes)
    # the records whose batch closed a window count as committed (they carry its results)
    assert counts["DEAD_LETTERED"] == 1 and "FAILED" not in counts and sum(counts.values()) == 21, (
        counts
    )
    rows = (
        sqlite3.connect(tmp_path / "w.db")
        .execute("select window_start, app, n, users from minutely order by 1, 2")
        .fetchall()
    )
    assert [r[1:] for r in rows] == [("a", 3, 3), ("b", 3, 3)] * 3  # 10:03 is still open
    assert "late" in (tmp_path / "dlq.jsonl").read_text()


@pytest.mark.parametrize("state", ["sqlite", "redis"])
def test_the_end_of_input_emits_the_open_windows_once_and_more_input_reopens_them(
    state, tmp_path: Path, unique_name, request
):
    """``Engine.finish`` (``squall run`` at the end of a file): the windows still open are
    emitted, final, and closed in the commit; ending again emits nothing more; an event of such a
    window in a later input reopens it and it is emitted again, complete (the upsert replaces)."""
    t = tmp_path / "w.yaml"
    store = (
        f"sqlite:///{tmp_path / 'w.db'}"
        if state == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db", state=store, prefix=unique_name, dlq=tmp_path / "dlq.jsonl"
        )
    )
    db = sqlite3.connect(tmp_path / "w.db", isolation_level=None)

    def rows() -> list[tuple]:
        return db.execute(
            "select window_start, app, n, users from minutely order by 1, 2"
        ).fetchall()

    payloads = [
        {"timestamp": T0 + i * 10_000, "app": "ab"[i % 2], "user": f"u{i % 3}"} for i in range(20)
    ]
    first = run_topology(t, records_from(payloads), batch_size=7, end_of_input=True)
    ends = [o for o in first.outcomes if o.shard_id == "<end of input>"]
    assert len(ends) == 1 and ends[0].outcome.name == "COMMITTED"  # it carried the results
    assert [r[1:] for r in rows()] == [("a", 3, 3), ("b", 3, 3)] * 3 + [("a", 1, 1), ("b", 1, 1)]
    before = rows()
    again = run_topology(t, [], end_of_input=True)  # a restart at the end of the file
    assert [o.outcome.name for o in again.outcomes] == ["FILTERED"] and rows() == before
    # more input (seq numbers go on) in the flushed minute 10:03 and the next one
    more = records_from(
        payloads
        + [
            {"timestamp": T0 + 3 * MIN + 30_000, "app": "a", "user": "u9"},
            {"timestamp": T0 + 4 * MIN + 10_000, "app": "a", "user": "u9"},
        ]
    )[20:]
    run_topology(t, more, end_of_input=True)
    after = rows()
    assert after[:6] == before[:6]
    assert [r[1:] for r in after[6:]] == [("a", 2, 2), ("b", 1, 1), ("a", 1, 1)]
    if state == "redis":
        client = redis.Redis.from_url(store)
        keys = list(client.scan_iter(f"{unique_name}*"))
        if keys:
            client.delete(*keys)


@pytest.mark.parametrize("state", ["sqlite", "redis"])
def test_a_window_across_lambda_invocations_and_a_shard_split(
    state, tmp_path: Path, unique_name, request
):
    """Each invocation runs in a fresh handler (a new Lambda environment): the window state is
    never only in memory. The parent shard ends at a split; the children carry the window on."""
    url = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if state == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    t = tmp_path / "w.yaml"
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db", state=url, prefix=unique_name, dlq=tmp_path / "dlq.jsonl"
        )
    )

    def invoke(shard: str, payloads: list[dict], start: int) -> None:
        handler = make_handler(t)
        try:
            assert handler(kinesis_lambda_event(payloads, shard=shard, start=start), None) == {
                "batchItemFailures": []
            }
        finally:
            handler.engine.close()

    def rows() -> list[tuple]:
        return (
            sqlite3.connect(tmp_path / "w.db")
            .execute(
                "select substr(window_start, 12, 5), app, n, users from minutely order by 1, 2"
            )
            .fetchall()
        )

    parent, left, right = "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"
    p = lambda s, app, u: {"timestamp": T0 + s * 1000, "app": app, "user": u}  # noqa: E731
    invoke(parent, [p(0, "a", "u1"), p(10, "a", "u2")], 10**20)
    invoke(
        parent, [p(20, "a", "u1"), p(25, "b", "u3")], 10**20 + 10
    )  # the parent's last records: split
    invoke(left, [p(30, "a", "u4"), p(61, "a", "u1")], 10**21)
    invoke(right, [p(40, "b", "u5"), p(50, "a", "u6")], 10**21)
    assert rows() == []  # the right child's watermark (10:00:50) holds 10:00 open
    invoke(left, [p(100, "b", "u1")], 10**21 + 10)
    assert (
        rows() == []
    )  # the parent (10:00:25) is idle now, but the right child still holds 10:00 open
    invoke(
        right, [p(120, "a", "u9")], 10**21 + 10
    )  # both children past 10:01:05; the parent is idle
    assert rows() == [("10:00", "a", 5, 4), ("10:00", "b", 2, 2)]
    invoke(right, [p(120, "a", "u9")], 10**21 + 10)  # Lambda retries an invocation: nothing changes
    assert rows() == [("10:00", "a", 5, 4), ("10:00", "b", 2, 2)]
    invoke(left, [p(200, "a", "u1")], 10**21 + 20)
    invoke(right, [p(200, "a", "u1")], 10**21 + 20)
    assert rows() == [
        ("10:00", "a", 5, 4),
        ("10:00", "b", 2, 2),
        ("10:01", "a", 1, 1),
        ("10:01", "b", 1, 1),
        ("10:02", "a", 1, 1),
    ]
    if state == "redis":
        client = redis.Redis.from_url(url)
        client.delete(*client.scan_iter(f"{unique_name}*"))


def test_early_updates_every_batch_then_one_final_result(tmp_path: Path, unique_name):
    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, emit="every_batch", allowed_lateness="30s"
    )
    first, _ = run(bolt, [ev(0, T0), ev(1, T0 + 1)])
    second, _ = run(bolt, [ev(2, T0 + 2), ev(3, T0 + MIN + 10)])
    third, _ = run(bolt, [ev(4, T0 + 2 * MIN)])
    assert [(r["window_start"][11:16], r["n"], r["final"]) for r in first] == [("10:00", 2, False)]
    assert sorted((r["window_start"][11:16], r["n"], r["final"]) for r in second) == [
        ("10:00", 3, False),
        ("10:01", 1, False),
    ]
    assert sorted((r["window_start"][11:16], r["n"], r["final"]) for r in third) == [
        ("10:00", 3, True),
        ("10:02", 1, False),
    ]


def test_a_bad_window_in_yaml_is_reported_with_its_location():
    from squall.errors import TopologyError
    from squall.topology.loader import load_text

    yaml = """
name: bad
resources:
  state: {url: "sqlite:///x.db"}
spout: {type: stdin}
bolts:
  - id: minutely
    type: window
    store: state
    size: 1m
    hop: 7s
    aggregates: {users: {fn: count_distinct}, n: {fn: median}}
sinks:
  - {id: out, type: stdout}
"""
    with pytest.raises(TopologyError) as info:
        load_text(yaml)
    text = str(info.value)
    assert ":12:25: bolts[0].aggregates.users: count_distinct needs a field" in text
    assert ":12:55: bolts[0].aggregates.n.fn: Input should be 'count'" in text


@pytest.mark.parametrize(
    ("aggregate", "fn"),
    [
        ({"fn": "percentile", "field": "ms", "q": 0.9}, "percentile"),
        ({"fn": "count_distinct", "field": "user"}, "count_distinct"),
    ],
)
def test_a_sketch_aggregate_without_datasketches_stops_the_start(
    tmp_path: Path, unique_name, monkeypatch, aggregate, fn
):
    """Without the `windows` extra every event reaching a percentile (or a count_distinct past
    its exact values) was dead-lettered with ModuleNotFoundError; the start stops instead."""
    from squall.errors import TopologyError

    monkeypatch.setitem(__import__("sys").modules, "datasketches", None)
    with pytest.raises(TopologyError) as info:
        make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates={"x": aggregate})
    assert f"win.aggregates.x.fn: {fn} needs datasketches (pip install 'squall[windows]'" in str(
        info.value
    )
    make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name).close()  # count alone needs none


def test_two_key_fields_and_arrival_time(tmp_path: Path, unique_name):
    from datetime import UTC, datetime

    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, key=["app", "geo.country"], time_field=None
    )

    def arriving(i: int, ms: int, app: str, country) -> Event:
        meta = RecordMeta(
            "s",
            "shardId-000000000000",
            str(1000 + i),
            0,
            "pk",
            datetime.fromtimestamp(ms / 1000, UTC),
        )
        return Event(
            b"", meta, None, i, {"app": app, "geo": {"country": country}, "timestamp": "ignored"}
        )

    out = bolt.process(
        [
            arriving(0, T0, "a", "FR"),
            arriving(1, T0 + 5, "a", "FR"),
            arriving(2, T0 + 9, "a", 33),
            arriving(3, T0 + 10, "b", None),
            arriving(4, T0 + MIN, "a", "FR"),
        ]
    )
    assert [e.origin for e in out.streams["error"]] == [3]  # a key field without a value
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results = sorted(
        ((r.value["app"], r.value["country"], r.value["n"]) for r in out.streams["default"]),
        key=str,
    )
    assert results == [("a", "FR", 2), ("a", 33, 1)]


def test_a_store_outage_while_closing_leaves_nothing_counted_twice(tmp_path: Path, unique_name):
    """The engine calls process again after a TransientError: the failed call must have staged nothing."""
    from squall.errors import TransientError

    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name)
    run(bolt, [ev(0, T0)])
    batch = [ev(1, T0 + 1), ev(2, T0 + MIN)]
    real = bolt.store.open_windows
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("window store read: connection refused")
        return real()

    bolt.store.open_windows = flaky
    with pytest.raises(TransientError):
        bolt.process(batch)
    out = bolt.process(batch)  # the engine's retry of the call
    assert [e.value["n"] for e in out.streams["default"]] == [2]
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    results, _ = run(bolt, [ev(3, T0 + 2 * MIN)])
    assert [r["n"] for r in results] == [1]  # 10:01 holds ev 2 once


def test_sum_is_exact_whatever_the_grouping():
    """Sum/mean states: any split of the values into partial states, merged in any order, gives
    ``math.fsum`` of all the values (correctly rounded); integers stay exact integers."""
    import math
    import random

    from squall.bolts.window_aggs import Mean, Sum

    rng = random.Random(11)
    s, m = Sum(), Mean()
    for _ in range(200):
        values = [
            rng.choice([rng.random() * 10 ** rng.randint(-5, 15), rng.randint(-(10**6), 10**6)])
            * rng.choice([1, -1])
            for _ in range(rng.randint(1, 60))
        ]
        parts, states, mstates = list(values), [], []
        rng.shuffle(parts)
        while parts:
            k = rng.randint(1, 8)
            chunk, parts = parts[:k], parts[k:]
            st, ms = s.new(), m.new()
            for v in chunk:
                st, ms = s.add(st, v, None), m.add(ms, v, None)
            states.append(orjson.loads(orjson.dumps(st)))  # stored and read back as JSON
            mstates.append(ms)
        rng.shuffle(states)
        total = states[0]
        for st in states[1:]:
            total = s.merge(total, st) if rng.random() < 0.5 else s.merge(st, total)
        mtotal = mstates[0]
        for ms in mstates[1:]:
            mtotal = m.merge(mtotal, ms)
        want = math.fsum(values) if any(isinstance(v, float) for v in values) else sum(values)
        assert s.result(total) == want and type(s.result(total)) is type(want)
        assert m.result(mtotal) == want / len(values)
    # beyond 64 bits (what JSON stores) an integer sum is kept as its digits: still exact, an
    # integer (tests/bolts/test_window_answers.py); with a float, the integer part moves into the
    # partials, exactly
    big = s.add(s.add(s.new(), 2**62, None), 2**62, None)
    big = orjson.loads(orjson.dumps(s.add(big, 3, None)))
    assert s.result(big) == 2**63 + 3 and s.result(s.merge(big, -(2**63))) == 3
    assert s.result(s.merge(s.add(0, 2**63 - 1, None), 1)) == 2**63
    mixed = orjson.loads(orjson.dumps(s.add(big, 0.5, None)))
    assert s.result(mixed) == float(2**63 + 3) and s.result(s.merge(mixed, -(2**63))) == 3.5
    with pytest.raises(ValueError, match="finite"):
        s.add(s.new(), float("inf"), None)


def test_early_results_of_two_inputs_ending_a_batch_at_the_same_line_have_two_ids(
    tmp_path: Path, unique_name
):
    """An early result's id names the record ending its batch by lineage and position: two
    daily files (both the file spout's shard) end their first batch at line 2, and an insert-mode
    sink (idempotent on event_id) kept only the first file's update."""

    def line(source: str, n: int, t: int) -> Event:
        meta = RecordMeta("day.jsonl", "file", str(n), 0, "", fingerprint=source, source=source)
        return Event(b"", meta, None, n, {"timestamp": t, "app": "a"})

    bolt = make_bolt(
        f"sqlite:///{tmp_path / 's.db'}", unique_name, emit="every_batch", allowed_lateness="30s"
    )
    first = bolt.process([line("d1", 1, T0), line("d1", 2, T0 + 1)])
    bolt.commit_state(lambda e: True, None)
    bolt.state_committed()
    second = bolt.process([line("d2", 1, T0 + 2), line("d2", 2, T0 + 3)])
    (a,), (b,) = first.streams["default"], second.streams["default"]
    assert (a.value["n"], b.value["n"]) == (2, 4)
    assert a.event_id != b.event_id


def test_arrival_time_on_a_file_names_what_to_set(tmp_path: Path, unique_name):
    """`time_field: null` reading a file: every record fails (a line has no arrival time), and the
    reason says why and what to set — it said only `the record has no arrival time`."""
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, time_field=None)
    out = bolt.process([ev(0, T0)])  # a RecordMeta without an arrival time, as a file's line
    (failed,) = out.streams["error"]
    assert "a file's, stdin's or an S3 object's records have none" in failed.failure.reason
    assert "set time_field to the event's time field" in failed.failure.reason
