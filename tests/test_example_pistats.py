"""The README's first command: the pistats example on embedded defaults (SQLite, files)."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.child_env import child_env
from tests.conftest import EXAMPLES

SCHEMA_TYPES = {"register", "subscribe", "unsubscribe", "page_view", "click"}


def expected_split(events_file: Path) -> tuple[set[str], int]:
    """Valid message ids of the sample (by the schema's rules, checked by hand here), and the bad count."""
    valid, bad = set(), 0
    for line in gzip.open(events_file, "rt"):
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if (
            isinstance(ev, dict)
            and ev.get("event_type") in SCHEMA_TYPES
            and str(ev.get("timestamp", ""))[:4].isdigit()
            and ev.get("app_id")
        ):
            valid.add(ev["message_id"])
        else:
            bad += 1
    return valid, bad


def sample_events(example: Path) -> list[dict]:
    """The decodable JSON objects of the sample."""
    out = []
    for line in gzip.open(example / "events.jsonl.gz", "rt"):
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


@pytest.fixture
def example(tmp_path: Path) -> Path:
    dst = tmp_path / "pistats"
    shutil.copytree(EXAMPLES / "pistats", dst, ignore=shutil.ignore_patterns("out"))
    return dst


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(HOME=str(cwd)),
        timeout=300,
    )


def test_example_loads_every_valid_event_once_and_dead_letters_the_bad(example: Path):
    valid, bad = expected_split(example / "events.jsonl.gz")
    assert bad > 10 and len(valid) > 2000  # the sample really has both

    first = run_cli("run", "topology.yaml", cwd=example)
    assert first.returncode == 0, first.stderr
    assert "committed" in first.stderr and "decode" in first.stderr  # the summary table

    db = sqlite3.connect(example / "out" / "pistats.db")
    rows = {r[0] for r in db.execute("select event_id from events")}
    assert rows == valid
    rejects = [
        json.loads(line) for line in (example / "out" / "rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == bad
    assert all(
        r["reason"] and r["component"] in ("decode", "validate") and r.get("record")
        for r in rejects
    )

    second = run_cli("run", "topology.yaml", cwd=example)
    assert second.returncode == 0, second.stderr
    assert db.execute("select count(*) from events").fetchone()[0] == len(valid)
    assert len((example / "out" / "rejects.jsonl").read_text().splitlines()) == bad


def test_validate_and_graph_of_the_example(example: Path):
    r = run_cli("validate", "topology.yaml", cwd=example)
    assert r.returncode == 0, r.stderr
    g = run_cli("graph", "topology.yaml", cwd=example)
    assert g.returncode == 0 and g.stdout.startswith("flowchart LR")
    ids = {
        line.split("[", 1)[1].strip('"[]()').split(":")[0]: line.split("[", 1)[0]
        .split("(")[0]
        .strip()
        for line in g.stdout.splitlines()[1:]
        if "[" in line
    }
    assert f"{ids['validate']} -.->|invalid| {ids['rejects']}" in g.stdout
    assert f"{ids['decode']} --> {ids['validate']}" in g.stdout
    d = run_cli("graph", "--format", "dot", "topology.yaml", cwd=example)
    assert d.stdout.startswith('digraph "pistats"') and 'label="decode\\njson"' in d.stdout
    assert f"{ids['decode']} -> {ids['validate']};" in d.stdout


def test_run_with_input_override_and_batch_size(example: Path, tmp_path: Path):
    src = tmp_path / "few.jsonl"
    src.write_text(
        '{"message_id":"m-00000001","event_type":"click","timestamp":"2026-11-03T18:00:00Z","app_id":"a"}\n'
        "not json\n"
    )
    r = run_cli("run", "topology.yaml", "--input", str(src), "--batch-size", "1", cwd=example)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(example / "out" / "pistats.db")
    assert db.execute("select event_type from events").fetchall() == [("click",)]


def test_example_on_postgresql_and_redis(
    example: Path, pg_url: str, redis_url: str, unique_name: str
):
    """The same topology with the warehouse on PostgreSQL and the subscription state in Redis."""
    import psycopg2
    import redis

    valid, bad = expected_split(example / "events.jsonl.gz")
    env = child_env(
        HOME=str(example), WAREHOUSE_URL=pg_url, STATE_URL=redis_url, EVENTS_TABLE=unique_name
    )
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    cache = redis.Redis.from_url(redis_url)
    try:
        for _ in range(2):  # the second run adds nothing
            r = subprocess.run(
                [sys.executable, "-m", "squall.cli", "run", "topology.yaml"],
                capture_output=True,
                text=True,
                cwd=example,
                env=env,
                timeout=300,
            )
            assert r.returncode == 0, r.stderr
            with conn.cursor() as cur:
                cur.execute(f'select event_id from "{unique_name}"')
                assert {row[0] for row in cur.fetchall()} == valid
        assert len((example / "out" / "rejects.jsonl").read_text().splitlines()) == bad
        # the subscription state lives in Redis: one hash per device token that registered or subscribed
        changed = {
            ev["device_token"]
            for ev in sample_events(example)
            if ev.get("message_id") in valid and ev["event_type"] in ("register", "subscribe")
        }
        assert cache.exists(*[f"squall:subscription:{t}" for t in changed]) == len(changed)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'drop table if exists "{unique_name}"')
        conn.close()
        tokens = {ev.get("device_token") for ev in sample_events(example)} - {None}
        cache.delete(*[f"squall:subscription:{t}" for t in tokens])
