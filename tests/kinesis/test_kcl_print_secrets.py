"""``squall kcl --print`` shows the properties file and the daemon's command: a value a secret
reference gave (the spout's stream) is masked there as in every other output of squall's; the
file the daemon reads keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from squall import cli, redact
from squall.cli import main

TOPOLOGY = """
name: kcl-secret
spout: {type: kinesis, stream: "${ssm:/kcl/stream}"}
sinks:
  - {id: out, type: "squall.testing:MemorySink"}
"""


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    monkeypatch.setattr(redact, "_known", redact._known)


def test_kcl_print_masks_the_values_of_secret_references(tmp_path: Path, monkeypatch):
    values = {"/kcl/stream": "orders-7f3a9c"}
    monkeypatch.setattr(cli, "_aws_secrets", lambda ref: values[ref.name])
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY)
    out = tmp_path / "kcl.properties"
    result = CliRunner().invoke(
        main,
        ["kcl", str(topology), "--print", "--properties-out", str(out)],
        env={"AWS_REGION": "eu-west-1"},
    )
    assert result.exit_code == 0, result.output
    assert "streamName = ***" in result.output, result.output
    assert "orders-7f3a9c" not in result.output, result.output  # executableName's argument
    written = out.read_text()  # what the daemon reads: the values themselves
    assert "streamName = orders-7f3a9c" in written
