"""Built-in generic bolts, one behaviour per test, through the real engine."""

from __future__ import annotations

import gzip
import json

import orjson
import pytest

from squall.bolts.base import Bolt, Output
from squall.errors import TopologyError
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome


def run(bolts: str, payloads, *, streams: str = "", sinks: str = "") -> tuple[list, dict]:
    import uuid

    tag = uuid.uuid4().hex
    yaml = f"""
name: t
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
{bolts}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
{sinks}
{streams}
"""
    result = run_topology(yaml, records_from(payloads))
    stores = {k.split("-", 1)[1]: v for k, v in MemorySink.stores.items() if k.startswith(tag)}
    return result.outcomes, stores


def test_json_decodes_gzip_and_rejects_bad_payloads_with_reasons():
    payloads = [gzip.compress(b'{"a": 1}'), b'{"a": 2}', b"{nope", b"[1, 2]", b"\x1f\x8bnot gzip"]
    outcomes, stores = run("  - {id: decode, type: json}", payloads)
    assert [ev.value for ev in stores["out"]] == [{"a": 1}, {"a": 2}]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert (
        reasons[0].startswith("invalid JSON")
        and "not an object" in reasons[1]
        and "gzip" in reasons[2]
    )
    assert [o.outcome for o in outcomes].count(Outcome.DEAD_LETTERED) == 3


def test_json_names_a_payload_that_is_not_an_object_by_its_json_type():
    """The reason reaches a dead letter and, through the Lambda producer, an SDK's answer: it
    read "payload is a JSON NoneType" (Python's name) for `null`, "list" for an array."""
    payloads = [b"null", b"[1]", b'"x"', b"true", b"1.5", b"7"]
    _, stores = run("  - {id: decode, type: json}", payloads)
    assert [ev.failure.reason for ev in stores["dlq"]] == [
        f"payload is a JSON {kind}, not an object"
        for kind in ("null", "array", "string", "boolean", "number", "number")
    ]


def test_json_reads_every_member_of_a_gzip_stream_and_refuses_data_after_it():
    """Only the first member of a multi-member gzip payload was decoded (a valid payload failed
    as "invalid JSON"), and data after the stream was dropped silently."""
    whole = gzip.compress(b'{"a": ') + gzip.compress(b'1, "b": 2}')
    padded = gzip.compress(b'{"c": 3}') + b"\x00" * 8
    junk = gzip.compress(b'{"d": 4}') + b'{"e": 5}'
    _, stores = run("  - {id: decode, type: json, max_bytes: 100}", [whole, padded, junk])
    assert [ev.value for ev in stores["out"]] == [{"a": 1, "b": 2}, {"c": 3}]
    [rejected] = stores["dlq"]
    assert (
        rejected.failure.reason == "invalid gzip payload: 8 bytes after the end of the gzip stream"
    )
    bomb = gzip.compress(b" " * 60) + gzip.compress(b" " * 60)  # the limit counts every member
    _, stores = run("  - {id: decode, type: json, max_bytes: 100}", [bomb])
    assert "exceeds 100 bytes" in stores["dlq"][0].failure.reason


def test_json_takes_event_id_from_payload_field():
    _, stores = run(
        "  - {id: decode, type: json, event_id_field: msg.id}", [{"msg": {"id": "m-1"}}, {"x": 1}]
    )
    assert stores["out"][0].event_id == "m-1"
    assert len(stores["out"][1].event_id) == 32  # derived from stream/shard/sequence


def test_schema_sends_invalid_to_invalid_stream_with_path():
    bolts = "  - {id: decode, type: json}\n  - {id: v, type: schema, schema: {type: object, required: [a], properties: {a: {type: integer}}}}"
    outcomes, stores = run(bolts, [{"a": 1}, {"a": "x"}, {}])
    assert [ev.value for ev in stores["out"]] == [{"a": 1}]
    reasons = sorted(ev.failure.reason for ev in stores["dlq"])
    assert reasons == [
        "schema: $.a: 'x' is not of type 'integer'",
        "schema: $: 'a' is a required property",
    ]
    assert all(ev.failure.stream == "invalid" for ev in stores["dlq"])


