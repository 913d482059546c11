"""SQS and S3 as sources: the spouts under the local runner and the Lambda triggers, against moto.

A message is deleted (local runner) or left out of ``batchItemFailures`` (Lambda) only when it is
committed, dead-lettered or filtered; FIFO groups stay in order after a failure; S3 lines keep
bucket/key/line as their position, so a retried event yields the same event ids.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from squall.deploy.lambda_consumer import make_handler
from squall.deploy.lambda_sources import S3EventFailed
from squall.deploy.local import LocalRunner
from squall.errors import SquallError
from squall.testing import MemorySink
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.moto_standin import queue_counts, unique

PIPELINE = """
bolts:
  - {{id: decode, type: json}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt', transient_failures: {transient}}}
sinks:
  - {{id: out, type: 'squall.testing:FaultySink', name: {store}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {store}-dlq}}
settings: {{retry: {{attempts: 2, initial_backoff: 0}}}}
"""


def topology_text(spout: str, store: str, transient: int = 0) -> str:
    return f"name: sources\nspout: {spout}\n" + PIPELINE.format(store=store, transient=transient)


@pytest.fixture
def moto(moto_server):
    return moto_server


def test_sqs_spout_deletes_settled_messages_and_leaves_failed_ones_in_the_queue(moto):
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName=unique("in"))["QueueUrl"]
    payloads = [{"n": 0}, {"n": 1, "fail": "bad"}, {"n": 2}, {"n": 3, "sink_fail": True}, {"n": 4}]
    for p in payloads:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(p))
    store = unique("sqs-spout")
    spout = f'{{type: sqs, queue: "{url}", endpoint_url: "{moto.endpoint}", wait_time: 0, visibility_timeout: 30}}'
    report = LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    assert report.counts[Outcome.COMMITTED] == 3 and report.counts[Outcome.DEAD_LETTERED] == 1
    assert report.counts[Outcome.FAILED] == 1
    assert sorted(ev.value["n"] for ev in MemorySink.stores[store]) == [0, 2, 4]
    assert [ev.value["n"] for ev in MemorySink.stores[f"{store}-dlq"]] == [1]
    assert (
        queue_counts(sqs, url) == 1
    )  # only the failed message is still there (hidden until it comes back)


def sqs_lambda_event(messages: list[tuple[str, dict, str | None]], queue: str = "orders") -> dict:
    """An SQS event-source-mapping event: (message id, payload, FIFO group or None) per message."""
    records = []
    for i, (mid, payload, group) in enumerate(messages):
        attrs = {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1762192800123",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1762192800200",
        }
        if group is not None:
            attrs.update(
                MessageGroupId=group,
                SequenceNumber=str(18849496460467696128 + i),
                MessageDeduplicationId=mid,
            )
        records.append(
            {
                "messageId": mid,
                "receiptHandle": f"rh-{mid}",
                "body": json.dumps(payload),
                "attributes": attrs,
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def write_topology(tmp_path: Path, spout: str, store: str, transient: int = 0) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(topology_text(spout, store, transient))
    return path


def test_lambda_sqs_trigger_reports_unsettled_message_ids(tmp_path: Path):
    store = unique("lsqs")
    handler = make_handler(write_topology(tmp_path, "{type: stdin}", store))
    ids = [f"059f36b4-87a3-44ab-83d2-66197547553{i}" for i in range(4)]
    event = sqs_lambda_event(
        [
            (ids[0], {"n": 0}, None),
            (ids[1], {"n": 1, "sink_fail": True}, None),
            (ids[2], {"n": 2, "fail": "bad"}, None),
            (ids[3], {"n": 3}, None),
        ]
    )
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": ids[1]}]}
    first_ids = [ev.event_id for ev in MemorySink.stores[store]]
    handler(event, None)  # Lambda delivers the same messages again: the same event ids
    assert [ev.event_id for ev in MemorySink.stores[store]] == first_ids * 2


def test_an_sqs_event_whose_record_has_no_message_id_fails_clearly_and_processes_nothing(
    tmp_path: Path,
):
    store = unique("lnoid")
    handler = make_handler(write_topology(tmp_path, "{type: stdin}", store))
    good = sqs_lambda_event([("059f36b4-87a3-44ab-83d2-661975475530", {"n": 0}, None)])
    event = {"Records": [*good["Records"], {"eventSource": "aws:sqs", "body": "{}"}]}
    with pytest.raises(
        SquallError, match=r"record 1 has no messageId \(it has \['body', 'eventSource'\]\)"
    ):
        handler(event, None)
    assert MemorySink.stores.get(store, []) == []


def test_lambda_sqs_trigger_fifo_reports_the_rest_of_a_group_after_its_failure(tmp_path: Path):
    store = unique("lfifo")
    handler = make_handler(write_topology(tmp_path, "{type: stdin}", store))
    event = sqs_lambda_event(
        [
            ("a1", {"n": 1}, "g1"),
            ("b1", {"n": 2}, "g2"),
            ("a2", {"n": 3, "sink_fail": True}, "g1"),
            ("b2", {"n": 4}, "g2"),
            ("a3", {"n": 5}, "g1"),
        ],
        queue="orders.fifo",
    )
    assert handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": "a2"}, {"itemIdentifier": "a3"}]
    }


def test_lambda_sqs_trigger_reports_every_message_when_a_dependency_stays_down(tmp_path: Path):
    handler = make_handler(write_topology(tmp_path, "{type: stdin}", unique("ldown"), transient=5))
    event = sqs_lambda_event([("m1", {"n": 1}, None), ("m2", {"n": 2}, None)])
    assert handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]
    }


def put_lines(s3, bucket: str, key: str, payloads: list, *, gz: bool) -> None:
    body = b"".join(orjson.dumps(p) + b"\n" for p in payloads)
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body) if gz else body)


def test_s3_spout_reads_every_object_line_with_key_and_line_as_position(moto):
    s3 = moto.client("s3")
    bucket = unique("logs")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/2026/a.jsonl.gz", [{"n": 1}, {"n": 2}], gz=True)
    put_lines(s3, bucket, "in/2026/b.jsonl", [{"n": 3}], gz=False)
    put_lines(s3, bucket, "other/c.jsonl", [{"n": 99}], gz=False)
    store = unique("s3spout")
    spout = f'{{type: s3, bucket: {bucket}, prefix: in/, endpoint_url: "{moto.endpoint}"}}'
    report = LocalRunner(load_text(topology_text(spout, store)), batch_size=2).run()
    assert report.counts[Outcome.COMMITTED] == 3
    got = [
        (ev.meta.stream, ev.meta.shard_id, ev.meta.sequence_number, ev.value["n"])
        for ev in MemorySink.stores[store]
    ]
    assert got == [
        (bucket, "in/2026/a.jsonl.gz", "1", 1),
        (bucket, "in/2026/a.jsonl.gz", "2", 2),
        (bucket, "in/2026/b.jsonl", "1", 3),
    ]


def s3_lambda_event(bucket: str, key_in_event: str) -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-28T12:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": key_in_event, "size": 10, "sequencer": "0A1B2C3D4E5F678901"},
                },
            }
        ]
    }


def test_lambda_s3_trigger_runs_the_objects_lines_and_raises_so_lambda_retries_a_failure(
    moto, tmp_path: Path
):
    s3 = moto.client("s3")
    bucket = unique("drop")
    s3.create_bucket(Bucket=bucket)
    put_lines(
        s3,
        bucket,
        "incoming/day one.jsonl.gz",
        [{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}],
        gz=True,
    )
    put_lines(
        s3, bucket, "incoming/broken.jsonl", [{"n": 4}, {"n": 5, "sink_fail": True}], gz=False
    )
    store = unique("ls3")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    assert handler(s3_lambda_event(bucket, "incoming/day+one.jsonl.gz"), None) == {
        "objects": 1,
        "records": 3,
        "failed": 0,
        "skipped": 0,
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 3]
    assert [ev.failure.reason for ev in MemorySink.stores[f"{store}-dlq"]] == ["bad"]
    with pytest.raises(
        S3EventFailed, match="broken.jsonl: 1 line\\(s\\) failed, first line 2 in out"
    ):
        handler(s3_lambda_event(bucket, "incoming/broken.jsonl"), None)
    before = [ev.event_id for ev in MemorySink.stores[store]]
    handler(s3_lambda_event(bucket, "incoming/day+one.jsonl.gz"), None)  # a retried event: same ids
    assert [ev.event_id for ev in MemorySink.stores[store]][len(before) :] == before[:2]


def test_settled_follows_batch_order_within_a_group_whatever_the_sequence_numbers():
    from squall.event import Position
    from squall.spouts.sqs import Message, message_record, settled

    msgs = [
        Message("a", "r", "{}", "g1", "30"),
        Message("b", "r", "{}", "g1", "20"),
        Message("c", "r", "{}", "g2", "5"),
        Message("d", "r", "{}", "g1", "10"),
    ]
    records = [message_record("q.fifo", m) for m in msgs]
    # the engine settled g1 up to its 2nd message (sequence 20) and g2 entirely
    assert settled(records, {"group-g1": Position("20"), "group-g2": Position("5")}) == [
        True,
        True,
        True,
        False,
    ]
    assert settled(records, {}) == [False] * 4


def test_an_object_replaced_under_the_same_key_is_written_not_skipped_as_a_replay(
    moto, tmp_path: Path
):
    """S3 event ids derive from bucket, key, line and a digest of the object's bytes up to the
    line: a retried event (same bytes) adds nothing, while a new object under the same key (a
    daily export overwritten, a re-upload with corrections) is new data: its rows are written.
    Ids from bucket, key and line alone made the warehouse's idempotent insert skip them."""
    import sqlite3

    s3 = moto.client("s3")
    bucket = unique("daily")
    s3.create_bucket(Bucket=bucket)
    db = tmp_path / "wh.db"
    (tmp_path / "topology.yaml").write_text(
        f"""name: s3-replace
resources: {{warehouse: {{url: "sqlite:///{db}"}}}}
spout: {{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: rows, type: warehouse, resource: warehouse, table: rows, columns: {{n: {{path: n, type: integer}}}}}}
"""
    )
    handler = make_handler(tmp_path / "topology.yaml")
    put_lines(s3, bucket, "report.jsonl", [{"n": 1}, {"n": 2}], gz=False)
    handler(s3_lambda_event(bucket, "report.jsonl"), None)
    handler(s3_lambda_event(bucket, "report.jsonl"), None)  # Lambda retries the event: nothing new
    put_lines(s3, bucket, "report.jsonl", [{"n": 1}, {"n": 20}, {"n": 30}], gz=True)
    handler(s3_lambda_event(bucket, "report.jsonl"), None)
    with sqlite3.connect(db) as conn:
        got = sorted(n for (n,) in conn.execute("SELECT n FROM rows"))
    # line 1 is the same bytes in both objects (the same record: written once); lines 2-3 differ
    assert got == [1, 2, 20, 30]


def test_s3_object_records_ids_follow_the_content_not_only_the_key_and_line():
    from squall.event import derive_event_id
    from squall.spouts.s3 import object_records

    def ids(body: bytes) -> list[str]:
        return [derive_event_id(r.meta) for r in object_records("b", "k.jsonl", body)]

    first = ids(b'{"n":1}\n{"n":2}\n')
    assert ids(b'{"n":1}\n{"n":2}\n') == first  # the same bytes: a replay, the same ids
    assert ids(gzip.compress(b'{"n":1}\n{"n":2}\n')) == first  # gzip or not: the same lines
    other = ids(b'{"n":1}\n{"n":3}\n{"n":4}\n')
    assert other[0] == first[0] and other[1] != first[1]


def test_s3_object_records_count_their_lines_within_the_object_they_come_from():
    """Line numbers restart with each object: positions compare only within one lineage, which
    an object's content names (the first record's fingerprint): the same for the object read
    again or appended to, another for other content under the same key."""
    from squall.event import lineage
    from squall.spouts.s3 import object_records

    def lineages(body: bytes) -> set[str]:
        return {lineage(r.meta) for r in object_records("b", "k.jsonl", body)}

    first = lineages(b'{"n":1}\n{"n":2}\n')
    assert len(first) == 1
    assert lineages(b'{"n":1}\n{"n":2}\n{"n":3}\n') == first  # appended: the same input
    assert lineages(b'\n{"n":1}\n{"n":2}\n') != first  # other bytes up to its first record
    assert lineages(b'{"n":0}\n{"n":2}\n').isdisjoint(first)
    assert lineages(b'{"n":1}\n') <= first and next(iter(first)).startswith("k.jsonl\x1f")


def corrupt_gzip(payloads: list) -> bytes:
    """A gzip object cut short (a failed multipart upload, a producer killed while writing)."""
    whole = gzip.compress(b"".join(orjson.dumps(p) + b"\n" for p in payloads))
    return whole[: len(whole) - 12]


def test_a_corrupt_gzip_object_is_dead_lettered_and_the_s3_spout_reads_the_next_objects(moto):
    """One bad object used to stop the whole input (``SquallError: truncated or corrupt gzip``):
    it is now one dead letter naming the object and the error, and the next objects are read."""
    s3 = moto.client("s3")
    bucket = unique("corrupt")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/a.jsonl.gz", [{"n": 1}], gz=True)
    s3.put_object(Bucket=bucket, Key="in/b.jsonl.gz", Body=corrupt_gzip([{"n": 2}, {"n": 3}]))
    put_lines(s3, bucket, "in/c.jsonl", [{"n": 4}], gz=False)
    etag = s3.head_object(Bucket=bucket, Key="in/b.jsonl.gz")["ETag"]
    store = unique("s3corrupt")
    spout = f'{{type: s3, bucket: {bucket}, prefix: in/, endpoint_url: "{moto.endpoint}"}}'
    report = LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    assert report.counts[Outcome.COMMITTED] == 2 and report.counts[Outcome.DEAD_LETTERED] == 1
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 4]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.component == "spout"
    reason = dead.failure.reason
    assert f"s3://{bucket}/in/b.jsonl.gz" in reason and f"ETag {etag}" in reason
    assert "truncated or corrupt gzip" in reason and "EOFError" in reason
    assert (dead.meta.shard_id, dead.meta.sequence_number) == ("in/b.jsonl.gz", "0")
    assert orjson.loads(dead.raw) == {  # what an operator needs to re-drive the object
        "bucket": bucket,
        "key": "in/b.jsonl.gz",
        "version_id": None,
        "etag": etag,
        "size": len(corrupt_gzip([{"n": 2}, {"n": 3}])),
        "error": "truncated or corrupt gzip",
    }


