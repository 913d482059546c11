"""Size and cold-start init of the packaged pistats consumer (what `squall package` ships to Lambda).

    .venv/bin/python benchmarks/bench_package.py [--runs 5]

Builds the example consumer three ways — as shipped (its geo bolt uses the bundled GeoLite2, so
the 56 MB database goes in), with the geo bolt pointed at a database outside the zip (what the
issue's 25 MiB target measures), and the latter without bytecode — then, for each, unzips it and
measures init in fresh processes the way Lambda runs it (``python -S``, nothing but the package
on the path): the imports of the handler module, ``make_handler`` (load, compile, open), and the
process's wall time. Medians of ``--runs``. SQLite files under a temporary folder; no test
database, no network besides pip's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pistats"

CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
from squall.deploy.lambda_consumer import make_handler
t1 = time.perf_counter()
handler = make_handler(os.path.join(sys.argv[1], "topology", "topology.yaml"))
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "handler_ms": (t2 - t1) * 1000}))
"""


def build(topology: Path, out: Path, *extra: str) -> str:
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
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return r.stdout


def measure(zip_path: Path | None, work: Path, runs: int) -> dict[str, float]:
    """Medians over fresh processes; ``zip_path`` None: the development venv (site-packages, its pyc caches)."""
    # Lambda's code folder is read-only: no process may leave bytecode behind for the next one.
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "WAREHOUSE_URL": f"sqlite:///{work}/w.db",
        "STATE_URL": f"sqlite:///{work}/s.db",
        "AWS_REGION": "us-east-1",
    }
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
    return {
        k: statistics.median(r[k] for r in results)
        for k in ("import_ms", "handler_ms", "process_ms")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
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
            f"(imports {m['import_ms']:.0f}, make_handler {m['handler_ms']:.0f}), process {m['process_ms']:.0f} ms"
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
                f"(imports {m['import_ms']:.0f}, make_handler {m['handler_ms']:.0f}), process {m['process_ms']:.0f} ms"
            )
            print(f"    largest: {largest}")
            print(f"    {report.splitlines()[0]}")


if __name__ == "__main__":
    main()
