"""The fleet's systemd unit, run as systemd would: its ExecStart, then SIGTERM to the main process only.

The unit's paths are mapped onto this machine (the venv's `squall` → this Python, /opt/squall/<name>
→ the generated folder, ${AWS_REGION} from the environment file, /var/cache → a folder of the
test's, the home folder one nothing can be written under) and the local stand-ins are added
(kinesis-mock, dynalite, no CloudWatch); everything else is the unit's command line and
Environment= as written.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from squall.deploy import fleet
from squall.topology.loader import load
from tests.kinesis.test_kcl_daemon import precreate_leases, put, wait_rows

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: {name}
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: kinesis, stream: {stream}}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: valid, type: schema, schema: event.json}}
  - {{id: probe, type: 'probe:Probe'}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns: {{n: {{path: n, type: integer}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""
#: A bolt that says, when a shard process opens it, whether that process checked the schema
#: (jsonschema imported) or trusted the unit's cache of checked schemas.
PROBE = """
import os, sys
from squall.bolts.base import Bolt, Output

class Probe(Bolt):
    def open(self, resources):
        with open(os.environ["PROBE_FILE"], "a") as f:
            f.write("checked\\n" if "jsonschema" in sys.modules else "trusted\\n")

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
        return out
"""
#: Local-only start-up speed-ups (the test's, not the unit's).
FAST = {
    "failoverTimeMillis": "2000",
    "shardSyncIntervalMillis": "1000",
    "parentShardPollIntervalMillis": "1000",
    "idleTimeBetweenReadsInMillis": "250",
}


def command_line(unit_file: Path, out: Path, name: str, run_dir: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(unit_file.read_text())
    argv = parser["Service"]["ExecStart"].split()
    mapped = []
    for arg in argv:
        arg = arg.replace(f"{fleet.ROOT}/{name}/", f"{out}/").replace(
            f"/run/squall-{name}/", f"{run_dir}/"
        )
        mapped.append(arg.replace("${AWS_REGION}", "us-east-1"))
    assert mapped[0] == f"{fleet.ROOT}/venv/bin/squall"
    return [sys.executable, "-m", "squall.cli", *mapped[1:]]


def test_the_units_command_consumes_and_a_sigterm_to_the_main_process_stops_it_cleanly(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    stream = make_stream(2, prefix="fleet")
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    project.mkdir()
    db, dlq = tmp_path / "w.db", tmp_path / "dlq.jsonl"
    source = project / "topology.yaml"
    source.write_text(TOPOLOGY.format(name=name, db=db, dlq=dlq, stream=stream))
    (project / "event.json").write_text('{"type": "object", "required": ["n"]}')
    (project / "probe.py").write_text(PROBE)
    out = tmp_path / "fleet"
    fleet.write_fleet(load(source), source, out)
    precreate_leases(dynamodb, kinesis, name, stream)
    put(kinesis, stream, [{"id": f"a{i}", "n": i} for i in range(60)])

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cmd = command_line(out / f"squall-{name}.service", out, name, run_dir)
    cmd += [
        "--kinesis-endpoint",
        kinesis_mock.endpoint,
        "--dynamodb-endpoint",
        dynalite.endpoint,
        "--no-metrics",
        "--worker-id",
        "w1",
        *[a for k, v in FAST.items() for a in ("--set", f"{k}={v}")],
    ]
    log_path = tmp_path / "w1.log"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        # The unit's home folder, read-only under it: nothing can be written under this one.
        "HOME": str(tmp_path / "home"),
        "PROBE_FILE": str(tmp_path / "probe.txt"),
    }
    (tmp_path / "home").write_text("")
    env.pop("SQUALL_CACHE_DIR", None)  # the suite's (none): the unit's alone
    # The unit's Environment= (SQUALL_CACHE_DIR: its CacheDirectory=, which systemd makes), with
    # systemd's /var/cache mapped here.
    var_cache = tmp_path / "var-cache"
    unit_text = (out / f"squall-{name}.service").read_text()
    for line in unit_text.splitlines():
        if line.startswith("CacheDirectory="):
            (var_cache / line.split("=", 1)[1]).mkdir(parents=True)
        if line.startswith("Environment="):
            key, value = line.removeprefix("Environment=").split("=", 1)
            env[key] = value.replace("/var/cache", str(var_cache), 1)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=out / "topology",
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_rows(db, 60, proc, tmp_path, "w1")
            assert "retrievalMode = POLLING" in (run_dir / "kcl.properties").read_text()
            proc.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process only
            code = proc.wait(fleet.STOP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log_text = log_path.read_text(errors="replace")
    assert code in (0, 143), log_text[
        -3000:
    ]  # the JVM exits 143 after running its shutdown hooks on SIGTERM
    checkpoints = {
        i["leaseKey"]["S"]: i["checkpoint"]["S"] for i in dynamodb.scan(TableName=name)["Items"]
    }
    assert all(cp.isdigit() for cp in checkpoints.values()), checkpoints
    rows = (
        sqlite3.connect(db)
        .execute("select count(*), count(distinct event_id) from events")
        .fetchone()
    )
    assert rows == (60, 60)
    assert not dlq.exists() or not [json.loads(x) for x in dlq.read_text().splitlines()]
    # The schema is checked once (by `squall kcl`, loading the topology), in the unit's cache
    # folder; the shard processes, started by the KCL daemon with the unit's environment, trust
    # that check (before: the home folder's cache could not be written, and each checked again).
    assert len(list((var_cache / f"squall-{name}" / "checked-schemas").iterdir())) == 1
    opened = (tmp_path / "probe.txt").read_text().split()
    assert opened and set(opened) == {"trusted"}, opened
