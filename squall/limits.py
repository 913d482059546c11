"""Early limits every entry point applies alike: nesting depth and event-id length."""

from __future__ import annotations

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
