"""A KCL fleet whose topology names its stream with a variable (`stream: ${EVENTS_STREAM:-…}`)
reads the stream that variable names in the unit's `environment` — where the docs say the
topology's `${VARS}` go — not the value it had when `squall package` ran."""

from __future__ import annotations

import configparser
from pathlib import Path

from squall.deploy import fleet
from squall.topology.loader import load

TOPOLOGY = """
name: push-fleet
spout: {type: kinesis, stream: "${EVENTS_STREAM:-push-events}"}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: kinesis, stream: archive}]
"""


def _exec_start(out: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string((out / "squall-push-fleet.service").read_text())
    return parser["Service"]["ExecStart"].split()


def _write(tmp_path: Path, monkeypatch, **kwargs) -> Path:
    monkeypatch.delenv("EVENTS_STREAM", raising=False)
    source = tmp_path / "project" / "topology.yaml"
    source.parent.mkdir()
    source.write_text(TOPOLOGY)
    out = tmp_path / "kcl"
    fleet.write_fleet(load(source), source, out, **kwargs)
    return out


def test_the_unit_reads_the_stream_variable_from_its_environment(tmp_path: Path, monkeypatch):
    out = _write(tmp_path, monkeypatch)
    argv = _exec_start(out)
    assert argv[argv.index("--stream") + 1] == "${EVENTS_STREAM}"
    assert "EVENTS_STREAM=push-events" in (out / "environment").read_text().splitlines()


def test_an_explicit_stream_is_written_as_given(tmp_path: Path, monkeypatch):
    out = _write(tmp_path, monkeypatch, stream="prod-events")
    argv = _exec_start(out)
    assert argv[argv.index("--stream") + 1] == "prod-events"
    assert "EVENTS_STREAM" not in (out / "environment").read_text()
