"""A packaged producer can move the request context off `request` (README: "an event that
already has a `request` field is rejected …: rename it in the client, or set another
`context_key`"): `squall package --handler producer --context-key NAME` writes it into the
generated `squall_lambda.py`; the default keeps the generated file as it was."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

from squall.cli import main
from squall.deploy.package import handler_source
from tests.factories import api_gateway_event

PRODUCER = """
name: producer-context
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: "squall.testing:MemorySink"}]
"""


def _generated_handler(tmp_path: Path, source: str):
    (tmp_path / "topology").mkdir()
    (tmp_path / "topology" / "producer.yaml").write_text(PRODUCER)
    (tmp_path / "squall_lambda.py").write_text(source)
    spec = importlib.util.spec_from_file_location(
        "squall_lambda_ctx", tmp_path / "squall_lambda.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.handler


def test_the_generated_producer_puts_the_context_under_the_key_given(tmp_path: Path, sink_stores):
    source = handler_source("producer", "producer.yaml", context_key="http")
    handler = _generated_handler(tmp_path, source)

    event = {"event_type": "push_opened", "request": {"campaign": "c1"}}
    resp = handler(api_gateway_event(json.dumps(event)), None)

    assert resp["statusCode"] == 202, resp
    [stored] = sink_stores["out"]
    assert stored.value["request"] == {"campaign": "c1"}  # the SDK's own field, kept
    assert stored.value["http"]["source_ip"] == "81.2.69.142"


def test_the_default_generates_the_same_file_as_before():
    assert handler_source("producer", "producer.yaml") == handler_source(
        "producer", "producer.yaml", context_key="request"
    )
    assert "context_key" not in handler_source("producer", "producer.yaml")


def test_context_key_is_refused_for_a_consumer(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(PRODUCER)
    result = CliRunner().invoke(
        main, ["package", str(t), "--handler", "consumer", "--context-key", "http"]
    )
    assert result.exit_code == 2
    assert "--context-key is for the producer" in result.output
