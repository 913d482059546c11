"""A seeded synthetic SDK event stream with the skew of real traffic, for the enrichment benchmark.

- users (device tokens) are Zipf-distributed: a few users send most events;
- user agents are Zipf-distributed over a pool of real strings with version variants;
- IP addresses cluster: each user has a home address in a provider network (networks are
  Zipf-distributed too), and mobile events come from random hosts of carrier networks;
  a few addresses are private (behind NAT) or IPv6;
- event types: page views and clicks dominate; register/subscribe/unsubscribe are ~20 %.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

BASE_UAS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{minor} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.6422.{build} Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{minor} Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.6367.{build} Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_{minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.{minor} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{major}.0) Gecko/20100101 Firefox/{major}.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.6312.{build} Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36 Edg/{major}.0.2592.{build}",
    "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.{minor} like Chrome/{major}.0.6367.179 Safari/537.36",
    "PiStats/3.{minor}.1 (iPhone; iOS 17.{minor}; Scale/3.00)",
    "Dalvik/2.1.0 (Linux; U; Android 13; SM-G991B Build/TP1A.220624.0{build})",
    "curl/8.{minor}.0",
]
# First octets of public IPv4 space that GeoLite2 covers; one /16 per entry is a provider network.
V4_FIRST_OCTETS = [
    2,
    5,
    24,
    31,
    37,
    41,
    46,
    49,
    62,
    66,
    71,
    73,
    77,
    78,
    79,
    80,
    81,
    82,
    83,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
    91,
    92,
    93,
    94,
    95,
    98,
    99,
    104,
    108,
    109,
    112,
    114,
    115,
    116,
    117,
    118,
    119,
    121,
    122,
    123,
    124,
    125,
    133,
    138,
    142,
    150,
    151,
    152,
    154,
    161,
    168,
    171,
    173,
    174,
    175,
    176,
    177,
    178,
    179,
    180,
    181,
    182,
    183,
    184,
    185,
    186,
    187,
    188,
    189,
    190,
    191,
    193,
    194,
    195,
    197,
    200,
    201,
]
V6_PREFIXES = [
    "2001:4860:4860",
    "2a00:1450:4001",
    "2a02:1388:1000",
    "2600:1700:af0",
    "2a01:e35:2f22",
]
EVENT_TYPES = (["page_view", "click", "register", "subscribe", "unsubscribe"], [55, 25, 8, 9, 3])
TOPICS = ["news", "sports", "weather", "deals", "politics", "elections"]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


def make_payloads(
    n: int, *, seed: int = 42, users: int = 20_000, networks: int = 400
) -> list[dict[str, Any]]:
    """``n`` decoded SDK payloads, the same for the same arguments."""
    rng = random.Random(seed)
    uas = []
    for base in BASE_UAS:  # ~300 distinct strings: version variants of each base
        for _ in range(20):
            ua = base.format(
                major=rng.randrange(110, 128),
                minor=rng.randrange(0, 7),
                build=rng.randrange(10, 200),
            )
            uas.append(ua)
    uas = list(dict.fromkeys(uas))
    rng.shuffle(uas)
    ua_weights = zipf_weights(len(uas), 1.1)
    nets = [f"{rng.choice(V4_FIRST_OCTETS)}.{rng.randrange(256)}" for _ in range(networks)]
    net_weights = zipf_weights(len(nets), 0.9)

    def address() -> str:
        r = rng.random()
        if r < 0.02:
            return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if r < 0.07:
            return (
                f"{rng.choice(V6_PREFIXES)}:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
            )
        net = rng.choices(nets, net_weights)[0]
        return f"{net}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    tokens = [f"{rng.getrandbits(128):032x}" for _ in range(users)]
    homes = [address() for _ in range(users)]
    devices = rng.choices(uas, ua_weights, k=users)  # a user mostly keeps one device
    user_weights = zipf_weights(users, 1.1)
    picks = rng.choices(range(users), user_weights, k=n)
    kinds = rng.choices(*EVENT_TYPES, k=n)
    t = datetime(2024, 5, 1, tzinfo=UTC)
    out = []
    for u, kind in zip(picks, kinds, strict=True):
        t += timedelta(milliseconds=rng.randrange(1, 40))
        ev: dict[str, Any] = {
            "event_type": kind,
            "timestamp": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "device_token": tokens[u] if rng.random() > 0.05 else None,  # some anonymous events
            "ip": homes[u] if rng.random() < 0.7 else address(),
            "user_agent": devices[u] if rng.random() < 0.9 else rng.choices(uas, ua_weights)[0],
        }
        if kind in ("subscribe", "unsubscribe") and rng.random() < 0.7:
            ev["topics"] = rng.sample(TOPICS, rng.randrange(1, 3))
        out.append(ev)
    return out
