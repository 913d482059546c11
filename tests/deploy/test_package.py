"""`squall package`: the zip runs by itself under AWS's runtime client, with no site-packages."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.factories import kinesis_lambda_event
from tests.lambda_runtime import LambdaFunction

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: packaged
resources:
  warehouse: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: validate, type: schema, schema: schemas/event.json}}
  - {{id: geo, type: geo, ip_field: ip}}
  - {{id: device, type: device, ua_field: ua}}
sinks:
  - id: events
    type: warehouse
    resource: warehouse
    table: events
    columns: {{country: geo.country_code, os: device.os}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def test_packaged_consumer_runs_from_the_zip_alone(tmp_path: Path):
    project = tmp_path / "project"
    (project / "schemas").mkdir(parents=True)
    (project / "schemas" / "event.json").write_text(json.dumps({"type": "object", "required": ["id"]}))
    (project / "out").mkdir()
    (project / "out" / "local.db").write_text("a local run's output: not packaged")
    db, dlq = tmp_path / "lambda-tmp" / "w.db", tmp_path / "lambda-tmp" / "dlq.jsonl"
    (project / "topology.yaml").write_text(TOPOLOGY.format(db=db, dlq=dlq))
    out = tmp_path / "build" / "function.zip"
    r = subprocess.run([sys.executable, "-m", "squall.cli", "package", str(project / "topology.yaml"),
                        "--handler", "consumer", "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "handler squall_lambda.handler" in r.stdout

    root = tmp_path / "task"
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"squall_lambda.py", "topology/topology.yaml", "topology/schemas/event.json"} <= names
        assert not any(n.startswith("topology/out/") for n in names)
        zf.extractall(root)
    # Lambda provides the runtime client; here it is added beside the package, nothing else.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                    str(root), "awslambdaric==4.2.2"], check=True, capture_output=True, timeout=600)

    function = LambdaFunction("squall_lambda.handler", root, isolated=True)
    try:
        docs = [{"id": "a", "ip": "81.2.69.142", "ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)"},
                {"no_id": True}]
        event = kinesis_lambda_event(docs)
        assert function.invoke(event) == {"batchItemFailures": []}
    finally:
        function.stop()
    assert sqlite3.connect(db).execute("select event_id, country, os from events").fetchall() == [("a", "GB", "iOS")]
    assert json.loads(dlq.read_text())["component"] == "validate"
