"""kill -9 at random moments under a lookup bolt and an upsert sink: the results table ends exactly
as one uninterrupted delivery would leave it (rows and checkpoints commit in one transaction)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: upsert-crash
resources:
  warehouse: {{url: "{url}"}}
spout:
  type: kinesis
  stream: {stream}
  endpoint_url: {endpoint}
  poll_interval: 0.05
  idle_exit: 3
settings: {{batch_size: 25}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - id: app
    type: lookup
    key: app
    target: meta_app
    source: {{type: sql, resource: warehouse, table: {apps}, key_columns: [app_id], columns: [name]}}
sinks:
  - id: latest
    type: warehouse
    resource: warehouse
    table: {table}
    mode: upsert
    key: [shard, app]
    columns:
      shard: meta.shard_id
      app: app
      app_name: meta_app.name
      last_n: {{path: n, type: integer}}
      last_seq: meta.sequence_number
"""
APPS = 40
EVENTS = 3000


def query(dsn: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    except psycopg2.errors.UndefinedTable:
        return []
    finally:
        conn.close()


def test_kill_9_at_random_moments_leaves_the_upserted_results_of_one_delivery(
    kinesis, kinesis_mock, make_stream, tmp_path: Path, pg_url: str, unique_name: str
):
    dsn = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    apps, table = f"{unique_name}_apps", f"{unique_name}_latest"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE TABLE "{apps}" (app_id text PRIMARY KEY, name text)')
        cur.executemany(
            f'INSERT INTO "{apps}" VALUES (%s, %s)',
            [(f"a{i}", f"App {i}") for i in range(APPS - 3)],
        )
    try:
        stream = make_stream(2, prefix="upsert")
        expected: dict[tuple[str, str], tuple] = {}
        rng = random.Random(19)
        for start in range(0, EVENTS, 500):
            docs = [
                {"id": f"e{i}", "app": f"a{rng.randrange(APPS)}", "n": i}
                for i in range(start, start + 500)
            ]
            answer = kinesis.put_records(
                StreamName=stream,
                Records=[
                    {"Data": json.dumps(d).encode(), "PartitionKey": f"user-{d['n'] % 101}"}
                    for d in docs
                ],
            )
            assert answer["FailedRecordCount"] == 0
            for doc, rec in zip(docs, answer["Records"], strict=True):
                # Per shard, later puts get higher sequence numbers: the last one per app wins.
                key = (rec["ShardId"], doc["app"])
                prev = expected.get(key)
                if prev is None or int(rec["SequenceNumber"]) > int(prev[2]):
                    name = f"App {doc['app'][1:]}" if int(doc["app"][1:]) < APPS - 3 else None
                    expected[key] = (name, doc["n"], rec["SequenceNumber"])
        topology = tmp_path / "topology.yaml"
        topology.write_text(
            TOPOLOGY.format(
                url=pg_url, stream=stream, endpoint=kinesis_mock.endpoint, apps=apps, table=table
            )
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

        def start() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "squall.cli", "run", str(topology)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )

        def progress() -> int:
            """Grows with every committed batch: later events replace rows with larger n."""
            return (query(dsn, f'SELECT coalesce(sum(last_n), 0) FROM "{table}"') or [(0,)])[0][0]

        killed_mid_run = 0
        for _trial in range(3):
            proc = start()
            seen = progress()
            deadline = time.monotonic() + 60
            while progress() <= seen and proc.poll() is None:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.4))  # a random moment after the first commit of this run
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_mid_run += 1
            proc.communicate()
        assert killed_mid_run >= 1
        last = start()
        _, err = last.communicate(timeout=180)
        assert last.returncode == 0, err[-3000:]
        rows = query(dsn, f'SELECT shard, app, app_name, last_n, last_seq FROM "{table}"')
        assert {(s, a): (name, n, seq) for s, a, name, n, seq in rows} == expected
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{apps}", "{table}"')
        conn.close()
