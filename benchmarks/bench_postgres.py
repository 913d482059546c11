"""Throughput of the PostgreSQL warehouse sink next to a plain psycopg2 COPY of the same rows, in one run.

    python benchmarks/bench_postgres.py [--url postgresql+psycopg2://postgres@127.0.0.1:5432/squall_bench]
                                        [--rows 100000] [--batch 5000] [--runs 3]

Rows have 15 columns (text, timestamp, integer, float, boolean, jsonb). Each run creates fresh
tables and measures the variants below; their order rotates from one run to the next (the sink's
full replay always follows its fresh pass), so that no variant always runs on a warm or a cold
server:

- ``plain COPY``: psycopg2 ``copy_expert`` of the rows (already extracted from the events as Python
  values) into a table with the same columns and the same primary key; the time includes building
  the COPY buffer in Python (one type dispatch per value, escaping, as a hand-written loader does).
  ``COPY only`` sends the same buffers built beforehand (the database's share of the work);
  ``plain COPY, no key`` is a plain COPY into a table without any index.
- ``sink, fresh rows``: ``WarehouseSink.prepare`` + ``write_batch`` per batch of events — reading
  the columns from the events, converting, building the buffer, COPY, commit.
- ``sink, full replay``: the same batches again (every row is already stored; the sink merges
  through its staging table and adds nothing).

Figures are medians of the runs in rows per second, one process, one thread (PostgreSQL works in
its own process). The breakdown splits the sink's time into ``prepare`` (Python: rows and buffer)
and ``write`` (COPY, merge, commit). Tables are dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta, derive_event_id  # noqa: E402
from squall.sinks.base import WriteContext  # noqa: E402
from squall.sinks.warehouse import WarehouseConfig, WarehouseSink  # noqa: E402
from squall.topology.resources import ResourceConfig, Resources  # noqa: E402

PG_URL = os.environ.get(
    "SQUALL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/squall_bench"
)
COLUMNS: dict[str, Any] = {
    "event_id": "meta.event_id",
    "event_type": {"path": "event_type", "nullable": False},
    "occurred_at": {"path": "timestamp", "type": "timestamp"},
    "user_id": "user_id",
    "session_id": "session_id",
    "device_token": "device_token",
    "country": "geo.country_code",
    "city": "geo.city",
    "os": "device.os",
    "browser": "device.browser",
    "duration_ms": {"path": "page.duration_ms", "type": "integer"},
    "amount": {"path": "amount", "type": "float"},
    "is_mobile": {"path": "device.is_mobile", "type": "boolean"},
    "props": {"path": "props", "type": "json"},
    "shard": "meta.shard_id",
}
PLAIN_DDL = """CREATE TABLE {table} (
  event_id text COLLATE "C" {key}, event_type text NOT NULL, occurred_at timestamptz, user_id text,
  session_id text, device_token text, country text, city text, os text, browser text,
  duration_ms integer, amount double precision, is_mobile boolean, props jsonb, shard text)"""
NAMES = ", ".join(COLUMNS)
CITIES = [
    ("DE", "Berlin"),
    ("FR", "Paris"),
    ("US", "New York"),
    ("BR", "São Paulo"),
    ("JP", "Tokyo"),
    ("GB", "London"),
    ("IN", "Mumbai"),
    (None, None),
]
BROWSERS = [
    ("iOS", "Mobile Safari", True),
    ("Android", "Chrome Mobile", True),
    ("Windows", "Chrome", False),
    ("Mac OS X", "Safari", False),
    ("Linux", "Firefox", False),
]


def make_events(n: int, seed: int = 7) -> list[Event]:
    """Decoded SDK-like events with the record metadata a Kinesis spout gives them."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 3, tzinfo=UTC)
    events = []
    for i in range(n):
        country, city = rng.choice(CITIES)
        os_name, browser, mobile = rng.choice(BROWSERS)
        user = rng.randrange(20_000)
        payload = {
            "event_type": rng.choice(["page_view", "page_view", "click", "subscribe", "register"]),
            "timestamp": (start + timedelta(milliseconds=i * 37))
            .isoformat()
            .replace("+00:00", "Z"),
            "user_id": f"user-{user:06d}",
            "session_id": f"s-{user:06d}-{i // 40:05d}",
            "device_token": f"{rng.getrandbits(128):032x}",
            "geo": {"country_code": country, "city": city},
            "device": {"os": os_name, "browser": browser, "is_mobile": mobile},
            "page": {
                "duration_ms": rng.randrange(50, 120_000),
                "url": f"/articles/{rng.randrange(500)}",
            },
            "amount": round(rng.random() * 100, 2) if rng.random() < 0.2 else None,
            "props": {
                "path": f"/articles/{rng.randrange(500)}",
                "ref": rng.choice(["search", "mail", None]),
                "tags": ["news", "sport"][: rng.randrange(3)],
            },
        }
        meta = RecordMeta(
            "pistats-events", "shardId-000000000001", str(49_000_000_000 + i), 0, f"pk{user}"
        )
        events.append(Event(orjson.dumps(payload), meta, derive_event_id(meta), i, payload))
    return events


