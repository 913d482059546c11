"""The json bolt's early limits: nesting depth and event-id length are a record's failure, with the value."""

from __future__ import annotations

import orjson

from squall.limits import nesting_depth
from squall.topology.outcomes import Outcome
from tests.bolts.test_builtin_bolts import run


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_json_rejects_a_payload_nested_deeper_than_max_depth_naming_both():
    payloads = [nested(64), nested(65), nested(1000), b'{"s": "' + b"[" * 500 + b'"}']
    outcomes, stores = run("  - {id: decode, type: json}", payloads)
    assert [o.outcome for o in outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons[0] == "payload nested 65 levels deep, over max_depth (64)"
    assert reasons[1] == "payload nested 1000 levels deep, over max_depth (64)"


def test_json_max_depth_is_configurable():
    outcomes, stores = run("  - {id: decode, type: json, max_depth: 3}", [nested(3), nested(4)])
    assert [o.outcome for o in outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    assert stores["dlq"][0].failure.reason == "payload nested 4 levels deep, over max_depth (3)"


def test_an_event_id_over_512_bytes_is_the_records_failure():
    payloads = [{"id": "a" * 512, "n": 1}, {"id": "é" * 257, "n": 2}, {"id": "b" * 5000, "n": 3}]
    outcomes, stores = run("  - {id: decode, type: json, event_id_field: id}", payloads)
    assert [o.outcome for o in outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
    ]
    assert stores["out"][0].event_id == "a" * 512
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons == [
        "id is 514 bytes, over the event id limit (512 bytes)",
        "id is 5000 bytes, over the event id limit (512 bytes)",
    ]
    assert all(
        len(ev.event_id) == 32 for ev in stores["dlq"]
    )  # the dead letter keeps the derived id


def test_nesting_depth_counts_without_recursion():
    deep = orjson.loads(nested(1000))
    assert nesting_depth(deep) == 1000
    assert nesting_depth({"a": [1, {"b": []}]}) == 4 and nesting_depth(3) == 0


def test_a_schema_reason_quoting_a_huge_value_is_bounded():
    bolts = "  - {id: decode, type: json}\n  - {id: validate, type: schema, schema: {type: object, properties: {t: {type: string}}}}"
    outcomes, stores = run(bolts, [{"t": list(range(50_000))}])
    (dead,) = stores["dlq"]
    assert dead.failure.reason.startswith("schema: $.t: [0, 1, 2")
    assert len(dead.failure.reason) < 1100 and dead.failure.reason.endswith("characters]")


def test_the_usual_id_and_every_other_kind_keep_their_outcome():
    """The usual id (text, short, no NUL) is taken in fewer steps; every other kind keeps the
    full rule: a number is its text, an empty or null id keeps the derived one, a NUL or an id
    over the limit in bytes is the record's failure, 128 four-byte characters are at it."""
    ids = ["m-1", 7, "", None, "a\x00b", "\U0001f600" * 128, "\U0001f600" * 129, "x" * 129]
    payloads = [{"id": eid, "n": i} for i, eid in enumerate(ids)]
    outcomes, stores = run("  - {id: decode, type: json, event_id_field: id}", payloads)
    assert [o.outcome for o in outcomes] == [Outcome.COMMITTED] * 4 + [
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    kept = [ev.event_id for ev in stores["out"]]
    assert kept[:2] == ["m-1", "7"] and len(kept[2]) == len(kept[3]) == 32
    assert kept[4:] == ["\U0001f600" * 128, "x" * 129]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons == [
        "id contains a NUL character",
        "id is 516 bytes, over the event id limit (512 bytes)",
    ]
