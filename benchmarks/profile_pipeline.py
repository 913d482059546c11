"""Where squall's time goes in the examples/pistats chain: per component, per function, and in GC.

    python benchmarks/profile_pipeline.py [--events 50000] [--input FILE] [--top 30]

Runs ``squall run`` in this process on a copy of the example topology (SQLite warehouse and state
in a temporary directory), three times over the same events:

1. plain, with the run's own per-component table (seconds per component, as ``squall run``
   prints it) and the time spent in garbage collection (``gc.callbacks``), with CPU time;
2. with garbage collection disabled (what GC costs, as a difference);
3. under cProfile: the functions with the most own time, and own time summed per squall module
   and per library.

Profiles are a guide, not a measurement: cProfile slows calls down unevenly. Figures are CPU
seconds (``process_time``) unless marked.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import _topology, events_file  # noqa: E402


class GcTimer:
    def __init__(self):
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[info["generation"]] += 1


def run_once(
    events: Path, gc_enabled: bool = True, profile: cProfile.Profile | None = None
) -> dict:
    from squall.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="squall-profile-") as tmpdir:
        tmp = Path(tmpdir)
        topo = _topology(tmp, "squall_subscriptions")
        os.environ["WAREHOUSE_URL"] = f"sqlite:///{tmp}/w.db"
        os.environ["STATE_URL"] = f"sqlite:///{tmp}/s.db"
        timer = GcTimer()
        gc.collect()
        gc.callbacks.append(timer)
        if not gc_enabled:
            gc.disable()
        out, err = io.StringIO(), io.StringIO()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                if profile:
                    profile.enable()
                try:
                    cli(
                        ["run", str(topo), "--input", str(events), "--no-progress"],
                        standalone_mode=False,
                    )
                except SystemExit:
                    pass
                finally:
                    if profile:
                        profile.disable()
        finally:
            gc.enable()
            gc.callbacks.remove(timer)
        shutil.rmtree(tmp / "out", ignore_errors=True)
        return {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "gc": timer.seconds,
            "collections": timer.collections,
            "table": err.getvalue() + out.getvalue(),
        }


def timed_methods() -> tuple[dict[str, float], list]:
    """Wrap each component's batch methods with a CPU-time counter (100s of calls: no distortion)."""
    from squall.bolts.dedupe import DedupeBolt
    from squall.bolts.json_decode import JsonBolt
    from squall.bolts.schema import SchemaBolt
    from squall.enrichment.device import DeviceBolt
    from squall.enrichment.geo import GeoBolt
    from squall.enrichment.subscription import SubscriptionBolt
    from squall.sinks.dead_letter import DeadLetterSink
    from squall.sinks.warehouse import WarehouseSink
    from squall.spouts.file import FileSpout
    from squall.topology.executor import Engine

    spent: dict[str, float] = defaultdict(float)
    inside = [0]  # > 0 while the batch transaction runs
    undo = []
    targets = [
        (JsonBolt, "process", "decode"),
        (SchemaBolt, "process", "validate"),
        (DedupeBolt, "process", "dedupe"),
        (GeoBolt, "process", "geo"),
        (DeviceBolt, "process", "device"),
        (SubscriptionBolt, "process", "subscription (enrich)"),
        (SubscriptionBolt, "commit_state", "subscription (commit state)"),
        (WarehouseSink, "prepare", "warehouse (rows)"),
        (WarehouseSink, "write_batch", "warehouse (write)"),
        (DeadLetterSink, "write_batch", "dead letters (write)"),
        # Outer calls: the engine's batch (components inside it are subtracted when printed),
        # the batch transaction (writes inside it subtracted: what is left is BEGIN/COMMIT) and
        # the spout's read.
        (Engine, "process", OUTER_ENGINE),
        (Engine, "_commit_transaction", OUTER_TX),
        (FileSpout, "read", "spout (read)"),
    ]
    for cls, name, label in targets:
        original = cls.__dict__.get(name)
        if original is None:
            continue

        def wrapper(*a, _f=original, _label=label, **kw):
            t = time.process_time()
            if _label == OUTER_TX:
                inside[0] += 1
            try:
                return _f(*a, **kw)
            finally:
                took = time.process_time() - t
                spent[_label] += took
                if _label == OUTER_TX:
                    inside[0] -= 1
                elif inside[0] and _label != OUTER_ENGINE:
                    spent[IN_TX] += took  # a component's write inside the batch transaction

        def gen_wrapper(*a, _f=original, _label=label, **kw):  # a generator: time each step
            it = _f(*a, **kw)
            while True:
                t = time.process_time()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    spent[_label] += time.process_time() - t
                yield item

        if inspect.isgeneratorfunction(original):
            wrapper = gen_wrapper

        setattr(cls, name, wrapper)
        undo.append((cls, name, original))
    return spent, undo


