"""NumPy's scalar numbers (``int64``, ``float32``, ``bool_``: no subclass of Python's), which a
Python bolt computing with NumPy or pandas puts in the payload, are their Python number in a
warehouse's ``integer``, ``bigint``, ``float``, ``boolean``, ``timestamp`` and ``date`` columns
(SQLite and PostgreSQL's COPY alike) and in an ``s3`` sink's ``int64``, ``float64``, ``bool`` and
``timestamp`` columns — as the JSON writers and the window bolt read them. Before (hG), every
such event was dead-lettered: ``cannot store np.int64(7) from 'score' as integer``. A
``bool_`` is still no number (``true`` in an integer column is the sender's mistake)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime

import pytest

from squall.bolts.base import RecordBolt
from squall.event import Event, RecordMeta
from squall.sinks.s3 import _convert
from squall.sinks.warehouse.columns import CONVERTERS, ColumnSpec, ConversionError, RowBuilder
from squall.sinks.warehouse.copytext import FORMATTERS
from squall.testing import records_from, run_topology

np = pytest.importorskip("numpy")

MS = 1_796_000_000_000  # 2026-11-29T…Z in epoch milliseconds


@pytest.mark.parametrize(
    ("kind", "value", "stored", "copied"),
    [
        ("integer", np.int64(7), 7, "7"),
        ("integer", np.uint8(200), 200, "200"),
        ("integer", np.float32(2.0), 2, "2"),
        ("bigint", np.int64(2**40), 2**40, str(2**40)),
        ("float", np.float32(0.5), 0.5, "0.5"),
        ("float", np.int32(-3), -3.0, "-3.0"),
        ("boolean", np.bool_(True), True, "t"),
        ("boolean", np.int64(0), False, "f"),
    ],
)
def test_a_numpy_number_is_its_python_number(kind, value, stored, copied):
    assert CONVERTERS[kind](value) == stored
    assert FORMATTERS[kind](value) == copied  # PostgreSQL's COPY text


def test_a_numpy_bool_in_a_text_column_is_jsons_true_or_false():
    # (its own text is "True": a JSON true's is "true", as the JSON-lines form writes both)
    assert CONVERTERS["text"](np.bool_(True)) == FORMATTERS["text"](np.bool_(True)) == "true"
    assert CONVERTERS["text"](np.bool_(False)) == "false"
    assert CONVERTERS["text"](np.int64(7)) == "7"
    assert CONVERTERS["text"](np.float32(0.1)) == "0.1"  # its own text, as before
    assert _convert(np.bool_(True), "string", "ms") == "true"
    assert _convert(np.int64(7), "string", "ms") == "7"


def test_a_numpy_epoch_time_is_a_time():
    expected = datetime.fromtimestamp(MS / 1000, UTC)
    assert CONVERTERS["timestamp"](np.int64(MS)) == expected
    assert CONVERTERS["date"](np.int64(MS)) == expected.date()
    assert FORMATTERS["timestamp"](np.int64(MS)).startswith(str(expected.date()))
    assert isinstance(CONVERTERS["date"](np.int64(MS)), date)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("integer", np.bool_(True)),  # JSON's true: no number
        ("bigint", np.bool_(False)),
        ("float", np.bool_(True)),
        ("timestamp", np.bool_(True)),
        ("integer", np.float32(2.5)),  # a fraction, as a plain float's
        ("integer", 2.5),  # (the plain float itself: refused, not asked again)
        ("boolean", np.int64(2)),
        ("boolean", 1.0),
        ("integer", np.datetime64("2020-01-01")),  # no number at all
        ("float", object()),
    ],
)
def test_what_is_no_number_is_refused(kind, value):
    with pytest.raises(ConversionError):
        CONVERTERS[kind](value)
    with pytest.raises((ConversionError, ValueError, TypeError)):
        FORMATTERS[kind](value)


def test_both_row_functions_store_numpy_numbers():
    columns = {
        "n": ColumnSpec(path="n", type="integer"),
        "share": ColumnSpec(path="share", type="float"),
        "ok": ColumnSpec(path="ok", type="boolean"),
    }
    event = Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, {})
    event.value = {"n": np.int64(3), "share": np.float32(0.25), "ok": np.bool_(False)}
    for bools_as_int, ok in ((False, False), (True, 0)):
        rows = RowBuilder(columns, json_as_text=True, bools_as_int=bools_as_int)
        assert rows.row(event) == rows.row_checked(event) == (3, 0.25, ok)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int64", np.int64(7), 7),
        ("int64", np.uint16(9), 9),
        ("float64", np.float32(0.5), 0.5),
        ("bool", np.bool_(True), True),
        ("timestamp", np.int64(MS), datetime.fromtimestamp(MS / 1000, UTC)),
    ],
)
def test_the_s3_sinks_typed_columns_take_numpy_numbers(kind, value, expected):
    assert _convert(value, kind, "ms") == expected


def test_the_s3_sinks_int64_still_refuses_a_numpy_bool():
    with pytest.raises(ValueError, match="is not an integer"):
        _convert(np.bool_(True), "int64", "ms")


class Scoring(RecordBolt):
    """A user's bolt scoring each event with NumPy."""

    summary = "scores events"

    def process_event(self, ev):
        ev.value["score"] = np.int64(ev.value["n"] * 10)
        ev.value["share"] = np.float32(ev.value["n"] / 4)
        ev.value["flagged"] = np.bool_(ev.value["n"] > 1)
        return "default"


def _topology(url: str, table: str, dead) -> str:
    return f"""
name: numpy-scores
resources: {{db: {{url: "{url}"}}}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: score, type: "{__name__}:Scoring"}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: {table}
    columns:
      n: {{path: n, type: integer}}
      score: {{path: score, type: bigint}}
      share: {{path: share, type: float}}
      flagged: {{path: flagged, type: boolean}}
  - {{id: rejects, type: dead_letter, path: "{dead}"}}
"""


def test_a_python_bolts_numpy_scores_are_stored_in_sqlite(tmp_path):
    db = tmp_path / "w.db"
    run = run_topology(
        _topology(f"sqlite:///{db}", "scores", tmp_path / "dl.jsonl"),
        records_from([{"n": 1}, {"n": 2}]),
    )
    assert [o.outcome.value for o in run.outcomes] == ["committed", "committed"]
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT n, score, share, flagged FROM scores ORDER BY n").fetchall()
    assert rows == [(1, 10, 0.25, 0), (2, 20, 0.5, 1)]


def test_a_python_bolts_numpy_scores_are_stored_in_postgresql(tmp_path, pg_url, unique_name):
    import psycopg2

    run = run_topology(
        _topology(pg_url, unique_name, tmp_path / "dl.jsonl"), records_from([{"n": 1}, {"n": 2}])
    )
    try:
        assert [o.outcome.value for o in run.outcomes] == ["committed", "committed"]
        with closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT n, score, share, flagged FROM "{unique_name}" ORDER BY n')
            assert cur.fetchall() == [(1, 10, 0.25, False), (2, 20, 0.5, True)]
    finally:
        with closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{unique_name}"')
            conn.commit()
