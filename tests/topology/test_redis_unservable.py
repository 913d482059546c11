"""A Redis that cannot serve squall's commands — one renamed away (``rename-command HGETALL ""``)
or not offered (a proxy), a Redis Cluster endpoint (``MOVED``, ``CROSSSLOT``) — answers an error
that is neither an outage nor a refused password. Only the lookup bolt's shared cache knew it:
the lookup's ``redis`` source, the subscription bolt's Redis store and the window bolt's Redis
store let redis-py's ``ResponseError`` escape (or took it for each key's), and the engine failed
every event alone — every event dead-lettered. A misconfiguration now (``SinkError``: the batch
fails, not retried, nothing dead-lettered). ``WRONGTYPE`` on a record's own key stays that
record's; on a window store's keys (no record's) it is the store's too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from squall.bolts.window_store import RedisWindowStore
from squall.enrichment.stores import RedisStateStore
from squall.errors import BatchFailed, SinkError, TransientError
from squall.testing import memory_stores, records_from, run_topology
from tests.bolts.test_lookup import make_bolt as make_lookup
from tests.enrichment.support import make_batch, resources
from tests.enrichment.test_subscription import ev
from tests.enrichment.test_subscription import make_bolt as make_subscription
from tests.private_redis import private_redis_server


@pytest.fixture(scope="module")
def crippled(tmp_path_factory) -> Iterator[int]:
    """A redis-server without HGETALL, MGET, EVAL and EVALSHA."""
    renamed = ["--rename-command", "HGETALL", "", "--rename-command", "MGET", ""]
    renamed += ["--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""]
    with private_redis_server(tmp_path_factory.mktemp("crippled-redis"), *renamed) as port:
        yield port


@pytest.mark.parametrize("data", ["hash", "json"])
def test_a_redis_lookup_source_without_its_command_stops_the_run(crippled, data):
    """hash (HGETALL renamed): before, each key's 'wrong kind of value' — a batch of one key
    dead-lettered its events; json (MGET renamed): before, a raw ResponseError."""
    bolt = make_lookup(
        resources(r=f"redis://127.0.0.1:{crippled}/0"),
        key="app_id",
        source={"type": "redis", "resource": "r", "data": data, "key_prefix": "hq:"},
    )
    batch = make_batch([{"app_id": 1}])
    with pytest.raises(SinkError, match="unknown command") as raised:
        bolt.process(batch)
    assert "hq:" not in str(raised.value)  # the key is left out
    assert all(e.failure is None for e in batch)


def test_the_subscription_bolt_on_a_redis_without_hgetall_stops_the_run(crippled):
    bolt = make_subscription(resources(state=f"redis://127.0.0.1:{crippled}/0"))
    batch = make_batch([ev("register", "a"), ev("app_open", "b")])
    with pytest.raises(SinkError, match="unknown command"):
        bolt.process(batch)  # before: a raw ResponseError, each record's fault (dead-lettered)
    assert all(e.failure is None for e in batch)


def test_the_subscription_bolt_writing_to_a_redis_without_evalsha_stops_the_run(tmp_path):
    renamed = ["--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""]
    with private_redis_server(tmp_path, *renamed) as port:
        bolt = make_subscription(resources(state=f"redis://127.0.0.1:{port}/0"))
        bolt.process(make_batch([ev("register", "c")]))
        with pytest.raises(SinkError, match="unknown command"):
            bolt.commit_state(lambda event: True)  # before: a raw ResponseError


@pytest.mark.parametrize("call", ["read", "open_windows", "shards"])
def test_the_window_store_on_a_redis_without_its_commands_stops_the_run(crippled, call):
    store = RedisWindowStore(redis.Redis(port=crippled), "hq")
    args = ([0],) if call == "read" else ()
    with pytest.raises(SinkError, match="unknown command"):
        getattr(store, call)(*args)  # before: a raw ResponseError


def test_a_window_stores_key_of_another_type_is_the_stores_not_the_records(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisWindowStore(client, "squall-test:hq-wrongtype:")
    client.delete(store.marks_key)
    client.set(store.marks_key, "another program's string")
    try:
        with pytest.raises(SinkError, match="WRONGTYPE"):
            store.shards()  # before: a raw ResponseError, each record's fault
    finally:
        client.delete(store.marks_key)
        client.close()


def test_wrongtype_on_a_subscription_records_own_key_stays_that_records(redis_url):
    """A record's own key of another type (another program's) is that record's: it passes
    raw, and the engine, failing each event alone, dead-letters only the record of that key."""
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, prefix="squall-test:hq-state:")
    client.set("squall-test:hq-state:wrong", "another program's string")
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE") as raised:
            store.read(["good", "wrong"])
        assert not isinstance(raised.value, SinkError)
        assert store.read(["good"]) == {}
    finally:
        client.delete("squall-test:hq-state:wrong")
        client.close()


def test_a_subscription_topology_on_a_redis_without_hgetall_dead_letters_nothing(crippled):
    """Through the engine: before, the raw ResponseError was taken for each record's, every
    event failed alone and was dead-lettered (its shard checkpointed past them)."""
    records = records_from([ev("register", "a"), ev("app_open", "b"), ev("register", "c")])
    with memory_stores() as stores, pytest.raises(BatchFailed, match="misconfiguration"):
        run_topology(SUBSCRIPTION.format(port=crippled), records)
    assert stores["dlq"] == [] and stores["out"] == []  # before: three dead letters


SUBSCRIPTION = """
name: no-hgetall
resources:
  state: {{url: "redis://127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subscription, type: subscription, store: state}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
"""


def test_a_window_topology_on_a_redis_without_eval_dead_letters_nothing(crippled):
    """Through the engine, the window bolt's Redis store without EVAL/HGETALL: before, each event
    failed alone and was dead-lettered."""
    t0 = 1_714_557_600_000
    records = records_from([{"timestamp": t0 + i, "app": "a"} for i in range(3)])
    with memory_stores() as stores, pytest.raises(BatchFailed, match="misconfiguration"):
        run_topology(WINDOW.format(port=crippled), records)
    assert stores["dlq"] == [] and stores["out"] == []  # before: three dead letters


WINDOW = """
name: no-eval
resources:
  state: {{url: "redis://127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: minutely, type: window, store: state, key: [app], size: 1m, aggregates: {{n: {{fn: count}}}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
"""


def test_a_redis_without_the_replicas_it_needs_to_write_is_an_outage(tmp_path):
    """``min-replicas-to-write`` not met (a replica's link down) answers every write
    ``NOREPLICAS``: it passes when the replica is back, so the batch is retried — not a
    misconfiguration that stops the run."""
    with private_redis_server(tmp_path, "--min-replicas-to-write", "1") as port:
        bolt = make_subscription(resources(state=f"redis://127.0.0.1:{port}/0"))
        bolt.process(make_batch([ev("register", "c")]))
        with pytest.raises(TransientError, match="NOREPLICAS"):
            bolt.commit_state(lambda event: True)
