"""Records that reach a sink undecoded (spout → sink, no `json` bolt) have no payload: the
warehouse wrote rows of NULLs and advised checking each path for a typo, the `stdout` sink printed
`null` per record and said nothing. Both say once that a decode bolt is missing."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from squall.testing import records_from, run_topology

DECODE = "bolts:\n  - {id: decode, type: json}\n"


def warehouse(db: Path, bolts: str) -> str:
    return f"""
name: undecoded
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
{bolts}sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{user: user_idd}}}}
"""


def stdout(bolts: str) -> str:
    return (
        f"name: undecoded\nspout: {{type: stdin}}\n{bolts}sinks:\n  - {{id: out, type: stdout}}\n"
    )


def warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_the_warehouse_says_a_decode_bolt_is_missing_not_a_typo(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="squall.sinks.warehouse"):
        run_topology(warehouse(tmp_path / "w.db", ""), records_from([{"user": "u1"}] * 2))
    [told] = warnings(caplog, "squall.sinks.warehouse")
    assert "none of them has a decoded payload: add a decode bolt (type: json)" in told
    assert "typo" not in told
    rows = sqlite3.connect(tmp_path / "w.db").execute("SELECT user FROM events").fetchall()
    assert rows == [(None,), (None,)]  # written as before: only the advice changed


def test_a_decoded_batch_without_the_path_is_still_told_to_check_for_a_typo(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="squall.sinks.warehouse"):
        run_topology(warehouse(tmp_path / "w.db", DECODE), records_from([{"user": "u1"}] * 2))
    [told] = warnings(caplog, "squall.sinks.warehouse")
    assert "check the path for a typo" in told and "decode bolt" not in told


def test_stdout_says_once_that_it_prints_undecoded_events_as_null(caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="squall.sinks.stdout"):
        run_topology(stdout(""), records_from([{"a": 1}] * 4), batch_size=2)
    assert capsys.readouterr().out.splitlines() == ["null"] * 4
    [told] = warnings(caplog, "squall.sinks.stdout")
    assert told.startswith("out: none of the 2 event(s) of a batch has a decoded payload")
    assert "add a decode bolt (type: json)" in told


def test_stdout_says_nothing_of_decoded_events(caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="squall.sinks.stdout"):
        run_topology(stdout(DECODE), records_from([{"a": 1}]))
    assert capsys.readouterr().out.splitlines() == ['{"a":1}']
    assert warnings(caplog, "squall.sinks.stdout") == []