def test_filter_conditions():
    bolts = """  - {id: decode, type: json}
  - id: f
    type: filter
    where:
      - {field: kind, in: [click, view]}
      - {field: n, gte: 2}
      - {field: ua, regex: "^Mozilla"}
      - {field: meta.shard_id, exists: true}"""
    payloads = [
        {"kind": "click", "n": 2, "ua": "Mozilla/5"},
        {"kind": "click", "n": 1, "ua": "Mozilla"},
        {"kind": "buy", "n": 5, "ua": "Mozilla"},
        {"kind": "view", "n": "7", "ua": "Mozilla"},
        {"kind": "view", "n": 9.5, "ua": "curl"},
        {"kind": "view", "n": 3.0, "ua": "Mozilla x"},
    ]
    outcomes, stores = run(bolts, payloads)
    assert [ev.value["n"] for ev in stores["out"]] == [2, 3.0]
    assert [o.outcome for o in outcomes].count(Outcome.FILTERED) == 4


def test_filter_drop_action_and_any():
    bolts = """  - {id: decode, type: json}
  - {id: f, type: filter, action: drop, any: [{field: bot, equals: true}, {field: kind, not_in: [a, b]}]}"""
    _, stores = run(
        bolts,
        [{"kind": "a"}, {"kind": "a", "bot": True}, {"kind": "z"}, {"kind": "b", "bot": False}],
    )
    assert [ev.value for ev in stores["out"]] == [{"kind": "a"}, {"kind": "b", "bot": False}]


def test_project_select_rename_drop_defaults():
    bolts = """  - {id: decode, type: json}
  - id: p
    type: project
    select: [user.id, kind, secret, geo.ip]
    rename: {user.id: user_id, kind: event.type}
    drop: [secret]
    defaults: {app: unknown, geo.ip: null}"""
    _, stores = run(
        bolts, [{"user": {"id": 7, "name": "x"}, "kind": "click", "secret": "s", "other": 1}]
    )
    assert stores["out"][0].value == {
        "user": {},
        "user_id": 7,
        "event": {"type": "click"},
        "app": "unknown",
        "geo": {"ip": None},
    }


def test_route_by_field_value_to_named_streams():
    bolts = """  - {id: decode, type: json}
  - {id: r, type: route, field: kind, routes: {register: subs, subscribe: subs, click: clicks}}"""
    sinks = "  - {id: subs, type: 'squall.testing:MemorySink', name: SUBS}\n"
    streams = "streams:\n  - {from: r, stream: subs, to: subs}"
    MemorySink.stores.pop("SUBS", None)
    outcomes, stores = run(
        bolts,
        [{"kind": "register"}, {"kind": "click"}, {"kind": "view"}, {"kind": "subscribe"}],
        streams=streams,
        sinks=sinks,
    )
    assert [ev.value["kind"] for ev in MemorySink.stores["SUBS"]] == ["register", "subscribe"]
    assert [ev.value["kind"] for ev in stores["out"]] == [
        "view"
    ]  # the default stream follows the chain
    # the 'clicks' stream is not wired: dead letter with a reason, never dropped
    [dl] = stores["dlq"]
    assert dl.value["kind"] == "click" and dl.failure.reason == (
        "stream 'clicks' of 'r' is not wired: kind = 'click' is routed to 'clicks', "
        "which no bolt or sink consumes"
    )


def test_an_unwired_routes_dead_letter_names_the_value_masked_and_bounded():
    """Every route goes to a stream nothing consumes (the default one too): each reason names the
    value that sent the event there — a password in it masked, a long one cut."""
    bolts = """  - {id: decode, type: json}
  - {id: r, type: route, field: a.kind, routes: {x: xs, "true": flags}, default: rest}"""
    long = "v" * 5000
    secret = "postgresql://app:hunter2secret@db.internal/prod"
    _, stores = run(
        bolts,
        [
            {"a": {"kind": "x"}},
            {"a": {"kind": True}},
            {"a": {}},
            {"a": {"kind": long}},
            {"a": {"kind": secret}},
        ],
    )
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons[:3] == [
        "stream 'xs' of 'r' is not wired: a.kind = 'x' is routed to 'xs', "
        "which no bolt or sink consumes",
        "stream 'flags' of 'r' is not wired: a.kind = 'true' is routed to 'flags', "
        "which no bolt or sink consumes",
        "stream 'rest' of 'r' is not wired: a.kind is missing: sent to the default stream "
        "'rest', which no bolt or sink consumes",
    ]
    assert "a.kind = 'vvv" in reasons[3] and "[5000 chars]" in reasons[3]
    assert len(reasons[3]) < 400
    assert "is not in routes: sent to the default stream 'rest'" in reasons[3]
    assert "postgresql://app:***@db.internal/prod" in reasons[4]
    assert "hunter2secret" not in reasons[4]
    assert all(ev.failure.stream in ("xs", "flags", "rest") for ev in stores["dlq"])


