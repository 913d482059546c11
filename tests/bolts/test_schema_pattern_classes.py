"""A JSON Schema ``pattern`` is an ECMA-262 regular expression: ``\\d`` is [0-9], ``\\w``
[A-Za-z0-9_], ``\\b`` a boundary of those, ``\\s`` ECMA's white space and line terminators, ``.``
any character but a line terminator. Python's ``re`` reads a str pattern's ``\\d`` and ``\\w``
as Unicode's, so ``^\\d+$`` took Arabic-Indic digits (``"٣"``), ``\\s`` took U+001C and U+0085
but not U+FEFF, and ``.`` took ``\\r``. The answers below are node's (v20): ``new RegExp(p)``
and ``new RegExp(p, "u")`` agree on every row; each row of ``DIFFERENT`` is one Python's ``re``
answered otherwise (with the ``$`` already read as ``\\Z``)."""

from __future__ import annotations

import pytest

from squall.bolts.schema import ecma_pattern, fast_check, full_validator
from tests.bolts.test_schema_pattern_end import run

#: (pattern, text, ECMA-262's answer), where Python's ``re`` answers otherwise.
DIFFERENT = [
    (r"^\d+$", "\u0663", False),
    (r"^\d+$", "12\u0663", False),
    (r"^\d+$", "\uff11\uff12", False),  # fullwidth digits
    (r"^\D+$", "\u0663", True),
    (r"^\w+$", "\xe9", False),
    (r"^\w+$", "\xdf", False),
    (r"^\w+$", "\u0663", False),
    (r"^\w+$", "\u03a9", False),
    (r"^\W$", "\xe9", True),
    (r"^\s$", "\ufeff", True),
    (r"^\s$", "\x1c", False),
    (r"^\s$", "\x1f", False),
    (r"^\s$", "\x85", False),
    (r"^\S$", "\ufeff", False),
    (r"^\S$", "\x1c", True),
    (r"^\S$", "\x85", True),
    (r"\bfoo\b", "\xe9foo", True),
    (r"\bfoo\b", "foo\u0663", True),
    (r"\Bfoo", "\xe9foo", False),
    (r"\B", "", True),  # Python's \B never matches the empty text
    (r"^[\d]+$", "\u0663", False),
    (r"^[^\d]+$", "\u0663", True),
    (r"^[\w-]+$", "a-\u0663", False),
    (r"^[a\D]$", "\u0663", True),
    (r"^[^\W]$", "\xe9", False),
    (r"^[^a\S]$", "\ufeff", True),
    (r"^[^a\S]$", "\x1c", False),
    (r"^[^\D\s]$", "\u0663", False),
    (r"^\xe9\d$", "\xe9\u0663", False),
    (r"^.$", "\r", False),
    (r"^.$", "\u2028", False),
    (r"^.+$", "a\rb", False),
    (r"^\d{2}-\w+\s?$", "\u0661\u0662-ab", False),
    (r"^(?!.*\s).+$", "a\x1cb", True),
    (r"^(?!.*\s).+$", "a\ufeffb", False),
    (r"(?<=\d)x", "\u0663x", False),
    (r"^[\d-]+$", "\u0661-\u0662", False),
    (r"^[\x41-\x43\d]+$", "AB\u0663", False),
    # a backreference to a group that took part in no match matches the empty text
    (r"^(a)?\1$", "", True),
    (r"^(a)?-\1$", "-", True),
    (r"^(?:(a)|b)\1$", "b", True),
    (r"^(?!(a))\1b$", "b", True),
]
#: Rows where both already agreed: the rewrite must keep them (literal non-ASCII characters,
#: classes mixing members and complements, an escaped or bracketed ".").
SAME = [
    (r"^\d+$", "123", True),
    (r"^\s$", "\xa0", True),
    (r"^\s$", "\u2028", True),
    (r"^\s$", "\u200b", False),
    (r"\bfoo\b", "\xe9 foo", True),
    (r"\bfoo\b", "_foo", False),
    (r"^[\s\S]$", "\n", True),
    (r"^[\s\S]$", "\xe9", True),
    (r"^[^\s\S]$", "a", False),
    (r"^[\D^]$", "^", True),
    (r"^[\D^]$", "1", False),
    (r"^[^\D\W]$", "1", True),
    (r"^[^\D\W]$", "a", False),
    (r"^\xe9\d$", "\xe91", True),
    (r"^\u0663$", "\u0663", True),
    (r"^\u0663$", "3", False),
    (r"^.$", "\xe9", True),
    (r"^.$", "\n", False),
    (r"^[.]$", "a", False),
    (r"^\.$", "a", False),
    (r"^(a)?\1$", "aa", True),
    # an octal escape before \d in a class: not extended by the rewrite's "0-9" (a NUL-to-9 range)
    (r"^[^-\0\d]$", " ", True),
    (r"^[\0\d]+$", "\x005", True),
    (r"^[\0\d]$", "\x01", False),
    (r"^(a)?\1$", "a", False),
    (r"^(a)\\1$", "a\\1", True),  # an escaped backslash, then "1"
]


