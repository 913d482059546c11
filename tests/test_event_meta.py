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
