"""The LRU/TTL cache in front of every enrichment lookup."""

from __future__ import annotations

import pytest

from squall.cache import LRUCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_get_many_splits_hits_from_misses_and_lists_each_miss_once():
    cache: LRUCache[str, int] = LRUCache(10)
    cache.put_many({"a": 1, "b": 2})
    found, missing = cache.get_many(["a", "x", "b", "x", "y", "a"])
    assert found == {"a": 1, "b": 2}
    assert missing == ["x", "y"]
    assert (cache.hits, cache.misses) == (2, 2)


def test_least_recently_used_entry_is_evicted_first():
    cache: LRUCache[str, int] = LRUCache(3)
    cache.put_many({"a": 1, "b": 2, "c": 3})
    cache.get_many(["a"])  # a becomes the most recent
    cache.put("d", 4)
    assert len(cache) == 3
    assert "b" not in cache
    assert all(k in cache for k in "acd")


def test_put_many_larger_than_maxsize_keeps_the_newest():
    cache: LRUCache[int, int] = LRUCache(5)
    cache.put_many({i: i for i in range(12)})
    assert len(cache) == 5
    assert cache.get_many(range(12))[0] == {i: i for i in range(7, 12)}


def test_entries_expire_after_ttl_on_the_injected_clock():
    clock = FakeClock()
    cache: LRUCache[str, str] = LRUCache(10, ttl=60, clock=clock)
    cache.put("k", "v")
    clock.now += 59.9
    assert cache.get("k") == "v"
    clock.now += 0.2
    assert cache.get("k") is None
    assert len(cache) == 0  # the expired entry was removed, not just hidden


def test_rewriting_an_entry_renews_its_ttl():
    clock = FakeClock()
    cache: LRUCache[str, str] = LRUCache(10, ttl=10, clock=clock)
    cache.put("k", "v1")
    clock.now += 8
    cache.put("k", "v2")
    clock.now += 8
    assert cache.get("k") == "v2"


@pytest.mark.parametrize(
    "kwargs", [{"maxsize": 0}, {"maxsize": 1, "ttl": 0}, {"maxsize": 1, "ttl": -1}]
)
def test_invalid_bounds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        LRUCache(**kwargs)
