"""`squall local-aws`: one command starts local Kinesis and DynamoDB and creates the topology's streams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.ports import free_port


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


pytestmark = pytest.mark.e2e

TOPOLOGY = """
name: laptop
spout: {type: kinesis, stream: "${IN_STREAM:-laptop-in}"}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: out, type: kinesis, stream: laptop-out}
"""


def test_local_aws_starts_both_stand_ins_creates_the_streams_and_stops_on_sigterm(
    tmp_path: Path, node_modules
):
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    kinesis_port = free_port()
    while not port_free(kinesis_port + 1):  # kinesis-mock's TLS listener takes the next port
        kinesis_port = free_port()
    dynamodb_port = free_port()
    while dynamodb_port in (kinesis_port, kinesis_port + 1):
        dynamodb_port = free_port()
    env_file = tmp_path / "local-aws.env"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "local-aws",
            str(topology),
            "--kinesis-port",
            str(kinesis_port),
            "--dynamodb-port",
            str(dynamodb_port),
            "--shards",
            "2",
            "--node-modules",
            str(node_modules),
            "--env-file",
            str(env_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("ready") or time.monotonic() > deadline:
                break
        assert lines and lines[-1].startswith("ready"), "".join(lines) + proc.stderr.read()  # type: ignore[union-attr]
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert env["AWS_ENDPOINT_URL_KINESIS"] == f"http://127.0.0.1:{kinesis_port}"
        assert f"export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:{dynamodb_port}\n" in lines
        # the hint is a command that runs: `squall kcl` needs the stream of a topology whose
        # spout is not kinesis (the fleet's topology.yaml reads a file locally)
        assert (
            f"# squall kcl FILE --stream laptop-in --kinesis-endpoint http://127.0.0.1:"
            f"{kinesis_port} --dynamodb-endpoint http://127.0.0.1:{dynamodb_port} --no-metrics\n"
        ) in lines
        kinesis = boto3.client(
            "kinesis", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"], region_name="us-east-1"
        )
        assert sorted(kinesis.list_streams()["StreamNames"]) == ["laptop-in", "laptop-out"]
        assert len(kinesis.list_shards(StreamName="laptop-in")["Shards"]) == 2
        ddb = boto3.client(
            "dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"], region_name="us-east-1"
        )
        assert ddb.list_tables()["TableNames"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0
    for port in (kinesis_port, dynamodb_port):  # both stand-ins were stopped with it
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", port), 0.5).close()
