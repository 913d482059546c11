"""Two processes updating one key's subscription at once (two invocations of an SQS standard
queue; a Lambda ParallelizationFactor above 1 with a partition key other than the bolt's key):
each computes its new state from the state it loaded, so the one committing second must not
replace the first's committed state with one that never saw it. On every store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from squall.errors import TransientError
from squall.event import Event
from tests.enrichment.support import make_event
from tests.enrichment.test_subscription import backend, ev, make_bolt  # noqa: F401


def events(values: list[dict], start: int, shard: str) -> list[Event]:
    return [make_event(v, start + i, shard=shard) for i, v in enumerate(values)]


def commit(bolt) -> None:
    bolt.commit_state(lambda e: True)
    bolt.state_committed()


def test_an_update_committed_meanwhile_is_never_lost(backend):  # noqa: F811
    res, options = backend
    a, b, c = (make_bolt(res, **options) for _ in range(3))
    b.process(events([ev("subscribe", "k", "2024-05-01T10:00:00Z", topics=["news"])], 1, "m1"))
    commit(b)
    # a loads k (news), then b adds "sport" and commits, then a adds "weather" (later in time)
    batch_a = events([ev("subscribe", "k", "2024-05-01T10:00:09Z", topics=["weather"])], 1, "m3")
    a.process(batch_a)
    b.process(events([ev("subscribe", "k", "2024-05-01T10:00:05Z", topics=["sport"])], 1, "m2"))
    commit(b)
    try:
        commit(a)
    except TransientError as exc:  # the state it read moved: the batch runs again
        assert "moved" in str(exc)
        a.discard_state()
        a.process(batch_a)
        commit(a)
    out = c.process(events([ev("click", "k", "2024-05-01T10:00:10Z")], 1, "m4"))
    [seen] = out.streams["default"]
    assert seen.value["subscription"]["topics"] == ["news", "sport", "weather"]


def test_a_first_state_committed_meanwhile_is_never_lost(backend):  # noqa: F811
    """a finds no state for k; b creates one (news) and commits; a's weather keeps it."""
    res, options = backend
    a, b, c = (make_bolt(res, **options) for _ in range(3))
    batch_a = events([ev("subscribe", "k", "2024-05-01T10:00:09Z", topics=["weather"])], 1, "m3")
    a.process(batch_a)
    b.process(events([ev("subscribe", "k", "2024-05-01T10:00:05Z", topics=["news"])], 1, "m2"))
    commit(b)
    try:
        commit(a)
    except TransientError:
        a.discard_state()
        a.process(batch_a)
        commit(a)
    out = c.process(events([ev("click", "k", "2024-05-01T10:00:10Z")], 1, "m4"))
    assert out.streams["default"][0].value["subscription"]["topics"] == ["news", "weather"]


def test_a_commit_of_the_same_states_again_is_no_conflict(backend):  # noqa: F811
    """The engine retries a commit whose answer was lost: the rows already hold its states."""
    res, options = backend
    a = make_bolt(res, **options)
    a.process(events([ev("subscribe", "k", "2024-05-01T10:00:00Z", topics=["news"])], 1, "m1"))
    a.commit_state(lambda e: True)
    a.commit_state(lambda e: True)  # again, the same staged states
    a.state_committed()
    out = a.process(events([ev("click", "k", "2024-05-01T10:00:10Z")], 1, "m4"))
    assert out.streams["default"][0].value["subscription"]["topics"] == ["news"]


TOPOLOGY = """
name: subs-race
resources:
  state: {{url: "{state}"}}
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subs, type: subscription, store: state, key: device_token, {options}}}
sinks:
  - id: out
    type: warehouse
    resource: db
    table: events
    columns: {{event_id: meta.event_id, topics: subscription.topics}}
  - {{id: handoff, type: "tests.deploy.test_window_concurrent_commits:HandOff"}}
"""


