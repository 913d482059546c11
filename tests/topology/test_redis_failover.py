"""A Redis failover behind one endpoint (ElastiCache's primary endpoint, a DNS name or a Service
that moves to the promoted replica): the old primary, now a replica, answers ``READONLY`` on the
connections squall already holds. squall retries it as an outage, but redis-py keeps a
connection after an error answer: each retry asked the old primary again, ``READONLY`` for as
long as the process lived (the batch failed after its attempts; a KCL shard ran it again for
ever). squall's Redis clients now drop a connection that answered ``READONLY``, so the retry
connects anew and reaches the new primary.

The endpoint here is a loopback forwarder whose target moves to the new primary: connections
made before stay with the old one, as with a DNS name resolved when they were made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from squall.errors import TransientError
from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources
from tests.enrichment.support import make_batch, resources
from tests.enrichment.test_subscription import ev
from tests.enrichment.test_subscription import make_bolt as make_subscription
from tests.observability.test_retrying_live import Forwarder
from tests.private_redis import private_redis_server


def test_a_write_retried_after_a_failover_reaches_the_new_primary(tmp_path: Path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    quick = ("--shutdown-timeout", "0")  # a primary would wait for its replica when stopped
    with (
        private_redis_server(tmp_path / "a", *quick) as a,
        private_redis_server(tmp_path / "b", *quick) as b,
        redis.Redis(port=a) as old,
        redis.Redis(port=b) as new,
    ):
        endpoint = Forwarder(("127.0.0.1", a))
        endpoint.up()
        try:
            bolt = make_subscription(resources(state=f"redis://127.0.0.1:{endpoint.port}/0"))
            bolt.process(make_batch([ev("register", "before")]))
            bolt.commit_state(lambda event: True)  # written to the primary, a
            assert old.dbsize() > 0
            # the failover: b is the primary, a its replica; the endpoint now leads to b
            old.replicaof("127.0.0.1", b)
            endpoint.target = ("127.0.0.1", b)
            bolt.process(make_batch([ev("register", "after")], start=2))
            with pytest.raises(TransientError, match="ReadOnlyError"):
                bolt.commit_state(lambda event: True)  # on the connection made to a
            bolt.commit_state(lambda event: True)  # the engine's retry: before, READONLY again
            assert new.dbsize() > 0  # b was empty when it became the primary
        finally:
            endpoint.down()


def test_a_watched_transaction_on_the_demoted_primary_fails_once_then_reaches_the_new_one(
    tmp_path: Path,
):
    """A user's component doing an optimistic update (``Redis.transaction``: WATCH, read,
    MULTI/EXEC) on the topology's Redis resource. Dropping the connection through the client's
    ``Retry`` made redis-py turn ``READONLY`` into a ``WatchError``, which ``transaction`` runs
    again at once: on the demoted primary, a new connection each time, for as long as the
    endpoint leads to it (here: 1,000 runs in well under a second, the guard's). Now the
    ``ReadOnlyError`` reaches the component (an outage: the engine retries it), and the
    retry, on a new connection, reaches the new primary."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    quick = ("--shutdown-timeout", "0")
    with (
        private_redis_server(tmp_path / "a", *quick) as a,
        private_redis_server(tmp_path / "b", *quick) as b,
        redis.Redis(port=a) as old,
        redis.Redis(port=b) as new,
    ):
        endpoint = Forwarder(("127.0.0.1", a))
        endpoint.up()
        runs = 0

        def count(pipe) -> None:
            nonlocal runs
            runs += 1
            if runs > 1000:
                raise RuntimeError("the transaction is run again and again")
            seen = int(pipe.get("count") or 0)
            pipe.multi()
            pipe.set("count", seen + 1)

        try:
            client = resources(cache=f"redis://127.0.0.1:{endpoint.port}/0").redis("cache")
            client.transaction(count, "count")
            assert old.get("count") == b"1"
            old.replicaof("127.0.0.1", b)  # the failover, the endpoint still on a for now
            with pytest.raises(redis.exceptions.ReadOnlyError):
                client.transaction(count, "count")
            assert runs == 2
            endpoint.target = ("127.0.0.1", b)
            client.transaction(count, "count")  # the engine's retry
            assert new.get("count") == b"1"  # b had nothing of a's when it became the primary
            assert runs == 3
        finally:
            endpoint.down()


def _pipeline_answers(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.get("count")
    pipe.incr("count")
    answers = pipe.execute(raise_on_error=False)  # the errors among the answers, not raised
    assert isinstance(answers[1], redis.exceptions.ReadOnlyError)


def _script(client: redis.Redis) -> None:
    with pytest.raises(redis.exceptions.ReadOnlyError):
        client.register_script("return redis.call('INCR', KEYS[1])")(keys=["count"])


def _multi(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.incr("count")
    pipe.incr("other")
    with pytest.raises(redis.exceptions.ReadOnlyError):
        pipe.execute()


@pytest.mark.parametrize("call", [_pipeline_answers, _script, _multi])
def test_every_kind_of_call_answered_readonly_drops_its_connection(tmp_path: Path, call):
    """A pipeline whose errors are returned among its answers (``raise_on_error=False``: the
    client's ``Retry`` never saw them, the connection was kept), a Lua script (``READONLY``
    from inside it), a MULTI/EXEC (discarded whole: ``EXECABORT``, nothing of it written)."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with (
        private_redis_server(tmp_path / "a") as a,
        private_redis_server(tmp_path / "b") as b,
        redis.Redis(port=a) as old,
    ):
        old.replicaof("127.0.0.1", b)  # a demoted primary
        client = resources(cache=f"redis://127.0.0.1:{a}/0").redis("cache")
        before = client.client_id()
        call(client)
        assert client.client_id() != before  # a new connection
        assert old.get("count") is None and old.get("other") is None


def test_a_single_connection_client_drops_its_connection_answered_readonly(tmp_path: Path):
    """``single_connection_client: true`` in the resource's options: the client keeps one
    connection and never releases it, so the drop at release never came; every retry asked the
    demoted primary again. It is dropped before its next command instead."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with (
        private_redis_server(tmp_path / "a") as a,
        private_redis_server(tmp_path / "b") as b,
        redis.Redis(port=a) as old,
    ):
        config = ResourceConfig(
            url=f"redis://127.0.0.1:{a}/0",
            connect_timeout=2,
            options={"single_connection_client": True},
        )
        client = Resources({"cache": config}).redis("cache")
        client.set("count", 1)
        old.replicaof("127.0.0.1", b)  # a demoted primary
        before = client.client_id()
        with pytest.raises(redis.exceptions.ReadOnlyError):
            client.incr("count")
        assert client.client_id() != before  # a new connection
        assert client.connection is not None  # still the client's one connection
