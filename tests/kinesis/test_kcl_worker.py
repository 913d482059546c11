"""`squall kcl` as a fleet member, without the JVM: lease loss over the real amazon-kclpy protocol loop,
per-worker ids and properties, the stop signal passed to the daemon alone, `-v` after a command."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy.kcl import EXIT_UNEXPECTED_ERROR, RecordProcessor
from squall.deploy.kcl_daemon import (
    KclSettings,
    private_properties_path,
    run_daemon,
    systemd_stop_settings,
)
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import kcl_record

TOPOLOGY = """
name: worker-test
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""


def run_protocol(tmp_path: Path, lines: list[dict]) -> tuple[str, str, RecordProcessor]:
    """Drive amazon-kclpy's own loop (KCLProcess) with daemon messages; returns (stdout, stderr)."""
    from amazon_kclpy import kcl

    engine = Engine(load_text(TOPOLOGY.format(db=tmp_path / "w.db")).plan)
    processor = RecordProcessor(engine, stream="s")
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
    kcl.KCLProcess(processor, input_file=stdin, output_file=out, error_file=err).run()
    return out.getvalue(), err.getvalue(), processor


def record(seq: int) -> dict:
    return kcl_record({"n": seq}, seq)


def test_a_lost_lease_is_one_info_line_not_a_traceback(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="squall.kcl")
    lines = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(1), record(2)]},
        {
            "action": "checkpoint",
            "sequenceNumber": "2",
            "subSequenceNumber": 0,
            "error": "ShutdownException",
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(3)]},
        {"action": "leaseLost"},
    ]
    out, err, processor = run_protocol(tmp_path, lines)
    assert "Traceback" not in err and "Caught exception" not in err, err
    statuses = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [s.get("responseFor") for s in statuses if s["action"] == "status"] == [
        "initialize",
        "processRecords",
        "processRecords",
        "leaseLost",
    ]
    assert [s for s in statuses if s["action"] == "checkpoint"] == [
        {"action": "checkpoint", "sequenceNumber": "2", "subSequenceNumber": 0}
    ]  # none after the loss
    lost = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.INFO
    assert processor.lost


def test_other_checkpoint_errors_still_surface(tmp_path: Path):
    lines = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(1)]},
        {
            "action": "checkpoint",
            "sequenceNumber": "1",
            "subSequenceNumber": 0,
            "error": "InvalidStateException",
        },
    ]
    with pytest.raises(SystemExit) as exited:  # not reported done (test_kcl_checkpoint_errors.py)
        run_protocol(tmp_path, lines)
    assert exited.value.code == EXIT_UNEXPECTED_ERROR


def test_shutdown_requested_takes_a_final_checkpoint(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="squall.kcl")
    lines = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(7)]},
        {"action": "checkpoint", "sequenceNumber": "7", "subSequenceNumber": 0},
        {"action": "shutdownRequested"},
        {"action": "checkpoint", "sequenceNumber": "7", "subSequenceNumber": 0},
        {"action": "leaseLost"},  # the daemon releases the lease after a requested shutdown
    ]
    out, err, _ = run_protocol(tmp_path, lines)
    actions = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert actions[-3:] == [
        {"action": "checkpoint", "sequenceNumber": "7", "subSequenceNumber": 0},
        {"action": "status", "responseFor": "shutdownRequested"},
        {"action": "status", "responseFor": "leaseLost"},
    ], err
    messages = [r.getMessage() for r in caplog.records]
    assert any("final checkpoint at 7" in m for m in messages)
    assert not any("taken over" in m for m in messages)


def test_each_worker_gets_its_own_id_and_private_properties(tmp_path: Path):
    topology = tmp_path / "same.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    a = KclSettings(topology, "s", "app").properties()
    b = KclSettings(topology, "s", "app", worker_id="w2").properties()
    assert f"workerId = {os.uname().nodename}:{os.getpid()}\n" in a
    assert "workerId = w2\n" in b
    p1, p2 = private_properties_path("w1"), private_properties_path("w1")
    try:
        assert p1.parent != p2.parent and p1.parent.parent == p2.parent.parent
        assert p1.parent.stat().st_mode & 0o777 == 0o700
        assert not any(p.suffix == ".properties" for p in tmp_path.iterdir())
    finally:
        p1.parent.rmdir()
        p2.parent.rmdir()


def test_systemd_stop_settings_signal_the_main_process_only():
    s = systemd_stop_settings(20_000)
    assert s["KillMode"] == "mixed" and s["KillSignal"] == "SIGTERM"
    assert int(s["TimeoutStopSec"]) > 20


CHILD = """
import os, signal, subprocess, sys, time
# a stand-in daemon: a child of its own (a "record processor"), a graceful stop on SIGTERM
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
def stop(signum, frame):
    open(sys.argv[1], "w").write("daemon got SIGTERM; processor alive=%s" % (kid.poll() is None))
    kid.terminate(); kid.wait()
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[2], "w").write(str(kid.pid))
time.sleep(60)
"""


