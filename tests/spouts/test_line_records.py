"""The line reader's records are the ``Record``s the dataclass builds.

``line_batches`` sets a record's slots itself rather than calling the dataclass's ``__init__`` (a
Python call per line): a field added to ``Record`` must be set there too, and this fails until it
is.
"""

from __future__ import annotations

import dataclasses
import gzip
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.event import Record
from squall.spouts.file import read_lines
from squall.spouts.lines import BOM, KEPT_PREFIX, line_batches


def test_line_records_are_those_the_dataclass_builds():
    lines = io.BytesIO(b'{"a": 1}\n\n{"b": 2}\r\n' + b"x" * 40 + b"\n")
    batches = list(
        line_batches(lines, "s", "file", 2, where="test", skip_blank=True, max_line_bytes=16)
    )
    records = [r for b in batches for r in b]
    assert [len(b) for b in batches] == [2, 1]
    assert [r.data for r in records] == [b'{"a": 1}', b'{"b": 2}', b"x" * 16]
    for rec in records:
        assert type(rec) is Record
        built = Record(rec.data, rec.meta)
        assert rec == built
        for f in dataclasses.fields(Record):
            assert getattr(rec, f.name) == getattr(built, f.name), f.name
    assert records[2].meta.defect is not None  # over max_line_bytes: a prefix and the reason


class _ShortReads(io.RawIOBase):
    """A pipe's reads: a few bytes each (stdin, an S3 body), as ``io.BufferedReader``'s raw."""

    def __init__(self, data: bytes, sizes: list[int]):
        self.data, self.at, self.sizes = data, 0, sizes or [1]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.sizes[self.at % len(self.sizes)], len(self.data) - self.at)
        buffer[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def _reader(data: bytes, kind: str, sizes: list[int]):
    if kind == "gzip":  # two members, cut anywhere
        cut = sizes[0] % (len(data) + 1) if sizes else 0
        body = gzip.compress(data[:cut]) + gzip.compress(data[cut:])
        return gzip.GzipFile(fileobj=io.BytesIO(body))
    if kind == "short":
        return io.BufferedReader(_ShortReads(data, sizes), 4)
    return io.BytesIO(data)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([b"a", b"bc", b"xyzw", b" ", b"\t", b"\n", b"\r\n", b"\r", BOM, b"\n\n"]),
        max_size=16,
    ),
    kind=st.sampled_from(["bytes", "short", "gzip"]),
    sizes=st.lists(st.integers(1, 5), max_size=4),
    max_line_bytes=st.integers(1, 7),
    max_records=st.integers(1, 4),
    skip_blank=st.booleans(),
    strip_bom=st.booleans(),
)
def test_line_batches_are_the_line_readers_lines(
    pieces, kind, sizes, max_line_bytes, max_records, skip_blank, strip_bom
):
    """``line_batches`` (the spouts' inline reader) gives the lines ``read_lines`` (the line by
    line reader) gives, whatever the ends (CRLF, a lone CR, none at the end), lines at, under and
    over the limit, short reads or gzip members: the same bytes, numbers and fingerprints, the
    over-long ones a defect; blank ones skipped with ``skip_blank``, the BOM dropped from line 1
    only; the input's first record its source; batches of ``max_records``."""
    data = b"".join(pieces)
    physical = io.BytesIO(data).readlines()
    expected = []
    for number, line in enumerate(read_lines(_reader(data, kind, sizes), "w", max_line_bytes), 1):
        if skip_blank and not line.too_long and not line.data.strip():
            continue
        kept = line.data
        if line.too_long:  # its prefix: of the line's first read without the CRs and LFs ending it
            first = physical[number - 1][: max_line_bytes + 2].rstrip(b"\r\n")
            kept = first[: min(KEPT_PREFIX, max_line_bytes)]
        if strip_bom and number == 1 and kept.startswith(BOM):
            kept = kept[len(BOM) :]
        expected.append((kept, str(number), line.fingerprint, line.too_long))
    batches = list(
        line_batches(
            _reader(data, kind, sizes),
            "s",
            "file",
            max_records,
            where="w",
            skip_blank=skip_blank,
            max_line_bytes=max_line_bytes,
            strip_bom=strip_bom,
        )
    )
    records = [r for b in batches for r in b]
    assert [len(b) for b in batches[:-1]] == [max_records] * (len(batches) - 1)
    assert all(batches)
    got = [
        (r.data, r.meta.sequence_number, r.meta.fingerprint, r.meta.defect is not None)
        for r in records
    ]
    assert got == expected
    assert {r.meta.source for r in records} <= {expected[0][2] if expected else None}
