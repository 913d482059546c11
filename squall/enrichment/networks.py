"""A cache of IP database answers keyed by network, so one lookup serves a whole network.

A MaxMind reader returns, with each answer, the prefix length of the database network that
holds the address. Networks of one database never overlap, so the answer is cached under that
network and any later address inside it is answered from memory:

- first by its *bucket* — the /24 (IPv4) or /48 (IPv6) around it — which holds the answer when
  the database network is at least that large (the common case: one dictionary probe);
- else by trying each prefix length seen so far, most common first (networks smaller than a
  bucket, or a bucket not yet seen inside a known network).

Keys are plain integers; both maps are bounded LRUs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MISSING: Any = object()

_BITS = {4: 32, 6: 128}
_BUCKET = {4: 24, 6: 48}
_V6_NETWORK = 1 << 140  # keeps IPv6 network keys apart from IPv4 ones
_V6_BUCKET = 1 << 60


class NetworkCache:
    """Answers by network for one database; at most ``maxsize`` networks and ``maxsize`` buckets."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._networks: OrderedDict[int, Any] = OrderedDict()
        self._buckets: OrderedDict[int, Any] = OrderedDict()
        self._prefixes: dict[int, list[int]] = {4: [], 6: []}
        self._counts: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._networks)

    @staticmethod
    def _bucket_key(version: int, n: int) -> int:
        return n >> 8 if version == 4 else (n >> 80) | _V6_BUCKET

    @staticmethod
    def _network_key(version: int, n: int, prefix: int) -> int:
        key = (n >> (_BITS[version] - prefix)) << 8 | prefix
        return key if version == 4 else key | _V6_NETWORK

    def find(self, version: int, n: int) -> Any:
        """The cached answer for the network holding address ``n``, or ``MISSING``."""
        buckets = self._buckets
        bucket = self._bucket_key(version, n)
        value = buckets.get(bucket, MISSING)
        if value is not MISSING:
            buckets.move_to_end(bucket)
            return value
        networks = self._networks
        bits, flag = _BITS[version], (0 if version == 4 else _V6_NETWORK)
        for prefix in self._prefixes[version]:
            key = ((n >> (bits - prefix)) << 8 | prefix) | flag
            value = networks.get(key, MISSING)
            if value is not MISSING:
                networks.move_to_end(key)
                if prefix <= _BUCKET[version]:
                    self._put(buckets, bucket, value)
                return value
        return MISSING

    def add(self, version: int, n: int, prefix: int, value: Any) -> None:
        """Cache the answer for the ``prefix``-long network holding address ``n``."""
        self._put(self._networks, self._network_key(version, n, prefix), value)
        if prefix <= _BUCKET[version]:
            self._put(self._buckets, self._bucket_key(version, n), value)
        seen = (version, prefix)
        count = self._counts.get(seen, 0) + 1
        self._counts[seen] = count
        prefixes = self._prefixes[version]
        if count == 1:
            prefixes.append(prefix)
        if count == 1 or count & 0xFF == 0:  # re-rank now and then: most common prefix first
            prefixes.sort(key=lambda p: -self._counts[(version, p)])

    def _put(self, data: OrderedDict[int, Any], key: int, value: Any) -> None:
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.maxsize:
            data.popitem(last=False)