def plain_rows(events: list[Event]) -> list[tuple]:
    """The same rows as Python values, as an application would hand them to a loader."""
    rows = []
    for ev in events:
        p = ev.value
        rows.append(
            (
                ev.event_id,
                p["event_type"],
                datetime.fromisoformat(p["timestamp"]),
                p["user_id"],
                p["session_id"],
                p["device_token"],
                p["geo"]["country_code"],
                p["geo"]["city"],
                p["device"]["os"],
                p["device"]["browser"],
                p["page"]["duration_ms"],
                p["amount"],
                p["device"]["is_mobile"],
                p["props"],
                ev.meta.shard_id,
            )
        )
    return rows


def _plain_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return (
            v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        )
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return v.isoformat()
    return orjson.dumps(v).decode().replace("\\", "\\\\")


def plain_buffer(rows: list[tuple]) -> bytes:
    """A hand-written loader's COPY buffer: one type dispatch per value, with escaping."""
    return "".join("\t".join([_plain_value(v) for v in row]) + "\n" for row in rows).encode()


def plain_copy(
    raw, table: str, rows: list[tuple], batch: int, prebuilt: list[bytes] | None = None
) -> float:
    """Seconds to COPY the rows in batches, one transaction each; building the buffers too unless prebuilt."""
    started = time.perf_counter()
    with raw.cursor() as cur:
        for k, i in enumerate(range(0, len(rows), batch)):
            buffer = prebuilt[k] if prebuilt else plain_buffer(rows[i : i + batch])
            cur.copy_expert(f"COPY {table} ({NAMES}) FROM STDIN", io.BytesIO(buffer), size=1 << 18)
            raw.commit()
    return time.perf_counter() - started


def sink_pass(sink: WarehouseSink, batches: list[list[Event]]) -> tuple[float, float]:
    """(prepare seconds, write seconds) for one pass over the batches."""
    prep = write = 0.0
    for batch in batches:
        t0 = time.perf_counter()
        prepared = sink.prepare(batch)
        t1 = time.perf_counter()
        sink.write_batch(prepared, WriteContext())
        write += time.perf_counter() - t1
        prep += t1 - t0
        assert not prepared.rejected, prepared.rejected[0].failure
    return prep, write


STEPS = ("plain", "copy_only", "plain_nokey", "sink")


