"""Local Kinesis (kinesis-mock) and DynamoDB (dynalite) for the Kinesis I/O tests.

Both are npm packages installed by scripts/node-deps.sh into .cache/node; each starts once per
test session on free loopback ports and is stopped by PID (SIGTERM, 2 s, then SIGKILL).
Tests use dummy credentials and region us-east-1; no traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".cache" / "node" / "node_modules"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class LocalService:
    """A Node process started by the tests; stopped by its PID only."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.endpoint = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # kinesis-mock can hang on SIGTERM after HTTP/2 traffic; a stand-in keeps
                # nothing worth a graceful stop (this wait was 2 s of every session's end)
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """Install (once, idempotently) the npm stand-ins."""
    try:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "node-deps.sh")],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"scripts/node-deps.sh failed: {exc.stderr.strip()}")
    return NODE_MODULES


@pytest.fixture(scope="session", autouse=True)
def aws_dummy_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in DUMMY_ENV.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(key, raising=False)
        yield


@pytest.fixture(scope="session")
def kinesis_mock(
    node_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalService]:
    km = node_modules / "kinesis-local"
    port, tls_port = free_port(), free_port()
    env = {
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(tls_port),
        "KINESIS_MOCK_CERT_PATH": str(km / "server.json"),  # needed even for plain HTTP
        "LOG_LEVEL": "WARN",
        "SHARD_LIMIT": "1000",  # default 50 counts every stream of the session
        "CREATE_STREAM_DURATION": "0ms",
        "DELETE_STREAM_DURATION": "0ms",
        "SPLIT_SHARD_DURATION": "0ms",
        "MERGE_SHARDS_DURATION": "0ms",
        "UPDATE_SHARD_COUNT_DURATION": "0ms",
        "REGISTER_STREAM_CONSUMER_DURATION": "0ms",
    }
    svc = LocalService(
        "kinesis-mock", ["node", str(km / "main.js")], env, tmp_path_factory.mktemp("kinesis-mock")
    )
    try:
        # On EADDRINUSE it keeps running without listening: ready means BOTH ports are open.
        wait_port(port, svc.proc)
        wait_port(tls_port, svc.proc)
    except Exception:
        svc.stop()
        raise
    svc.endpoint = f"http://127.0.0.1:{port}"
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def dynalite(
    node_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalService]:
    port = free_port()
    cmd = [
        "node",
        str(node_modules / "dynalite" / "cli.js"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--createTableMs",
        "0",
        "--deleteTableMs",
        "0",
        "--updateTableMs",
        "0",
    ]
    svc = LocalService("dynalite", cmd, {}, tmp_path_factory.mktemp("dynalite"))
    try:
        wait_port(port, svc.proc)
    except Exception:
        svc.stop()
        raise
    svc.endpoint = f"http://127.0.0.1:{port}"
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def kinesis(kinesis_mock: LocalService):
    """A boto3 Kinesis client on kinesis-mock."""
    return boto3.client("kinesis", endpoint_url=kinesis_mock.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def dynamodb(dynalite: LocalService):
    return boto3.client("dynamodb", endpoint_url=dynalite.endpoint, region_name="us-east-1")


@pytest.fixture
def make_stream(kinesis):
    """Create a uniquely named stream with N shards; returns its name. Deleted after the test."""
    made: list[str] = []

    def make(shards: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        made.append(name)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        return name

    yield make
    for name in made:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
