"""``s3`` spout: JSON-lines objects (gzip or plain) in a bucket, one record per line.

A record's position is its object and line: stream = the bucket, shard = the object key,
sequence number = the line number; each record also carries a digest of the object's bytes up to
and including its line (``fingerprint``, as the file spout does). Event ids derive from bucket,
key, line and that digest, so reading the same object again (a retried Lambda S3 event, a rerun)
yields the same event ids and idempotent sinks add nothing, while an object *replaced* under the
same key with other content gets other ids from its first differing line on: its rows are never
mistaken for the old object's (and silently skipped by an idempotent sink). The local runner reads
every object under ``prefix`` (key order) once; the Lambda S3-event trigger
(``squall.deploy.lambda_sources``) reads the objects an event names with the same functions.

Memory is bounded by the batch, not by the object: an object is streamed (``CHUNK`` bytes per
read, ``CHUNK`` decompressed bytes per step) and its records come in batches; a line over
``max_line_bytes`` is that line's dead letter and never held whole (``squall.spouts.lines``).

A truncated or corrupt gzip object is that object's problem, not the input's: it becomes one
record with a ``defect`` (dead-lettered with the reason: ``s3://bucket/key``, version id, ETag,
size and the gzip error; its bytes are a JSON pointer to the object, for re-driving it), and the
objects after it are read. None of its lines are kept: gzip verifies its content (CRC-32, length)
only at the end of the stream, so lines decompressed before the error are unverified and could be
garbage. So a gzip object is read twice: a first pass decompresses it to its end, verifying it
and counting its content against ``max_object_bytes`` without keeping a line, and only a verified
object's lines are read, in a second pass (from memory when the compressed object is at most
``KEPT_COMPRESSED`` bytes, else a second GET of the same version or ETag; ``_Inflated`` bounds
the steps of both passes alike: the content against ``max_object_bytes``, the time left). The
first pass costs one more decompression (and, above ``KEPT_COMPRESSED``, one more download);
docs/sinks.md gives the figures. An object whose content is over ``max_object_bytes`` (a gzip
bomb: megabytes that inflate to gigabytes) is one dead letter the same way, naming the bound. So
is an object an S3 notification names that S3 does not have (``missing_object_record``:
NoSuchKey, NoSuchVersion — deleted after the notification, or never readable), and one the
local spout listed that is gone when its turn comes — or at a gzip object's second GET, before
any of its lines (``gone_on_second_read``); and a gzip object replaced by another upload between
its two GETs (S3's ``PreconditionFailed`` on the ETag the first one read): its bytes are gone as
a deleted object's, and its replacement is another object, read as one (its own notification,
the next listing), not here too.

In a Lambda (``ReadBound``: the invocation's time left, less its margin) every GetObject and
every read of its body is bounded by the time left, as the sinks' AWS calls are
(``aws.time_bounded``): a GetObject makes one attempt, reads its answer no longer than the time
left and is retried (throttled, 5xx, connection lost) as the engine retries a sink's transient
error (``settings.retry``) only while the backoff fits; no GetObject is sent and no read of the
body started with no time left (nor a step of either pass over a gzip object, ``CHUNK`` or
``LINES_STEP`` decompressed bytes: a read inflates to up to a thousand times more, and the second
pass over an object kept in memory reads nothing), and each read of the body waits for bytes no
longer than the time left. What cannot finish in time is an ``ObjectReadError`` marked
``transient``; a read of the body failing otherwise (a reset) is not retried and not
``transient``.

Size (~730 lines): the two-pass gzip reader, the objects' dead letters and the Lambda's bounded
reads share ``_Body`` and ``_get``; splitting them would split one object's read across modules.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from botocore.exceptions import ReadTimeoutError
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
from squall.spouts.lines import MAX_LINE_BYTES, MAX_LINE_DOC, line_batches
from squall.topology.model import backoff_ceiling

log = logging.getLogger("squall.spouts")

#: Bytes read from S3 per call, and decompressed bytes produced per step.
CHUNK = 1_048_576
#: Decompressed bytes per step of a gzip object's second pass: each goes through the line reader
#: too (a MiB of blank lines, a million of them, is ~0.3 s of CPU; its inflating ~8 ms).
LINES_STEP = 65_536
#: A gzip object up to this size (compressed) is kept in memory between its two passes.
KEPT_COMPRESSED = 8 * 1_048_576
#: Default bound on an object's content (after gzip decompression).
MAX_OBJECT_BYTES = 4 * 1024**3
MAX_OBJECT_DOC = (
    "Largest object content read, in bytes (after gzip decompression). A larger object (a gzip "
    "bomb, an export far beyond what one run or one Lambda invocation can process) is one dead "
    "letter naming the bound; none of its lines are read, the other objects go on."
)


class ObjectReadError(SquallError):
    """S3 failed while an object was streamed (connection lost, object replaced between passes):
    not the object's fault, so the input (or the Lambda event) fails and is read again.
    ``code``: S3's error code, when it gave one (``NoSuchKey``); ``transient``: a GetObject S3
    throttled, failed (5xx) or was not reached on, or the time left was spent (a read of the body
    timed out waiting for it too) — a dependency down, as a sink's ``TransientError`` its retries
    did not settle. A read of the body failing otherwise (a reset) is not: it is not retried."""

    def __init__(self, message: str, code: str | None = None, *, transient: bool = False):
        super().__init__(message)
        self.code = code
        self.transient = transient


@dataclass(frozen=True)
class ReadBound:
    """A Lambda runner's bound on an object's reads: ``time_left`` (seconds before its deadline
    less its margin; None answered: no bound) and the retry of a transient GetObject, as the
    engine's of a sink's ``TransientError`` (``settings.retry``: attempts and backoff)."""

    time_left: Callable[[], float | None]
    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    @classmethod
    def of(cls, time_left: Callable[[], float | None] | None, retry: Any) -> ReadBound | None:
        """The bound of a runner's ``time_left`` (None: none) and retry policy."""
        if time_left is None:
            return None
        if retry is None:
            return cls(time_left)
        return cls(
            time_left, retry.attempts, retry.initial_backoff, retry.max_backoff, retry.multiplier
        )

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1-based): the engine's jittered backoff."""
        ceiling = backoff_ceiling(self.initial_backoff, self.multiplier, self.max_backoff, attempt)
        return self.rng() * ceiling


