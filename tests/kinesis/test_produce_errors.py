"""squall produce refuses unusable streams and inputs with one line and the documented exit code."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

from tests.child_env import child_env


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
