"""Run squall's benchmarks, each measurement in a fresh process, and write a result file and a chart.

    python benchmarks/run.py                       # everything, 200k events, 5 rounds
    python benchmarks/run.py --only pipeline-sqlite --events 50000 --rounds 5
    python benchmarks/run.py --list

Benchmarks (``--only`` takes a comma-separated list):

- ``pipeline-sqlite`` / ``pipeline-postgres``: the examples/pistats chain over the same events,
  by ``squall run`` and by the two hand loops of benchmarks/hand_loop.py (optimized, naive), each
  a whole process. The order of the variants rotates between rounds; after every round each
  loop's rows, subscription states and dead letters are compared with squall's (the run stops on
  any difference). Ratios are paired: squall's time over the loop's time in the same round, then
  the median over rounds.
- ``lambda``: the Lambda consumer in a fresh process (benchmarks/lambda_bench.py): init (imports
  + ``make_handler``), two invocations of 10,000 records, RSS after each.
- ``memory``: ``squall run`` over 1M events, then the optimized loop over them: peak RSS, RSS
  over time, and events/s of the first and last 100k (from the input file's read position,
  sampled from /proc).
- ``enrichment``, ``postgres``, ``upsert``, ``lookup``: the component benchmarks
  (bench_*.py), their output kept verbatim in the result.

Every figure comes with CPU time (user + system of the measured process, from ``wait4``) next to
wall time: on a shared machine wall time mostly measures the neighbours. Results go to
``benchmarks/results/<UTC time>.json`` (with date, machine, load, Python, git commit) and
``<UTC time>.png``; ``latest.json`` / ``latest.png`` are copies of the last run with a chart (one
that ran a pipeline benchmark).

Databases: SQLite files in a temporary directory; PostgreSQL ``--pg-url`` (default database
``squall_bench``, created if missing); Redis ``--redis-url`` (default db 6). Never the ``test``
database or Redis db 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.check import Output, dead_letters, dump  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
EXAMPLE = ROOT / "examples" / "pistats"
PYTHON = sys.executable
SQUALL = [PYTHON, "-m", "squall.cli"]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/squall_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
VARIANTS = ("squall", "optimized", "naive")


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Measured:
    """One whole process: wall seconds, CPU seconds (user + system), peak RSS in MB, its stdout."""

    wall: float
    cpu: float
    max_rss_mb: float
    stdout: str
    samples: list[dict] = field(default_factory=list)
    user: float = 0.0
    system: float = 0.0


def measure(
    cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, sample: Any = None
) -> Measured:
    """Run ``cmd`` to completion; ``sample(pid)`` is called every 0.2 s while it runs."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd)
    samples = []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if sample is not None:
            s = sample(proc.pid)
            if s:
                samples.append(s)
        time.sleep(0.2 if sample is not None else 0.01)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(
            f"benchmark process failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"{stdout[-2000:]}\n{stderr[-4000:]}"
        )
    return Measured(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        stdout,
        samples,
        user=usage.ru_utime,
        system=usage.ru_stime,
    )


def compile_bytecode() -> dict:
    """Compile squall's and the benchmarks' modules to bytecode, as an installed squall has it.

    pip compiles a package's modules when it installs it and ``squall package`` puts compiled
    modules in the Lambda zip; a development checkout under ``PYTHONDONTWRITEBYTECODE`` (set on
    some machines and CI) never gets them, and every measured process then compiles ~100 of
    squall's modules from source at start (~60-90 ms CPU) — a cost no user pays. Both sides read
    compiled modules: the hand loop runs as ``python -m benchmarks.hand_loop`` for that reason
    (a script given by path is always compiled from source)."""
    import compileall

    ok = all(
        compileall.compile_dir(ROOT / folder, quiet=1, workers=1)
        for folder in ("squall", "benchmarks")
    )
    return {"compiled": ok, "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--", "squall"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "git_commit": commit,
        "squall_modified": dirty,
    }


