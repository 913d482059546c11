"""Why throughput falls over a long run: per-component CPU per 100k events, and a fresh-process control.

    python benchmarks/long_run.py [--events 1000000] [--chunk 100000]

Three runs of the examples/pistats topology (SQLite) over make_events.py's events, each in its
own process, each printing the CPU time per event of every component (the engine's calls, timed
with ``time.process_time``), of garbage collection and of the rest, per ``--chunk`` events:

1. **long**: one process over all ``--events`` events;
2. **fill + fresh**: one process over all but the last chunk into new databases, then a *fresh*
   process over the last chunk on those databases (the same data size as the long run's last
   chunk, a young process);
3. **empty**: a fresh process over the last chunk into empty databases.

Long vs fresh (same database size) is what the process's age costs (heap, caches, GC); fresh vs
empty is what the databases' size costs (SQLite tables and indexes). Stateless components
(decode, validate) show what the machine's load did between the runs. Writes
``benchmarks/results/<UTC time>-long-run.json``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pistats"


def child(workdir: Path, events: Path, chunk: int) -> None:
    """One run in this process: a JSON line per ``chunk`` events on stdout."""
    sys.path.insert(0, str(ROOT))
    shutil.copytree(EXAMPLE / "schemas", workdir / "schemas", dirs_exist_ok=True)
    shutil.copy(EXAMPLE / "topology.yaml", workdir / "topology.yaml")
    os.environ["WAREHOUSE_URL"] = f"sqlite:///{workdir}/w.db"
    os.environ["STATE_URL"] = f"sqlite:///{workdir}/s.db"
    from squall.deploy.local import LocalRunner
    from squall.spouts.file import path_spout_config
    from squall.topology import executor
    from squall.topology.loader import load

    cpu: collections.Counter[str] = collections.Counter()
    call = executor.Engine._call

    def timed(self, where, stats, fn, *args, **kw):
        started = time.process_time()
        try:
            return call(self, where, stats, fn, *args, **kw)
        finally:
            cpu[where] += time.process_time() - started

    executor.Engine._call = timed  # type: ignore[method-assign]
    gc_time = {"total": 0.0, "start": 0.0}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time["start"] = time.process_time()
        else:
            gc_time["total"] += time.process_time() - gc_time["start"]

    gc.callbacks.append(on_gc)
    topo = load(workdir / "topology.yaml")
    topo = topo.with_spout(path_spout_config(events, topo.spout.id))
    state = {"records": 0, "mark": 0, "t": time.process_time(), "gc": 0.0}
    last: collections.Counter[str] = collections.Counter()

    def on_batch(result, spout) -> None:
        state["records"] += len(result)
        if state["records"] - state["mark"] < chunk:
            return
        now, n = time.process_time(), state["records"] - state["mark"]
        parts = {k: (cpu[k] - last[k]) / n * 1e6 for k in cpu}
        parts["gc"] = (gc_time["total"] - state["gc"]) / n * 1e6
        total = (now - state["t"]) / n * 1e6
        parts["other"] = total - sum(parts.values()) + parts["gc"]
        print(
            json.dumps(
                {
                    "events": state["records"],
                    "events_per_cpu_s": 1e6 / total,
                    "us_per_event": {k: round(v, 2) for k, v in parts.items()},
                }
            ),
            flush=True,
        )
        last.update({k: cpu[k] - last[k] for k in cpu})
        state.update(mark=state["records"], t=now, gc=gc_time["total"])

    LocalRunner(topo, on_batch=on_batch).run()


def run(workdir: Path, events: Path, chunk: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(workdir), str(events), "--chunk", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(f"  {row['events']:>9,} {row['events_per_cpu_s']:>8,.0f} ev/s cpu", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.chunk)
        return 0
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import events_file

    source = events_file(args.events)
    result: dict = {
        "date": datetime.now(UTC).isoformat(),
        "command": " ".join(["python", "benchmarks/long_run.py", *sys.argv[1:]]),
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="squall-long-") as tmpdir:
        tmp = Path(tmpdir)
        lines = source.read_bytes().splitlines(keepends=True)
        head, tail = tmp / "head.jsonl", tmp / "tail.jsonl"
        head.write_bytes(b"".join(lines[: -args.chunk]))
        tail.write_bytes(b"".join(lines[-args.chunk :]))
        del lines
        for name, workdir, events in (
            ("long", tmp / "long", source),
            ("fill", tmp / "fill", head),
            ("fresh", tmp / "fill", tail),
            ("empty", tmp / "empty", tail),
        ):
            workdir.mkdir(exist_ok=True)
            print(f"{name}:", file=sys.stderr)
            result[name] = run(workdir, events, args.chunk)
    result["load_average_end"] = os.getloadavg()
    path = ROOT / "benchmarks" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-long-run.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
