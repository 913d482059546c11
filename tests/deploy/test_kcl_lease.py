"""A record processor waiting to retry a batch reads its lease's owner first (``kcl_lease``).

End to end with the real daemon: tests/kinesis/test_kcl_zombie.py."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from squall.deploy.kcl import RecordProcessor
from squall.deploy.kcl_daemon import KclSettings
from squall.deploy.kcl_lease import LeaseProbe, LeaseTable
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

TOPOLOGY = """
name: kcl-lease
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: 3}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""


def test_a_retry_is_given_up_once_another_worker_holds_the_lease(tmp_path: Path):
    owners = iter(["w1", "w2"])  # held at the first retry, taken before the second
    asked: list[str] = []

    def held(shard: str) -> bool:
        asked.append(shard)
        return next(owners) == "w1"

    slept: list[float] = []
    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(engine, stream="s", sleep=slept.append, lease_held=held)
    cp = KclCheckpointer()
    kcl_initialize().dispatch(cp, processor)
    kcl_process_records([{"n": 1}]).dispatch(cp, processor)  # reported done, not committed
    assert slept == [1.0, 2.0] and asked == ["shardId-000000000001"] * 2
    assert processor.lost and cp.calls == []
    kcl_process_records([{"n": 2}], start=200).dispatch(cp, processor)  # until leaseLost comes
    rows = sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone()
    assert rows == (0,) and cp.calls == []


class Table:
    def __init__(self, answer):
        self.answer = answer
        self.calls: list[dict] = []

    def get_item(self, **kwargs):
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_probe_reads_the_lease_owner_and_never_stops_a_retry_on_doubt():
    lease = LeaseTable("app", "w1")

    def held(answer) -> bool:
        return LeaseProbe(lease, Table(answer)).held("shardId-000000000001")

    assert held({"Item": {"leaseKey": {"S": "s"}, "leaseOwner": {"S": "w1"}}})
    assert not held({"Item": {"leaseKey": {"S": "s"}, "leaseOwner": {"S": "w2"}}})
    assert not held({"Item": {"leaseKey": {"S": "s"}}})  # released
    assert held({})  # no such lease: not the KCL's table
    assert held(ConnectionError("DynamoDB unreachable"))
    table = Table({})
    LeaseProbe(lease, table).held("shardId-000000000001")
    assert table.calls == [
        {
            "TableName": "app",
            "Key": {"leaseKey": {"S": "shardId-000000000001"}},
            "ConsistentRead": True,
            "ProjectionExpression": "leaseKey, leaseOwner",
        }
    ]


def test_squall_kcl_tells_the_processor_its_lease_table(tmp_path: Path):
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    settings = KclSettings(
        topology, "s", "app", worker_id="host a:1", dynamodb_endpoint="http://127.0.0.1:4567"
    )
    [line] = [x for x in settings.properties().splitlines() if x.startswith("executableName")]
    words = line.split(" = ", 1)[1].split(" ")  # as the KCL splits it
    assert words[1:5] == ["-m", "squall.deploy.kcl", str(topology.resolve()), "s"]
    rest, lease = LeaseTable.from_args(words[3:])
    assert rest == [str(topology.resolve()), "s"]
    assert lease == LeaseTable("app", "host a:1", "us-east-1", "http://127.0.0.1:4567")
    assert LeaseTable.from_args(LeaseTable("app", "w1").args()) == ([], LeaseTable("app", "w1"))
    assert LeaseTable.from_args(["t.yaml", "s"]) == (["t.yaml", "s"], None)


def test_the_lease_table_is_the_one_the_daemon_uses_with_set_properties(tmp_path: Path):
    # ``squall kcl --set workerId=…`` (or tableName, regionName, dynamoDBEndpoint): the daemon
    # writes that worker id as ``leaseOwner``; a probe asking for another id finds every lease
    # "another's" and a healthy worker gives up each batch it retries, then stalls the shard.
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))

    def lease_of(**extra: str) -> tuple[LeaseTable | None, dict[str, str]]:
        settings = KclSettings(topology, "s", "app", worker_id="w1", extra=extra)
        props = dict(x.split(" = ", 1) for x in settings.properties().splitlines())
        words = props["executableName"].split(" ")
        return LeaseTable.from_args(words[3:])[1], props

    assert lease_of()[0] == LeaseTable("app", "w1", "us-east-1")
    lease, props = lease_of(
        workerId="w9",
        tableName="leases",
        regionName="eu-west-1",
        dynamoDBEndpoint="http://127.0.0.1:9",
    )
    assert props["workerId"] == "w9"
    assert lease == LeaseTable("leases", "w9", "eu-west-1", "http://127.0.0.1:9")
    lease, props = lease_of(workerIdentifier="w8")
    assert "workerId" not in props and lease == LeaseTable("app", "w8", "us-east-1")
    assert lease_of(executableName="my-processor")[1]["executableName"] == "my-processor"


