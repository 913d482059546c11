"""The Lambda producer's answer, made to fit in what a synchronous Lambda invocation may return.

A body listing the events of a large request — a ``503``'s ``written`` and ``not_written``, the
``rejected`` events with their reasons — grows with the request's events: 200,000 small events
(600 KB of ``{}``, allowed with ``max_events=0``) made a 13.7 MB answer, and Lambda refuses a
response over 6 MB: API Gateway then answers an error status of its own, and the client learns
nothing of what was taken. ``fitted`` answers in full when it fits; else with each reason cut; else a ``503``
without its lists (the whole request is to be sent again: what it means without them already),
or a ``202``/``400`` listing the first rejected events that fit and how many more there were.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson

log = logging.getLogger("squall.producer")

#: Lambda's limit of a synchronous invocation's response, "6 MB" (the Lambda quotas page, and
#: the Invoke API's "For synchronous invocations, the maximum payload size is 6 MB"), less room
#: to spare: the answer is measured as the runtime writes it (below).
MAX_ANSWER_BYTES = 6_000_000
#: Characters of a reason kept when the answer would not fit with each reason whole.
SHORT_REASON = 200
#: The most characters one character of the body becomes in the runtime's JSON of the whole
#: answer, where the body is a string: one beyond U+FFFF is two ``\\uXXXX`` escapes.
_GROWTH = 12
#: What the answer holds beside its lists (status, headers, keys, the count of events left out).
_ENVELOPE = 2_000
#: The 503's error when its lists do not fit: the whole request is to be sent again.
WHOLE_REQUEST = "temporarily unavailable, retry the whole request (too many events to list here)"


def answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway proxy answer with a JSON body."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": orjson.dumps(body).decode(),
    }


def answer_bytes(out: dict[str, Any]) -> int:
    """The answer's size as Lambda's Python runtime sends it: the handler's return value as JSON,
    non-ASCII characters escaped (awslambdaric's encoder does so before the Python 3.12
    runtimes: the larger of its two forms)."""
    return len(json.dumps(out))


def fits(out: dict[str, Any]) -> bool:
    """Whether the answer fits in ``MAX_ANSWER_BYTES`` (measured only when it may not)."""
    if len(out["body"]) * _GROWTH + _ENVELOPE <= MAX_ANSWER_BYTES:
        return True
    return answer_bytes(out) <= MAX_ANSWER_BYTES


def fitted(
    status: int, body: dict[str, Any], headers: dict[str, str] | None, request_id: str
) -> dict[str, Any]:
    """``answer(status, body, headers)``, made to fit (the module's docstring says how)."""
    out = answer(status, body, headers)
    if fits(out):
        return out
    full = answer_bytes(out)
    rejected = body.get("rejected") or []
    if any(len(r["reason"]) > SHORT_REASON for r in rejected):
        rejected = [_short(r) for r in rejected]
        body = {**body, "rejected": rejected}
        out = answer(status, body, headers)
        if fits(out):
            log.warning(
                "request %s: answer of %d bytes over Lambda's limit: reasons cut to %d characters",
                request_id,
                full,
                SHORT_REASON,
            )
            return out
    if "not_written" in body:
        log.warning(
            "request %s: answer of %d bytes over Lambda's limit: a 503 without its lists (the "
            "whole request is to be sent again)",
            request_id,
            full,
        )
        return answer(status, {"error": WHOLE_REQUEST}, headers)
    listed = _fitting(rejected, MAX_ANSWER_BYTES - _ENVELOPE)
    log.warning(
        "request %s: answer of %d bytes over Lambda's limit: %d of %d rejected events listed",
        request_id,
        full,
        listed,
        len(rejected),
    )
    body = {**body, "rejected": rejected[:listed], "rejected_not_listed": len(rejected) - listed}
    return answer(status, body, headers)


def _short(entry: dict[str, Any]) -> dict[str, Any]:
    reason = entry["reason"]
    if len(reason) <= SHORT_REASON:
        return entry
    return {**entry, "reason": f"{reason[:SHORT_REASON]}… [{len(reason)} chars]"}


def _fitting(entries: list[dict[str, Any]], budget: int) -> int:
    """How many of the first ``entries`` fit in ``budget`` bytes of the runtime's JSON."""
    used = 0
    for n, entry in enumerate(entries):
        # the entry in the body, a string in the answer's JSON: its escaped text, and a comma
        used += len(json.dumps(orjson.dumps(entry).decode())) - 1
        if used > budget:
            return n
    return len(entries)
