"""A `window` bolt's key fields and time field are checked at load as a sink's paths are: where
a closed schema upstream proves no event has the path, the topology is refused at the option's
line with the closest field. Before (hC), `time_field: tss` or `key: [appid]` under a closed
schema validated, and every event of the run went to the dead letter (`no 'tss'`, `no usable
key field 'appid'`)."""

from __future__ import annotations

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load_text

TOPOLOGY = """
name: window-paths
resources: {{state: {{url: "sqlite:///state.db"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: validate
    type: schema
    schema:
      type: object
      additionalProperties: false
      properties:
        app_id: {{type: string}}
        ts: {{type: integer}}
        device: {{type: object, properties: {{os: {{type: string}}}}}}
  - id: minutely
    type: window
    store: state
    key: [{key}]
    size: 1m
    time_field: {time_field}
    aggregates: {{clicks: {{fn: count}}, last_os: {{fn: last, field: device.oss}}}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink"}}
"""


def test_a_misspelt_key_and_time_field_are_refused_at_their_lines():
    text = TOPOLOGY.format(key="app_id, appid", time_field="tss")
    with pytest.raises(TopologyError) as info:
        load_text(text, file="window.yaml")
    found = info.value.problems
    assert [p.path for p in found] == ["bolts[2].key[1]", "bolts[2].time_field"]
    lines = text.splitlines()
    for problem, (path, close) in zip(found, [("appid", "app_id"), ("tss", "ts")], strict=True):
        assert path in lines[problem.line - 1], problem
        assert f"path '{path}' names no field the events reaching 'minutely' can have" in (
            problem.message
        )
        assert f"did you mean '{close}'?" in problem.message


@pytest.mark.parametrize(
    ("key", "time_field"),
    [
        ("app_id", "ts"),
        ("app_id", "null"),  # the arrival time: no payload path
        ("device.os, meta.shard_id", "ts"),  # an open object below, and the record's metadata
    ],
)
def test_fields_the_events_can_have_are_not_refused(key, time_field):
    # (an aggregate's `field` is not checked: an event without it leaves that aggregate alone)
    load_text(TOPOLOGY.format(key=key, time_field=time_field), file="window.yaml")


def test_without_a_closed_schema_nothing_is_refused():
    text = TOPOLOGY.format(key="appid", time_field="tss").replace(
        "additionalProperties: false", "additionalProperties: true"
    )
    load_text(text, file="window.yaml")


def test_a_time_field_left_to_its_default_says_so():
    # `time_field` not written: its default `timestamp` was named as if the user had written it
    # ("path 'timestamp' names no field…", at the bolt's line), with no hint where it came from.
    text = TOPOLOGY.format(key="app_id", time_field="ts").replace("    time_field: ts\n", "")
    assert "time_field" not in text
    with pytest.raises(TopologyError) as info:
        load_text(text, file="window.yaml")
    (problem,) = info.value.problems
    assert problem.path == "bolts[2].time_field"
    assert "- id: minutely" in text.splitlines()[problem.line - 1]
    assert problem.message.startswith(
        "path 'timestamp' (the default of 'time_field', which is not set) names no field"
    )


def test_a_written_time_field_names_no_default():
    with pytest.raises(TopologyError) as info:
        load_text(TOPOLOGY.format(key="app_id", time_field="tss"), file="window.yaml")
    assert "default" not in info.value.problems[0].message
