"""The s3 spout streams objects: memory bounded by the batch, not the object; a gzip object's
lines are kept only once its CRC is verified; bounds on a line and on an object's content."""

from __future__ import annotations

import gzip
import hashlib
import os
import tracemalloc
from pathlib import Path

import orjson
import pytest

from squall.deploy.local import LocalRunner
from squall.spouts.s3 import CHUNK, KEPT_COMPRESSED, object_batches, open_object
from squall.testing import MemorySink
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.deploy.test_sqs_s3_sources import topology_text
from tests.moto_standin import FlakyClient, unique


@pytest.fixture
def s3(moto_server):
    client = moto_server.client("s3")
    bucket = unique("stream")
    client.create_bucket(Bucket=bucket)
    client.endpoint = moto_server.endpoint
    client.bucket = bucket
    return client


def counting(client):
    """The client, counting its GetObject calls (``.calls['get_object']``)."""
    return FlakyClient(client, get_object=lambda kwargs, call: call(**kwargs))


def expected_fingerprints(content: bytes) -> list[tuple[str, str]]:
    """(line number, fingerprint) of every non-blank line, computed as the spout documents it:
    a sha256 of the decompressed bytes up to and including the line, first 32 hex digits."""
    digest, out = hashlib.sha256(), []
    for number, line in enumerate(content.splitlines(keepends=True), start=1):
        digest.update(line)
        if line.strip():
            out.append((str(number), digest.hexdigest()[:32]))
    return out


def test_a_gzip_object_over_the_kept_size_is_verified_then_read_again_in_batches(s3):
    """Compressed bytes over KEPT_COMPRESSED are not kept between the passes: the lines come
    from a second GET of the same ETag, in batches; ids are the ones the whole-object reader gave."""
    lines = [b'{"n": %d, "r": "%s"}' % (i, os.urandom(100).hex().encode()) for i in range(90_000)]
    content = b"\n".join(lines[:5]) + b"\n\n" + b"\n".join(lines[5:]) + b"\n"  # a blank line 6
    body = gzip.compress(content, compresslevel=1)
    assert len(body) > KEPT_COMPRESSED and len(content) > 4 * CHUNK
    s3.put_object(Bucket=s3.bucket, Key="big.jsonl.gz", Body=body)
    client = counting(s3)
    batches = list(object_batches(open_object(client, s3.bucket, "big.jsonl.gz"), 5000))
    assert client.calls["get_object"] == 2
    assert all(len(b) <= 5000 for b in batches) and len(batches) == 18
    got = [(r.meta.sequence_number, r.meta.fingerprint) for b in batches for r in b]
    assert got == expected_fingerprints(content)
    first = batches[0][0].meta.fingerprint
    assert {r.meta.source for b in batches for r in b} == {first}
    assert batches[0][0].data == lines[0] and batches[-1][-1].data == lines[-1]


def test_a_small_gzip_object_is_fetched_once(s3):
    content = b"".join(b'{"n": %d}\n' % i for i in range(1000))
    s3.put_object(Bucket=s3.bucket, Key="small.jsonl.gz", Body=gzip.compress(content))
    client = counting(s3)
    records = [
        r for b in object_batches(open_object(client, s3.bucket, "small.jsonl.gz"), 300) for r in b
    ]
    assert client.calls["get_object"] == 1
    assert [(r.meta.sequence_number, r.meta.fingerprint) for r in records] == expected_fingerprints(
        content
    )


def test_a_truncated_gzip_object_bigger_than_a_chunk_keeps_none_of_its_lines(s3):
    """The CRC is at the end: thousands of lines decompress fine before the cut, and none is kept."""
    content = b"".join(
        b'{"n": %d, "pad": "%s"}\n' % (i, os.urandom(40).hex().encode()) for i in range(40_000)
    )
    whole = gzip.compress(content)
    cut = whole[: len(whole) - 12]
    assert len(cut) > CHUNK
    s3.put_object(Bucket=s3.bucket, Key="cut.jsonl.gz", Body=cut)
    (only,) = list(object_batches(open_object(s3, s3.bucket, "cut.jsonl.gz"), 1000))
    (dead,) = only
    assert dead.meta.sequence_number == "0" and "EOFError" in dead.meta.defect
    assert dead.meta.fingerprint == hashlib.sha256(cut).hexdigest()[:32]  # as before streaming
    assert orjson.loads(dead.data)["size"] == len(cut)


def test_reading_a_large_object_holds_a_batch_not_the_object(s3):
    """A 64 MiB (decompressed) object read through the spout's reader peaks at a few MiB of Python
    memory: it was decompressed whole (and every line's record built) before the first batch."""
    pad = b"x" * 1000
    content = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, pad) for i in range(64 * 1024))
    s3.put_object(Bucket=s3.bucket, Key="large.jsonl.gz", Body=gzip.compress(content))
    s3.put_object(Bucket=s3.bucket, Key="large.jsonl", Body=content)
    for key in ("large.jsonl.gz", "large.jsonl"):
        tracemalloc.start()
        try:
            lines = 0
            for batch in object_batches(open_object(s3, s3.bucket, key), 500):
                lines += len(batch)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert lines == 64 * 1024
        assert peak < 12 * CHUNK, f"{key}: peak {peak} bytes for a {len(content)}-byte object"


