"""docs/kinesis.md's local walkthrough: `squall produce` the example's events into a local stream,
then `squall run examples/pistats/kinesis_topology.yaml` — the same rows and dead letters as the
file run, and a second run resumes from the checkpoints (nothing read again)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def test_the_kinesis_example_is_the_file_example_with_another_spout():
    def load(name: str) -> dict:
        return yaml.safe_load((EXAMPLES / "pistats" / name).read_text())

    file_run, kinesis_run = load("topology.yaml"), load("kinesis_topology.yaml")
    assert kinesis_run["spout"]["type"] == "kinesis"
    for doc in (file_run, kinesis_run):
        doc.pop("spout"), doc.pop("description")
        doc["resources"] = {k: v["url"].split(":-")[0] for k, v in doc["resources"].items()}
        doc["sinks"][-1].pop("path")  # its own dead-letter file
    assert kinesis_run == file_run


@pytest.mark.e2e
def test_produce_then_run_the_kinesis_example(tmp_path: Path, kinesis_mock, make_stream):
    stream = make_stream(2, "pistats-events")
    example = tmp_path / "pistats"
    shutil.copytree(EXAMPLES / "pistats", example, ignore=shutil.ignore_patterns("out"))
    # Every record is in the stream before either run starts: the example's 5 s of waiting for
    # more, twice, were most of this test's time. 1.5 s is still more than its poll interval
    # (1 s), so a caught-up shard is read again before a run ends.
    copy = example / "kinesis_topology.yaml"
    assert "\n  idle_exit: 5\n" in copy.read_text()
    copy.write_text(copy.read_text().replace("\n  idle_exit: 5\n", "\n  idle_exit: 1.5\n"))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_KINESIS": kinesis_mock.endpoint,
        "PISTATS_STREAM": stream,
        "PYTHONPATH": str(ROOT),
    }
    for name in ("WAREHOUSE_URL", "STATE_URL"):
        env.pop(name, None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "squall.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )

    sent = cli(
        "produce",
        "--stream",
        stream,
        "--partition-key",
        "device_token",
        "pistats/events.jsonl.gz",
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"sent 3,000 records (3,000 Kinesis records) to {stream}")

    first = cli("run", "pistats/kinesis_topology.yaml")
    assert first.returncode == 0, first.stderr
    assert "committed 2,940, dead-lettered 60, filtered 0, failed 0" in first.stderr
    with sqlite3.connect(example / "out" / "pistats-kinesis.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (2940,)
        assert db.execute("SELECT count(*) FROM squall_checkpoints").fetchone() == (2,)
    assert len((example / "out" / "rejects-kinesis.jsonl").read_text().splitlines()) == 60

    again = cli("run", "pistats/kinesis_topology.yaml")
    assert again.returncode == 0, again.stderr
    assert "committed 0, dead-lettered 0" in again.stderr
