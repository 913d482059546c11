"""Throughput of the enrichment bolts next to hand-written loops doing the same work, in one run.

    python benchmarks/bench_enrichment.py [--events 50000] [--runs 5] [--batch 500]

The data set is seeded and skewed like real traffic (benchmarks/data.py). Every run starts cold:
new bolts, new caches, new state databases. Figures are medians of the runs, in events per
second on one core (one process, one thread). The hand-written loops are what one writes
without the batch API: one database lookup, one parse, one SELECT and one upsert per event.
Redis and PostgreSQL rows appear when those services run on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import maxminddb  # noqa: E402
import redis  # noqa: E402
import ua_parser  # noqa: E402

from benchmarks.data import make_payloads  # noqa: E402
from squall.component import ComponentContext  # noqa: E402
from squall.enrichment.device import DeviceBolt, build_resolver, classify  # noqa: E402
from squall.enrichment.geo import CITY_FIELDS, GeoBolt, _city_block, bundled_database  # noqa: E402
from squall.enrichment.state import (  # noqa: E402
    UNKNOWN_STATE,
    Action,
    Status,
    SubscriptionState,
    Update,
    apply,
    parse_topics,
    version,
)
from squall.enrichment.subscription import SubscriptionBolt  # noqa: E402
from squall.event import Event, RecordMeta, derive_event_id  # noqa: E402
from squall.times import parse_time  # noqa: E402
from squall.topology.resources import ResourceConfig, Resources  # noqa: E402

# A Redis db and a database of the benchmarks' own: never db 0 or `test`, which users and tests use.
REDIS_URL = os.environ.get("SQUALL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
PG_URL = os.environ.get(
    "SQUALL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/squall_bench"
)


def check_urls(redis_url: str, pg_url: str) -> None:
    """Refuse Redis db 0 and the `test` / `postgres` databases."""
    db = redis_url.rstrip("/").rsplit("/", 1)[-1] if redis_url.count("/") >= 3 else "0"
    if db in ("", "0"):
        raise SystemExit(f"refusing Redis db 0 ({redis_url}): give --redis-url a db of its own")
    name = pg_url.rsplit("/", 1)[-1].split("?")[0]
    if name in ("", "test", "postgres"):
        raise SystemExit(f"refusing database '{name}': give --pg-url a database of its own")


def ensure_database(pg_url: str) -> None:
    """Create the benchmark's PostgreSQL database if it is missing."""
    import psycopg2

    base, _, name = pg_url.replace("postgresql+psycopg2", "postgresql").rpartition("/")
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


CONTEXT = ComponentContext("bench")


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def events_of(payloads: list[dict], first: int) -> list[Event]:
    """Events as the engine hands them to bolts (fresh payload copies: bolts change them)."""
    events = []
    for i, p in enumerate(payloads, first):
        meta = RecordMeta("bench", "shardId-000000000000", str(1000 + i), 0, "pk")
        events.append(
            Event(raw=b"", meta=meta, event_id=derive_event_id(meta), origin=i, value=dict(p))
        )
    return events


# -- squall -------------------------------------------------------------------------------------


def squall_run(
    make_bolts: Callable[[str], list], payloads: list[dict], size: int
) -> tuple[float, list]:
    """Seconds the bolts spent on all batches; each batch is built just before, untimed."""
    tmp = tempfile.mkdtemp(prefix="squall-bench-")
    bolts = make_bolts(tmp)
    elapsed = 0.0
    for b in range(0, len(payloads), size):
        batch = events_of(payloads[b : b + size], b)
        start = time.perf_counter()
        for bolt in bolts:
            batch = bolt.process(batch).streams.get("default", [])
        elapsed += time.perf_counter() - start
    for bolt in bolts:
        bolt.close()
    return elapsed, bolts


def geo_bolt(_tmp: str) -> GeoBolt:
    bolt = GeoBolt(GeoBolt.Config(id="geo", type="geo", database=str(bundled_database())), CONTEXT)
    bolt.open(None)
    return bolt


DEVICE_ENGINE = "auto"  # --device-engine


def device_bolt(_tmp: str) -> DeviceBolt:
    bolt = DeviceBolt(DeviceBolt.Config(id="device", type="device", engine=DEVICE_ENGINE), CONTEXT)
    bolt.open(None)
    return bolt


