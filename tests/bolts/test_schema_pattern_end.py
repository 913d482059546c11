"""A JSON Schema ``pattern`` is an ECMA-262 regular expression: its ``$`` (no m flag) matches at the
end of the text only. Python's ``re`` also matches it before a final line break, so
``^[A-Z]{3}$`` took ``"EUR\\n"`` (jsonschema said valid where fastjsonschema said invalid, and the
bolt asks jsonschema about what the fast path refuses); a ``patternProperties`` name and a
``propertyNames`` pattern the same, on both validators."""

from __future__ import annotations

import json
import uuid

import pytest

from squall.bolts.schema import ecma_pattern, fast_check, full_validator
from squall.testing import MemorySink, records_from, run_topology

CURRENCY = {
    "type": "object",
    "properties": {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
}
NAMES = {
    "type": "object",
    "patternProperties": {"^x-[a-z]+$": {"type": "integer"}},
    "additionalProperties": False,
}
PROPERTY_NAMES = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}


def run(schema: dict, payloads: list) -> tuple[list, list]:
    tag = f"t{uuid.uuid4().hex}"
    yaml = f"""
name: t
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: v, type: schema, schema: {json.dumps(schema)}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    run_topology(yaml, records_from(payloads))
    out, dlq = MemorySink.stores.pop(f"{tag}-out", []), MemorySink.stores.pop(f"{tag}-dlq", [])
    return [ev.value for ev in out], [ev.failure.reason for ev in dlq]


def test_a_pattern_ending_in_dollar_refuses_a_final_line_break_with_the_pattern_as_written():
    out, reasons = run(CURRENCY, [{"currency": "EUR"}, {"currency": "EUR\n"}])
    assert out == [{"currency": "EUR"}]
    assert reasons == ["schema: $.currency: 'EUR\\n' does not match '^[A-Z]{3}$'"]


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        (NAMES, {"x-a": 1}, {"x-a\n": 1}),
        (PROPERTY_NAMES, {"ab": 1}, {"ab\n": 1}),
    ],
)
def test_pattern_properties_and_property_names_end_at_the_text_end(schema, good, bad):
    out, reasons = run(schema, [good, bad])
    assert out == [good]
    assert len(reasons) == 1


@pytest.mark.parametrize(
    ("written", "python"),
    [
        ("^a$", r"^a\Z"),
        (r"^a\$", r"^a\$"),  # an escaped $: a literal
        ("^a\\\\$", "^a\\\\\\Z"),  # an escaped backslash, then the end
        ("^[$]+$", r"^[\$]+\Z"),  # a $ in a class: a literal
        ("^[]$]$", r"^[]\$]\Z"),  # Python's "]" first in a class is a literal
        ("^[^]$]$", r"^[^]\$]\Z"),
        ("(?:a$|b$)", r"(?:a\Z|b\Z)"),
        ("^abc", "^abc"),
    ],
)
def test_ecma_pattern_rewrites_only_the_end_anchors(written, python):
    assert ecma_pattern(written) == python


def test_both_validators_agree_on_end_anchors_and_line_breaks():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    schema = {
        "type": "object",
        "properties": {
            "c": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "d": {"type": "string", "pattern": "[$]$"},
            "n": {"type": "object", "propertyNames": {"pattern": "^[a-z]$"}},
        },
        "patternProperties": {"^x$": {"type": "integer"}},
    }
    fast = fast_check(schema)
    assert fast is not None
    slow = full_validator(schema)
    text = st.sampled_from(["EUR", "EUR\n", "EU", "$", "a$", "a$\n", "x", "x\n", "a", "a\n", "\n"])
    values = st.dictionaries(
        st.sampled_from(["c", "d", "x", "x\n"]),
        text | st.integers(0, 1) | st.dictionaries(text, st.integers(0, 1), max_size=2),
        max_size=3,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    def agree(v):
        assert fast(v) is slow.is_valid(v)
        for key in ("c", "d"):
            if isinstance(v.get(key), str) and v[key].endswith("\n"):
                assert not slow.is_valid(v)

    agree()


# Python's inline flags (no ECMA-262 spelling, but jsonschema and fastjsonschema both compile
# them with ``re``): a pattern that asks for multiline mode keeps its "$" a line's end, and a
# verbose pattern's comments are not read as the pattern (a "[" there opened no class).
VERBOSE = "(?x) ^[a-z]+  # one word [lower case\n  $"


@pytest.mark.parametrize(
    ("written", "python"),
    [
        ("(?m)^a$", r"(?m)^a(?=\n|\Z)"),
        ("(?im)^a$|b$", r"(?im)^a(?=\n|\Z)|b(?=\n|\Z)"),
        ("(?m:^a$)b$", r"(?m:^a(?=\n|\Z))b\Z"),
        ("(?m)(?-m:a$)b$", r"(?m)(?-m:a\Z)b(?=\n|\Z)"),
        (VERBOSE, "(?x) ^[a-z]+  # one word [lower case\n  \\Z"),
        ("(?x)[#]$ # $", r"(?x)[#]\Z # $"),  # a "#" in a class is no comment
        ("a(?#[ )$", r"a(?#[ )\Z"),  # a comment group ends at the first ")"
        ("(?x:a # [\n)$", "(?x:a # [\n)\\Z"),
    ],
)
def test_ecma_pattern_reads_inline_flags_and_comments(written, python):
    assert ecma_pattern(written) == python


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("(?m)^ok$", ["ok", "ok\n", "ok\nmore", "x\nok"], ["okay", "ok more"]),
        (VERBOSE, ["abc"], ["abc\n", "ab1", "abc$"]),
    ],
)
def test_inline_flags_keep_their_meaning_on_both_validators(pattern, good, bad):
    schema = {"type": "object", "properties": {"t": {"type": "string", "pattern": pattern}}}
    fast, slow = fast_check(schema), full_validator(schema)
    assert fast is not None
    for text in good:
        assert fast({"t": text}) is True and slow.is_valid({"t": text}), text
    for text in bad:
        assert fast({"t": text}) is False and not slow.is_valid({"t": text}), text
    out, reasons = run(schema, [{"t": t} for t in good + bad])
    assert out == [{"t": t} for t in good]
    assert len(reasons) == len(bad) and f"does not match {pattern!r}" in reasons[0]


@pytest.mark.parametrize(
    "ref",
    [
        "#/patternProperties/^x$",
        "#/patternProperties/%5Ex%24",  # percent-encoded, as a URI fragment may be
        "#/definitions/d/patternProperties/^x$",
    ],
)
def test_a_ref_into_pattern_properties_follows_the_rewritten_name(ref):
    """A ``$ref`` naming a ``patternProperties`` entry by its pattern: the rewrite renamed the
    entry (``^x$`` → ``^x\\Z``) and the reference pointed to nowhere — every event failed alone
    with PointerToNowhere, the valid ones too."""
    entry = {"patternProperties": {"^x$": {"type": "integer"}}}
    schema = {
        "type": "object",
        **entry,
        "definitions": {"d": entry},
        "properties": {"y": {"$ref": ref}, "$ref": {"type": "string", "pattern": "^a$"}},
    }
    out, reasons = run(schema, [{"y": 1}, {"y": "a"}, {"x": 2, "$ref": "a"}])
    assert out == [{"y": 1}, {"x": 2, "$ref": "a"}]
    assert reasons == ["schema: $.y: 'a' is not of type 'integer'"]
