"""The producer's 400 answers as the README and docs/deploy.md describe them: an SDK that parses
the documented body must find its keys in what the function sends."""

from __future__ import annotations

import json
import re
from pathlib import Path

from squall.deploy.lambda_producer import make_handler
from tests.factories import api_gateway_event
from tests.test_doc_links import ROOT

TOPOLOGY = """
name: producer-doc
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
  - {id: validate, type: schema, schema: {type: object, required: [message_id, event_type]}}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
"""


def _answer(tmp_path: Path, body: str) -> tuple[int, dict]:
    t = tmp_path / "producer.yaml"
    t.write_text(TOPOLOGY)
    resp = make_handler(t)(api_gateway_event(body), None)
    return resp["statusCode"], json.loads(resp["body"])


def _documented_400_bodies(text: str) -> list[set[str]]:
    """The keys of every ``400 {…}`` body the text shows."""
    return [set(re.findall(r'"(\w+)":', m)) for m in re.findall(r"`400 (\{[^`]*\})`", text)]


def test_every_event_rejected_is_answered_as_documented(tmp_path: Path):
    status, body = _answer(tmp_path, json.dumps([{"message_id": "m1"}, {"message_id": "m2"}]))
    assert status == 400
    for doc in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        shown = _documented_400_bodies(doc.read_text())
        assert set(body) in shown, f"{doc.name}: no `400 {{…}}` with the keys {sorted(body)}"


def test_a_malformed_request_is_answered_as_documented(tmp_path: Path):
    status, body = _answer(tmp_path, "[1, 2")
    assert status == 400
    for doc in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        assert set(body) in _documented_400_bodies(doc.read_text()), doc.name


def test_a_method_other_than_post_is_answered_as_documented(tmp_path: Path):
    t = tmp_path / "producer.yaml"
    t.write_text(TOPOLOGY)
    resp = make_handler(t)(api_gateway_event("{}", method="GET"), None)
    assert resp["statusCode"] == 405 and resp["headers"]["Allow"] == "POST"
    shown = '`405 {"error": …}` + `Allow: POST`'
    for doc in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        assert shown in doc.read_text(), doc.name
