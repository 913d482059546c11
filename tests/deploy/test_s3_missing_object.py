"""An object an S3 notification names that is gone: that object's dead letter, not a retry.

An object deleted after its notification (a cleanup job, a retention rule, a user) answered
NoSuchKey (NoSuchVersion for a version), and the event or its SQS message was retried until
Lambda gave it up to the on-failure destination or the queue's dead-letter queue, while nothing
could ever read it. It is now one dead letter naming bucket and key ("deleted after its
notification, or never readable"), the event's other objects go on. An AccessDenied stays a
failure naming the permission: the generated role has ``s3:ListBucket`` on the bucket, so a
missing object answers NoSuchKey and AccessDenied is a real permission problem. Against moto.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from squall.deploy.lambda_consumer import make_handler
from squall.deploy.lambda_sources import handle_s3
from squall.spouts.s3 import ObjectReadError
from squall.testing import MemorySink
from tests.deploy.test_sqs_s3_sources import (
    put_lines,
    s3_lambda_event,
    sqs_lambda_event,
    write_topology,
)
from tests.moto_standin import FlakyClient, client_error, unique

GONE = "the object is not there (deleted after its notification, or never readable)"


def setup(moto_server, tmp_path: Path, name: str, *, versioned: bool = False):
    s3 = moto_server.client("s3")
    bucket = unique(name)
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = unique(name)
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    return s3, bucket, store, make_handler(write_topology(tmp_path, spout, store))


def test_a_deleted_object_is_dead_lettered_and_the_events_other_objects_run(
    moto_server, tmp_path: Path
):
    s3, bucket, store, handler = setup(moto_server, tmp_path, "gone")
    put_lines(s3, bucket, "in/gone.jsonl", [{"n": 1}], gz=False)
    s3.delete_object(Bucket=bucket, Key="in/gone.jsonl")  # after its notification was sent
    put_lines(s3, bucket, "in/here.jsonl", [{"n": 7}], gz=False)
    event = s3_lambda_event(bucket, "in/gone.jsonl")
    event["Records"] += s3_lambda_event(bucket, "in/here.jsonl")["Records"]
    assert handler(event, None) == {"objects": 2, "records": 2, "failed": 0, "skipped": 0}
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [7]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert (
        dead.failure.reason == f"s3://{bucket}/in/gone.jsonl: NoSuchKey: {GONE}; nothing of it read"
    )
    assert orjson.loads(dead.raw) == {
        "bucket": bucket,
        "key": "in/gone.jsonl",
        "version_id": None,
        "etag": None,
        "size": None,
        "error": "NoSuchKey",
    }
    handler(s3_lambda_event(bucket, "in/gone.jsonl"), None)  # a retried event: the same id
    assert MemorySink.stores[f"{store}-dlq"][-1].event_id == dead.event_id


def test_a_deleted_version_names_its_version(moto_server, tmp_path: Path):
    s3, bucket, store, handler = setup(moto_server, tmp_path, "gonev", versioned=True)
    version = s3.put_object(Bucket=bucket, Key="in/a.jsonl", Body=b'{"n": 1}\n')["VersionId"]
    s3.delete_object(Bucket=bucket, Key="in/a.jsonl", VersionId=version)
    event = s3_lambda_event(bucket, "in/a.jsonl")
    event["Records"][0]["s3"]["object"]["versionId"] = version
    assert handler(event, None)["failed"] == 0
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason.startswith(f"s3://{bucket}/in/a.jsonl, version {version}: ")
    assert GONE in dead.failure.reason


def test_through_sqs_the_message_of_a_deleted_object_is_settled(moto_server, tmp_path: Path):
    """Its message is not named in batchItemFailures: the queue does not bring it back until its
    dead-letter queue."""
    s3, bucket, store, handler = setup(moto_server, tmp_path, "goneq")
    put_lines(s3, bucket, "in/here.jsonl", [{"n": 7}], gz=False)
    event = sqs_lambda_event(
        [
            ("m-0", s3_lambda_event(bucket, "in/never.jsonl"), None),
            ("m-1", s3_lambda_event(bucket, "in/here.jsonl"), None),
        ]
    )
    assert handler(event, None) == {"batchItemFailures": []}
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [7]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason.startswith(f"s3://{bucket}/in/never.jsonl: NoSuchKey: {GONE}")


def test_access_denied_stays_a_failure_naming_the_permissions(moto_server, tmp_path: Path):
    """A role without s3:ListBucket is answered AccessDenied for a missing object too: it cannot
    be told from a real permission problem, so the event fails (and is retried)."""
    s3, bucket, store, handler = setup(moto_server, tmp_path, "denied")
    put_lines(s3, bucket, "in/a.jsonl", [{"n": 1}], gz=False)

    def refuse(kwargs, call):
        raise client_error("AccessDenied", "Access Denied", 403)

    client = FlakyClient(s3, get_object=refuse)
    with pytest.raises(ObjectReadError) as err:
        handle_s3(handler.engine, s3_lambda_event(bucket, "in/a.jsonl"), client, batch_size=10)
    assert str(err.value) == (
        f"cannot read s3://{bucket}/in/a.jsonl: AccessDenied (reading needs s3:GetObject; "
        "without s3:ListBucket on the bucket S3 answers a missing object AccessDenied too)"
    )
    assert MemorySink.stores.get(f"{store}-dlq", []) == []


def test_two_uploads_of_one_key_both_gone_are_two_dead_letters(moto_server, tmp_path: Path):
    """On an unversioned bucket the dead letter's event id came from the error code alone: two
    uploads of the same key, both deleted before they were read, were one event id — a dead-letter
    table or a dead letter file's index kept one of them. The notification's sequencer (ordered
    per key) tells them apart; the same notification again is the same event id."""
    s3, bucket, store, handler = setup(moto_server, tmp_path, "twice")
    first = s3_lambda_event(bucket, "in/again.jsonl")
    second = s3_lambda_event(bucket, "in/again.jsonl")
    second["Records"][0]["s3"]["object"]["sequencer"] = "0A1B2C3D4E5F6789FF"
    for event in (first, second, first):
        assert handler(event, None)["failed"] == 0
    ids = [ev.event_id for ev in MemorySink.stores[f"{store}-dlq"]]
    assert len(ids) == 3 and ids[0] != ids[1] and ids[2] == ids[0]


def test_the_local_spout_dead_letters_an_object_deleted_after_it_listed_it(
    moto_server, tmp_path: Path, monkeypatch
):
    """``squall run`` lists the prefix at start and reads the objects one by one. An object deleted
    in between (a cleanup job, another reader) stopped the whole run with exit code 2 (``cannot
    read s3://…: NoSuchKey``), the objects after it never read and the lines read before it not
    committed; a Lambda's notification naming a gone object was already its dead letter. It is
    now that object's dead letter in the local runner too, and the other objects are read."""
    from squall.deploy.local import LocalRunner
    from squall.spouts.s3 import S3Spout
    from squall.topology.loader import load_text
    from tests.deploy.test_sqs_s3_sources import topology_text

    s3 = moto_server.client("s3")
    bucket = unique("listed")
    s3.create_bucket(Bucket=bucket)
    for n, key in enumerate(("in/a.jsonl", "in/b.jsonl", "in/c.jsonl")):
        put_lines(s3, bucket, key, [{"n": n}], gz=False)
    listed = S3Spout.open

    def open_then_delete(self, resources=None):
        listed(self, resources)
        s3.delete_object(Bucket=bucket, Key="in/b.jsonl")

    monkeypatch.setattr(S3Spout, "open", open_then_delete)
    store = unique("listed")
    spout = f'{{type: s3, bucket: {bucket}, prefix: in/, endpoint_url: "{moto_server.endpoint}"}}'
    LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [0, 2]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.component == "spout"
    assert dead.failure.reason == (
        f"s3://{bucket}/in/b.jsonl: NoSuchKey: the object is not there (deleted after it was "
        "listed, or never readable); nothing of it read"
    )
    assert orjson.loads(dead.raw)["error"] == "NoSuchKey"


def test_a_large_gzip_object_deleted_between_its_two_passes_is_its_dead_letter(
    moto_server, tmp_path: Path, monkeypatch
):
    """A gzip object over ``KEPT_COMPRESSED`` is read twice (its check, then its lines): a second
    GetObject. Deleted in between (a cleanup job taking the objects already listed), that GET's
    NoSuchKey stopped the whole local run as the first GET's did before 7 December's fix — the
    objects after it unread — though nothing of it had been read. It is its dead letter, as when
    it is gone at the first GET, and the other objects are read (a Lambda too: its event no
    longer fails and comes again)."""
    import squall.spouts.s3 as s3_spout
    from squall.deploy.local import LocalRunner
    from squall.topology.loader import load_text
    from tests.deploy.test_sqs_s3_sources import topology_text

    monkeypatch.setattr(s3_spout, "KEPT_COMPRESSED", 1024)  # a second GET without 8 MiB objects
    s3 = moto_server.client("s3")
    bucket = unique("between")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/a.jsonl", [{"n": 0}], gz=False)
    put_lines(
        s3, bucket, "in/b.jsonl.gz", [{"n": 1, "pad": unique(str(i))} for i in range(200)], gz=True
    )
    assert s3.head_object(Bucket=bucket, Key="in/b.jsonl.gz")["ContentLength"] > 1024
    put_lines(s3, bucket, "in/c.jsonl", [{"n": 2}], gz=False)
    checked = s3_spout._check_gzip

    def check_then_delete(obj, *args):
        refused = checked(obj, *args)
        s3.delete_object(Bucket=bucket, Key=obj.key)  # after the first pass, before the second
        return refused

    monkeypatch.setattr(s3_spout, "_check_gzip", check_then_delete)
    store = unique("between")
    spout = f'{{type: s3, bucket: {bucket}, prefix: in/, endpoint_url: "{moto_server.endpoint}"}}'
    LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [0, 2]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason == (
        f"s3://{bucket}/in/b.jsonl.gz: NoSuchKey: the object is not there (deleted after it was "
        "listed, or never readable); nothing of it read"
    )

    # The Lambda's S3 trigger: the event's other object is read, the gone one is its dead letter.
    s3, bucket, store, handler = setup(moto_server, tmp_path, "between")
    put_lines(
        s3, bucket, "in/b.jsonl.gz", [{"n": 1, "pad": unique(str(i))} for i in range(200)], gz=True
    )
    put_lines(s3, bucket, "in/c.jsonl", [{"n": 2}], gz=False)
    event = s3_lambda_event(bucket, "in/b.jsonl.gz")
    event["Records"] += s3_lambda_event(bucket, "in/c.jsonl")["Records"]
    assert handler(event, None)["failed"] == 0
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [2]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert (
        dead.failure.reason == f"s3://{bucket}/in/b.jsonl.gz: NoSuchKey: {GONE}; nothing of it read"
    )
