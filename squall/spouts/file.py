"""``file`` and ``stdin`` spouts: JSON lines (optionally .gz), one record per line."""

from __future__ import annotations

import gzip
import hashlib
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pydantic import Field

from squall.component import ComponentConfig
from squall.errors import SquallError
from squall.event import Record, RecordMeta, new_meta
from squall.spouts.base import Progress, Spout

#: Default line limit: the json bolt's default ``max_bytes``, so a line it would accept is never cut.
MAX_LINE_BYTES = 10 * 1_048_576
#: How much of an over-long line is kept for the dead letter.
KEPT_PREFIX = 1024
MAX_LINE_DOC = (
    "Longest line accepted, in bytes (after gzip decompression, without the newline, LF or CRLF). A longer "
    "line is never held in memory: it becomes a record failure (dead letter) keeping only its "
    f"first {KEPT_PREFIX} bytes; the rest of the line is lost, the other lines go on."
)


class FileConfig(ComponentConfig):
    path: str = Field(
        description="JSON-lines file (.gz is decompressed), relative to the topology file."
    )
    stream: str | None = Field(
        None,
        description="Stream name in record metadata (default: the file name). "
        "Event ids derive from it, the line number and a digest of the "
        "file's content up to that line.",
    )
    skip_blank: bool = Field(
        True, description="Skip empty lines instead of passing them on as records."
    )
    max_line_bytes: int = Field(MAX_LINE_BYTES, ge=1, description=MAX_LINE_DOC)


class FileSpout(Spout):
    """Read a JSON-lines file; each line is one record whose sequence number is its line number."""

    Config = FileConfig
    summary = "Read records from a JSON-lines file, optionally gzip-compressed."
    finite = True

    def __init__(self, config: FileConfig, context):
        super().__init__(config, context)
        self.path = context.path(config.path)
        self.stream_name = config.stream or self.path.name
        self._raw: BinaryIO | None = None
        self._total = 0
        self._lines = 0

    def open(self, resources=None) -> None:
        try:
            self._raw = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SquallError(f"{self.id}: cannot read {self.path}: {exc.strerror}") from None
        self._total = self.path.stat().st_size

    def _lines_of(self) -> IO[bytes]:
        assert self._raw is not None, "open() first"
        if self._raw.read(2) == b"\x1f\x8b":
            self._raw.seek(0)
            return gzip.GzipFile(fileobj=self._raw)  # type: ignore[return-value]
        self._raw.seek(0)
        return self._raw

    def read(self, max_records: int) -> Iterator[list[Record]]:
        yield from _batches(
            self._lines_of(),
            self.stream_name,
            "file",
            max_records,
            self,
            skip_blank=self.config.skip_blank,
            max_line_bytes=self.config.max_line_bytes,
        )

    def progress(self) -> Progress:
        done = self._raw.tell() if self._raw and not self._raw.closed else self._total
        return Progress(done, self._total, "bytes")

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()


class StdinConfig(ComponentConfig):
    stream: str = Field("stdin", description="Stream name in record metadata.")
    skip_blank: bool = Field(True, description="Skip empty lines.")
    max_line_bytes: int = Field(MAX_LINE_BYTES, ge=1, description=MAX_LINE_DOC)


class StdinSpout(Spout):
    """Read JSON lines from standard input until end of file."""

    Config = StdinConfig
    summary = "Read records from standard input, one JSON document per line."
    finite = True

    def read(self, max_records: int) -> Iterator[list[Record]]:
        yield from _batches(
            sys.stdin.buffer,
            self.config.stream,
            "stdin",
            max_records,
            self,
            skip_blank=self.config.skip_blank,
            max_line_bytes=self.config.max_line_bytes,
        )


@dataclass(slots=True)
class Line:
    """One line of input: its bytes (without the newline), or a prefix and its full length when over the limit."""

    data: bytes
    length: int
    fingerprint: str
    too_long: bool = False


