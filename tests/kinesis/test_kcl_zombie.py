"""A KCL worker whose lease was taken while its batch waited for a dependency must not write it.

The real KCL 2.5.8 daemon on kinesis-mock and dynalite. The daemon renews its leases while a
record processor is busy, but another worker joining the fleet steals leases to balance them,
and nothing tells a processor blocked in ``processRecords`` (the multilang protocol has no message
for it; a checkpoint at the position already stored is a no-op that checks nothing). The old
processor went on retrying its batch and, once its dependency was back, committed it *after* the
new owner had committed that batch and the next: an upsert table went back to older rows
(a non-idempotent sink — a push notification — sends again).

Each worker's outage is a file of its own (``OUTAGE_FLAG``), so the order is the test's: the new
owner commits first, the old one's dependency comes back later.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from squall.bolts.base import Bolt, Output
from squall.errors import TransientError
from tests.kinesis.test_kcl_daemon import precreate_leases
from tests.kinesis.test_kcl_fleet import Worker, owners, stop_all, wait_for

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: kcl-zombie
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: outage, type: "tests.kinesis.test_kcl_zombie:Outage"}}
sinks:
  - id: latest
    type: warehouse
    resource: db
    table: latest
    mode: upsert
    key: [pk]
    columns: {{pk: pk, n: {{path: n, type: integer}}, shard: meta.shard_id}}
"""


class Outage(Bolt):
    """A dependency that is down while the file named by ``$OUTAGE_FLAG`` exists."""

    def process(self, batch):
        if os.path.exists(os.environ["OUTAGE_FLAG"]):
            raise TransientError("the dependency is down (test outage)")
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
        return out


def put(kinesis, stream: str, n: int, pks: list[str]) -> dict[str, str]:
    """One record per key with value ``n``; returns key -> shard."""
    resp = kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": orjson.dumps({"pk": pk, "n": n}), "PartitionKey": pk} for pk in pks],
    )
    assert resp["FailedRecordCount"] == 0
    return {pk: r["ShardId"] for pk, r in zip(pks, resp["Records"], strict=True)}


def latest(db: Path) -> dict[str, int]:
    try:
        return dict(sqlite3.connect(db).execute("select pk, n from latest").fetchall())
    except sqlite3.OperationalError:
        return {}


def test_a_processor_whose_lease_was_taken_during_an_outage_does_not_write_its_batch(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite, monkeypatch
):
    stream = make_stream(2, prefix="zomb")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)
    db = tmp_path / "w.db"
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(db=db))
    pks = [f"k{i}" for i in range(40)]
    shard_of = put(kinesis, stream, 1, pks)
    assert len(set(shard_of.values())) == 2
    down = {w: tmp_path / f"{w}.down" for w in ("w1", "w2")}
    for flag in down.values():
        flag.touch()
    args = (tmp_path, topology, stream, app, kinesis_mock, dynalite)
    monkeypatch.setenv("OUTAGE_FLAG", str(down["w1"]))
    w1 = Worker(*args, "w1")
    workers = [w1]
    try:
        wait_for(lambda: w1.log().count("retrying the batch") >= 2, "w1 waiting on both", workers)
        monkeypatch.setenv("OUTAGE_FLAG", str(down["w2"]))
        w2 = Worker(*args, "w2")
        workers.append(w2)
        wait_for(lambda: "w2" in owners(dynamodb, app).values(), "w2 taking a lease", workers)
        [taken] = [s for s, owner in owners(dynamodb, app).items() if owner == "w2"]
        keys = [pk for pk, shard in shard_of.items() if shard == taken]

        down["w2"].unlink()  # the new owner's dependency comes back: it commits 1, then 2
        wait_for(lambda: all(latest(db).get(pk) == 1 for pk in keys), "w2 writing 1", workers)
        put(kinesis, stream, 2, pks)
        wait_for(lambda: all(latest(db).get(pk) == 2 for pk in keys), "w2 writing 2", workers)

        down["w1"].unlink()  # then the old owner's
        wait_for(lambda: f"shard {taken}: lease taken over" in w1.log(), "w1 giving up", workers)
        wait_for(lambda: latest(db) == dict.fromkeys(pks, 2), "every key at 2", workers)
    finally:
        stop_all(workers)
    # before: the keys of the taken shard were back at 1 (w1's batch, committed last)
    assert latest(db) == dict.fromkeys(pks, 2)
