"""The window bolt: a count per key per minute with 100k distinct keys, on one core.

    python benchmarks/bench_window.py [--events 1000000] [--keys 100000] [--batch 10000]
        [--per-minute 500000] [--aggregates count|numeric|locked|percentile|max]
        [--stores sqlite,postgresql,redis]

Events carry a key drawn uniformly from ``--keys`` keys, a number ``v`` and an event time
advancing so that one minute of event time holds ``--per-minute`` events (each window then has
~all keys). ``--aggregates``: ``count`` (the issue's goal), ``numeric`` (count, sum, min, max,
mean of ``v``: merged by the store too), ``locked`` (count and count distinct of ``v``: an HLL
sketch past 64 values per window and key — ``--keys 10`` gives each cell hundreds) or
``percentile`` (count and the p99 of ``v``: a KLL sketch), or ``max`` (count and max of ``v``:
the same general fold with a plain aggregate, what the sketches compare with). Rows:

- ``hand loop``: a dict counting per (minute, key), nothing stored — Python's floor, same run.
- ``process only``: the bolt's ``process`` (parse time, key, fold into the batch's delta, close
  windows) with the store's reads but no commit — the CPU cost per event.
- ``process + commit (<store>)``: the whole batch cycle as the engine runs it: process, then
  ``commit_state`` (aggregates the store merges: the deltas merged by the store itself —
  SQLite/PostgreSQL ``INSERT … SELECT`` from one JSON parameter ``ON CONFLICT … DO UPDATE``,
  Redis one Lua script — then the shard marks).

Stores: SQLite (a temporary file), PostgreSQL (the URL's database, created when missing;
default ``squall_bench``) and Redis (default db 15), never the test database or db 0; override
with SQUALL_BENCH_PG_URL, SQUALL_BENCH_REDIS_URL. Figures: medians of ``--rounds`` rounds,
variants interleaved, in events per second of this process's CPU time (``time.process_time``:
the machine is shared) and of wall time, and the CPU time per event as a multiple of the hand
loop's in the same round. The CPU of the Redis and PostgreSQL servers is not in the CPU figure
(the wall figure has it, with the machine's load). Also printed: the load average at the start
and the end, and the stored bytes per (window, key) cell.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from squall.bolts.window import WindowBolt  # noqa: E402
from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta  # noqa: E402
from squall.topology.resources import ResourceConfig, Resources  # noqa: E402

PG_URL = os.environ.get("SQUALL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/squall_bench")
REDIS_URL = os.environ.get("SQUALL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
T0 = 1_714_557_600_000


class Input:
    """The events, built batch by batch just before each is processed (outside the timing), as a
    runner decodes each batch: a process never holds the whole input, so Python's cyclic garbage
    collector never walks a million events it would not hold in a real run. A batch is built with
    the collector paused: the collections its objects call for come in the timed part, as they
    would after a runner decoded it — none escapes the measure."""

    def __init__(self, n: int, keys: int, per_minute: int, batch: int, seed: int = 1):
        self.n, self.keys, self.per_minute, self.batch, self.seed = n, keys, per_minute, batch, seed

    def batches(self, pause: bool = True) -> Iterator[list[Event]]:
        rng = random.Random(self.seed)
        step = 60_000 / self.per_minute
        for start in range(0, self.n, self.batch):
            collecting = pause and gc.isenabled()
            if collecting:
                gc.disable()
            out = []
            for j, i in enumerate(range(start, min(start + self.batch, self.n))):
                meta = RecordMeta("bench", "shardId-000000000000", str(10**20 + i), 0, "pk")
                value = {
                    "timestamp": T0 + int(i * step),
                    "key": f"k{rng.randrange(self.keys)}",
                    "v": rng.randrange(1000),
                }
                out.append(Event(b"", meta, "x", j, value))
            if collecting:
                gc.enable()
            yield out


#: ``--aggregates``: a count alone (the issue's goal), or the numeric aggregates the store merges
#: itself, or with the ones merged in Python under a lock (count distinct, percentile)
SHAPES = {
    "count": {"n": {"fn": "count"}},
    "numeric": {
        "n": {"fn": "count"},
        "total": {"fn": "sum", "field": "v"},
        "low": {"fn": "min", "field": "v"},
        "high": {"fn": "max", "field": "v"},
        "avg": {"fn": "mean", "field": "v"},
    },
    "locked": {"n": {"fn": "count"}, "users": {"fn": "count_distinct", "field": "v"}},
    "percentile": {"n": {"fn": "count"}, "p99": {"fn": "percentile", "field": "v", "q": 0.99}},
    "max": {"n": {"fn": "count"}, "high": {"fn": "max", "field": "v"}},
}


def bolt_for(url: str, name: str, shape: str = "count") -> WindowBolt:
    config = WindowBolt.Config(
        id="w",
        type="window",
        store="state",
        key=["key"],
        size="1m",
        aggregates=SHAPES[shape],
        name=name,
        table=f"bw_{name}",
        key_prefix="bench:",
    )
    bolt = WindowBolt(config, ComponentContext("bench"))
    bolt.open(Resources({"state": ResourceConfig(url=url)}))
    return bolt


def run(bolt: WindowBolt, evs: Input, commit: bool) -> tuple[float, float, int]:
    """Events per second of this process's CPU time, of wall time, and the results emitted."""
    cpu = wall = 0.0
    results = 0
    for part in evs.batches():
        started, c0 = time.perf_counter(), time.process_time()
        out = bolt.process(part)
        results += len(out.streams.get("default", []))
        if commit:
            bolt.commit_state(lambda e: True, None)
            bolt.state_committed()
        else:
            bolt.discard_state()
        del out
        cpu += time.process_time() - c0
        wall += time.perf_counter() - started
    return evs.n / cpu, evs.n / wall, results


