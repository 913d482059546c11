"""The real KCL MultiLangDaemon (Java, KCL 2.5.8) running squall's record processor, end to end.

kinesis-mock and dynalite stand in for Kinesis and DynamoDB on loopback; the daemon leases the
shards, starts `python -m squall.deploy.kcl` per shard, and squall checkpoints after each batch.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from squall.deploy.kcl_daemon import KclSettings, daemon_command, jars_dir
from tests.process_group import stop_group

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: kcl-e2e
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns: {{n: {{path: n, type: integer}}, shard: meta.shard_id, seq: meta.sequence_number}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""

LOCAL_PROPS = {
    "failoverTimeMillis": "2000",
    "shardSyncIntervalMillis": "1000",
    "parentShardPollIntervalMillis": "1000",
    "idleTimeBetweenReadsInMillis": "250",
    "shutdownGraceMillis": "10000",
}


def precreate_leases(ddb, kinesis, app: str, stream: str) -> None:
    """Skip the KCL's table-creation poll and its random 1-30 s 'lease table is still empty' wait."""
    ddb.create_table(
        TableName=app,
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=app, WaiterConfig={"Delay": 1})
    for s in kinesis.list_shards(StreamName=stream)["Shards"]:
        ddb.put_item(
            TableName=app,
            Item={
                "leaseKey": {"S": s["ShardId"]},
                "leaseCounter": {"N": "0"},
                "checkpoint": {"S": "TRIM_HORIZON"},
                "checkpointSubSequenceNumber": {"N": "0"},
                "ownerSwitchesSinceCheckpoint": {"N": "0"},
                "startingHashKey": {"S": s["HashKeyRange"]["StartingHashKey"]},
                "endingHashKey": {"S": s["HashKeyRange"]["EndingHashKey"]},
            },
        )


def put(kinesis, stream: str, docs: list) -> dict[str, int]:
    """Put the documents; returns the last sequence number written per shard."""
    last: dict[str, int] = {}
    for i in range(0, len(docs), 100):
        chunk = docs[i : i + 100]
        entries = [
            {
                "Data": d if isinstance(d, bytes) else json.dumps(d).encode(),
                "PartitionKey": f"pk-{j}",
            }
            for j, d in enumerate(chunk)
        ]
        answer = kinesis.put_records(StreamName=stream, Records=entries)
        assert answer["FailedRecordCount"] == 0
        for r in answer["Records"]:
            last[r["ShardId"]] = max(last.get(r["ShardId"], 0), int(r["SequenceNumber"]))
    return last


def wait_checkpoints(dynamodb, app: str, last: dict[str, int], proc, tmp_path, worker) -> None:
    """Wait until every shard's lease is checkpointed at or past ``last`` (the positive marker
    that the worker has processed, dead-lettered and committed everything up to there)."""
    deadline = time.monotonic() + 60
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"{worker}.log").read_text()[-3000:]
        items = dynamodb.scan(TableName=app)["Items"]
        seen = {it["leaseKey"]["S"]: it.get("checkpoint", {}).get("S", "") for it in items}
        if all(
            seen.get(shard, "").isdigit() and int(seen[shard]) >= seq for shard, seq in last.items()
        ):
            return
        time.sleep(0.5)
    pytest.fail(
        f"checkpoints {seen} never reached {last}:\n"
        + (tmp_path / f"{worker}.log").read_text()[-3000:]
    )


def start_daemon(
    tmp_path: Path, topology: Path, stream: str, app: str, kinesis_mock, dynalite, worker: str
):
    if not shutil.which("java"):
        pytest.fail("java is needed for the KCL MultiLangDaemon")
    settings = KclSettings(
        topology,
        stream,
        app,
        kinesis_endpoint=kinesis_mock.endpoint,
        dynamodb_endpoint=dynalite.endpoint,
        metrics=False,
        worker_id=worker,
        extra=LOCAL_PROPS,
    )
    props = tmp_path / f"{worker}.properties"
    props.write_text(settings.properties())
    log = open(tmp_path / f"{worker}.log", "ab")  # noqa: SIM115 - closed with the process
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    proc = subprocess.Popen(
        daemon_command(props, jars_dir()),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return proc, log


def stop(proc, log) -> None:
    stop_group(proc, 20)
    log.close()


def wait_rows(db: Path, n: int, proc, tmp_path: Path, worker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"{worker}.log").read_text()[-3000:]
        try:
            count = sqlite3.connect(db).execute("select count(*) from events").fetchone()[0]
        except sqlite3.OperationalError:
            count = -1
        if count >= n:
            return
        time.sleep(0.5)
    pytest.fail(
        f"{count} of {n} rows after {timeout}s:\n"
        + (tmp_path / f"{worker}.log").read_text()[-3000:]
    )


def test_kcl_daemon_runs_the_topology_checkpoints_and_resumes(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    stream = make_stream(2, prefix="kcl")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)
    db, dlq = tmp_path / "w.db", tmp_path / "dlq.jsonl"
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(db=db, dlq=dlq))

    first = [{"id": f"a{i}", "n": i} for i in range(150)] + [b"not json"] * 5
    put(kinesis, stream, first)
    proc, log = start_daemon(tmp_path, topology, stream, app, kinesis_mock, dynalite, "w1")
    try:
        wait_rows(db, 150, proc, tmp_path, "w1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not dlq.exists() or len(dlq.read_text().splitlines()) < 5
        ):
            time.sleep(0.5)
    finally:
        stop(proc, log)
    assert len(dlq.read_text().splitlines()) == 5
    leases = dynamodb.scan(TableName=app)["Items"]
    checkpoints = {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in leases}
    assert all(cp.isdigit() for cp in checkpoints.values()), (
        checkpoints
    )  # a sequence number, not TRIM_HORIZON

    # The restarted worker writes dead letters to a new file: a replay of the first run's bad
    # records (before the checkpoints) would show up there.
    dlq2 = tmp_path / "dlq2.jsonl"
    topology2 = tmp_path / "topology2.yaml"
    topology2.write_text(TOPOLOGY.format(db=db, dlq=dlq2))
    last = put(
        kinesis, stream, [{"id": f"b{i}", "n": 1000 + i} for i in range(50)] + [b"also not json"]
    )
    proc, log = start_daemon(tmp_path, topology2, stream, app, kinesis_mock, dynalite, "w2")
    try:
        wait_rows(db, 200, proc, tmp_path, "w2")
        # Records are processed in order per shard: once every shard is checkpointed past the
        # new records, a replay of the first run's records would already be in rows and dlq2.
        wait_checkpoints(dynamodb, app, last, proc, tmp_path, "w2")
    finally:
        stop(proc, log)
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*), count(distinct event_id) from events").fetchone() == (
        200,
        200,
    )
    assert len(dlq.read_text().splitlines()) == 5
    [again] = [json.loads(line) for line in dlq2.read_text().splitlines()]
    assert (
        again["record"] == "also not json"
    )  # only the new bad record: the old ones were not replayed
