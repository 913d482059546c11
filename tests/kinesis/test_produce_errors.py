"""squall produce refuses unusable streams and inputs with one line and the documented exit code."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.child_env import child_env
from tests.pipe_wait import wait_in_pipe_read


def produce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", "produce", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
        ),
    )


def test_a_malformed_stream_arn_or_endpoint_is_exit_2(tmp_path: Path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"a": 1}\n')
    for args in (
        ["--stream", "arn:aws:kinesis:bad"],
        ["--stream", "s", "--endpoint-url", "notaurl"],
    ):
        r = produce(*args, str(f))
        assert r.returncode == 2, r.stderr
        assert "produce failed" in r.stderr and "Traceback" not in r.stderr


def test_an_error_holding_markup_brackets_is_printed_as_written(tmp_path: Path):
    """rich reads ``[...]`` as markup: an endpoint holding ``[/]`` raised MarkupError (a
    traceback, exit 1) and ``[bold]`` would have been swallowed."""
    f = tmp_path / "e.jsonl"
    f.write_text('{"a": 1}\n')
    r = produce("--stream", "s", "--endpoint-url", "notaurl[/]x[bold]", str(f))
    assert r.returncode == 2, r.stderr
    assert "'notaurl[/]x[bold]'" in r.stderr and "Traceback" not in r.stderr


def test_a_truncated_gzip_file_is_one_line_and_exit_1(tmp_path: Path, kinesis_mock, make_stream):
    data = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(3000)))
    f = tmp_path / "trunc.jsonl.gz"
    f.write_bytes(data[: len(data) // 2])
    r = produce("--stream", make_stream(1), "--endpoint-url", kinesis_mock.endpoint, str(f))
    assert r.returncode == 1, r.stderr
    assert "truncated or corrupt gzip" in r.stderr and "Aborted" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_exits_130_as_squall_run_does(tmp_path: Path, sig: signal.Signals):
    """Ctrl-C exited 1 (click's "Aborted!"), the code of records that failed, and SIGTERM killed
    the process (-15) without a word. Both now say what was sent and exit 130, as `squall run`.

    The input is a FIFO: the child has opened it (inside the send) once the test's open for
    writing succeeds, and it waits there for data that never comes — no endpoint is reached."""
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "produce", "--stream", "s"]
        + ["--endpoint-url", "http://127.0.0.1:9", str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONFAULTHANDLER="1",  # a hang below is shown where it is (SIGABRT)
        ),
        # Ctrl-C as in a terminal, also when this process was started with SIGINT ignored (a
        # background job of a non-interactive shell: CI's), which its children would inherit —
        # Python then installs no KeyboardInterrupt handler, and the child waited for ever
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None and time.monotonic() < deadline and proc.poll() is None:
            try:  # ENXIO until the child opened the FIFO for reading
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.02)
        assert writer is not None, "squall produce never opened its input"
        # The signal is sent once the child waits in its read of the FIFO (its open returned:
        # the state the test means), not while it still returns from the open.
        wait_in_pipe_read(proc, deadline - time.monotonic())
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"squall produce did not stop on {sig.name}:\n{err[-6000:]}")
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: 0 records sent" in err, err
    assert "Aborted" not in err and "Traceback" not in err


def test_an_interrupt_before_the_first_putrecords_round_counts_the_lines_that_failed(
    tmp_path: Path, monkeypatch
):
    """Lines refused before any PutRecords round (a partition key over 256 characters, a line
    over the record limit) are failed records: stopped then, produce said "0 failed" — the
    counts it gave were those of the last round's progress call, and there had been none."""
    from click.testing import CliRunner

    from squall.deploy import produce as produce_module

    f = tmp_path / "e.jsonl"
    f.write_text("".join(json.dumps({"k": c * 300}) + "\n" for c in "xy"))
    real = produce_module._records

    def then_ctrl_c(lines):
        yield from real(lines)
        raise KeyboardInterrupt  # Ctrl-C while the input is read

    monkeypatch.setattr(produce_module, "_records", then_ctrl_c)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    args = ["--stream", "s", "--endpoint-url", "http://127.0.0.1:9", "--partition-key", "k"]
    result = CliRunner().invoke(produce_module.produce, [*args, str(f)])
    assert result.exit_code == 130, result.output
    assert "interrupted: 0 records sent, 2 failed before the stop" in result.stderr, result.stderr