def _socket_of(body: Any) -> Any:
    """The socket a botocore body is read from, else None: the one under the HTTP response's
    file (as botocore's ``set_socket_timeout`` finds it) — an answer saying ``Connection: close``
    (moto's always, S3's at times) has http.client hand the socket to the response, the
    connection's ``sock`` then None — else urllib3's connection's."""
    raw = getattr(body, "_raw_stream", None)
    file = getattr(getattr(raw, "_fp", None), "fp", None)  # http.client's, None once read
    sock = getattr(getattr(file, "raw", None), "_sock", None)
    if sock is None:
        sock = getattr(getattr(raw, "connection", None), "sock", None)
    return sock


class S3Object:
    """One version of an object: what names it, its size, and its bytes as a stream — a new
    stream of the same bytes each time ``stream()`` is called (a gzip object is read twice)."""

    def __init__(
        self,
        bucket: str,
        key: str,
        size: int,
        opener: Callable[[], BinaryIO],
        *,
        etag: str | None = None,
        version_id: str | None = None,
        bound: ReadBound | None = None,
    ):
        self.bucket, self.key, self.size = bucket, key, size
        self.etag, self.version_id = etag, version_id
        self._opener = opener
        #: A Lambda's bound on the reads of the body (None: none).
        self.bound = bound

    @classmethod
    def of_bytes(cls, bucket: str, key: str, body: bytes) -> S3Object:
        """An object whose bytes are already here (tests, small callers)."""
        return cls(bucket, key, len(body), lambda: io.BytesIO(body))

    @property
    def where(self) -> str:
        """``s3://bucket/key``, and the version when the bucket keeps versions."""
        version = f", version {self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{version}"

    def stream(self) -> BinaryIO:
        return self._opener()


