"""`squall kcl` workers as a fleet, with the real KCL 2.5.8 MultiLangDaemon on kinesis-mock and dynalite.

- two workers on four shards, kill -9 of one: the other takes its leases over, every record lands
  exactly once, and a SIGTERM then stops the survivor gracefully (final checkpoints);
- a split in the middle of an aggregated `squall produce` under a running worker: every record
  arrives, exactly once, parent before child for every key; the polling spout reads them all too.

Short lease settings come through `--set`, as an operator would pass them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from squall.deploy.produce import produce_file
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.kinesis.kinesis_helpers import consume, make_spout, split_shard
from tests.kinesis.test_kcl_daemon import precreate_leases
from tests.kinesis.test_produce import write_lines

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = """
name: kcl-fleet
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json{event_id}}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns: {{n: {{path: n, type: integer}}, pk: pk, shard: meta.shard_id}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""
SHORT_LEASES = [
    "failoverTimeMillis=2000",
    "shardSyncIntervalMillis=1000",
    "parentShardPollIntervalMillis=1000",
    "idleTimeBetweenReadsInMillis=250",
    "shutdownGraceMillis=10000",
]


class Worker:
    """One `squall -v kcl` process, in a process group of its own (as a shell or systemd starts it)."""

    def __init__(
        self,
        tmp_path: Path,
        topology: Path,
        stream: str,
        app: str,
        kinesis_mock,
        dynalite,
        worker: str,
        *settings: str,
    ):
        self.name, self.log_path = worker, tmp_path / f"{worker}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "squall.cli",
            "-v",
            "kcl",
            str(topology),
            "--stream",
            stream,
            "--application",
            app,
            "--kinesis-endpoint",
            kinesis_mock.endpoint,
            "--dynamodb-endpoint",
            dynalite.endpoint,
            "--no-metrics",
            "--worker-id",
            worker,
        ]
        # ``settings`` replace the SHORT_LEASES of the same key
        given = {kv.split("=", 1)[0] for kv in settings}
        for setting in [
            *(kv for kv in SHORT_LEASES if kv.split("=", 1)[0] not in given),
            *settings,
        ]:
            cmd += ["--set", setting]
        self.tmp = (
            tmp_path / f"{worker}-tmp"
        )  # its private properties directory goes here (even after kill -9)
        self.tmp.mkdir()
        self._terminated = False
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(ROOT),
            "TMPDIR": str(self.tmp),
        }
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM once, without waiting: ``stop_all`` asks every worker before waiting on any."""
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.signal_group(signal.SIGTERM)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def stop_all(workers: list[Worker]) -> None:
    """Stop the workers side by side: each one's graceful shutdown (a few seconds of the KCL's
    waiting) overlaps the others' instead of following them."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.stop()


def rows(db: Path, sql: str = "select count(*) from events") -> int:
    try:
        return sqlite3.connect(db).execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return -1


