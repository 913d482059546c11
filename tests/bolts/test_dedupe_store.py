"""The dedupe bolt with a ``store``: keys remembered across batches (SQLite, PostgreSQL, Redis),
a record delivered again never a duplicate of itself, ttl, replays, and a window after it."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from squall.bolts import dedupe_store
from squall.bolts.dedupe import DedupeBolt
from squall.component import ComponentContext
from squall.errors import BatchFailed, StaleState, TopologyError, TransientError
from squall.event import Event, Record, RecordMeta, derive_event_id
from squall.spouts.lines import line_batches
from squall.testing import run_topology
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.enrichment.support import make_event, resources

HOUR = 3_600_000


@pytest.fixture(params=["sqlite", "sqlite_sqlalchemy", "postgresql", "redis"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    elif request.param == "sqlite_sqlalchemy":  # (a query string: SQLAlchemy's engine, not sqlite3)
        yield f"sqlite:///{tmp_path / 'state.db'}?timeout=10"
    elif request.param == "postgresql":
        yield request.getfixturevalue("pg_url")
    else:
        yield request.getfixturevalue("redis_url")


@pytest.fixture
def bolt(request, store_url: str, unique_name: str) -> DedupeBolt:
    cleanup(request, store_url, unique_name)
    return make_bolt(store_url, unique_name)


def cleanup(request, url: str, name: str) -> None:
    """After the test: its Redis keys deleted, its PostgreSQL table dropped."""
    if url.startswith("redis"):
        request.addfinalizer(lambda: forget_keys(url, name))
    elif url.startswith("postgresql"):
        import sqlalchemy as sa

        engine = sa.create_engine(request.getfixturevalue("pg_url_psycopg2"))

        def drop() -> None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
            engine.dispose()

        request.addfinalizer(drop)


def forget_keys(url: str, name: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"test:{name}:*"))
    if keys:
        client.delete(*keys)


def make_bolt(url: str, name: str, **config) -> DedupeBolt:
    c = {"id": "dd", "type": "dedupe", "key": "mid", "store": "state"}
    # (each store kind's own option: the other kind's is refused)
    c |= {"key_prefix": f"test:{name}:"} if url.startswith("redis") else {"table": name}
    c |= config
    b = DedupeBolt(DedupeBolt.Config(**c), ComponentContext("t"))
    b.open(resources(state=url))
    return b


def run(b: DedupeBolt, events: list[Event], covered=lambda e: True) -> list[int]:
    """One batch through the bolt and its commit: the sequence numbers of the events passed."""
    out = b.process(events)
    b.commit_state(covered, None)
    b.state_committed()
    return [int(e.meta.sequence_number) for e in out.streams.get("default", [])]


def click(seq: int, mid: str = "m1", **meta) -> Event:
    event = make_event({"mid": mid}, seq)
    if meta:
        event = make_event({"mid": mid}, seq)
        event.meta = event.meta._replace(**meta)
    return event


def test_without_a_store_it_is_not_stateful():
    b = DedupeBolt(DedupeBolt.Config(id="dd", type="dedupe"), ComponentContext("t"))
    assert not b.stateful
    assert make_bolt("sqlite://", "t").stateful


def test_duplicates_across_batches_are_filtered(bolt):
    assert run(bolt, [click(1), click(2, "m2")]) == [1, 2]
    out = bolt.process([click(7), click(8, "m3"), click(9, "m2")])
    assert [int(e.meta.sequence_number) for e in out.streams["default"]] == [8]
    assert [int(e.meta.sequence_number) for e in out.dropped] == [7, 9]  # filtered, not failed
    assert set(out.streams) == {"default"}  # none failed


def test_within_a_batch_the_first_wins(bolt):
    assert run(bolt, [click(1), click(2), click(3, "m2"), click(4, "m2")]) == [1, 3]


def test_one_event_twice_in_a_batch_passes_once(bolt):
    """The same event twice (emitted on two streams into the bolt): one position, one pass —
    also when the key is remembered from that record."""
    event = click(1)
    assert run(bolt, [event, event]) == [1]
    event = click(1)
    assert run(bolt, [event, event]) == [1]


def test_a_redelivery_is_not_a_duplicate_of_itself(bolt):
    batch = [click(1), click(2, "m2")]
    # crash before the commit: nothing remembered
    bolt.process(batch)
    bolt.discard_state()
    # crash after the state commit, before the checkpoint: the same records come again
    assert run(bolt, [click(1), click(2, "m2")]) == [1, 2]
    assert run(bolt, [click(1), click(2, "m2"), click(3)]) == [1, 2]


def test_only_covered_records_are_remembered(bolt):
    # the record of m1 comes after a failed record of its shard: it is delivered again later
    assert run(bolt, [click(1), click(2, "m2")], covered=lambda e: e.value["mid"] != "m1") == [1, 2]
    assert run(bolt, [click(5), click(6, "m2")]) == [5]  # m1's retry is its first count


def test_a_replay_is_its_record_not_a_duplicate(bolt):
    assert run(bolt, [click(1), click(2)]) == [1]
    # ``squall replay`` of record 1's dead letter: where it was first read
    assert run(bolt, [click(1, replay=1)]) == [1]
    # a replay of the duplicate, record 2: still a duplicate of record 1
    assert run(bolt, [click(2, replay=1)]) == []


def test_keys_are_forgotten_after_the_ttl(request, store_url, unique_name, monkeypatch):
    cleanup(request, store_url, unique_name)
    b = make_bolt(store_url, unique_name, ttl="1h")
    now = [1_800_000_000_000]
    monkeypatch.setattr(dedupe_store, "now_ms", lambda: now[0])
    assert run(b, [click(1)]) == [1]
    now[0] += HOUR - 1
    assert run(b, [click(2)]) == []
    if store_url.startswith("redis"):
        client = redis.Redis.from_url(store_url)
        (key,) = client.scan_iter(f"test:{unique_name}:*")
        assert 0 < client.pttl(key) <= HOUR  # Redis forgets it itself
        client.delete(key)  # (as Redis will, an hour after)
    else:
        now[0] += 1
    assert run(b, [click(3)]) == [3]  # remembered anew, from this record
    assert run(b, [click(4)]) == []


def test_expired_keys_are_pruned(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.db'}"
    b = make_bolt(url, "dd_keys", ttl="1h")
    now = [1_800_000_000_000]
    monkeypatch.setattr(dedupe_store, "now_ms", lambda: now[0])
    run(b, [click(i, f"m{i}") for i in range(1, 11)])
    now[0] += 2 * HOUR
    run(b, [click(20, "new")])
    rows = sqlite3.connect(tmp_path / "s.db").execute("SELECT count(*) FROM dd_keys").fetchone()
    assert rows == (1,)


def test_keys_of_every_kind_are_remembered(bolt):
    values = ["1", 1, 1.0, True, {"a": [1, 2]}, {"a": [1.0, 2]}, "x" * 5000, "nul\x00"]
    batch = [make_event({"mid": v}, i + 1) for i, v in enumerate(values)]
    assert run(bolt, batch) == [1, 2, 4, 5, 7, 8]  # 1.0 is 1, the second object the first
    again = [make_event({"mid": v}, i + 20) for i, v in enumerate(values)]
    assert run(bolt, again) == []
    assert run(bolt, [make_event({"mid": float("nan")}, 40)]) == [40]
    assert run(bolt, [make_event({"mid": float("nan")}, 41)]) == [41]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/9", "postgresql://postgres@127.0.0.1:1/x"])
def test_a_store_down_fails_the_batch_for_a_retry(url):
    b = make_bolt(url, "t_down")
    with pytest.raises(TransientError):
        b.process([click(1)])


# -- through the engine ---------------------------------------------------------------------


def records(copies: list[tuple[int, str]]) -> list[Record]:
    """Clicks as the producer sent them: (sequence number, message id)."""
    out = []
    for seq, mid in copies:
        data = orjson.dumps({"message_id": mid, "app": "a", "timestamp": 1_714_557_600_000})
        out.append(Record(data, RecordMeta("clicks", "shardId-000000000000", str(seq), 0, "pk")))
    return out


def walkthrough(db: Path, store: str = "db") -> str:
    return f"""
