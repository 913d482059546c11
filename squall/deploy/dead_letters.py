"""Reading dead letters back, for ``squall replay``: a JSON-lines file (gzip or not), the objects
of a ``dead_letter_s3`` prefix, or a ``dead_letter_table``.

Each document becomes a ``DeadLetter``: the original bytes (``record`` or ``record_base64``) and
the original metadata (``meta``, read back with ``RecordMeta.from_dict``), so the replayed record
has the event id it had. A line that is not a dead letter is an ``Unreadable`` naming where it is
(``file:line``) and why; the reader goes on with the next line.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from squall import exact_json
from squall.errors import SquallError
from squall.event import Record, RecordMeta
from squall.times import read_time

#: Keys of the JSON pointer an ``s3`` spout writes as the record of a corrupt object.
POINTER_KEYS = frozenset({"bucket", "key", "version_id", "etag", "size", "error"})
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter document, read back."""

    where: str
    event_id: str
    component: str | None
    reason: str
    failed_at: datetime | None
    record: Record
    #: Why the record cannot be replayed as it is (cut by the source or to fit the dead-letter
    #: destination), or ``s3://…`` of a corrupt object whose record is only a pointer to it.
    unreplayable: str | None = None
    pointer: str | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line or row that is not a dead letter: where it is and why."""

    where: str
    why: str


def parse_time(text: str) -> datetime:
    """A time's text as every time reader reads it (``squall.times.read_time``): ISO-8601 (or a
    date), without a zone UTC, RFC 3339's lower-case ``z`` too; digits are epoch seconds (or
    milliseconds from 10^11). ``TypeError`` for a value that is not text."""
    if not isinstance(text, str):
        raise TypeError(f"not text: {type(text).__name__}")
    return read_time(text)


def parse(doc: Any, where: str) -> DeadLetter | Unreadable:
    """A dead-letter document (as ``dead_letter_line`` wrote it) read back."""
    try:
        return _parse(doc, where)
    except ValueError as exc:
        return Unreadable(where, str(exc))


def _parse(doc: Any, where: str) -> DeadLetter:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    meta = RecordMeta.from_dict(doc.get("meta"))
    event_id, component, reason = doc.get("event_id"), doc.get("component"), doc.get("reason")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event_id is missing or not text")
    if component is not None and not isinstance(component, str):
        raise ValueError("component is not text")
    if not isinstance(reason, str):
        raise ValueError("reason is missing or not text")
    failed_at = doc.get("failed_at")
    if failed_at is not None:
        try:
            failed_at = parse_time(failed_at)
        except (TypeError, ValueError):
            raise ValueError("failed_at is not an ISO-8601 time") from None
    if isinstance(doc.get("record"), str):
        data = doc["record"].encode()
    elif isinstance(doc.get("record_base64"), str):
        try:
            data = base64.b64decode(doc["record_base64"], validate=True)
        except binascii.Error:
            raise ValueError("record_base64 is not base64") from None
    else:
        raise ValueError("neither record nor record_base64 holds the record")
    unreplayable = None
    # The pointer first: the spout's record of a whole object carries its reason as the defect
    # too, and "kept only part of the record" hid the object it names.
    if (pointer := _pointer(data, meta)) is not None:
        unreplayable = _whole_object(pointer, orjson.loads(data)["error"])
    elif meta.defect:
        unreplayable = f"the source kept only part of the record ({meta.defect})"
    elif doc.get("record_truncated") is not None:
        unreplayable = (
            f"the record was cut to fit the dead letter ({doc['record_truncated']} bytes)"
        )
    elif not data:
        if doc.get("payload_dropped") is not None:
            kept = (
                f"its payload was dropped to fit the dead letter ({doc['payload_dropped']} "
                "bytes): its values are lost"
            )
        elif "payload" in doc:
            kept = "its values are the dead letter's payload"
        else:  # a dead letter of a squall that did not keep a result's payload yet
            kept = "this dead letter holds no payload: its values were not kept"
        unreplayable = (
            "the record is empty: nothing to run again (a result a bolt made, such as a "
            f"window's, has no record of its own; {kept})"
        )
    record = Record(data, meta)
    return DeadLetter(where, event_id, component, reason, failed_at, record, unreplayable, pointer)


#: A pointer's ``error`` for an object S3 did not have (``squall.spouts.s3.MISSING``).
_MISSING = ("NoSuchKey", "NoSuchVersion")
#: A pointer's ``error`` for a gzip object replaced between its two GETs (``s3.REPLACED``).
_REPLACED = "PreconditionFailed"


def _whole_object(pointer: str, error: object) -> str:
    """Why an ``s3`` spout's dead letter of a whole object is not replayed, and what to do."""
    if error in _MISSING:
        return (
            f"S3 object {pointer} was not there ({error}): nothing of it was read; an upload of "
            "it again is a new object, read by its own notification (or the next squall run)"
        )
    if error == _REPLACED:
        return (
            f"S3 object {pointer} was replaced by another upload while it was read ({error}): "
            "nothing of it was read; its replacement is another object, read by its own "
            "notification (or the next squall run)"
        )
    if isinstance(error, str) and error.startswith("over max_object_bytes"):
        return f"S3 object {pointer} {error}: read it with squall run and a larger bound"
    return f"corrupt S3 object {pointer} ({error}): re-drive the repaired object itself"