# -- data ---------------------------------------------------------------------------------------


def events_file(n: int) -> Path:
    """examples/pistats events (make_events.py, seed 7), generated once and kept in benchmarks/.cache."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"pistats-{n}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        subprocess.run([PYTHON, str(EXAMPLE / "make_events.py"), str(n), str(tmp)], check=True)
        tmp.rename(path)
    return path


# -- the pipeline -------------------------------------------------------------------------------


def _topology(tmp: Path, state_table: str) -> Path:
    """A copy of the example topology (and its schema) in ``tmp``, its state in ``state_table``."""
    import yaml

    doc = yaml.safe_load((EXAMPLE / "topology.yaml").read_text())
    for bolt in doc["bolts"]:
        if bolt["type"] == "subscription":
            bolt["table"] = state_table
    shutil.copytree(EXAMPLE / "schemas", tmp / "schemas", dirs_exist_ok=True)
    path = tmp / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _drop_pg(url: str, tables: list[str]) -> None:
    import psycopg2

    db = psycopg2.connect(url)
    db.autocommit = True
    with db.cursor() as cur:
        for t in tables:
            cur.execute(f"DROP TABLE IF EXISTS {t}")
    db.close()


def ensure_pg_database(url: str) -> None:
    import psycopg2

    base, _, name = url.rpartition("/")
    if name in ("test", "postgres", ""):
        raise SystemExit(f"refusing to benchmark in database '{name}': use a database of its own")
    db = psycopg2.connect(f"{base}/postgres")
    db.autocommit = True
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    db.close()


def run_variant(
    variant: str,
    events: Path,
    tmp: Path,
    dialect: str,
    pg_url: str,
    batch: int,
    prefix: str = "bench",
) -> tuple[Measured, Output]:
    """One whole-process run of a variant into fresh tables; returns its measurement and outputs."""
    rejects = tmp / f"{variant}-rejects.jsonl"
    if dialect == "sqlite":  # one file for rows and states, as in the example
        warehouse = state = f"sqlite:///{tmp}/{variant}.db"
    else:
        warehouse = state = pg_url
    events_table, state_table = f"{prefix}_{variant}_events", f"{prefix}_{variant}_state"
    if dialect == "postgresql":
        _drop_pg(pg_url, [events_table, state_table])
    if variant == "squall":
        vdir = tmp / variant
        vdir.mkdir()
        topo = _topology(vdir, state_table)
        m = measure(
            [
                *SQUALL,
                "run",
                str(topo),
                "--input",
                str(events),
                "--no-progress",
                "--batch-size",
                str(batch),
            ],
            env={"WAREHOUSE_URL": warehouse, "STATE_URL": state, "EVENTS_TABLE": events_table},
            cwd=vdir,
        )
        rejects = vdir / "out" / "rejects.jsonl"
    else:
        m = measure(
            [
                PYTHON,
                "-m",
                "benchmarks.hand_loop",  # from its compiled module, as squall's (compile_bytecode)
                "--variant",
                variant,
                "--input",
                str(events),
                "--warehouse",
                warehouse,
                "--state",
                state,
                "--rejects",
                str(rejects),
                "--events-table",
                events_table,
                "--state-table",
                state_table,
                "--batch",
                str(batch),
            ]
        )
    return m, Output(warehouse, events_table, state, state_table, rejects)


def _counts(out: Output) -> dict[str, int]:
    """Rows, states and dead letters a run stored."""

    def count(url: str, table: str) -> int:
        if url.startswith("sqlite:///"):
            import sqlite3

            db = sqlite3.connect(url[len("sqlite:///") :])
            try:
                return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            finally:
                db.close()
        import psycopg2

        db = psycopg2.connect(url)
        try:
            with db.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {table}")
                return cur.fetchone()[0]
        finally:
            db.close()

    return {
        "rows": count(out.warehouse, out.events_table),
        "states": count(out.state, out.state_table),
        "dead_letters": len(dead_letters(out.rejects)),
    }


def bench_pipeline(dialect: str, args) -> dict:
    events = events_file(args.events)
    if dialect == "postgresql":
        ensure_pg_database(args.pg_url)
    variants = [v for v in VARIANTS if v != "naive" or not args.no_naive]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    ratios: dict[str, dict[str, list[float]]] = {
        v: {"wall": [], "cpu": []} for v in variants if v != "squall"
    }
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmpdir:
            tmp = Path(tmpdir)
            outputs, measured = {}, {}
            for v in order:
                m, out = run_variant(
                    v, events, tmp, dialect, args.pg_url, args.batch, args.table_prefix
                )
                measured[v], outputs[v] = m, out
                print(
                    f"  {dialect} round {r + 1}/{args.rounds} {v:9} wall {m.wall:7.2f} s  cpu {m.cpu:7.2f} s "
                    f"(user {m.user:.2f}, sys {m.system:.2f})  "
                    f"rss {m.max_rss_mb:6.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )
            # Compared in a child process: this one stays small (a child's peak RSS counts its parent's).
            ref = dump(outputs["squall"], tmp / "squall-output.json")
            for v in variants:
                if v != "squall":
                    check = subprocess.run(
                        [
                            PYTHON,
                            str(HERE / "check.py"),
                            str(ref),
                            str(dump(outputs[v], tmp / f"{v}-output.json")),
                            f"{v} ({dialect}, round {r + 1})",
                        ],
                        capture_output=True,
                        text=True,
                    )
                    if check.returncode != 0:
                        raise SystemExit(f"BENCHMARK INVALID: {check.stderr}")
            if r == 0:
                counts = _counts(outputs["squall"])
        for v in variants:
            m = measured[v]
            runs[v].append(
                {
                    "round": r + 1,
                    "position": order.index(v),
                    "wall": m.wall,
                    "cpu": m.cpu,
                    "user": m.user,
                    "system": m.system,
                    "max_rss_mb": m.max_rss_mb,
                }
            )
            if v != "squall":
                ratios[v]["wall"].append(measured["squall"].wall / m.wall)
                ratios[v]["cpu"].append(measured["squall"].cpu / m.cpu)
    n = args.events
    summary = {}
    for v in variants:
        wall = statistics.median(x["wall"] for x in runs[v])
        cpu = statistics.median(x["cpu"] for x in runs[v])
        summary[v] = {
            "median_wall": wall,
            "median_cpu": cpu,
            "median_user": statistics.median(x["user"] for x in runs[v]),
            "median_system": statistics.median(x["system"] for x in runs[v]),
            "events_per_s_wall": n / wall,
            "events_per_s_cpu": n / cpu,
            "cpu_us_per_event": cpu / n * 1e6,
            "median_max_rss_mb": statistics.median(x["max_rss_mb"] for x in runs[v]),
        }
        if v != "squall":
            summary[v]["squall_time_ratio_wall"] = statistics.median(ratios[v]["wall"])
            summary[v]["squall_time_ratio_cpu"] = statistics.median(ratios[v]["cpu"])
    return {
        "events": n,
        "batch_size": args.batch,
        "rounds": args.rounds,
        "checked": "identical rows, "
        "subscription states and dead letters (failed_at aside) in every round",
        "stored": counts,
        "runs": runs,
        "ratios_squall_over_variant": ratios,
        "summary": summary,
    }


# -- Lambda -------------------------------------------------------------------------------------


def bench_lambda(args) -> dict:
    results = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmp:
            m = measure(
                [
                    PYTHON,
                    str(HERE / "lambda_bench.py"),
                    "--records",
                    str(args.lambda_records),
                    "--dir",
                    tmp,
                ]
            )
        doc = json.loads(m.stdout.strip().splitlines()[-1])
        doc["process_cpu"] = m.cpu
        results.append(doc)
        print(
            f"  lambda round {r + 1}/{args.rounds}: init {doc['init_ms']:.0f} ms (cpu {doc['init_cpu_ms']:.0f}), "
            f"invocations {doc['invoke_ms']} ms, rss {doc['rss_mb']} MB",
            file=sys.stderr,
            flush=True,
        )
    keys = (
        "init_ms",
        "init_cpu_ms",
        "import_ms",
        "import_cpu_ms",
        "make_handler_ms",
        "make_handler_cpu_ms",
    )
    summary = {k: statistics.median(d[k] for d in results) for k in keys}
    for i in range(2):
        summary[f"invoke_{i + 1}_ms"] = statistics.median(d["invoke_ms"][i] for d in results)
        summary[f"invoke_{i + 1}_cpu_ms"] = statistics.median(
            d["invoke_cpu_ms"][i] for d in results
        )
        summary[f"rss_after_{i + 1}_mb"] = statistics.median(d["rss_mb"][i] for d in results)
    summary["max_rss_mb"] = statistics.median(d["max_rss_mb"] for d in results)
    return {
        "records": args.lambda_records,
        "rounds": args.rounds,
        "runs": results,
        "summary": summary,
        "how": "benchmarks/lambda_bench.py: squall.deploy.lambda_consumer.make_handler on a copy of the "
        "pistats topology (SQLite warehouse and state in a temporary directory), called directly "
        "with Kinesis events built like Lambda's; no packaging, no runtime client",
    }


# -- memory over a long run ---------------------------------------------------------------------


def _line_offsets(path: Path, marks: list[int]) -> dict[int, int]:
    """Byte offset of the start of each line number in ``marks`` (0-based)."""
    want, out, pos = set(marks), {}, 0
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i in want:
                out[i] = pos
            pos += len(line)
    out[max(marks)] = out.get(max(marks), pos)
    return out


def _proc_sample(path: Path):
    clk = os.sysconf("SC_CLK_TCK")

    def sample(pid: int) -> dict | None:
        try:
            rss = 0
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / clk
            pos = None
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        pos = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split()[1])
                except OSError:
                    continue
            return {"t": time.perf_counter(), "rss_mb": rss, "cpu": cpu, "pos": pos}
        except (OSError, IndexError, ValueError):
            return None

    return sample


def bench_memory(args) -> dict:
    """squall run over ``--memory-events`` events, then the optimized loop over the same events
    (same sampling): whether the throughput falls as the run goes on, and which side it is."""
    n = args.memory_events
    events = events_file(n)
    chunk = min(100_000, n // 10)
    offsets = _line_offsets(events, [0, chunk, n - chunk, n - 1])
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmpdir:
        tmp = Path(tmpdir)
        topo = _topology(tmp, "squall_subscriptions")
        doc = _long_run(
            [*SQUALL, "run", str(topo), "--input", str(events), "--no-progress"],
            {"WAREHOUSE_URL": f"sqlite:///{tmp}/w.db", "STATE_URL": f"sqlite:///{tmp}/s.db"},
            tmp,
            events,
            n,
            chunk,
            offsets,
        )
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # rows and states in two files, as squall's run above
        w, st = f"sqlite:///{tmp}/w.db", f"sqlite:///{tmp}/s.db"
        loop = [PYTHON, "-m", "benchmarks.hand_loop", "--variant", "optimized", "--input"]
        loop += [str(events), "--warehouse", w, "--state", st, "--rejects", str(tmp / "r.jsonl")]
        doc["optimized"] = _long_run(loop, {}, HERE.parent, events, n, chunk, offsets)
    doc["how"] = (
        "squall run examples/pistats/topology.yaml (SQLite: rows and states in two files) --input "
        "<events>, then the optimized hand loop (the same two files) over the same events; RSS, "
        "CPU and the input file's read position sampled from /proc every 0.2 s; the last chunk "
        "ends at exit"
    )
    return doc


def _long_run(
    cmd: list[str], env: dict, cwd: Path, events: Path, n: int, chunk: int, offsets: dict
) -> dict:
    m = measure(cmd, env=env, cwd=cwd, sample=_proc_sample(events))
    samples = [s for s in m.samples if s["pos"] is not None]

    def crossing(offset: int) -> dict | None:
        return next((s for s in samples if s["pos"] >= offset), None)

    def rate(a: int, b: int) -> dict | None:
        sa, sb = crossing(a), crossing(b)
        if not sa or not sb or sb is sa:
            return None
        return {
            "events_per_s_wall": chunk / (sb["t"] - sa["t"]),
            "events_per_s_cpu": chunk / max(sb["cpu"] - sa["cpu"], 1e-9),
        }

    first = rate(offsets[0], offsets[chunk])
    last_start = crossing(offsets[n - chunk])
    last = None
    if last_start and samples:
        end = samples[-1]
        lines = (
            (end["pos"] - offsets[n - chunk]) / max(1, offsets[n - 1] - offsets[n - chunk]) * chunk
        )
        if end is not last_start and lines > 0:
            last = {
                "events_per_s_wall": lines / (end["t"] - last_start["t"]),
                "events_per_s_cpu": lines / max(end["cpu"] - last_start["cpu"], 1e-9),
            }
    curve = [
        {
            "events_read_approx": round(s["pos"] / offsets[n - 1] * n),
            "rss_mb": round(s["rss_mb"], 1),
            "seconds": round(s["t"] - samples[0]["t"], 2) if samples else 0.0,
        }
        for s in samples[:: max(1, len(samples) // 40)]
    ]
    return {
        "events": n,
        "wall": m.wall,
        "cpu": m.cpu,
        "peak_rss_mb": m.max_rss_mb,
        "events_per_s_wall": n / m.wall,
        "events_per_s_cpu": n / m.cpu,
        f"first_{chunk}": first,
        f"last_{chunk}": last,
        "rss_curve": curve,
    }


# -- component benchmarks -----------------------------------------------------------------------


def bench_script(name: str, extra: list[str], args) -> dict:
    cmd = [PYTHON, str(HERE / f"bench_{name}.py"), *extra]
    pg = args.pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    m = measure(cmd, env={"SQUALL_BENCH_PG_URL": pg})  # Redis: each script's own db (never 0)
    print(m.stdout, file=sys.stderr)
    return {
        "command": " ".join(["python", f"benchmarks/bench_{name}.py", *extra]),
        "wall": m.wall,
        "cpu": m.cpu,
        "output": m.stdout,
    }


# -- chart --------------------------------------------------------------------------------------


def chart(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return False
    panels = [(k, v) for k, v in result["benchmarks"].items() if k.startswith("pipeline-")]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    colors = {"squall": "#1f6feb", "optimized": "#8b949e", "naive": "#d0d7de"}
    labels = {"squall": "squall", "optimized": "optimized\nhand loop", "naive": "naive\nhand loop"}
    for ax, (name, b) in zip(axes[0], panels, strict=True):
        s = b["summary"]
        vs = list(s)
        cpu = [s[v]["events_per_s_cpu"] / 1000 for v in vs]
        wall = [s[v]["events_per_s_wall"] / 1000 for v in vs]
        x = range(len(vs))
        ax.bar(
            [i - 0.2 for i in x], cpu, 0.4, color=[colors[v] for v in vs], label="per CPU second"
        )
        ax.bar(
            [i + 0.2 for i in x],
            wall,
            0.4,
            color=[colors[v] for v in vs],
            alpha=0.45,
            hatch="//",
            label="per wall second",
        )
        for i, v in enumerate(vs):
            note = "" if v == "squall" else f"{1 / s[v]['squall_time_ratio_cpu']:.2f}×"
            ax.text(i - 0.2, cpu[i], f"{cpu[i]:.1f}k\n{note}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [labels[v] for v in vs])
        ax.set_ylabel("thousand events / s")
        ax.set_title(
            f"{name.split('-')[1]}: {b['events']:,} events, median of {b['rounds']}", fontsize=10
        )
        ax.set_ylim(0, max(cpu + wall) * 1.3)
        ax.legend(fontsize=7, loc="upper right")
    m = result["machine"]
    fig.suptitle(
        f"examples/pistats chain — {result['date'][:16]} UTC, {m['cores']} × {m['cpu']}, "
        f"load {m['load_average'][0]:.1f}; × = speed of squall relative to the loop (CPU)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ---------------------------------------------------------------------------------------

BENCHMARKS = (
    "pipeline-sqlite",
    "pipeline-postgres",
    "lambda",
    "memory",
    "enrichment",
    "postgres",
    "upsert",
    "lookup",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--events", type=int, default=200_000, help="events of the pipeline benchmarks")
    ap.add_argument(
        "--rounds", type=int, default=5, help="paired runs per benchmark (at least 5 for a result)"
    )
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (it is slow)")
    ap.add_argument("--lambda-records", type=int, default=10_000)
    ap.add_argument("--memory-events", type=int, default=1_000_000)
    ap.add_argument("--pg-url", default=os.environ.get("SQUALL_BENCH_PG_URL", DEFAULT_PG))
    ap.add_argument("--redis-url", default=os.environ.get("SQUALL_BENCH_REDIS_URL", DEFAULT_REDIS))
    ap.add_argument(
        "--table-prefix", default="bench", help="prefix of the PostgreSQL tables (runs in parallel)"
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="RESULT",
        help="combine result files (e.g. of runs made in parallel) into one result and chart, and exit",
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="directory of the result files")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    if args.merge:
        return merge(args.merge, args.results)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.redis_url.rstrip("/").endswith("/0") or args.redis_url.count("/") < 3:
        ap.error("refusing Redis db 0: give --redis-url a db of its own (default db 6)")
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": started.isoformat(),
        "machine": machine(),
        "command": " ".join(sys.argv),
        "bytecode": compile_bytecode(),
        "benchmarks": {},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.results / f"{stamp}.json"
    for name in chosen:
        print(f"# {name}", file=sys.stderr, flush=True)
        b = result["benchmarks"]
        if name == "pipeline-sqlite":
            b[name] = bench_pipeline("sqlite", args)
        elif name == "pipeline-postgres":
            b[name] = bench_pipeline("postgresql", args)
        elif name == "lambda":
            b[name] = bench_lambda(args)
        elif name == "memory":
            b[name] = bench_memory(args)
        elif name == "enrichment":
            b[name] = bench_script(
                "enrichment", ["--redis-url", args.redis_url, "--pg-url", args.pg_url], args
            )
        elif name == "postgres":
            b[name] = bench_script("postgres", ["--url", args.pg_url], args)
        else:
            b[name] = bench_script(name, [], args)
        path.write_text(
            json.dumps(result, indent=1) + "\n"
        )  # what is done so far survives an interruption
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["seconds"] = (datetime.now(UTC) - started).total_seconds()
    path.write_text(json.dumps(result, indent=1) + "\n")
    png = args.results / f"{stamp}.png"
    if chart(
        result, png
    ):  # latest.json / latest.png: the last run with a chart (a pipeline benchmark)
        shutil.copy(path, args.results / "latest.json")
        shutil.copy(png, args.results / "latest.png")
    print(report(result))
    print(f"result: {path}")
    return 0


def merge(paths: list[Path], results: Path) -> int:
    """One result (and chart) from several: the benchmarks of each, the machine of each kept."""
    docs = [json.loads(p.read_text()) for p in paths]
    first = min(docs, key=lambda d: d["date"])
    result = {
        "date": first["date"],
        "machine": first["machine"],
        "merged_from": [],
        "benchmarks": {},
    }
    for p, d in zip(paths, docs, strict=True):
        result["merged_from"].append(
            {
                "file": p.name,
                "date": d["date"],
                "command": d["command"],
                "machine": d["machine"],
                "benchmarks": list(d["benchmarks"]),
            }
        )
        result["benchmarks"].update(d["benchmarks"])
    loads = [d["machine"]["load_average"][0] for d in docs]
    result["machine"] = {**first["machine"], "load_average": [max(loads), 0, 0]}
    stamp = datetime.fromisoformat(first["date"]).strftime("%Y%m%dT%H%M%SZ")
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{stamp}-merged.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    png = results / f"{stamp}-merged.png"
    if chart(result, png):
        shutil.copy(path, results / "latest.json")
        shutil.copy(png, results / "latest.png")
    print(report(result))
    print(f"result: {path}")
    return 0


def report(result: dict) -> str:
    """The result as a short text table."""
    lines = [
        f"# {result['date'][:19]} UTC, {result['machine']['cores']} × {result['machine']['cpu']}, "
        f"load {result['machine']['load_average'][0]:.1f}, {result['machine']['python']}, "
        f"commit {result['machine']['git_commit'][:10]}"
    ]
    for name, b in result["benchmarks"].items():
        if name.startswith("pipeline-"):
            lines.append(f"## {name}: {b['events']:,} events, median of {b['rounds']} paired runs")
            lines.append(
                f"{'':10} {'ev/s (cpu)':>11} {'ev/s (wall)':>12} {'µs cpu/ev':>10} {'rss MB':>7}  "
                "squall time / this (cpu, wall)"
            )
            for v, s in b["summary"].items():
                ratio = (
                    ""
                    if v == "squall"
                    else (f"{s['squall_time_ratio_cpu']:.2f}×, {s['squall_time_ratio_wall']:.2f}×")
                )
                lines.append(
                    f"{v:10} {s['events_per_s_cpu']:>11,.0f} {s['events_per_s_wall']:>12,.0f} "
                    f"{s['cpu_us_per_event']:>10.1f} {s['median_max_rss_mb']:>7.0f}  {ratio}"
                )
        elif name == "lambda":
            s = b["summary"]
            lines.append(
                f"## lambda ({b['records']:,} records, median of {b['rounds']} fresh processes)"
            )
            lines.append(
                f"init {s['init_ms']:.0f} ms wall / {s['init_cpu_ms']:.0f} ms cpu (imports "
                f"{s['import_ms']:.0f} / {s['import_cpu_ms']:.0f}, make_handler {s['make_handler_ms']:.0f} / "
                f"{s['make_handler_cpu_ms']:.0f}); invocation 1: {s['invoke_1_ms']:.0f} / "
                f"{s['invoke_1_cpu_ms']:.0f} ms, 2: {s['invoke_2_ms']:.0f} / {s['invoke_2_cpu_ms']:.0f} ms; "
                f"RSS after them {s['rss_after_1_mb']:.0f} / {s['rss_after_2_mb']:.0f} MB"
            )
        elif name == "memory":
            keys = [k for k in b if k.startswith(("first_", "last_"))]
            parts = [
                f"{k}: {b[k]['events_per_s_cpu']:,.0f} ev/s cpu, {b[k]['events_per_s_wall']:,.0f} wall"
                for k in keys
                if b[k]
            ]
            lines.append(
                f"## memory: squall run over {b['events']:,} events: peak RSS {b['peak_rss_mb']:.0f} MB, "
                f"{b['events_per_s_cpu']:,.0f} ev/s cpu; " + "; ".join(parts)
            )
            o = b.get("optimized")
            if o:
                parts = [
                    f"{k}: {o[k]['events_per_s_cpu']:,.0f} ev/s cpu, {o[k]['events_per_s_wall']:,.0f} wall"
                    for k in keys
                    if o.get(k)
                ]
                lines.append(
                    f"   optimized loop: peak RSS {o['peak_rss_mb']:.0f} MB, "
                    f"{o['events_per_s_cpu']:,.0f} ev/s cpu; " + "; ".join(parts)
                )
        else:
            lines.append(f"## {name}: see the result file (cpu {b['cpu']:.1f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
