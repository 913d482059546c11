"""A topology whose `s3` spout reads the objects its own `s3` or `dead_letter_s3` sink writes is
refused at load: in Lambda each object put is an S3 notification that invokes the function
again (a loop without end, paid per invocation); locally each run read the last one's lake
rows and dead letters as input. It was accepted (`squall validate` said ok)."""

from __future__ import annotations

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load_text


def topology(spout: str, sinks: str) -> str:
    return f"name: etl\nspout: {spout}\nbolts: [{{id: decode, type: json}}]\nsinks:\n{sinks}"


LAKE = "  - {id: lake, type: s3, bucket: landing, prefix: out/, time_field: at}\n"
DEAD = "  - {id: dl, type: dead_letter_s3, bucket: landing}\n"


def test_sinks_writing_under_the_spouts_prefix_are_refused_and_located():
    text = topology("{type: s3, bucket: landing}", LAKE + DEAD)
    with pytest.raises(TopologyError) as err:
        load_text(text, file="etl.yaml")
    problems = err.value.problems
    assert [p.path for p in problems] == ["sinks[0].prefix", "sinks[1].prefix"]
    assert problems[0].line == 5
    assert "sink 'lake' would write s3://landing/out/dt=*.jsonl.gz objects" in problems[0].message
    assert "where the spout reads its input (s3://landing/)" in problems[0].message
    assert "s3://landing/dead-letters/*.jsonl.gz" in problems[1].message


@pytest.mark.parametrize(
    "spout",
    [
        "{type: s3, bucket: landing, prefix: out/dt=}",  # a narrower prefix of the sink's keys
        "{type: s3, bucket: landing, prefix: out/, suffix: .gz}",
        "{type: s3, bucket: landing, prefix: out/, suffix: 7.jsonl.gz}",  # a position's digit
        "{type: s3, bucket: landing, prefix: out/, suffix: b.jsonl.gz}",  # a fingerprint's
    ],
)
def test_a_spout_that_would_read_some_of_the_objects_is_refused(spout: str):
    with pytest.raises(TopologyError, match="sink 'lake' would write"):
        load_text(topology(spout, LAKE))


@pytest.mark.parametrize(
    "spout, sink",
    [
        ("{type: s3, bucket: landing, prefix: dt=}", "time_field: at"),  # the bucket's root
        ("{type: s3, bucket: landing, prefix: in/}", "partition: 'in/%Y'"),
        ("{type: s3, bucket: landing, prefix: all/}", "partition: all"),  # no directive
    ],
)
def test_the_partition_folders_are_where_the_sink_writes(spout: str, sink: str):
    lake = f"  - {{id: lake, type: s3, bucket: landing, {sink}}}\n"
    with pytest.raises(TopologyError, match="sink 'lake' would write"):
        load_text(topology(spout, lake))


@pytest.mark.parametrize(
    "spout, sinks",
    [
        ("{type: s3, bucket: landing, prefix: in/}", LAKE + DEAD),  # other prefixes
        ("{type: s3, bucket: other}", LAKE + DEAD),  # another bucket
        ("{type: s3, bucket: landing, suffix: .jsonl}", LAKE + DEAD),  # .jsonl.gz is not read
        (
            "{type: s3, bucket: landing, suffix: .jsonl.gz}",
            "  - {id: lake, type: s3, bucket: landing, format: parquet, time_field: at, "
            "columns: {at: at}}\n",
        ),
        ("{type: stdin}", LAKE + DEAD),  # no S3 input at all
        # a lake at the bucket's root writes dt=…/hour=… folders, not under in/
        ("{type: s3, bucket: landing, prefix: in/}", "  - {id: lake, type: s3, bucket: landing}\n"),
        # a lake's and the dead letters' keys end in a (hex) digit before .jsonl.gz
        ("{type: s3, bucket: landing, suffix: -export.jsonl.gz}", LAKE + DEAD),
    ],
)
def test_sinks_writing_elsewhere_are_accepted(spout: str, sinks: str):
    assert load_text(topology(spout, sinks)).name == "etl"
