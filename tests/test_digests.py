"""``squall.digests``: CPython's own BLAKE2b and SHA-256, the same digests as ``hashlib``'s."""

from __future__ import annotations

import hashlib

import pytest

from squall import digests
from squall.bolts.schema import schema_digest
from squall.event import RecordMeta, derive_event_id


def test_blake2b_is_hashlibs():
    # hashlib never uses OpenSSL's BLAKE2: its blake2b is CPython's own type
    assert digests.blake2b is hashlib.blake2b


@pytest.mark.parametrize("data", [b"", b"squall", "é\\x1fshard".encode(), bytes(range(256)) * 70])
def test_small_sha256_gives_hashlibs_digest(data: bytes):
    assert digests.small_sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert digests.small_sha256(data).digest() == hashlib.sha256(data).digest()


def test_event_ids_are_unchanged():
    """Ids computed by ``hashlib`` before this module (at 748fe4d9): a replay still dedupes."""
    meta = RecordMeta("pistats", "shardId-000000000000", "4959")
    assert derive_event_id(meta) == "c8abee80e7a29b45d41dbbfb67511e67"
    meta = RecordMeta("pistats", "shardId-000000000000", "4959", 3, "k", fingerprint="abc")
    assert derive_event_id(meta) == "a4547f568ef01c728642733535b08a5d"


def test_a_schema_digest_is_the_one_hashlib_gives(monkeypatch: pytest.MonkeyPatch):
    from squall.bolts import schema

    ours = schema_digest({"type": "object", "required": ["id"]})
    monkeypatch.setattr(schema, "small_sha256", hashlib.sha256)
    monkeypatch.setattr(schema, "_check_code", None)
    assert ours is not None
    assert schema_digest({"type": "object", "required": ["id"]}) == ours
