"""KPL de-aggregation: round trips with aws-kinesis-agg's aggregator, corruption, fast path."""

from __future__ import annotations

import hashlib

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.errors import DecodeError
from squall.event import Position, Record, RecordMeta, derive_event_id
from squall.kinesis.kpl import (
    KPL_MAGIC,
    _message_class,
    deaggregate,
    last_position,
    user_record_count,
)

META = RecordMeta(
    "stream-a",
    "shardId-000000000001",
    "49590338271490256608559692538361571095921575989136588898",
    partition_key="aggregate-key",
)


def aggregate(records: list[tuple[str, bytes, str | None]], max_size: int = 1024 * 1024) -> bytes:
    agg = RecordAggregator(max_size=max_size)
    for pk, data, ehk in records:
        assert agg.add_user_record(pk, data, ehk) is None, "test aggregate overflowed"
    return agg.clear_and_get().get_contents()[2]


def frame(body: bytes) -> bytes:
    return KPL_MAGIC + body + hashlib.md5(body).digest()


partition_keys = st.text(min_size=1, max_size=256)
hash_keys = st.none() | st.integers(0, 2**128 - 1).map(str)
# Mostly small records, some empty, now and then one of up to 400 KB; an aggregate stays under 1 MiB.
payloads = st.binary(max_size=2000) | st.builds(
    lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(100_000, 400_000)
)
user_records = st.lists(
    st.tuples(partition_keys, payloads, hash_keys), min_size=1, max_size=40
).filter(lambda rs: sum(len(d) + len(pk.encode()) + 64 for pk, d, _ in rs) < 1_000_000)


@settings(max_examples=150, deadline=None)
@given(user_records)
def test_aggregates_from_aws_kinesis_agg_round_trip(records):
    subs = deaggregate(Record(aggregate(records), META))
    assert [(s.meta.partition_key, s.data, s.meta.explicit_hash_key) for s in subs] == records
    assert [s.meta.sub_sequence_number for s in subs] == list(range(len(records)))
    assert {s.meta.sequence_number for s in subs} == {META.sequence_number}
    assert {s.meta.shard_id for s in subs} == {META.shard_id}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=3000)),
        min_size=1,
        max_size=300,
    )
)
def test_squall_aggregator_round_trips_and_groups_by_shard(records):
    from squall.kinesis.putrecords import Aggregator, ShardMap, hash_key
    from squall.kinesis.shards import ShardInfo

    quarter = 2**126
    shard_map = ShardMap(
        [ShardInfo(f"s{i}", (), i * quarter, (i + 1) * quarter - 1) for i in range(4)]
    )
    agg = Aggregator(shard_map, max_bytes=20_000)
    entries = []
    for i, (pk, data) in enumerate(records):
        entries.extend(agg.add(data, pk, None, i))
    entries.extend(agg.flush())
    seen = []
    for entry in entries:
        subs = deaggregate(
            Record(entry.data, RecordMeta("s", "sh", "1", partition_key=entry.partition_key))
        )
        assert [s.meta.partition_key for s in subs] == [records[i][0] for i in entry.items]
        assert [s.data for s in subs] == [records[i][1] for i in entry.items]
        shards = {shard_map.shard_for(s.meta.partition_key) for s in subs}
        assert shards == {
            shard_map.shard_for(entry.partition_key)
        }  # the aggregate lands where its keys belong
        assert hash_key(entry.partition_key) >= 0
        seen.extend(entry.items)
    assert sorted(seen) == list(range(len(records)))
    by_shard: dict[str, list[int]] = {}
    for entry in entries:
        by_shard.setdefault(shard_map.shard_for(entry.partition_key), []).extend(entry.items)
    assert all(items == sorted(items) for items in by_shard.values())  # in input order per shard


def test_event_ids_differ_per_sub_record_and_are_stable():
    data = aggregate([("a", b"1", None), ("a", b"1", None), ("b", b"2", None)])
    first = [derive_event_id(s.meta) for s in deaggregate(Record(data, META))]
    again = [derive_event_id(s.meta) for s in deaggregate(Record(data, META))]
    assert first == again
    assert len(set(first)) == 3


def test_empty_and_binary_user_records_survive():
    records = [
        ("k", b"", None),
        ("k", bytes(range(256)), None),
        ("\u00e9\u4e2d", b"\x00" * 10, "0"),
    ]
    subs = deaggregate(Record(aggregate(records), META))
    assert [(s.meta.partition_key, s.data, s.meta.explicit_hash_key) for s in subs] == records