def test_a_corrupt_gzip_object_in_an_s3_event_is_dead_lettered_with_its_version(
    moto, tmp_path: Path
):
    """The Lambda S3 trigger: the corrupt object is dead-lettered (with the version id on a
    versioned bucket), the event's other objects run, and the handler does not raise (no retry
    of an object that stays corrupt). The same object again is the same dead letter."""
    s3 = moto.client("s3")
    bucket = unique("corruptv")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    body = bytearray(gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(200))))
    body[len(body) // 2] ^= 0xFF  # a flipped byte in the deflate stream or its CRC
    version = s3.put_object(Bucket=bucket, Key="drop/bad.jsonl.gz", Body=bytes(body))["VersionId"]
    put_lines(s3, bucket, "drop/good.jsonl", [{"n": 7}], gz=False)
    store = unique("ls3corrupt")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    event = s3_lambda_event(bucket, "drop/bad.jsonl.gz")
    event["Records"] += s3_lambda_event(bucket, "drop/good.jsonl")["Records"]
    assert handler(event, None) == {"objects": 2, "records": 2, "failed": 0, "skipped": 0}
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [7]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert f"s3://{bucket}/drop/bad.jsonl.gz, version {version}" in dead.failure.reason
    assert orjson.loads(dead.raw)["version_id"] == version
    handler(s3_lambda_event(bucket, "drop/bad.jsonl.gz"), None)  # a retried event
    again = MemorySink.stores[f"{store}-dlq"][-1]
    assert again.event_id == dead.event_id


def emf_top_documents(out: str) -> list[dict]:
    """The topology-level EMF documents printed on stdout (one per invocation with batches)."""
    docs = [json.loads(x) for x in out.splitlines() if x.startswith('{"_aws"')]
    return [d for d in docs if "Component" not in d and "Topology" in d]


def test_sqs_and_s3_invocations_print_emf_metrics_and_an_invocation_line(
    moto, tmp_path: Path, caplog, capsys
):
    """The consumer handler serves SQS and S3 events too: their batches are recorded like a
    Kinesis slice's (EMF on stdout, one squall.invocation line per batch), so the dead-letter
    and failed-record alarms of `squall package --template` see them. They printed nothing."""
    import logging

    s3 = moto.client("s3")
    bucket = unique("metered")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/a.jsonl", [{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}], gz=False)
    store = unique("lmetered")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    # an s3 spout's function reads SQS messages as S3 notifications: SQS messages need another
    (tmp_path / "sqs").mkdir()
    sqs_handler = make_handler(write_topology(tmp_path / "sqs", "{type: stdin}", store + "-sqs"))
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        handler(s3_lambda_event(bucket, "in/a.jsonl"), None)
        sqs_handler(
            sqs_lambda_event([("m-1", {"n": 4}, None), ("m-2", {"n": 5, "fail": "x"}, None)])
        )
    [s3_doc, sqs_doc] = emf_top_documents(capsys.readouterr().out)
    assert (s3_doc["RecordsCommitted"], s3_doc["RecordsDeadLettered"]) == ([2.0], [1.0])
    assert (sqs_doc["RecordsCommitted"], sqs_doc["RecordsDeadLettered"]) == ([1.0], [1.0])
    lines = [r.fields for r in caplog.records if r.name == "squall.invocation"]
    assert [(f["records"], f["committed"], f["dead_lettered"]) for f in lines] == [
        (3, 2, 1),
        (2, 1, 1),
    ]


def test_an_s3_event_reads_the_object_version_it_names(moto, tmp_path: Path):
    """On a versioned bucket an object overwritten before its first event ran is still read as
    that event names it (`versionId`): reading the key's latest version made both events read
    the second upload, and the first one's lines were never processed, silently."""
    s3 = moto.client("s3")
    bucket = unique("versioned")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    uploads = [
        s3.put_object(Bucket=bucket, Key="in/export.jsonl", Body=body)
        for body in (b'{"n": 1}\n{"n": 2}\n', b'{"n": 3}\n')
    ]
    store = unique("lversion")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    for upload in uploads:
        event = s3_lambda_event(bucket, "in/export.jsonl")
        event["Records"][0]["s3"]["object"]["versionId"] = upload["VersionId"]
        handler(event, None)
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2, 3]


