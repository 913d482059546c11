"""Size and cold-start init of the packaged pistats consumer (what `squall package` ships to Lambda).

    .venv/bin/python benchmarks/bench_package.py [--runs 5]
    .venv/bin/python benchmarks/bench_package.py --base COMMIT [--runs 9]

Builds the example consumer three ways — as shipped (its geo bolt uses the bundled GeoLite2, so
the 56 MB database goes in), with the geo bolt pointed at a database outside the zip (what the
issue's 25 MiB target measures), and the latter without bytecode — then, for each, unzips it and
measures init in fresh processes the way Lambda runs it (``python -S``, nothing but the package
on the path): the imports of the handler module, ``make_handler`` (load, compile, open), and the
process's wall time. Medians of ``--runs``. SQLite files under a temporary folder; no test
database, no network besides pip's.

``--base COMMIT``: only the variant with the geo database outside the zip, built twice — by
COMMIT's squall (extracted with ``git archive``) and by this tree's — then both packages'
inits measured alternately (the order swapped every round), as Lambda starts them (``import
squall_lambda``) and as ``make_handler`` called directly; CPU and wall time; and the runtime's
init split into the dependencies every topology imports, SQLAlchemy with its SQLite dialect, and
the rest (``CHILD_SPLIT``: what the init would cost without SQLAlchemy). Writes
``benchmarks/results/<UTC time>-package-ab.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pistats"

CHILD = """
import json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from squall.deploy.lambda_consumer import make_handler
t1, c1 = time.perf_counter(), time.process_time()
handler = make_handler(os.path.join(sys.argv[1], "topology", "topology.yaml"))
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "handler_ms": (t2 - t1) * 1000,
                  "import_cpu_ms": (c1 - c0) * 1000, "handler_cpu_ms": (c2 - c1) * 1000}))
"""
#: The runtime's init split in three: the dependencies every topology imports, SQLAlchemy (with
#: the SQLite dialect: what a SQLite warehouse or state costs), then ``import squall_lambda``.
CHILD_SPLIT = """
import gc, json, sys, time
gc.disable()  # as squall_lambda does during init
c0 = time.process_time()
import pydantic, yaml, logging, typing, dataclasses, re, enum, json, datetime, decimal, uuid
import importlib.metadata
c1 = time.process_time()
import sqlalchemy, sqlalchemy.dialects.sqlite
c2 = time.process_time()
import squall_lambda
c3 = time.process_time()
print(json.dumps({"common_cpu_ms": (c1 - c0) * 1000, "sqlalchemy_cpu_ms": (c2 - c1) * 1000,
                  "rest_cpu_ms": (c3 - c2) * 1000, "total_cpu_ms": (c3 - c0) * 1000,
                  "without_sqlalchemy_cpu_ms": (c3 - c0 - (c2 - c1)) * 1000}))
"""
#: What the Lambda runtime does: import the generated handler module (import + make_handler).
CHILD_RUNTIME = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import squall_lambda
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({"runtime_init_ms": (t1 - t0) * 1000, "runtime_init_cpu_ms": (c1 - c0) * 1000}))
"""


def build(topology: Path, out: Path, *extra: str, tree: Path = ROOT) -> str:
    cmd = [
        sys.executable,
        "-m",
        "squall.cli",
        "package",
        str(topology),
        "--handler",
        "consumer",
        "-o",
        str(out),
        *extra,
    ]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,  # `python -m` puts the working directory first on sys.path: the tree's squall runs
    )
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return r.stdout


def child_env(work: Path) -> dict[str, str]:
    # Lambda's code folder is read-only: no process may leave bytecode behind for the next one.
    return {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "WAREHOUSE_URL": f"sqlite:///{work}/w.db",
        "STATE_URL": f"sqlite:///{work}/s.db",
        "AWS_REGION": "us-east-1",
    }


