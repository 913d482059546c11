"""A warehouse column's path that names no field: refused at load where a closed schema upstream
proves it (located, with the closest field), warned about once at run time otherwise — it filled
the column with NULLs and nobody was told."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from squall.bolts.filter import FilterBolt
from squall.bolts.schema import SchemaBolt
from squall.errors import TopologyError
from squall.testing import records_from, run_topology
from squall.topology.loader import load_text

SCHEMA = """
  - id: validate
    type: schema
    schema:
      type: object
      additionalProperties: {closed}
      required: [user_id]
      properties:
        user_id: {{type: string}}
        ip: {{type: string}}
        ua: {{type: string}}
        device_info:
          type: object
          additionalProperties: false
          properties: {{os: {{type: string}}}}
"""


def topology(db: Path, columns: str, *, closed: str = "false", bolts: str = "") -> str:
    return (
        f"""
name: wh
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
"""
        + SCHEMA.format(closed=closed)
        + bolts
        + f"""
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns:
{columns}
"""
    )


def problems(text: str) -> list:
    with pytest.raises(TopologyError) as info:
        load_text(text, file="wh.yaml")
    return info.value.problems


def test_a_path_a_closed_schema_rules_out_is_refused_with_its_place_and_the_closest_field(
    tmp_path: Path,
):
    text = topology(
        tmp_path / "w.db",
        "      user: user_idd\n"
        "      os: {path: device_info.oss, type: text}\n"
        "      ok: ip\n"
        "      at: meta.arrival_time\n",
    )
    [first, second] = problems(text)
    lines = text.splitlines()
    assert (first.file, first.path) == ("wh.yaml", "sinks[0].columns.user")
    assert lines[first.line - 1].strip() == "user: user_idd"
    assert "path 'user_idd' names no field" in first.message
    assert "schema of bolt 'validate'" in first.message
    assert "did you mean 'user_id'?" in first.message
    assert second.path == "sinks[0].columns.os.path"
    assert lines[second.line - 1].strip() == "os: {path: device_info.oss, type: text}"
    assert "did you mean 'device_info.os'?" in second.message


@pytest.mark.parametrize(
    "bolts",
    [
        # fields added by bolts after the schema: not refused
        "  - {id: apps, type: lookup, key: user_id, target: app, "
        "source: {type: http, url: 'http://127.0.0.1:9/{key}'}}\n",
        "  - {id: device, type: device, ua_field: ua, target: app}\n",
        # a bolt that may change anything (project) between: not certain, not refused
        "  - {id: shape, type: project, rename: {user_id: app}}\n",
    ],
    ids=["lookup-target", "device-target", "project"],
)
def test_paths_set_by_a_bolt_after_the_schema_are_not_refused(tmp_path: Path, bolts: str):
    load_text(topology(tmp_path / "w.db", "      name: app.name\n", bolts=bolts), file="wh.yaml")


def test_an_open_schema_refuses_nothing(tmp_path: Path):
    """Without additionalProperties: false the events may have other fields: not refused."""
    load_text(topology(tmp_path / "w.db", "      user: user_idd\n", closed="true"), file="wh.yaml")


def test_a_way_around_the_schema_refuses_nothing(tmp_path: Path):
    """The sink is also fed straight from the json bolt: its events were never validated."""
    text = topology(tmp_path / "w.db", "      user: user_idd\n") + (
        "streams:\n  - {from: decode, to: validate}\n  - {from: validate, to: rows}\n"
        "  - {from: decode, to: rows}\n"
    )
    load_text(text, file="wh.yaml")


def test_a_schema_with_combinators_refuses_nothing(tmp_path: Path):
    text = topology(tmp_path / "w.db", "      user: user_idd\n").replace(
        "      type: object\n      additionalProperties: false\n",
        "      type: object\n      additionalProperties: false\n"
        "      anyOf: [{required: [user_idd]}, {required: [user_id]}]\n",
        1,
    )
    load_text(text, file="wh.yaml")


def test_without_a_schema_a_column_absent_from_a_whole_batch_is_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    db = tmp_path / "w.db"
    text = f"""
name: wh
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns:
      user: user_idd
      note: note
      shard: meta.shard_id
