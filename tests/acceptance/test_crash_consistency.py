"""Acceptance: the example topologies, killed at chosen points of the commit sequence, end as one
uninterrupted run — the same warehouse rows, subscription states (versions and history), dead
letters once each, window results.

Each trial runs ``squall run`` on ``examples/pistats/topology.yaml`` (or
``minutely_topology.yaml``), unchanged, on the example's 3,000 events (60 bad ones), in batches of
100, through ``tests.acceptance.crash_points``: it kills itself with SIGKILL at a chosen point of
the commit sequence (after the dead letters, inside the transaction before COMMIT, after the
transaction and before a state that is outside it, after a state commit, after the batch). The
run is then started again to the end (the ``file`` spout keeps no checkpoint: each start reads
the file from its beginning, and the sinks and the states recognise what they already hold).
Stores: (a) SQLite for warehouse and state (one transaction), (b) PostgreSQL for both, (c)
PostgreSQL warehouse and Redis state (no shared database: the state is written after the rows'
commit). SIGINT and SIGTERM mid-run (the graceful stop: the batch in flight is finished, exit
130) are followed by a restart too. The random-moment counterpart with many trials is ``benchmarks/crash_check.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pistats"
BATCH = 100  # 30 batches of the 3,000 events: room for kill points
# The subscription bolt's Redis key prefix in a trial: its own, not the default
# ``squall:subscription:``, so that another run of the suite on the same Redis db (a developer's
# and CI's, two checkouts) neither reads nor clears this one's states.
STATE_PREFIX_FORM = "squall-crash-{}:subscription:"


class Stores:
    """Where a trial's warehouse and state live, and how to read them back."""

    def __init__(self, warehouse: str, state: str, folder: Path):
        self.warehouse, self.state, self.folder = warehouse, state, folder
        self.prefix = STATE_PREFIX_FORM.format(uuid.uuid4().hex[:12])

    # -- SQL -----------------------------------------------------------------------------------

    def query(self, url: str, sql: str) -> list[tuple]:
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        pg = psycopg2.connect(url)
        try:
            with pg.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            pg.close()

    def count(self, table: str) -> int:
        try:
            return self.query(self.warehouse, f"select count(*) from {table}")[0][0]
        except (sqlite3.Error, psycopg2.Error):  # not created yet
            return 0

    def states(self) -> list[Any]:
        if self.state.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.state)
            try:
                keys = sorted(client.scan_iter(match=f"{self.prefix}*", count=1000))
                cut = len(self.prefix)  # (keys compared across trials, each with its prefix)
                return [(k[cut:], sorted(client.hgetall(k).items())) for k in keys]
            finally:
                client.close()
        return self.query(self.state, "select * from squall_subscriptions order by key")

    def clear_redis(self) -> None:
        if not self.state.startswith("redis"):
            return
        import redis

        client = redis.Redis.from_url(self.state)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


