"""The Lambda consumer's budgets, in this (fresh) process: init, two invocations, RSS after each.

    python benchmarks/lambda_bench.py [--records 10000] [--dir DIR]

Run by benchmarks/run.py, one fresh process per measurement. It calls
``squall.deploy.lambda_consumer.make_handler`` directly (not the packaged zip, not the runtime
client) on a copy of examples/pistats/topology.yaml whose SQLite warehouse and state live in
``--dir``; each invocation gets a Kinesis event of ``--records`` new pistats events built the way
Lambda delivers them (base64 data, one shard, increasing sequence numbers). Init is the import
of the module plus ``make_handler``: what a cold start costs before the first invocation.
Prints one JSON line (milliseconds, megabytes). After each invocation: RSS, its heap
(``RssAnon``) and mapped files (``RssFile``), of these the geo database's resident pages
(``geo_mapped_mb``), and what the process has read from storage so far (``read_mb``: with
``--cold-geo``, which starts without the geo database in the page cache as a new container does,
the database pages read ahead into the page cache, mapped or not). ``--init-only`` stops after
init (``modules_after_init``: how many modules it loaded).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory from /proc/self/status: ``VmRSS`` (all), ``RssAnon`` (heap) or ``RssFile``
    (mapped files: the geo database's pages read so far, shared libraries)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def mapped_mb(suffix: str = ".mmdb") -> float:
    """Resident pages of the mappings of files whose name ends with ``suffix`` (/proc/self/smaps):
    the geo database's pages read so far, part of ``RssFile``."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not line.startswith("VmFlags"):
            current = len(head) == 6 and head[5].endswith(suffix)
        elif current and line.startswith("Rss:"):
            total += int(head[1])
    return total / 1024


