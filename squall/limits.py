"""Early limits every entry point applies alike: nesting depth, event-id length, 64-bit integers."""

from __future__ import annotations

import re

#: Longest event id, in UTF-8 bytes: the same cap as the subscription key; a longer id could not be
#: a primary key on every warehouse (PostgreSQL's B-tree rows stop at about 2.7 KB).
MAX_EVENT_ID_BYTES = 512
#: Default deepest nesting of objects and arrays in a payload (``json`` bolt ``max_depth``, producer).
DEFAULT_MAX_DEPTH = 64


def nesting_depth(value: object) -> int:
    """Depth of nested objects/arrays (a scalar is 0, ``{}`` is 1); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def may_exceed_depth(data: bytes, limit: int) -> bool:
    """False when the JSON text cannot nest deeper than ``limit`` (it has no more brackets): a C-speed pre-check."""
    return data.count(b"{") + data.count(b"[") > limit


#: Integers orjson reads exactly: a literal outside this range becomes a float, losing digits.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Digits to ``0``, every other byte to ``.``: a run of 19 zeros in the translation is a run of
#: 19 digits in the text, the fewest an integer outside the range needs (-9223372036854775809).
DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
DIGIT_RUN = b"0" * 19
#: In valid JSON text: a string (skipped whole, so digits inside it are not numbers) or a number.
_STRING_OR_NUMBER = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?', re.DOTALL
)


def may_hold_wide_int(data: bytes) -> bool:
    """False when JSON text cannot hold an integer beyond 64 bits (no run of 19 digits): C-speed."""
    return DIGIT_RUN in data.translate(DIGIT_MAP)


def wide_int_reason(data: bytes) -> str | None:
    """Why valid JSON text cannot be decoded without loss: its first integer literal outside
    ``INT_MIN``…``INT_MAX``, which orjson would turn into a float (``18446744073709551616`` →
    ``1.8446744073709552e+19``), shown bounded; None when it has none. Literals with a fraction
    or an exponent are floats as written, not such integers."""
    for m in _STRING_OR_NUMBER.finditer(data):
        tok = m.group()
        if tok[0] == 0x22 or len(tok) < 19 or b"." in tok or b"e" in tok or b"E" in tok:
            continue
        if len(tok) < 400 and INT_MIN <= int(tok) <= INT_MAX:
            continue
        digits = len(tok) - (tok[0] == 0x2D)
        shown = tok.decode() if len(tok) <= 40 else f"{tok[:24].decode()}… ({digits} digits)"
        return (
            f"integer {shown} is outside the 64-bit range ({INT_MIN} to {INT_MAX}); "
            "decoding would round it to a float"
        )
    return None
