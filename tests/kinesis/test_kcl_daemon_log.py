"""The worker's log under the real KCL daemon: squall's lines once each, without the daemon's line per message."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kinesis.test_kcl_daemon import LOCAL_PROPS, precreate_leases, put
from tests.process_group import stop_group

pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: kcl-log
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: geo, type: geo, ip_field: ip}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def rows(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_the_worker_logs_each_shard_line_once_and_not_each_message_of_the_daemon(
    tmp_path: Path, kinesis, dynamodb, make_stream, kinesis_mock, dynalite
):
    """The SRE rehearsal of the pistats fleet (two workers, 2+ shards) read the worker's log: of
    4,321 lines in four minutes, 97 % were the daemon's INFO lines for each message it exchanged
    with a shard process (MessageWriter, LineReaderTask, MultiLangProtocol: four per
    processRecords, an empty one too — 16 lines a second per idle shard), and each line a shard
    process wrote was there twice: at ERROR ("Received error line from subprocess [WARNING …]")
    and as written. ``squall kcl`` now gives the daemon a logging configuration: the
    per-message loggers at WARN (INFO under ``squall -v kcl``), the ERROR copy off."""
    stream = make_stream(1, prefix="kcllog")
    app = f"app-{stream}"
    precreate_leases(dynamodb, kinesis, app, stream)
    db = tmp_path / "w.db"
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(db=db, dlq=tmp_path / "dlq.jsonl"))
    put(kinesis, stream, [{"id": f"a{i}", "n": i, "ip": "81.2.69.160"} for i in range(20)])
    props = [a for k, v in LOCAL_PROPS.items() for a in ("--set", f"{k}={v}")]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    env.pop("SQUALL_LOG_LEVEL", None)
    log_path = tmp_path / "kcl.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "kcl", str(topology), "--stream", stream]
        + ["--application", app, "--kinesis-endpoint", kinesis_mock.endpoint]
        + ["--dynamodb-endpoint", dynalite.endpoint, "--no-metrics", "--worker-id", "w1"]
        + ["--properties-out", str(tmp_path / "kcl.properties"), *props],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while rows(db) < 20:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            if time.monotonic() > deadline:
                pytest.fail("no 20 rows in 120 s\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)
    finally:
        stop_group(proc, 30)
        log.close()
    text = log_path.read_text()
    # the shard process's WARNING (geo's bundled database), once, as it wrote it
    assert text.count("geo: using the bundled GeoLite2-City") == 1, text[-3000:]
    assert "WARNING squall.enrichment.geo: geo: using the bundled" in text
    assert "Received error line from subprocess" not in text
    # processRecords calls were made (20 rows), and none of them logged its messages
    for chatter in ("Writing ProcessRecordsMessage", "Message size ==", "Received response"):
        assert chatter not in text, chatter
    # the daemon's own INFO lines stay: leases, shard consumers
    assert "Created new shardConsumer" in text
    assert (tmp_path / "kcl.logback.xml").is_file()
