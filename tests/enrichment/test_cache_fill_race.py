"""A SQL subscription store behind a Redis cache, written by two processes at once (an SQS
standard queue's invocations, a KCL lease taken over): a process that read a key from SQL before
another committed a newer state must not put what it read in the cache after that state's
commit — else the next batch of the key starts from the older state, and its version-guarded
SQL write (newer than the committed one) replaces the committed state with one that never saw
it: a subscription lost. Against real Redis and SQLite/PostgreSQL."""

from __future__ import annotations

from squall.enrichment.state import Action, SubscriptionState, Update, apply, version
from squall.enrichment.stores import CachedStateStore, RedisStateStore, SqlStateStore
from tests.enrichment.test_stores import redis_client, sql_engine  # noqa: F401


def update(action: Action, t: int, topic: str) -> Update:
    return Update(action, t, version(t, str(t), 0, f"e{t}"), f"e{t}", (topic,))


def stores(redis_client, redis_prefix, sql_engine):  # noqa: F811
    engine, table = sql_engine

    def one() -> CachedStateStore:
        return CachedStateStore(
            RedisStateStore(redis_client, redis_prefix, ttl=120), SqlStateStore(engine, table)
        )

    return one(), one(), one()


def test_a_fill_read_before_another_process_committed_never_hides_its_state(
    redis_client,  # noqa: F811
    redis_prefix,
    sql_engine,  # noqa: F811
):
    """a reads k (SQL: nothing yet) for a batch that only reads it; b subscribes k to "news"
    and commits, and its process ends before it fills the cache (a Lambda timeout, a crash —
    or it fills it later than a's); a commits its batch and fills the cache. c then subscribes
    k to "sport": k must keep "news"."""
    a, b, c = stores(redis_client, redis_prefix, sql_engine)
    engine, _ = sql_engine
    assert a.load(["k"]) == {}
    assert b.load(["k"]) == {}
    news = apply(SubscriptionState(), update(Action.SUBSCRIBE, 1_000, "news"))
    with engine.begin() as conn:
        b.save({"k": news}, conn)
    # (b never flushes)
    a.save({})  # a's batch: no change of k; its commit fills the cache with what it read
    got = c.load(["k"])
    sport = apply(got.get("k", SubscriptionState()), update(Action.SUBSCRIBE, 2_000, "sport"))
    c.save({"k": sport})
    assert c.store.load(["k"])["k"].topics == ("news", "sport")  # not ("sport",)
    assert got == {"k": news}


def test_a_fill_of_an_older_state_after_another_commit_is_refused(
    redis_client,  # noqa: F811
    redis_prefix,
    sql_engine,  # noqa: F811
):
    """The same with a state in SQL already: a reads "news"; b adds "sport" and commits, its
    fill not yet done; a's fill of "news" must not land — c reads both topics."""
    a, b, c = stores(redis_client, redis_prefix, sql_engine)
    engine, _ = sql_engine
    news = apply(SubscriptionState(), update(Action.SUBSCRIBE, 1_000, "news"))
    a.store.save({"k": news})
    assert a.load(["k"]) == {"k": news}
    both = apply(b.load(["k"])["k"], update(Action.SUBSCRIBE, 2_000, "sport"))
    with engine.begin() as conn:
        b.save({"k": both}, conn)
    a.save({})
    assert c.load(["k"]) == {"k": both}
    b.flush()  # late, and still right
    assert c.load(["k"]) == {"k": both}


def test_a_fill_read_longer_ago_than_the_cache_ttl_never_lands(
    redis_client,  # noqa: F811
    redis_prefix,
    sql_engine,  # noqa: F811
    monkeypatch,
):
    """a reads "news" from SQL; b adds "sport", commits and fills the cache (its state replaces
    its pending marker, and lives the cache's ttl, 120 s); that entry expires; a, its batch slow,
    fills the cache 200 s after its read — before, with "news" (only reads 600 s old were
    dropped): read-only events saw the older state until it expired."""
    import types

    from squall.enrichment import stores as stores_module

    clock = [0.0]
    monkeypatch.setattr(stores_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    a, b, c = stores(redis_client, redis_prefix, sql_engine)
    engine, _ = sql_engine
    news = apply(SubscriptionState(), update(Action.SUBSCRIBE, 1_000, "news"))
    a.store.save({"k": news})
    assert a.load(["k"]) == {"k": news}  # (a miss: read from SQL at 0 s)
    both = apply(b.load(["k"])["k"], update(Action.SUBSCRIBE, 2_000, "sport"))
    with engine.begin() as conn:
        b.save({"k": both}, conn)
    b.flush()
    redis_client.delete(redis_prefix + "k")  # its ttl passed (what expiry does)
    clock[0] = 200.0
    a.save({})
    a.flush()
    assert c.load(["k"]) == {"k": both}
