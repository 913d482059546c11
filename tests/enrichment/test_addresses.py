"""Address parsing, public/non-public classification and anonymization (checked against ipaddress)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.enrichment import addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.8.8.8", (4, 0x08080808)),
        (" 8.8.8.8 ", (4, 0x08080808)),
        ("8.8.8.8:443", (4, 0x08080808)),
        ("::ffff:8.8.8.8", (4, 0x08080808)),  # IPv4-mapped becomes IPv4
        ("2001:4860:4860::8888", (6, int(ipaddress.IPv6Address("2001:4860:4860::8888")))),
        ("[2001:4860:4860::8888]:443", (6, int(ipaddress.IPv6Address("2001:4860:4860::8888")))),
        ("fe80::1%eth0", (6, int(ipaddress.IPv6Address("fe80::1")))),
        ("", None),
        ("unknown", None),
        ("1.2.3", None),
        ("01.2.3.4", None),
        ("256.1.1.1", None),
        ("1.2.3.4.5", None),
        ("1.2.3.4:x:y", None),
        ("2001:::1", None),
        ("8.8.8.8\x00", None),
        ("١٢٣.١.١.١", None),
        # a port must be a port: 1-5 ASCII digits, at most 65535
        ("81.2.69.160:notaport", None),
        ("81.2.69.160:", None),
        ("81.2.69.160:65536", None),
        ("81.2.69.160:٤٤٣", None),
        ("81.2.69.160:65535", (4, 0x510245A0)),
        ("[2001:4860:4860::8888]:http", None),
        ("[2001:4860:4860::8888]junk", None),
        ("[2001:4860:4860::8888]", (6, int(ipaddress.IPv6Address("2001:4860:4860::8888")))),
    ],
)
def test_parse(text, expected):
    assert addresses.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "public"),
    [
        ("8.8.8.8", True),
        ("81.2.69.142", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.32.0.1", True),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.1.1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("192.0.2.1", False),  # documentation
        ("2001:4860:4860::8888", True),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("64:ff9b::808:808", False),  # NAT64
        ("::ffff:10.0.0.1", False),
    ],
)
def test_is_public(text, public):
    assert addresses.is_public(*addresses.parse(text)) is public


def _stdlib_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast and not address.is_reserved


# Where the tables deliberately differ from this Python's ipaddress: a few IETF assignments
# inside 2001::/23 that are global (ipaddress knows them only in newer versions), the
# documentation prefix 3fff::/20 (RFC 9637, newer than ipaddress here), 192.0.0.9/32 and
# 192.0.0.10/32, 6to4 whose treatment differs between Python versions, and the deprecated
# site-local fec0::/10 (RFC 3879), which ipaddress still calls global.
_V6_DIFFERENCES = [
    ipaddress.ip_network(n) for n in ("2001::/23", "3fff::/20", "2002::/16", "fec0::/10")
]
_V4_DIFFERENCES = [ipaddress.ip_network(n) for n in ("192.0.0.0/24",)]


@settings(max_examples=3000, deadline=None)
@given(st.ip_addresses(v=4))
def test_ipv4_classification_agrees_with_ipaddress(address):
    if any(address in n for n in _V4_DIFFERENCES):
        return
    assert addresses.is_public(4, int(address)) is _stdlib_public(address)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.ip_addresses(v=6),
        st.integers(0x2000 << 112, (0x4000 << 112) - 1).map(ipaddress.IPv6Address),
    )
)
def test_ipv6_classification_agrees_with_ipaddress(address):
    if address.ipv4_mapped or any(address in n for n in _V6_DIFFERENCES):
        return
    assert addresses.is_public(6, int(address)) is _stdlib_public(address)


@given(st.ip_addresses())
def test_text_round_trips_through_parse(address):
    parsed = addresses.parse(str(address))
    assert parsed is not None
    version, n = parsed
    if address.version == 6 and address.ipv4_mapped:
        assert (version, n) == (4, int(address.ipv4_mapped))
    else:
        assert addresses.to_text(version, n) == str(address)


@pytest.mark.parametrize(
    ("text", "anonymized"),
    [
        ("81.2.69.142", "81.2.69.0"),
        ("8.8.8.8", "8.8.8.0"),
        ("2001:4860:4860:1234:5678:9abc:def0:8888", "2001:4860:4860::"),
        ("2a00:1450:4001::5", "2a00:1450:4001::"),
    ],
)
def test_anonymize_zeroes_the_last_octet_or_last_80_bits(text, anonymized):
    version, n = addresses.parse(text)
    assert addresses.to_text(version, addresses.anonymize(version, n)) == anonymized


@given(st.ip_addresses())
def test_anonymized_address_stays_in_its_24_or_48(address):
    version = address.version
    n = addresses.anonymize(version, int(address))
    prefix = 24 if version == 4 else 48
    anonymized = addresses.to_object(version, n)
    assert anonymized in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert int(anonymized) & ((1 << (address.max_prefixlen - prefix)) - 1) == 0