def subscription_bolt(tmp: str, backend: str = "sqlite") -> SubscriptionBolt:
    options: dict[str, Any] = {"key_prefix": f"squall-bench:{uuid.uuid4().hex[:8]}:"}
    urls = {"state": f"sqlite:///{tmp}/state.db"}
    if backend == "redis":
        urls = {"state": REDIS_URL}
    elif backend == "postgresql+redis":
        table = f"bench_{uuid.uuid4().hex[:8]}"
        urls = {"state": PG_URL, "cache": REDIS_URL}
        options.update(table=table, cache="cache")
    res = Resources({k: ResourceConfig(url=v) for k, v in urls.items()})
    bolt = SubscriptionBolt(
        SubscriptionBolt.Config(id="subscription", type="subscription", store="state", **options),
        CONTEXT,
    )
    bolt.open(res)
    bolt.cleanup = lambda: _cleanup(res, backend, options)  # type: ignore[attr-defined]
    return bolt


def _cleanup(res: Resources, backend: str, options: dict) -> None:
    if "redis" in backend:
        client = res.redis("cache" if "cache" in options else "state")
        keys = list(client.scan_iter(match=options["key_prefix"] + "*", count=5000))
        for i in range(0, len(keys), 5000):
            client.delete(*keys[i : i + 5000])
    if backend.startswith("postgresql"):
        import sqlalchemy as sa

        with res.sql("state").begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{options["table"]}"'))
    res.close()


# -- hand-written loops -------------------------------------------------------------------------


def hand_geo(reader) -> Callable[[dict], None]:
    def enrich(p: dict) -> None:
        block = dict.fromkeys(("status", *CITY_FIELDS))
        try:
            address = ipaddress.ip_address(p.get("ip") or "")
        except ValueError:
            block["status"] = "invalid"
        else:
            if not address.is_global or address.is_multicast or address.is_reserved:
                block["status"] = "private"
            else:
                record = reader.get(address)
                block["status"] = "not_found"
                if record:
                    block = _city_block(record, "en", block)
        p["geo"] = block

    return enrich


def hand_device(parser) -> Callable[[dict], None]:
    def enrich(p: dict) -> None:
        ua = (p.get("user_agent") or "")[:512]
        r = parser.parse(ua)
        browser = r.user_agent.family if r.user_agent else "Other"
        os_ = r.os.family if r.os else "Other"
        dev = r.device
        device_class = classify(
            ua, browser, os_, dev.family if dev else "Other", dev and dev.brand, dev and dev.model
        )
        p["device"] = {
            "browser": browser,
            "os": os_,
            "device": dev.family if dev else "Other",
            "device_class": device_class,
            "is_bot": device_class == "bot",
        }

    return enrich


def _load(raw: str | bytes | None) -> SubscriptionState:
    if not raw:
        return UNKNOWN_STATE
    f = json.loads(raw)
    return SubscriptionState(
        Status(f["status"]),
        f["subscribed"],
        tuple(f["topics"]),
        f["registered_at"],
        f["changed_at"],
        f["version"],
        f["event_id"],
    )


def _dump(s: SubscriptionState) -> str:
    return json.dumps(
        {
            "status": str(s.status),
            "subscribed": s.subscribed,
            "topics": list(s.topics),
            "registered_at": s.registered_at,
            "changed_at": s.changed_at,
            "version": s.version,
            "event_id": s.event_id,
        }
    )


def _update(p: dict, seq: int) -> Update | None:
    kind = p.get("event_type")
    if kind not in ("register", "subscribe", "unsubscribe"):
        return None
    t = parse_time(p["timestamp"])
    return Update(
        Action(kind), t, version(t, str(seq), 0, str(seq)), str(seq), parse_topics(p.get("topics"))
    )