class _Body(io.RawIOBase):
    """An S3 body (botocore's StreamingBody: ``read(n)`` only) as a raw stream for
    ``io.BufferedReader``; optionally through a digest, keeping the bytes while they are few."""

    def __init__(self, obj: S3Object, body: Any, *, digest: Any = None, keep: int = 0):
        self.obj, self.body, self.digest = obj, body, digest
        self.read_bytes = 0
        self.kept: list[bytes] | None = [] if keep else None
        self._keep = keep
        self._timeout: float | None = None  # the socket's own read timeout (a bounded read's cap)
        self._timeout_is_time_left = False  # the read's timeout is the time left, not the cap

    def readable(self) -> bool:
        return True

    def time_left(self, decompressed: int | None = None, second: bool = False) -> float | None:
        """The time left of the object's ``ReadBound`` (None: none); with none left, an
        ``ObjectReadError`` (``transient``) saying how far the reading (and, given, the
        decompression of the first or ``second`` pass) got."""
        bound = self.obj.bound
        left = bound.time_left() if bound is not None else None
        if left is not None and left <= 0:
            again = " in the second pass" if second else ""
            inflated = f", {decompressed} decompressed{again}" if decompressed is not None else ""
            raise ObjectReadError(
                f"{self.obj.where}: reading stopped after {self.read_bytes} bytes{inflated}: "
                f"{aws.NO_TIME_LEFT}",
                transient=True,
            )
        return left

    def _bound(self) -> float | None:
        """In a Lambda (the object's ``ReadBound``): no read started with no time left, and the
        socket's read timeout the time left (at most the request's, at least
        ``aws.MIN_READ_TIMEOUT``) — the body is read over many slices, long after its GetObject
        set the timeout. The timeout set, else None."""
        left = self.time_left()
        if left is None:
            return None
        sock = _socket_of(self.body)
        if sock is None:
            return None
        if self._timeout is None:
            self._timeout = sock.gettimeout() or 30.0
        timeout = max(aws.MIN_READ_TIMEOUT, min(self._timeout, left))
        sock.settimeout(timeout)
        self._timeout_is_time_left = left <= self._timeout
        return timeout

    def readinto(self, buffer: Any) -> int:
        timeout = self._bound()
        try:
            data = self.body.read(len(buffer))
        except Exception as exc:
            waited = f" (a read bounded by the time left: {timeout:.2f}s)" if timeout else ""
            # A body read is not retried (a GetObject is): only one that waited the whole time
            # left is the time spent (transient); a reset or a cut with time left is this
            # object's failure, not S3 down.
            spent = isinstance(exc, ReadTimeoutError) and self._timeout_is_time_left
            raise ObjectReadError(
                f"{self.obj.where}: reading failed after {self.read_bytes} bytes: "
                f"{aws.error_code(exc) or type(exc).__name__}: {safe_text(exc, 200)}{waited}",
                transient=timeout is not None and spent,
            ) from None
        n = len(data)
        buffer[:n] = data
        self.read_bytes += n
        if self.digest is not None:
            self.digest.update(data)
        if self.kept is not None:
            if self.read_bytes <= self._keep:
                self.kept.append(data)
            else:
                self.kept = None
        return n

    def drain(self) -> None:
        """Read the rest through the digest (the object's fingerprint covers all its bytes)."""
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            pass

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
        super().close()