def run_spout(s3, options: str, store: str):
    spout = f'{{type: s3, bucket: {s3.bucket}, endpoint_url: "{s3.endpoint}"{options}}}'
    return LocalRunner(load_text(topology_text(spout, store)), batch_size=10).run()


def test_a_gzip_bomb_is_one_dead_letter_naming_the_bound_and_the_next_objects_are_read(s3):
    bomb = gzip.compress(b'{"n": 0}\n' + b" " * (64 * CHUNK) + b"\n", compresslevel=9)
    assert len(bomb) < CHUNK // 4  # kilobytes that inflate to 64 MiB
    s3.put_object(Bucket=s3.bucket, Key="a-bomb.jsonl.gz", Body=bomb)
    s3.put_object(Bucket=s3.bucket, Key="b-plain-too-big.jsonl", Body=b'{"n": 1}\n' * 20_000)
    s3.put_object(Bucket=s3.bucket, Key="c-fine.jsonl", Body=b'{"n": 2}\n')
    store = unique("bomb")
    report = run_spout(s3, ", max_object_bytes: 100000", store)
    assert report.counts[Outcome.COMMITTED] == 1 and report.counts[Outcome.DEAD_LETTERED] == 2
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [2]
    bomb_dead, plain_dead = MemorySink.stores[f"{store}-dlq"]
    assert f"s3://{s3.bucket}/a-bomb.jsonl.gz" in bomb_dead.failure.reason
    assert "decompresses to more than max_object_bytes (100000)" in bomb_dead.failure.reason
    assert (
        "its content is 180000 bytes, over max_object_bytes (100000)" in plain_dead.failure.reason
    )
    assert orjson.loads(bomb_dead.raw)["error"] == "over max_object_bytes (100000)"
    again = unique("bomb-again")
    run_spout(s3, ", max_object_bytes: 100000", again)  # the same objects: the same dead letters
    assert [ev.event_id for ev in MemorySink.stores[f"{again}-dlq"]] == [
        bomb_dead.event_id,
        plain_dead.event_id,
    ]


def test_a_line_over_max_line_bytes_is_its_dead_letter_and_the_next_lines_are_read(s3):
    content = b'{"n": 1}\n{"n": 2, "pad": "' + b"y" * 5000 + b'"}\n{"n": 3}\n'
    s3.put_object(Bucket=s3.bucket, Key="long.jsonl.gz", Body=gzip.compress(content))
    store = unique("long")
    report = run_spout(s3, ", max_line_bytes: 1000", store)
    assert report.counts[Outcome.COMMITTED] == 2 and report.counts[Outcome.DEAD_LETTERED] == 1
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 3]
    (dead,) = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason.startswith(
        f"s3://{s3.bucket}/long.jsonl.gz: line 2 is 5019 bytes, over max_line_bytes (1000)"
    )
    assert dead.meta.sequence_number == "2" and len(dead.raw) == 1000


def test_an_object_replaced_between_the_two_passes_fails_the_read_instead_of_mixing_contents(
    s3, tmp_path: Path
):
    """The second pass asks for the ETag the first one verified: a replaced object is an error
    (the input is read again later), never lines of another object under the first one's check."""
    content = b"".join(
        b'{"n": %d, "r": "%s"}\n' % (i, os.urandom(100).hex().encode()) for i in range(90_000)
    )
    body = gzip.compress(content, compresslevel=1)
    assert len(body) > KEPT_COMPRESSED
    s3.put_object(Bucket=s3.bucket, Key="swap.jsonl.gz", Body=body)
    obj = open_object(s3, s3.bucket, "swap.jsonl.gz")
    batches = object_batches(obj, 100)
    s3.put_object(Bucket=s3.bucket, Key="swap.jsonl.gz", Body=gzip.compress(b'{"n": -1}\n'))
    from squall.errors import SquallError

    with pytest.raises(SquallError, match="swap.jsonl.gz: PreconditionFailed .*replaced"):
        next(batches)


