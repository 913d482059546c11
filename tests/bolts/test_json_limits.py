"""The json bolt's early limits: nesting depth and event-id length are a record's failure, with the value."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.limits import MAX_EVENT_ID_BYTES, nesting_depth
from squall.paths import MISSING
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


_IDS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=140),  # NULs, 4-byte characters, empty
    st.text(st.sampled_from("a\x00\u00e9\U0001f600"), min_size=120, max_size=140),  # 128 ±
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.just(MISSING),
)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(_IDS, min_size=1, max_size=6), nested=st.booleans())
def test_every_event_id_keeps_the_full_rule(ids, nested):
    """Whatever the id (text of any length in characters and bytes, NULs, numbers, booleans,
    empty, null or absent; a top-level or a nested field), the usual-id shortcut keeps the full
    rule: its text is the id; an empty, null or absent one keeps the derived id; over the limit
    in bytes or holding a NUL, the record's failure."""
    from squall.bolts.json_decode import JsonBolt
    from squall.component import ComponentContext
    from squall.event import Event, RecordMeta

    field = "m.id" if nested else "id"
    bolt = JsonBolt(
        JsonBolt.Config(id="j", type="json", event_id_field=field), ComponentContext("t")
    )
    events = []
    for i, eid in enumerate(ids):
        doc: dict = {} if eid is MISSING else {"id": eid}
        raw = orjson.dumps({"m": doc} if nested else doc)
        events.append(Event(raw, RecordMeta("s", "shardId-0", str(i), 0, "pk"), None, i))
    out = bolt.process(events)
    failed = {ev.origin: ev.failure.reason for ev in out.streams.get("error", [])}
    passed = {ev.origin: ev._event_id for ev in out.streams.get("default", [])}
    for i, eid in enumerate(ids):
        if eid is MISSING or eid is None or eid == "":
            assert passed[i] is None  # derived when asked
            continue
        text = str(eid)
        size = len(text.encode("utf-8"))
        if size > MAX_EVENT_ID_BYTES:
            assert failed[i] == (
                f"{field} is {size} bytes, over the event id limit ({MAX_EVENT_ID_BYTES} bytes)"
            )
        elif "\x00" in text:
            assert failed[i] == f"{field} contains a NUL character"
        else:
            assert passed[i] == text and passed[i].__class__ is str
    assert len(failed) + len(passed) == len(ids)
