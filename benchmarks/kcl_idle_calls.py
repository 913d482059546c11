"""What an idle shard costs a squall KCL shard process: empty ``processRecords`` through kclpy.

squall's daemon properties set ``callProcessRecordsEvenForEmptyRecordList`` (rolling sinks
release by age, the lag reads 0 once caught up, the heartbeat moves on an idle shard): the
daemon then hands every empty ``GetRecords`` answer to the shard process. This feeds ``N`` such
messages, as the daemon writes them, through a pipe into amazon-kclpy's own loop over squall's
record processor, and prints the time per call.

    python benchmarks/kcl_idle_calls.py 20000          # metrics off
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) python benchmarks/kcl_idle_calls.py 20000
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import io, os, sys, tempfile
from amazon_kclpy import kcl
from squall.deploy.kcl import RecordProcessor
from squall.topology.executor import Engine
from squall.topology.loader import load_text

db = os.path.join(tempfile.mkdtemp(), "w.db")
topo = load_text(
    "name: idle\\nspout: {type: stdin}\\nbolts: [{id: decode, type: json}]\\n"
    "sinks: [{id: rows, type: warehouse, resource: db, table: events, "
    "columns: {n: {path: n, type: integer}}}]\\n"
    f"resources: {{db: {{url: 'sqlite:///{db}'}}}}\\n"
)
processor = RecordProcessor(Engine(topo.plan), stream="s")
with open(os.devnull, "w") as out:
    kcl.KCLProcess(processor, input_file=sys.stdin, output_file=out, error_file=io.StringIO()).run()
"""


def main(n: int) -> None:
    first = {
        "action": "initialize",
        "shardId": "shardId-000000000001",
        "sequenceNumber": "TRIM_HORIZON",
        "subSequenceNumber": 0,
    }
    idle = json.dumps({"action": "processRecords", "millisBehindLatest": 0, "records": []})
    with tempfile.TemporaryFile("w+") as feed:
        feed.write(json.dumps(first) + "\n" + (idle + "\n") * n)
        feed.seek(0)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD], stdin=feed, check=True)
        seconds = time.perf_counter() - started
    # the start-up (imports, opening the topology) is in both runs: measure it once, subtract it
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD], stdin=subprocess.DEVNULL, check=True)
    startup = time.perf_counter() - started
    metrics = "on" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "off"
    print(
        f"{n} idle processRecords, metrics {metrics}: "
        f"{(seconds - startup) / n * 1e6:.1f} us per call (start-up {startup:.2f} s subtracted)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
