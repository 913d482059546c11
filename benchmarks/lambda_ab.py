"""The Lambda budgets of two squall versions, interleaved: which one is better on a loaded machine.

    python benchmarks/lambda_ab.py --base 39bf7e4 [--rounds 5] [--records 10000]

Extracts ``--base`` (a commit) with ``git archive`` into a temporary folder, compiles both trees'
bytecode, then runs each tree's own ``benchmarks/lambda_bench.py`` in fresh processes, alternating
base / this tree (the order swapped every round), on the same generated events. Writes
``benchmarks/results/<UTC time>-lambda-ab.json`` with every round and the medians (CPU time
first: wall time on a shared machine mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("init_cpu_ms", "import_cpu_ms", "make_handler_cpu_ms", "init_ms", "rss_after_init_mb")


def run(tree: Path, workdir: Path, records: int) -> dict:
    workdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "lambda_bench.py")]
        + ["--dir", str(workdir), "--records", str(records)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(docs: list[dict]) -> dict:
    s = {k: statistics.median(d[k] for d in docs) for k in KEYS}
    for i in range(2):
        s[f"invoke_{i + 1}_cpu_ms"] = statistics.median(d["invoke_cpu_ms"][i] for d in docs)
        s[f"invoke_{i + 1}_ms"] = statistics.median(d["invoke_ms"][i] for d in docs)
        s[f"rss_after_{i + 1}_mb"] = statistics.median(d["rss_mb"][i] for d in docs)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="commit to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=10_000)
    args = ap.parse_args()
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
        rounds: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.rounds):
            order = [("base", base), ("head", ROOT)]
            for name, tree in order if r % 2 == 0 else order[::-1]:
                doc = run(tree, tmp / f"{name}-{r}", args.records)
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
        "head": head,
        "records": args.records,
        "rounds": rounds,
        "summary": {name: summary(docs) for name, docs in rounds.items()},
    }
    path = ROOT / "benchmarks" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-lambda-ab.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
