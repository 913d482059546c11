"""What the ``dead_letter`` file sink's key index costs per dead letter.

    python benchmarks/bench_dead_letters.py [--dead-letters 20000] [--runs 3]

The sink alone (``write_batch``, no engine), on a temporary folder of this machine's disk, with
and without ``index`` and ``fsync``, in batches of 1, 100 and 1,000 dead letters (a record of
~120 bytes each, failed by a bolt):

* **first run**: every dead letter is new — looked up (memory, then the index), written,
  fsynced when asked, its key added to the index;
* **second run**: the same input again, as a ``file`` spout's restart re-delivers it, with
  ``remember`` 1,000 (below the input): without the index each is written again; with it each is
  found in the index and nothing is written;
* **indexing a file once**: opening a file of an older squall (no index): its keys indexed from
  the file, per dead letter and per MB.

Each figure is the median of ``--runs`` runs, in microseconds per dead letter; the runs with and
without the index alternate, so that the noise of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, Failure, RecordMeta  # noqa: E402
from squall.sinks.base import Prepared, WriteContext  # noqa: E402
from squall.sinks.dead_letter import DeadLetterConfig, DeadLetterSink  # noqa: E402


def events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        meta = RecordMeta("clicks", "shardId-000000000000", str(10**20 + i), 0, f"pk-{i % 97}")
        raw = b'{"user": %d, "event": "click", "at": "2026-12-06T12:00:00Z", "x": "' % i
        out.append(Event(raw + b"y" * 40, meta, None, i, failure=Failure("decode", "invalid JSON")))
    return out


def sink(folder: Path, *, index: bool, fsync: bool, remember: int) -> DeadLetterSink:
    config = DeadLetterConfig(
        id="dlq",
        type="dead_letter",
        path="dlq.jsonl",
        index=index,
        fsync=fsync,
        remember=remember,
    )
    s = DeadLetterSink(config, ComponentContext("bench", folder))
    s.open()
    return s


def run(s: DeadLetterSink, evs: list[Event], batch: int) -> float:
    ctx = WriteContext()
    started = time.perf_counter()
    for i in range(0, len(evs), batch):
        s.write_batch(Prepared(evs[i : i + batch]), ctx)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dead-letters", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.dead_letters
    evs = events(n)
    print(f"# {platform.python_implementation()} {platform.python_version()}, {n} dead letters")
    print("| fsync | batch | index | first run µs/dl | second run µs/dl | lines after 2 runs |")
    print("|---|---|---|---|---|---|")
    for fsync in (False, True):
        for batch in (1, 100, 1000):
            if fsync and batch == 1 and n > 2000:
                evs_here = evs[:2000]  # an fsync per dead letter: fewer, or it takes minutes
            else:
                evs_here = evs
            firsts: dict[bool, list[float]] = {False: [], True: []}
            seconds: dict[bool, list[float]] = {False: [], True: []}
            lines = {}
            for _ in range(args.runs):
                for index in (False, True):  # in turn: a shared machine's noise hits both
                    with tempfile.TemporaryDirectory() as tmp:
                        folder = Path(tmp)
                        s = sink(folder, index=index, fsync=fsync, remember=1000)
                        firsts[index].append(run(s, evs_here, batch) / len(evs_here))
                        s.close()
                        s = sink(folder, index=index, fsync=fsync, remember=1000)
                        seconds[index].append(run(s, evs_here, batch) / len(evs_here))
                        s.close()
                        lines[index] = (folder / "dlq.jsonl").read_bytes().count(b"\n")
            for index in (False, True):
                print(
                    f"| {fsync} | {batch} | {index} "
                    f"| {statistics.median(firsts[index]) * 1e6:.1f} "
                    f"| {statistics.median(seconds[index]) * 1e6:.1f} "
                    f"| {lines[index]} of {len(evs_here)} |"
                )
    times, size, index_size = [], 0, 0
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            s = sink(folder, index=False, fsync=False, remember=1)
            run(s, evs, 1000)
            s.close()
            size = (folder / "dlq.jsonl").stat().st_size
            started = time.perf_counter()
            s = sink(folder, index=True, fsync=False, remember=1)
            times.append(time.perf_counter() - started)
            s.close()
            index_size = os.path.getsize(folder / "dlq.jsonl.index")
    t = statistics.median(times)
    print(
        f"\nindexing a file of {n} dead letters ({size / 1e6:.1f} MB) on its first open: "
        f"{t:.2f} s, {t / n * 1e6:.1f} µs per dead letter, {size / 1e6 / t:.0f} MB/s; "
        f"index {index_size / 1e6:.2f} MB ({index_size / n:.0f} bytes per dead letter)"
    )


if __name__ == "__main__":
    main()
