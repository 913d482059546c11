"""A gzip object over ``KEPT_COMPRESSED`` is read twice (its check, then its lines); the second GET
names the ETag the first read (``IfMatch``). Replaced in between by another upload under its key
(an unversioned bucket), S3 answers PreconditionFailed: that stopped a whole local run (exit code
2, the objects after it unread) and failed a Lambda's event at every retry, though nothing of it
had been read. The replaced upload's bytes are gone, as a deleted object's; its replacement is
another object, read as one (its own notification, the next listing). So the replaced upload is
one dead letter naming it and saying so, and the other objects go on: nothing read twice, the
replacement's lines read once, by their own notification. Against moto's server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import squall.spouts.s3 as s3_spout
from squall.testing import MemorySink
from tests.deploy.test_s3_missing_object import setup
from tests.deploy.test_sqs_s3_sources import put_lines, s3_lambda_event, topology_text
from tests.moto_standin import unique

REPLACED = (
    "PreconditionFailed: the object was replaced by another upload under its key while it was "
    "read (its replacement is another object: its own notification or the next listing brings "
    "it); nothing of it read"
)


def big(n: int) -> list[dict]:
    return [{"n": n, "pad": unique(str(i))} for i in range(200)]


@pytest.fixture
def replace_between_passes(monkeypatch):
    """After a gzip object's first pass, before its second GET: another upload under its key."""
    monkeypatch.setattr(s3_spout, "KEPT_COMPRESSED", 1024)  # a second GET without 8 MiB objects
    checked = s3_spout._check_gzip
    uploads: list[tuple] = []  # (client, bucket, key, payloads), one replacement each

    def check_then_replace(obj, *args):
        refused = checked(obj, *args)
        for client, bucket, key, payloads in uploads:
            if (obj.bucket, obj.key) == (bucket, key):
                put_lines(client, bucket, key, payloads, gz=True)
                uploads.remove((client, bucket, key, payloads))
                break
        return refused

    monkeypatch.setattr(s3_spout, "_check_gzip", check_then_replace)
    return uploads


def test_the_local_spout_dead_letters_a_gzip_object_replaced_between_its_passes(
    moto_server, replace_between_passes
):
    from squall.deploy.local import LocalRunner
    from squall.topology.loader import load_text

    s3 = moto_server.client("s3")
    bucket = unique("replaced")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/a.jsonl", [{"n": 0}], gz=False)
    put_lines(s3, bucket, "in/b.jsonl.gz", big(1), gz=True)
    assert s3.head_object(Bucket=bucket, Key="in/b.jsonl.gz")["ContentLength"] > 1024
    first_etag = s3.head_object(Bucket=bucket, Key="in/b.jsonl.gz")["ETag"]
    put_lines(s3, bucket, "in/c.jsonl", [{"n": 2}], gz=False)
    replace_between_passes.append((s3, bucket, "in/b.jsonl.gz", big(5)))
    store = unique("replaced")
    spout = f'{{type: s3, bucket: {bucket}, prefix: in/, endpoint_url: "{moto_server.endpoint}"}}'
    LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    assert not replace_between_passes  # replaced indeed
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [0, 2]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.component == "spout"
    assert dead.failure.reason == f"s3://{bucket}/in/b.jsonl.gz: {REPLACED}"
    pointer = orjson.loads(dead.raw)
    assert pointer["error"] == "PreconditionFailed" and pointer["etag"] == first_etag

    # The next run lists the replacement and reads it whole; the other objects add nothing new.
    LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()
    values = [ev.value["n"] for ev in MemorySink.stores[store]]
    assert values.count(5) == 200 and 1 not in values


def test_a_lambda_event_of_a_replaced_gzip_object_is_its_dead_letter(
    moto_server, tmp_path: Path, replace_between_passes
):
    s3, bucket, store, handler = setup(moto_server, tmp_path, "replaced")
    put_lines(s3, bucket, "in/b.jsonl.gz", big(1), gz=True)
    put_lines(s3, bucket, "in/c.jsonl", [{"n": 2}], gz=False)
    replace_between_passes.append((s3, bucket, "in/b.jsonl.gz", big(5)))
    event = s3_lambda_event(bucket, "in/b.jsonl.gz")
    event["Records"] += s3_lambda_event(bucket, "in/c.jsonl")["Records"]
    assert handler(event, None)["failed"] == 0
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [2]
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason == f"s3://{bucket}/in/b.jsonl.gz: {REPLACED}"

    # The replacement's own notification (another sequencer) reads its lines, once.
    again = s3_lambda_event(bucket, "in/b.jsonl.gz")
    again["Records"][0]["s3"]["object"]["sequencer"] = "0A1B2C3D4E5F6789FF"
    assert handler(again, None)["failed"] == 0
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [2] + [5] * 200
    assert len(MemorySink.stores[f"{store}-dlq"]) == 1
