"""A record's failure reason may quote what a dependency answered (a receiver echoing a request
header, an OAuth error): wherever the reason leaves the process — the dead letter, the producer's
answer to its caller, the metrics' first failed record — credentials in it are masked, as in logs.
(Log lines were masked by the logging filter already; these three were written as they were.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from squall.deploy.lambda_producer import make_handler as producer_handler
from tests.deploy.test_lambda_consumer import handler_for
from tests.factories import api_gateway_event, kinesis_lambda_event

TOKEN = "s3cr3t-t0ken-4711"
ECHO = f"receiver answered 401 to a request with Authorization: Bearer {TOKEN}"


def test_the_dead_letter_file_masks_a_credential_quoted_in_a_reason(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    assert handler(kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": ECHO}]), None) == {
        "batchItemFailures": []
    }
    [line] = (tmp_path / "dlq.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["component"] == "chaos"
    assert doc["reason"] == "receiver answered 401 to a request with Authorization: Bearer ***"
    assert TOKEN in doc["record"]  # the record itself is kept as it came: nothing is lost


def test_the_metrics_first_failed_record_masks_a_credential_quoted_in_its_reason(
    tmp_path: Path, caplog
):
    handler = handler_for(tmp_path, dlq=False)
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        handler(kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": ECHO}]), None)
    [line] = [r for r in caplog.records if r.name == "squall.invocation"]
    reason = line.fields["first_failed"]["reason"]  # the sample as every backend gets it
    assert TOKEN not in reason and reason.endswith("Authorization: Bearer ***")


PRODUCER = """
name: producer
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
  - {id: chaos, type: 'squall.testing:FaultyBolt'}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
"""


def test_the_producer_answer_masks_a_credential_quoted_in_a_rejection(tmp_path: Path):
    t = tmp_path / "producer.yaml"
    t.write_text(PRODUCER)
    handler = producer_handler(t)
    events = [{"message_id": "m1"}, {"message_id": "m2", "fail": ECHO}]
    resp = handler(api_gateway_event(json.dumps(events)), None)
    body = json.loads(resp["body"])
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {
            "index": 1,
            "reason": "chaos: receiver answered 401 to a request with Authorization: Bearer ***",
        }
    ]


def test_a_schema_reason_quoting_a_credential_field_is_masked_in_the_dead_letter():
    """jsonschema quotes the value it refuses, under the field's JSON path (``$.password``): the
    name after a '.' is masked when its value is quoted (a located config error's message, not
    quoted, stays: tests/test_redaction_headers.py)."""
    from squall.bolts.schema import SchemaBolt
    from squall.component import ComponentContext
    from squall.event import Event, RecordMeta
    from squall.sinks.dead_letter import dead_letter_line

    schema = {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {"password": {"minLength": 40}}},
            "api_key": {"pattern": "^pk_"},
        },
    }
    bolt = SchemaBolt(
        SchemaBolt.Config(id="check", type="schema", schema=schema), ComponentContext("t")
    )
    meta = RecordMeta("s", "shardId-0", "1")
    values = [{"user": {"password": TOKEN}}, {"api_key": TOKEN}]
    events = [Event(b"", meta, f"e{i}", i, v) for i, v in enumerate(values)]
    out = bolt.process(events)
    reasons = [dead_letter_line(ev)["reason"] for ev in out.streams["invalid"]]
    assert reasons == [
        "schema: $.user.password: '***' is too short",
        "schema: $.api_key: '***' does not match '^pk_'",
    ]


def test_a_service_accounts_private_key_is_masked():
    """The push sink's FCM credentials are a Google service account's JSON: its `private_key`
    (a PEM block) is masked wherever the JSON or its dict shows up in a message (found by the
    review of 6 December's fourth session)."""
    from squall.redact import redact_text

    account = {
        "type": "service_account",
        "private_key_id": "abc123",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n",
        "client_email": "push@app.iam.gserviceaccount.com",
    }
    for shown in (json.dumps(account), repr(account)):
        masked = redact_text(f"cannot sign the token with {shown}")
        assert "MIIEvQIBADANBg" not in masked and "push@app.iam.gserviceaccount.com" in masked
    assert redact_text("the private key file is missing") == "the private key file is missing"


def test_a_long_reason_is_masked_before_it_is_cut(tmp_path: Path):
    """A component's own reason over ``MAX_REASON`` is cut (``Failure``). Cut first, a URL's
    password straddling the cut lost its ``@host`` and the dead letter's mask no longer found
    it: its first characters were written. Masked first, as ``describe_exception`` does."""
    password = "Zq9vX7pL2mK4"
    reason = "x" * 980 + f" postgres://app:{password}@db.example/app " + "z" * 100
    handler = handler_for(tmp_path, dlq=True)
    handler(kinesis_lambda_event([{"n": 1, "fail": reason}]), None)
    [line] = (tmp_path / "dlq.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["reason"].endswith(" chars]") and "… [truncated, " in doc["reason"]
    assert password[:4] not in doc["reason"] and "postgres://app:***" in doc["reason"]


def test_a_secret_running_past_the_masked_window_shows_none_of_its_rest():
    """Only a window of a long reason is masked (4 × ``MAX_REASON``); the text past it was
    appended unmasked before the cut, and a value masked to the window's end shortened the text:
    the rest of a password (a private key) over 4,000 characters came back into the kept
    characters."""
    from squall.errors import MAX_REASON, masked_reason

    for secret in (
        f"password={'x' * 4100}TAIL-OF-IT&more",
        f'{{"private_key": "{"K" * 4100}TAIL-OF-IT"}}',
    ):
        shown = masked_reason(ValueError(f"auth failed: {secret}"))
        assert "TAIL-OF-IT" not in shown and "xxx" not in shown and "KKK" not in shown, shown
        assert shown.endswith(f"… [truncated, {len('auth failed: ') + len(secret)} chars]"), shown
        assert len(shown) < MAX_REASON + 40
