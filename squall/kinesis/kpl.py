"""KPL (Kinesis Producer Library) aggregated records: detection and de-aggregation.

Every spout hands its records to ``deaggregate`` once, so file, Kinesis, Lambda and KCL sources
all see user records with sub-sequence numbers.

The format (amazon-kinesis-producer ``aggregation-format.md``): the 4-byte magic ``f3 89 9a c2``,
a protobuf ``AggregatedRecord`` (tables of partition keys and explicit hash keys, and records
that point into them by index), then the 16-byte MD5 digest of the protobuf bytes. Unlike the
KCL and ``aws_kinesis_agg``'s de-aggregator, a record that starts with the magic but fails a check
is never passed through or dropped: it raises ``DecodeError``, and the engine dead-letters it
whole, raw bytes included.
"""

from __future__ import annotations

from squall.errors import DecodeError
from squall.event import Position, Record, RecordMeta

#: First four bytes of a KPL aggregated record.
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
#: Length of the MD5 digest that ends an aggregate.
DIGEST_SIZE = 16

_AggregatedRecord = None


def _message_class():
    # Imported on first aggregate: plain records never pay for protobuf (~8 ms of every start).
    global _AggregatedRecord
    if _AggregatedRecord is None:
        # aws_kinesis_agg's generated messages_pb2 does ``import config_pb2`` as a top-level
        # module (its aggregator puts the package folder on sys.path first); alias it instead.
        import sys

        from aws_kinesis_agg import config_pb2

        sys.modules.setdefault("config_pb2", config_pb2)
        from aws_kinesis_agg.messages_pb2 import AggregatedRecord

        _AggregatedRecord = AggregatedRecord
    return _AggregatedRecord


def is_aggregated(data: bytes) -> bool:
    return data[:4] == KPL_MAGIC


def deaggregate(record: Record) -> list[Record]:
    """User records of a Kinesis record: itself, or the sub-records of a KPL aggregate.

    Sub-record ``i`` keeps the aggregate's stream, shard, sequence number and arrival time, gets
    ``sub_sequence_number=i`` and the partition key (and explicit hash key) from the aggregate's
    tables. Raises ``DecodeError`` for a corrupt aggregate (bad digest, truncated protobuf, bad index).
    """
    data = record.data
    if data[:4] != KPL_MAGIC:
        return [record]
    agg = _parse(data)
    _check(agg)
    pks = agg.partition_key_table
    ehks = agg.explicit_hash_key_table
    meta = record.meta
    return [
        Record(
            user.data,
            RecordMeta(
                stream=meta.stream,
                shard_id=meta.shard_id,
                sequence_number=meta.sequence_number,
                sub_sequence_number=i,
                partition_key=pks[user.partition_key_index],
                arrival_time=meta.arrival_time,
                explicit_hash_key=ehks[user.explicit_hash_key_index]
                if user.HasField("explicit_hash_key_index")
                else None,
            ),
        )
        for i, user in enumerate(agg.records)
    ]


def _check(agg) -> None:
    """Every user record's key indexes point into the tables, and there is at least one."""
    pks = len(agg.partition_key_table)
    ehks = len(agg.explicit_hash_key_table)
    for i, user in enumerate(agg.records):
        if user.partition_key_index >= pks:
            raise DecodeError(
                f"corrupt KPL aggregate: user record {i} has partition_key_index "
                f"{user.partition_key_index}, but the partition key table has {pks} entries"
            )
        if user.HasField("explicit_hash_key_index") and user.explicit_hash_key_index >= ehks:
            raise DecodeError(
                f"corrupt KPL aggregate: user record {i} has explicit_hash_key_index "
                f"{user.explicit_hash_key_index}, but the explicit hash key table has {ehks} entries"
            )
    if not agg.records:
        raise DecodeError("corrupt KPL aggregate: it holds no user records")


def user_record_count(data: bytes) -> int:
    """How many user records a Kinesis record carries: 1 for a plain (or corrupt) record.

    Corrupt means whatever ``deaggregate`` refuses — a bad key index too: such an aggregate is
    dead-lettered whole, as sub-record 0, so its last position is sub-record 0.
    """
    if data[:4] != KPL_MAGIC:
        return 1
    try:
        agg = _parse(data)
        _check(agg)
    except DecodeError:
        return 1  # dead-lettered whole, as one record
    return len(agg.records)


def last_position(record: Record) -> Position:
    """Position of the last user record in ``record`` (the aggregate's last sub-sequence)."""
    meta = record.meta
    if meta.sub_sequence_number or not is_aggregated(record.data):
        return meta.position
    return Position(meta.sequence_number, user_record_count(record.data) - 1)


def _parse(data: bytes):
    if len(data) < len(KPL_MAGIC) + DIGEST_SIZE:
        raise DecodeError(
            f"corrupt KPL aggregate: {len(data)} bytes is shorter than the magic and the MD5 digest "
            f"({len(KPL_MAGIC) + DIGEST_SIZE} bytes)"
        )
    body = data[len(KPL_MAGIC) : -DIGEST_SIZE]
    import hashlib  # OpenSSL's MD5: imported at the first aggregate (squall.digests)

    if hashlib.md5(body).digest() != data[-DIGEST_SIZE:]:
        raise DecodeError(
            f"corrupt KPL aggregate: MD5 digest mismatch over {len(body)} protobuf bytes "
            "(truncated or altered record)"
        )
    from google.protobuf.message import DecodeError as ProtobufDecodeError  # with the class

    agg = _message_class()()
    try:
        agg.ParseFromString(body)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"corrupt KPL aggregate: protobuf cannot be parsed: {exc}") from None
    if not agg.IsInitialized():  # proto2 required fields: the parser does not insist on them
        missing = ", ".join(agg.FindInitializationErrors())
        raise DecodeError(f"corrupt KPL aggregate: required protobuf fields missing: {missing}")
    return agg
