"""CPU per event over the quarters of a run, with the example chain cut after a component.

    python benchmarks/chain_quarters.py [--events 200000] [--cut geo] [--geo-cache N]

Runs ``squall run`` in this process on a copy of examples/pistats (SQLite in a temporary
directory) with the bolts up to ``--cut`` and, unless the cut is ``full``, a sink that drops what
it gets (the dead-letter file stays). After each batch the process's CPU time is noted; the
figure per quarter is the CPU between the batches that end the quarters, per event — spout,
engine, bolts, sinks, commits and garbage collection included, start-up excluded. Running the
cuts one after another tells which part makes a run's cost per event rise as it goes (the
tables, a cache that stops growing, …). One run per call: compare runs made alternately.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squall.sinks.base import Sink  # noqa: E402

EXAMPLE = ROOT / "examples" / "pistats"
CUTS = {
    "spout": [],
    "decode": ["decode"],
    "validate": ["decode", "validate", "dedupe"],
    "geo": ["decode", "validate", "dedupe", "geo"],
    "device": ["decode", "validate", "dedupe", "geo", "device"],
    "subscription": ["decode", "validate", "dedupe", "geo", "device", "subscription"],
    "full": None,
}


class DropSink(Sink):
    """Takes every event and keeps none."""

    summary = "Drop events (benchmarks)."

    def write_batch(self, prepared, ctx):
        return None


@contextlib.contextmanager
def batch_marks() -> Iterator[list[tuple[int, float]]]:
    """While open, every ``Engine.process`` call of this process appends (records so far, the
    process's CPU time at its end) to the list it yields; the engine is as it was afterwards."""
    from squall.topology import executor

    marks: list[tuple[int, float]] = []
    process = executor.Engine.process

    def noting(self, records, **kwargs):
        result = process(self, records, **kwargs)
        marks.append(((marks[-1][0] if marks else 0) + len(records), time.process_time()))
        return result

    executor.Engine.process = noting  # type: ignore[method-assign]
    try:
        yield marks
    finally:
        executor.Engine.process = process  # type: ignore[method-assign]


def topology(tmp: Path, events: Path, cut: str, geo_cache: int | None) -> Path:
    import yaml

    doc = yaml.safe_load((EXAMPLE / "topology.yaml").read_text())
    shutil.copytree(EXAMPLE / "schemas", tmp / "schemas")
    doc["spout"]["path"] = str(events)
    doc["resources"] = {name: {"url": f"sqlite:///{tmp / 'out.db'}"} for name in doc["resources"]}
    keep = CUTS[cut]
    if keep is not None:
        doc["bolts"] = [b for b in doc["bolts"] if b["id"] in keep]
        dead = next(s for s in doc["sinks"] if s["type"] == "dead_letter")
        doc["sinks"] = [{"id": "drop", "type": "benchmarks.chain_quarters:DropSink"}, dead]
        doc["streams"] = [s for s in doc.get("streams", []) if s["from"] in keep]
    for sink in doc["sinks"]:
        if sink["type"] == "dead_letter":
            sink["path"] = str(tmp / "rejects.jsonl")
    if geo_cache:
        for bolt in doc["bolts"]:
            if bolt["type"] == "geo":
                bolt["cache_size"] = geo_cache
    path = tmp / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--input", type=Path, help="a JSON-lines file (default: the benchmarks' cache)")
    ap.add_argument("--cut", choices=list(CUTS), default="full")
    ap.add_argument("--geo-cache", type=int, help="the geo bolt's cache_size")
    args = ap.parse_args()
    from benchmarks.run import events_file

    events = args.input or events_file(args.events)
    from squall.cli import main as cli

    with (
        batch_marks() as marks,
        tempfile.TemporaryDirectory(prefix="squall-quarters-") as tmp,
    ):
        path = topology(Path(tmp), events, args.cut, args.geo_cache)
        try:
            cli(["run", str(path)], standalone_mode=False)
        except SystemExit:
            pass
    total = marks[-1][0]
    quarters, (n0, t0) = [], marks[0]
    for k in range(1, 5):
        n, t = next(m for m in marks if m[0] >= k * total // 4)
        quarters.append((t - t0) / max(1, n - n0) * 1e6)
        n0, t0 = n, t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.cut:>12}  µs CPU per event by quarter: "
        + "  ".join(f"{q:6.2f}" for q in quarters)
        + f"   peak RSS {rss:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
