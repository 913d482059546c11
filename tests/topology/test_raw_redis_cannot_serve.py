"""A user's own component whose raw Redis command the server cannot serve, answered by a real
Redis: no record causes the answer, so the batch fails as a misconfiguration (``SinkError`` →
``BatchFailed``, not retried, nothing dead-lettered) instead of each event failing alone and
being dead-lettered while the shard checkpoints past them.

redis-py strips the error code of the answers it has a class for: a Cluster node's ``MOVED
12182 127.0.0.1:7001`` is a ``MovedError('12182 127.0.0.1:7001')``, ``CROSSSLOT …`` a
``ClusterCrossSlotError``, ``NOSCRIPT …`` a ``NoScriptError`` — a check of the text's first word
never saw them. A command renamed away called from a Lua script answers ``Unknown Redis command
called from script``, not ``unknown command``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis

from squall.bolts.base import Bolt, Output
from squall.errors import BatchFailed
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.executor import _refused_for_good
from tests.ports import free_port
from tests.private_redis import private_redis_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[int, int]]:
    """Two Redis Cluster nodes on loopback, slots 0-8191 on the first, the rest on the second:
    yields (first node's port, second node's port) once the cluster is up."""
    with ExitStack() as stack:
        nodes = []
        for name in ("a", "b"):
            for attempt in range(3):  # the bus port may be taken before the node binds it
                bus = free_port()  # port + 10000 may be past 65535
                try:
                    port = stack.enter_context(
                        private_redis_server(
                            tmp_path_factory.mktemp(f"cluster-{name}"),
                            *("--cluster-enabled", "yes", "--cluster-port", str(bus)),
                        )
                    )
                except RuntimeError:
                    if attempt == 2:
                        raise
                    continue
                break
            nodes.append((port, bus, stack.enter_context(redis.Redis(port=port))))
        (a, _, first), (b, bus_b, second) = nodes
        first.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
        second.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", b, bus_b)
        deadline = time.monotonic() + 60
        while not all(
            b"cluster_state:ok" in n.execute_command("CLUSTER", "INFO") for n in (first, second)
        ):
            assert time.monotonic() < deadline, "the two nodes did not form a cluster"
            time.sleep(0.02)
        yield a, b


class RawRedis(Bolt):
    """A user's bolt calling Redis itself (``command``), the error escaping raw."""

    summary = "a raw redis-py call"
    port = 0
    command: str = ""
    calls = 0

    def process(self, batch):
        type(self).calls += 1
        with redis.Redis(port=type(self).port) as client:
            for ev in batch:
                key = f"{{a}}k{ev.value['i']}"  # slot 15495, the second node's
                if self.command == "get":
                    client.get(key)
                elif self.command == "mget":
                    client.mget(key, "other")
                elif self.command == "evalsha":  # a script cache emptied (a restart, a failover)
                    client.evalsha("0" * 40, 1, key)
                else:  # a script calling a command renamed away
                    client.eval("return redis.call('SQUALLNOSUCHCOMMAND', KEYS[1])", 1, key)
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("get", "MovedError"),
        ("mget", "ClusterCrossSlotError"),
        ("evalsha", "NoScriptError"),
        ("eval", "Unknown Redis command called from script"),
    ],
)
def test_a_command_no_record_causes_fails_the_batch_not_each_record(cluster, command, reason):
    """Before: each event failed alone and all four were dead-lettered."""
    tag = f"raw-redis-{command}"
    with redis.Redis(port=cluster[0]) as node:
        assert node.cluster("keyslot", "{a}k0") == 15495 != node.cluster("keyslot", "other")
    # MOVED, CROSSSLOT: asked of the first node; the scripts: of the node holding the keys
    RawRedis.port = cluster[0] if command in ("get", "mget") else cluster[1]
    RawRedis.command, RawRedis.calls = command, 0
    yaml_text = f"""
name: {tag}
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cache, type: "tests.topology.test_raw_redis_cannot_serve:RawRedis"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    MemorySink.stores.pop(f"{tag}-out", None), MemorySink.stores.pop(f"{tag}-dlq", None)
    records = records_from([{"i": i} for i in range(4)])
    with pytest.raises(BatchFailed, match=reason):
        run_topology(yaml_text, records, batch_size=4)
    assert RawRedis.calls == 1  # neither retried nor split record by record
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    assert MemorySink.stores.get(f"{tag}-out", []) == []


def test_an_error_a_record_can_cause_stays_the_records(cluster):
    """A key of another type, a value that is no integer, a script's own error (it may be
    about the record's data): the record's, dead-lettered alone."""
    with redis.Redis(port=cluster[1]) as node:
        node.set("{a}k0", "text")
        for call in (
            lambda: node.lpush("{a}k0", 1),
            lambda: node.incr("{a}k0"),
            lambda: node.eval("return redis.error_reply('no such app')", 1, "{a}k0"),
            lambda: node.eval("return redis.call('LPUSH', KEYS[1], 1)", 1, "{a}k0"),
        ):
            with pytest.raises(redis.exceptions.ResponseError) as raised:
                call()
            assert not _refused_for_good(raised.value), raised.value


class ScriptUser(Bolt):
    """A user's bolt counting with a script of ``register_script`` on the topology's Redis
    resource, alone or in a pipeline (``how``); the script cache is emptied (``SCRIPT FLUSH``:
    as by a restart or a failover) before the second batch."""

    summary = "a registered script"
    port = 0
    how = ""
    batches = 0

    def open(self, resources):
        self.client = resources.redis("cache")
        self.count = self.client.register_script("return redis.call('INCR', KEYS[1])")

    def process(self, batch):
        type(self).batches += 1
        if type(self).batches == 2:
            with redis.Redis(port=type(self).port) as admin:
                admin.script_flush()
        if self.how == "pipeline":
            pipe = self.client.pipeline(transaction=True)
            for ev in batch:
                self.count(keys=[f"{{a}}n{ev.value['i'] % 2}"], client=pipe)
            pipe.execute()
        else:
            for ev in batch:
                self.count(keys=[f"{{a}}n{ev.value['i'] % 2}"])
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


@pytest.mark.parametrize("how", ["call", "pipeline"])
def test_a_registered_script_after_the_script_cache_emptied_is_loaded_again(cluster, how):
    """redis-py's ``Script`` answers ``NOSCRIPT`` itself (it loads the script and runs it again;
    a pipeline loads its scripts first): the answer never reaches squall, whose rule for a raw
    ``NoScriptError`` must not stop a user of ``register_script`` after a restart."""
    tag = f"registered-script-{how}"
    with redis.Redis(port=cluster[1]) as node:
        node.delete("{a}n0", "{a}n1")
    ScriptUser.port, ScriptUser.how, ScriptUser.batches = cluster[1], how, 0
    yaml_text = f"""