def validators(pattern: str) -> list:
    """Both validators, as a value's ``pattern`` and as a ``patternProperties`` name."""
    value = {"type": "object", "properties": {"t": {"type": "string", "pattern": pattern}}}
    name = {
        "type": "object",
        "patternProperties": {pattern: {"type": "integer"}},
        "additionalProperties": False,
    }
    out = []
    for schema, wrap in ((value, lambda t: {"t": t}), (name, lambda t: {t: 1})):
        fast = fast_check(schema)
        assert fast is not None
        slow = full_validator(schema)
        out += [(lambda t, f=fast, w=wrap: f(w(t))), (lambda t, s=slow, w=wrap: s.is_valid(w(t)))]
    return out


@pytest.mark.parametrize(("pattern", "text", "ecma"), DIFFERENT + SAME)
def test_patterns_read_classes_as_ecma_262_does(pattern, text, ecma):
    answers = [check(text) for check in validators(pattern)]
    assert answers == [ecma] * 4


def test_python_inline_flags_keep_their_meaning():
    """``(?s)`` (Python's; ECMA-262 has no inline flags) still lets ``.`` take any character."""
    assert [check("\r") for check in validators("(?s)^.$")] == [True] * 4
    assert [check("\r\r") for check in validators("^(?s:.).$")] == [False] * 4
    assert [check("\ra") for check in validators("^(?s:.).$")] == [True] * 4


def test_the_bolt_refuses_other_digits_with_the_pattern_as_written():
    schema = {"type": "object", "properties": {"n": {"type": "string", "pattern": r"^\d+$"}}}
    out, reasons = run(schema, [{"n": "42"}, {"n": "4\u0662"}])
    assert out == [{"n": "42"}]
    assert reasons == ["schema: $.n: '4\u0662' does not match '^\\\\d+$'"]


def test_a_ref_into_pattern_properties_follows_the_rewritten_name():
    """A ``$ref`` naming a ``patternProperties`` entry whose name has a ``\\d`` (and no ``$``)
    still finds it once the name is rewritten."""
    schema = {
        "type": "object",
        "patternProperties": {r"^\d": {"type": "integer"}},
        "properties": {"y": {"$ref": "#/patternProperties/^\\d"}},
    }
    out, reasons = run(schema, [{"y": 1}, {"y": "a"}, {"1": 2}])
    assert out == [{"y": 1}, {"1": 2}]
    assert reasons == ["schema: $.y: 'a' is not of type 'integer'"]