def read_mb() -> float:
    """Bytes this process has had read from storage (/proc/self/io ``read_bytes``): with
    ``--cold-geo``, mostly the geo database's pages, which a fresh container's page cache then
    holds (reclaimable, but part of the function's memory)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def kinesis_event(lines: list[bytes], first_seq: int) -> dict:
    now = time.time()
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": str(i),
                    "sequenceNumber": str(first_seq + i),
                    "data": base64.b64encode(line).decode(),
                    "approximateArrivalTimestamp": now,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{first_seq + i}",
                "eventName": "aws:kinesis:record",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/pistats",
                "awsRegion": "us-east-1",
            }
            for i, line in enumerate(lines)
        ]
    }


def read_lines(path: Path, start: int, count: int) -> list[bytes]:
    """Lines ``start`` to ``start + count`` of a JSON-lines file (only those are kept)."""
    with path.open("rb") as fh:
        return [line.rstrip(b"\n") for line in itertools.islice(fh, start, start + count)]


def geo_database() -> Path:
    """The bundled GeoLite2-City file the example's geo bolt opens, located without importing
    anything that init would then find already imported."""
    spec = importlib.util.find_spec("_maxminddb_geolite2")
    if spec is None or spec.origin is None:
        raise SystemExit("--cold-geo: the maxminddb-geolite2 package is not installed")
    return Path(spec.origin).parent / "GeoLite2-City.mmdb"


def evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument(
        "--dir", type=Path, required=True, help="working directory (topology copy, SQLite files)"
    )
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="experiment: gc.freeze() after make_handler (what a runner could do after init)",
    )
    ap.add_argument(
        "--snapstart",
        action="store_true",
        help="init as Lambda SnapStart runs it (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start: the "
        "components warm up), then the runtime's before-snapshot and after-restore hooks "
        "(awslambdaric's runner), timed apart; the invocations are a restored copy's",
    )
    ap.add_argument(
        "--lambda-batch-size",
        type=int,
        help="settings.lambda_batch_size of the copy (default: the example's, or squall's default)",
    )
    ap.add_argument(
        "--cold-geo",
        action="store_true",
        help="drop the geo database's pages from the page cache first (posix_fadvise DONTNEED), "
        "as a new container starts without them; pages other processes have mapped stay",
    )
    ap.add_argument(
        "--device-engine",
        choices=("auto", "re2"),
        default="auto",
        help="the device bolt's engine in the copy; re2 also leaves ua-parser-rs unimportable, "
        "as a zip packaged for that topology does not hold it",
    )
    ap.add_argument(
        "--init-only",
        action="store_true",
        help="stop after init (no invocation): many rounds of init are cheap (~0.5 s each)",
    )
    ap.add_argument(
        "--events",
        type=Path,
        help="JSON-lines events (default: 2 x --records generated by make_events.py, seed 7, in "
        "another process, so the benchmark's own copy of the events is not in the RSS measured)",
    )
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    events_file = args.events
    if events_file is None:  # generated by another process: none of it stays in this one's heap
        events_file = args.dir / "events.jsonl"
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "pistats" / "make_events.py")]
            + [str(2 * args.records), str(events_file)],
            check=True,
        )
    text = (ROOT / "examples" / "pistats" / "topology.yaml").read_text()
    if args.lambda_batch_size:
        text = text.replace(
            "settings:\n", f"settings:\n  lambda_batch_size: {args.lambda_batch_size}\n", 1
        )
    if args.device_engine != "auto":
        bolt = "type: device, ua_field: user_agent"
        assert bolt in text, "the example's device bolt changed"
        text = text.replace(bolt, f"{bolt}, engine: {args.device_engine}")
        sys.modules["ua_parser_rs"] = None  # (not in the zip: ua-parser finds no such module)
    (args.dir / "topology.yaml").write_text(text)
    shutil.copytree(ROOT / "examples" / "pistats" / "schemas", args.dir / "schemas")
    os.environ["WAREHOUSE_URL"] = f"sqlite:///{args.dir}/warehouse.db"
    os.environ["STATE_URL"] = f"sqlite:///{args.dir}/state.db"

    if args.cold_geo:
        evict_from_page_cache(geo_database())
    if args.snapstart:
        os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    wall, cpu = time.perf_counter(), time.process_time()
    from squall.deploy.lambda_consumer import make_handler

    import_wall, import_cpu = time.perf_counter() - wall, time.process_time() - cpu
    handler = make_handler(args.dir / "topology.yaml")
    if args.gc_freeze:
        import gc

        gc.freeze()
    init_wall, init_cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = {
        "import_ms": import_wall * 1e3,
        "import_cpu_ms": import_cpu * 1e3,
        "make_handler_ms": (init_wall - import_wall) * 1e3,
        "make_handler_cpu_ms": (init_cpu - import_cpu) * 1e3,
        "init_ms": init_wall * 1e3,
        "init_cpu_ms": init_cpu * 1e3,
        "rss_after_init_mb": rss_mb(),
        "rss_file_after_init_mb": rss_mb("RssFile"),
        "modules_after_init": len(sys.modules),
        "snapstart": args.snapstart,
        "device_engine": args.device_engine,
        "cold_geo": args.cold_geo,
        "invoke_ms": [],
        "invoke_cpu_ms": [],
        "rss_mb": [],
        "rss_anon_mb": [],
        "rss_file_mb": [],
        "geo_mapped_mb": [],
        "read_mb": [],
        "failures": [],
    }
    if args.snapstart:  # what the runtime does after init, and after a restore
        from awslambdaric import lambda_runtime_hooks_runner as hooks

        cpu = time.process_time()
        hooks.run_before_snapshot()
        out["before_snapshot_cpu_ms"] = (time.process_time() - cpu) * 1e3
        cpu = time.process_time()
        hooks.run_after_restore()
        out["after_restore_cpu_ms"] = (time.process_time() - cpu) * 1e3
        out["rss_after_restore_mb"] = rss_mb()
    for i in range(
        0 if args.init_only else 2
    ):  # each event built just before its invocation, as the runtime hands it over
        event = kinesis_event(
            read_lines(events_file, i * args.records, args.records), 1000 + i * args.records
        )
        wall, cpu = time.perf_counter(), time.process_time()
        response = handler(event, None)
        out["invoke_ms"].append(round((time.perf_counter() - wall) * 1e3, 1))
        out["invoke_cpu_ms"].append(round((time.process_time() - cpu) * 1e3, 1))
        out["rss_mb"].append(round(rss_mb(), 1))
        out["rss_anon_mb"].append(round(rss_mb("RssAnon"), 1))
        out["rss_file_mb"].append(round(rss_mb("RssFile"), 1))
        out["geo_mapped_mb"].append(round(mapped_mb(), 1))
        out["read_mb"].append(round(read_mb(), 1))
        out["failures"].append(len(response["batchItemFailures"]))
        del event
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if any(out["failures"]):
        raise SystemExit(f"invocations reported failures: {out}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