name: clicks
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: dedupe, type: dedupe, store: {store}, ttl: 1h}}
  - {{id: per_minute, type: window, store: db, key: [app], size: 1m,
      aggregates: {{clicks: {{fn: count}}}}}}
sinks:
  - {{id: minutes, type: warehouse, resource: db, table: per_minute,
      columns: {{event_id: meta.event_id, app: app, window_start: window_start, clicks: clicks}}}}
"""


def test_a_window_after_the_dedupe_counts_a_retried_click_once(tmp_path):
    """The walkthrough's case: three copies of a click, in three batches → 1 in the window."""
    db = tmp_path / "w.db"
    run_topology(
        walkthrough(db), records([(1, "c1"), (2, "c1"), (3, "c1")]), batch_size=1, end_of_input=True
    )
    rows = (
        sqlite3.connect(db)
        .execute("SELECT app, CAST(clicks AS INTEGER) FROM per_minute")
        .fetchall()
    )
    assert rows == [("a", 1)]


def test_the_keys_commit_in_the_warehouse_transaction(tmp_path, monkeypatch):
    """One SQLite file: the bolt writes its keys on the batch's connection (one transaction);
    a failure after them (the checkpoint) leaves none written, so the retry passes."""
    db = tmp_path / "w.db"
    seen = []
    real = dedupe_store.SqlKeys.save

    def save(self, rows, now, ttl_ms, connection=None):
        seen.append(connection)
        real(self, rows, now, ttl_ms, connection)
        if connection is not None and len(seen) == 1:
            raise RuntimeError("crash after the keys, before the commit")

    monkeypatch.setattr(dedupe_store.SqlKeys, "save", save)
    with pytest.raises(BatchFailed, match="crash after the keys"):
        run_topology(walkthrough(db), records([(1, "c1")]), batch_size=1)
    assert seen[0] is not None
    keys = sqlite3.connect(db).execute("SELECT count(*) FROM squall_dedupe").fetchone()
    assert keys == (0,)  # rolled back with the batch
    run_topology(walkthrough(db), records([(1, "c1")]), batch_size=1, end_of_input=True)
    rows = (
        sqlite3.connect(db)
        .execute("SELECT app, CAST(clicks AS INTEGER) FROM per_minute")
        .fetchall()
    )
    assert rows == [("a", 1)]