def object_batches(
    obj: S3Object,
    max_records: int,
    *,
    skip_blank: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_object_bytes: int = MAX_OBJECT_BYTES,
) -> Iterator[list[Record]]:
    """The records of one object's lines in batches of ``max_records`` (gzip detected by its magic
    bytes); blank lines keep their number, a UTF-8 BOM opening the content is dropped (the digest
    keeps it). Each record's fingerprint is a digest of the (decompressed) bytes up to and
    including its line, so other content under the same key never shares an event id with this
    one. A corrupt or truncated gzip object, or one over ``max_object_bytes``, gives one record
    instead, with a ``defect`` naming it (see the module docstring)."""
    raw = _Body(obj, obj.stream(), digest=hashlib.sha256(), keep=KEPT_COMPRESSED)
    with io.BufferedReader(raw, CHUNK) as head:
        gzipped = head.peek(2)[:2] == b"\x1f\x8b"
        if not gzipped:  # one pass: the lines' digests are the fingerprints, nothing is kept
            raw.digest = raw.kept = None
            if obj.size > max_object_bytes:
                yield [over_bound_record(obj, max_object_bytes, False)]
                return
            yield from _lines(obj, head, max_records, skip_blank, max_line_bytes)
            return
        refused = _check_gzip(obj, raw, head, max_object_bytes)
    if refused is not None:
        yield [refused]
        return
    if raw.kept is not None:  # the compressed bytes are here: their reads were counted already
        compressed, body = io.BytesIO(b"".join(raw.kept)), raw
    else:
        body = _Body(obj, obj.stream())
        compressed = io.BufferedReader(body, CHUNK)
    content = _Inflated(compressed, body, max_object_bytes, second=True)
    with compressed, io.BufferedReader(content, LINES_STEP) as lines:
        try:
            yield from _lines(obj, lines, max_records, skip_blank, max_line_bytes)
        except _OverBound:  # verified under the bound in the first pass: not the same bytes
            raise ObjectReadError(
                f"{obj.where}: its content grew past max_object_bytes ({max_object_bytes}) "
                "in the second pass, not the bytes the first pass verified"
            ) from None


class _OverBound(Exception):
    """A gzip object's content went past ``max_object_bytes`` (``_Inflated``)."""


class _Inflated(io.RawIOBase):
    """A gzip object's content as a raw stream, decompressed at most ``CHUNK`` bytes per read —
    the steps of both passes over it, bounded alike: the content is counted against
    ``max_object_bytes`` (``_OverBound`` past it) and, in a Lambda, each step is one more that
    the time left must allow (``_Body.time_left``), as a read of the body is: ``CHUNK``
    compressed bytes (or the few kept in memory for the second pass, read no more) can inflate
    to a thousand times more, seconds of CPU without another read."""

    def __init__(self, compressed: BinaryIO, body: _Body, bound: int, second: bool = False):
        self.gz = gzip.GzipFile(fileobj=compressed)
        self.body, self.bound, self.second = body, bound, second
        self.content = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.gz.read(min(len(buffer), CHUNK))
        n = len(data)
        if n:
            self.content += n
            if self.content > self.bound:
                raise _OverBound
            self.body.time_left(self.content, self.second)
        buffer[:n] = data
        return n

    def close(self) -> None:
        self.gz.close()
        super().close()


def _check_gzip(obj: S3Object, raw: _Body, head: Any, bound: int) -> Record | None:
    """The first pass over a gzip object: decompress to the end (``_Inflated``'s steps, nothing
    kept) so the CRC and length are verified; the object's dead letter if it is corrupt,
    truncated or over the bound, else None."""
    buffer = bytearray(CHUNK)
    try:
        with _Inflated(head, raw, bound) as content:
            while content.readinto(buffer):
                pass
    except _OverBound:
        return over_bound_record(obj, bound, True)
    except (EOFError, OSError, zlib.error) as exc:
        raw.drain()  # the dead letter's fingerprint covers the object's bytes
        return corrupt_object_record(obj, exc, raw.digest.hexdigest()[:32])
    return None


def _lines(
    obj: S3Object, lines: Any, max_records: int, skip_blank: bool, max_line_bytes: int
) -> Iterator[list[Record]]:
    yield from line_batches(
        lines,
        obj.bucket,
        obj.key,
        max_records,
        where=obj.where,
        skip_blank=skip_blank,
        max_line_bytes=max_line_bytes,
        label=f"s3://{obj.bucket}/{obj.key}",
        strip_bom=True,  # Excel and Windows exports open with one: not part of the first line
    )