def wait_for(check, what: str, workers: list[Worker], timeout: float = 90) -> float:
    """Poll ``check()`` until true; returns the seconds it took. Fails with the workers' log tails."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.25)
    pytest.fail(
        f"{what} not reached after {timeout}s\n" + "\n".join(w.log()[-2500:] for w in workers)
    )


def owners(ddb, app: str) -> dict[str, str]:
    """Lease key -> owner, for leases not finished (checkpoint not SHARD_END)."""
    items = ddb.scan(TableName=app, ConsistentRead=True)["Items"]
    return {
        i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S", "")
        for i in items
        if i.get("checkpoint", {}).get("S") != "SHARD_END"
    }


def put_docs(kinesis, stream: str, docs: list[dict]) -> None:
    for i in range(0, len(docs), 250):
        resp = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": orjson.dumps(d), "PartitionKey": d["pk"]} for d in docs[i : i + 250]],
        )
        assert resp["FailedRecordCount"] == 0


def test_two_workers_kill_one_and_the_other_takes_over_exactly_once(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    stream = make_stream(4, prefix="fleet")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)
    db = tmp_path / "w.db"
    topology = tmp_path / "same.yaml"
    topology.write_text(TOPOLOGY.format(db=db, dlq=tmp_path / "dlq.jsonl", event_id=""))
    docs = [{"pk": f"k{i % 97}", "n": i} for i in range(4000)]
    put_docs(kinesis, stream, docs[:2000])
    w1 = Worker(tmp_path, topology, stream, app, kinesis_mock, dynalite, "w1")
    w2 = Worker(tmp_path, topology, stream, app, kinesis_mock, dynalite, "w2")
    workers = [w1, w2]
    try:
        wait_for(
            lambda: set(owners(dynamodb, app).values()) == {"w1", "w2"},
            "both workers holding leases",
            workers,
        )
        assert not list(tmp_path.glob("*.properties")), (
            "properties files belong in a private directory"
        )
        for w in workers:
            [private] = w.tmp.glob("squall-kcl-*/*.properties")
            assert f"workerId = {w.name}\n" in private.read_text()
        killed = time.monotonic()
        w1.signal_group(signal.SIGKILL)  # squall kcl dies at once; its daemon goes with it
        w1.proc.wait(10)
        put_docs(kinesis, stream, docs[2000:])
        wait_for(
            lambda: set(owners(dynamodb, app).values()) == {"w2"}, "w2 owning every lease", workers
        )
        print(f"\nlease takeover after kill -9 of w1: {time.monotonic() - killed:.1f}s")
        wait_for(lambda: rows(db) >= 4000, "4000 rows", workers)
        assert w2.stop() == 0
        w1.stop()
    finally:
        for w in workers:
            w.stop()
    assert rows(db) == 4000 and rows(db, "select count(distinct n) from events") == 4000
    log = w2.log()
    assert "shutdown requested; final checkpoint at" in log, log[-3000:]
    assert "Failed to get status message for shutdownRequested" not in log
    assert "Caught exception from action dispatch" not in log
    # leases may move while the two balance (one INFO line each); those released at its own stop did not
    assert "taken over" not in log[log.index("shutdown requested") :]
    checkpoints = [i["checkpoint"]["S"] for i in dynamodb.scan(TableName=app)["Items"]]
    assert all(cp.isdigit() for cp in checkpoints), checkpoints


def test_split_during_an_aggregated_produce_under_the_kcl(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    stream = make_stream(2, prefix="resh")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)  # the parents only: the KCL finds the children
    db = tmp_path / "w.db"
    topology = tmp_path / "t.yaml"
    # event ids from the record positions: a row per delivery, so a duplicate delivery shows
    topology.write_text(TOPOLOGY.format(db=db, dlq=tmp_path / "dlq.jsonl", event_id=""))
    docs = [{"pk": f"k{i % 200}", "n": i} for i in range(3000)]
    path = write_lines(tmp_path / "events.jsonl", docs)
    # The KCL's graceful shutdown waits on the processor of the parent that ended (it answered
    # shardEnded; the daemon still counts it) until the grace runs out, whatever its length: the
    # live shards' final checkpoints take milliseconds, and this test checks none of them (the
    # fleet test above does, with the longer grace).
    worker = Worker(
        tmp_path, topology, stream, app, kinesis_mock, dynalite, "w1", "shutdownGraceMillis=3000"
    )
    try:
        now, rounds = [0.0], []

        def sleep(seconds: float) -> None:
            now[0] += seconds

        def on_progress(done: int, report) -> None:
            rounds.append(report.sent)
            if len(rounds) == 5:
                split_shard(kinesis, stream, "shardId-000000000000")

        report = produce_file(
            path,
            stream=stream,
            endpoint_url=kinesis_mock.endpoint,
            aggregate=True,
            partition_key="pk",
            rate=200,
            sleep=sleep,
            clock=lambda: now[0],
            on_progress=on_progress,
        )
        assert (report.sent, report.failed) == (3000, 0) and report.resent > 0
        wait_for(lambda: rows(db) >= 3000, "3000 rows", [worker])
        assert worker.stop() == 0
    finally:
        worker.stop()
    conn = sqlite3.connect(db)
    delivered, distinct = conn.execute("select count(*), count(distinct n) from events").fetchone()
    assert distinct == 3000
    # The KCL drops the stale aggregates, except while its shard cache does not know a child yet
    # ("Cannot get the shard for this ProcessTask"): then they come too (docs/kinesis.md).
    print(
        f"\nKCL deliveries: {delivered} for 3000 records; {report.resent} records re-sent after the split"
    )
    assert delivered - 3000 <= report.resent
    last: dict[str, int] = {}
    for pk, n in conn.execute(
        "select pk, n from events order by rowid"
    ):  # the order rows were committed
        if n <= last.get(pk, -1) and delivered > 3000:
            continue  # a duplicate delivery of an earlier record
        assert n > last.get(pk, -1), f"key {pk}: {n} committed after {last[pk]}"
        last[pk] = n
    assert (
        len({s for (s,) in conn.execute("select distinct shard from events")}) == 4
    )  # 2 parents, 2 children

    polled = consume(
        make_spout(kinesis_mock.endpoint, stream, store=MemoryCheckpointStore()), max_records=1000
    )
    counts = Counter(json.loads(r.data)["n"] for r in polled)
    assert sorted(counts) == list(range(3000))
    assert sum(counts.values()) - 3000 == report.resent  # the stale aggregates, which the KCL skips
