"""Private PostgreSQL and Redis instances on other loopback ports, for outage tests.

The shared services (5432, 6379) are never stopped; these are started by the test, killed and
restarted mid-run, and removed at the end. Redis keeps an append-only file (fsync always) and
PostgreSQL its data directory, so a restart comes back with what was committed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import free_port, wait_port


class PrivateRedis:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


class PrivatePostgres:
    """A throwaway cluster run as the ``postgres`` user (initdb refuses root), trust auth.

    Its directory is a fresh one under the system temp dir (pytest's is private to root).
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="squall-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            [
                *self.as_user,
                "initdb",
                "-D",
                str(self.dir / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                "postgres",
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.dir),
                "-c",
                "fsync=on",
                "-c",
                "max_connections=40",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the port opens before the server accepts sessions
            probe = subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-c",
                    "select 1",
                ],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("private PostgreSQL did not accept sessions")

    def kill(self) -> None:
        """An immediate stop (no checkpoint, crash recovery at the next start)."""
        if self.proc is not None:
            subprocess.run(
                [*self.as_user, "pg_ctl", "-D", str(self.dir / "data"), "stop", "-m", "immediate"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.proc.wait(timeout=30)
            self.proc = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