name: {tag}
spout: {{type: 'squall.testing:ListSpout'}}
resources: {{cache: {{url: 'redis://127.0.0.1:{cluster[1]}/0'}}}}
settings: {{retry: {{attempts: 1, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: count, type: "tests.topology.test_raw_redis_cannot_serve:ScriptUser"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    MemorySink.stores.pop(f"{tag}-out", None), MemorySink.stores.pop(f"{tag}-dlq", None)
    run = run_topology(yaml_text, records_from([{"i": i} for i in range(8)]), batch_size=4)
    assert ScriptUser.batches == 2
    assert all(r.ok for r in run.results)
    assert len(MemorySink.stores[f"{tag}-out"]) == 8
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    with redis.Redis(port=cluster[1]) as node:
        assert node.mget("{a}n0", "{a}n1") == [b"4", b"4"]


class ClusterUser(Bolt):
    """A user's bolt on a cluster-aware client (``RedisCluster``) that follows ``MOVED``."""

    summary = "a redis-py cluster client"
    port = 0

    def process(self, batch):
        with redis.RedisCluster(host="127.0.0.1", port=type(self).port) as client:
            for ev in batch:
                for key in (f"{{a}}c{ev.value['i']}", f"other{ev.value['i']}"):
                    client.set(key, ev.value["i"])
                    assert client.get(key) == str(ev.value["i"]).encode()
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def test_a_cluster_client_is_not_stopped_by_the_rule_for_moved(cluster):
    """A ``RedisCluster`` asked first of the node without the key's slot follows the ``MOVED``
    itself: the batch is served, nothing failed or dead-lettered."""
    tag = "cluster-client"
    ClusterUser.port = cluster[0]
    yaml_text = f"""
name: {tag}
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 1, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: write, type: "tests.topology.test_raw_redis_cannot_serve:ClusterUser"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    MemorySink.stores.pop(f"{tag}-out", None), MemorySink.stores.pop(f"{tag}-dlq", None)
    run = run_topology(yaml_text, records_from([{"i": i} for i in range(4)]), batch_size=4)
    assert all(r.ok for r in run.results)
    assert len(MemorySink.stores[f"{tag}-out"]) == 4
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