def test_a_utf8_bom_opening_an_object_is_not_part_of_its_first_line(s3):
    """Excel and Windows exports start with a UTF-8 BOM: the first line was dead-lettered as bad
    JSON. The BOM is dropped from the content's start only; the fingerprint still digests the
    bytes as they are (an object's event ids do not change)."""
    content = b'\xef\xbb\xbf{"n": 1}\n{"n": 2, "s": "\xef\xbb\xbf inside"}\n'
    s3.put_object(Bucket=s3.bucket, Key="excel.jsonl", Body=content)
    s3.put_object(Bucket=s3.bucket, Key="excel.jsonl.gz", Body=gzip.compress(content))
    for key in ("excel.jsonl", "excel.jsonl.gz"):
        (records,) = list(object_batches(open_object(s3, s3.bucket, key), 10))
        assert [r.data for r in records] == [b'{"n": 1}', b'{"n": 2, "s": "\xef\xbb\xbf inside"}']
        got = [(r.meta.sequence_number, r.meta.fingerprint) for r in records]
        assert got == expected_fingerprints(content)
    store = unique("bom")
    report = run_spout(s3, "", store)
    assert report.counts[Outcome.COMMITTED] == 4 and report.counts[Outcome.DEAD_LETTERED] == 0
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2, 1, 2]


def test_a_first_line_of_only_a_bom_is_still_a_record_and_names_the_object(s3):
    """Dropping the BOM must not make a first line blank (and skipped): before the BOM was
    dropped such a line was a record (a dead letter: not JSON), and the object's first record
    names it (``source``: the lineage a window or subscription bolt keeps positions under). The
    line stays a record, so the object's records, ids and source are what they were."""
    for content in (b'\xef\xbb\xbf\n{"n": 2}\n', b'\xef\xbb\xbf \r\n\n{"n": 3}\n'):
        s3.put_object(Bucket=s3.bucket, Key="bom-only.jsonl", Body=content)
        (records,) = list(object_batches(open_object(s3, s3.bucket, "bom-only.jsonl"), 10))
        got = [(r.meta.sequence_number, r.meta.fingerprint) for r in records]
        assert got == expected_fingerprints(content)
        assert {r.meta.source for r in records} == {records[0].meta.fingerprint}
        assert records[0].data.strip() == b""


def null_versions(kwargs, call):
    """S3's answers for a bucket whose versioning is suspended: each object is version "null"
    (``x-amz-version-id: null``) and ``VersionId=null`` asks for it, i.e. for what the key holds
    now. moto keeps such objects unversioned and says no version: the hook says it as S3 does."""
    if kwargs.get("VersionId") == "null":
        kwargs = {k: v for k, v in kwargs.items() if k != "VersionId"}
    return {**call(**kwargs), "VersionId": "null"}


def test_a_null_version_replaced_between_the_two_passes_fails_the_read(s3, monkeypatch):
    """On a bucket whose versioning is suspended, the next upload replaces an object's version
    "null" in place: GET ?versionId=null then answers the new bytes. The second pass asked for
    the version alone and read the replacing object's lines under the first object's CRC check
    (unverified lines, past max_object_bytes). It asks for the ETag too."""
    import squall.spouts.s3 as s3_spout
    from squall.errors import SquallError

    monkeypatch.setattr(s3_spout, "KEPT_COMPRESSED", 1024)  # a second GET without 8 MiB objects
    body = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(2000)))
    assert len(body) > 1024
    s3.put_object(Bucket=s3.bucket, Key="null.jsonl.gz", Body=body)
    client = FlakyClient(s3, get_object=null_versions)
    obj = open_object(client, s3.bucket, "null.jsonl.gz")
    assert obj.version_id == "null"
    batches = object_batches(obj, 100)
    s3.put_object(Bucket=s3.bucket, Key="null.jsonl.gz", Body=gzip.compress(b'{"n": -1}\n'))
    with pytest.raises(SquallError, match="null.jsonl.gz: PreconditionFailed .*replaced"):
        next(batches)
    assert client.calls["get_object"] == 2


def ignoring_if_match(kwargs, call):
    """An S3-compatible endpoint that ignores ``If-Match``: it answers what the key holds now."""
    return call(**{k: v for k, v in kwargs.items() if k != "IfMatch"})


def test_a_second_pass_over_more_than_max_object_bytes_stops_at_the_bound(s3, monkeypatch):
    """The second pass is bounded as the first: were the second GET's bytes not those the
    first pass verified (an endpoint ignoring ``If-Match``, the object replaced meanwhile), a
    bomb's lines were read with no bound at all. It stops at ``max_object_bytes`` and fails the
    read (the input is read again later), no line past the bound read."""
    import squall.spouts.s3 as s3_spout
    from squall.spouts.s3 import ObjectReadError

    monkeypatch.setattr(s3_spout, "KEPT_COMPRESSED", 1024)  # a second GET without 8 MiB objects
    body = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(2000)))
    assert len(body) > 1024
    s3.put_object(Bucket=s3.bucket, Key="grow.jsonl.gz", Body=body)
    obj = open_object(FlakyClient(s3, get_object=ignoring_if_match), s3.bucket, "grow.jsonl.gz")
    batches = object_batches(obj, 100_000, max_object_bytes=100_000)
    s3.put_object(Bucket=s3.bucket, Key="grow.jsonl.gz", Body=gzip.compress(b'{"n": -1}\n' * 10**6))
    with pytest.raises(ObjectReadError, match=r"grew past max_object_bytes \(100000\)"):
        next(batches)