class HandSqlite:
    """One SELECT per event and one upsert per state change; one transaction per batch."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "create table if not exists subs (key text primary key, state text not null)"
        )

    def batch(self, payloads: list[dict], first_seq: int) -> None:
        db = self.db
        db.execute("begin")
        for i, p in enumerate(payloads):
            key = p.get("device_token")
            if not key:
                p["subscription"] = UNKNOWN_STATE.block()
                continue
            row = db.execute("select state from subs where key = ?", (key,)).fetchone()
            state = _load(row[0] if row else None)
            update = _update(p, first_seq + i)
            if update is not None:
                new = apply(state, update)
                if new is not state:
                    state = new
                    db.execute("insert or replace into subs values (?, ?)", (key, _dump(new)))
            p["subscription"] = state.block()
        db.execute("commit")


class HandRedis:
    """One GET per event and one SET per state change."""

    def __init__(self, prefix: str):
        self.client = redis.Redis.from_url(REDIS_URL)
        self.prefix = prefix

    def batch(self, payloads: list[dict], first_seq: int) -> None:
        client = self.client
        for i, p in enumerate(payloads):
            key = p.get("device_token")
            if not key:
                p["subscription"] = UNKNOWN_STATE.block()
                continue
            state = _load(client.get(self.prefix + key))
            update = _update(p, first_seq + i)
            if update is not None:
                new = apply(state, update)
                if new is not state:
                    state = new
                    client.set(self.prefix + key, _dump(new))
            p["subscription"] = state.block()

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=5000))
        for i in range(0, len(keys), 5000):
            self.client.delete(*keys[i : i + 5000])
        self.client.close()


def hand_run(parts: list[str], payloads: list[dict], size: int) -> float:
    tmp = tempfile.mkdtemp(prefix="squall-bench-hand-")
    steps: list[Callable[[dict], None]] = []
    reader = store = None
    if "geo" in parts:
        reader = maxminddb.open_database(str(bundled_database()))
        steps.append(hand_geo(reader))
    if "device" in parts:
        # ua-parser's own parser with its own cache, as its documentation sets it up.
        steps.append(hand_device(ua_parser.Parser.from_matchers(ua_parser.load_lazy_builtins())))
    if "sqlite" in parts:
        store = HandSqlite(f"{tmp}/hand.db")
    elif "redis" in parts:
        store = HandRedis(f"squall-bench-hand:{uuid.uuid4().hex[:8]}:")
    elapsed = 0.0
    for b in range(0, len(payloads), size):
        chunk = [dict(p) for p in payloads[b : b + size]]
        start = time.perf_counter()
        for p in chunk:
            for step in steps:
                step(p)
        if store is not None:
            store.batch(chunk, 1000 + b)
        elapsed += time.perf_counter() - start
    if reader is not None:
        reader.close()
    if isinstance(store, HandRedis):
        store.cleanup()
    return elapsed


# -- main ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    bolts: Callable[[str], list]  # tmp dir -> set-up bolts, run in order
    hand: list[str] | None  # parts of the hand-written loop doing the same work
    hand_events: int | None = None  # the hand loop runs on this prefix only (when it is very slow)


def workloads(have_redis: bool, have_pg: bool) -> list[Workload]:
    out = [
        Workload("geo (GeoLite2-City)", lambda t: [geo_bolt(t)], ["geo"]),
        Workload("device (ua-parser)", lambda t: [device_bolt(t)], ["device"]),
        Workload("subscription (SQLite)", lambda t: [subscription_bolt(t)], ["sqlite"]),
    ]
    if have_redis:
        out.append(
            Workload(
                "subscription (Redis)", lambda t: [subscription_bolt(t, "redis")], ["redis"], 10_000
            )
        )
    if have_redis and have_pg:
        out.append(
            Workload(
                "subscription (PostgreSQL + Redis cache)",
                lambda t: [subscription_bolt(t, "postgresql+redis")],
                None,
            )
        )
    out.append(
        Workload(
            "chain geo+device+subscription (SQLite)",
            lambda t: [geo_bolt(t), device_bolt(t), subscription_bolt(t)],
            ["geo", "device", "sqlite"],
        )
    )
    return out


def device_figures(payloads: list[dict], size: int, runs: int) -> list[str]:
    """The device bolt's three figures of issue 22, measured in this run (medians of ``runs``).

    - open() of a new bolt, and the first user agent of the process (it compiles the ua-parser
      resolver and the class rules, once per process);
    - cached: events/s when every user agent of the batch is in the bolt's cache (real traffic:
      a few strings repeat very often);
    - uncached: distinct user agents/s parsed and classified from cold, on the first 20,000
      distinct strings of Matomo's labelled corpus (benchmarks/data/ua-corpus-matomo.tsv.gz;
      long, rare ones: mostly Android models).

    Times are CPU time of this process (time.process_time): the machine is shared, and wall
    time would measure the neighbours too.
    """
    from benchmarks.ua_corpus import CORPORA, load
    from squall.enrichment import device as device_module
    from squall.enrichment.device_class import DeviceClassifier

    def fresh_process_state() -> None:  # the compiled rules belong to the process: start over
        device_module._shared_resolvers.clear()
        device_module._classifiers.clear()
        device_module._default_classifier = DeviceClassifier()

    setups, compiles, cached, uncached = [], [], [], []
    corpus = [ua for _, ua, _ in load(CORPORA["matomo"])][:20_000]
    for _ in range(runs):
        fresh_process_state()
        start = time.process_time()
        bolt = device_bolt("")
        setups.append(time.process_time() - start)
        start = time.process_time()
        bolt.parse("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/125.0")
        compiles.append(time.process_time() - start)
        bolt.parse_many([p["user_agent"] for p in payloads if isinstance(p["user_agent"], str)])
        elapsed = 0.0
        for b in range(0, len(payloads), size):  # every string is in the cache now
            batch = events_of(payloads[b : b + size], b)
            start = time.process_time()
            bolt.process(batch)
            elapsed += time.process_time() - start
        cached.append(len(payloads) / elapsed)
        fresh_process_state()
        cold = device_bolt("")
        cold.parse("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/125.0")
        start = time.process_time()
        cold.parse_many(corpus)
        uncached.append(len(corpus) / (time.process_time() - start))
    return [
        f"device (engine {DEVICE_ENGINE}), open() of a new bolt: {statistics.median(setups) * 1000:,.1f} ms",
        f"device, first user agent of the process (compiles resolver, rules, crawler list): "
        f"{statistics.median(compiles) * 1000:,.0f} ms",
        f"device, cached user agents: {statistics.median(cached):,.0f} events/s",
        f"device, distinct user agents uncached: {statistics.median(uncached):,.0f} user agents/s "
        f"({len(corpus):,} distinct corpus strings)",
    ]


def main() -> None:
    global REDIS_URL, PG_URL, DEVICE_ENGINE
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--redis-url", default=REDIS_URL, help="Redis of the benchmark (default db 6; never db 0)"
    )
    ap.add_argument(
        "--pg-url",
        default=PG_URL,
        help="PostgreSQL database of the benchmark (default squall_bench)",
    )
    ap.add_argument(
        "--only", default="", help="run only the workloads whose name contains this text"
    )
    ap.add_argument(
        "--device-engine",
        choices=("auto", "re2"),
        default="auto",
        help='the device bolt\'s engine (docs/enrichment.md, "The regex engine")',
    )
    args = ap.parse_args()
    DEVICE_ENGINE = args.device_engine
    check_urls(args.redis_url, args.pg_url)
    REDIS_URL = args.redis_url
    PG_URL = (
        args.pg_url
        if "+psycopg2" in args.pg_url
        else args.pg_url.replace("postgresql://", "postgresql+psycopg2://")
    )
    if _up(5432):
        ensure_database(PG_URL)
    n, size = args.events, args.batch
    payloads = make_payloads(n)
    began = time.perf_counter()

    print(
        f"squall enrichment benchmark: {n:,} events, batches of {size}, median of {args.runs} cold runs"
    )
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores, ua-parser resolver "
        f"{type(build_resolver()).__module__}, maxminddb {maxminddb.__version__}"
    )
    users = len({p["device_token"] for p in payloads if p["device_token"]})
    print(
        f"data: {users:,} distinct users, {len({p['ip'] for p in payloads}):,} distinct IPs, "
        f"{len({p['user_agent'] for p in payloads})} distinct user agents\n"
    )
    header = f"{'workload (events/s on one core)':44} {'squall':>10} {'hand loop':>11} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    notes = []
    for w in workloads(_up(6379), _up(5432)):
        if args.only not in w.name:
            continue
        squall_times, hand_times = [], []
        bolts: list = []
        hand_n = min(n, w.hand_events or n)
        for _ in range(args.runs):
            elapsed, bolts = squall_run(w.bolts, payloads, size)
            squall_times.append(elapsed)
            for bolt in bolts:
                if hasattr(bolt, "cleanup"):
                    bolt.cleanup()
            if w.hand is not None:
                hand_times.append(hand_run(w.hand, payloads[:hand_n], size))
        s = n / statistics.median(squall_times)
        if hand_times:
            h = hand_n / statistics.median(hand_times)
            mark = "*" if hand_n < n else " "
            print(f"{w.name:44} {s:10,.0f} {h:10,.0f}{mark} {s / h:6.1f}x", flush=True)
            if hand_n < n:
                notes.append(
                    f"* hand loop timed on the first {hand_n:,} events (one round trip per event)"
                )
        else:
            print(f"{w.name:44} {s:10,.0f} {'—':>11} {'':>7}", flush=True)
        for bolt in bolts:
            if isinstance(bolt, GeoBolt):
                notes.append(
                    f"geo: {bolt.lookups:,} database lookups for {n:,} events (network cache)"
                )
            if isinstance(bolt, DeviceBolt):
                notes.append(f"device: {bolt.parsed:,} user agents parsed for {n:,} events")
    print()
    for line in device_figures(payloads, size, args.runs):
        print(line, flush=True)
    print()
    for note in dict.fromkeys(notes):
        print(note)
    print(f"\n(benchmark took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
