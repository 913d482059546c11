"""The Lambda budgets of two squall versions, interleaved: which one is better on a loaded machine.

    python benchmarks/lambda_ab.py --base 39bf7e4 [--rounds 5] [--records 10000]

Extracts ``--base`` (a commit) with ``git archive`` into a temporary folder, compiles both trees'
bytecode, then runs this tree's ``benchmarks/lambda_bench.py`` (the same harness and example
topology for both; ``PYTHONPATH`` picks the squall under test) in fresh processes, alternating
base / this tree (the order swapped every round), on the same events (``make_events.py``, seed
7, generated once). ``--hand-loop`` adds, each round, ``benchmarks/hand_loop.py --variant
optimized`` on the first invocation's events in a fresh process (its batch: the example's
``lambda_batch_size``): the work of one 10,000-record invocation written by hand, as a floor for
the invocation's CPU. Writes ``benchmarks/results/<UTC time>-lambda-ab.json`` with every round
and the medians (CPU time first: wall time on a shared machine mostly measures the neighbours),
and ``paired_ratios``: per round head ÷ base of each CPU figure, their median and range.
``--head-args`` passes more options to this tree's runs only (``--base HEAD --head-args
'--device-engine re2'``: one option's cost on the same code). ``--init-only`` measures init alone (~0.5 s a process), for the many rounds a CPU comparison on a
shared machine needs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("init_cpu_ms", "import_cpu_ms", "make_handler_cpu_ms", "init_ms", "rss_after_init_mb")


def run(
    tree: Path,
    workdir: Path,
    records: int,
    events: Path,
    init_only: bool = False,
    extra: list[str] | None = None,
) -> dict:
    workdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lambda_bench.py")]
        + ["--dir", str(workdir), "--records", str(records), "--events", str(events)]
        + (["--init-only"] if init_only else [])
        + (extra or []),
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def hand_loop(workdir: Path, events: Path, batch: int) -> dict:
    """The optimized hand loop over ``events`` in a fresh process: CPU of its work (setup and
    imports excluded, as the invocation's CPU excludes init) and of the whole process."""
    workdir.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hand_loop.py"), "--variant", "optimized"]
        + ["--input", str(events), "--batch", str(batch)]
        + [f"--warehouse=sqlite:///{workdir}/w.db", f"--state=sqlite:///{workdir}/s.db"]
        + ["--rejects", str(workdir / "rejects.jsonl")],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    process_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return {
        "work_cpu_ms": sum(doc["cpu_per_part"].values()) * 1e3,
        "run_cpu_ms": doc["cpu_seconds"] * 1e3,
        "parts_cpu_ms": {k: round(v * 1e3, 1) for k, v in doc["cpu_per_part"].items()},
        "rows": doc["rows"],
        "dead_letters": doc["dead_letters"],
        "process_cpu_ms": process_cpu,  # imports and setup included
    }


def summary(docs: list[dict]) -> dict:
    s = {k: statistics.median(d[k] for d in docs) for k in KEYS}
    for i in range(min(len(d["invoke_cpu_ms"]) for d in docs)):
        s[f"invoke_{i + 1}_cpu_ms"] = statistics.median(d["invoke_cpu_ms"][i] for d in docs)
        s[f"invoke_{i + 1}_ms"] = statistics.median(d["invoke_ms"][i] for d in docs)
        s[f"rss_after_{i + 1}_mb"] = statistics.median(d["rss_mb"][i] for d in docs)
        for kind in ("anon", "file"):
            s[f"rss_{kind}_after_{i + 1}_mb"] = statistics.median(
                d[f"rss_{kind}_mb"][i] for d in docs
            )
    return s


def paired(rounds: dict[str, list[dict]]) -> dict:
    """Per round, head's figure over base's (the two ran next to each other, under the same
    load): the median and the range of these ratios, for the CPU figures."""
    pairs = list(zip(rounds["base"], rounds["head"], strict=True))
    keys = ["init_cpu_ms", "import_cpu_ms", "make_handler_cpu_ms"]
    out = {}
    for key in keys:
        ratios = sorted(h[key] / b[key] for b, h in pairs if b[key])
        out[key] = {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}
    for i in range(min(len(d["invoke_cpu_ms"]) for d in rounds["base"] + rounds["head"])):
        ratios = sorted(h["invoke_cpu_ms"][i] / b["invoke_cpu_ms"][i] for b, h in pairs)
        out[f"invoke_{i + 1}_cpu_ms"] = {
            "median": statistics.median(ratios),
            "min": ratios[0],
            "max": ratios[-1],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="commit to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument(
        "--hand-loop",
        action="store_true",
        help="also run the optimized hand loop on the first invocation's events, every round",
    )
    ap.add_argument(
        "--hand-loop-batch",
        type=int,
        default=2_500,
        help="its batch (the example's lambda_batch_size)",
    )
    ap.add_argument(
        "--init-only",
        action="store_true",
        help="measure init only (import + make_handler, RSS after it): cheap enough for many "
        "rounds, which CPU figures on a shared machine need",
    )
    ap.add_argument(
        "--head-args",
        default="",
        help="more arguments of lambda_bench.py for this tree's runs only, e.g. "
        "'--device-engine re2' with --base HEAD: one option's cost, same code",
    )
    args = ap.parse_args()
    head_args = shlex.split(args.head_args)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="squall-ab-") as tmpdir:
        tmp = Path(tmpdir)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        for tree in (base, ROOT):
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(tree / "squall")], check=True
            )
        events = tmp / "events.jsonl"
        make_events = ROOT / "examples" / "pistats" / "make_events.py"
        subprocess.run(
            [sys.executable, str(make_events), str(2 * args.records), str(events)], check=True
        )
        first = tmp / "first.jsonl"  # the first invocation's events, for the hand loop
        with events.open("rb") as src, first.open("wb") as dst:
            dst.writelines(itertools.islice(src, args.records))
        rounds: dict[str, list[dict]] = {"base": [], "head": []}
        hand: list[dict] = []
        for r in range(args.rounds):
            order = [("base", base), ("head", ROOT)]
            if args.hand_loop:
                order.append(("hand", None))
            if r % 2:
                order.reverse()
            for name, tree in order:
                if tree is None:
                    doc = hand_loop(tmp / f"hand-{r}", first, args.hand_loop_batch)
                    hand.append(doc)
                    print(
                        f"round {r + 1} hand loop: work {doc['work_cpu_ms']:.0f} ms cpu",
                        file=sys.stderr,
                    )
                    continue
                extra = head_args if name == "head" else []
                doc = run(tree, tmp / f"{name}-{r}", args.records, events, args.init_only, extra)
                rounds[name].append(doc)
                print(
                    f"round {r + 1} {name}: init {doc['init_cpu_ms']:.0f} ms cpu, invocations "
                    f"{doc['invoke_cpu_ms']} ms cpu, rss {doc['rss_mb']} MB",
                    file=sys.stderr,
                )
    result = {
        "date": datetime.now(UTC).isoformat(),
        "command": " ".join(["python", "benchmarks/lambda_ab.py", *sys.argv[1:]]),
        "base": args.base,
        "head_args": args.head_args,
        "head": head,
        "records": args.records,
        "rounds": rounds,
        "summary": {name: summary(docs) for name, docs in rounds.items()},
        "paired_ratios": paired(rounds),
    }
    if hand:
        result["hand_loop"] = hand
        result["summary"]["hand_loop"] = {
            k: statistics.median(d[k] for d in hand)
            for k in ("work_cpu_ms", "run_cpu_ms", "process_cpu_ms")
        }
    path = ROOT / "benchmarks" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-lambda-ab.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
