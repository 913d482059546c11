"""A window state in Redis written by squall before the log layout (one hash field per key —
its text a JSON list — holding ``[rev, closed, states]``, under the same ``w:<start>``, ``open``
and ``all`` keys the log uses now). Those cells are not read, as docs/windows.md says of the old
layout ("Upgrading from the cell layout"), but they must not be taken for log rows: the bolt
read them as deltas and failed every batch (``'list' object has no attribute 'items'``) once the
watermark reached a window open at the upgrade. They are moved aside, under ``cells:<start>``.
"""

from __future__ import annotations

import orjson
import redis

from tests.bolts.test_window import MIN, T0, ev, finals, make_bolt, run


def _old_layout(url: str, name: str) -> str:
    """What squall of 4 December left in Redis for a window 10:00–10:01 open at the upgrade (5
    events of app "a" and 2 of "b" counted, not yet emitted), one closed window 09:58 and the
    mark of the shard that fed it (its name then: the shard id alone)."""
    r = redis.Redis.from_url(url)
    base = f"test:{name}:"
    r.hset(f"{base}w:{T0}", mapping={'["a"]': "[1,false,[5]]", '["b"]': "[1,false,[2]]"})
    r.hset(f"{base}w:{T0 - 2 * MIN}", mapping={'["a"]': "[2,true,[4]]"})
    r.zadd(f"{base}open", {str(T0): T0 + MIN})
    r.zadd(f"{base}all", {str(T0): T0 + MIN, str(T0 - 2 * MIN): T0 - MIN})
    r.hset(f"{base}shards", "shardId-000000000000", orjson.dumps([T0 + 30_000, "1007", 0]))
    return base


def test_cells_of_the_previous_layout_are_moved_aside_not_read_as_deltas(redis_url, unique_name):
    base = _old_layout(redis_url, unique_name)
    bolt = make_bolt(redis_url, unique_name)
    # the shard goes on after the upgrade: two more events of 10:00, then one of 10:03
    run(bolt, [ev(8, T0 + 40_000), ev(9, T0 + 50_000)])
    results, late = run(bolt, [ev(10, T0 + 3 * MIN)])
    assert late == []
    # the window open at the upgrade is emitted with the events counted after it only
    assert {k: r["n"] for k, r in finals(results).items()} == {("2024-05-01T10:00:00.000Z", "a"): 2}
    r = redis.Redis.from_url(redis_url)
    assert r.hgetall(f"{base}cells:{T0}") == {
        b'["a"]': b"[1,false,[5]]",
        b'["b"]': b"[1,false,[2]]",
    }
    assert not any(f.startswith(b"[") for f in r.hkeys(f"{base}w:{T0}"))
    # a new process finds nothing more to move and reads the log as it is
    again = make_bolt(redis_url, unique_name)
    results, late = run(again, [ev(11, T0 + 5 * MIN)])
    assert late == [] and {k: r["n"] for k, r in finals(results).items()} == {
        ("2024-05-01T10:03:00.000Z", "a"): 1
    }


def test_a_window_the_previous_version_closed_at_the_end_of_its_input_is_added_to(
    redis_url, unique_name
):
    """The old version's run ended with a flush: every window closed (none left in ``open``),
    its cells kept until they expired. The next input's first records fall in the last of those
    windows: the bolt reads it (as it would any window it adds to) and must not meet the cells."""
    base = _old_layout(redis_url, unique_name)
    r = redis.Redis.from_url(redis_url)
    r.hset(f"{base}w:{T0}", mapping={'["a"]': "[2,true,[5]]", '["b"]': "[2,true,[2]]"})
    r.zrem(f"{base}open", str(T0))
    bolt = make_bolt(redis_url, unique_name, emit="every_batch")
    results, late = run(bolt, [ev(8, T0 + 40_000)])
    assert late == [] and [(x["window_start"], x["n"]) for x in results] == [
        ("2024-05-01T10:00:00.000Z", 1)
    ]
    assert r.hlen(f"{base}cells:{T0}") == 2 and r.hlen(f"{base}cells:{T0 - 2 * MIN}") == 1
