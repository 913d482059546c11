"""A lookup's shared Redis cache down (refused, ``BUSY``) while its source answers: the cache is an
optimisation in front of the source, not a dependency of the batch.

Before: every outage of the cache raised ``TransientError``, so the batch was retried and then
failed without a checkpoint — a Redis restart, failover or long script stopped a pipeline whose
table answered every key — and a Redis that did not answer cost its client's timeout twice per
batch (the read, then the write). Now the batch is enriched from the source alone, a warning
names the cache's failure, and the cache is left alone for ``SHARED_CACHE_PAUSE`` seconds. With
the source down too, the batch still fails (the source's error), events untouched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from squall.bolts.lookup import SHARED_CACHE_PAUSE
from squall.errors import BatchFailed, SinkError
from squall.testing import memory_stores, records_from, run_topology
from tests.bolts.test_lookup import (
    FakeClock,
    assert_transient_and_untouched,
    create_apps,
    make_bolt,
    run,
)
from tests.enrichment.support import make_batch, resources
from tests.ports import free_port
from tests.private_redis import busy, private_redis_server, scripted_redis_server

SOURCE = {"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]}


def cached_bolt(apps_db: str, redis_url: str, prefix: str | None = None, **options):
    """A lookup of ``app_id`` in ``apps_db``'s apps table, its shared cache the Redis at
    ``redis_url`` (its keys under ``prefix``, else the default prefix)."""
    shared = (
        {"resource": "cache"} if prefix is None else {"resource": "cache", "key_prefix": prefix}
    )
    return make_bolt(
        resources(db=apps_db, cache=redis_url),
        key="app_id",
        source=SOURCE,
        shared_cache=shared,
        **options,
    )


@pytest.fixture(scope="module")
def scripted_redis(tmp_path_factory) -> Iterator[int]:
    with scripted_redis_server(tmp_path_factory.mktemp("busy-cache")) as port:
        yield port


@pytest.fixture
def apps_db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(url, "apps")
    return url


def test_a_shared_cache_refusing_connections_serves_the_batch_from_the_source(apps_db, caplog):
    down = f"redis://:secret@127.0.0.1:{free_port()}/0"
    bolt = cached_bolt(apps_db, down)
    with caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
        found, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 3}, {"app_id": 404}])
    # before: TransientError, the batch retried and failed while the table answered
    assert found == {0: {"name": "Weather"}, 1: {"name": "Chess"}, 2: None} and failed == {}
    assert bolt.stats["shared_down"] == 1 and bolt.stats["fetched"] == 3
    [logged] = [r.getMessage() for r in caplog.records]
    assert "shared cache down" in logged and "ConnectionError" in logged
    assert "secret" not in logged


def test_a_busy_shared_cache_is_paused_then_asked_again(scripted_redis, apps_db, caplog):
    url = f"redis://127.0.0.1:{scripted_redis}/0"
    prefix = "squall-test:paused:"
    clock = FakeClock()
    bolt = cached_bolt(
        apps_db,
        url,
        prefix,
        clock=clock,
        cache={"size": 0},  # every batch passes the in-process cache: only Redis could answer
    )
    client = redis.Redis(port=scripted_redis)
    try:
        with busy(scripted_redis), caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
            assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}  # before: BUSY
        assert "BUSY" in caplog.text and bolt.stats["shared_down"] == 1
        # The script ended, but the pause holds: the source alone, nothing written to Redis.
        clock.now += SHARED_CACHE_PAUSE - 1
        assert run(bolt, [{"app_id": 3}])[0] == {0: {"name": "Chess"}}
        assert client.keys(f"{prefix}*") == [] and bolt.stats["shared_hits"] == 0
        # Past the pause: the cache is read and written again.
        clock.now += 1
        assert run(bolt, [{"app_id": 3}])[0] == {0: {"name": "Chess"}}
        assert client.get(f"{prefix}3") == b'[{"name":"Chess"}]'
        assert run(bolt, [{"app_id": 3}])[0] == {0: {"name": "Chess"}}
        assert bolt.stats["shared_hits"] == 1 and bolt.stats["shared_down"] == 1
    finally:
        for key in client.keys(f"{prefix}*"):
            client.delete(key)
        client.close()


def test_a_shared_cache_down_with_its_source_down_fails_the_batch(pg_url_psycopg2, unique_name):
    create_apps(pg_url_psycopg2, unique_name)
    try:
        res = resources(db=pg_url_psycopg2, cache=f"redis://127.0.0.1:{free_port()}/0")
        bolt = make_bolt(
            res,
            key="app_id",
            source={"type": "sql", "resource": "db", "table": unique_name},
            shared_cache={"resource": "cache"},
        )
        # The database goes away too: the resource's engine on a closed port.
        bolt.source.engine = sa.create_engine(
            f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
        )
        assert_transient_and_untouched(bolt, [{"app_id": 1}, {"app_id": 2}], match="table")
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


@pytest.mark.parametrize("refusal", ["read-only replica", "ACL without SET", "SET renamed away"])
def test_a_shared_cache_refusing_a_write_never_shows_the_record(apps_db, tmp_path, refusal, caplog):
    """A write refused by a read-only replica (a failover, a replica's address) or by an ACL
    that may read but not write: the pipeline's error quotes its first command, a SET of a
    record — the warning (replica) or the batch's error (ACL) showed the record, whatever it
    holds (personal data, a token column). Only the server's reason is said now. So with SET
    renamed away: its error quotes the command's first arguments, the record among them."""
    with contextlib.ExitStack() as stack:
        renamed = ("--rename-command", "SET", "") if refusal == "SET renamed away" else ()
        port = stack.enter_context(private_redis_server(tmp_path, *renamed))
        if refusal == "ACL without SET":
            with redis.Redis(port=port) as admin:
                admin.acl_setuser(
                    "app",
                    enabled=True,
                    passwords=["+pw"],
                    keys=["*"],
                    commands=["+mget", "+ping", "+hello", "+client"],
                )
            cache = f"redis://app:pw@127.0.0.1:{port}/0"
        elif refusal == "SET renamed away":
            cache = f"redis://127.0.0.1:{port}/0"
        else:
            replica = private_redis_server(tmp_path, "--replicaof", "127.0.0.1", str(port))
            cache = f"redis://127.0.0.1:{stack.enter_context(replica)}/0"
        bolt = cached_bolt(apps_db, cache)
        with caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
            try:
                found, failed, _ = run(bolt, [{"app_id": 1}])
            except SinkError as exc:  # the ACL: a misconfiguration, as a refused password
                said = str(exc)
            else:
                assert found == {0: {"name": "Weather"}} and failed == {}
                said = caplog.text
    reason = {"ACL without SET": "'set'", "SET renamed away": "unknown command 'SET'"}
    assert reason.get(refusal, "read only replica") in said
    assert "Weather" not in said  # before: `(SET squall:lookup:…:1 [{"name":"Weather"}] EX 3600)`


def test_lookups_on_one_redis_resource_share_the_pause(apps_db, scripted_redis, caplog):
    """Two lookups of a topology on one cache resource: the first finds it down (here BUSY; a
    Redis that does not answer costs its `connect_timeout`) and leaves it alone for the pause,
    and the second asked it anyway — each lookup paid the outage once per pause."""
    res = resources(db=apps_db, cache=f"redis://127.0.0.1:{scripted_redis}/0")
    first, second = (
        make_bolt(
            res,
            key="app_id",
            source=SOURCE,
            shared_cache={"resource": "cache", "key_prefix": f"squall-test:shared-pause:{i}:"},
        )
        for i in (1, 2)
    )
    with busy(scripted_redis), caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
        assert run(first, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}
        assert run(second, [{"app_id": 3}])[0] == {0: {"name": "Chess"}}
    assert first.stats["shared_down"] == 1
    assert second.stats["shared_down"] == 0  # before: 1, a second wait on the same Redis
    assert len(caplog.records) == 1


def test_a_shared_cache_without_mget_stops_the_run_not_a_dead_letter_of_every_event(
    apps_db, tmp_path
):
    """A server that cannot serve as the cache — MGET renamed away or not offered (a proxy), a
    Redis Cluster endpoint answering MOVED or CROSSSLOT — answers an error that is neither an
    outage nor a password refused: it escaped the bolt as it was, and the engine, taking it for
    one record's, failed each event alone — every order dead-lettered (`unknown command
    'MGET', with args beginning with: '<prefix>1'`: a key in each reason), though the table
    answered. A misconfiguration now: the batch fails, not retried, nothing dead-lettered."""
    with private_redis_server(tmp_path, "--rename-command", "MGET", "") as port:
        bolt = cached_bolt(apps_db, f"redis://127.0.0.1:{port}/0", "squall-test:no-mget:")
        values = [{"app_id": 1}, {"app_id": 3}]
        batch = make_batch(values)
        with pytest.raises(SinkError, match="unknown command 'MGET'") as raised:
            bolt.process(batch)  # before: redis.exceptions.ResponseError
        assert "squall-test:no-mget" not in str(raised.value)
        assert [e.value for e in batch] == values
        records = records_from([{"app_id": 1}, {"app_id": 3}])
        with memory_stores() as stores, pytest.raises(BatchFailed, match="misconfiguration"):
            run_topology(NO_MGET.format(db=apps_db, port=port), records)
        assert stores["dlq"] == [] and stores["out"] == []  # before: both dead-lettered


NO_MGET = """
name: no-mget
resources:
  db: {{url: "{db}"}}
  cache: {{url: "redis://127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: sql, resource: db, table: apps, columns: [name]}}
    shared_cache: {{resource: cache}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
"""