def sqs_event(n: int, value: dict) -> dict:
    return {
        "Records": [
            {
                "messageId": f"{n:08d}-0000-4000-8000-000000000000",
                "receiptHandle": f"rh-{n}",
                "body": json.dumps(value),
                "attributes": {"SentTimestamp": "1714557660000"},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:devices",
            }
        ]
    }


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_two_sqs_invocations_updating_one_key_at_once_keep_both_updates(
    kind, request, tmp_path: Path, unique_name
):
    """Invocation 1 runs "subscribe weather" of key k (subscribed to news); while its sinks
    write, invocation 2 runs "subscribe sport" of k and commits. Invocation 1's state commit is
    refused (the state it read moved): the batch runs again at once, and adds weather to news
    and sport."""
    from squall.deploy.lambda_consumer import make_handler
    from tests.deploy.test_window_concurrent_commits import HandOff

    if kind == "sqlite":
        state, options = f"sqlite:///{tmp_path / 'state.db'}", f"table: t_{unique_name}"
    elif kind == "postgresql":
        state, options = (
            request.getfixturevalue("pg_url_psycopg2"),
            "table: " + (request.getfixturevalue("pg_table")),
        )
    else:
        state = request.getfixturevalue("redis_url")
        options = f"key_prefix: '{request.getfixturevalue('redis_prefix')}'"
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(state=state, db=tmp_path / "w.db", options=options))
    first, second = make_handler(t), make_handler(t)

    def subscribe(topic: str, second_: int) -> dict:
        at = f"2024-05-01T10:00:{second_:02d}Z"
        return {"event_type": "subscribe", "device_token": "k", "timestamp": at, "topics": [topic]}

    assert first(sqs_event(1, subscribe("news", 0)), None) == {"batchItemFailures": []}
    answers = []
    HandOff.then[:] = [lambda: answers.append(second(sqs_event(2, subscribe("sport", 5)), None))]
    failed = first(sqs_event(3, subscribe("weather", 9)), None)
    assert answers == [{"batchItemFailures": []}]
    assert first(sqs_event(3, subscribe("weather", 9)), None) == {"batchItemFailures": []}
    click = {"event_type": "click", "device_token": "k", "timestamp": "2024-05-01T10:00:30Z"}
    assert first(sqs_event(4, click), None) == {"batchItemFailures": []}
    rows = sqlite3.connect(tmp_path / "w.db").execute("select topics from events").fetchall()
    assert json.loads(rows[-1][0]) == ["news", "sport", "weather"]  # not news and weather
    assert failed == {"batchItemFailures": []}


def test_a_first_state_inserted_by_another_transaction_while_waiting_is_never_overwritten(
    pg_url_psycopg2, pg_table
):
    """PostgreSQL: a finds no row for k and writes its state while b's insert of k is not yet
    committed; a's insert waits for b's commit, then must not replace b's state: StateMoved."""
    import threading

    import sqlalchemy as sa

    from squall.enrichment.state import Action, SubscriptionState, Update, apply, version
    from squall.enrichment.stores import SqlStateStore, StateMoved

    def state(t: int, topic: str) -> SubscriptionState:
        u = Update(Action.SUBSCRIBE, t, version(t, str(t), 0, f"e{t}"), f"e{t}", (topic,))
        return apply(SubscriptionState(), u)

    engine = sa.create_engine(pg_url_psycopg2)
    a, b = SqlStateStore(engine, pg_table), SqlStateStore(engine, pg_table)
    assert a.load(["k"]) == {}
    errors: list[BaseException] = []
    with engine.connect() as conn_b:
        tx = conn_b.begin()
        b.save({"k": state(1_000, "news")}, conn_b, {"k": ""})  # inserted, not committed

        def write_a() -> None:
            try:
                a.save({"k": state(9_000, "weather")}, None, {"k": ""})
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=write_a)
        thread.start()
        with engine.connect() as watch:  # until a waits for b's row (a lock of this database)
            waiting = sa.text(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and datname = current_database()"
            )
            for _ in range(100_000):
                if watch.execute(waiting).scalar() or not thread.is_alive():
                    break
        tx.commit()
    thread.join()
    assert [type(e) for e in errors] == [StateMoved]
    assert a.load(["k"])["k"].topics == ("news",)
    engine.dispose()


