"""JSON lines into records, one line at a time: the reader the ``file``, ``stdin`` and ``s3`` spouts share.

A line is never held whole when it is over ``max_line_bytes``: it becomes a record failure (its
first ``KEPT_PREFIX`` bytes kept for the dead letter) and the lines after it are read. Each record
carries a digest of every byte read so far, its line included (``fingerprint``), and the input's
first record's digest names the input (``source``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import IO

from squall.errors import SquallError
from squall.event import Record, RecordMeta, new_meta

#: Default line limit: the json bolt's default ``max_bytes``, so a line it would accept is never cut.
MAX_LINE_BYTES = 10 * 1_048_576
#: How much of an over-long line is kept for the dead letter.
KEPT_PREFIX = 1024
_OVER_THE_LIMIT = (
    "A longer line is never held in memory: it becomes a record failure (dead letter) keeping "
    f"only its first {KEPT_PREFIX} bytes; the rest of the line is lost, the other lines go on."
)
MAX_LINE_DOC = (
    "Longest line accepted, in bytes (after gzip decompression, without the newline, LF or CRLF). "
    + _OVER_THE_LIMIT
)
#: The same for standard input, which is read as it is (a gzip stream is not decompressed).
MAX_STDIN_LINE_DOC = (
    "Longest line accepted, in bytes (without the newline, LF or CRLF; standard input is read as "
    "it is, never decompressed). " + _OVER_THE_LIMIT
)
#: The UTF-8 byte order mark some tools (Excel, Windows exports) write at the start of a file.
BOM = b"\xef\xbb\xbf"
_FINGERPRINT = slice(32)  # a record's fingerprint: the digest's first 32 hex digits


def rest_of_line(
    readline: Callable[[int], bytes], max_line_bytes: int, update: Callable[[bytes], None]
) -> int:
    """Read the rest of a line over the limit through the digest, never holding it; its length
    without the newline. The caller keeps only a prefix of the first part (and drops that part
    first: two parts held at once would double the memory bound)."""
    length = 0
    while True:
        chunk = readline(max_line_bytes)
        if not chunk:
            return length
        update(chunk)
        if chunk.endswith(b"\n"):
            return length + len(chunk) - 1
        length += len(chunk)


def line_batches(
    lines: IO[bytes],
    stream: str,
    shard: str,
    max_records: int,
    *,
    where: str,
    skip_blank: bool,
    max_line_bytes: int = MAX_LINE_BYTES,
    label: str | None = None,
    strip_bom: bool = False,
    stopping: Callable[[], bool] | None = None,
) -> Iterator[list[Record]]:
    """The records of ``lines`` in batches of ``max_records``: stream and shard as given, the line
    number as sequence number. ``where`` names the input in a read error, ``label`` (when given)
    starts an over-long line's defect; ``strip_bom`` drops a UTF-8 BOM opening the first line
    (the digest still covers it: the bytes as they are); ``stopping`` is asked after each batch.

    The usual line (under the limit) is read inline here — this runs per line, and a second
    generator per line costs as much as the rest of the spout."""
    batch: list[Record] = []
    append, new_record = batch.append, object.__new__
    import hashlib  # OpenSSL's SHA-256, at the first file read (squall.digests)

    digest = hashlib.sha256()
    update, hexdigest = digest.update, digest.hexdigest
    readline = lines.readline
    limit = max_line_bytes + 2  # the limit, and a CRLF
    number = 0
    source: str | None = None
    cut = _FINGERPRINT
    first = True  # no record yet: the input's first (its BOM, its source)
    named = f"{label}: " if label else ""
    # (``iter`` over ``readline`` rather than a call per line; not ``zip`` with the line numbers:
    # its tuple would hold an over-long line's first part while the rest is read.)
    try:
        for chunk in iter(partial(readline, limit), b""):
            number += 1
            update(chunk)
            data = chunk.rstrip(b"\r\n")
            # The usual line, shorter than the limit whatever its end; else the full test (a line
            # read is never empty; ``endswith`` parses its arguments, ~0.5k instructions).
            if len(chunk) <= max_line_bytes or (
                len(data) <= max_line_bytes and (chunk[-1] == 0x0A or len(chunk) < limit)
            ):
                if skip_blank and not data.strip():
                    continue
                defect = None
            else:  # over the limit: a prefix for the dead letter, the rest through the digest
                ended = chunk[-1] == 0x0A
                more = not ended and len(chunk) == limit
                length = len(chunk) - ended
                data = data[: min(KEPT_PREFIX, max_line_bytes)]
                chunk = b""
                if more:
                    length += rest_of_line(readline, max_line_bytes, update)
                defect = (
                    f"{named}line {number} is {length} bytes, over max_line_bytes "
                    f"({max_line_bytes}); only its first {len(data)} bytes are kept"
                )
            fingerprint = hexdigest()[cut]
            if first:  # the input's first record names it (see RecordMeta.source)
                first = False
                source = fingerprint
                if strip_bom and number == 1 and data.startswith(BOM):
                    # After the blank-line test: a line of only a BOM stays a record, as it was
                    # before BOMs were dropped (the input's records, and its source, do not change).
                    data = data[len(BOM) :]
            # Every field, in order (squall.event.new_meta): stream, shard, sequence, sub-sequence,
            # partition key, arrival time, explicit hash key, fingerprint, defect, source, replay.
            meta = (stream, shard, str(number), 0, "", None, None, fingerprint, defect, source, 0)
            # Record(data, meta), its two slots set here: the dataclass's __init__ is a Python
            # call per line (tests/spouts/test_line_records.py holds them equal).
            record = new_record(Record)
            record.data = data
            record.meta = new_meta(RecordMeta, meta)
            append(record)
            if len(batch) >= max_records:
                yield batch
                batch = []
                append = batch.append
                if stopping is not None and stopping():
                    return
    except (EOFError, OSError, zlib.error) as exc:
        raise SquallError(
            f"{where}: cannot read past line {number}: {exc or type(exc).__name__} "
            "(truncated or corrupt gzip?)"
        ) from None
    if batch:
        yield batch
