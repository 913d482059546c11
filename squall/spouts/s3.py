"""``s3`` spout: JSON-lines objects (gzip or plain) in a bucket, one record per line.

A record's position is its object and line: stream = the bucket, shard = the object key,
sequence number = the line number; each record also carries a digest of the object's bytes up to
and including its line (``fingerprint``, as the file spout does). Event ids derive from bucket,
key, line and that digest, so reading the same object again (a retried Lambda S3 event, a rerun)
yields the same event ids and idempotent sinks add nothing, while an object *replaced* under the
same key with other content gets other ids from its first differing line on: its rows are never
mistaken for the old object's (and silently skipped by an idempotent sink). The local runner reads every object under ``prefix`` (key order)
once; the Lambda S3-event trigger (``squall.deploy.lambda_sources``) reads the objects an event
names with the same function.

A truncated or corrupt gzip object is that object's problem, not the input's: it becomes one
record with a ``defect`` (dead-lettered with the reason: ``s3://bucket/key``, version id, ETag,
size and the gzip error; its bytes are a JSON pointer to the object, for re-driving it), and the
objects after it are read. None of its lines are kept: gzip verifies its content (CRC-32, length)
only at the end of the stream, so lines decompressed before the error are unverified and could be
garbage; the object is re-driven whole (its lines get the same event ids as before, since they
derive from the content).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson
from pydantic import Field

from squall import aws
from squall.component import (
    Capabilities,
    ComponentConfig,
    ComponentContext,
    LambdaTrigger,
    TriggerSource,
)
from squall.errors import SquallError, safe_text
from squall.event import Record, RecordMeta
from squall.spouts.base import Progress, Spout


class S3Object(NamedTuple):
    """An object's bytes and what names this version of it (``None`` when S3 did not say)."""

    body: bytes
    etag: str | None = None
    version_id: str | None = None


def object_records(
    bucket: str,
    key: str,
    body: bytes | S3Object,
    *,
    skip_blank: bool = True,
) -> list[Record]:
    """The records of one object's lines (gzip detected by its magic bytes); blank lines keep their
    number. Each record's fingerprint is a digest of the (decompressed) bytes up to and including
    its line, so other content under the same key never shares an event id with this one.

    A truncated or corrupt gzip object gives one record instead, with a ``defect`` naming it and the
    error (see the module docstring): the engine dead-letters it and the input goes on."""
    obj = body if isinstance(body, S3Object) else S3Object(body)
    body = obj.body
    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.decompress(body)
        except (EOFError, OSError, zlib.error) as exc:
            return [corrupt_object_record(bucket, key, obj, exc)]
    out = []
    digest = hashlib.sha256()
    source: str | None = None
    for number, line in enumerate(io.BytesIO(body), start=1):
        digest.update(line)
        data = line.rstrip(b"\r\n")
        if skip_blank and not data.strip():
            continue
        fingerprint = digest.hexdigest()[:32]
        if source is None:  # the object's first record names it (see RecordMeta.source)
            source = fingerprint
        meta = RecordMeta(bucket, key, str(number), fingerprint=fingerprint, source=source)
        out.append(Record(data, meta))
    return out


def corrupt_object_record(bucket: str, key: str, obj: S3Object, exc: BaseException) -> Record:
    """The one record of an object that cannot be decompressed: at line number 0 (the object as a
    whole), its bytes a JSON pointer to the object version, its defect the reason. Its event id
    derives from a digest of the object's bytes, so the same object read again is the same dead
    letter, a replaced one another."""
    version = f", version {obj.version_id}" if obj.version_id else ""
    etag = f", ETag {obj.etag}" if obj.etag else ""
    reason = (
        f"s3://{bucket}/{key}{version}{etag} ({len(obj.body)} bytes): truncated or corrupt gzip, "
        f"no line of it kept: {type(exc).__name__}: {safe_text(exc, 300)}"
    )
    pointer = {
        "bucket": bucket,
        "key": key,
        "version_id": obj.version_id,
        "etag": obj.etag,
        "size": len(obj.body),
        "error": "truncated or corrupt gzip",
    }
    meta = RecordMeta(
        bucket,
        key,
        "0",
        fingerprint=hashlib.sha256(obj.body).hexdigest()[:32],
        defect=reason,
    )
    return Record(orjson.dumps(pointer), meta)


def read_object(client: Any, bucket: str, key: str, version_id: str | None = None) -> S3Object:
    """An object's bytes, ETag and version id (``version_id``: that version, not the latest); a
    missing object, version or bucket is an error naming it."""
    kwargs = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        resp = client.get_object(**kwargs)
        return S3Object(resp["Body"].read(), resp.get("ETag"), resp.get("VersionId"))
    except Exception as exc:
        code = aws.error_code(exc)
        version = f" version {version_id}" if version_id else ""
        hint = (
            " (reading a version needs s3:GetObjectVersion)"
            if version_id and code == "AccessDenied"
            else ""
        )
        raise SquallError(
            f"cannot read s3://{bucket}/{key}{version}: {code or exc}{hint}"
        ) from None


class S3SpoutConfig(ComponentConfig):
    bucket: str = Field(description="Bucket name.")
    prefix: str = Field("", description="Read the objects whose keys start with this.")
    start_after: str | None = Field(None, description="Read only keys after this one (key order).")
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="S3 endpoint (local testing).")
    skip_blank: bool = Field(True, description="Skip empty lines.")


class S3Spout(Spout):
    """Read the JSON-lines objects under a prefix, in key order, one record per line."""

    Config = S3SpoutConfig
    summary = "Read JSON-lines objects (gzip or plain) from an S3 bucket, one record per line."
    finite = True

    @classmethod
    def capabilities(cls, config: S3SpoutConfig) -> Capabilities:
        """Lambda delivers new objects under ``prefix`` with an S3 trigger (``squall package --template``)."""
        return Capabilities(
            lambda_trigger=LambdaTrigger(
                TriggerSource.S3, config.bucket, config.region, config.prefix
            )
        )

    def __init__(self, config: S3SpoutConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self._keys: list[str] = []
        self._done = 0

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        if self.client is None:
            self.client = aws.client("s3", region=cfg.region, endpoint_url=cfg.endpoint_url)
        kwargs: dict[str, Any] = {"Bucket": cfg.bucket, "Prefix": cfg.prefix}
        if cfg.start_after:
            kwargs["StartAfter"] = cfg.start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                self._keys.extend(
                    o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")
                )
        except Exception as exc:
            raise SquallError(
                f"{self.id}: cannot list s3://{cfg.bucket}/{cfg.prefix}: "
                f"{aws.error_code(exc) or exc}"
            ) from None

    def read(self, max_records: int) -> Iterator[list[Record]]:
        batch: list[Record] = []
        for key in self._keys:
            records = object_records(
                self.config.bucket,
                key,
                read_object(self.client, self.config.bucket, key),
                skip_blank=self.config.skip_blank,
            )
            for rec in records:
                batch.append(rec)
                if len(batch) >= max_records:
                    yield batch
                    batch = []
                    if self.stopping:
                        return
            self._done += 1
        if batch:
            yield batch

    def progress(self) -> Progress:
        return Progress(self._done, len(self._keys), "objects")

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