def one_run(
    url: str, events: list[Event], rows: list[tuple], batch: int, rotation: int = 0
) -> dict[str, Any]:
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    tag = uuid.uuid4().hex[:8]
    keyed, unkeyed, target = f"bench_plain_{tag}", f"bench_nokey_{tag}", f"bench_sink_{tag}"
    copy_only = f"bench_copy_{tag}"
    prebuilt = [plain_buffer(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    resources = Resources({"db": ResourceConfig(url=url)})
    engine = resources.sql("db")
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute(PLAIN_DDL.format(table=keyed, key="PRIMARY KEY"))
            cur.execute(PLAIN_DDL.format(table=unkeyed, key=""))
            cur.execute(PLAIN_DDL.format(table=copy_only, key="PRIMARY KEY"))
        raw.commit()
        out: dict[str, Any] = {"order": []}
        config = WarehouseConfig.model_validate(
            {
                "id": "bench",
                "type": "warehouse",
                "resource": "db",
                "table": target,
                "columns": COLUMNS,
            }
        )
        k = rotation % len(STEPS)
        for step in STEPS[k:] + STEPS[:k]:
            out["order"].append(step)
            if step == "plain":
                out["plain"] = plain_copy(raw, keyed, rows, batch)
            elif step == "copy_only":
                out["copy_only"] = plain_copy(raw, copy_only, rows, batch, prebuilt)
            elif step == "plain_nokey":
                out["plain_nokey"] = plain_copy(raw, unkeyed, rows, batch)
            else:
                sink = WarehouseSink(config, ComponentContext("bench"))
                sink.open(resources)
                out["fresh_prepare"], out["fresh_write"] = sink_pass(sink, batches)
                out["replay_prepare"], out["replay_write"] = sink_pass(sink, batches)
        with raw.cursor() as cur:
            for table in (keyed, copy_only, target):
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone()[0] == len(rows), f"{table}: wrong row count"
        return out
    finally:
        raw.rollback()
        with raw.cursor() as cur:
            for table in (keyed, unkeyed, target, copy_only):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        raw.commit()
        raw.close()
        resources.close()


def _ensure_database(url: str) -> None:
    import psycopg2

    base, _, name = url.replace("postgresql+psycopg2", "postgresql").rpartition("/")
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=PG_URL)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    url = args.url.replace("postgresql://", "postgresql+psycopg2://", 1)
    if url.rsplit("/", 1)[-1].split("?")[0] in ("", "test", "postgres"):
        raise SystemExit(
            "refusing the `test` / `postgres` database: give --url a database of its own"
        )
    _ensure_database(url)
    events = make_events(args.rows)
    rows = plain_rows(events)
    with sa.create_engine(url).connect() as conn:
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    print(
        f"PostgreSQL {version}, Python {platform.python_version()}, {args.rows:,} rows of 15 columns, "
        f"batches of {args.batch:,}, {args.runs} runs (medians)"
    )
    runs = [one_run(url, events, rows, args.batch, rotation=i) for i in range(args.runs)]
    print("orders: " + "; ".join(" → ".join(r["order"]) for r in runs))

    def med(*keys: str) -> float:
        return statistics.median(sum(r[k] for k in keys) for r in runs)

    n = args.rows
    plain, nokey, copy_only = n / med("plain"), n / med("plain_nokey"), n / med("copy_only")
    fresh, replay = (
        n / med("fresh_prepare", "fresh_write"),
        n / med("replay_prepare", "replay_write"),
    )
    print(f"{'':32s}{'rows/s':>10s}{'vs plain COPY':>16s}")
    for label, rate in [
        ("plain COPY (same key)", plain),
        ("COPY only (buffers prebuilt)", copy_only),
        ("plain COPY, no key", nokey),
        ("sink, fresh rows", fresh),
        ("sink, full replay", replay),
    ]:
        print(f"{label:32s}{rate:10,.0f}{rate / plain:15.2f}x")
    print("sink time per 1,000 rows (ms):  prepare (rows + buffer)  write (COPY/merge + commit)")
    for label, key in [("fresh rows", "fresh"), ("full replay", "replay")]:
        print(
            f"  {label:28s}{1000 * med(key + '_prepare') / n * 1000:10.2f}{1000 * med(key + '_write') / n * 1000:26.2f}"
        )
    print(
        f"plain COPY per 1,000 rows (ms): {1000 * med('plain') / n * 1000:.2f} (buffer + COPY + commit)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