def test_route_matches_a_number_whatever_its_json_spelling():
    """`"priority": 1.0` went to the default stream past `routes: {"1": high}` (values compared
    as the strings "1.0" and "1"); numbers now compare as numbers, exactly, and text as text."""
    bolts = """  - {id: decode, type: json}
  - {id: r, type: route, field: p, routes: {"1": high, "2.5": mid, "1e2": hundred}, default: low}"""
    sinks = "".join(
        f"  - {{id: {s}, type: 'squall.testing:MemorySink', name: R-{s}}}\n"
        for s in ("high", "mid", "hundred", "low")
    )
    streams = "streams:\n" + "".join(
        f"  - {{from: r, stream: {s}, to: {s}}}\n" for s in ("high", "mid", "hundred", "low")
    )
    for s in ("high", "mid", "hundred", "low"):
        MemorySink.stores.pop(f"R-{s}", None)
    values = [1, 1.0, 2.5, 100, 100.0, "1", "1.0", True, 2**63 + 1, 1.5]
    run(bolts, [{"p": v, "i": i} for i, v in enumerate(values)], streams=streams, sinks=sinks)
    got = {
        s: [ev.value["i"] for ev in MemorySink.stores.get(f"R-{s}", [])]
        for s in ("high", "mid", "hundred", "low")
    }
    assert got == {"high": [0, 1, 5], "mid": [2], "hundred": [3, 4], "low": [6, 7, 8, 9]}


def test_route_keys_that_are_one_number_sent_to_two_streams_are_refused():
    with pytest.raises(TopologyError, match="routes '1' and '1.0' are the same number"):
        run("  - {id: r, type: route, field: p, routes: {'1': a, '1.0': b}}", [])


def test_route_keys_are_exact_numbers_past_the_floats_precision():
    """Route keys with a fraction or an exponent were read as floats: `9007199254740992.0` and
    `9007199254740993.0` both became 2**53 (refused as "the same number"), and `1e400` became
    infinity, which no event's 10**400 matched. Integral keys are exact integers now."""
    bolts = """  - {id: decode, type: json}
  - id: r
    type: route
    field: p
    routes: {"9007199254740992.0": a, "9007199254740993.0": b, "1e400": huge}
    default: low"""
    names = ("a", "b", "huge", "low")
    sinks = "".join(
        f"  - {{id: {s}, type: 'squall.testing:MemorySink', name: X-{s}}}\n" for s in names
    )
    streams = "streams:\n" + "".join(f"  - {{from: r, stream: {s}, to: {s}}}\n" for s in names)
    for s in names:
        MemorySink.stores.pop(f"X-{s}", None)
    values = [2**53, 2**53 + 1, float(2**53), 10**400, 10**400 + 1, 2**53 + 2]
    # as JSON text: orjson writes no integer past 64 bits (the json bolt reads them exactly)
    payloads = [json.dumps({"p": v, "i": i}).encode() for i, v in enumerate(values)]
    run(bolts, payloads, streams=streams, sinks=sinks)
    got = {s: [ev.value["i"] for ev in MemorySink.stores.get(f"X-{s}", [])] for s in names}
    assert got == {"a": [0, 2], "b": [1], "huge": [3], "low": [4, 5]}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("9007199254740993.5", "its nearest float, 9007199254740994.0, is one"),
        ("1e-400", "reads as the float 0.0"),
        ("1e5000", "more than 4300 digits"),
    ],
)
def test_route_keys_no_events_number_can_be_told_apart_by_are_refused_at_load(key, message):
    """`9007199254740993.5` read as the float 2**53 + 2 and `1e-400` as 0.0: events of those
    integers took the route. Refused, at the route, with the reason."""
    with pytest.raises(TopologyError) as info:
        run(f"  - {{id: r, type: route, field: p, routes: {{'{key}': a}}, default: b}}", [])
    assert message in str(info.value) and "bolts[0].routes" in str(info.value)


def test_dedupe_within_batch_first_wins():
    bolts = "  - {id: decode, type: json}\n  - {id: d, type: dedupe, key: id}"
    outcomes, stores = run(
        bolts, [{"id": 1, "v": "a"}, {"id": 2}, {"id": 1, "v": "b"}, {"v": "no key"}]
    )
    assert [ev.value.get("v") for ev in stores["out"]] == ["a", None, "no key"]
    assert outcomes[2].outcome is Outcome.FILTERED


