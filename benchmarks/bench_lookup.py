"""The lookup bolt next to hand-written loops doing the same enrichment, in one run.

    python benchmarks/bench_lookup.py [--events 40000] [--keys 20000] [--runs 5] [--batch 500]

Events carry a key drawn Zipf-like from ``--keys`` distinct keys (5 % of them are not in the
table); each is enriched with the key's row (name, store, price). Every run starts cold: a new
bolt (empty cache), a new connection. Figures are medians, in events per second on one core.

- ``squall``: the lookup bolt, batches of ``--batch`` (distinct keys once per batch, LRU cache).
- ``hand, one query per event``: what one writes first — a SELECT per event.
- ``hand, dict cache``: the same loop with an unbounded dict in front (no TTL, no negative TTL).

Every variant's enriched payloads are compared: they must be identical. PostgreSQL and Redis
rows appear when those services run on 127.0.0.1; the database is ``squall_bench`` (created when
missing) and Redis db 15, never the test database or db 0 (override with SQUALL_BENCH_PG_URL,
SQUALL_BENCH_REDIS_URL).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from squall.bolts.lookup import LookupBolt  # noqa: E402
from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta, derive_event_id  # noqa: E402
from squall.topology.resources import ResourceConfig, Resources  # noqa: E402

PG_URL = os.environ.get(
    "SQUALL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/squall_bench"
)
REDIS_URL = os.environ.get("SQUALL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def make_data(n_events: int, n_keys: int, seed: int = 11) -> tuple[list[dict], list[tuple]]:
    """(payloads, table rows): keys skewed like real traffic, 5 % of them absent from the table."""
    rng = random.Random(seed)
    keys = [f"k{i:07d}" for i in range(n_keys)]
    weights = [1 / (i + 1) ** 0.9 for i in range(n_keys)]
    drawn = rng.choices(keys, weights, k=n_events)
    payloads = [{"kiosk_id": k, "amount": i % 97} for i, k in enumerate(drawn)]
    absent = set(rng.sample(keys, n_keys // 20))
    rows = [
        (k, f"kiosk {k}", f"store-{i % 300}", round(1 + (i % 1000) / 7, 2))
        for i, k in enumerate(keys)
        if k not in absent
    ]
    return payloads, rows


def events_of(payloads: list[dict], first: int) -> list[Event]:
    events = []
    for i, p in enumerate(payloads, first):
        meta = RecordMeta("bench", "shardId-000000000000", str(1000 + i), 0, "pk")
        events.append(
            Event(raw=b"", meta=meta, event_id=derive_event_id(meta), origin=i, value=dict(p))
        )
    return events


# -- back ends ------------------------------------------------------------------------------------


class SqliteBackend:
    name = "SQLite file"

    def __init__(self, rows: list[tuple], tmp: str):
        self.path = f"{tmp}/kiosks.db"
        db = sqlite3.connect(self.path)
        db.execute(
            "CREATE TABLE kiosks (kiosk_id TEXT PRIMARY KEY, name TEXT, store TEXT, price REAL)"
        )
        db.executemany("INSERT INTO kiosks VALUES (?, ?, ?, ?)", rows)
        db.commit()
        db.close()
        self.url = f"sqlite:///{self.path}"
        self.table = "kiosks"

    def source(self) -> dict:
        return {
            "type": "sql",
            "resource": "db",
            "table": self.table,
            "columns": ["name", "store", "price"],
        }

    def connect(self) -> Callable[[str], tuple | None]:
        db = sqlite3.connect(self.path)
        sql = f"SELECT name, store, price FROM {self.table} WHERE kiosk_id = ?"
        return lambda key: db.execute(sql, (key,)).fetchone()

    def cleanup(self) -> None:
        pass


class PostgresBackend(SqliteBackend):
    name = "PostgreSQL"

    def __init__(self, rows: list[tuple], tmp: str):
        self.url = PG_URL
        url = sa.make_url(PG_URL)
        admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
            ).first():
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
        admin.dispose()
        self.table = f"bench_kiosks_{uuid.uuid4().hex[:8]}"
        self.engine = sa.create_engine(PG_URL)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {self.table} (kiosk_id text PRIMARY KEY, name text, store text, "
                f"price double precision)"
            )
            conn.exec_driver_sql(f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s)", rows)

    def connect(self) -> Callable[[str], tuple | None]:
        import psycopg2

        conn = psycopg2.connect(
            sa.make_url(PG_URL).set(drivername="postgresql").render_as_string(False)
        )
        conn.autocommit = True
        cur = conn.cursor()
        sql = f"SELECT name, store, price FROM {self.table} WHERE kiosk_id = %s"

        def one(key: str) -> tuple | None:
            cur.execute(sql, (key,))
            return cur.fetchone()

        return one

    def cleanup(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.table}")
        self.engine.dispose()


class RedisBackend:
    name = "Redis hashes"

    def __init__(self, rows: list[tuple], tmp: str):
        self.url = REDIS_URL
        self.prefix = f"bench:kiosk:{uuid.uuid4().hex[:8]}:"
        self.client = redis.Redis.from_url(REDIS_URL)
        pipe = self.client.pipeline(transaction=False)
        for k, name, store, price in rows:
            pipe.hset(self.prefix + k, mapping={"name": name, "store": store, "price": str(price)})
        pipe.execute()

    def source(self) -> dict:
        return {"type": "redis", "resource": "db", "key_prefix": self.prefix}

    def connect(self) -> Callable[[str], tuple | None]:
        client = redis.Redis.from_url(REDIS_URL)

        def one(key: str) -> tuple | None:
            h = client.hgetall(self.prefix + key)
            return (h[b"name"].decode(), h[b"store"].decode(), h[b"price"].decode()) if h else None

        return one

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=5000))
        for i in range(0, len(keys), 5000):
            self.client.delete(*keys[i : i + 5000])
        self.client.close()


# -- the contenders -------------------------------------------------------------------------------


def run_squall(backend: Any, payloads: list[dict], size: int) -> tuple[float, list[Any]]:
    res = Resources({"db": ResourceConfig(url=backend.url)})
    bolt = LookupBolt(
        LookupBolt.Config(
            id="kiosk", type="lookup", key="kiosk_id", target="kiosk", source=backend.source()
        ),
        ComponentContext("bench"),
    )
    bolt.open(res)
    batches = [events_of(payloads[i : i + size], i) for i in range(0, len(payloads), size)]
    out = []
    start = time.perf_counter()
    for batch in batches:
        out.append(bolt.process(batch))
    elapsed = time.perf_counter() - start
    bolt.close()
    res.close()
    values = [e.value.get("kiosk") for o in out for e in o.streams.get("default", [])]
    return elapsed, values


def run_hand(
    backend: Any, payloads: list[dict], size: int, cached: bool
) -> tuple[float, list[Any]]:
    query = backend.connect()
    batches = [[dict(p) for p in payloads[i : i + size]] for i in range(0, len(payloads), size)]
    cache: dict[str, Any] = {}
    start = time.perf_counter()
    for batch in batches:
        for p in batch:
            key = p["kiosk_id"]
            if cached and key in cache:
                row = cache[key]
            else:
                row = query(key)
                if cached:
                    cache[key] = row
            if row is not None:
                p["kiosk"] = {"name": row[0], "store": row[1], "price": row[2]}
    elapsed = time.perf_counter() - start
    return elapsed, [p.get("kiosk") for b in batches for p in b]


def normalise(values: list[Any]) -> list[Any]:
    """Redis hashes hold text: compare prices as numbers."""
    return [None if v is None else {**v, "price": float(v["price"])} for v in values]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()

    payloads, rows = make_data(args.events, args.keys)
    distinct = len({p["kiosk_id"] for p in payloads})
    print(
        f"python {platform.python_version()}, {args.events} events, {distinct} distinct keys of {args.keys} "
        f"(5 % absent from the table), batches of {args.batch}, median of {args.runs} cold runs\n"
    )
    backends: list[type] = [SqliteBackend]
    if _up(5432):
        backends.append(PostgresBackend)
    if _up(6379):
        backends.append(RedisBackend)
    print(
        "| source | squall lookup | hand, one query per event | hand, dict cache | squall / one query |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cls in backends:
            backend = cls(rows, tmp)
            try:
                times: dict[str, list[float]] = {"squall": [], "naive": [], "cached": []}
                reference = None
                for _ in range(args.runs):
                    # Rotate the order so no contender always runs on a warmer machine.
                    for name in sorted(times, key=lambda _: random.random()):
                        if name == "squall":
                            t, values = run_squall(backend, payloads, args.batch)
                        else:
                            t, values = run_hand(
                                backend, payloads, args.batch, cached=name == "cached"
                            )
                        values = normalise(values)
                        if reference is None:
                            reference = values
                        elif values != reference:
                            raise SystemExit(
                                f"{backend.name}: {name} enriched the events differently"
                            )
                        times[name].append(t)
                rate = {k: args.events / statistics.median(v) for k, v in times.items()}
                print(
                    f"| {backend.name} | {rate['squall']:,.0f} ev/s | {rate['naive']:,.0f} ev/s | "
                    f"{rate['cached']:,.0f} ev/s | {rate['squall'] / rate['naive']:.1f}× |"
                )
            finally:
                backend.cleanup()


if __name__ == "__main__":
    main()
