"""Subscription state stores against real Redis, PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

from squall.enrichment.state import Status, SubscriptionState, encode, version
from squall.enrichment.stores import (
    CachedStateStore,
    RedisStateStore,
    SqlStateStore,
)
from squall.errors import TransientError
from tests.ports import free_port


def state(
    t: int, seq: int = 1, status: Status = Status.SUBSCRIBED, topics=("news",)
) -> SubscriptionState:
    return SubscriptionState(
        status,
        status is Status.SUBSCRIBED,
        tuple(topics),
        1_000,
        t,
        version(t, str(seq), 0, f"e{seq}"),
        f"e{seq}",
    )


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_engine(request, tmp_path):
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
        yield engine, "squall_subscriptions"
    else:
        url = request.getfixturevalue("pg_url_psycopg2")
        table = request.getfixturevalue("pg_table")
        engine = sa.create_engine(url)
        yield engine, table
    engine.dispose()


@pytest.fixture(params=["redis", "sql", "cached"])
def store(request, redis_prefix, redis_client, sql_engine):
    engine, table = sql_engine
    if request.param == "redis":
        return RedisStateStore(redis_client, redis_prefix)
    if request.param == "sql":
        return SqlStateStore(engine, table)
    return CachedStateStore(
        RedisStateStore(redis_client, redis_prefix, ttl=60), SqlStateStore(engine, table)
    )


def test_round_trip_of_every_field(store):
    s = SubscriptionState(
        Status.SUBSCRIBED,
        True,
        ("a", "é", "with space"),
        1_714_557_600_000,
        1_714_557_601_000,
        version(
            1_714_557_601_000, "49590338271490256608559692538361571095921575989136588898", 3, "ab"
        ),
        "ab",
    )
    none = SubscriptionState(Status.UNSUBSCRIBED, False, (), None, 5, version(5, "1", 0, "x"), "x")
    with_history = SubscriptionState(
        Status.REGISTERED,
        False,
        (),
        7,
        7,
        version(7, "2", 0, "y"),
        "y",
        ("shardId-000000000001", 2, 0),
        history=(encode(SubscriptionState()), encode(none)),
    )
    store.save({"k1": s, "k2": none, "k3": with_history})
    loaded = store.load(["k1", "k2", "k3", "absent"])
    assert loaded == {"k1": s, "k2": none, "k3": with_history}
    assert loaded["k3"].previous == (SubscriptionState(), none)  # history is not part of ==


def test_an_older_state_never_overwrites_a_newer_one(store):
    newer, older = state(2_000, 2), state(1_000, 1, Status.UNSUBSCRIBED, ())
    store.save({"k": newer})
    store.save({"k": older})
    assert store.load(["k"]) == {"k": newer}
    newest = state(3_000, 3, Status.UNSUBSCRIBED, ())
    store.save({"k": newest})
    assert store.load(["k"]) == {"k": newest}


def test_many_keys_in_one_load(store):
    states = {f"k{i}": state(1_000 + i, i) for i in range(1_234)}
    store.save(states)
    keys = [f"k{i}" for i in range(0, 1_300)]
    assert store.load(keys) == states


def test_sql_store_creates_its_table_and_reports_written_keys(sql_engine):
    engine, table = sql_engine
    s = SqlStateStore(engine, table)
    assert not sa.inspect(engine).has_table(table)
    assert s.load(["x"]) == {}
    assert sa.inspect(engine).has_table(table)
    assert s.save({"a": state(2_000, 2), "b": state(1_000, 1)}, report=True) == {"a", "b"}
    # Same version again (a replay) and an older one: neither is written.
    assert s.save({"a": state(2_000, 2), "b": state(500, 1), "c": state(1, 1)}, report=True) == {
        "c"
    }


def test_postgresql_compares_versions_bytewise(pg_url_psycopg2, pg_table):
    """Under a linguistic collation '.' and digits may sort unlike bytes; the column uses "C"."""
    engine = sa.create_engine(pg_url_psycopg2)
    s = SqlStateStore(engine, pg_table)
    s.load([])
    s.save({"k": state(1_000, 1)})
    with engine.connect() as conn:
        collation = conn.execute(
            sa.text(
                "select collation_name from information_schema.columns where table_name = :t and column_name = 'version'"
            ),
            {"t": pg_table},
        ).scalar()
    assert collation == "C"
    s.save({"k": state(1_000, 10)})  # "…002 10…" > "…001 1…" only bytewise by length prefix
    assert s.load(["k"])["k"].version == version(1_000, "10", 0, "e10")
    engine.dispose()


def test_redis_guarded_write_compares_bytes(redis_client, redis_prefix):
    store = RedisStateStore(redis_client, redis_prefix)
    store.save({"k": state(1_000, 10)})
    store.save({"k": state(1_000, 9)})  # shorter sequence number: older
    assert store.load(["k"])["k"].version == version(1_000, "10", 0, "e10")


def test_redis_store_uses_one_pipeline_per_load_and_per_save(
    redis_client, redis_prefix, monkeypatch
):
    store = RedisStateStore(redis_client, redis_prefix)
    calls = []
    real = redis_client.pipeline
    monkeypatch.setattr(redis_client, "pipeline", lambda *a, **k: calls.append(1) or real(*a, **k))
    store.save({f"k{i}": state(1_000, i) for i in range(50)})
    assert len(store.load([f"k{i}" for i in range(60)])) == 50
    assert len(calls) == 2


# -- SQL behind Redis ---------------------------------------------------------------------------


@pytest.fixture
def cached(redis_client, redis_prefix, sql_engine):
    engine, table = sql_engine
    sql = SqlStateStore(engine, table)
    return (
        CachedStateStore(RedisStateStore(redis_client, redis_prefix, ttl=120), sql),
        sql,
        engine,
        table,
    )


def test_read_through_populates_redis_with_a_ttl(cached, redis_client, redis_prefix):
    store, sql, _, _ = cached
    sql.save({"k": state(1_000)})
    assert not redis_client.exists(redis_prefix + "k")
    assert store.load(["k"]) == {"k": state(1_000)}
    store.save({})  # populating shares the batch's write pipeline
    assert redis_client.hget(redis_prefix + "k", "version").decode() == state(1_000).version
    assert 0 < redis_client.ttl(redis_prefix + "k") <= 120


def test_unknown_keys_are_cached_as_absent_and_not_asked_again(cached, redis_client, redis_prefix):
    store, sql, engine, table = cached
    assert store.load(["nobody"]) == {}
    store.save({})
    assert redis_client.hgetall(redis_prefix + "nobody") == {b"absent": b"1"}
    with engine.begin() as conn:  # the SQL table disappears: only the cache can answer now
        conn.execute(sa.text(f'ALTER TABLE "{table}" RENAME TO "{table}_moved"'))
    try:
        assert store.load(["nobody"]) == {}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{table}_moved" RENAME TO "{table}"'))


def test_write_through_replaces_an_absent_marker(cached, redis_client, redis_prefix):
    store, sql, _, _ = cached
    store.load(["k"])
    store.save({"k": state(1_000)})
    assert RedisStateStore(redis_client, redis_prefix).load(["k"]) == {"k": state(1_000)}
    assert sql.load(["k"]) == {"k": state(1_000)}
    assert b"absent" not in redis_client.hgetall(redis_prefix + "k")


def test_a_change_sql_refuses_evicts_the_cached_state(cached, redis_client, redis_prefix):
    """Another writer stored a newer state in SQL; our older change must not land in the cache."""
    store, sql, _, _ = cached
    sql.save({"k": state(5_000, 5)})
    RedisStateStore(redis_client, redis_prefix, ttl=120).save({"k": state(1_000, 1)})  # stale cache
    assert store.load(["k"]) == {"k": state(1_000, 1)}
    store.save({"k": state(2_000, 2)})
    assert RedisStateStore(redis_client, redis_prefix).load(["k"]) == {}  # a marker: a miss
    assert store.load(["k"]) == {"k": state(5_000, 5)}


def test_populating_never_replaces_a_newer_cached_state(cached, redis_client, redis_prefix):
    store, sql, _, _ = cached
    sql.save({"k": state(1_000, 1)})
    store.load(["k"])  # miss: SQL answers the older state
    RedisStateStore(redis_client, redis_prefix).save(
        {"k": state(9_000, 9)}
    )  # meanwhile, a newer write
    store.save({})
    assert (
        RedisStateStore(redis_client, redis_prefix).load(["k"])["k"].version
        == state(9_000, 9).version
    )


# -- dependency failures ------------------------------------------------------------------------


def test_redis_down_is_transient():
    # redis-py 8 retries 10 times with backoff by default; the engine retries too, so not here.
    client = redis.Redis(
        host="127.0.0.1",
        port=free_port(),
        socket_connect_timeout=1,
        socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    store = RedisStateStore(client, "x:")
    with pytest.raises(TransientError, match="redis read: ConnectionError"):
        store.load(["k"])
    with pytest.raises(TransientError, match="redis write"):
        store.save({"k": state(1)})


def test_postgresql_down_is_transient():
    engine = sa.create_engine(
        f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test",
        connect_args={"connect_timeout": 1},
    )
    store = SqlStateStore(engine, "t")
    with pytest.raises(TransientError, match="state store read: connection to server"):
        store.load(["k"])
    with pytest.raises(TransientError, match="state store write"):
        store.save({"k": state(1)})


def test_locked_sqlite_is_transient(tmp_path):
    path = tmp_path / "state.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    store = SqlStateStore(engine, "squall_subscriptions")
    store.save({"k": state(1)})
    import sqlite3

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        assert store.load(["k"]) == {"k": state(1)}  # reading still works
        with pytest.raises(TransientError, match="database is locked"):
            store.save({"k": state(2, 2)})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.save({"k": state(2, 2)})
    assert store.load(["k"]) == {"k": state(2, 2)}


def test_unsupported_sql_dialect_is_refused():
    engine = sa.create_mock_engine("mysql://", executor=None)
    with pytest.raises(ValueError, match="SQLite or PostgreSQL, not mysql"):
        SqlStateStore(engine)


def test_sqlite_writes_many_states_within_an_older_sqlites_parameter_limit(tmp_path):
    """SQLite before 3.32 (Ubuntu 20.04, Debian 10, …) binds at most 999 parameters per
    statement: a multi-row upsert page must stay under the connection's limit, as the
    one-row-per-execute writes did."""
    import sqlite3

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")

    @sa.event.listens_for(engine, "connect")
    def _old_sqlite_limit(dbapi_connection, _record):
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    store = SqlStateStore(engine, "squall_subscriptions")
    states = {f"k{i}": state(1_000 + i, i) for i in range(1_234)}
    assert store.save(states, report=True) == set(states)
    store.save(states)  # the same again: written by nobody, refused by nothing
    assert store.load(list(states)) == states
    engine.dispose()


def test_sqlite_loads_of_any_number_of_keys_use_few_statements(tmp_path):
    """SQLite: a load's keys are padded (with its last key) to a multiple of SELECT_STEP, so the
    batches' varying numbers of keys share a few statement texts, prepared once each by sqlite3's
    statement cache; every stored key is found once, and only those."""
    from squall.enrichment.stores import SELECT_CHUNK

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    store = SqlStateStore(engine)
    stored = {f"k{i}": state(1_000 + i, i) for i in range(SELECT_CHUNK + 10)}
    store.save(stored)
    texts: set[str] = set()

    def executed(_conn, _cursor, sql, *_):  # (a local: the listener is held weakly)
        texts.add(sql.split(" IN ")[-1])

    sa.event.listen(engine, "before_cursor_execute", executed)
    sizes = [*range(1, 66), SELECT_CHUNK - 1, SELECT_CHUNK, SELECT_CHUNK + 1]
    for n in sizes:
        keys = [f"k{i}" for i in range(n)]
        loaded = store.load([*keys[:-1], "absent", keys[-1]])
        assert loaded == {k: stored[k] for k in keys}
        store.discard()
    # up to 66 keys (with "absent"): three texts (SELECT_STEP 32); a whole chunk and the rest: two
    assert len([t for t in texts if t.startswith("(?")]) <= 5
    engine.dispose()


def test_postgresql_loads_one_select_outside_a_transaction(pg_url, pg_table, monkeypatch):
    """The plain driver's load of up to SELECT_CHUNK keys is one SELECT in autocommit: no BEGIN
    before it, no ROLLBACK after (two round trips a batch); more keys stay in one transaction."""
    import psycopg2.extensions

    from squall.enrichment import stores
    from squall.topology.driver_engine import DriverConnection
    from squall.topology.pg_driver import engine_for

    engine = engine_for(pg_url, {}, 5, 1)
    s = SqlStateStore(engine, pg_table)
    s.save({"a": state(1_000, 1), "b": state(2_000, 2)})
    seen = []
    execute = DriverConnection.exec_driver_sql

    def recording(conn, sql, params=None):
        result = execute(conn, sql, params)
        if "SELECT" in sql:
            seen.append(conn.raw.get_transaction_status())
        return result

    monkeypatch.setattr(DriverConnection, "exec_driver_sql", recording)
    idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
    in_tx = psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    assert sorted(s.load(["a", "b", "c"])) == ["a", "b"]
    assert seen == [idle]  # read, and no transaction open
    monkeypatch.setattr(stores, "SELECT_CHUNK", 2)
    seen.clear()
    assert sorted(s.load(["a", "b", "c"])) == ["a", "b"]
    assert seen == [in_tx, in_tx]  # two SELECTs: one transaction, as before
    with engine.connect() as conn:  # the pool's connection is transactional again
        assert conn.raw.autocommit is False
    s.save({"a": state(3_000, 3)})  # and a write still commits
    assert s.load(["a"])["a"].changed_at == 3_000
    engine.dispose()


@pytest.mark.parametrize("plain", [True, False])
def test_postgresql_sends_a_loads_keys_as_one_text(pg_url, pg_table, monkeypatch, plain):
    """psycopg2 adapts a list of keys one by one (~0.6 µs a key); the keys go as one text split
    by the server, and as the list when a key holds the newline or is the one empty key."""
    from squall.topology.driver_engine import DriverConnection
    from squall.topology.pg_driver import engine_for

    engine = engine_for(pg_url, {}, 5, 1) if plain else sa.create_engine(pg_url_sa(pg_url))
    s = SqlStateStore(engine, pg_table)
    odd = ["", "a\nb", "100%", "it's", "é"]
    s.save({k: state(1_000 + i, i) for i, k in enumerate(["k1", "k2", *odd])})
    sent = []
    if plain:
        execute = DriverConnection.exec_driver_sql

        def recording(conn, sql, params=None):
            sent.append(params)
            return execute(conn, sql, params)

        monkeypatch.setattr(DriverConnection, "exec_driver_sql", recording)
    assert sorted(s.load(["k1", "k2", "k3"])) == ["k1", "k2"]
    if plain:
        assert sent == [("k1\nk2\nk3", "\n")]  # one text, no list to adapt
    assert sorted(s.load(["k1", "a\nb", "k3"])) == ["a\nb", "k1"]  # a newline: the list
    assert sorted(s.load([""])) == [""]
    assert sorted(s.load(["", "it's", "100%", "é"])) == ["", "100%", "it's", "é"]
    base = {"k1": state(1_000, 0).version, "": state(1_002, 2).version}
    s.save({"k1": state(9_000, 9), "": state(9_000, 10)}, base=base)  # its check reads them
    assert s.load(["k1"])["k1"].changed_at == 9_000 and s.load([""])[""].changed_at == 9_000
    engine.dispose()


def pg_url_sa(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def test_postgresql_writes_a_pages_states_as_one_json_text(pg_url, pg_table, monkeypatch):
    """psycopg2 adapts each of a VALUES list's parameters on its own (~7 µs a state row): a page
    goes as one JSON text, every field stored as it was (nulls, quotes, newlines, percent
    signs, non-ASCII, 64-bit times); a value JSON cannot carry as psycopg2 would (a NUL) keeps
    VALUES and fails as before."""
    from squall.topology.driver_engine import DriverConnection
    from squall.topology.pg_driver import engine_for

    engine = engine_for(pg_url, {}, 5, 1)
    s = SqlStateStore(engine, pg_table)
    sent = []
    execute = DriverConnection.exec_driver_sql

    def recording(conn, sql, params=None):
        sent.append(params)
        return execute(conn, sql, params)

    monkeypatch.setattr(DriverConnection, "exec_driver_sql", recording)
    odd = SubscriptionState(
        Status.SUBSCRIBED,
        True,
        ("it's", "100%", "a\nb", "é", '"q"', "back\\slash"),
        None,
        2**62,
        version(2**40, "4959033827149025660855969253836157109592157598913658889", 3, "e'1"),
        "e'1",
        ("shard-1", 2**70, 3),
        ("v1\tx", "v2"),
    )
    plain = state(1_000, 1)
    assert s.save({"k'1": odd, "k\n2": plain}, report=True) == {"k'1", "k\n2"}
    inserts = [p for p in sent if p and len(p) == 1 and isinstance(p[0], str) and "[" in p[0]]
    assert len(inserts) == 1  # the rows as one text, not 20 parameters
    assert s.load(["k'1", "k\n2"]) == {"k'1": odd, "k\n2": plain}
    base = {"k'1": odd.version}
    newer = state(2**41, 9)
    assert s.save({"k'1": newer, "k3": plain}, base=base, report=True) == {"k'1", "k3"}
    assert s.load(["k'1", "k3"]) == {"k'1": newer, "k3": plain}
    with pytest.raises(ValueError, match="NUL"):  # psycopg2's refusal, as before
        s.save({"k\x004": plain})
    engine.dispose()