def test_a_batch_delivered_again_after_its_keys_were_written_is_counted_once(
    request, tmp_path, redis_url, unique_name
):
    """Keys in Redis (written outside the SQL transaction), window and rows in SQLite: the batch
    comes again (a crash after the state commit, before the checkpoint). The dedupe passes its
    records again — none is a duplicate of itself — and the window's marks count them once; a
    retried copy in the same delivery is filtered."""
    db = tmp_path / "w.db"
    text = walkthrough(db, "keys").replace(
        "resources:\n", f'resources:\n  keys: {{url: "{redis_url}"}}\n'
    )
    text = text.replace("ttl: 1h}", f"ttl: 1h, key_prefix: 'test:{unique_name}:'}}")
    cleanup(request, redis_url, unique_name)
    first = run_topology(text, records([(1, "c1"), (2, "c2")]))
    again = run_topology(text, records([(1, "c1"), (2, "c2"), (3, "c1")]), end_of_input=True)
    dedupe = next(s for s in again.engine.stats if s.id == "dedupe")
    assert (dedupe.received, dedupe.emitted, dedupe.dropped) == (3, 2, 1)
    assert next(s for s in first.engine.stats if s.id == "dedupe").dropped == 0
    rows = sqlite3.connect(db).execute("SELECT app, CAST(clicks AS INTEGER) FROM per_minute")
    assert rows.fetchall() == [("a", 2)]
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"test:{unique_name}:*"))
    assert len(keys) == 2


# -- options that only a store uses ----------------------------------------------------------

OPTIONS = """
name: t
resources:
  db: {{url: "sqlite:///{db}"}}
  keys: {{url: "redis://127.0.0.1:1/12"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: dd, type: dedupe, key: mid{extra}}}
sinks:
  - {{id: out, type: stdout}}
"""


@pytest.mark.parametrize(
    "extra, words",
    [
        (", ttl: 1h", "ttl is for a `store`"),
        (", table: dd_keys", "table is for a `store`"),
        (", key_prefix: 'x:'", "key_prefix is for a `store`"),
        (", ttl: 1h, table: dd_keys", "ttl, table are for a `store`"),
    ],
)
def test_a_store_option_without_a_store_is_a_located_load_error(tmp_path, extra, words):
    """Accepted, it did nothing: the topology read as if duplicates across batches were caught."""
    with pytest.raises(TopologyError, match="remembers keys across batches") as caught:
        load_text(OPTIONS.format(db=tmp_path / "s.db", extra=extra))
    (problem,) = caught.value.problems
    assert words in problem.message
    assert (problem.line, problem.path) == (9, "bolts[1]")


def test_store_options_with_a_store_load(tmp_path):
    extra = ", store: db, ttl: 1h, table: dd_keys"
    load_text(OPTIONS.format(db=tmp_path / "s.db", extra=extra))


@pytest.mark.parametrize(
    "store, option, words",
    [
        ("keys", "table: dd_keys", "table is for a SQL store; 'keys' is Redis"),
        ("db", "key_prefix: 'x:'", "key_prefix is for a Redis store; 'db' is a SQL database"),
    ],
)
def test_an_option_of_the_other_store_kind_is_refused(tmp_path, store, option, words):
    topo = load_text(OPTIONS.format(db=tmp_path / "s.db", extra=f", store: {store}, {option}"))
    c = topo.bolts[1]
    b = DedupeBolt(c, ComponentContext("t"))
    with pytest.raises(TopologyError, match=words) as caught:
        b.open(Resources(topo.resources))
    assert caught.value.problems[0].path == "dd.store"


