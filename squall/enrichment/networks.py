"""A cache of IP database answers keyed by network, so one lookup serves a whole network.

A MaxMind reader returns, with each answer, the prefix length of the database network that
holds the address. Networks of one database never overlap, so the answer is cached under that
network and any later address inside it is answered from memory:

- first by its *bucket* — the /24 (IPv4) or /48 (IPv6) around it — which holds the answer when
  the database network is at least that large (the common case: one dictionary probe);
- else by the prefix lengths of the networks cached inside its *region* — the /16 (IPv4) or
  /32 (IPv6) around it, where a network at least that long lies whole — usually none, one or
  two lengths, each one dictionary probe; and by the lengths of the few cached networks wider
  than a region.

An address no cached network holds (the usual miss: a network not seen yet) therefore costs a
bucket probe and an index probe, not one probe per prefix length ever seen (which cost more than
the database lookups it saved on traffic spread over many networks: ~17 probes a miss on the
benchmark's addresses, 4–6 µs an event).

Keys are plain integers; the bucket and network maps are bounded LRUs, and the region index
counts the cached networks it names, so it shrinks with their eviction.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MISSING: Any = object()

_BITS = {4: 32, 6: 128}
_BUCKET = {4: 24, 6: 48}
_REGION = {4: 16, 6: 32}
_V6_NETWORK = 1 << 140  # keeps IPv6 network keys apart from IPv4 ones
_V6_BUCKET = 1 << 60
_V6_REGION = 1 << 40


class NetworkCache:
    """Answers by network for one database; at most ``maxsize`` networks and ``maxsize`` buckets."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        # network key -> (answer, region key or None when wider than a region, prefix, version)
        self._networks: OrderedDict[int, tuple[Any, int | None, int, int]] = OrderedDict()
        self._buckets: OrderedDict[int, Any] = OrderedDict()
        self._regions: dict[int, dict[int, int]] = {}  # region -> {prefix: cached networks}
        self._wide: dict[int, dict[int, int]] = {4: {}, 6: {}}  # the same, wider than a region

    def __len__(self) -> int:
        return len(self._networks)

    def answers(self) -> list[Any]:
        """The cached answers, one per cached network."""
        return [entry[0] for entry in self._networks.values()]

    @staticmethod
    def _bucket_key(version: int, n: int) -> int:
        return n >> 8 if version == 4 else (n >> 80) | _V6_BUCKET

    @staticmethod
    def _region_key(version: int, n: int) -> int:
        return n >> 16 if version == 4 else (n >> 96) | _V6_REGION

    @staticmethod
    def _network_key(version: int, n: int, prefix: int) -> int:
        key = (n >> (_BITS[version] - prefix)) << 8 | prefix
        return key if version == 4 else key | _V6_NETWORK

    def find(self, version: int, n: int) -> Any:
        """The cached answer for the network holding address ``n``, or ``MISSING``."""
        buckets = self._buckets
        if version == 4:
            bucket, region, bits, flag = n >> 8, n >> 16, 32, 0
        else:
            bucket, region = (n >> 80) | _V6_BUCKET, (n >> 96) | _V6_REGION
            bits, flag = 128, _V6_NETWORK
        value = buckets.get(bucket, MISSING)
        if value is not MISSING:
            buckets.move_to_end(bucket)
            return value
        inside, wide = self._regions.get(region), self._wide[version]
        if inside is None and not wide:
            return MISSING
        networks = self._networks
        for lengths in (inside or (), wide):
            for prefix in lengths:
                key = ((n >> (bits - prefix)) << 8 | prefix) | flag
                entry = networks.get(key)
                if entry is not None:
                    networks.move_to_end(key)
                    value = entry[0]
                    if prefix <= _BUCKET[version]:
                        self._put_bucket(bucket, value)
                    return value
        return MISSING

    def add(self, version: int, n: int, prefix: int, value: Any) -> None:
        """Cache the answer for the ``prefix``-long network holding address ``n``."""
        networks = self._networks
        key = self._network_key(version, n, prefix)
        entry = networks.get(key)
        if entry is not None:  # known: a new answer for it, counted once
            networks[key] = (value, *entry[1:])
            networks.move_to_end(key)
        else:
            if prefix >= _REGION[version]:
                region: int | None = self._region_key(version, n)
                lengths = self._regions.setdefault(region, {})  # type: ignore[arg-type]
            else:
                region, lengths = None, self._wide[version]
            lengths[prefix] = lengths.get(prefix, 0) + 1
            networks[key] = (value, region, prefix, version)
            if len(networks) > self.maxsize:
                self._forget(*networks.popitem(last=False)[1][1:])
        if prefix <= _BUCKET[version]:
            self._put_bucket(self._bucket_key(version, n), value)

    def _forget(self, region: int | None, prefix: int, version: int) -> None:
        """An evicted network no longer counts in its region's (or the wide) prefix lengths."""
        lengths = self._wide[version] if region is None else self._regions[region]
        left = lengths[prefix] - 1
        if left:
            lengths[prefix] = left
            return
        del lengths[prefix]
        if region is not None and not lengths:
            del self._regions[region]

    def _put_bucket(self, bucket: int, value: Any) -> None:
        buckets = self._buckets
        buckets[bucket] = value
        buckets.move_to_end(bucket)
        if len(buckets) > self.maxsize:
            buckets.popitem(last=False)