def object_records(bucket: str, key: str, body: bytes | S3Object, **options: Any) -> list[Record]:
    """Every record of one object at once (``object_batches`` in one list): for small objects."""
    obj = body if isinstance(body, S3Object) else S3Object.of_bytes(bucket, key, body)
    return [r for batch in object_batches(obj, 10_000, **options) for r in batch]


def _pointer_record(obj: S3Object, error: str, reason: str, fingerprint: str) -> Record:
    """The one record of an object that is not read line by line: at line number 0 (the object
    as a whole), its bytes a JSON pointer to the object version, its defect the reason."""
    etag = f", ETag {obj.etag}" if obj.etag else ""
    pointer = {
        "bucket": obj.bucket,
        "key": obj.key,
        "version_id": obj.version_id,
        "etag": obj.etag,
        "size": obj.size,
        "error": error,
    }
    meta = RecordMeta(
        obj.bucket,
        obj.key,
        "0",
        fingerprint=fingerprint,
        defect=f"{obj.where}{etag} ({obj.size} bytes): {reason}",
    )
    return Record(orjson.dumps(pointer), meta)


def corrupt_object_record(obj: S3Object, exc: BaseException, fingerprint: str) -> Record:
    """A gzip object that cannot be decompressed. Its event id derives from a digest of the
    object's bytes (``fingerprint``), so the same object read again is the same dead letter, a
    replaced one another."""
    reason = (
        "truncated or corrupt gzip, no line of it kept: "
        f"{type(exc).__name__}: {safe_text(exc, 300)}"
    )
    return _pointer_record(obj, "truncated or corrupt gzip", reason, fingerprint)


def over_bound_record(obj: S3Object, bound: int, gzipped: bool) -> Record:
    """An object whose content is over ``max_object_bytes``. It is not read to its end, so its
    event id derives from what names this version of it (ETag, version id, size)."""
    found = "decompresses to more than" if gzipped else f"is {obj.size} bytes, over"
    reason = f"its content {found} max_object_bytes ({bound}); no line of it kept"
    name = f"{obj.etag}\x1f{obj.version_id}\x1f{obj.size}".encode()
    return _pointer_record(
        obj, f"over max_object_bytes ({bound})", reason, hashlib.sha256(name).hexdigest()[:32]
    )


#: S3's answers for an object, or the version of it, that is not there.
MISSING = ("NoSuchKey", "NoSuchVersion")
#: S3's answer to a gzip object's second GET (``IfMatch`` its ETag) when another upload replaced
#: it under its key since the first (an unversioned bucket, or versioning suspended).
REPLACED = "PreconditionFailed"


def missing_object_record(
    bucket: str,
    key: str,
    version_id: str | None,
    code: str,
    sequencer: str | None = None,
    *,
    named_by: str = "its notification",
    etag: str | None = None,
) -> Record:
    """An object a notification named that S3 does not have (``code``: one of ``MISSING``):
    deleted after the notification, or never readable. Its one record (as a corrupt object's:
    line 0, a JSON pointer to it) carries the reason as its ``defect``, so it is dead-lettered
    and the other objects go on; retried, it is the same event id. ``sequencer``: the
    notification's, so that two uploads of one key on an unversioned bucket, both gone before
    they were read, are two dead letters, not one (the local spout gives the ETag it listed).
    ``named_by``: what named the object (the reason's "deleted after ...").

    ``code`` ``REPLACED``: a gzip object replaced by another upload between its two GETs
    (``gone_on_second_read``; ``etag``: the replaced upload's). Its bytes are gone as a deleted
    object's are; its replacement is another object, read as one (S3 notifies its upload, a
    listing lists it): reading it here too would read it twice."""
    version = f", version {version_id}" if version_id else ""
    if code == REPLACED:
        what = (
            "the object was replaced by another upload under its key while it was read (its "
            "replacement is another object: its own notification or the next listing brings it)"
        )
    else:
        what = f"the object is not there (deleted after {named_by}, or never readable)"
    # The keys of a corrupt object's pointer (``squall replay`` lists it by them), none known
    pointer = {
        "bucket": bucket,
        "key": key,
        "version_id": version_id,
        "etag": etag,
        "size": None,
        "error": code,
    }
    meta = RecordMeta(
        bucket,
        key,
        "0",
        fingerprint=hashlib.sha256(
            f"{code}\x1f{version_id}\x1f{sequencer or ''}".encode()
        ).hexdigest()[:32],
        defect=f"s3://{bucket}/{key}{version}: {code}: {what}; nothing of it read",
    )
    return Record(orjson.dumps(pointer), meta)


