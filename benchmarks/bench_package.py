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

``--examples [--base COMMIT] [--find-links DIR]``: the five example functions (pistats consumer
and producer, etl ingest and transform, kiosk), each packaged as its README says — by this
tree's squall and, with ``--base``, by COMMIT's — then per zip: zipped and unzipped size, the
largest top-level entries unzipped, and the runtime's init (``import squall_lambda`` in a fresh
``python -S`` process: imports and ``make_handler``), wall and CPU medians of ``--runs``; each
function's two zips run back to back in alternating order, and the median of the rounds' CPU
ratios is given. AWS is moto's server on loopback (the queues, streams and buckets the functions
check at init); SQL resources are SQLite files. ``--find-links``: resolve from a wheelhouse
(tests/wheelhouse.py) instead of the index. Writes
``benchmarks/results/<UTC time>-package-examples.json``.

Size (~450 lines): three measurements of the same packages (one example's variants, two
versions alternately, the five example functions) sharing the build and fresh-process helpers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
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


def build(
    topology: Path, out: Path, *extra: str, tree: Path = ROOT, handler: str = "consumer"
) -> str:
    cmd = [
        sys.executable,
        "-m",
        "squall.cli",
        "package",
        str(topology),
        "--handler",
        handler,
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


#: The example functions, packaged as their READMEs say: (label, topology, handler, options).
FUNCTIONS = (
    ("pistats consumer", "pistats/topology.yaml", "consumer", ("--extras", "postgres,redis")),
    ("pistats producer", "pistats/producer.yaml", "producer", ()),
    ("etl ingest", "etl/ingest.yaml", "consumer", ()),
    ("etl transform", "etl/transform.yaml", "consumer", ("--extras", "postgres,s3")),
    ("kiosk", "kiosk/topology.yaml", "consumer", ()),
)


def zip_sizes(path: Path) -> dict[str, object]:
    """Zipped and unzipped bytes, and the eight largest top-level entries unzipped (MiB)."""
    groups: dict[str, int] = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    for info in infos:
        top = info.filename.split("/", 1)[0]
        top = "*.dist-info" if top.endswith(".dist-info") else top
        groups[top] = groups.get(top, 0) + info.file_size
    largest = sorted(groups.items(), key=lambda kv: -kv[1])[:8]
    return {
        "zipped_mib": round(path.stat().st_size / 2**20, 1),
        "unzipped_mib": round(sum(i.file_size for i in infos) / 2**20, 1),
        "largest_unzipped_mib": {k: round(v / 2**20, 1) for k, v in largest},
    }


def moto_aws() -> tuple[object, dict[str, str]]:
    """moto's server on loopback with what the examples check at init; the children's AWS env."""
    import boto3
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "SQS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    kw = {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    kw |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sqs, kinesis, s3 = (boto3.client(name, **kw) for name in ("sqs", "kinesis", "s3"))
    for queue in ("kiosk-orders-high.fifo", "kiosk-orders-low.fifo"):
        sqs.create_queue(QueueName=queue, Attributes={"FifoQueue": "true"})
    for stream in ("pistats-events", "orders-raw", "orders-curated"):
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    for bucket in ("etl-landing", "etl-lake"):
        s3.create_bucket(Bucket=bucket)
    return server, env


def examples(args: argparse.Namespace, work: Path) -> None:
    """Sizes and init of the example functions' zips, built by this tree (and ``--base``'s)."""
    trees = {"head": ROOT}
    if args.base:
        trees = {"base": work / "base-tree", **trees}
        archive = subprocess.run(
            ["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True
        ).stdout
        trees["base"].mkdir()
        subprocess.run(["tar", "-x", "-C", str(trees["base"])], input=archive, check=True)
    if args.find_links:
        os.environ.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=args.find_links)
    roots: dict[tuple[str, str], Path] = {}
    result: dict[str, dict[str, dict[str, object]]] = {name: {} for name in trees}
    for name, tree in trees.items():
        for label, topology, handler, options in FUNCTIONS:
            out = work / name / f"{label.replace(' ', '-')}.zip"
            t0 = time.perf_counter()
            build(ROOT / "examples" / topology, out, *options, tree=tree, handler=handler)
            result[name][label] = {"built_s": round(time.perf_counter() - t0), **zip_sizes(out)}
            roots[name, label] = out.with_suffix("")
            with zipfile.ZipFile(out) as zf:
                zf.extractall(roots[name, label])
            print(name, label, result[name][label], flush=True)
    server, aws = moto_aws()
    inits: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in roots}
    try:
        for r in range(args.runs):
            # one function's trees back to back, the order swapped every round: the load drifts
            for label, *_ in FUNCTIONS:
                names = list(trees) if r % 2 == 0 else list(reversed(trees))
                for name in names:
                    data = work / "data" / name / label.replace(" ", "-")
                    data.mkdir(parents=True, exist_ok=True)
                    env = {**child_env(data), **aws, "PYTHONPATH": str(roots[name, label])}
                    proc = subprocess.run(
                        [sys.executable, "-S", "-c", CHILD_RUNTIME],
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=roots[name, label],
                    )
                    if proc.returncode != 0:
                        raise SystemExit(f"{name} {label}: {proc.stderr[-3000:]}")
                    inits[name, label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        server.stop()
    for (name, label), docs in inits.items():
        for key in ("runtime_init_ms", "runtime_init_cpu_ms"):
            values = [d[key] for d in docs]
            result[name][label][f"{key}_median"] = round(statistics.median(values), 1)
            result[name][label][key] = [round(v, 1) for v in values]
    if "base" in trees:  # each round's head/base ratio of CPU, median: the drift cancels
        for label, *_ in FUNCTIONS:
            pairs = zip(inits["head", label], inits["base", label], strict=True)
            ratios = [h["runtime_init_cpu_ms"] / b["runtime_init_cpu_ms"] for h, b in pairs]
            result["head"][label]["cpu_ratio_to_base_median"] = round(statistics.median(ratios), 3)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    doc = {
        "date": datetime.now(UTC).isoformat(),
        "command": " ".join(["python", "benchmarks/bench_package.py", *sys.argv[1:]]),
        "machine": f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}",
        "base": args.base,
        "head": head,
        "functions": result,
    }
    path = (
        ROOT
        / "benchmarks"
        / "results"
        / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-package-examples.json"
    )
    path.write_text(json.dumps(doc, indent=1) + "\n")
    for label, *_ in FUNCTIONS:
        line = "; ".join(
            f"{name} {r[label]['zipped_mib']}/{r[label]['unzipped_mib']} MiB, "
            f"init {r[label]['runtime_init_ms_median']} ms "
            f"(CPU {r[label]['runtime_init_cpu_ms_median']} ms)"
            for name, r in result.items()
        )
        print(f"- {label}: {line}")
    print(f"result: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", help="compare with the package built by this commit's squall")
    parser.add_argument("--examples", action="store_true", help="the five example functions")
    parser.add_argument("--find-links", help="a wheelhouse to resolve from (no index)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        work = Path(tmp)
        if args.examples:
            examples(args, work)
            return
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
