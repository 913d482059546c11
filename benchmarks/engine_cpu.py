"""CPU seconds per event of the engine on bench_pipeline's chain (json + geo + device + SQLite).

    PYTHONPATH=<tree> python benchmarks/engine_cpu.py [--events 20000] [--rounds 3]

``process_time`` of this process only, after a warm-up of 2,000 events: on a machine loaded by
other work it moves much less than wall time, so two source trees (two checkouts; PYTHONPATH picks
which squall is imported) can be compared run after run, interleaved. Prints the median and the
minimum in µs per event. This is how the session notes compared engine versions (before/after the
commit sequence, gc.freeze, the inline row builder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchmarks.bench_pipeline as bp  # noqa: E402
from squall.topology.executor import Engine  # noqa: E402
from squall.topology.graph import compile_plan  # noqa: E402
from squall.topology.loader import load_text  # noqa: E402

WARM_UP, BATCH = 2_000, 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    recs = bp.records(args.events)
    per_event = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            topo = load_text(
                bp.TOPOLOGY.format(db=tmp / "s.db", dlq=tmp / "dlq.jsonl"), base_dir=tmp
            )
            engine = Engine(compile_plan(topo)).open()
            for i in range(0, WARM_UP, BATCH):
                engine.process(recs[i : i + BATCH])
            started = time.process_time()
            for i in range(0, args.events, BATCH):
                assert engine.process(recs[i : i + BATCH]).ok
            per_event.append((time.process_time() - started) / args.events * 1e6)
            engine.close()
    print(
        f"engine CPU per event: median {statistics.median(per_event):.1f} µs, min {min(per_event):.1f} µs "
        f"({args.events} events, {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
