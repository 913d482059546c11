"""kill -9 in the middle of a run: the restart neither loses nor duplicates (checkpoints ride in the warehouse transaction)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: crash
resources:
  warehouse: {{url: "{url}"}}
spout:
  type: kinesis
  stream: {stream}
  endpoint_url: {endpoint}
  poll_interval: 0.05
  idle_exit: 1
settings: {{batch_size: 50}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
sinks:
  - id: rows
    type: warehouse
    resource: warehouse
    table: {table}
    columns: {{n: {{path: n, type: integer}}, shard: meta.shard_id, seq: meta.sequence_number}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def put(kinesis, stream: str, docs: list) -> None:
    for i in range(0, len(docs), 500):
        entries = [
            {
                "Data": d if isinstance(d, bytes) else json.dumps(d).encode(),
                "PartitionKey": f"user-{j % 97}",
            }
            for j, d in enumerate(docs[i : i + 500], start=i)
        ]
        assert kinesis.put_records(StreamName=stream, Records=entries)["FailedRecordCount"] == 0


class Warehouse:
    """The table the topology writes, on SQLite (a file) or on the real PostgreSQL."""

    def __init__(self, kind: str, tmp_path: Path, pg_url: str | None, table: str):
        self.kind, self.table = kind, table
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'w.db'}"
            self.connect = lambda: sqlite3.connect(tmp_path / "w.db")
        else:
            import psycopg2

            self.url = pg_url
            self.connect = lambda: psycopg2.connect(
                pg_url.replace("postgresql+psycopg2", "postgresql")
            )

    def query(self, sql: str) -> tuple:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetchone()
        finally:
            conn.close()

    def rows(self) -> int:
        try:
            return self.query(f"select count(*) from {self.table}")[0]
        except Exception:  # not created yet
            return 0

    def settle(self) -> None:
        """After a kill -9 of the client, PostgreSQL may still be finishing a COMMIT it received:
        wait until no other session is working in this database before counting rows."""
        if self.kind != "postgres":
            return
        deadline = time.monotonic() + 30
        busy = (
            "select count(*) from pg_stat_activity where datname = current_database() "
            "and pid <> pg_backend_pid() and state in ('active', 'idle in transaction')"
        )
        while self.query(busy)[0] and time.monotonic() < deadline:
            time.sleep(0.05)

    def drop(self) -> None:
        if self.kind == "postgres":
            conn = self.connect()
            conn.autocommit = True
            conn.cursor().execute(f"drop table if exists {self.table}")
            conn.close()


def run(topology: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(topology)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, tmp_path: Path, unique_name: str):
    pg_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    w = Warehouse(request.param, tmp_path, pg_url, unique_name)
    yield w
    w.drop()


def test_kill_9_mid_run_then_restart_commits_each_event_exactly_once(
    kinesis, kinesis_mock, make_stream, tmp_path: Path, warehouse: Warehouse
):
    stream = make_stream(2, prefix="crash")
    valid = [{"id": f"e{i}", "n": i} for i in range(3000)]
    docs: list = []
    for i, d in enumerate(valid):
        docs.append(d)
        if i % 300 == 0:
            docs.append(b"{broken")
    put(kinesis, stream, docs)
    bad = len(docs) - len(valid)
    dlq = tmp_path / "dlq.jsonl"
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        TOPOLOGY.format(
            url=warehouse.url,
            table=warehouse.table,
            dlq=dlq,
            stream=stream,
            endpoint=kinesis_mock.endpoint,
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    first = run(topology, env)
    deadline = time.monotonic() + 60
    while warehouse.rows() < 600 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1][-2000:]
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # no cleanup, no final checkpoint
    first.communicate()
    warehouse.settle()
    after_crash = warehouse.rows()
    assert 0 < after_crash < len(valid)

    second = run(topology, env)
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err[-3000:]
    assert warehouse.query(f"select count(*), count(distinct event_id) from {warehouse.table}") == (
        3000,
        3000,
    )
    # Rows and checkpoints commit together, so the restart redid no committed batch: it committed
    # exactly the events the first run had not.
    committed = int(re.search(r"committed ([\d,]+)", err).group(1).replace(",", ""))
    assert committed == len(valid) - after_crash
    dead = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert len(dead) == bad and len({d["event_id"] for d in dead}) == bad
