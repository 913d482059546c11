"""CPU per event of the ``json`` bolt: the bolt module of a commit against this tree's, alternating.

    python benchmarks/json_bolt_ab.py --base COMMIT [--rounds 31] [--reps 10] [--wide 100]

Both run ``JsonBolt.process`` (``event_id_field: message_id``, batches of 500) over the events of
examples/pistats/events.jsonl.gz in this process; ``process_time`` of ``--reps`` passes per round,
the two versions alternating and the order swapped every round. Prints the median and the minimum
in ns per event. ``--wide N``: one event in N gets an integer beyond 64 bits. The base module
(``squall/bolts/json_decode.py`` at COMMIT, from ``git show``) imports this tree's squall: compare
commits whose bolt needs nothing this tree lacks.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta  # noqa: E402

MODULE = "squall/bolts/json_decode.py"
BATCH = 500


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # pydantic resolves the config's annotations through it
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="commit whose json bolt is the base")
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--wide", type=int, default=0, help="one event in N with a 30-digit integer")
    args = ap.parse_args()
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.base}:{MODULE}"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "json_base.py").write_bytes(source)
        modules = {
            "base": load("json_base", Path(tmp) / "json_base.py"),
            "head": load("json_head", ROOT / MODULE),
        }
    raw = gzip.decompress((ROOT / "examples/pistats/events.jsonl.gz").read_bytes())
    lines = [line for line in raw.split(b"\n") if line]
    if args.wide:
        big = b',"big":123456789012345678901234567890}'
        lines = [line[:-1] + big if i % args.wide == 0 else line for i, line in enumerate(lines)]
    batches = [
        [
            Event(line, RecordMeta("s", "shardId-0", str(start + i)), None, start + i)
            for i, line in enumerate(lines[start : start + BATCH])
        ]
        for start in range(0, len(lines), BATCH)
    ]
    bolts = {
        name: m.JsonBolt(
            m.JsonConfig(id="decode", type="json", event_id_field="message_id"),
            ComponentContext("bench"),
        )
        for name, m in modules.items()
    }
    per_event: dict[str, list[float]] = {name: [] for name in bolts}
    for r in range(args.rounds):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            started = time.process_time()
            for _ in range(args.reps):
                for batch in batches:
                    bolts[name].process(batch)
            per_event[name].append((time.process_time() - started) / (args.reps * len(lines)) * 1e9)
    base = statistics.median(per_event["base"])
    for name, values in per_event.items():
        median = statistics.median(values)
        print(
            f"{name}: median {median:,.0f} ns/event ({100 * (median - base) / base:+.1f} %), "
            f"min {min(values):,.0f} ({len(lines):,} events, {args.rounds} rounds of {args.reps})"
        )


if __name__ == "__main__":
    main()
