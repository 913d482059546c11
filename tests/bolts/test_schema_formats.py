"""`format` in a schema: checked the same wherever the topology runs, or said at start.

jsonschema checks `date-time` and `time` only when rfc3339-validator is installed, `hostname`
only with fqdn, and so on; without the package a value of that format passes, silently. The
test environment has them (the dev extra pulls them in), a plain `pip install squall` and a
Lambda package built by `squall package` did not: `{"format": "date-time"}` refused
`"yesterday"` under `squall run` here and let it through in Lambda. squall now depends on
rfc3339-validator, and a format left unchecked for want of its package is a warning at start,
at the schema option, naming the format and the package.
"""

from __future__ import annotations

import configparser
import logging
from pathlib import Path

import jsonschema

from squall.bolts.schema import FORMAT_PACKAGES, formats
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = """name: formats
spout: {type: 'squall.testing:ListSpout'}
bolts:
  - {id: decode, type: json}
  - id: validate
    type: schema
    schema:
      type: object
      properties:
        at: {type: string, format: date-time}
        format: {enum: [hostname]}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}
streams:
  - {from: validate, stream: invalid, to: dlq}
"""


def outcomes(tmp_path: Path) -> list[Outcome]:
    path = tmp_path / "formats.yaml"
    path.write_text(TOPOLOGY)
    run = run_topology(path, records_from([{"at": "2026-12-07T10:00:00Z"}, {"at": "yesterday"}]))
    return [o.outcome for o in run.outcomes]


def test_date_time_is_checked_with_squalls_own_dependencies(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, "squall.bolts")
    assert outcomes(tmp_path) == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    assert "not checked" not in caplog.text
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    required = setup["options"]["install_requires"]
    assert "rfc3339-validator" in required  # so a Lambda package checks it too


def test_a_format_whose_package_is_missing_is_a_warning_at_the_option(
    tmp_path: Path, caplog, monkeypatch
):
    """As in an environment without rfc3339-validator: jsonschema has no date-time checker."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    monkeypatch.delitem(checker.checkers, "date-time")
    monkeypatch.delitem(jsonschema.FormatChecker.checkers, "date-time")  # nor any other draft's
    caplog.set_level(logging.WARNING, "squall.bolts")
    assert outcomes(tmp_path) == [Outcome.COMMITTED, Outcome.COMMITTED]  # what it warns about
    [warning] = [r.getMessage() for r in caplog.records if "not checked" in r.getMessage()]
    assert warning.startswith(f"{tmp_path / 'formats.yaml'}:8:7: bolts[1].schema: ")
    assert "format 'date-time' (needs rfc3339-validator) is not checked" in warning
    assert "hostname" not in warning  # a property named format, an enum value: not formats


def test_formats_are_the_format_keywords_not_names_or_data():
    schema = {
        "properties": {
            "format": {"type": "string", "format": "uri"},
            "host": {"format": "hostname", "default": {"format": "email"}},
        },
        "$defs": {"t": {"anyOf": [{"format": "time"}, {"const": {"format": "color"}}]}},
        "enum": [{"format": "duration"}],
    }
    assert formats(schema) == {"uri", "hostname", "time"}
    assert set(FORMAT_PACKAGES) >= {"date-time", "time", "hostname", "uri"}


def test_a_format_the_schemas_draft_does_not_define_is_not_said_to_need_a_package(
    tmp_path: Path, caplog
):
    """Draft 4 and draft 6 have no `time` format: jsonschema checks it from draft 7 on, with the
    package installed here. The warning told to install rfc3339-validator — installed, and
    installing changes nothing; it names the draft instead. `date-time` (draft 4's too) is
    checked and not named."""
    path = tmp_path / "draft4.yaml"
    path.write_text(
        TOPOLOGY.replace(
            "      type: object\n",
            "      $schema: 'http://json-schema.org/draft-04/schema#'\n      type: object\n",
        ).replace("format: {enum: [hostname]}", "t: {type: string, format: time}")
    )
    caplog.set_level(logging.WARNING, "squall.bolts")
    run = run_topology(path, records_from([{"at": "yesterday"}, {"t": "25:99"}]))
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED, Outcome.COMMITTED]
    [warning] = [r.getMessage() for r in caplog.records if "not checked" in r.getMessage()]
    assert warning.startswith(f"{path}:8:7: bolts[1].schema: ")
    assert "format 'time' (not a format of JSON Schema draft 4: a later draft's $schema" in warning
    assert "the schema's draft does not define it" in warning
    assert "needs" not in warning and "install" not in warning and "date-time" not in warning
