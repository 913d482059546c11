"""``file`` and ``stdin`` spouts: JSON lines (optionally .gz), one record per line."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pydantic import Field

from squall.component import Capabilities, ComponentConfig
from squall.errors import SquallError, TopologyError
from squall.event import Record
from squall.spouts.base import Progress, Spout
from squall.spouts.lines import (
    KEPT_PREFIX,
    MAX_LINE_BYTES,
    MAX_LINE_DOC,
    MAX_STDIN_LINE_DOC,
    line_batches,
    rest_of_line,
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
    read_interruptible = True  # a FIFO waits for input as stdin does; no position is kept

    @classmethod
    def capabilities(cls, config: FileConfig) -> Capabilities:
        return Capabilities(input_files=(config.path,))

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
        except OSError as exc:  # at the spout's `path` in the topology file, where one is known
            problem = self.context.problem(
                self.id, "path", f"cannot read {self.path}: {exc.strerror}"
            )
            raise TopologyError(problem) from None
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
    max_line_bytes: int = Field(MAX_LINE_BYTES, ge=1, description=MAX_STDIN_LINE_DOC)


class StdinSpout(Spout):
    """Read JSON lines from standard input until end of file."""

    Config = StdinConfig
    summary = "Read records from standard input, one JSON document per line."
    finite = True
    read_interruptible = True  # an idle pipe: a stop must not wait for its next lines

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
    import hashlib  # at the first file read, not at import (squall.digests)

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
                length += rest_of_line(readline, max_line_bytes, digest.update)
            yield Line(prefix, length, digest.hexdigest()[:32], too_long=True)
    except (EOFError, OSError, zlib.error) as exc:
        raise SquallError(
            f"{where}: cannot read past line {number}: {exc or type(exc).__name__} "
            "(truncated or corrupt gzip?)"
        ) from None


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
    """``line_batches`` for a file or stdin: errors name the spout and the stream; reading stops
    when the spout is stopping. A UTF-8 BOM opening the input (Excel and Windows exports) is not
    part of its first line; fingerprints digest the bytes as they are, so event ids are those of
    before."""
    yield from line_batches(
        lines,
        stream,
        shard,
        max_records,
        where=f"{spout.id}: {stream}",
        skip_blank=skip_blank,
        max_line_bytes=max_line_bytes,
        strip_bom=True,
        stopping=lambda: spout.stopping,
    )


def path_spout_config(path: str | Path, spout_id: str = "spout") -> ComponentConfig:
    """The spout config for ``squall run --input PATH`` (``-`` is stdin), keeping the topology's spout id."""
    if str(path) == "-":
        return StdinConfig(id=spout_id, type="stdin")
    return FileConfig(id=spout_id, type="file", path=str(Path(path).resolve()))