def read_lines(
    lines: IO[bytes], where: str, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Line]:
    """The lines of a file, never holding more than ``max_line_bytes`` of one in memory.

    Each line carries a digest of every byte read so far, this line included: a different file
    (or stdin input) with the same name and line numbers gets different event ids, while a replay
    of the same bytes — or of a file that was only appended to — gets the same ones. A truncated or
    corrupt gzip stream is an error naming the line it stopped at.
    """
    digest = (
        hashlib.sha256()
    )  # hardware-accelerated on current CPUs: the cheapest strong digest per line
    number = 0
    readline = lines.readline
    try:
        while True:
            chunk = readline(max_line_bytes + 2)  # the limit, and a CRLF
            if not chunk:
                return
            number += 1
            digest.update(chunk)
            data = chunk.rstrip(b"\r\n")
            ended = chunk.endswith(b"\n")
            if len(data) <= max_line_bytes and (ended or len(chunk) < max_line_bytes + 2):
                yield Line(data, len(chunk), digest.hexdigest()[:32])
                continue
            # Over the limit: keep a prefix for the dead letter, stream the rest through the digest.
            prefix, length = chunk[: min(KEPT_PREFIX, max_line_bytes)], len(chunk) - ended
            more = not ended and len(chunk) == max_line_bytes + 2
            chunk = data = b""
            if more:
                length += _rest_of_line(readline, max_line_bytes, digest.update)
            yield Line(prefix, length, digest.hexdigest()[:32], too_long=True)
    except (EOFError, OSError, zlib.error) as exc:
        raise SquallError(
            f"{where}: cannot read past line {number}: {exc or type(exc).__name__} "
            "(truncated or corrupt gzip?)"
        ) from None


def _rest_of_line(
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


def _batches(
    lines: IO[bytes],
    stream: str,
    shard: str,
    max_records: int,
    spout: Spout,
    *,
    skip_blank: bool,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[list[Record]]:
    """``read_lines`` made into batches of records; the usual line (under the limit) is read
    inline here — this runs per line, and a ``Line`` and a second generator per line cost as much
    as the rest of the spout."""
    batch: list[Record] = []
    append = batch.append
    digest = hashlib.sha256()
    update, hexdigest = digest.update, digest.hexdigest
    readline = lines.readline
    limit = max_line_bytes + 2  # the limit, and a CRLF
    number = 0
    source: str | None = None
    where = f"{spout.id}: {stream}"
    try:
        while True:
            chunk = readline(limit)
            if not chunk:
                break
            number += 1
            update(chunk)
            defect = None
            data = chunk.rstrip(b"\r\n")
            ended = chunk.endswith(b"\n")
            if len(data) <= max_line_bytes and (ended or len(chunk) < limit):
                if skip_blank and not data.strip():
                    continue
            else:  # over the limit: a prefix for the dead letter, the rest through the digest
                more = not ended and len(chunk) == limit
                length = len(chunk) - ended
                data = chunk[: min(KEPT_PREFIX, max_line_bytes)]
                chunk = b""
                if more:
                    length += _rest_of_line(readline, max_line_bytes, update)
                defect = (
                    f"line {number} is {length} bytes, over max_line_bytes ({max_line_bytes}); "
                    f"only its first {len(data)} bytes are kept"
                )
            fingerprint = hexdigest()[:32]
            if source is None:  # the input's first record names it (see RecordMeta.source)
                source = fingerprint
            # Every field, in order (squall.event.new_meta): stream, shard, sequence, sub-sequence,
            # partition key, arrival time, explicit hash key, fingerprint, defect, source, replay.
            meta = (stream, shard, str(number), 0, "", None, None, fingerprint, defect, source, 0)
            append(Record(data, new_meta(RecordMeta, meta)))
            if len(batch) >= max_records:
                yield batch
                batch = []
                append = batch.append
                if spout.stopping:
                    return
    except (EOFError, OSError, zlib.error) as exc:
        raise SquallError(
            f"{where}: cannot read past line {number}: {exc or type(exc).__name__} "
            "(truncated or corrupt gzip?)"
        ) from None
    if batch:
        yield batch


def path_spout_config(path: str | Path, spout_id: str = "spout") -> ComponentConfig:
    """The spout config for ``squall run --input PATH`` (``-`` is stdin), keeping the topology's spout id."""
    if str(path) == "-":
        return StdinConfig(id=spout_id, type="stdin")
    return FileConfig(id=spout_id, type="file", path=str(Path(path).resolve()))
