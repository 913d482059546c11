"""What the engine costs per bolt: spout → json → K bolts that pass every event on → a sink that
drops them, CPU per event as K grows.

    python benchmarks/engine_overhead.py [--events 50000] [--bolts 0,1,4,8] [--rounds 2]

Runs ``squall run`` in this process on the benchmarks' cached pistats events (500-record
batches). The figure is the CPU between the end of the first fifth of the batches and the end of
the last, per event: spout, json decode, the engine's routing and accounting, the commit
sequence (a dead-letter file, no database), garbage collection; start-up excluded. The difference
between K and K + n bolts is what n more bolts cost the engine when they do nothing. One line per
round; compare within a round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.chain_quarters import batch_marks  # noqa: E402
from squall.bolts.base import Bolt, Output  # noqa: E402


class Pass(Bolt):
    """Emits every event it gets, unchanged."""

    summary = "Pass every event on (benchmarks)."

    def process(self, batch):
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def cpu_per_event(bolts: int, events: Path) -> float:
    """µs of CPU per event, first fifth of the batches excluded, with ``bolts`` pass-through bolts."""
    import yaml

    from squall.cli import main as cli

    with batch_marks() as marks:
        with tempfile.TemporaryDirectory(prefix="squall-overhead-") as tmp:
            doc = {
                "name": "overhead",
                "spout": {"type": "file", "path": str(events)},
                "settings": {"batch_size": 500},
                "bolts": [{"id": "decode", "type": "json"}]
                + [
                    {"id": f"pass{i}", "type": "benchmarks.engine_overhead:Pass"}
                    for i in range(bolts)
                ],
                "sinks": [
                    {"id": "drop", "type": "benchmarks.chain_quarters:DropSink"},
                    {"id": "rejects", "type": "dead_letter", "path": str(Path(tmp) / "dl.jsonl")},
                ],
            }
            path = Path(tmp) / "topology.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.suppress(SystemExit),
            ):
                cli(["run", str(path), "--no-progress"], standalone_mode=False)
    (n0, t0), (n1, t1) = marks[len(marks) // 5], marks[-1]
    return (t1 - t0) / (n1 - n0) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--bolts", default="0,1,4,8", help="comma-separated numbers of bolts")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from benchmarks.run import events_file

    events = events_file(args.events)
    counts = [int(k) for k in args.bolts.split(",")]
    for _ in range(args.rounds):
        figures = [(k, cpu_per_event(k, events)) for k in counts]
        print("  ".join(f"{k} bolts {us:.2f} µs" for k, us in figures), flush=True)


if __name__ == "__main__":
    main()