def gone_on_second_read(
    parts: Iterator[list[Record]], gone: Callable[[str], Record]
) -> Iterator[list[Record]]:
    """``object_batches``'s parts, or ``gone(code)`` (``missing_object_record``) when the object is
    gone at its second GET — a gzip object over ``KEPT_COMPRESSED`` deleted between its check and
    its lines: nothing of it was read, as when it is gone at the first GET — or replaced there
    (``REPLACED``: another upload under its key; it stopped a local run, and failed a Lambda's
    event at every retry). A part given already means its lines were read: the error stays the
    error."""
    given = False
    try:
        for part in parts:
            given = True
            yield part
    except ObjectReadError as exc:
        if given or (exc.code not in MISSING and exc.code != REPLACED):
            raise
        yield [gone(exc.code)]


def open_object(
    client: Any,
    bucket: str,
    key: str,
    version_id: str | None = None,
    *,
    bound: ReadBound | None = None,
) -> S3Object:
    """An object version, its body not yet read (``version_id``: that version, not the latest); a
    missing object, version or bucket is an error naming it. Reading it again (a gzip object's
    second pass) asks for the same version and the same ETag: a replaced object is an error.
    ``bound``: a Lambda's — its GetObjects and the reads of their bodies fit in the time left."""
    kwargs = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    resp = _get(client, kwargs, version_id, bound)
    first: list[Any] = [resp["Body"]]
    etag, version = resp.get("ETag"), resp.get("VersionId")
    # The ETag too when a version is named: a bucket whose versioning is suspended has one version
    # "null" per key, replaced in place by the next upload (GET ?versionId=null gives the new bytes).
    again = dict(kwargs, VersionId=version) if version else dict(kwargs)
    if etag:
        again["IfMatch"] = etag

    def opener() -> BinaryIO:
        return first.pop() if first else _get(client, again, version_id, bound)["Body"]

    return S3Object(
        bucket,
        key,
        int(resp.get("ContentLength") or 0),
        opener,
        etag=etag,
        version_id=version,
        bound=bound,
    )


def _get(
    client: Any, kwargs: dict[str, Any], version_id: str | None, bound: ReadBound | None = None
) -> Any:
    """GetObject; with a ``bound`` (a Lambda's) with a time left, one attempt at a time
    (``aws.time_bounded``), a transient failure retried while the backoff fits in the time left,
    and none sent with no time left."""
    where = f"s3://{kwargs['Bucket']}/{kwargs['Key']}" + (
        f" version {version_id}" if version_id else ""
    )
    attempt = 0
    while True:
        attempt += 1
        left = bound.time_left() if bound is not None else None
        if left is not None and left <= 0:
            raise ObjectReadError(f"cannot read {where}: {aws.NOT_SENT}", transient=True)
        try:
            with aws.time_bounded(bound.time_left if left is not None else None):  # type: ignore[union-attr]
                return client.get_object(**kwargs)
        except Exception as exc:
            code = aws.error_code(exc)
            transient = aws.is_retryable(exc)
            reason = f"cannot read {where}: {code or safe_text(exc, 300)}"
            if left is None or not transient:
                raise ObjectReadError(
                    reason + _hint(code, version_id), code, transient=transient
                ) from None
            assert bound is not None
            if attempt >= bound.attempts:
                raise ObjectReadError(
                    f"{reason} (after {attempt} attempt(s))", code, transient=True
                ) from None
            delay = bound.delay(attempt)
            now = bound.time_left()
            if now is not None and delay >= now:
                log.warning(
                    "%s; not retried: %.2fs left, %.2fs of backoff", reason, max(now, 0.0), delay
                )
                raise ObjectReadError(
                    f"{reason} (not retried: {aws.NO_TIME_LEFT})", code, transient=True
                ) from None
            log.warning("%s; retry %d/%d in %.2fs", reason, attempt, bound.attempts - 1, delay)
            bound.sleep(delay)


