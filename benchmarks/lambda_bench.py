"""The Lambda consumer's budgets, in this (fresh) process: init, two invocations, RSS after each.

    python benchmarks/lambda_bench.py [--records 10000] [--dir DIR]

Run by benchmarks/run.py, one fresh process per measurement. It calls
``squall.deploy.lambda_consumer.make_handler`` directly (not the packaged zip, not the runtime
client) on a copy of examples/pistats/topology.yaml whose SQLite warehouse and state live in
``--dir``; each invocation gets a Kinesis event of ``--records`` new pistats events built the way
Lambda delivers them (base64 data, one shard, increasing sequence numbers). Init is the import
of the module plus ``make_handler``: what a cold start costs before the first invocation.
Prints one JSON line (milliseconds, megabytes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
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
        "--lambda-batch-size",
        type=int,
        help="settings.lambda_batch_size of the copy (default: the example's, or squall's default)",
    )
    ap.add_argument(
        "--events", type=Path, help="JSON-lines events (default: generated with make_events.py)"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "examples" / "pistats"))
    if args.events:
        lines = args.events.read_bytes().splitlines()[: 2 * args.records]
    else:
        import make_events  # the example's generator, seed 7

        lines = [line.encode() for line in make_events.events(2 * args.records)]
    text = (ROOT / "examples" / "pistats" / "topology.yaml").read_text()
    if args.lambda_batch_size:
        text = text.replace(
            "settings:\n", f"settings:\n  lambda_batch_size: {args.lambda_batch_size}\n", 1
        )
    (args.dir / "topology.yaml").write_text(text)
    shutil.copytree(ROOT / "examples" / "pistats" / "schemas", args.dir / "schemas")
    os.environ["WAREHOUSE_URL"] = f"sqlite:///{args.dir}/warehouse.db"
    os.environ["STATE_URL"] = f"sqlite:///{args.dir}/state.db"

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
        "invoke_ms": [],
        "invoke_cpu_ms": [],
        "rss_mb": [],
        "failures": [],
    }
    for i in range(2):  # each event built just before its invocation, as the runtime hands it over
        event = kinesis_event(
            lines[i * args.records : (i + 1) * args.records], 1000 + i * args.records
        )
        wall, cpu = time.perf_counter(), time.process_time()
        response = handler(event, None)
        out["invoke_ms"].append(round((time.perf_counter() - wall) * 1e3, 1))
        out["invoke_cpu_ms"].append(round((time.process_time() - cpu) * 1e3, 1))
        out["rss_mb"].append(round(rss_mb(), 1))
        out["failures"].append(len(response["batchItemFailures"]))
        del event
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if any(out["failures"]):
        raise SystemExit(f"invocations reported failures: {out}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