def run_child(root: Path, work: Path, child: str) -> dict[str, float]:
    """One fresh process as Lambda runs it (``python -S``, only the unzipped package on the path)."""
    env = {**child_env(work), "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-S", "-c", child, str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    wall = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    doc["process_ms"] = wall
    return doc


def measure(zip_path: Path | None, work: Path, runs: int) -> dict[str, float]:
    """Medians over fresh processes; ``zip_path`` None: the development venv (site-packages, its pyc caches)."""
    env = child_env(work)
    if zip_path is None:
        root = work / "venv-task"
        (root / "topology").mkdir(parents=True, exist_ok=True)
        shutil.copytree(EXAMPLE, root / "topology", dirs_exist_ok=True)
        cmd = [sys.executable, "-c", CHILD, str(root)]
        env["PYTHONPATH"] = str(ROOT)
    else:
        root = work / (zip_path.stem + "-task")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(root)
        cmd = [sys.executable, "-S", "-c", CHILD, str(root)]
        env["PYTHONPATH"] = str(root)
    results = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
        wall = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        doc = json.loads(r.stdout.strip().splitlines()[-1])
        doc["process_ms"] = wall
        results.append(doc)
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def squall_digest(root: Path) -> str:
    """A digest of the squall sources in an unzipped package (which squall it holds)."""
    h = hashlib.sha256()
    for path in sorted((root / "squall").rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def compare(base: str, runs: int, work: Path, topology: Path) -> None:
    """The package of ``base``'s squall against this tree's, alternating fresh processes."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    base_tree = work / "base-tree"
    base_tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", base], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
    roots = {}
    for name, tree in (("base", base_tree), ("head", ROOT)):
        out = work / f"{name}.zip"
        build(topology, out, tree=tree)
        roots[name] = work / f"{name}-task"
        with zipfile.ZipFile(out) as zf:
            zf.extractall(roots[name])
    digests = {name: squall_digest(root) for name, root in roots.items()}
    if digests["base"] == digests["head"]:
        raise SystemExit(f"both packages hold the same squall: is {base} this tree's code?")
    rounds: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    loads = [os.getloadavg()[0]]
    for r in range(runs):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            doc = run_child(roots[name], work, CHILD)
            doc.update(run_child(roots[name], work, CHILD_RUNTIME))
            doc.update(run_child(roots[name], work, CHILD_SPLIT))
            doc["init_ms"] = doc["import_ms"] + doc["handler_ms"]
            doc["init_cpu_ms"] = doc["import_cpu_ms"] + doc["handler_cpu_ms"]
            rounds[name].append(doc)
        loads.append(os.getloadavg()[0])
    summary = {
        name: {k: round(statistics.median(d[k] for d in docs), 1) for k in docs[0]}
        for name, docs in rounds.items()
    }
    result = {
        "date": datetime.now(UTC).isoformat(),
        "command": " ".join(["python", "benchmarks/bench_package.py", *sys.argv[1:]]),
        "machine": f"python {sys.version.split()[0]}, {os.cpu_count()} cores",
        "load_average_1min": loads,
        "base": base,
        "head": head,
        "squall_digests": digests,
        "rounds": rounds,
        "summary": summary,
    }
    path = ROOT / "benchmarks" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-package-ab.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"load average {min(loads):.1f}-{max(loads):.1f}; result: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", help="compare with the package built by this commit's squall")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        work = Path(tmp)
        shipped = EXAMPLE / "topology.yaml"
        # The same topology with its geo bolt on a database outside the package (a layer, EFS, or
        # a file fetched at init in production); here the locally installed GeoLite2 file.
        from squall.enrichment.geo import bundled_database

        variant_dir = work / "pistats"
        shutil.copytree(EXAMPLE, variant_dir)
        text = shipped.read_text().replace(
            "{id: geo, type: geo, ip_field: ip, anonymize_ip: true}",
            f"{{id: geo, type: geo, ip_field: ip, anonymize_ip: true, "
            f"database: {bundled_database()}}}",
        )
        assert "database:" in text
        (variant_dir / "topology.yaml").write_text(text)
        if args.base:
            compare(args.base, args.runs, work, variant_dir / "topology.yaml")
            return
        cases = [
            ("as shipped (bundled GeoLite2)", shipped, ()),
            ("geo database outside the zip", variant_dir / "topology.yaml", ()),
            ("geo database outside, no bytecode", variant_dir / "topology.yaml", ("--no-compile",)),
        ]
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
            f"medians of {args.runs} fresh processes"
        )
        m = measure(None, work, args.runs)
        print(
            f"- reference, the development venv (not a package): init {m['import_ms'] + m['handler_ms']:.0f} ms "
            f"(imports {m['import_ms']:.0f}, make_handler {m['handler_ms']:.0f}; "
            f"CPU {m['import_cpu_ms'] + m['handler_cpu_ms']:.0f}), process {m['process_ms']:.0f} ms"
        )
        for i, (label, topology, extra) in enumerate(cases):
            out = work / f"case{i}.zip"
            t0 = time.perf_counter()
            report = build(topology, out, *extra)
            built = time.perf_counter() - t0
            m = measure(out, work, args.runs)
            size = out.stat().st_size / 2**20
            largest = (
                next(line for line in report.splitlines() if "largest:" in line)
                .split("largest:")[1]
                .strip()
            )
            print(
                f"- {label}: {size:.1f} MiB zipped (built in {built:.0f} s); init {m['import_ms'] + m['handler_ms']:.0f} ms "
                f"(imports {m['import_ms']:.0f}, make_handler {m['handler_ms']:.0f}; "
                f"CPU {m['import_cpu_ms'] + m['handler_cpu_ms']:.0f}), process {m['process_ms']:.0f} ms"
            )
            print(f"    largest: {largest}")
            print(f"    {report.splitlines()[0]}")


if __name__ == "__main__":
    main()