class Trial:
    """One copy of the example folder (its own dead-letter files) on its own stores."""

    def __init__(self, base: Path, topology: str, stores: Stores):
        self.folder = base / uuid.uuid4().hex[:8]
        self.folder.mkdir()
        for name in (topology, "schemas", "events.jsonl.gz", "apps.py"):
            target = self.folder / name
            if name == "events.jsonl.gz":
                target.symlink_to(EXAMPLE / name)
            elif (EXAMPLE / name).is_dir():
                shutil.copytree(EXAMPLE / name, target)
            else:  # copied: its relative paths (out/…) are the trial folder's
                shutil.copy(EXAMPLE / name, target)
        if stores.state.startswith("redis"):  # the states under this trial's own key prefix
            text = (self.folder / topology).read_text()
            bolt = "type: subscription, store: state,"
            assert bolt in text, f"{topology}: the subscription bolt's line changed"
            text = text.replace(bolt, f"{bolt} key_prefix: '{stores.prefix}',")
            (self.folder / topology).write_text(text)
        self.topology = self.folder / topology
        self.stores = stores
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WAREHOUSE_URL": stores.warehouse,
            "STATE_URL": stores.state,
        }

    def start(self, crash: str | None = None) -> subprocess.Popen:
        env = {**self.env, "CRASH_AT": crash} if crash else self.env
        return subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance.crash_points", "run", "--no-progress"]
            + ["--batch-size", str(BATCH), str(self.topology)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
            # Ctrl-C as in a terminal, also when this process was started with SIGINT ignored
            # (a background job of a non-interactive shell), which its children would inherit
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def crash(self, point: str) -> None:
        """A run that kills itself with SIGKILL at ``point`` (``<point>:<n>``)."""
        proc = self.start(point)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"{point} never reached: {err[-2000:]}"

    def to_end(self) -> str:
        """Run to the end of the input; a start refused because the killed run's lock is not
        released yet (PostgreSQL notices the dead session) is tried again."""
        deadline = time.monotonic() + 60
        while True:
            proc = self.start()
            out, err = proc.communicate(timeout=120)
            if proc.returncode == 2 and "already running" in err and time.monotonic() < deadline:
                continue
            assert proc.returncode == 0, err[-3000:]
            return out

    def signal_when(
        self, sig: signal.Signals, table: str, rows: int
    ) -> subprocess.CompletedProcess:
        """Start a run, send ``sig`` once the warehouse holds ``rows`` rows, wait for its end."""
        proc = self.start()
        deadline = time.monotonic() + 60
        while self.stores.count(table) < rows:
            assert proc.poll() is None, "the run ended before the signal"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.005)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def dead_letters(self, name: str) -> Counter:
        """Each dead letter as (event id, component, reason, record): a line torn by a kill in
        mid-write is skipped, as the sink skips it on open."""
        found: Counter = Counter()
        path = self.folder / "out" / name
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            found[(doc["event_id"], doc["component"], doc["reason"], doc["record"])] += 1
        return found

    def snapshot(self) -> dict[str, Any]:
        if self.topology.name == "topology.yaml":
            return {
                "rows": self.stores.query(
                    self.stores.warehouse, "select * from events order by event_id"
                ),
                "states": self.stores.states(),
                "dead": self.dead_letters("rejects.jsonl"),
            }
        return {
            "rows": self.stores.query(
                self.stores.warehouse,
                "select * from pistats_minutely order by window_start, app_id",
            ),
            "dead": self.dead_letters("minutely-rejects.jsonl"),
        }


def assert_same(got: dict[str, Any], reference: dict[str, Any]) -> None:
    for part, want in reference.items():
        have = got[part]
        if part == "dead":
            assert have == want, (
                f"dead letters: missing {sorted(set(want) - set(have))[:3]}, "
                f"extra {sorted(set(have) - set(want))[:3]}, "
                f"twice {[k[:2] for k, n in have.items() if n > 1][:3]}"
            )
            continue
        assert len(have) == len(want), f"{part}: {len(have)} != {len(want)}"
        assert have == want, next(
            f"{part}: first difference {a} != {b}"
            for a, b in zip(have, want, strict=True)
            if a != b
        )


def reference_of(trial: Trial) -> dict[str, Any]:
    trial.to_end()
    ref = trial.snapshot()
    assert ref["rows"] and ref["dead"]
    assert ref.get("states", True), "no subscription state read back (its Redis key prefix?)"
    assert all(n == 1 for n in ref["dead"].values())
    return ref


# -- stores ---------------------------------------------------------------------------------------


