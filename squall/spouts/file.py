"""``file`` and ``stdin`` spouts: JSON lines (optionally .gz), one record per line."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from pydantic import Field

from squall.component import ComponentConfig
from squall.errors import SquallError
from squall.event import Record, RecordMeta
from squall.spouts.base import Progress, Spout


class FileConfig(ComponentConfig):
    path: str = Field(description="JSON-lines file (.gz is decompressed), relative to the topology file.")
    stream: str | None = Field(None, description="Stream name in record metadata (default: the file name). "
                                                 "Event ids derive from it and the line number.")
    skip_blank: bool = Field(True, description="Skip empty lines instead of passing them on as records.")


class FileSpout(Spout):
    """Read a JSON-lines file; each line is one record whose sequence number is its line number."""

    Config = FileConfig
    summary = "Read records from a JSON-lines file, optionally gzip-compressed."

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
        yield from _batches(self._lines_of(), self.stream_name, "file", max_records, self,
                            skip_blank=self.config.skip_blank)

    def progress(self) -> Progress:
        done = self._raw.tell() if self._raw and not self._raw.closed else self._total
        return Progress(done, self._total, "bytes")

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()


class StdinConfig(ComponentConfig):
    stream: str = Field("stdin", description="Stream name in record metadata.")
    skip_blank: bool = Field(True, description="Skip empty lines.")


class StdinSpout(Spout):
    """Read JSON lines from standard input until end of file."""

    Config = StdinConfig
    summary = "Read records from standard input, one JSON document per line."

    def read(self, max_records: int) -> Iterator[list[Record]]:
        yield from _batches(sys.stdin.buffer, self.config.stream, "stdin", max_records, self,
                            skip_blank=self.config.skip_blank)


def read_lines(lines: IO[bytes], where: str) -> Iterator[bytes]:
    """The lines of a file; a truncated or corrupt gzip stream is an error naming the line it stopped at."""
    number = 0
    try:
        for number, line in enumerate(lines, start=1):  # noqa: B007 - number is read after the loop
            yield line
    except (EOFError, OSError, zlib.error) as exc:
        raise SquallError(f"{where}: cannot read past line {number}: {exc or type(exc).__name__} "
                          "(truncated or corrupt gzip?)") from None


def _batches(lines: IO[bytes], stream: str, shard: str, max_records: int, spout: Spout, *,
             skip_blank: bool) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for number, line in enumerate(read_lines(lines, f"{spout.id}: {stream}"), start=1):
        data = line.rstrip(b"\r\n")
        if skip_blank and not data.strip():
            continue
        batch.append(Record(data, RecordMeta(stream, shard, str(number))))
        if len(batch) >= max_records:
            yield batch
            batch = []
            if spout.stopping:
                return
    if batch:
        yield batch


def path_spout_config(path: str | Path, spout_id: str = "spout") -> ComponentConfig:
    """The spout config for ``squall run --input PATH`` (``-`` is stdin), keeping the topology's spout id."""
    if str(path) == "-":
        return StdinConfig(id=spout_id, type="stdin")
    return FileConfig(id=spout_id, type="file", path=str(Path(path).resolve()))