def _pointer(data: bytes, meta: RecordMeta) -> str | None:
    """``s3://bucket/key`` (with ``?versionId=``) when the record is an ``s3`` spout's pointer to a
    corrupt object (line 0 of the object), else None."""
    if meta.sequence_number != "0" or not data.startswith(b"{"):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or set(doc) != POINTER_KEYS:
        return None
    url = f"s3://{doc['bucket']}/{doc['key']}"
    return f"{url}?versionId={doc['version_id']}" if doc.get("version_id") else url


def read_lines(name: str, lines: Iterator[bytes]) -> Iterator[DeadLetter | Unreadable]:
    """Dead letters of JSON lines; blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            doc = exact_json.loads(line)  # a payload may hold integers beyond 64 bits
        except ValueError as exc:
            yield Unreadable(where, f"not JSON: {exc}")
            continue
        yield parse(doc, where)


def read_file(path: Path) -> Iterator[DeadLetter | Unreadable]:
    """The dead letters of a ``dead_letter`` file (gzip detected); ``SquallError`` when it cannot
    be read (missing, or a gzip stream that breaks: the message says after which line)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SquallError(f"cannot read dead letters from {path}: {exc.strerror or exc}") from None
    with fh:
        gz = fh.read(2) == GZIP_MAGIC
        fh.seek(0)
        # A plain file is read up to its size now: the dead letters appended while it is read —
        # the replay's own (a record failing again, often the topology's own dead-letter file),
        # another process's — are not read back as dead letters to replay.
        stream = gzip.GzipFile(fileobj=fh) if gz else _upto(fh, os.fstat(fh.fileno()).st_size)
        lines = [0]  # lines read whole: where a broken stream stopped (blank ones too)
        try:
            yield from read_lines(str(path), _counted(stream, lines))
        except (OSError, EOFError, zlib.error) as exc:
            raise SquallError(
                f"{path}:{lines[0] + 1}: unreadable from this line on (truncated or corrupt gzip: "
                f"{exc}); lines 1-{lines[0]} were read"
            ) from None


def _counted(lines: Iterator[bytes], count: list[int]) -> Iterator[bytes]:
    """``lines``, counted into ``count[0]`` as each is read whole."""
    for line in lines:
        count[0] += 1
        yield line


def _upto(fh: Any, size: int) -> Iterator[bytes]:
    """The lines of ``fh`` within its first ``size`` bytes."""
    for line in fh:
        if size <= 0:
            return
        if len(line) > size:
            line = line[:size]
        size -= len(line)
        yield line


def read_s3(
    url: str, *, region: str | None, endpoint_url: str | None
) -> Iterator[DeadLetter | Unreadable]:
    """The dead letters of every ``dead_letter_s3`` object under ``s3://bucket/prefix``, oldest
    first (then in key order)."""
    from squall import aws

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise SquallError(f"{url}: no bucket (write s3://bucket/prefix)")
    s3 = aws.client("s3", region=region, endpoint_url=endpoint_url)
    try:
        objects = [
            (obj["LastModified"], obj["Key"])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", ())
        ]
        # Oldest first: a record's first dead letter before the one a replay wrote when it failed
        # again (whose key, named by the same positions, may sort first), as ``select`` re-drives
        # the first dead letter of an event id; repeating a replay then writes nothing new.
        for _, key in sorted(objects):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            name = f"s3://{bucket}/{key}"
            try:
                data = gzip.decompress(body) if body[:2] == GZIP_MAGIC else body
            except (OSError, EOFError, zlib.error) as exc:
                yield Unreadable(name, f"corrupt gzip object: {exc}")
                continue
            yield from read_lines(name, iter(data.splitlines()))
    except SquallError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors: one line, the URL named
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        raise SquallError(
            f"cannot read dead letters from {url}: {code or type(exc).__name__}"
        ) from None


def read_table(
    resources: Any, resource: str, table: str, hint: str = ""
) -> Iterator[DeadLetter | Unreadable]:
    """The rows of a ``dead_letter_table`` (``resource`` of the topology), oldest first; ``hint``
    names the topology's own dead-letter tables when ``table`` is not there."""
    import sqlalchemy as sa

    from squall.sinks.dead_letter_table import dead_letters_table

    engine = resources.sql(resource)
    t = dead_letters_table(table, sa.MetaData())
    query = sa.select(t).order_by(t.c.failed_at, t.c.event_id, t.c.component)
    try:
        with engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
    except sa.exc.SQLAlchemyError as exc:
        try:
            missing = not sa.inspect(engine).has_table(table)
        except sa.exc.SQLAlchemyError:
            missing = False
        if missing:
            raise SquallError(
                f"no table {table} in {resource}: name the dead_letter_table's table, "
                + (f"the topology's: {hint}" if hint else f"sql://{resource}/TABLE")
            ) from None
        raise SquallError(
            f"cannot read dead letters from table {table} of {resource}: {type(exc.orig or exc).__name__}"
        ) from None
    for row in rows:
        where = f"{resource}/{table} ({row['event_id']}, {row['component']})"
        try:
            row["meta"] = orjson.loads(row["meta"])
        except orjson.JSONDecodeError as exc:
            yield Unreadable(where, f"meta is not JSON: {exc}")
            continue
        row["component"] = row["component"] or None
        yield parse({k: v for k, v in row.items() if v is not None}, where)
