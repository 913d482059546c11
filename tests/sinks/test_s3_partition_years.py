"""The s3 sink's partition folders write a year before 1000 with four digits, as ISO 8601 does.

An RFC 3339 time of the year 1000 with a positive offset is in the year 999 in UTC (the etl
example's schema lets one through to its lake). ``strftime``'s ``%Y`` (the C library's) writes
that year as ``999``: the object went to ``dt=999-12-31/``, a folder no Hive reader takes as a
date and that sorts after ``dt=2026-…``. Its partition is ``dt=0999-12-31/`` now; other years, and
the pattern's other directives and ``%%``, are as ``strftime`` writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow.dataset as ds
import pytest

from squall.component import ComponentContext
from squall.event import Event
from squall.sinks.s3 import S3Sink, S3SinkConfig, partition_text
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome

EVENTS = [
    {"order_id": "o-1", "ts": "1000-01-01T00:30:00+01:00"},  # 0999-12-31T23:30Z
    {"order_id": "o-2", "ts": "0001-01-01T00:00:00Z"},
    {"order_id": "o-3", "ts": "2026-11-03T10:00:00Z"},
]


def topology(endpoint: str, bucket: str) -> str:
    return f"""
name: lake
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: lake
    type: s3
    bucket: {bucket}
    prefix: orders/
    endpoint_url: "{endpoint}"
    format: parquet
    time_field: ts
    columns: {{order_id: order_id, ts: {{path: ts, type: timestamp}}}}
"""


def test_a_year_before_1000_is_a_four_digit_partition_read_back_as_a_date(
    moto_server, s3, bucket, tmp_path
):
    run = run_topology(topology(moto_server.endpoint, bucket), records_from(EVENTS))
    assert {o.outcome for o in run.outcomes} == {Outcome.COMMITTED}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k.split("/")[1] for k in keys] == ["dt=0001-01-01", "dt=0999-12-31", "dt=2026-11-03"]
    for key in keys:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    table = ds.dataset(tmp_path / "orders", format="parquet", partitioning="hive").to_table()
    got = {r["order_id"]: (r["dt"], r["hour"]) for r in table.to_pylist()}
    assert got == {"o-1": ("0999-12-31", 23), "o-2": ("0001-01-01", 0), "o-3": ("2026-11-03", 10)}


@pytest.mark.parametrize(
    ("when", "pattern", "text"),
    [
        (datetime(999, 12, 31, 23, tzinfo=UTC), "dt=%Y-%m-%d/hour=%H", "dt=0999-12-31/hour=23"),
        (datetime(5, 1, 2, tzinfo=UTC), "%Y/%%Y/%y", "0005/%Y/05"),
        (datetime(2026, 11, 3, 9, tzinfo=UTC), "dt=%Y-%m-%d/hour=%H", "dt=2026-11-03/hour=09"),
        # %F is %Y-%m-%d, %G the ISO week's year (the year 2's for 0001-12-31), %C the century
        (datetime(999, 12, 31, 23, tzinfo=UTC), "dt=%F/hour=%H", "dt=0999-12-31/hour=23"),
        (datetime(1, 12, 31, tzinfo=UTC), "%G-W%V/%%F", "0002-W01/%F"),
        (datetime(999, 1, 4, tzinfo=UTC), "c=%C/y=%y", "c=09/y=99"),
        (datetime(2026, 11, 3, 9, tzinfo=UTC), "dt=%F/%G/%C", "dt=2026-11-03/2026/20"),
    ],
)
def test_the_pattern_is_strftime_with_a_four_digit_year(when, pattern, text):
    assert partition_text(when, pattern) == text


def test_an_event_time_that_is_a_datetime_with_an_offset_is_partitioned_in_utc():
    """A bolt (a user's Python one) may put a ``datetime`` in the event: one with an offset was
    partitioned by its own wall clock (``+01:00``'s midnight half past went to the new day),
    not in UTC as the pattern's documentation says."""
    sink = S3Sink(
        S3SinkConfig(id="lake", type="s3", bucket="b", time_field="ts"), ComponentContext("t")
    )
    berlin = timezone(timedelta(hours=1))
    times = [datetime(2026, 1, 1, 0, 30, tzinfo=berlin), datetime(2026, 1, 1, 0, 30)]
    events = [
        Event(r.data, r.meta, None, i, {"ts": when})
        for i, (r, when) in enumerate(zip(records_from([{}, {}]), times, strict=True))
    ]
    prepared = sink.prepare(events)
    assert sorted(obj.group[0] for obj in prepared.payload) == [
        "dt=2025-12-31/hour=23",  # 23:30 in UTC
        "dt=2026-01-01/hour=00",  # a time without an offset is UTC's
    ]
