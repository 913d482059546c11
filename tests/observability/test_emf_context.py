"""The handlers' EMF documents with a context of the caller's own.

docs/deploy.md lets a test call a handler with ``None`` or any object: one with
``get_remaining_time_in_millis`` gives the deadline. Such an object has no ``function_name``,
which Powertools' ColdStart metric reads: it raised before any document was printed, and since
the cold flag was cleared only after it, at every invocation — no metric ever, a traceback each
time.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from squall.deploy.lambda_producer import make_handler
from squall.observability.emf import EmfBackend
from tests.factories import api_gateway_event

TOPOLOGY = """
name: emf-context
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink', name: '{tag}'}}]
"""


class Deadline:
    """The least a caller's context needs: the time left."""

    def __init__(self, ms: int = 29_000):
        self.end = time.monotonic() + ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


def documents(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_a_context_without_a_function_name_still_gets_every_invocation_s_metrics(
    tmp_path: Path, capsys, caplog
):
    path = tmp_path / "producer.yaml"
    path.write_text(TOPOLOGY.format(tag=uuid.uuid4().hex))
    handle = make_handler(path)
    for n in range(2):
        assert handle(api_gateway_event(json.dumps({"n": n})), Deadline())["statusCode"] == 202
        docs = documents(capsys.readouterr().out)
        assert [d["RecordsCommitted"] for d in docs if "RecordsCommitted" in d] == [[1.0]]
    assert "EMF metrics could not be written" not in caplog.text


def test_a_lambda_context_still_gets_its_cold_start_once(capsys):
    class Context(Deadline):
        function_name = "producer_fn"

    emf = EmfBackend(service="svc")
    emf.flush(Context())
    emf.flush(Context())
    cold = [d for d in documents(capsys.readouterr().out) if "ColdStart" in d]
    assert len(cold) == 1 and cold[0]["function_name"] == "producer_fn"
