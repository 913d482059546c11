"""An unquoted ``010`` or ``1:30`` where an option takes a duration: YAML 1.1 reads it in octal (8)
or base 60 (90), a number of seconds few mean (``max_future: 010`` bounded event times at 8
seconds, ``size: 1:30`` made 90-second windows), silently. Number options were refused such a
reading (tests/topology/test_yaml_edge_cases.py); duration options now are too, each located."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load

TOPOLOGY = """\
name: t
resources:
  state: {{url: "sqlite:///{tmp}/state.db"}}
  db: {{url: "sqlite:///{tmp}/db.db"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: w
    type: window
    store: state
    size: {size}
    hop: {hop}
    allowed_lateness: {lateness}
    idle_shard_after: {idle}
    max_future: {future}
    aggregates: {{n: {{fn: count}}}}
  - {{id: sub, type: subscription, store: state, max_future: {sub_future}}}
sinks:
  - id: out
    type: warehouse
    resource: db
    table: t
    columns: {{ts: {{path: ts, type: timestamp}}}}
    partition_by: {{column: ts, max_future: {part_future}, max_age: {part_age}}}
"""

GOOD = {
    "size": "1h",
    "hop": "1m",
    "lateness": "0",
    "idle": "5m",
    "future": "5m",
    "sub_future": "5m",
    "part_future": "1d",
    "part_age": "366d",
}


def write(tmp_path: Path, **options: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(tmp=tmp_path, **{**GOOD, **options}))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(TopologyError) as exc:
        load(path, env={})
    return [str(p) for p in exc.value.problems]


def test_an_octal_duration_is_refused_at_its_place_with_what_to_write(tmp_path: Path):
    path = write(tmp_path, future="010", sub_future="0300", part_age="0100", lateness="05")
    assert problems(path) == [
        f"{path}:15:17: bolts[1].max_future: YAML reads the unquoted 010 as an octal number, "
        "8 seconds: write 10s (or 8s if that is the one meant)",
        f"{path}:17:61: bolts[2].max_future: YAML reads the unquoted 0300 as an octal number, "
        "192 seconds: write 300s (or 192s if that is the one meant)",
        f"{path}:24:57: sinks[0].partition_by.max_age: YAML reads the unquoted 0100 as an octal "
        "number, 64 seconds: write 100s (or 64s if that is the one meant)",
    ]  # `05` is 5 in octal too: it stands


def test_a_base_60_duration_is_refused_with_both_readings_of_a_clock_time(tmp_path: Path):
    path = write(tmp_path, size="1:30", hop="30s", idle="1:30:00", part_future="0x10")
    assert problems(path) == [
        f"{path}:11:11: bolts[1].size: YAML reads the unquoted 1:30 as a number in base 60, "
        "90 seconds: write the duration with its unit (90s if that is the one meant; 90m for "
        "1:30 as hours and minutes)",
        f"{path}:14:23: bolts[1].idle_shard_after: YAML reads the unquoted 1:30:00 as a number in "
        "base 60, 5400 seconds: write the duration with its unit (90m if that is the one meant)",
    ]  # `0x10` (16) is no octal nor base 60 reading: it stands, like a number option's


def test_a_duration_its_option_refuses_too_says_how_yaml_read_it(tmp_path: Path):
    """`size: off` was "not a duration: False"; `hop: 1:50` (110 seconds, which divides no
    hour) was said only as the window's "hop must divide size"."""
    found = problems(write(tmp_path, size="off"))
    assert [p.split(": ", 1)[1] for p in found] == [
        "bolts[1].size: YAML reads the unquoted off as the boolean false, which is no duration: "
        "write the duration meant (e.g. 30s, 5m)"
    ]
    found = problems(write(tmp_path, hop="1:50"))
    assert any(p.endswith("bolts[1]: hop must divide size (e.g. size: 1h, hop: 5m)") for p in found)
    assert any(
        "bolts[1].hop: YAML reads the unquoted 1:50 as a number in base 60, 110 seconds" in p
        for p in found
    ), found


def test_quoted_or_unit_durations_stand_and_a_variable_reads_as_yaml_would(tmp_path: Path):
    path = write(tmp_path, size="${SIZE}", hop="1:00", lateness="10s", future="1:0:0")
    with pytest.raises(TopologyError) as exc:
        load(path, env={"SIZE": "0100"})  # `${SIZE}` unquoted reads as YAML would read 0100
    assert [p.path for p in exc.value.problems] == [
        "bolts[1]",  # 64 seconds in windows of a minute: hop must divide size
        "bolts[1].size",
        "bolts[1].hop",
        "bolts[1].max_future",
    ]
    topo = load(write(tmp_path, future="'010'", size="'0120'", hop="1m", lateness="10s"), env={})
    window = topo.bolts[1]
    assert (window.max_future, window.size, window.allowed_lateness) == ("010", "0120", "10s")


def test_a_negative_octal_or_base_60_duration_is_not_answered_with_a_negative_one(tmp_path: Path):
    """`max_future: -010` was told "write -10s (or -8s …)", and `-10s` is refused in its turn:
    no duration is negative, whichever the reading."""
    path = write(tmp_path, future="-010", size="-1:30")
    assert [p.split(": ", 1)[1] for p in problems(path)] == [
        "bolts[1].size: YAML reads the unquoted -1:30 as a number in base 60, -90 seconds, and a "
        "duration is never negative: write 0 or more with its unit (e.g. 10s, 5m)",
        "bolts[1].max_future: YAML reads the unquoted -010 as an octal number, -8 seconds, and a "
        "duration is never negative: write 0 or more with its unit (e.g. 10s, 5m)",
    ]


def test_an_unquoted_off_where_null_is_no_bound_says_null_is_the_way(tmp_path: Path):
    """`max_future: off` (no bound meant) was told to write a duration: null is no bound there.
    The same for a seconds option that takes null (`statement_timeout: off`), not where null is
    refused (`size`)."""
    path = write(tmp_path, future="off", size="no", part_age="off")
    path.write_text(
        path.read_text().replace("table: t\n", "table: t\n    statement_timeout: off\n")
    )
    assert [p.split(": ", 1)[1] for p in problems(path)] == [
        "bolts[1].size: YAML reads the unquoted no as the boolean false, which is no duration: "
        "write the duration meant (e.g. 30s, 5m)",
        "bolts[1].max_future: YAML reads the unquoted off as the boolean false, which is no "
        "duration: write the duration meant (e.g. 30s, 5m), or null for no value",
        "sinks[0].statement_timeout: YAML reads the unquoted off as the boolean false, which is "
        "no duration: write the duration meant (e.g. 30s, 5m), or null for no value",
        "sinks[0].partition_by.max_age: YAML reads the unquoted off as the boolean false, which "
        "is no duration: write the duration meant (e.g. 30s, 5m), or null for no value",
    ]