OUTER_ENGINE = "engine: batch (process)"
OUTER_TX = "engine: batch transaction"
#: components' time spent inside the batch transaction (measured, not assumed: a state store on
#: another database commits outside it)
IN_TX = "inside the batch transaction"


def split_outer(spent: dict[str, float]) -> dict[str, float]:
    """Component times plus the engine's own share: its batch minus what ran inside it."""
    parts = dict(spent)
    engine = parts.pop(OUTER_ENGINE, 0.0)
    tx = parts.pop(OUTER_TX, 0.0)
    in_tx = parts.pop(IN_TX, 0.0)
    inner = sum(t for label, t in parts.items() if label != "spout (read)")
    parts["engine: BEGIN/COMMIT of the batch transaction"] = tx - in_tx
    parts["engine: everything else in a batch"] = engine - inner - (tx - in_tx)
    return parts


def group(path: str) -> str:
    p = path.replace("\\", "/")
    if "/squall/" in p and "site-packages" not in p:
        return "squall/" + p.split("/squall/", 1)[1].rsplit(".", 1)[0]
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1].split("/", 1)[0]
    if p.startswith("~") or p.startswith("<"):
        return "builtins"
    return "stdlib/" + Path(p).stem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument(
        "--input", type=Path, help="JSON-lines events (default: make_events.py, cached)"
    )
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--dump", type=Path, help="also write the cProfile stats to this file")
    args = ap.parse_args()
    events = args.input or events_file(args.events)
    n = sum(1 for _ in open(events, "rb"))
    run_once(events)  # warm the file cache and imports
    plain = run_once(events)
    no_gc = run_once(events, gc_enabled=False)
    spent, undo = timed_methods()
    split = run_once(events)
    for cls, name, original in undo:
        setattr(cls, name, original)
    spent = split_outer(spent)
    prof = cProfile.Profile(
        time.process_time
    )  # CPU time: wall time on a shared machine is mostly waiting
    run_once(events, profile=prof)
    if args.dump:
        prof.dump_stats(args.dump)
    print(f"# squall run, examples/pistats, {n:,} events (SQLite), Python {sys.version.split()[0]}")
    print(plain["table"].strip())
    print(
        f"\nCPU {plain['cpu']:.2f} s ({plain['cpu'] / n * 1e6:.1f} µs/event), wall {plain['wall']:.2f} s; "
        f"GC {plain['gc']:.2f} s CPU in {sum(plain['collections'])} collections {plain['collections']} "
        f"(gen 0/1/2)"
    )
    print(
        f"GC disabled: CPU {no_gc['cpu']:.2f} s ({no_gc['cpu'] / n * 1e6:.1f} µs/event): "
        f"{(1 - no_gc['cpu'] / plain['cpu']) * 100:.0f} % less"
    )
    print(
        f"\n## CPU per component (process_time around each component's batch methods; run CPU {split['cpu']:.2f} s)"
    )
    for label, t in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"{t:8.2f} s {t / n * 1e6:7.1f} µs/event  {label}")
    rest = split["cpu"] - sum(spent.values())
    print(
        f"{rest:8.2f} s {rest / n * 1e6:7.1f} µs/event  everything else (imports, setup, runner, GC outside batches)"
    )
    stats = pstats.Stats(prof)
    own: dict[str, float] = defaultdict(float)
    for (path, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        own[group(path)] += tt
    total = sum(own.values())
    print(
        f"\n## own time per module under cProfile (total {total:.2f} s, {total / n * 1e6:.1f} µs/event)"
    )
    for mod, t in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{t:8.2f} s {t / n * 1e6:7.1f} µs/event  {t / total * 100:5.1f} %  {mod}")
    print("\n## per component under cProfile: cumulative CPU time of its batch methods")
    entry_points = ("process", "write_batch", "prepare", "commit_state", "read", "_batches")
    for (path, _line, fn), (_cc, nc, _tt, ct, _callers) in sorted(
        stats.stats.items(), key=lambda kv: -kv[1][3]
    ):
        if fn in entry_points and "/squall/" in path and "site-packages" not in path and ct > 0.001:
            print(f"{ct:8.2f} s {ct / n * 1e6:7.1f} µs/event  {group(path)}.{fn} ({nc} calls)")
    print(f"\n## top {args.top} functions by own time")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    print("\n".join(buf.getvalue().splitlines()[6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
