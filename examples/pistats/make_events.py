"""Generate the pistats sample: realistic SDK events with a few deliberately bad ones.

    python examples/pistats/make_events.py [N] > events.jsonl   (the bundled file: N=3000, seed 7)

Users and user agents are Zipf-distributed, IPs cluster in a few provider networks, and about
2 % of the lines are bad in the ways real traffic is: truncated JSON, a JSON array, a missing
event type, an unknown event type, a timestamp that is not a date.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from itertools import accumulate

UAS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.6422.165 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.179 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.56",
    "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.3 like Chrome/124.0.6367.179 Safari/537.36",
]
# (network prefix, random host bits) — public provider networks, plus private addresses behind NAT
NETWORKS = [
    ("73.{}.{}.{}", 3),
    ("81.2.69.{}", 1),
    ("90.{}.{}.{}", 3),
    ("89.160.20.{}", 1),
    ("177.{}.{}.{}", 3),
    ("49.{}.{}.{}", 3),
    ("2.125.160.{}", 1),
    ("8.8.8.{}", 1),
    ("10.{}.{}.{}", 3),
    ("2001:4860:4860::{:x}", 1),
]
TOPICS = ["news", "sports", "weather", "deals", "politics", "elections"]
APPS = ["app-news", "app-shop", "app-weather"]


class Zipf:
    """A Zipf-weighted choice among ``items``; the cumulative weights are computed once.

    ``rng.choices(items, cum_weights=…)`` draws exactly what ``rng.choices(items, weights)`` draws
    (it accumulates the same floats in the same order), so the output is byte-identical to the
    older generator that rebuilt the weights for every event — in O(log users) per draw instead of
    O(users).
    """

    def __init__(self, items: list, s: float):
        self.items = items
        self.cum = list(accumulate(1 / (i + 1) ** s for i in range(len(items))))

    def __call__(self, rng: random.Random):
        return rng.choices(self.items, cum_weights=self.cum)[0]


NETWORK_CHOICE = Zipf(NETWORKS, 0.8)
UA_CHOICE = Zipf(UAS, 1.0)


def ip(rng: random.Random) -> str:
    pattern, n = NETWORK_CHOICE(rng)
    return pattern.format(*(rng.randrange(1, 255) for _ in range(n)))


def events(n: int, seed: int = 7):
    rng = random.Random(seed)
    users = [f"u{i:05d}" for i in range(max(50, n // 10))]
    tokens = {u: uuid.UUID(int=rng.getrandbits(128)).hex for u in users}
    user_choice = Zipf(users, 1.1)
    t = datetime(2026, 11, 3, 18, 0, tzinfo=UTC)
    for _ in range(n):
        t += timedelta(milliseconds=rng.randrange(5, 400))
        user = user_choice(rng)
        kind = rng.choices(
            ["page_view", "click", "register", "subscribe", "unsubscribe"], [55, 25, 8, 9, 3]
        )[0]
        ev = {
            "message_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": kind,
            "timestamp": t.isoformat().replace("+00:00", "Z"),
            "app_id": rng.choice(APPS),
            "user_id": user,
            "device_token": tokens[user],
            "ip": ip(rng),
            "user_agent": UA_CHOICE(rng),
            "sdk": {
                "name": "pistats-js",
                "version": rng.choice(["3.2.1", "3.3.0", "4.0.0-beta.2"]),
            },
        }
        if kind == "page_view":
            ev["page"] = {
                "url": f"https://example.com/{rng.choice(['', 'news', 'live', 'results'])}",
                "duration_ms": rng.randrange(100, 60000),
            }
        elif kind == "click":
            ev["click"] = {
                "target": rng.choice(["notification", "banner", "link"]),
                "campaign": f"c{rng.randrange(20)}",
            }
        elif kind == "subscribe":
            ev["topics"] = rng.sample(TOPICS, rng.randrange(1, 4))
        if rng.random() < 0.03:
            ev["user_agent"] = ""
        line = json.dumps(ev, separators=(",", ":"))
        r = rng.random()
        if r < 0.004:
            line = line[: rng.randrange(10, len(line) - 5)]  # truncated in transit
        elif r < 0.008:
            line = json.dumps([ev["event_type"], ev["user_id"]])  # an old SDK's array format
        elif r < 0.012:
            del ev["event_type"]
            line = json.dumps(ev, separators=(",", ":"))
        elif r < 0.016:
            ev["event_type"] = "pagevieww"
            line = json.dumps(ev, separators=(",", ":"))
        elif r < 0.020:
            ev["timestamp"] = "yesterday"
            line = json.dumps(ev, separators=(",", ":"))
        yield line


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    out = sys.argv[2] if len(sys.argv) > 2 else None
    # One line at a time: a million events are ~400 MB of text, not worth holding in memory.
    if out and out.endswith(".gz"):
        with gzip.GzipFile(out, "wb", mtime=0) as fh:
            for line in events(n):
                fh.write(line.encode() + b"\n")
    elif out:
        with open(out, "w") as fh:
            for line in events(n):
                fh.write(line + "\n")
    else:
        for line in events(n):
            sys.stdout.write(line + "\n")
