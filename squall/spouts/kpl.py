"""KPL (Kinesis Producer Library) aggregated records: detection and de-aggregation.

Every spout hands its records to ``deaggregate`` once, so file, Kinesis, Lambda and KCL sources
all see user records with sub-sequence numbers.
"""

from __future__ import annotations

from squall.event import Record

#: First four bytes of a KPL aggregated record.
KPL_MAGIC = b"\xf3\x89\x9a\xc2"


def is_aggregated(data: bytes) -> bool:
    return data[:4] == KPL_MAGIC


def deaggregate(record: Record) -> list[Record]:
    """User records of a Kinesis record: itself, or the sub-records of a KPL aggregate.

    Raises ``DecodeError`` for a corrupt aggregate (bad digest, truncated protobuf, bad index).
    """
    if not is_aggregated(record.data):
        return [record]
    from squall.errors import DecodeError

    raise DecodeError("KPL aggregated record: de-aggregation is not implemented yet")
