"""Record metadata round-trips through a dead letter's ``meta`` (``as_dict`` and ``from_dict``)."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.event import RecordMeta, derive_event_id

text = st.text(max_size=40)
some_text = st.none() | st.text(min_size=1, max_size=40)
zones = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
metas = st.builds(
    RecordMeta,
    stream=text,
    shard_id=text,
    sequence_number=st.integers(0, 10**40).map(str),
    sub_sequence_number=st.integers(0, 2**31),
    partition_key=text,
    arrival_time=st.none() | st.builds(lambda t, z: t.replace(tzinfo=z), st.datetimes(), zones),
    explicit_hash_key=some_text,
    fingerprint=some_text,
    defect=some_text,
    source=some_text,
    replay=st.integers(0, 1000),
)


@given(metas)
def test_metadata_round_trips_exactly_through_a_dead_letters_json(meta: RecordMeta):
    back = RecordMeta.from_dict(orjson.loads(orjson.dumps(meta.as_dict())))
    assert back == meta
    assert derive_event_id(back) == derive_event_id(meta)


def test_the_replay_count_is_not_part_of_the_event_id():
    meta = RecordMeta("s", "shard", "7", fingerprint="f")
    assert derive_event_id(meta._replace(replay=3)) == derive_event_id(meta)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "meta is not an object"),
        ({"shard_id": "a", "sequence_number": "1"}, "meta.stream is missing"),
        ({"stream": "s", "shard_id": 1, "sequence_number": "1"}, "meta.shard_id is not text"),
        (
            {"stream": "s", "shard_id": "a", "sequence_number": "1", "sub_sequence_number": "2"},
            "meta.sub_sequence_number is not a non-negative integer",
        ),
        (
            {"stream": "s", "shard_id": "a", "sequence_number": "1", "arrival_time": "noon"},
            "meta.arrival_time is not an ISO-8601 time",
        ),
        (
            {"stream": "s", "shard_id": "a", "sequence_number": "1", "source": 5},
            "meta.source is not text",
        ),
    ],
)
def test_a_malformed_meta_names_its_field(doc, message):
    with pytest.raises(ValueError, match=message):
        RecordMeta.from_dict(doc)


def test_spouts_that_build_metadata_positionally_fill_every_field(tmp_path):
    """The file spout and the Lambda consumer build ``RecordMeta`` with ``new_meta`` (no
    defaults): a field added to ``RecordMeta`` must be added there too, else its records are
    one value short (unequal to the class-built metadata, and the new field unreadable)."""
    import base64

    from squall.deploy.lambda_consumer import records_from_event
    from squall.spouts.file import _batches

    class Spout:
        id, stopping = "spout", False

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    with path.open("rb") as fh:
        records = [
            r for b in _batches(fh, "in.jsonl", "file", 10, Spout(), skip_blank=True) for r in b
        ]
    first = records[0].meta
    assert first == RecordMeta(
        "in.jsonl", "file", "1", fingerprint=first.fingerprint, source=first.fingerprint
    )
    event = {
        "Records": [
            {
                "eventSource": "aws:kinesis",
                "eventID": "shardId-000000000001:4954",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                "kinesis": {
                    "sequenceNumber": "4954",
                    "partitionKey": "pk",
                    "data": base64.b64encode(b"{}").decode(),
                    "approximateArrivalTimestamp": 1.5,
                },
            }
        ]
    }
    (record,) = records_from_event(event)
    assert record.meta == RecordMeta(
        "s", "shardId-000000000001", "4954", 0, "pk", record.meta.arrival_time
    )
    for meta in (first, record.meta):
        assert len(meta) == len(RecordMeta._fields)
        assert meta.replay == 0