def test_sqlite_a_state_committed_between_the_check_and_the_write_is_never_overwritten(
    tmp_path: Path,
):
    """SQLite, the store on its own database (no warehouse transaction around it): another
    process commits k between a's check of the stored version and a's write. The check's read
    must be in the write's transaction (WAL then refuses the write of a stale snapshot); read
    outside it, a wrote its newer state over b's: b's topic lost."""
    from squall.enrichment.state import Action, SubscriptionState, Update, apply, version
    from squall.enrichment.stores import SqlStateStore
    from squall.topology.model import ResourceConfig
    from squall.topology.resources import Resources

    def state(base: SubscriptionState, t: int, topic: str) -> SubscriptionState:
        u = Update(Action.SUBSCRIBE, t, version(t, str(t), 0, f"e{t}"), f"e{t}", (topic,))
        return apply(base, u)

    url = f"sqlite:///{tmp_path / 'state.db'}"
    res_a = Resources({"s": ResourceConfig(url=url)})
    res_b = Resources({"s": ResourceConfig(url=url, connect_timeout=0.1)})  # (busy timeout)
    a = SqlStateStore(res_a.database("s"), "subs")
    b = SqlStateStore(res_b.database("s"), "subs")
    news = state(SubscriptionState(), 1_000, "news")
    a.save({"k": news}, None, {"k": ""})
    base = a.load(["k"])["k"]
    checked = a._versions
    done: list[str] = []

    def versions_then_b_commits(conn, keys):
        found = checked(conn, keys)
        try:
            b.save({"k": state(base, 5_000, "sport")}, None, {"k": base.version})
            done.append("sport")
        except TransientError:
            pass  # waits for a's write lock: its batch runs again later
        return found

    a._versions = versions_then_b_commits  # type: ignore[method-assign]
    try:
        a.save({"k": state(base, 9_000, "weather")}, None, {"k": base.version})
        done.append("weather")
    except TransientError:
        pass  # refused (the batch runs again from b's state)
    assert done  # one of them committed
    topics = a.load(["k"])["k"].topics
    assert set(done) <= set(topics)  # every committed update kept
    res_a.close()
    res_b.close()


