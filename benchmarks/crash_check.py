"""Jepsen-style crash check of ``squall run``: many random kills, then compare with one clean run.

    python benchmarks/crash_check.py [--trials 20] [--seed 1] [--configs sqlite,postgres,mixed,window]
        [--pg-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/9]

For each configuration — ``sqlite`` (warehouse and state in one SQLite file), ``postgres`` (both
in one PostgreSQL database), ``mixed`` (warehouse on PostgreSQL, subscription state in Redis: no
shared transaction), ``window`` (``minutely_topology.yaml`` on PostgreSQL) — it runs the
unchanged example topology once to the end (the reference), then ``--trials`` trials. A trial
interrupts one to three runs, each one way drawn at random:

- ``kill``: SIGKILL after a random delay (0 to the reference run's duration: start-up, table
  creation, the batches, the end of input are all hit);
- ``point``: SIGKILL at a random step of the commit sequence of a random batch
  (``tests/acceptance/crash_points.py``);
- ``int``: SIGINT after a random delay (the graceful stop: the batch in flight is finished);
- ``int2``: SIGINT, then a second SIGINT a few milliseconds later (abort at once);
- ``term``: SIGTERM after a random delay;

then runs to the end and compares the warehouse rows, the subscription states (versions,
history), the dead letters (each once) or the window rows with the reference. It prints one line
per trial and a summary, and writes ``benchmarks/results/<UTC time>-crash-check.json``.

PostgreSQL: every run gets a fresh database ``squall_crash_<hex>`` on the server of ``--pg-url``
(dropped after the trial). Redis: the subscription keys (``squall:subscription:*``) of the
``--redis-url`` database are deleted before each trial: give it a database of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.acceptance.crash_points import POINTS  # noqa: E402
from tests.acceptance.test_crash_consistency import (  # noqa: E402
    Stores,
    Trial,
    assert_same,
)

WAYS = ("kill", "kill", "point", "point", "int", "int2", "term")
TOPOLOGY = {"window": "minutely_topology.yaml"}


class Databases:
    """Fresh PostgreSQL databases on one server, dropped on request."""

    def __init__(self, url: str):
        self.url = url
        self.base = url.rpartition("/")[0]
        self.made: list[str] = []

    def _admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def make(self) -> str:
        name = f"squall_crash_{uuid.uuid4().hex[:10]}"
        self._admin(f"create database {name}")
        self.made.append(name)
        return f"{self.base}/{name}"

    def drop_all(self) -> None:
        while self.made:
            self._admin(f"drop database if exists {self.made.pop()} with (force)")


def stores_for(config: str, folder: Path, dbs: Databases, redis_url: str) -> Stores:
    if config == "sqlite":
        url = f"sqlite:///{folder / 'warehouse.db'}"
        return Stores(url, url, folder)
    if config == "mixed":
        stores = Stores(dbs.make(), redis_url, folder)
        stores.clear_redis()
        return stores
    url = dbs.make()
    return Stores(url, url, folder)


def new_trial(config: str, base: Path, dbs: Databases, redis_url: str) -> Trial:
    folder = base / uuid.uuid4().hex[:8]
    folder.mkdir()
    trial = Trial(
        folder, TOPOLOGY.get(config, "topology.yaml"), stores_for(config, folder, dbs, redis_url)
    )
    if config == "window":  # the apps table the lookup reads
        subprocess.run(
            [sys.executable, "apps.py"],
            cwd=trial.folder,
            env=trial.env,
            check=True,
            capture_output=True,
        )
    return trial


def interrupt(trial: Trial, way: str, rng: random.Random, duration: float) -> str:
    """One interrupted run; what was done and how the run ended."""
    if way == "point":
        spec = f"{rng.choice(POINTS)}:{rng.randint(1, 30)}"
        proc = trial.start(spec)
        _, err = proc.communicate(timeout=300)
        return f"point {spec} -> {proc.returncode}"
    delay = rng.uniform(0, duration)
    proc = trial.start()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)  # the random moment itself, not a wait for a result
    if proc.poll() is None:
        sig = {
            "kill": signal.SIGKILL,
            "int": signal.SIGINT,
            "int2": signal.SIGINT,
            "term": signal.SIGTERM,
        }[way]
        try:
            os.killpg(proc.pid, sig)
            if way == "int2":
                time.sleep(rng.uniform(0.001, 0.05))
                os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    _, err = proc.communicate(timeout=300)
    return f"{way} @{delay:.2f}s -> {proc.returncode}{traceback_at(err)}"


def traceback_at(err: str) -> str:
    """`` TRACEBACK in <innermost squall frame, else the innermost frame>``, or empty."""
    if "Traceback" not in err:
        return ""
    frames = [line.strip() for line in err.splitlines() if line.strip().startswith('File "')]
    ours = [f for f in frames if "/squall/" in f] or frames or ["?"]
    return f" TRACEBACK in {ours[-1]}"


def check_config(
    config: str, args: argparse.Namespace, base: Path, dbs: Databases
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{config}")
    ref_trial = new_trial(config, base, dbs, args.redis_url)
    started = time.monotonic()
    ref_trial.to_end()
    duration = time.monotonic() - started
    reference = ref_trial.snapshot()
    if config == "mixed":
        ref_trial.stores.clear_redis()
    dbs.drop_all()
    found: dict[str, Any] = {
        "config": config,
        "reference_seconds": round(duration, 2),
        "trials": [],
    }
    for n in range(args.trials):
        trial = new_trial(config, base, dbs, args.redis_url)
        ways = [rng.choice(WAYS) for _ in range(rng.randint(1, 3))]
        done = [interrupt(trial, way, rng, duration) for way in ways]
        try:
            trial.to_end()
            assert_same(trial.snapshot(), reference)
            verdict = "same"
        except AssertionError as exc:
            verdict = f"DIFFERENT: {str(exc)[:600]}"
        if any("TRACEBACK" in d for d in done):
            verdict += " (a traceback in an interrupted run: see above)"
        print(f"{config:8} trial {n:3}: {'; '.join(done)} => {verdict}", flush=True)
        found["trials"].append({"interrupts": done, "verdict": verdict})
        if config == "mixed":
            trial.stores.clear_redis()
        dbs.drop_all()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--configs", default="sqlite,postgres,mixed,window")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    dbs = Databases(args.pg_url)
    results = []
    with tempfile.TemporaryDirectory(prefix="crash-check-") as tmp:
        try:
            for config in args.configs.split(","):
                results.append(check_config(config, args, Path(tmp), dbs))
        finally:
            dbs.drop_all()
    print()
    for r in results:
        bad = [t for t in r["trials"] if t["verdict"].startswith("DIFFERENT")]
        tracebacks = [i for t in r["trials"] for i in t["interrupts"] if "TRACEBACK" in i]
        ends = Counter(
            f"{i.split()[0]}->{i.split(' -> ')[1].split()[0]}"
            for t in r["trials"]
            for i in t["interrupts"]
        )
        print(
            f"{r['config']:8} {len(r['trials'])} trials, {sum(ends.values())} interrupted runs "
            f"({', '.join(f'{k} x{n}' for k, n in sorted(ends.items()))}), "
            f"{len(bad)} with stores different from the reference run, {len(tracebacks)} runs "
            "ending in a traceback"
        )
        for line in tracebacks:
            print(f"    {line}")
    out = (
        ROOT
        / "benchmarks"
        / "results"
        / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-crash-check.json"
    )
    out.write_text(json.dumps({"seed": args.seed, "results": results}, indent=1))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
