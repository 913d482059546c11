"""The SAM templates `squall package --template` writes pass cfn-lint (the SAM transform included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from squall.deploy.template import sam_template, variables, write_template
from squall.topology.loader import load
from tests.conftest import EXAMPLES

PRODUCER = """
name: producer
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
sinks:
  - {id: stream, type: kinesis, stream: "${EVENTS_STREAM:-pistats-events}"}
"""


def lint(path: Path) -> subprocess.CompletedProcess:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # the console script installed beside this Python
    return subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True, timeout=300)


def test_consumer_template_has_the_trigger_squall_needs_and_passes_cfn_lint(tmp_path: Path):
    topology = EXAMPLES / "pistats" / "topology.yaml"
    text = topology.read_text()
    assert variables(text) == ["WAREHOUSE_URL", "STATE_URL", "EVENTS_TABLE"]
    template = sam_template(load(topology), text, handler="consumer", code_uri="build/consumer.zip")
    fn = template["Resources"]["Function"]["Properties"]
    stream = fn["Events"]["Stream"]["Properties"]
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BatchSize"] == 500 and stream["BisectBatchOnFunctionError"] is False
    assert fn["Environment"]["Variables"]["WAREHOUSE_URL"] == {"Ref": "WarehouseUrl"}
    assert template["Parameters"]["WarehouseUrl"]["NoEcho"] is True
    path = tmp_path / "template.yaml"
    write_template(path, template)
    r = lint(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_producer_template_passes_cfn_lint_and_may_write_its_stream(tmp_path: Path):
    t = tmp_path / "producer.yaml"
    t.write_text(PRODUCER)
    template = sam_template(load(t, env={}), PRODUCER, handler="producer", code_uri="producer.zip")
    fn = template["Resources"]["Function"]["Properties"]
    assert fn["Events"]["Events"]["Type"] == "HttpApi"
    assert {"KinesisCrudPolicy": {"StreamName": "pistats-events"}} in fn["Policies"]
    path = tmp_path / "template.yaml"
    write_template(path, template)
    assert yaml.safe_load(path.read_text())["Transform"] == "AWS::Serverless-2016-10-31"
    r = lint(path)
    assert r.returncode == 0, r.stdout + r.stderr
