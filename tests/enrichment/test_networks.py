"""The network cache answers exactly like the database, whatever the network sizes and evictions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.enrichment.networks import MISSING, NetworkCache


@st.composite
def partitions(draw, version: int):
    """Disjoint networks covering a /8 (IPv4) or a /32 (IPv6): (start, prefix length, answer id)."""
    bits, top = (32, 8) if version == 4 else (128, 32)
    base = (draw(st.integers(1, 200)) << (bits - 8)) if version == 4 else (0x2A00 << 112)
    networks = []

    def split(start: int, prefix: int) -> None:
        deep_enough = prefix >= bits - 1 or len(networks) > 60
        if deep_enough or not draw(st.booleans()):
            networks.append((start, prefix, len(networks)))
            return
        split(start, prefix + 1)
        split(start | (1 << (bits - prefix - 1)), prefix + 1)

    split(base, top)
    return networks


def owner(networks, bits, n):
    for start, prefix, answer in networks:
        if start <= n < start + (1 << (bits - prefix)):
            return start, prefix, answer
    raise AssertionError("not covered")


def check(version: int, networks, picks, maxsize: int) -> None:
    bits = 32 if version == 4 else 128
    cache = NetworkCache(maxsize)
    lookups = 0
    for net_index, offset in picks:
        start, prefix, _ = networks[net_index % len(networks)]
        n = start + offset % (1 << (bits - prefix))
        _, true_prefix, answer = owner(networks, bits, n)
        found = cache.find(version, n)
        if found is MISSING:
            lookups += 1
            cache.add(version, n, true_prefix, answer)
        else:
            assert found == answer
    assert len(cache) <= maxsize
    # The prefix-length index counts exactly the cached networks: it shrinks with evictions.
    indexed = [*cache._regions.values(), *cache._wide.values()]
    assert sum(sum(lengths.values()) for lengths in indexed) == len(cache)
    assert all(cache._regions.values())  # no empty region kept
    if maxsize >= len(networks):  # nothing evicted: one lookup per network at most
        assert lookups <= len(
            {owner(networks, bits, networks[i % len(networks)][0])[0] for i, _ in picks}
        )


@settings(max_examples=150, deadline=None)
@given(
    partitions(4),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 2**32)), max_size=200),
    st.sampled_from([1, 3, 1000]),
)
def test_ipv4_answers_match_the_database(networks, picks, maxsize):
    check(4, networks, picks, maxsize)


@settings(max_examples=100, deadline=None)
@given(
    partitions(6),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 2**128)), max_size=200),
    st.sampled_from([1, 3, 1000]),
)
def test_ipv6_answers_match_the_database(networks, picks, maxsize):
    check(6, networks, picks, maxsize)


def test_a_large_network_is_found_by_any_address_after_one_add():
    cache = NetworkCache(10)
    cache.add(4, 0x0A000001, 8, "ten")  # 10.0.0.1 in 10.0.0.0/8
    assert cache.find(4, 0x0AFFFFFE) == "ten"
    assert cache.find(4, 0x0B000000) is MISSING
    assert cache.find(6, 0x0A000001) is MISSING  # the same integer as IPv6 is another address


def test_small_networks_do_not_answer_for_their_bucket():
    cache = NetworkCache(10)
    cache.add(4, 0x01020301, 30, "small")  # 1.2.3.0/30
    assert cache.find(4, 0x01020302) == "small"
    assert cache.find(4, 0x01020305) is MISSING  # same /24, other network


def test_a_miss_probes_only_the_lengths_cached_in_its_region():
    """Networks of many lengths elsewhere cost a miss nothing: its /16 holds none of them."""
    cache = NetworkCache(100)
    for prefix in range(17, 31):  # one network of each length, each in its own /16
        cache.add(4, (prefix << 24) | 0x010000, prefix, prefix)
    assert cache._regions.get(cache._region_key(4, 0x63000001)) is None  # 99.0.0.1: nothing
    assert cache.find(4, 0x63000001) is MISSING
    assert cache.find(4, (20 << 24) | 0x010001) == 20  # inside the /20 of 20.1.0.0