# -- lines of files, stdin, S3 objects --------------------------------------------------------


def lines(text: str, name: str = "events.jsonl") -> list[Event]:
    """The events of an input read as the file spout reads it (stream: its name)."""
    (batch,) = line_batches(
        io.BytesIO(text.encode()), name, "file", 100, where=name, skip_blank=True
    )
    return [
        Event(r.data, r.meta, derive_event_id(r.meta), i, value=orjson.loads(r.data))
        for i, r in enumerate(batch)
    ]


def test_a_line_of_another_input_of_the_same_name_and_first_line_is_a_duplicate(bolt):
    """Two days' files of one name (or stdin) starting alike were one lineage: a key on line 3 of
    both passed as the same record read again. A re-read or appended input is not a duplicate."""
    day1 = '{"mid": "start"}\n{"mid": "a"}\n{"mid": "k"}\n'
    day2 = '{"mid": "start"}\n{"mid": "b"}\n{"mid": "k"}\n'
    assert run(bolt, lines(day1)) == [1, 2, 3]
    assert run(bolt, lines(day2)) == [1, 2]  # line 1: the same bytes, undecidable: read again
    assert run(bolt, lines(day1)) == [1, 2, 3]  # day 1 read again
    assert run(bolt, lines(day1 + '{"mid": "z"}\n')) == [1, 2, 3, 4]  # and appended to


def test_a_first_batch_without_keys_commits_on_a_shared_sqlite_file(tmp_path):
    """No event of the process's first batch has the key: the bolt read no keys (its table not
    yet made by this process), and its commit's prune made the table on a connection of its own
    while the batch's transaction held the file's write lock: "database is locked", the batch
    failed (after 26 s of retries by default), and again on every run whose first batch is so."""
    db = tmp_path / "w.db"
    text = f"""
name: nokey
settings: {{retry: {{attempts: 1}}}}
resources:
  db: {{url: "sqlite:///{db}", connect_timeout: 0.2}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: dedupe, type: dedupe, key: mid, store: db, ttl: 1h}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: clicks,
      columns: {{event_id: meta.event_id, app: app}}}}
"""
    run_topology(text, records([(1, "c1"), (2, "c2")]), end_of_input=True)
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM clicks").fetchone()
    assert rows == (2,)


# -- two processes at once ---------------------------------------------------------------------


def test_a_copy_committed_by_another_process_meanwhile_fails_the_commit(
    request, store_url, unique_name
):
    """Two workers (batches of two shards) read the key before either committed: both passed
    their copy, and both counted it. Now the later commit finds the key remembered from the
    other record: nothing written, the batch runs again (StaleState) and filters its copy."""
    cleanup(request, store_url, unique_name)
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    copy_a, copy_b = (
        click(1, shard_id="shardId-000000000001"),
        click(1, shard_id="shardId-000000000002"),
    )
    assert [e.meta.shard_id for e in a.process([copy_a]).streams["default"]] == [
        copy_a.meta.shard_id
    ]
    assert len(b.process([copy_b]).streams["default"]) == 1  # a has not committed yet
    a.commit_state(lambda e: True, None)
    a.state_committed()
    with pytest.raises(StaleState, match="remembered from another record"):
        b.commit_state(lambda e: True, None)
    b.discard_state()
    again = b.process([copy_b])
    assert again.streams.get("default", []) == [] and again.dropped == [copy_b]
    # a's record delivered again is still its own
    assert run(a, [click(1, shard_id="shardId-000000000001")]) == [1]


def test_the_engine_runs_the_batch_again_when_a_copy_was_committed_meanwhile(tmp_path, monkeypatch):
    """Through the engine, keys and window in one SQLite file: another process commits a copy of
    the click between this batch's read of the keys and its commit. The commit rolls back, the
    batch runs again and filters its copy: this window does not count it (the other's does)."""
    db = tmp_path / "w.db"
    real = dedupe_store.SqlKeys.load
    other = []

    def load(self, keys, after_ms):
        found = real(self, keys, after_ms)
        if not other:  # the other worker's batch commits now
            store = dedupe_store.SqlKeys(self.engine, self.name)
            store.save({k: "another record" for k in keys}, dedupe_store.now_ms(), HOUR, None)
            other.append(keys)
        return found

    monkeypatch.setattr(dedupe_store.SqlKeys, "load", load)
    result = run_topology(walkthrough(db), records([(1, "c1")]), end_of_input=True)
    dedupe = next(s for s in result.engine.stats if s.id == "dedupe")
    assert (dedupe.received, dedupe.emitted, dedupe.dropped) == (1, 0, 1)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM per_minute").fetchone() == (0,)