def _hint(code: str | None, version_id: str | None) -> str:
    if version_id and code == "AccessDenied":
        return (
            " (reading a version needs s3:GetObjectVersion; without s3:ListBucket on the bucket "
            "S3 answers a missing object AccessDenied too)"
        )
    if code == "AccessDenied":
        return (
            " (reading needs s3:GetObject; without s3:ListBucket on the bucket S3 answers a "
            "missing object AccessDenied too)"
        )
    if code == "PreconditionFailed":
        return " (the object was replaced while it was read)"
    return ""


class S3SpoutConfig(ComponentConfig):
    bucket: str = Field(description="Bucket name.")
    prefix: str = Field("", description="Read the objects whose keys start with this.")
    suffix: str = Field(
        "",
        description="Read only the objects whose keys end with this (`.jsonl.gz`): the local "
        "listing, the Lambda trigger's notification filter and its read grant alike.",
    )
    start_after: str | None = Field(None, description="Read only keys after this one (key order).")
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="S3 endpoint (local testing).")
    skip_blank: bool = Field(True, description="Skip empty lines.")
    max_line_bytes: int = Field(MAX_LINE_BYTES, ge=1, description=MAX_LINE_DOC)
    max_object_bytes: int = Field(MAX_OBJECT_BYTES, ge=1, description=MAX_OBJECT_DOC)


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
                TriggerSource.S3, config.bucket, config.region, config.prefix, config.suffix
            )
        )

    def __init__(self, config: S3SpoutConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self._keys: list[str] = []
        self._etags: dict[str, str] = {}  # as listed: a gone object's dead letter names its upload
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
                for o in page.get("Contents", []):
                    if not o["Key"].endswith("/") and o["Key"].endswith(cfg.suffix):
                        self._keys.append(o["Key"])
                        self._etags[o["Key"]] = o.get("ETag") or ""
        except Exception as exc:
            raise SquallError(
                f"{self.id}: cannot list s3://{cfg.bucket}/{cfg.prefix}: "
                f"{aws.error_code(exc) or exc}"
            ) from None

    def read(self, max_records: int) -> Iterator[list[Record]]:
        cfg = self.config
        batch: list[Record] = []
        for key in self._keys:
            parts: Any
            try:
                obj = open_object(self.client, cfg.bucket, key)
            except ObjectReadError as exc:
                if exc.code not in MISSING:
                    raise
                # Deleted since the listing (a cleanup job, another reader, a lifecycle rule): that
                # object's dead letter, as when a Lambda's notification names one that is gone.
                gone = missing_object_record(
                    cfg.bucket, key, None, exc.code, self._etags.get(key), named_by="it was listed"
                )
                parts = [[gone]]
            else:
                parts = gone_on_second_read(
                    object_batches(
                        obj,
                        max_records,
                        skip_blank=cfg.skip_blank,
                        max_line_bytes=cfg.max_line_bytes,
                        max_object_bytes=cfg.max_object_bytes,
                    ),
                    lambda code, key=key, etag=obj.etag: missing_object_record(
                        cfg.bucket,
                        key,
                        None,
                        code,
                        self._etags.get(key),
                        named_by="it was listed",
                        etag=etag if code == REPLACED else None,
                    ),
                )
            for part in parts:
                batch.extend(part)  # batches span objects: at most 2 x max_records held
                while len(batch) >= max_records:
                    yield batch[:max_records]
                    batch = batch[max_records:]
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
