"""Private redis-servers for the tests that need one configured otherwise than the shared one (a
password, a full ``maxmemory``, a low ``busy-reply-threshold``), and a Redis made to answer
``BUSY`` to every command (a script running past its time limit)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import redis

from tests.ports import free_port, wait_port


@contextmanager
def private_redis_server(directory: Path, *options: str) -> Iterator[int]:
    """A redis-server on a free port of 127.0.0.1, storing nothing on disk, with these command
    line ``options``; yields its port. Its output is in ``directory/redis.log``.

    A port ``free_port`` found free can be taken by another test's process before redis-server
    binds it (two workers): a server that exits before its port opens is started again on
    another port, at most three times in all."""
    for attempt in range(3):
        port = free_port()
        with open(directory / "redis.log", "ab") as log:
            proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
                + ["--dir", str(directory), "--save", "", "--appendonly", "no", *options],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_port(port, proc)
        except RuntimeError:
            exited = proc.poll() is not None  # else it never opened its port: no retry
            proc.kill()
            proc.wait()
            if attempt == 2 or not exited:
                raise
            continue
        break
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait()


def scripted_redis_server(directory: Path) -> AbstractContextManager[int]:
    """A private redis-server that answers BUSY 50 ms into a script (``busy-reply-threshold``)."""
    return private_redis_server(directory, "--busy-reply-threshold", "50")


@contextmanager
def busy(port: int) -> Iterator[None]:
    """Redis running an endless script: every command is answered BUSY until it is killed."""
    runner = threading.Thread(
        target=lambda: pytest.raises(
            redis.exceptions.ResponseError,
            redis.Redis(port=port).eval,
            "while true do end",
            0,
        )
    )
    runner.start()
    probe = redis.Redis(port=port)
    try:
        while True:  # until the server says so: the script is past its threshold
            try:
                probe.ping()
            except redis.exceptions.ResponseError as exc:
                assert str(exc).startswith("BUSY ")
                break
        yield
    finally:
        probe.script_kill()
        runner.join()
        probe.close()