def hand_loop(evs: Input) -> float:
    """The same count in a plain dict per (minute, key), nothing stored: the floor of Python's cost
    (events per second of CPU time)."""
    cpu = 0.0
    counts: dict[tuple[int, str], int] = {}
    for part in evs.batches():
        started = time.process_time()
        for e in part:
            v = e.value
            t = v["timestamp"]
            k = (t - t % 60_000, v["key"])
            counts[k] = counts.get(k, 0) + 1
        cpu += time.process_time() - started
    return evs.n / cpu


def as_it_falls(bolt: WindowBolt, evs: Input) -> float:
    """A cross-check without pausing anything: the CPU time of building and processing every
    batch (the collector running whenever it will) minus that of building alone, in events/s."""
    started = time.process_time()
    for _ in evs.batches(pause=False):
        pass
    build = time.process_time() - started
    started = time.process_time()
    for part in evs.batches(pause=False):
        bolt.process(part)
        bolt.commit_state(lambda e: True, None)
        bolt.state_committed()
    return evs.n / (time.process_time() - started - build)


def cell_bytes(url: str, name: str) -> float | None:
    """SQLite: bytes of the closed windows' snapshots per (window, key) they hold."""
    if not url.startswith("sqlite"):
        return None
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        try:
            q = conn.exec_driver_sql(f"select body from bw_{name}_log where id = 's'")
        except sa.exc.OperationalError:
            return None  # (the code before the log: no such table)
        bodies = [b for (b,) in q]
    keys = sum(len(orjson.loads(b)) for b in bodies)
    return sum(len(b) for b in bodies) / keys if keys else None


def redis_server_usec(url: str) -> float:
    """The Redis server's CPU time (µs) in the commands the window store sends, all clients
    (INFO commandstats: other clients of the server count too)."""
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(
        v["usec"]
        for k, v in stats.items()
        if k.split("_", 1)[1] in ("evalsha", "eval", "hgetall", "hlen", "zrange", "hget", "hgetall")
    )


def available(url: str) -> bool:
    try:
        if url.startswith("redis"):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        else:
            target = sa.make_url(url).set(drivername="postgresql+psycopg2")
            admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:  # the URL's own database, created when missing
                if not conn.exec_driver_sql(
                    "select 1 from pg_database where datname = %s", (target.database,)
                ).first():
                    conn.exec_driver_sql(f'create database "{target.database}"')
        return True
    except Exception:
        return False