def test_a_version_the_role_may_not_read_is_an_error_naming_the_permission(moto):
    from squall.spouts.s3 import open_object
    from tests.moto_standin import FlakyClient, client_error

    def refuse(kwargs, call):
        raise client_error("AccessDenied", "Access Denied", 403)

    client = FlakyClient(moto.client("s3"), get_object=refuse)
    with pytest.raises(SquallError, match="version v1: AccessDenied .*s3:GetObjectVersion"):
        open_object(client, "bucket", "in/a.jsonl", "v1")


@pytest.mark.parametrize("source", ["s3", "sqs"])
def test_the_young_collection_after_an_s3_or_sqs_slice_does_not_scan_its_events(
    source: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """Between an S3 object's (an SQS event's) slices the process's own thresholds apply; the
    young collection then due ran right after ``Engine.process`` returned, while the slice's
    result still held its events — it scanned them all and collected nothing. A slice is now let
    go first (as the Kinesis consumer's: tests/deploy/test_lambda_consumer.py)."""
    import sqlite3

    from tests.deploy.gc_census import young_collections_between_slices

    payloads = [{"n": i, "pad": ["x"] * 20} for i in range(12)]
    if source == "s3":
        moto = request.getfixturevalue("moto")
        s3 = moto.client("s3")
        bucket = unique("gc")
        s3.create_bucket(Bucket=bucket)
        put_lines(s3, bucket, "big.jsonl", payloads, gz=False)
        spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto.endpoint}"}}'
        event = s3_lambda_event(bucket, "big.jsonl")
        expected = {"objects": 1, "records": 12, "failed": 0, "skipped": 0}
    else:
        spout = "{type: stdin}"
        event = sqs_lambda_event([(f"m{i}", p, None) for i, p in enumerate(payloads)])
        expected = {"batchItemFailures": []}
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        f"name: {source}gc\nspout: {spout}\nsettings: {{lambda_batch_size: 3}}\n"
        "bolts:\n  - {id: decode, type: json}\n"
        "sinks:\n  - {id: rows, type: warehouse, resource: db, table: events,\n"
        "     columns: {n: {path: n, type: integer}}}\n"
        f'resources:\n  db: {{url: "sqlite:///{tmp_path / "w.db"}"}}\n'
    )
    handler = make_handler(topology)
    with young_collections_between_slices() as seen:
        answer = handler(event, None)
    assert answer == expected
    db = sqlite3.connect(tmp_path / "w.db")
    assert [n for (n,) in db.execute("select n from events order by n")] == list(range(12))
    assert seen and set(seen) == {0}, seen


def test_lambda_sqs_trigger_fifo_writes_nothing_of_a_group_after_its_failed_message(tmp_path: Path):
    """A FIFO group's messages after a failed one come again with it (they are named in the
    answer): they were written to the sinks all the same — ahead of the failed message, and then
    again after it (a push sent twice, out of order). They are held back now; other groups and
    the messages before the failure are written."""
    store = unique("lfifo-hold")
    path = tmp_path / "topology.yaml"
    # no dead-letter sink (the queue's redrive policy takes what keeps failing)
    path.write_text(
        "name: fifo-hold\nspout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        "  - {id: faulty, type: 'squall.testing:FaultyBolt'}\n"
        f"sinks:\n  - {{id: out, type: 'squall.testing:MemorySink', name: {store}}}\n"
    )
    handler = make_handler(path)
    event = sqs_lambda_event(
        [
            ("a1", {"n": 1}, "g1"),
            ("b1", {"n": 2}, "g2"),
            ("a2", {"n": 3, "fail": "bad"}, "g1"),
            ("b2", {"n": 4}, "g2"),
            ("a3", {"n": 5}, "g1"),
        ],
        queue="orders.fifo",
    )
    assert handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": "a2"}, {"itemIdentifier": "a3"}]
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2, 4]
