"""The line reader's records are the ``Record``s the dataclass builds.

``line_batches`` sets a record's slots itself rather than calling the dataclass's ``__init__`` (a
Python call per line): a field added to ``Record`` must be set there too, and this fails until it
is.
"""

from __future__ import annotations

import dataclasses
import io

from squall.event import Record
from squall.spouts.lines import line_batches


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
