"""A bounded least-recently-used cache, batch-first, with an optional TTL and an injectable clock.

Enrichment looks keys up a batch at a time: ``get_many`` answers the hits and lists the misses,
the bolt resolves the misses once each, and ``put_many`` stores them. Without a TTL no clock is
read at all (the geo and device caches: their data only changes with a new database or parser).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: Any = object()


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` entries; the least recently used goes first; entries older than ``ttl`` seconds miss."""

    __slots__ = ("maxsize", "ttl", "clock", "_data", "hits", "misses")

    def __init__(
        self, maxsize: int, *, ttl: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        self.maxsize = maxsize
        self.ttl = ttl
        self.clock = clock
        # Without a TTL the values are stored bare; with one, as (expires_at, value).
        self._data: OrderedDict[K, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def get(self, key: K, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default``."""
        found, _ = self.get_many((key,))
        return found.get(key, default)

    def get_many(self, keys: Iterable[K]) -> tuple[dict[K, V], list[K]]:
        """Split ``keys`` into the cached values and the keys to resolve (each listed once)."""
        data = self._data
        found: dict[K, V] = {}
        missing: list[K] = []
        if self.ttl is None:
            move = data.move_to_end
            for key in keys:
                value = data.get(key, _MISSING)
                if value is _MISSING:
                    missing.append(key)
                else:
                    found[key] = value
                    move(key)
        else:
            now = self.clock()
            for key in keys:
                entry = data.get(key, _MISSING)
                if entry is not _MISSING and entry[0] > now:
                    found[key] = entry[1]
                    data.move_to_end(key)
                    continue
                if entry is not _MISSING:
                    del data[key]
                missing.append(key)
        if len(missing) > 1:
            missing = list(dict.fromkeys(missing))
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def get_or_compute(self, keys: Iterable[K], compute: Callable[[K], V]) -> dict[K, V]:
        """The value of each key: cached, or ``compute(key)`` once per missing key (then cached)."""
        found, missing = self.get_many(keys)
        if missing:
            fresh = {key: compute(key) for key in missing}
            self.put_many(fresh)
            found.update(fresh)
        return found

    def put(self, key: K, value: V) -> None:
        """Store one value."""
        self.put_many({key: value})

    def put_many(self, items: Mapping[K, V]) -> None:
        """Store values, evicting the least recently used entries beyond ``maxsize``."""
        data = self._data
        if self.ttl is None:
            data.update(items)
            for key in items:
                data.move_to_end(key)
        else:
            expires = self.clock() + self.ttl
            for key, value in items.items():
                data[key] = (expires, value)
                data.move_to_end(key)
        overflow = len(data) - self.maxsize
        while overflow > 0:
            data.popitem(last=False)
            overflow -= 1

    def clear(self) -> None:
        self._data.clear()