def test_a_stop_signal_to_the_group_reaches_the_daemon_alone(tmp_path: Path):
    """SIGTERM to squall kcl's whole process group: the daemon gets it, its children do not."""
    script, marker, ready = tmp_path / "daemon.py", tmp_path / "stopped", tmp_path / "ready"
    script.write_text(CHILD)
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from squall.deploy.kcl_daemon import run_daemon; "
            f"sys.exit(run_daemon([sys.executable, {str(script)!r}, {str(marker)!r}, "
            f"{str(ready)!r}]))",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the stand-in daemon did not start"
    os.killpg(runner.pid, signal.SIGTERM)
    assert runner.wait(30) == 0
    assert marker.read_text() == "daemon got SIGTERM; processor alive=True"


def test_run_daemon_returns_the_daemons_failure():
    assert run_daemon([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_verbose_is_accepted_after_the_command(tmp_path: Path):
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.WARNING)
    try:
        result = CliRunner().invoke(main, ["validate", "-v", str(topology)])
        assert result.exit_code == 0, result.output
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
    result = CliRunner().invoke(main, ["produce", "-vv", "--help"])
    assert result.exit_code == 0 and "--verbose" in result.output


def test_kcl_print_shows_a_unique_worker_and_leaves_no_file(tmp_path: Path, monkeypatch):
    import tempfile

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    topology = tmp_path / "same.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    result = CliRunner().invoke(main, ["kcl", str(topology), "--stream", "s", "--print"])
    assert result.exit_code == 0, result.output
    assert f"workerId = {os.uname().nodename}:{os.getpid()}" in result.output
    assert "shutdownGraceMillis = 20000" in result.output
    assert list(private.iterdir()) == [] and not list(tmp_path.glob("*.properties"))


KINESIS_SPOUT = """
name: kcl-walkthrough
spout: {type: kinesis, stream: pistats-events}
sinks:
  - {id: out, type: "squall.testing:MemorySink"}
"""


@pytest.mark.parametrize(
    ("env", "args", "region"),
    [
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-north-1"}, [], "eu-west-1"),
        ({"AWS_REGION": None, "AWS_DEFAULT_REGION": "eu-north-1"}, [], "eu-north-1"),
        ({"AWS_REGION": None, "AWS_DEFAULT_REGION": None}, [], "us-east-1"),
        ({"AWS_REGION": "eu-west-1"}, ["--region", "ap-south-1"], "ap-south-1"),
    ],
)
def test_kcl_reads_the_topology_s_stream_and_the_environment_s_region(
    tmp_path: Path, env: dict, args: list[str], region: str
):
    """Found in the fleet walkthrough: `squall local-aws` prints `squall kcl FILE
    --kinesis-endpoint …` (no `--stream`), which failed with `Missing option '--stream'` for a
    topology whose kinesis spout names the stream; and `--region` was us-east-1 whatever
    AWS_REGION said, so a worker in another region looked for its stream in us-east-1."""
    topology = tmp_path / "t.yaml"
    topology.write_text(KINESIS_SPOUT)
    result = CliRunner().invoke(main, ["kcl", str(topology), "--print", *args], env=env)
    assert result.exit_code == 0, result.output
    assert "streamName = pistats-events\n" in result.output
    assert f"regionName = {region}\n" in result.output


@pytest.mark.parametrize(
    ("spout", "args", "region"),
    [
        ("{type: kinesis, stream: pistats-events, region: eu-central-1}", [], "eu-central-1"),
        (
            "{type: kinesis, stream: 'arn:aws:kinesis:ap-south-1:123456789012:stream/pistats-events'}",
            [],
            "ap-south-1",
        ),
        (
            "{type: kinesis, stream: pistats-events, region: eu-central-1}",
            ["--region", "sa-east-1"],
            "sa-east-1",
        ),
        # another stream than the spout's: the spout's region is not that stream's
        (
            "{type: kinesis, stream: pistats-events, region: eu-central-1}",
            ["--stream", "other"],
            "eu-west-1",
        ),
    ],
)
def test_kcl_reads_the_spout_s_stream_in_the_spout_s_region(
    tmp_path: Path, spout: str, args: list[str], region: str
):
    """`squall kcl` takes the stream from the kinesis spout (since hE) but took the region from
    AWS_REGION even when the spout names its own (`region:`, or its stream's ARN): a worker whose
    environment is in another region read — or created leases for — a stream of the same name in
    the wrong region, where `squall run` reads the spout's."""
    topology = tmp_path / "t.yaml"
    topology.write_text(KINESIS_SPOUT.replace("{type: kinesis, stream: pistats-events}", spout))
    env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": None}
    result = CliRunner().invoke(main, ["kcl", str(topology), "--print", *args], env=env)
    assert result.exit_code == 0, result.output
    assert f"regionName = {region}\n" in result.output


def test_kcl_without_a_stream_for_a_spout_that_is_not_kinesis_says_so(tmp_path: Path):
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
    result = CliRunner().invoke(main, ["kcl", str(topology), "--print"])
    assert result.exit_code == 2
    assert "the topology's spout is not kinesis: name the stream with --stream" in result.output


@pytest.mark.parametrize("where", ["option", "environment"])
@pytest.mark.parametrize("jars", ["missing", "empty"])
def test_a_jars_directory_named_but_wrong_is_an_error_not_passed_over(
    tmp_path: Path, where: str, jars: str
):
    """Found in the fleet walkthrough: `squall kcl --jars DIR` with a mistyped or empty DIR (or
    SQUALL_KCL_JARS) started the daemon on amazon_kclpy's jars instead, silently — another KCL
    version than the one named."""
    topology = tmp_path / "t.yaml"
    topology.write_text(KINESIS_SPOUT)
    folder = tmp_path / "jars"
    if jars == "empty":
        folder.mkdir()
    args, env = ["kcl", str(topology), "--print"], {"SQUALL_KCL_JARS": None}
    if where == "option":
        args += ["--jars", str(folder)]
    else:
        env["SQUALL_KCL_JARS"] = str(folder)
    result = CliRunner().invoke(main, args, env=env)
    name = "--jars" if where == "option" else "SQUALL_KCL_JARS"
    what = "holds no .jar file" if jars == "empty" else "is not a directory"
    assert result.exit_code == 2, result.output
    assert f"error: {name} {folder}: {what} (the KCL jars)" in result.output


def test_without_java_squall_kcl_says_so_in_one_line(tmp_path: Path):
    """Found in the fleet walkthrough: `squall kcl` on a machine without Java ended in a
    FileNotFoundError traceback from subprocess."""
    topology = tmp_path / "t.yaml"
    topology.write_text(KINESIS_SPOUT)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_cli_kcl(topology, env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: cannot start the KCL MultiLangDaemon: 'java' not found — it runs on Java 11+ "
        "(e.g. apt-get install openjdk-17-jre-headless); put java on PATH"
    )
    assert "Traceback" not in result.stderr


def run_cli_kcl(topology: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", "kcl", str(topology)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_user_record_starting_with_the_kpl_magic_is_the_user_s_under_the_kcl(tmp_path: Path):
    """The daemon de-aggregates KPL records itself (the kinesis sink wraps a binary payload that
    starts with the magic bytes in an aggregate of one; the daemon hands the payload over at
    sub-sequence 0): the engine must not take it for an aggregate again and dead-letter it."""
    from squall.kinesis.kpl import KPL_MAGIC
    from squall.testing import memory_stores
    from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

    payload = KPL_MAGIC + b"\x00binary user payload"
    topology = """
name: kcl-magic
spout: {type: stdin}
sinks:
  - {id: out, type: "squall.testing:MemorySink"}
  - {id: dlq, type: "squall.testing:MemoryDeadLetterSink"}
"""
    with memory_stores() as stores:
        processor = RecordProcessor(Engine(load_text(topology).plan), stream="s")
        cp = KclCheckpointer()
        kcl_initialize().dispatch(cp, processor)
        kcl_process_records([payload, b"plain"], start=100).dispatch(cp, processor)
    assert [e.raw for e in stores["out"]] == [payload, b"plain"]
    assert stores.get("dlq", []) == [] and cp.calls == [("101", 0)]


@pytest.mark.parametrize("problem", ["topology", "otel"])
def test_a_record_processor_that_cannot_start_says_why_in_one_line(tmp_path: Path, problem: str):
    """The daemon logs a record processor's stderr: a topology error, or ``SQUALL_OTEL=1``
    without the ``otel`` extra, was a traceback there (the error's own line at its end); it is
    one located line now, exit 2 as ``squall run``."""
    import squall

    root = str(Path(squall.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    topology = tmp_path / "t.yaml"
    if problem == "topology":
        topology.write_text(
            TOPOLOGY.format(db=tmp_path / "w.db").replace("type: json", "type: jsn")
        )
    else:
        topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db"))
        hidden = tmp_path / "hidden" / "opentelemetry"
        hidden.mkdir(parents=True)
        (hidden / "__init__.py").write_text(
            "raise ImportError(\"No module named 'opentelemetry'\")\n"
        )
        env.update(SQUALL_OTEL="1", PYTHONPATH=f"{hidden.parent}{os.pathsep}{root}")
    r = subprocess.run(
        [sys.executable, "-m", "squall.deploy.kcl", str(topology), "stream"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("squall kcl: cannot start: ")
    assert (
        ("t.yaml:7" in line and "jsn" in line) if problem == "topology" else "squall[otel]" in line
    )
