"""``squall local-aws``: local Kinesis and DynamoDB on 127.0.0.1 for the KCL and Lambda paths on a laptop.

Starts kinesis-mock (npm ``kinesis-local``) and dynalite (npm ``dynalite``), installed with npm
on first use, creates every stream the given topologies name (kinesis spouts and sinks), prints
the environment that points boto3 — hence squall — at them (``AWS_ENDPOINT_URL_KINESIS``,
``AWS_ENDPOINT_URL_DYNAMODB``, dummy credentials) and the ``squall kcl`` options, and runs until
Ctrl-C or SIGTERM, then stops both by PID. Nothing leaves the machine; data lives in memory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squall.errors import SquallError
from squall.topology import registry
from squall.topology.model import Topology

PACKAGES = ("kinesis-local@0.6.2", "dynalite@4.0.0")
DEFAULT_NODE_DIR = Path.home() / ".cache" / "squall" / "node"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def install(node_dir: Path) -> Path:
    """``node_modules`` holding both stand-ins; installs them with npm once (a stamp file records the versions)."""
    stamp = node_dir / ".installed"
    want = " ".join(PACKAGES)
    if stamp.is_file() and stamp.read_text().strip() == want:
        return node_dir / "node_modules"
    if (node_dir / "node_modules" / "kinesis-local").is_dir() and (
        node_dir / "node_modules" / "dynalite"
    ).is_dir():
        return node_dir / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise SquallError(
            "npm not found: install Node.js 18+ (kinesis-mock and dynalite are npm packages)"
        )
    node_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            npm,
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(node_dir),
            *PACKAGES,
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SquallError(f"npm install failed: {r.stderr.strip()[-1500:]}")
    stamp.write_text(want + "\n")
    return node_dir / "node_modules"


def streams_of(topologies: list[Topology]) -> list[str]:
    """Stream names the topologies read or write (kinesis spouts and sinks), in order, once each."""
    names: list[str] = []
    for topo in topologies:
        for _kind, _cfg, caps in registry.declared(topo):
            names.extend(str(s).rsplit("/", 1)[-1] for s in caps.kinesis_streams)
    return list(dict.fromkeys(names))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SquallError(
                f"{proc.args[1] if isinstance(proc.args, list) else proc.args} exited with "
                f"{proc.returncode} before port {port} opened"
            )
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SquallError(f"port {port} not open after {timeout:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(2)  # kinesis-mock can hang on SIGTERM after HTTP/2 traffic
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def environment(kinesis_port: int, dynamodb_port: int) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_KINESIS": f"http://127.0.0.1:{kinesis_port}",
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{dynamodb_port}",
    }


def node_modules_dir(path: Path) -> Path:
    """The ``node_modules`` holding the stand-ins: ``path`` itself, or the one inside an npm prefix."""
    if not (path / "kinesis-local").is_dir() and (path / "node_modules" / "kinesis-local").is_dir():
        return path / "node_modules"
    return path


def _check_installed(modules: Path) -> None:
    if (
        not (modules / "kinesis-local" / "main.js").is_file()
        or not (modules / "dynalite" / "cli.js").is_file()
    ):
        raise SquallError(
            f"kinesis-local and dynalite are not installed in {modules}: install them with "
            f"`npm install --prefix DIR {' '.join(PACKAGES)}` and give --node-modules DIR, "
            f"or leave --node-modules out to have them installed into {DEFAULT_NODE_DIR}"
        )


def run_local_aws(
    topologies: list[Topology],
    *,
    kinesis_port: int = 4567,
    dynamodb_port: int = 4569,
    shards: int = 1,
    node_modules: Path | None = None,
    env_file: Path | None = None,
    echo: Callable[[str], Any] = print,
    stop: threading.Event | None = None,
) -> int:
    """Start both, create the streams, print the environment, wait for a signal (or ``stop``); 0 on a clean stop."""
    # A folder given without the stand-ins is said first: it does not depend on what else runs.
    modules = node_modules_dir(node_modules) if node_modules else None
    if modules is not None:
        _check_installed(modules)
    for port in (kinesis_port, kinesis_port + 1, dynamodb_port):
        if not _port_free(port):
            raise SquallError(
                f"port {port} on 127.0.0.1 is in use (choose others with --kinesis-port/--dynamodb-port)"
            )
    if modules is None:
        modules = install(DEFAULT_NODE_DIR)
        _check_installed(modules)
    node = shutil.which("node")
    if node is None:
        raise SquallError("node not found: install Node.js 18+")
    km = modules / "kinesis-local"
    kinesis_env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(kinesis_port),
        "KINESIS_MOCK_TLS_PORT": str(kinesis_port + 1),
        "KINESIS_MOCK_CERT_PATH": str(km / "server.json"),  # needed even for plain HTTP
        "LOG_LEVEL": "WARN",
        "CREATE_STREAM_DURATION": "0ms",
        "DELETE_STREAM_DURATION": "0ms",
        "SPLIT_SHARD_DURATION": "0ms",
        "MERGE_SHARDS_DURATION": "0ms",
        "UPDATE_SHARD_COUNT_DURATION": "0ms",
        "REGISTER_STREAM_CONSUMER_DURATION": "0ms",
    }
    procs: list[subprocess.Popen] = []
    stopping = stop or threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        procs.append(
            subprocess.Popen(
                [node, str(km / "main.js")],
                env=kinesis_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    node,
                    str(modules / "dynalite" / "cli.js"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(dynamodb_port),
                    "--createTableMs",
                    "0",
                    "--deleteTableMs",
                    "0",
                    "--updateTableMs",
                    "0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        # kinesis-mock keeps running without listening when a port is taken: ready means both are open.
        _wait_port(kinesis_port, procs[0])
        _wait_port(kinesis_port + 1, procs[0])
        _wait_port(dynamodb_port, procs[1])
        env = environment(kinesis_port, dynamodb_port)
        created = _create_streams(streams_of(topologies), env, shards)
        lines = [f"export {k}={v}" for k, v in env.items()]
        if env_file is not None:
            env_file.parent.mkdir(parents=True, exist_ok=True)
            env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        echo(
            f"kinesis-mock on {env['AWS_ENDPOINT_URL_KINESIS']}, dynalite on {env['AWS_ENDPOINT_URL_DYNAMODB']}"
        )
        for name in created:
            echo(f"stream {name}: {shards} shard(s)")
        echo("# in another shell:")
        for line in lines:
            echo(line)
        # --stream: needed for a topology whose spout is not the stream (the fleet's own
        # topology.yaml reads a file locally)
        stream = f"--stream {created[0]} " if created else ""
        echo(
            f"# squall kcl FILE {stream}--kinesis-endpoint {env['AWS_ENDPOINT_URL_KINESIS']} "
            f"--dynamodb-endpoint {env['AWS_ENDPOINT_URL_DYNAMODB']} --no-metrics"
        )
        echo("ready (Ctrl-C stops both)")
        while not stopping.wait(0.5):
            for p in procs:
                if p.poll() is not None:
                    raise SquallError(f"{p.args[1]} exited with {p.returncode}")
        return 0
    finally:
        for p in procs:
            _stop(p)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _create_streams(names: list[str], env: dict[str, str], shards: int) -> list[str]:
    import boto3

    client = boto3.client(
        "kinesis",
        endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"],
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    existing = set(client.list_streams().get("StreamNames", []))
    for name in names:
        if name not in existing:
            client.create_stream(StreamName=name, ShardCount=shards)
    for name in names:
        client.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
    return names
