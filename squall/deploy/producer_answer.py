"""The Lambda producer's answer, made to fit in what a synchronous Lambda invocation may return.

A body listing the events of a large request — a ``503``'s ``written`` and ``not_written``, the
``rejected`` events with their reasons — grows with the request's events: 200,000 small events
(600 KB of ``{}``, allowed with ``max_events=0``) made a 13.7 MB answer, and Lambda refuses a
response over 6 MB: API Gateway then answers an error status of its own, and the client learns
nothing of what was taken. ``fitted`` answers in full when it fits; else with each reason cut; else a ``503``
without ``written`` (counted in ``written_not_listed``: the client resends ``not_written``
only, what it needs) and, if need be, with the first rejected events that fit; else a ``503``
without lists (the whole request is to be sent again: what it means without them already); a
``202``/``400`` lists the first rejected events that fit and how many more there were.

An Application Load Balancer takes less from a Lambda target: 1 MB of response JSON
(``MAX_ALB_ANSWER_BYTES``; past it the balancer answers 502), measured the same way.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson

from squall.errors import MAX_REASON

log = logging.getLogger("squall.producer")

#: Lambda's limit of a synchronous invocation's response, "6 MB" (the Lambda quotas page, and
#: the Invoke API's "For synchronous invocations, the maximum payload size is 6 MB"), less room
#: to spare: the answer is measured as the runtime writes it (below).
MAX_ANSWER_BYTES = 6_000_000
#: An Application Load Balancer's limit of a Lambda target's answer: "The maximum size of the
#: response JSON that the Lambda function can send is 1 MB" (ELB's "Lambda functions as
#: targets" page), less room to spare.
MAX_ALB_ANSWER_BYTES = 1_000_000
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


def answer_limit(event: Any) -> int:
    """The most bytes the answer to this invocation may take: an Application Load Balancer's
    event (``requestContext.elb``) takes 1 MB, API Gateway's 6 MB (Lambda's own limit)."""
    ctx = event.get("requestContext") if isinstance(event, dict) else None
    if isinstance(ctx, dict) and isinstance(ctx.get("elb"), dict):
        return MAX_ALB_ANSWER_BYTES
    return MAX_ANSWER_BYTES


def fits(out: dict[str, Any], limit: int = MAX_ANSWER_BYTES) -> bool:
    """Whether the answer fits in ``limit`` bytes (measured only when it may not)."""
    if len(out["body"]) * _GROWTH + _ENVELOPE <= limit:
        return True
    return answer_bytes(out) <= limit


def fitted(
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    request_id: str,
    limit: int = MAX_ANSWER_BYTES,
) -> dict[str, Any]:
    """``answer(status, body, headers)``, made to fit in ``limit`` bytes (``answer_limit``; the
    module's docstring says how)."""
    out = answer(status, body, headers)
    if fits(out, limit):
        return out
    full = answer_bytes(out)
    rejected = body.get("rejected") or []
    if any(len(r["reason"]) > SHORT_REASON for r in rejected):
        rejected = [_short(r) for r in rejected]
        body = {**body, "rejected": rejected}
        out = answer(status, body, headers)
        if fits(out, limit):
            log.warning(
                "request %s: answer of %d bytes over its limit (%d): reasons cut to %d characters",
                request_id,
                full,
                limit,
                SHORT_REASON,
            )
            return out
    if "not_written" in body:
        # What the client needs is which events to send again: ``written`` goes first (a count
        # stays); without ``not_written`` the client resends the whole request, and every
        # event written goes to the stream again.
        unwritten = body["not_written"]
        kept = {"error": body["error"], "not_written": unwritten}
        if "written" in body:
            kept["written_not_listed"] = len(body["written"])
        room = limit - _ENVELOPE - answer_bytes(answer(status, kept, headers))
        if room >= 0:
            listed = _fitting(rejected, room)
            kept["rejected"] = rejected[:listed]
            if listed < len(rejected):
                kept["rejected_not_listed"] = len(rejected) - listed
            log.warning(
                "request %s: answer of %d bytes over its limit (%d): a 503 without the events "
                "written, %d of %d rejected events listed",
                request_id,
                full,
                limit,
                listed,
                len(rejected),
            )
            return answer(status, kept, headers)
        log.warning(
            "request %s: answer of %d bytes over its limit (%d): a 503 without its lists (the "
            "whole request is to be sent again)",
            request_id,
            full,
            limit,
        )
        return answer(status, {"error": WHOLE_REQUEST}, headers)
    listed = _fitting(rejected, limit - _ENVELOPE)
    log.warning(
        "request %s: answer of %d bytes over its limit (%d): %d of %d rejected events listed",
        request_id,
        full,
        limit,
        listed,
        len(rejected),
    )
    body = {**body, "rejected": rejected[:listed], "rejected_not_listed": len(rejected) - listed}
    return answer(status, body, headers)


#: The end of a reason the engine cut already (``squall.errors.safe_text``): its whole length.
_CUT = re.compile(r"… \[truncated, (\d+) chars\]$")


def _short(entry: dict[str, Any]) -> dict[str, Any]:
    reason = entry["reason"]
    if len(reason) <= SHORT_REASON:
        return entry
    # A reason the engine cut (``Failure``) says how long it was: that length, not the cut one's.
    cut = _CUT.search(reason)
    # (What is before the cut text: the component's id, ``component: reason``.)
    before = len(reason) - len(cut.group(0)) - MAX_REASON if cut else 0
    length = int(cut.group(1)) + max(0, before) if cut else len(reason)
    return {**entry, "reason": f"{reason[:SHORT_REASON]}… [{length} chars]"}


def _fitting(entries: list[dict[str, Any]], budget: int) -> int:
    """How many of the first ``entries`` fit in ``budget`` bytes of the runtime's JSON."""
    used = 0
    for n, entry in enumerate(entries):
        # the entry in the body, a string in the answer's JSON: its escaped text, and a comma
        used += len(json.dumps(orjson.dumps(entry).decode())) - 1
        if used > budget:
            return n
    return len(entries)