def test_fan_out_copies_events_so_branches_do_not_share_payloads():
    bolts = """  - {id: decode, type: json}
  - {id: a, type: project, rename: {x: y}}
  - {id: b, type: project, defaults: {z: 1}}"""
    sinks = "  - {id: out2, type: 'squall.testing:MemorySink', name: FANOUT2}\n"
    streams = (
        "streams:\n  - {from: decode, to: a}\n  - {from: decode, to: b}\n  - {from: a, to: out}\n"
        "  - {from: b, to: out2}"
    )
    MemorySink.stores.pop("FANOUT2", None)
    _, stores = run(bolts, [{"x": 1}], streams=streams, sinks=sinks)
    assert stores["out"][0].value == {"y": 1}
    assert MemorySink.stores["FANOUT2"][0].value == {"x": 1, "z": 1}
    assert orjson.dumps(stores["out"][0].value) != orjson.dumps(
        MemorySink.stores["FANOUT2"][0].value
    )


def test_schema_fast_path_and_jsonschema_agree_on_verdicts():
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from squall.bolts.schema import fast_check, full_validator

    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "integer", "minimum": 0},
            "b": {"enum": ["x", "y"]},
            "c": {"type": "array", "items": {"type": "string"}},
            "d": {"type": "string", "pattern": "^[0-9]{4}-"},
            # ECMA-262's $: the end of the text, not before a final line break
            "e": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "f": {"type": "object", "propertyNames": {"pattern": "^[a-z]$"}},
        },
        "patternProperties": {"^x$": {"type": "integer"}},
        "additionalProperties": False,
    }
    fast = fast_check(schema)
    assert fast is not None
    slow = full_validator(schema)  # jsonschema, as the bolt builds it
    values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-5, 5)
        | st.text(max_size=6)
        | st.sampled_from(["x", "y", "2026-", "EUR", "EUR\n", "x\n"]),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["a", "b", "c", "d", "e", "f", "x", "x\n"]), inner, max_size=4
            )
        ),
        max_leaves=8,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    @example({"a": 1, "e": "EUR\n"})  # a final line break: both refuse it (ECMA-262's $)
    @example({"a": 1, "f": {"b\n": 1}})
    @example({"a": 1, "x\n": 1})
    @example({"a": 1, "e": "EUR", "x": 1, "f": {"b": None}})
    def agree(v):
        assert fast(v) is slow.is_valid(v)

    agree()


def test_schema_with_newer_keywords_uses_jsonschema_only():
    from squall.bolts.schema import fast_check

    assert fast_check({"type": "array", "prefixItems": [{"type": "integer"}]}) is None
    assert fast_check({"type": "string", "format": "date-time"}) is None


def test_json_max_bytes_applies_to_plain_and_gzip_payloads():
    doc = orjson.dumps({"pad": "x" * 200})
    outcomes, stores = run(
        "  - {id: decode, type: json, max_bytes: 100}", [doc, gzip.compress(doc), b'{"a": 1}']
    )
    assert [ev.value for ev in stores["out"]] == [{"a": 1}]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert "exceeds max_bytes" in reasons[0] and "exceeds 100 bytes" in reasons[1]


@pytest.mark.parametrize(
    "schema, ref",
    [
        ({"$ref": "#/definitions/missing"}, "#/definitions/missing"),
        ({"properties": {"a": {"$ref": "#/$defs/nowhere"}}}, "#/$defs/nowhere"),
        ({"properties": {"a": {"allOf": [{"$ref": "other.json"}]}}}, "other.json"),
    ],
)
def test_schema_with_a_reference_that_cannot_be_resolved_is_refused_at_load(schema, ref):
    """It passed the meta-schema check, and then every event reaching the reference raised
    (each dead-lettered alone by the engine's isolation, with jsonschema's internal error)."""
    with pytest.raises(TopologyError) as caught:
        run(
            f"  - {{id: decode, type: json}}\n  - {{id: v, type: schema, schema: {orjson.dumps(schema).decode()}}}",
            [],
        )
    assert f"$ref '{ref}' cannot be resolved" in str(caught.value)