@pytest.mark.parametrize(
    ("written", "python"),
    [
        (r"\d\D", "[0-9][^0-9]"),
        (r"[a\D]", "(?:[a]|[^0-9])"),
        (r"[^a\D]", "(?:(?![a])[0-9])"),
        (r"[\D^]", r"(?:[\^]|[^0-9])"),  # "^" no longer first, still a literal
        (r"[^\D\W]", r"(?:(?=[0-9])[A-Za-z0-9_])"),
        (r"[]\d]", "[]0-9]"),  # Python's "]" first in a class is a literal
        (r"[\b]", r"[\b]"),  # a backspace in a class, in both
        (r"\.", r"\."),
        (r"\bfoo", r"(?a:\b)foo"),
        (
            r"[\0\d]",
            r"[\0\x30-9]",
        ),  # not "\00-9": an octal escape, then "-9"  # Python's test of a boundary, of ASCII's \w
        (r"(a)\1+", r"(a)(?(1)\1)+"),  # Python's: \1 only once group 1 matched
        (r"(a)(?<=\1)", r"(a)(?<=\1)"),  # a look-behind takes a fixed width only
        (r"(a)\\1[\1]\101", r"(a)\\1[\1]\101"),
        ("(?x)a # \\d .\n\\d", "(?x)a # \\d .\n[0-9]"),  # a comment is left as written
    ],
)
def test_ecma_pattern_spells_the_classes_in_python(written, python):
    assert ecma_pattern(written) == python


def test_each_reason_shows_its_own_pattern_when_two_are_spelt_alike_in_python():
    """``^\\d+$`` and ``^[\\d]+$`` are both ``^[0-9]+\\Z`` once rewritten: the reason names the
    pattern of the property that failed (one reached through a ``$ref`` too), not the other's."""
    schema = {
        "$defs": {"digits": {"type": "string", "pattern": r"^\d+$"}},
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": r"^\d+$"},
            "b": {"type": "string", "pattern": r"^[\d]+$"},
            "c": {"$ref": "#/$defs/digits"},
        },
    }
    out, reasons = run(schema, [{"a": "x"}, {"b": "y"}, {"c": "z"}])
    assert out == []
    assert reasons == [
        "schema: $.a: 'x' does not match '^\\\\d+$'",
        "schema: $.b: 'y' does not match '^[\\\\d]+$'",
        "schema: $.c: 'z' does not match '^\\\\d+$'",
    ]


def test_a_dependencies_schema_named_like_a_data_keyword_has_its_patterns_rewritten():
    """Draft 7's ``dependencies`` maps property names to subschemas: one named ``default`` (a
    data keyword elsewhere) was copied as data, its ``^\\d+$`` left Python's (``"٣"`` passed)."""
    digits = {"properties": {"n": {"type": "string", "pattern": r"^\d+$"}}}
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "dependencies": {"default": digits, "a": ["b"]},
    }
    out, reasons = run(schema, [{"default": 1, "n": "\u0663"}, {"default": 1, "n": "3"}])
    assert out == [{"default": 1, "n": "3"}]
    assert reasons == ["schema: $.n: '\u0663' does not match '^\\\\d+$'"]


def test_a_format_in_a_dependencies_schema_named_like_a_data_keyword_is_found():
    from squall.bolts.schema import formats

    schema = {"dependencies": {"default": {"properties": {"h": {"format": "hostname"}}}}}
    assert formats(schema) == {"hostname"}


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"^\p{L}+$", r"bad escape \p at position 1"), ("^[^]*$", "unterminated character set")],
)
def test_a_pattern_python_cannot_read_is_refused_saying_why(pattern, why):
    """ECMA-262 reads both: "is not a 'regex'" alone left the writer of a valid pattern
    wondering; the refusal says it is Python's ``re`` that cannot read it, and why."""
    from squall.bolts.schema import check_schema

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    with pytest.raises(ValueError) as refused:
        check_schema(schema)
    message = str(refused.value)
    assert message.startswith("invalid JSON Schema at $.properties.a.pattern: ")
    assert f"is not a 'regex' (Python's re, which reads the schema's patterns: {why}" in message