def drop(url: str, n: str) -> None:
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"bench:{n}:*"))
        if keys:
            client.delete(*keys)
    elif url.startswith("postgresql"):
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql(f"drop table if exists bw_{n}, bw_{n}_log, bw_{n}_shards")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--per-minute", type=int, default=500_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--aggregates", choices=sorted(SHAPES), default="count")
    p.add_argument(
        "--stores", default="sqlite,postgresql,redis", help="comma-separated: which stores to run"
    )
    p.add_argument(
        "--cross-check",
        action="store_true",
        help="also measure each store building and processing with the collector never paused, "
        "minus building alone",
    )
    a = p.parse_args()
    evs = Input(a.events, a.keys, a.per_minute, a.batch)
    print(
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}; "
        f"{a.events:,} events, {a.keys:,} keys, batches of {a.batch:,}, "
        f"{a.per_minute:,} events per minute; aggregates: {a.aggregates}; medians of {a.rounds} "
        f"rounds (variants interleaved); load average {os.getloadavg()[0]:.2f} at the start"
    )
    print(
        "events/s of this process's CPU time (the store's own CPU is not in it: Redis and "
        "PostgreSQL run in their servers), of wall time, and CPU time per event against the hand loop's"
    )
    rows: dict[str, list[tuple[float, float, float]]] = {}
    extra: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wanted = a.stores.split(",")
        stores = [("SQLite", f"sqlite:///{tmp}/state.db")] if "sqlite" in wanted else []
        if "postgresql" in wanted and available(PG_URL):
            stores.append(("PostgreSQL", PG_URL))
        if "redis" in wanted and available(REDIS_URL):
            stores.append(("Redis", REDIS_URL))
        for _ in range(a.rounds):
            name = f"b{uuid.uuid4().hex[:8]}"
            hand = hand_loop(evs)
            rows.setdefault("hand loop (dict, nothing stored)", []).append((hand, 0.0, 1.0))
            scratch = f"sqlite:///{tmp}/scratch.db"
            cpu, wall, _ = run(bolt_for(scratch, name + "p", a.aggregates), evs, commit=False)
            rows.setdefault("process only", []).append((cpu, wall, hand / cpu))
            for label, url in stores:
                n = f"{name}{label[0].lower()}"
                server = redis_server_usec(url) if label == "Redis" else 0.0
                cpu, wall, results = run(bolt_for(url, n, a.aggregates), evs, commit=True)
                if label == "Redis":
                    used = redis_server_usec(url) - server
                    rows.setdefault("Redis server (its commands' CPU)", []).append(
                        (a.events / (used / 1e6), 0.0, hand / (a.events / (used / 1e6)))
                    )
                rows.setdefault(f"process + commit ({label})", []).append((cpu, wall, hand / cpu))
                if a.cross_check:
                    fallen = as_it_falls(bolt_for(url, n + "x", a.aggregates), evs)
                    rows.setdefault(f"  cross-check ({label}): GC as it falls", []).append(
                        (fallen, 0.0, hand / fallen)
                    )
                    drop(url, n + "x")
                size = cell_bytes(url, n)
                extra[label] = f"{results:,} results" + (
                    f", {size:.0f} bytes per stored cell" if size else ""
                )
                drop(url, n)
    for label, values in rows.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        ratio = statistics.median(v[2] for v in values)
        store = label[label.find("(") + 1 : -1] if "commit" in label else ""
        print(
            f"{label:34s} {cpu:10,.0f} cpu   {wall:10,.0f} wall   x{ratio:5.1f}"
            + (f"   ({extra[store]})" if store in extra else "")
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(
        f"one delta cell in memory during a batch: ~{sys.getsizeof([0]) + 8 + 120} bytes "
        f"(tuple key, list of states, dict slot); result event: {len(orjson.dumps({'window_start': 'x' * 24}))}+ bytes"
    )


if __name__ == "__main__":
    main()
