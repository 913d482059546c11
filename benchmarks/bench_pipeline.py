"""A reduced chain (json + geo + device + SQLite) through the engine vs a naive loop, in one process.

Superseded for the example chain by ``python benchmarks/run.py --only pipeline-sqlite``: whole
processes, a hand loop doing exactly the topology's work (benchmarks/hand_loop.py), outputs
checked. This script's hand loop does less than the bolts (an approximate device class, no
private-address handling) and both halves run in the same process: "cold" below means the first
half of the events after setup, not a fresh process.

    python benchmarks/bench_pipeline.py [--events 40000] [--runs 3] [--batch 500]

"squall+metrics" is the same engine run with the metrics a runner records per batch (the
recorder, its Prometheus backend and the running totals); its ratio to "squall" is the cost of
metrics.

Both sides do the same work per event on the same seeded data (Zipf users and UAs, clustered
IPs; benchmarks/data.py): decode JSON, look up geo (GeoLite2-City), parse the user agent, write
one row per event into a SQLite file, one transaction per batch, idempotent on the event id.
The hand loop is what MEASURED.md calls the naive chain (~44k events/s there): orjson, a
maxminddb lookup per event, ua-parser's own cached parse, executemany. squall runs the YAML
topology below through the engine (the local runner minus the spout). Prints medians and the
ratio; no thresholds.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import maxminddb  # noqa: E402
import orjson  # noqa: E402
import ua_parser  # noqa: E402

from benchmarks.data import make_payloads  # noqa: E402
from squall.enrichment.geo import bundled_database  # noqa: E402
from squall.event import Record, RecordMeta  # noqa: E402
from squall.observability.metrics import Recorder  # noqa: E402
from squall.observability.progress import Totals  # noqa: E402
from squall.observability.prometheus import PrometheusBackend  # noqa: E402
from squall.topology.executor import Engine  # noqa: E402
from squall.topology.graph import compile_plan  # noqa: E402
from squall.topology.loader import load_text  # noqa: E402

TOPOLOGY = """
name: bench
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: geo, type: geo, ip_field: ip}}
  - {{id: device, type: device, ua_field: user_agent}}