def test_max_size_user_record_round_trips():
    # The largest user record the aggregator accepts in a 1 MiB aggregate.
    big = bytes(range(256)) * (1024 * 4 - 1) + b"x" * 200
    data = aggregate([("k", big, None)])
    assert len(data) <= 1024 * 1024
    (sub,) = deaggregate(Record(data, META))
    assert sub.data == big


def test_plain_record_is_returned_unchanged():
    rec = Record(b'{"a": 1}', META)
    assert deaggregate(rec) == [rec]
    assert deaggregate(rec)[0] is rec
    assert user_record_count(rec.data) == 1


@given(st.binary(max_size=200))
def test_any_record_without_the_magic_is_plain(data):
    if data[:4] == KPL_MAGIC:
        return
    rec = Record(data, META)
    assert deaggregate(rec) == [rec]


def test_bad_md5_is_a_decode_error():
    data = bytearray(aggregate([("a", b"hello", None), ("b", b"world", None)]))
    data[-1] ^= 0xFF
    with pytest.raises(DecodeError, match="MD5 digest mismatch"):
        deaggregate(Record(bytes(data), META))


def test_altered_payload_is_a_decode_error():
    data = bytearray(aggregate([("a", b"hello", None)]))
    data[10] ^= 0x01
    with pytest.raises(DecodeError, match="MD5"):
        deaggregate(Record(bytes(data), META))


@pytest.mark.parametrize("cut", [1, 5, 16, 20])
def test_truncated_aggregate_is_a_decode_error(cut):
    data = aggregate([("a", b"hello" * 10, None), ("b", b"world" * 10, None)])
    with pytest.raises(DecodeError, match="corrupt KPL aggregate"):
        deaggregate(Record(data[:-cut], META))


def test_too_short_for_a_digest_is_a_decode_error():
    with pytest.raises(DecodeError, match="shorter than the magic and the MD5 digest"):
        deaggregate(Record(KPL_MAGIC + b"\x00" * 5, META))


def test_truncated_protobuf_with_matching_digest_is_a_decode_error():
    body = aggregate([("a", b"hello" * 10, None)])[4:-16]
    with pytest.raises(DecodeError, match="protobuf cannot be parsed"):
        deaggregate(Record(frame(body[:-3]), META))


def test_out_of_range_partition_key_index_is_a_decode_error():
    msg = _message_class()()
    msg.partition_key_table.append("only")
    r = msg.records.add()
    r.partition_key_index = 3
    r.data = b"x"
    with pytest.raises(DecodeError, match="partition_key_index 3"):
        deaggregate(Record(frame(msg.SerializeToString()), META))


def test_out_of_range_explicit_hash_key_index_is_a_decode_error():
    msg = _message_class()()
    msg.partition_key_table.append("pk")
    r = msg.records.add()
    r.partition_key_index = 0
    r.explicit_hash_key_index = 1
    r.data = b"x"
    with pytest.raises(DecodeError, match="explicit_hash_key_index 1"):
        deaggregate(Record(frame(msg.SerializeToString()), META))


def test_missing_required_field_is_a_decode_error():
    msg = _message_class()()
    msg.partition_key_table.append("pk")
    msg.records.add().partition_key_index = 0  # no data
    with pytest.raises(DecodeError, match="required protobuf fields missing"):
        deaggregate(Record(frame(msg.SerializePartialToString()), META))


def test_aggregate_without_user_records_is_a_decode_error():
    with pytest.raises(DecodeError, match="no user records"):
        deaggregate(Record(frame(b""), META))


def test_last_position_of_an_aggregate_is_its_last_sub_record():
    data = aggregate([("a", b"1", None), ("b", b"2", None), ("c", b"3", None)])
    assert last_position(Record(data, META)) == Position(META.sequence_number, 2)
    assert last_position(Record(b"plain", META)) == Position(META.sequence_number, 0)
    assert user_record_count(data[:-1]) == 1  # corrupt: dead-lettered whole


def test_the_engine_imports_protobuf_only_for_an_aggregate():
    """Every runner imports the engine, which imports this module: protobuf (~8 ms) waits for
    the first record that starts with the KPL magic."""
    import subprocess
    import sys

    code = (
        "import sys; import squall.topology.executor; "
        "print(sorted(m for m in sys.modules if m.startswith('google.protobuf')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