"""
    events = [{"user_id": f"u{i}", "note": None} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="squall.sinks.warehouse"):
        run_topology(text, records_from(events), batch_size=2)
    warned = [r.getMessage() for r in caplog.records if r.name == "squall.sinks.warehouse"]
    # once (two batches), for the absent path only: `note` is there, null
    assert len(warned) == 1
    assert "column 'user' (path 'user_idd') is absent from all 2 event(s) of a batch" in warned[0]
    rows = sqlite3.connect(db).execute("SELECT user, note FROM events").fetchall()
    assert rows == [(None, None)] * 4


def test_a_required_column_absent_from_a_batch_is_not_warned_as_null(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A key, a version or a nullable: false column is never NULL: its absence dead-letters each
    event with the reason, so the warning's "their rows have NULL there" would be untrue."""
    db = tmp_path / "w.db"
    text = f"""
name: wh
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    mode: upsert
    key: [user]
    version: at
    columns:
      user: user_idd
      at: {{path: at, type: integer}}
      note: {{path: note, nullable: false}}
      extra: extra
  - {{id: dlq, type: dead_letter, path: "{tmp_path / "dlq.jsonl"}"}}
"""
    events = [{"user_id": f"u{i}"} for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="squall.sinks.warehouse"):
        run_topology(text, records_from(events), batch_size=2)
    warned = [r.getMessage() for r in caplog.records if r.name == "squall.sinks.warehouse"]
    assert len(warned) == 1 and "column 'extra' (path 'extra') is absent" in warned[0]
    assert len((tmp_path / "dlq.jsonl").read_text().splitlines()) == 2  # each with its reason


class StampedSchema(SchemaBolt):
    """A team's schema bolt that stamps what it let through: a field its schema does not list."""

    def process(self, batch):
        out = super().process(batch)
        for ev in out.streams.get("default", []):
            ev.value["checked"] = "yes"
        return out


class TaggingFilter(FilterBolt):
    """A team's filter that also tags what it keeps."""

    def process(self, batch):
        out = super().process(batch)
        for ev in out.streams.get("default", []):
            ev.value["tag"] = "kept"
        return out


class Wrapping(FilterBolt):
    """Overrides a helper, not ``process``: code of its own below the declaration all the same."""

    def __init__(self, config, context):
        super().__init__(config, context)
        plain = self.process
        self.process = lambda batch: _tagged(plain(batch))  # type: ignore[method-assign]


def _tagged(out):
    for ev in out.streams.get("default", []):
        ev.value["tag"] = "kept"
    return out


@pytest.mark.parametrize(
    ("bolts", "column"),
    [
        (
            f"  - {{id: tag, type: '{__name__}:TaggingFilter', where: [{{field: ip, exists: true}}]}}\n",
            "tag",
        ),
        (
            f"  - {{id: tag, type: '{__name__}:Wrapping', where: [{{field: ip, exists: true}}]}}\n",
            "tag",
        ),
        ("", "checked"),
    ],
    ids=["filter-subclass", "filter-subclass-init", "schema-subclass"],
)
def test_a_teams_subclass_of_a_builtin_bolt_setting_a_field_is_not_refused(
    tmp_path: Path, bolts: str, column: str
):
    """A team's own bolt that subclasses a built-in one inherited its declaration (`filter`: sets
    nothing; `schema`: every event fits the schema), so a column of the field it sets was refused
    at load though every row has it. A declaration speaks for a class only when no class below
    it has code of its own."""
    db = tmp_path / "w.db"
    text = topology(db, f"      got: {column}\n", bolts=bolts)
    if not bolts:
        text = text.replace("type: schema", f"type: '{__name__}:StampedSchema'", 1)
    load_text(text, file="wh.yaml")  # refused before the fix
    run_topology(text, records_from([{"user_id": "u1", "ip": "10.0.0.1"}]))
    assert sqlite3.connect(db).execute("SELECT got FROM events").fetchall() == [
        ("yes" if column == "checked" else "kept",)
    ]


def test_a_target_written_under_a_payload_key_named_meta_is_not_refused(tmp_path: Path):
    """`target: meta.stream` (the device, geo and subscription bolts take any dotted path) is
    set in the payload, under a key `meta`, as every target is: `payload.meta.stream` reads it.
    The check read the target as the record's metadata and refused that column though every
    row has the device block."""
    db = tmp_path / "w.db"
    text = topology(
        db,
        "      got: {path: payload.meta.stream, type: json}\n",
        bolts="  - {id: device, type: device, ua_field: ua, target: meta.stream}\n",
    )
    load_text(text, file="wh.yaml")  # refused before the fix
    run_topology(text, records_from([{"user_id": "u1", "ua": "curl/8.5.0"}]))
    [(got,)] = sqlite3.connect(db).execute("SELECT got FROM events").fetchall()
    assert got is not None and "bot" in got