def java_properties(data: bytes) -> dict[str, str]:
    """A properties file as ``java.util.Properties.load(InputStream)`` reads it (the daemon's
    ``KinesisClientLibConfigurator``): ISO-8859-1, ``\\uXXXX`` and backslash escapes."""

    def unescape(text: str) -> str:
        units = re.sub(
            r"\\u([0-9a-fA-F]{4})|\\(.)",
            lambda m: chr(int(m[1], 16)) if m[1] else m[2],
            text,
        )
        return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le")

    lines = data.decode("iso-8859-1").splitlines()
    return dict(tuple(unescape(part) for part in line.split(" = ", 1)) for line in lines)


def test_a_worker_id_beyond_ascii_is_the_lease_owner_the_processor_looks_for(tmp_path: Path):
    # The daemon reads the properties file as ISO-8859-1: written as UTF-8, ``wörker`` became
    # ``wÃ¶rker``, the leaseOwner the KCL writes, and the processor (comparing ``wörker``) gave up
    # every batch it retried.
    topology = tmp_path / "tö.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    out = tmp_path / "kcl.properties"
    worker = "wörker-☃-𝄞"
    out.write_text(KclSettings(topology, "s", "app", worker_id=worker).properties())
    props = java_properties(out.read_bytes())
    assert props["workerId"] == worker
    words = props["executableName"].split(" ")
    assert words[3] == str(topology.resolve())
    assert LeaseTable.from_args(words[3:])[1] == LeaseTable("app", worker, "us-east-1")


def test_a_probe_that_cannot_check_says_so_once(caplog):
    """A lease table the probe cannot read (or a wrong one) turns the protection off: one WARNING
    naming the table, not one per retry, and never a failed retry."""
    lease = LeaseTable("app-leases", "w1")
    probe = LeaseProbe(lease, Table(ConnectionError("DynamoDB unreachable")))
    with caplog.at_level("WARNING", logger="squall.kcl"):
        assert probe.held("shardId-000000000001") and probe.held("shardId-000000000001")
    [record] = [r for r in caplog.records if r.name == "squall.kcl"]
    assert "app-leases" in record.getMessage() and "zombie protection off" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="squall.kcl"):
        assert LeaseProbe(lease, Table({})).held("shardId-000000000001")
    assert "no such lease" in caplog.records[0].getMessage()


def test_a_retry_given_up_for_a_lease_taken_says_so_and_no_longer_counts_as_retrying(
    tmp_path: Path, caplog
):
    """SRE rehearsal: the warehouse down, a second worker took the lease of a shard whose batch
    the first was retrying. The first gave the batch up as it should, but said so at INFO: at
    the default level its last line for the shard was ERROR "retrying the batch in 30s", and its
    ``squall_retrying_since_timestamp_seconds`` stayed set for the minute the daemon took to end
    the process. Now a WARNING says the batch was given up, and the gauge is back to 0."""
    owners = iter(["w1", "w2"])
    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(
        engine, stream="s", sleep=lambda s: None, lease_held=lambda shard: next(owners) == "w1"
    )
    settled: list[str | None] = []
    processor.metrics.settled = settled.append
    cp = KclCheckpointer()
    kcl_initialize().dispatch(cp, processor)
    caplog.set_level("WARNING", logger="squall.kcl")
    kcl_process_records([{"n": 1}]).dispatch(cp, processor)
    assert processor.lost and cp.calls == []
    [given_up] = [r for r in caplog.records if "lease taken over" in r.getMessage()]
    assert given_up.levelname == "WARNING"
    assert "given up, not committed here" in given_up.getMessage()
    assert settled == ["shardId-000000000001"]