sinks:
  - id: events
    type: warehouse
    resource: db
    table: events
    columns: {{event_type: event_type, occurred_at: timestamp, country: geo.country_code, city: geo.city,
               os: device.os, browser: device.browser, device_class: device.device_class}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def records(n: int) -> list[Record]:
    out = []
    for i, p in enumerate(make_payloads(n)):
        p.setdefault("message_id", f"m{i:08d}")
        out.append(Record(orjson.dumps(p), RecordMeta("bench", "shardId-000000000000", str(i + 1))))
    return out


def run_squall(
    recs: list[Record], batch: int, tmp: Path, metrics: bool = False
) -> tuple[float, float]:
    """Seconds for the first half (a fresh process: cold caches) and the second half (warm)."""
    topo = load_text(TOPOLOGY.format(db=tmp / "squall.db", dlq=tmp / "dlq.jsonl"), base_dir=tmp)
    engine = Engine(
        compile_plan(topo)
    ).open()  # resources open once per process, as in every runner
    recorder = Recorder("bench", [PrometheusBackend(), Totals()]) if metrics else None
    times = []
    half = len(recs) // 2
    for part in (recs[:half], recs[half:]):
        started = time.perf_counter()
        for i in range(0, len(part), batch):
            chunk = part[i : i + batch]
            if recorder is None:
                result = engine.process(chunk)
            else:
                with recorder.batch(engine, chunk) as watch:
                    watch.result = result = engine.process(chunk)
            assert result.ok
        times.append(time.perf_counter() - started)
    engine.close()
    return times[0], times[1]


def recorder_cost(recs: list[Record], batch: int, tmp: Path, calls: int = 500) -> float:
    """Microseconds one batch's metrics take (recorder + Prometheus backend + totals), timed alone."""
    topo = load_text(TOPOLOGY.format(db=tmp / "cost.db", dlq=tmp / "dlq.jsonl"), base_dir=tmp)
    engine = Engine(compile_plan(topo)).open()
    chunk = recs[:batch]
    result = engine.process(chunk)
    recorder = Recorder("bench", [PrometheusBackend(), Totals()])
    started = time.perf_counter()
    for _ in range(calls):
        recorder.observe(engine, chunk, result, 0.01)
    cost = (time.perf_counter() - started) / calls * 1e6
    engine.close()
    return cost


def interleaved_cost(recs: list[Record], batch: int, tmp: Path) -> float:
    """Metrics on every other batch of one engine: time per event with vs without (drift cancels out)."""
    topo = load_text(TOPOLOGY.format(db=tmp / "inter.db", dlq=tmp / "dlq.jsonl"), base_dir=tmp)
    engine = Engine(compile_plan(topo)).open()
    recorder = Recorder("bench", [PrometheusBackend(), Totals()])
    spent = {True: 0.0, False: 0.0}
    events = {True: 0, False: 0}
    for k, i in enumerate(range(0, len(recs), batch)):
        chunk, on = recs[i : i + batch], k % 2 == 1
        started = time.perf_counter()
        if on:
            with recorder.batch(engine, chunk) as watch:
                watch.result = engine.process(chunk)
        else:
            engine.process(chunk)
        spent[on] += time.perf_counter() - started
        events[on] += len(chunk)
    engine.close()
    return (spent[True] / events[True]) / (spent[False] / events[False]) - 1


def run_hand(recs: list[Record], batch: int, tmp: Path) -> tuple[float, float]:
    reader = maxminddb.open_database(bundled_database())
    db = sqlite3.connect(tmp / "hand.db")
    db.execute(
        "create table events (event_id text primary key, event_type text, occurred_at text, "
        "country text, city text, os text, browser text, device_class text)"
    )
    sql = "insert into events values (?, ?, ?, ?, ?, ?, ?, ?) on conflict(event_id) do nothing"
    times = []
    half = len(recs) // 2
    for part in (recs[:half], recs[half:]):
        started = time.perf_counter()
        _hand_part(part, batch, reader, db, sql)
        times.append(time.perf_counter() - started)
    db.close()
    reader.close()
    return times[0], times[1]


def _hand_part(recs: list[Record], batch: int, reader, db: sqlite3.Connection, sql: str) -> None:
    for i in range(0, len(recs), batch):
        rows = []
        for rec in recs[i : i + batch]:
            p = orjson.loads(rec.data)
            try:
                g = reader.get(p.get("ip") or "") or {}
            except ValueError:
                g = {}
            ua = ua_parser.parse((p.get("user_agent") or "")[:512])
            os_ = ua.os.family if ua.os else "Other"
            browser = ua.user_agent.family if ua.user_agent else "Other"
            device = ua.device.family if ua.device else "Other"
            device_class = (
                "mobile"
                if device not in ("Other", "Spider")
                else ("bot" if device == "Spider" else "desktop")
            )
            city = (g.get("city") or {}).get("names", {}).get("en")
            rows.append(
                (
                    p["message_id"],
                    p.get("event_type"),
                    p.get("timestamp"),
                    (g.get("country") or {}).get("iso_code"),
                    city,
                    os_,
                    browser,
                    device_class,
                )
            )
        with db:
            db.executemany(sql, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    recs = records(2 * args.events)  # the first half in a fresh process, the second after it
    times: dict[tuple[str, str], list[float]] = {}
    contenders = [
        ("squall", run_squall),
        ("squall+metrics", lambda *a: run_squall(*a, metrics=True)),
        ("hand", run_hand),
    ]
    for run in range(args.runs):
        for name, fn in (
            contenders[run % 3 :] + contenders[: run % 3]
        ):  # rotate: no side always goes first
            with tempfile.TemporaryDirectory() as tmp:
                cold, warm = fn(recs, args.batch, Path(tmp))
            times.setdefault((name, "cold"), []).append(cold)
            times.setdefault((name, "warm"), []).append(warm)
    rate = {k: args.events / statistics.median(v) for k, v in times.items()}
    print(
        f"# pipeline: json + geo + device + SQLite, {args.events} events per phase, batches of {args.batch}, "
        f"median of {args.runs} ({platform.python_implementation()} {platform.python_version()})"
    )
    print(
        "# cold: the first events of a fresh process; warm: the next ones, as a long-running consumer sees them"
    )
    print(f"{'':15} {'phase':6} {'events/s':>10} {'us/event':>9}")
    for phase in ("cold", "warm"):
        for name in ("squall", "squall+metrics", "hand"):
            r = rate[(name, phase)]
            print(f"{name:15} {phase:6} {r:>10,.0f} {1e6 / r:>9.1f}")
        print(
            f"ratio squall/hand ({phase}): {rate[('squall', phase)] / rate[('hand', phase)]:.2f}x"
        )
        cost = 1 - rate[("squall+metrics", phase)] / rate[("squall", phase)]
        print(f"metrics cost ({phase}): {cost:+.1%} of throughput")
    with tempfile.TemporaryDirectory() as tmp:
        per_batch = recorder_cost(recs, args.batch, Path(tmp))
    costs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            costs.append(interleaved_cost(recs, args.batch, Path(tmp)))
    print(
        f"metrics cost, on every other batch of one engine (drift cancels): median {statistics.median(costs):+.1%} "
        f"of time per event ({', '.join(f'{c:+.1%}' for c in costs)})"
    )
    per_event = per_batch / args.batch
    print(
        f"metrics per batch, timed alone: {per_batch:.0f} us = {per_event:.3f} us/event = "
        f"{per_event / (1e6 / rate[('squall', 'warm')]):.2%} of squall's warm time per event"
    )


if __name__ == "__main__":
    main()
