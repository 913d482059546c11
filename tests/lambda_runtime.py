"""The real AWS Lambda Python runtime client (awslambdaric) driven by a minimal Runtime API on loopback.

No Runtime Interface Emulator is available here, so the test serves the few Runtime API routes
the client uses (invocation/next, response, error, init/error, and SnapStart's restore/next and
restore/error: a test holds the restore until it has looked at the snapshotted process). The function runs in its own
process exactly as in AWS's Python base images: `python -m awslambdaric module.handler`, warm
between invocations.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def link_runtime(runtime: Path, root: Path) -> None:
    """Lambda provides the runtime client; here it sits beside the package (a .pth-free copy),
    nothing else (``runtime_client``: tests/conftest.py)."""
    for item in runtime.iterdir():
        target = root / item.name
        if not target.exists():
            target.symlink_to(item, target_is_directory=item.is_dir())


class RuntimeAPI:
    """Just enough of the Lambda Runtime API (2018-06-01), in a thread."""

    def __init__(self, function_name: str = "function", timeout_s: float = 60.0):
        self.timeout_s, self.function_name = timeout_s, function_name
        self.pending: queue.Queue = queue.Queue()
        self.results: dict[str, tuple[bytes, bool]] = {}
        self.done: dict[str, threading.Event] = {}
        self.init_errors: list[bytes] = []
        # SnapStart: set when the runtime asks for restore/next (its before-snapshot hooks ran);
        # the answer waits for `restore` to be set.
        self.snapshot_taken = threading.Event()
        self.restore = threading.Event()
        self.restore.set()
        self.restore_errors: list[bytes] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.endswith("/runtime/restore/next"):
                    api.snapshot_taken.set()
                    if not api.restore.wait(api.timeout_s):
                        return self._send(500)
                    return self._send(200)
                if not self.path.endswith("/runtime/invocation/next"):
                    return self._send(404)
                rid, event, deadline = api.pending.get()
                self._send(
                    200,
                    event,
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": rid,
                        "Lambda-Runtime-Deadline-Ms": str(deadline),
                        "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:us-east-1:000000000000:function:{api.function_name}",
                        "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
                    },
                )

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if "/runtime/invocation/" in self.path and self.path.rsplit("/", 1)[-1] in (
                    "response",
                    "error",
                ):
                    rid = self.path.split("/")[-2]
                    api.results[rid] = (body, self.path.endswith("/error"))
                    api.done.setdefault(rid, threading.Event()).set()
                    return self._send(202, b'{"status":"OK"}')
                if self.path.endswith("/runtime/init/error"):
                    api.init_errors.append(body)
                    return self._send(202, b'{"status":"OK"}')
                if self.path.endswith("/runtime/restore/error"):
                    api.restore_errors.append(body)
                    return self._send(202, b'{"status":"OK"}')
                return self._send(404)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(
                    sys.exc_info()[1], ConnectionError
                ):  # the runtime was stopped mid-poll
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = (
            f"127.0.0.1:{self.server.server_address[1]}"  # AWS_LAMBDA_RUNTIME_API: no scheme
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event: Any, deadline_ms: int | None = None) -> tuple[Any, bool]:
        """(payload, is_function_error) of one invocation; ``deadline_ms`` (epoch milliseconds,
        the ``Lambda-Runtime-Deadline-Ms`` header) defaults to ``timeout_s`` from now."""
        rid = str(uuid.uuid4())
        done = self.done.setdefault(rid, threading.Event())
        if deadline_ms is None:
            deadline_ms = int((time.time() + self.timeout_s) * 1000)
        self.pending.put((rid, json.dumps(event).encode(), deadline_ms))
        if not done.wait(self.timeout_s):
            raise TimeoutError(f"invocation {rid} timed out; init errors: {self.init_errors}")
        body, is_error = self.results.pop(rid)
        return json.loads(body or b"null"), is_error

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LambdaFunction:
    """`python -m awslambdaric HANDLER` in TASK_ROOT against a RuntimeAPI; stopped by PID."""

    def __init__(
        self,
        handler: str,
        task_root: Path,
        env: dict[str, str] | None = None,
        *,
        isolated: bool = False,
        hold_restore: bool = False,
    ):
        self.api = RuntimeAPI(handler.split(".")[0])
        if hold_restore:  # SnapStart: restore/next waits for `api.restore` to be set
            self.api.restore.clear()
        self.log_path = task_root / f"{handler}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        root = Path(__file__).resolve().parents[1]
        e = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_LAMBDA_FUNCTION_NAME": self.api.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_HANDLER": handler,
            "PYTHONPATH": os.pathsep.join([str(task_root), str(root)]),
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "awslambdaric", handler]
        if isolated:  # only the task root and the standard library, as in Lambda (no site-packages)
            e["PYTHONPATH"] = str(task_root)
            cmd.insert(1, "-S")
        self.proc = subprocess.Popen(
            cmd,
            env=e,
            cwd=task_root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def invoke(self, event: Any) -> Any:
        payload, is_error = self.api.invoke(event)
        assert not is_error, f"function error: {payload}\n{self.log()[-3000:]}"
        return payload

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.api.close()