def test_schema_references_that_resolve_or_are_data_are_accepted():
    schema = {
        "definitions": {"a": {"type": "integer"}},
        "properties": {
            "a": {"$ref": "#/definitions/a"},
            "b": {"const": {"$ref": "#/not/a/reference"}},  # data, not a reference
            "c": {"$id": "http://example.com/c", "$ref": "#/elsewhere"},  # another base URI
        },
    }
    _, stores = run(
        f"  - {{id: decode, type: json}}\n  - {{id: v, type: schema, schema: {orjson.dumps(schema).decode()}}}",
        [{"a": 1}, {"a": "x"}],
    )
    assert [ev.value for ev in stores["out"]] == [{"a": 1}]


def test_schema_ref_with_sibling_keywords_is_enforced_as_in_2020_12():
    bolts = """  - {id: decode, type: json}
  - id: v
    type: schema
    schema: {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": {base: {type: object}},
             "$ref": "#/$defs/base", required: [event_type]}"""
    outcomes, stores = run(bolts, [{"event_type": "click"}, {"no_event_type": 1}])
    assert [ev.value for ev in stores["out"]] == [{"event_type": "click"}]
    assert [o.outcome for o in outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]


def test_project_never_overwrites_a_non_object_parent():
    bolts = "  - {id: decode, type: json}\n  - {id: p, type: project, rename: {ua: device.ua}}"
    outcomes, stores = run(bolts, [{"ua": "Moz", "device": "iPhone"}, {"ua": "Moz"}])
    assert [ev.value for ev in stores["out"]] == [{"device": {"ua": "Moz"}}]
    [bad] = stores["dlq"]
    assert bad.value["device"] == "iPhone" and bad.raw == b'{"ua":"Moz","device":"iPhone"}'
    assert "'device' holds a str" in bad.failure.reason


def test_project_rejects_a_payload_not_an_object_with_its_own_reason_not_squalls_code():
    """Its rejection is on purpose, not a bug: the reason is as it was, without the location in
    squall's project.py that a bug of yours gets (which reached a producer's answer too)."""
    bolts = (
        "  - {id: decode, type: json, object_only: false}\n"
        "  - {id: p, type: project, rename: {ua: device.ua}}"
    )
    _, stores = run(bolts, [{"ua": "Moz"}, [1]])
    assert [ev.value for ev in stores["out"]] == [{"device": {"ua": "Moz"}}]
    assert [ev.failure.reason for ev in stores["dlq"]] == ["TypeError: payload is not an object"]


def test_filter_booleans_equal_only_booleans():
    bolts = (
        "  - {id: decode, type: json}\n  - {id: f, type: filter, where: [{field: n, equals: true}]}"
    )
    _, stores = run(bolts, [{"n": 1}, {"n": 1.0}, {"n": True}])
    assert [ev.value["n"] for ev in stores["out"]] == [True]
    bolts = (
        "  - {id: decode, type: json}\n  - {id: f, type: filter, where: [{field: n, in: [0, 1]}]}"
    )
    _, stores = run(bolts, [{"n": False}, {"n": True}, {"n": 0.0}, {"n": 1}])
    assert [ev.value["n"] for ev in stores["out"]] == [0.0, 1]


def test_emit_all_hands_over_events_in_order_after_those_emitted_one_by_one():
    from squall.bolts.base import Output
    from squall.event import Event, RecordMeta

    meta = RecordMeta("s", "shard", "1", 0, "", None, None, "", None)
    a, b, c = (Event(b"{}", meta, f"e{n}", n, value={"n": n}) for n in range(3))
    out = Output("b")
    out.emit_all([])
    assert out.streams == {}  # no events, no stream: nothing is delivered downstream
    out.emit(a)
    out.emit_all([b, c])
    out.emit_all([a], "other")
    assert [e.value["n"] for e in out.streams["default"]] == [0, 1, 2]
    assert [e.value["n"] for e in out.streams["other"]] == [0]


class BrokenReasonBolt(Bolt):
    """Sends every event to an unwired stream and fails to say why."""

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            out.emit(ev, "nowhere")
        return out

    def unwired_reason(self, event, stream):
        raise RuntimeError("cannot describe")


def test_a_bolt_failing_to_describe_an_unwired_stream_still_dead_letters_the_event():
    bolts = f"""  - {{id: decode, type: json}}
  - {{id: b, type: '{__name__}:BrokenReasonBolt'}}"""
    outcomes, stores = run(bolts, [{"n": 1}])
    assert [ev.failure.reason for ev in stores["dlq"]] == ["stream 'nowhere' of 'b' is not wired"]
    assert [o.outcome for o in outcomes] == [Outcome.DEAD_LETTERED]