def test_postgresql_locks_and_inserts_a_commits_keys_in_one_order(pg_url_psycopg2, pg_table):
    """Keys were locked (FOR UPDATE) and inserted in the batch's order: two commits of
    overlapping keys in opposite orders deadlocked (PostgreSQL broke it after its
    deadlock_timeout, and a batch ran again). Every commit now takes them in code point order,
    the SELECT's ORDER BY included (COLLATE "C", whatever the database's collation)."""
    import sqlalchemy as sa

    from squall.enrichment.state import Action, SubscriptionState, Update, apply, version
    from squall.enrichment.stores import SqlStateStore

    def state(t: int) -> SubscriptionState:
        u = Update(Action.SUBSCRIBE, t, version(t, str(t), 0, f"e{t}"), f"e{t}", ("news",))
        return apply(SubscriptionState(), u)

    engine = sa.create_engine(pg_url_psycopg2)
    store = SqlStateStore(engine, pg_table)
    store.save({k: state(1_000) for k in ("k-b", "k-A")}, None, dict.fromkeys(("k-b", "k-A"), ""))
    seen: list[tuple[str, object]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    keys = ["k-é", "k-b", "k-a", "k-A", "k-B"]  # "k-b" and "k-A" exist: locked; the rest new
    old = {k: store.load([k])[k].version for k in ("k-b", "k-A")}
    store.save({k: state(2_000) for k in keys}, None, {k: old.get(k, "") for k in keys})
    [(select, (locked, sep))] = [(s, p) for s, p in seen if "FOR UPDATE" in s]
    assert locked.split(sep) == sorted(keys) and 'COLLATE "C"' in select  # (one text: _pg_any)
    [(_, (values,))] = [(s, p) for s, p in seen if "DO NOTHING" in s]
    inserted = [row[0] for row in json.loads(values)]  # the rows as one JSON text, in order
    assert inserted == ["k-B", "k-a", "k-é"]
    engine.dispose()


def test_sqlite_reads_the_stored_versions_again_only_when_they_may_have_moved(tmp_path: Path):
    """SQLite: the check's read of the stored versions (a lookup per changed key) is left out
    when the batch's loads and its write are on one connection whose ``PRAGMA data_version``
    has not changed (no other connection committed) and no state store wrote through the
    engine since (a write on the same connection does not change ``data_version``). Any of
    those, and the versions are read and a moved state refused, as before."""
    from squall.enrichment.state import Action, SubscriptionState, Update, apply, version
    from squall.enrichment.stores import SqlStateStore, StateMoved
    from squall.topology.model import ResourceConfig
    from squall.topology.resources import Resources

    def state(base: SubscriptionState, t: int, topic: str) -> SubscriptionState:
        u = Update(Action.SUBSCRIBE, t, version(t, str(t), 0, f"e{t}"), f"e{t}", (topic,))
        return apply(base, u)

    url = f"sqlite:///{tmp_path / 'state.db'}"
    res_a, res_b = (
        Resources({"s": ResourceConfig(url=url)}),
        Resources({"s": ResourceConfig(url=url)}),
    )
    a = SqlStateStore(res_a.database("s"), "subs")
    same_engine = SqlStateStore(res_a.database("s"), "subs")  # another bolt's, one connection
    other = SqlStateStore(res_b.database("s"), "subs")  # another process's
    reads: list[list[str]] = []
    versions = a._versions

    def counted(conn, keys):
        reads.append(keys)
        return versions(conn, keys)

    a._versions = counted  # type: ignore[method-assign]
    a.save({"k": state(SubscriptionState(), 1_000, "news")}, None, {"k": ""})
    assert reads == [["k"]]  # no load before it: read

    # Nothing moved since the load: no read, the write goes through.
    base = a.load(["k"])["k"]
    a.save({"k": state(base, 2_000, "sport")}, None, {"k": base.version})
    assert reads == [["k"]]

    # Another connection commits k after a's load: read, and refused.
    base = a.load(["k"])["k"]
    other.save({"k": state(base, 3_000, "weather")}, None, {"k": base.version})
    with pytest.raises(StateMoved):
        a.save({"k": state(base, 4_000, "music")}, None, {"k": base.version})
    assert len(reads) == 2
    a.discard()

    # Another store commits k through the same engine (and connection) after a's load: read,
    # and refused.
    base = a.load(["k"])["k"]
    fresh = same_engine.load(["k"])["k"]
    same_engine.save({"k": state(fresh, 5_000, "film")}, None, {"k": fresh.version})
    with pytest.raises(StateMoved):
        a.save({"k": state(base, 6_000, "music")}, None, {"k": base.version})
    assert len(reads) == 3
    a.discard()

    final = a.load(["k"])["k"]
    assert final.topics == ("film", "news", "sport", "weather")
    res_a.close()
    res_b.close()


def _subscribe(base, t: int, topic: str):
    from squall.enrichment.state import Action, Update, apply, version

    return apply(
        base, Update(Action.SUBSCRIBE, t, version(t, str(t), 0, f"e{t}"), f"e{t}", (topic,))
    )


def test_sqlite_a_state_written_on_the_loads_connection_by_a_store_of_another_engine_is_read(
    tmp_path: Path,
):
    """A state store writes on the connection it is given: the batch's transaction's, which is
    another engine's than the store's own when its engine was retired (``Resources.sql`` asked
    for after the store opened on the plain driver). Such a write on the connection a store's
    loads read from changes no ``data_version`` there: it must still count as a write on that
    connection, else the store's check is left out and its stale state replaces the other's."""
    from squall.enrichment.state import SubscriptionState
    from squall.enrichment.stores import SqlStateStore, StateMoved
    from squall.topology.sqlite_driver import SqliteEngine

    path = str(tmp_path / "state.db")
    retired, current = SqliteEngine(path, 5.0, pool_size=1), SqliteEngine(path, 5.0, pool_size=1)
    first = SqlStateStore(retired, "subs")  # opened before the engine was replaced
    second = SqlStateStore(current, "subs")
    second.save({"k": _subscribe(SubscriptionState(), 1_000, "news")})
    base = second.load(["k"])["k"]  # on current's one connection
    with current.begin() as conn:  # the batch's transaction: current's connection
        fresh = first.load(["k"])["k"]
        first.save({"k": _subscribe(fresh, 2_000, "sport")}, conn, {"k": fresh.version})
    with pytest.raises(StateMoved):
        second.save({"k": _subscribe(base, 3_000, "film")}, None, {"k": base.version})
    assert second.load(["k"])["k"].topics == ("news", "sport")


_OTHER_PROCESS = """
import sys
from squall.enrichment.state import Action, Update, apply, version
from squall.enrichment.stores import SqlStateStore
from squall.topology.sqlite_driver import SqliteEngine

store = SqlStateStore(SqliteEngine(sys.argv[1], 5.0), "subs")
base = store.load(["k"])["k"]
t = 2_000
u = Update(Action.SUBSCRIBE, t, version(t, str(t), 0, "e2"), "e2", ("sport",))
store.save({"k": apply(base, u)}, None, {"k": base.version})
"""


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_a_state_another_process_committed_after_the_load_is_never_replaced(
    tmp_path: Path, journal: str
):
    """Another process (a KCL worker's processor of another shard, another Lambda container)
    commits a key between this process's load and its write, on one connection here, in WAL and
    in the rollback journal: ``data_version`` moved, the versions are read, the write refused."""
    import subprocess
    import sys

    from squall.enrichment.state import SubscriptionState
    from squall.enrichment.stores import SqlStateStore, StateMoved
    from squall.topology.sqlite_driver import SqliteEngine

    path = str(tmp_path / "state.db")
    engine = SqliteEngine(path, 5.0, pool_size=1)
    store = SqlStateStore(engine, "subs")
    store.save({"k": _subscribe(SubscriptionState(), 1_000, "news")})
    with engine.connect() as conn:
        conn.exec_driver_sql(f"PRAGMA journal_mode={journal}")
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    base = store.load(["k"])["k"]
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    if journal == "delete":  # the other process must not turn WAL on again
        script = _OTHER_PROCESS.replace(
            "store = SqlStateStore(",
            "import squall.topology.sqlite_driver as d\n"
            "d.CONNECTION_PRAGMAS = ('PRAGMA journal_mode=DELETE',)\n"
            "store = SqlStateStore(",
        )
    else:
        script = _OTHER_PROCESS
    subprocess.run([sys.executable, "-c", script, path], check=True, env=env, timeout=60)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == mode == journal
    with pytest.raises(StateMoved):
        store.save({"k": _subscribe(base, 3_000, "film")}, None, {"k": base.version})
    assert store.load(["k"])["k"].topics == ("news", "sport")


def test_sqlite_a_rolled_back_write_then_another_processes_commit_is_read(tmp_path: Path):
    """This store's write rolled back (the batch's transaction failed later), then the batch
    loaded again and another connection commits before the retried write: read, refused."""
    from squall.enrichment.state import SubscriptionState
    from squall.enrichment.stores import SqlStateStore, StateMoved
    from squall.topology.sqlite_driver import SqliteEngine

    path = str(tmp_path / "state.db")
    engine = SqliteEngine(path, 5.0, pool_size=1)
    store = SqlStateStore(engine, "subs")
    other = SqlStateStore(SqliteEngine(path, 5.0, pool_size=1), "subs")
    store.save({"k": _subscribe(SubscriptionState(), 1_000, "news")})
    base = store.load(["k"])["k"]
    with pytest.raises(RuntimeError), engine.begin() as conn:
        store.save({"k": _subscribe(base, 2_000, "film")}, conn, {"k": base.version})
        raise RuntimeError("the checkpoint's write failed")
    store.discard()
    base = store.load(["k"])["k"]
    assert base.topics == ("news",)
    theirs = other.load(["k"])["k"]
    other.save({"k": _subscribe(theirs, 1_500, "sport")}, None, {"k": theirs.version})
    with pytest.raises(StateMoved):
        store.save({"k": _subscribe(base, 2_000, "film")}, None, {"k": base.version})
    assert store.load(["k"])["k"].topics == ("news", "sport")


def test_sqlite_a_commit_between_a_loads_chunks_is_read(tmp_path: Path, monkeypatch):
    """A load of more keys than one SELECT takes reads in chunks, each on its own: another
    connection committing a key of the first chunk before the second is read still moves
    ``data_version`` since the first load began, so the write of a state computed from the first
    chunk's read is refused."""
    from squall.enrichment import stores
    from squall.enrichment.state import SubscriptionState
    from squall.enrichment.stores import SqlStateStore, StateMoved
    from squall.topology.driver_engine import DriverConnection
    from squall.topology.sqlite_driver import SqliteEngine

    path = str(tmp_path / "state.db")
    engine = SqliteEngine(path, 5.0, pool_size=1)
    store = SqlStateStore(engine, "subs")
    other = SqlStateStore(SqliteEngine(path, 5.0, pool_size=1), "subs")
    keys = [f"k{i:04d}" for i in range(stores.SELECT_CHUNK + 10)]
    store.save({k: _subscribe(SubscriptionState(), 1_000, "news") for k in keys})
    selects = []
    run = DriverConnection.exec_driver_sql

    def exec_driver_sql(conn, sql, params=None):
        if conn.engine is engine and sql.startswith("SELECT"):
            selects.append(len(set(params)))  # (keys: padded with repeats)
            if len(selects) == 2:  # the second chunk: another process commits k0000 first
                theirs = other.load(["k0000"])["k0000"]
                other.save(
                    {"k0000": _subscribe(theirs, 1_500, "sport")}, None, {"k0000": theirs.version}
                )
        return run(conn, sql, params)

    monkeypatch.setattr(DriverConnection, "exec_driver_sql", exec_driver_sql)
    loaded = store.load(keys)
    assert selects == [stores.SELECT_CHUNK, 10] and loaded["k0000"].topics == ("news",)
    base = loaded["k0000"]
    with pytest.raises(StateMoved):
        store.save({"k0000": _subscribe(base, 2_000, "film")}, None, {"k0000": base.version})
    monkeypatch.undo()
    assert store.load(["k0000"])["k0000"].topics == ("news", "sport")
