"""The PostgreSQL warehouse sink: ``mode: upsert`` next to ``mode: insert``, in one run.

    SQUALL_BENCH_PG_URL=postgresql+psycopg2://… python benchmarks/bench_upsert.py [--rows 50000] [--batch 5000]

Five cases on fresh tables, 8 columns: insert mode with fresh rows (direct COPY), upsert mode
with fresh keys, upsert mode where every row replaces a stored one, and the last again with
``version: n`` (every row's version equal to the stored one: replaced) and with every row's
version older than the stored one (kept out). Medians of ``--runs``, rows
per second, including building the COPY buffers. The database defaults to ``squall_bench``
(never the test database; it must exist).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta, derive_event_id  # noqa: E402
from squall.sinks.base import WriteContext  # noqa: E402
from squall.sinks.warehouse import WarehouseConfig, WarehouseSink  # noqa: E402
from squall.topology.resources import ResourceConfig, Resources  # noqa: E402

PG_URL = os.environ.get(
    "SQUALL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/squall_bench"
)
COLUMNS = {
    "k": "k",
    "app": "app",
    "n": {"path": "n", "type": "integer"},
    "v": {"path": "v", "type": "float"},
    "at": {"path": "at", "type": "timestamp"},
    "s1": "s1",
    "s2": "s2",
    "s3": "s3",
}


def events(n: int, first_key: int, generation: int) -> list[Event]:
    out = []
    for i in range(n):
        payload = {
            "k": f"key{first_key + i:08d}",
            "app": "app-x",
            "n": generation * 10**6 + i,
            "v": i / 3,
            "at": "2026-11-28T20:00:00Z",
            "s1": "a" * 10,
            "s2": "bb",
            "s3": f"generation {generation}",
        }
        meta = RecordMeta("bench", "shardId-000000000000", str(generation * 10**8 + first_key + i))
        out.append(Event(b"", meta, derive_event_id(meta), i, payload))
    return out


def open_sink(table: str, upsert: bool, version: bool = False) -> WarehouseSink:
    doc = {"id": "rows", "type": "warehouse", "resource": "db", "table": table, "columns": COLUMNS}
    if upsert:
        doc.update(mode="upsert", key=["k"])
    if version:
        doc.update(version="n")
    sink = WarehouseSink(WarehouseConfig.model_validate(doc), ComponentContext("bench"))
    sink.open(Resources({"db": ResourceConfig(url=PG_URL)}))
    return sink


#: (case, generation stored first (0: none), generation measured): a row's version ``n`` grows
#: with its generation.
CASES = [
    ("insert, fresh rows", 0, 2),
    ("upsert, fresh keys", 0, 2),
    ("upsert, every row replaced", 1, 2),
    ("upsert + version, every row replaced (equal version)", 2, 2),
    ("upsert + version, every row older (kept out)", 3, 2),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n, size = args.rows, args.batch
    rates: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for case, stored, measured in CASES:
            table = f"bench_upsert_{uuid.uuid4().hex[:8]}"
            sink = open_sink(table, upsert=case.startswith("upsert"), version="version" in case)
            try:
                if stored:
                    for first in range(0, n, size):
                        sink.write_batch(sink.prepare(events(size, first, stored)), WriteContext())
                batches = [events(size, first, measured) for first in range(0, n, size)]
                start = time.perf_counter()
                for batch in batches:
                    sink.write_batch(sink.prepare(batch), WriteContext())
                rates.setdefault(case, []).append(n / (time.perf_counter() - start))
            finally:
                with sink.engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
                sink.close()
    base = statistics.median(rates["insert, fresh rows"])
    print(
        f"{n} rows, {len(COLUMNS)} columns (+ event_id in insert mode), batches of {size}, median of {args.runs}\n"
    )
    print("| case | rows/s | vs insert |\n|---|---|---|")
    for case, values in rates.items():
        rate = statistics.median(values)
        print(f"| {case} | {rate:,.0f} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
