"""A payload that is not UTF-8 (a kiosk sending Latin-1 "café"): the json bolt's reason said
orjson's "str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)" whatever the
byte and wherever it was — wrong (no surrogate) and unlocated. It names the byte and its place."""

from __future__ import annotations

import pytest

from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome

TOPOLOGY = """
name: not-utf8
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks:
  - {id: out, type: 'squall.testing:MemorySink', name: not-utf8-out}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: not-utf8-dlq}
"""


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            b'{"order_id": "o-1", "note": "caf\xe9"}',
            "invalid JSON: not UTF-8: byte 0xE9 at offset 32 (line 1, column 33)",
        ),
        (
            b'{"order_id": "o-2",\n "note": "\xed\xa0\x80"}',
            "invalid JSON: not UTF-8: byte 0xED at offset 30 (line 2, column 11)",
        ),
        (b"\xff{}", "invalid JSON: not UTF-8: byte 0xFF at offset 0 (line 1, column 1)"),
    ],
)
def test_a_payload_that_is_not_utf8_is_dead_lettered_with_the_byte_and_its_place(
    payload: bytes, expected: str
):
    run = run_topology(TOPOLOGY, records_from([{"order_id": "ok"}, payload]))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    reason = run.outcomes[1].reason
    assert reason.startswith(expected), reason
    assert "surrogates" not in reason


def test_other_invalid_json_keeps_orjson_s_located_reason():
    run = run_topology(TOPOLOGY, records_from([b'{"order_id": "o-1",']))
    assert run.outcomes[0].reason.startswith("invalid JSON: unexpected end of data: line 1")
