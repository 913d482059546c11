"""Shared fixtures: real PostgreSQL and Redis on this machine (no fakes), the example topology."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.ports import port_open

# moto's server (S3, SQS, Firehose) and its fixtures, registered once for the whole session: a
# session fixture imported into each test module was one definition per module — a server each,
# all running until the session's end.
pytest_plugins = ("tests.moto_standin",)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PG_URL = os.environ.get("SQUALL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SQUALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Under pytest-xdist (scripts/test runs two workers) each worker has a database of its own,
# `<database>_<worker>`, created on first use: some tests wait until no other session of their
# database is busy or lock-waiting, which another worker's tests would be. Children inherit it
# through the environment. Redis keys are per test (``unique_name``), so its database is shared.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if WORKER:
    from tests.worker_db import worker_database

    PG_URL = worker_database(PG_URL, WORKER)
    os.environ["SQUALL_TEST_PG_URL"] = PG_URL
# No cache of checked schemas (squall/bolts/schema.py): each test's load checks its schemas, as a
# first run does, and nothing is written under the home folder. Its own tests set a folder. A
# child inheriting os.environ inherits this; one given an environment of its own gets it from
# tests.child_env.child_env (tests/test_child_env.py checks that every one does).
os.environ["SQUALL_CACHE_DIR"] = ""


def _need(service: str, port: int) -> None:
    if port_open(port, 0.5):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{service} is not running on 127.0.0.1:{port} (CI=true: a missing service is a failure)"
        )
    pytest.skip(f"{service} is not running on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL test database."""
    _need("PostgreSQL", 5432)
    return PG_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis."""
    _need("Redis", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> dict[str, str]:
    """pip's environment for the packaging tests: one wheelhouse, resolved once (tests.wheelhouse)."""
    from tests import wheelhouse

    # One build for all xdist workers: the first builds into the run's shared folder, the others
    # wait on its lock and use it.
    base = tmp_path_factory.getbasetemp()  # a worker's is inside the run's
    return wheelhouse.build_once((base.parent if WORKER else base) / "wheelhouse", ROOT)


@pytest.fixture(scope="session")
def runtime_client(tmp_path_factory, wheelhouse) -> Path:
    """AWS's runtime client (awslambdaric), installed once from the wheelhouse into a folder of
    its own: the packaging tests link it beside an unzipped package, as Lambda provides it."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("awslambdaric")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(root),
            "awslambdaric==4.2.2",
        ],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, **wheelhouse},
    )
    return root


@pytest.fixture
def unique_name() -> str:
    """A table or key prefix no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _forget_remembered_url_parts(monkeypatch):
    """The user names and hosts of secret URLs a test loads are masked process-wide
    (``redact.remember_url``): forgotten after each test, or a later one's loopback host is."""
    from squall import redact

    monkeypatch.setattr(redact, "_parts", redact._parts)
    monkeypatch.setattr(redact, "_parts_pattern", redact._parts_pattern)


@pytest.fixture(autouse=True)
def sink_stores():
    """Every test's memory sinks write to stores of its own (``MemorySink.stores`` reads them)."""
    from squall.testing import memory_stores as scope

    with scope() as stores:
        yield stores
