"""A Redis running a script past its time limit (anyone's, on a shared server) answers ``BUSY``
to every command until the script ends: the server is down for that while. redis-py gives the
answer no class of its own (a plain ``ResponseError``), and only the lookup bolt knew it: the
subscription bolt's Redis store and the window bolt's Redis store let it escape raw, so the
engine took it for each record's fault — every event of the outage was dead-lettered and its
shard checkpointed past them. The engine's ``redis_errors``, which every Redis user of squall
goes through, knows it now: a ``TransientError``, the batch retried.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import redis

from squall.bolts.window_store import RedisWindowStore
from squall.errors import TransientError
from tests.enrichment.support import make_batch, resources
from tests.enrichment.test_subscription import ev, make_bolt
from tests.private_redis import busy, scripted_redis_server


@pytest.fixture(scope="module")
def scripted_redis(tmp_path_factory) -> Iterator[int]:
    with scripted_redis_server(tmp_path_factory.mktemp("busy-redis")) as port:
        yield port


def test_the_subscription_bolt_reading_a_busy_redis_is_down_not_every_records_fault(
    scripted_redis,
):
    bolt = make_bolt(resources(state=f"redis://127.0.0.1:{scripted_redis}/0"))
    batch = make_batch([ev("register", "a"), ev("app_open", "b")])
    before = copy.deepcopy([e.value for e in batch])
    with busy(scripted_redis), pytest.raises(TransientError, match="BUSY"):
        bolt.process(batch)  # before: a raw ResponseError, each record's fault (dead-lettered)
    assert [e.value for e in batch] == before
    assert all(e.failure is None for e in batch)


def test_the_subscription_bolt_writing_to_a_busy_redis_is_down(scripted_redis):
    bolt = make_bolt(resources(state=f"redis://127.0.0.1:{scripted_redis}/0"))
    bolt.process(make_batch([ev("register", "c")]))
    with busy(scripted_redis), pytest.raises(TransientError, match="BUSY"):
        bolt.commit_state(lambda event: True)


@pytest.mark.parametrize("call", ["read", "open_windows", "shards"])
def test_the_window_store_on_a_busy_redis_is_down(scripted_redis, call):
    store = RedisWindowStore(redis.Redis(port=scripted_redis), "busy")
    args = ([0],) if call == "read" else ()
    with busy(scripted_redis), pytest.raises(TransientError, match="BUSY"):
        getattr(store, call)(*args)