@pytest.fixture
def private_pg(pg_url: str) -> Iterator[Any]:
    """A factory of fresh PostgreSQL databases next to the test database (dropped at the end):
    each run of the example uses its default table names and its run lock."""
    created: list[str] = []
    base, _, _ = pg_url.rpartition("/")

    def admin(sql: str) -> None:
        conn = psycopg2.connect(pg_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def make() -> str:
        name = f"squall_crash_{uuid.uuid4().hex[:10]}"
        admin(f"create database {name}")
        created.append(name)
        return f"{base}/{name}"

    yield make
    for name in created:
        admin(f"drop database if exists {name} with (force)")


def sqlite_stores(folder: Path) -> Stores:
    url = f"sqlite:///{folder / 'warehouse.db'}"
    return Stores(url, url, folder)


# -- (a) SQLite, (b) PostgreSQL, (c) PostgreSQL + Redis -----------------------------------------------


def test_sqlite_killed_at_steps_of_the_commit_sequence_and_signalled(tmp_path: Path):
    """One trial: SIGKILL after the dead letters and before COMMIT, SIGINT and SIGTERM (the
    graceful stop: the batch in flight is finished, exit 130), then a run to the end."""
    reference = reference_of(Trial(tmp_path, "topology.yaml", sqlite_stores(tmp_path)))
    folder = tmp_path / "trial"
    folder.mkdir()
    trial = Trial(tmp_path, "topology.yaml", sqlite_stores(folder))
    for point in ("dead_letters:3", "in_tx:6"):
        trial.crash(point)

    done = trial.signal_when(signal.SIGINT, "events", 900)
    assert done.returncode == 130, done.stderr[-2000:]
    # The signal lands in a batch (finished and committed) or, between two, in the file spout's
    # read (given up, no batch being in flight): whole batches committed either way.
    assert (
        "interrupt: finishing the batch in flight" in done.stderr
        or "interrupt: stopping (waiting for input, no batch in flight)" in done.stderr
    ), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    partial = trial.snapshot()["rows"]
    assert 900 <= len(partial) < len(reference["rows"])
    # each row committed before the stop is the uninterrupted run's row, enriched alike
    assert set(partial) <= set(reference["rows"])

    done = trial.signal_when(signal.SIGTERM, "events", 1800)
    assert done.returncode == 130, done.stderr[-2000:]  # a service manager's stop: as Ctrl-C
    assert (
        "SIGTERM: finishing the batch in flight" in done.stderr
        or "SIGTERM: stopping (waiting for input, no batch in flight)" in done.stderr
    ), done.stderr[-2000:]
    assert set(trial.snapshot()["rows"]) <= set(reference["rows"])
    trial.to_end()
    assert_same(trial.snapshot(), reference)


def test_postgres_killed_inside_and_after_the_transaction(tmp_path: Path, private_pg):
    url = private_pg()
    reference = reference_of(Trial(tmp_path, "topology.yaml", Stores(url, url, tmp_path)))
    url = private_pg()
    trial = Trial(tmp_path, "topology.yaml", Stores(url, url, tmp_path))
    for point in ("in_tx:5", "after_tx:3"):
        trial.crash(point)
    trial.to_end()
    assert_same(trial.snapshot(), reference)


def test_postgres_rows_and_redis_state_killed_between_them(
    tmp_path: Path, private_pg, redis_url: str
):
    """No shared database: the rows commit first, the Redis state after them. A kill between the
    two (``after_tx``) leaves rows whose state was not written; the replay must write it and
    enrich nothing differently."""
    first = Stores(private_pg(), redis_url, tmp_path)
    second = Stores(private_pg(), redis_url, tmp_path)
    try:
        reference = reference_of(Trial(tmp_path, "topology.yaml", first))
        trial = Trial(tmp_path, "topology.yaml", second)
        for point in ("after_tx:4", "state:8"):
            trial.crash(point)
        trial.to_end()
        assert_same(trial.snapshot(), reference)
    finally:
        first.clear_redis()
        second.clear_redis()


def test_window_results_after_kills(tmp_path: Path, private_pg):
    def trial_on(url: str) -> Trial:
        trial = Trial(tmp_path, "minutely_topology.yaml", Stores(url, url, tmp_path))
        subprocess.run(
            [sys.executable, "apps.py"],
            cwd=trial.folder,
            env=trial.env,
            check=True,
            capture_output=True,
        )
        return trial

    reference = reference_of(trial_on(private_pg()))
    trial = trial_on(private_pg())
    for point in ("in_tx:7", "after_batch:12"):
        trial.crash(point)
    trial.to_end()
    assert_same(trial.snapshot(), reference)
