"""IP address parsing, public/non-public classification and anonymization, on plain integers.

The geo bolt parses every address it has not seen before; ``ipaddress`` objects and their
``is_global`` property cost several microseconds each, so this module works on integers
(``inet_pton``) and range tables instead. Tests check the tables against ``ipaddress``.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

V4_BITS = 32
V6_BITS = 128


def _ranges(cidrs: list[str]) -> tuple[list[int], list[int]]:
    nets = sorted(ipaddress.ip_network(c) for c in cidrs)
    return [int(n.network_address) for n in nets], [int(n.broadcast_address) for n in nets]


# Not globally routable IPv4 (IANA special-purpose registry, RFC 6890 and successors):
# this network, private, shared (CGNAT), loopback, link-local, IETF protocol assignments,
# documentation, benchmarking, multicast, reserved and limited broadcast.
_V4_STARTS, _V4_ENDS = _ranges(
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
)
# IPv6 unicast is routable only inside 2000::/3; within it these are not globally routable:
# IETF protocol assignments (incl. Teredo), documentation (RFC 3849, RFC 9637).
_V6_GLOBAL_PREFIX = 0b001
_V6_STARTS, _V6_ENDS = _ranges(["2001::/23", "2001:db8::/32", "3fff::/20"])
_V4_MAPPED = 0xFFFF  # ::ffff:0:0/96 carries an IPv4 address in its low 32 bits


def parse(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address, or None when ``text`` is not one.

    Accepts what proxies write: surrounding spaces, an IPv4 ``addr:port``, a bracketed IPv6
    ``[addr]:port`` and an IPv6 zone (``fe80::1%eth0``). IPv4-mapped IPv6 becomes IPv4.
    """
    s = text.strip()
    try:
        return 4, int.from_bytes(inet_pton(AF_INET, s), "big")
    except (OSError, ValueError):
        pass
    if s.startswith("["):
        s, _, rest = s[1:].partition("]")
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None  # "[addr]" may be followed only by ":port"
    elif s.count(":") == 1:  # IPv4 with a port
        s, _, port = s.partition(":")
        if not _is_port(port):
            return None  # "81.2.69.160:notaport" is not an address
        try:
            return 4, int.from_bytes(inet_pton(AF_INET, s), "big")
        except (OSError, ValueError):
            return None
    s = s.partition("%")[0]
    try:
        n = int.from_bytes(inet_pton(AF_INET6, s), "big")
    except (OSError, ValueError):
        return None
    if n >> 32 == _V4_MAPPED:
        return 4, n & 0xFFFFFFFF
    return 6, n


def _is_port(text: str) -> bool:
    """A TCP/UDP port number as proxies write it: 1 to 5 ASCII digits, at most 65535."""
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def is_public(version: int, n: int) -> bool:
    """True for a globally routable unicast address."""
    if version == 4:
        i = bisect_right(_V4_STARTS, n) - 1
        return i < 0 or n > _V4_ENDS[i]
    if n >> 125 != _V6_GLOBAL_PREFIX:
        return False
    i = bisect_right(_V6_STARTS, n) - 1
    return i < 0 or n > _V6_ENDS[i]


def to_text(version: int, n: int) -> str:
    """The canonical text form of an address (RFC 5952 for IPv6)."""
    if version == 4:
        return inet_ntop(AF_INET, n.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(n))


def to_object(version: int, n: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An ``ipaddress`` object, which the MaxMind reader takes without re-parsing text."""
    return ipaddress.IPv4Address(n) if version == 4 else ipaddress.IPv6Address(n)


def anonymize(version: int, n: int) -> int:
    """Zero the last IPv4 octet, or the last 80 bits of an IPv6 address (keeps the /48)."""
    if version == 4:
        return n & 0xFFFFFF00
    return n & ~((1 << 80) - 1)
