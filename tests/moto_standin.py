"""moto's standalone server: the S3, SQS and Firehose stand-in of the sink, spout and Lambda-trigger tests.

Started once per test session on a free loopback port (``python -m moto.server -H 127.0.0.1``),
ready when ``/moto-api/`` answers, stopped by its PID. It does not throttle and its size limits
are loose: throttling and partial-failure paths are exercised with ``FlakyClient``, which wraps
a real boto3 client and injects AWS error answers.

Its fixtures are registered for every test by tests/conftest.py (``pytest_plugins``): one server
for the session. Do not import them into a test module — an imported session fixture is a
definition of that module's, with a server of its own.

``moto_in_process``: the same server in a thread of the test process, for the few tests that set
its clock: ``s3_clock(at)`` dates the S3 objects written meanwhile — S3 keeps LastModified to the
second, so an object "written an hour ago" is made without waiting for the clock to turn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from squall import aws
from tests.ports import free_port

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoServer:
    """A moto server process on 127.0.0.1; ``client(service)`` gives a boto3 client on it."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_dir / "moto.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **DUMMY_ENV},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"moto server not ready on {self.endpoint} after {timeout}s")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(0.5)  # a stand-in: nothing to keep, no reason to wait long
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy credentials and region, so nothing can reach real AWS."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in DUMMY_ENV.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(key, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_server(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


class InProcessMoto:
    """moto's server in a thread of this process on 127.0.0.1 (a free port), whose clock can be set."""

    def __init__(self) -> None:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    client = MotoServer.client

    @contextmanager
    def s3_clock(self, at: datetime) -> Iterator[None]:
        """S3 objects written in the block have LastModified ``at`` (an aware time)."""
        naive_utc = at.astimezone(UTC).replace(tzinfo=None)  # as moto keeps times
        with mock.patch("moto.s3.models.utcnow", return_value=naive_utc):
            yield

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def moto_in_process(aws_env: None) -> Iterator[InProcessMoto]:
    server = InProcessMoto()
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client_error(code: str, message: str = "injected", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Injected",
    )


class FlakyClient:
    """A real boto3 client whose named operations first go through ``hooks`` (which may raise or edit).

    ``hooks[op](kwargs, call)`` gets the call's arguments and the real operation; it returns the
    answer (e.g. with entries moved to ``Failed``) or raises a ``ClientError``. ``calls[op]``
    counts calls.
    """

    def __init__(self, real: Any, **hooks: Callable[[dict, Callable[..., Any]], Any]):
        self._real = real
        self._hooks = hooks
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        hook = self._hooks.get(name)
        if hook is None:
            return attr

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return hook(kwargs, attr)

        return call


def queue_counts(sqs, url: str) -> int:
    """Messages in a queue, visible or in flight."""
    a = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def called(monkeypatch):
    """'service:Operation' of every call made by clients that squall.aws.client creates from now on."""
    seen: set[str] = set()
    real = aws.client

    def recording(service: str, **kwargs):
        client = real(service, **kwargs)
        prefix = client.meta.service_model.signing_name  # IAM's service prefix
        client.meta.events.register(
            "before-call.*.*", lambda model, **_: seen.add(f"{prefix}:{model.name}")
        )
        return client

    monkeypatch.setattr(aws, "client", recording)
    return seen


class _Raw:
    def stream(self, **_):
        yield b""


def throttle_first(client, times: int, status: int = 503) -> list[str]:
    """Answer the first ``times`` HTTP attempts of ``client`` ``status`` with no body (botocore's
    standard mode retries a 503 and a 429), let the rest reach the server; returns the attempts
    seen."""
    attempts: list[str] = []

    def before_send(request, **_):
        attempts.append(request.url)
        if len(attempts) <= times:
            return AWSResponse(request.url, status, {}, _Raw())
        return None

    client.meta.events.register("before-send", before_send)
    return attempts


#: AWS queue URLs naming a region, with that region: the regional form, us-east-1's legacy
#: endpoint and an interface VPC endpoint's name (the last two read as naming no region, so the
#: environment's, before 8 December). ``{name}`` is the queue's.
QUEUE_URLS_AND_REGIONS = [
    ("https://sqs.eu-west-1.amazonaws.com/123456789012/{name}", "eu-west-1"),
    ("https://queue.amazonaws.com/123456789012/{name}", "us-east-1"),
    (
        "https://vpce-0a1b2c3d-4e5f6a7b.sqs.eu-west-1.vpce.amazonaws.com/123456789012/{name}",
        "eu-west-1",
    ),
]
