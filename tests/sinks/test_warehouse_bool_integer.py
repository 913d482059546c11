"""A JSON boolean in an ``integer`` or ``bigint`` column is that event's dead letter, as in a
``float`` column: before, ``true`` was stored as 1 and ``false`` as 0, silently (hC)."""

from __future__ import annotations

import sqlite3

import pytest

from squall.event import Event, RecordMeta
from squall.sinks.warehouse.columns import CONVERTERS, ColumnSpec, ConversionError, RowBuilder
from squall.sinks.warehouse.copytext import _int4, _int8
from squall.testing import records_from, run_topology


@pytest.mark.parametrize("kind", ["integer", "bigint", "float"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_no_number(kind, value):
    with pytest.raises(ConversionError):
        CONVERTERS[kind](value)


@pytest.mark.parametrize("conv", [_int4, _int8])
def test_the_copy_text_refuses_a_boolean(conv):
    with pytest.raises(ConversionError):
        conv(True)
    assert conv(1) == "1"


def test_the_row_builder_refuses_a_boolean():
    rows = RowBuilder({"n": ColumnSpec(path="n", type="integer")}, json_as_text=True)
    assert rows.row_checked(_event({"n": 3})) == (3,)
    with pytest.raises(ConversionError, match="column 'n'"):
        rows.row_checked(_event({"n": True}))
    with pytest.raises(ConversionError, match="column 'n'"):
        rows.row(_event({"n": True}))  # the generated fast path hands it to row_checked


def _event(payload):
    return Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, payload)


def test_a_boolean_count_is_dead_lettered_not_stored_as_one(tmp_path):
    db = tmp_path / "w.db"
    dead = tmp_path / "rejects.jsonl"
    topology = f"""
name: bool-int
resources: {{db: {{url: "sqlite:///{db}"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: views
    type: warehouse
    resource: db
    table: views
    columns: {{n: {{path: n, type: integer}}, b: {{path: b, type: bigint}}}}
  - {{id: rejects, type: dead_letter, path: "{dead}"}}
"""
    run = run_topology(topology, records_from([{"n": 5, "b": 6}, {"n": True}, {"b": False}]))
    assert [o.outcome.value for o in run.outcomes] == [
        "committed",
        "dead_lettered",
        "dead_lettered",
    ]
    stored = sqlite3.connect(db).execute("SELECT n, b FROM views").fetchall()
    assert stored == [(5, 6)]
    reasons = dead.read_text()
    assert "cannot store True from 'n' as integer" in reasons
    assert "cannot store False from 'b' as bigint" in reasons
