"""Lambda API-Gateway producer: SDK events over HTTP in, the topology (ending in a Kinesis sink) run, an HTTP answer out.

Accepts REST API (payload v1) and HTTP API (payload v2) proxy events. The body is one JSON
event, a JSON array of events, or JSON lines (optionally ``Content-Encoding: gzip``, or gzip without
the header: recognized by its magic bytes, which no JSON text starts with; a UTF-8 BOM
opening it, plain, base64 or inside the gzip, is dropped). Each event
gets the request context under ``context_key`` (source IP, user agent, request id, received
time) so enrichment bolts can use them — ``geo`` with ``ip_field: request.source_ip``.

An event that already has a ``context_key`` field is rejected (not overwritten: the request
context must be the producer's, and the client's field is not dropped silently).

Answers: ``202`` with ``{"accepted": n, "rejected": [{"index", "reason"}]}`` when at least one
event was accepted (``index``: the array element, or the 0-based line of a JSON-lines body,
blank lines counted); a bad element or line is rejected alone, never the whole request; ``400`` when none was (bad body, or every event rejected); ``413`` for a body
over ``max_body_bytes``; ``415`` for a ``Content-Encoding`` other than gzip or none; ``500`` with
``Retry-After: 60`` when a sink refuses every write for good (``SinkError``: the stream missing, no
permission); ``503`` with ``Retry-After`` when a sink (Kinesis) could not take the
events after retries — its body lists the events ``written`` and ``not_written`` (``index`` and
``event_id`` each) and ``rejected``, so the SDK resends only the unwritten ones (no lists when the
batch failed as a whole: resend the request; a stable ``event_id_field``, the SDK's message id,
makes that harmless downstream). Retries stop before the function's
timeout (``context.get_remaining_time_in_millis()`` less ``settings.lambda_deadline_margin``):
a retry whose backoff would outlast it is not made and the request is answered ``503`` at once —
killed at its timeout, the function would answer nothing (API Gateway's own 502/504, no
``Retry-After``). The 503's ``Retry-After`` is the longest wait a dependency asked for (an HTTP
sink's ``Retry-After``, a ``TransientError``'s ``retry_after``), 1 s without one, at most 60 s.
A rejected event's reason is a bolt's without where in its code an exception was raised
(``errors.without_location``: the server's paths are the dead letter's and the log's).
Every answer fits in Lambda's 6 MB, an Application Load Balancer's 1 MB (``producer_answer.fitted``:
reasons cut, then a 503 without ``written``, else without lists, a 202/400 with the first
rejected events and ``rejected_not_listed``).

Size (~590 lines): one adapter — reading the API Gateway event, splitting its body into events
without trusting them (~200 lines), and the answer — whose parts serve only this handler.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import logging
import math
import re
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from squall import redact
from squall.bolts.json_decode import gunzip, json_error
from squall.deploy import snapstart
from squall.deploy.deadline import Deadline
from squall.deploy.lambda_consumer import collector_paused, warn_about_local_dead_letters
from squall.deploy.producer_answer import MAX_ANSWER_BYTES, answer_limit, fitted
from squall.deploy.producer_answer import answer as _answer
from squall.errors import BatchFailed, SinkError, TransientError, without_location
from squall.event import Record, RecordMeta
from squall.limits import (
    DEFAULT_MAX_DEPTH,
    may_exceed_depth,
    may_hold_wide_int,
    nesting_depth,
    wide_int_reason,
)
from squall.observability.logs import log_context
from squall.observability.runners import lambda_logging, lambda_observer
from squall.safe_json import json_type
from squall.secrets import aws_secrets
from squall.topology.executor import Engine
from squall.topology.loader import load
from squall.topology.outcomes import ENGINE, Outcome

log = logging.getLogger("squall.producer")


@dataclass(frozen=True)
class Request:
    """The parts of an API Gateway proxy event the producer needs."""

    body: bytes
    request_id: str
    source_ip: str
    user_agent: str
    received_at: datetime
    content_type: str
    method: str


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} is a JSON {json_type(value)}, not an object")
    return value


def _text(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{where} is a JSON {json_type(value)}, not a string")
    return value


class UnsupportedEncoding(ValueError):
    """A body in a ``Content-Encoding`` the producer cannot read (answered ``415``)."""


#: Content-Encoding → whether the body is gzip (RFC 9110: ``x-gzip`` is ``gzip``).
_ENCODINGS = {"": False, "identity": False, "gzip": True, "x-gzip": True}


def multi_value(event: Any) -> bool:
    """An event with ``multiValueHeaders`` and no ``headers``: an Application Load Balancer's
    target group with multi-value headers on sends only those (Content-Encoding among them: a
    gzip body was read as binary JSON lines) and reads only those in the answer."""
    return (
        isinstance(event, dict)
        and event.get("headers") is None
        and isinstance(event.get("multiValueHeaders"), dict)
    )


def _after_first_member(raw: bytes, limit: int) -> bytes | None:
    """What follows the first gzip member of ``raw`` (None: that member is not whole gzip)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        d.decompress(raw, limit + 1)
    except zlib.error:
        return None
    return d.unused_data if d.eof else None


def parse_request(event: dict[str, Any], max_body_bytes: int) -> Request:
    """REST (v1) or HTTP API (v2) proxy event → ``Request``; raises ``ValueError`` naming the bad part."""
    if not isinstance(event, dict):
        raise ValueError(f"the event is a JSON {json_type(event)}, not an API Gateway proxy event")
    headers = {
        str(k).lower(): v
        for k, v in _object(event.get("headers"), "headers").items()
        if isinstance(v, str)
    }
    if multi_value(event):  # an ALB target group with multi-value headers: no "headers" at all
        for k, values in event["multiValueHeaders"].items():
            if isinstance(values, list) and values and isinstance(values[-1], str):
                headers[str(k).lower()] = values[-1]
    ctx = _object(event.get("requestContext"), "requestContext")
    if event.get("version") == "2.0":
        http = _object(ctx.get("http"), "requestContext.http")
        method = _text(http.get("method"), "requestContext.http.method")
        source_ip = _text(http.get("sourceIp"), "requestContext.http.sourceIp")
        ua = _text(http.get("userAgent"), "requestContext.http.userAgent")
        epoch_ms = ctx.get("timeEpoch")
    else:
        ident = _object(ctx.get("identity"), "requestContext.identity")
        method = _text(event.get("httpMethod"), "httpMethod")
        source_ip = _text(ident.get("sourceIp"), "requestContext.identity.sourceIp")
        ua, epoch_ms = (
            _text(ident.get("userAgent"), "requestContext.identity.userAgent"),
            ctx.get("requestTimeEpoch"),
        )
        if not source_ip and "elb" in ctx:
            # An Application Load Balancer's event has no identity: the address of the client
            # that connected to it is the last one it appended to X-Forwarded-For (the ones
            # before it are the client's own, any text). Without it every event's was "".
            source_ip = headers.get("x-forwarded-for", "").rpartition(",")[2].strip()
    if not method:
        raise ValueError("the request has no HTTP method")
    body = _text(event.get("body"), "body")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise ValueError(f"isBase64Encoded is true but the body is not base64: {exc}") from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    if len(raw) > max_body_bytes:
        raise OverflowError(f"body of {len(raw)} bytes exceeds {max_body_bytes}")
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        # Read as JSON, a deflate or brotli body was a few "lines" of binary, each refused as
        # not UTF-8 (a 400 the SDK takes as its events' fault: dropped, the rest unnamed).
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:50]!r} is not supported: send gzip, or no Content-Encoding"
        )
    if _ENCODINGS[encoding]:
        try:  # every member: one the client appended was dropped, answered 202
            raw = gunzip(raw, max_body_bytes)
        except OverflowError:
            raise OverflowError(
                f"gzip body decompresses to more than {max_body_bytes} bytes"
            ) from None
        except EOFError:
            raise ValueError("truncated gzip body") from None
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"Content-Encoding is gzip but the body is not: {exc}") from None
    elif not encoding and raw[:2] == _GZIP_MAGIC:
        # A gzip body without the header (navigator.sendBeacon cannot set one; a proxy may drop
        # it): no JSON text starts with 1f 8b. Read as JSON lines, its binary "lines" were
        # rejected one by one — a 400 naming indexes that were not its events', the rest unnamed.
        try:
            raw = gunzip(raw, max_body_bytes)
        except OverflowError:
            raise OverflowError(
                f"gzip body decompresses to more than {max_body_bytes} bytes"
            ) from None
        except EOFError:
            raise ValueError("truncated gzip body") from None
        except (zlib.error, ValueError):
            # Not one gzip stream. A gzip event on the first line, then JSON lines: its lines
            # are answered. A whole gzip body then other bytes (garbage, a trailing newline, a
            # corrupt member) is malformed, as with the header: read as lines, its binary
            # "lines" were answered one by one (a 400 naming indexes that were not its events').
            tail = _after_first_member(raw, max_body_bytes)
            if tail is not None and not (tail[:1] in (b"\n", b"\r") and tail.strip()):
                raise ValueError(
                    f"a gzip body (without Content-Encoding) followed by {len(tail)} bytes "
                    "that are not gzip"
                ) from None
    # A UTF-8 BOM opening the body (Windows tools, .NET's default encoder): not JSON (RFC 8259
    # §8.1 lets a parser ignore it), it made the first event unreadable and one event a 400.
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if epoch_ms is not None and (
        isinstance(epoch_ms, bool) or not isinstance(epoch_ms, (int, float))
    ):
        raise ValueError(
            "the request time (requestContext timeEpoch/requestTimeEpoch) is not a number"
        )
    try:
        received = datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms else datetime.now(UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"the request time {epoch_ms} is out of range") from None
    return Request(
        raw,
        # The request's records are numbered from 1 under its id (their event ids without an
        # event_id_field): without one (an ALB's event, a direct invoke) every request's first
        # event had one id, and an idempotent sink downstream kept only the first request's.
        _text(ctx.get("requestId"), "requestContext.requestId") or f"no-id-{uuid.uuid4().hex}",
        source_ip,
        ua or headers.get("user-agent", ""),
        received,
        headers.get("content-type", ""),
        method.upper(),
    )


class Payload(NamedTuple):
    """One event of a request: where it is in the body, its bytes, and why it cannot go on."""

    #: The array element's index, or the 0-based line of a JSON-lines body (blank lines count).
    index: int
    data: bytes
    #: Set when the producer refuses the event itself (the engine dead-letters it with ``data``,
    #: the element as sent): too deep, an integer beyond 64 bits, a field named ``context_key``.
    defect: str | None = None


#: A JSON string (skipped whole), a lone quote (an unclosed string), a bracket or a comma.
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]', re.DOTALL)
_WS = b" \t\r\n"


def array_elements(text: bytes) -> list[bytes] | None:
    """The top-level elements of a JSON array, each as sent; None when ``text`` is not one array
    (an unclosed string or bracket, or data after it). Only delimited — strings skipped, nesting
    counted — never parsed, so a bad element (too deep, a number orjson cannot read, a typo)
    stays one element, and mismatched brackets inside it only make that element invalid."""
    if text[:1] != b"[":
        return None
    out: list[bytes] = []
    depth, start = 0, 1
    for m in _STRUCTURE.finditer(text):
        c = text[m.start()]
        if c == 0x22:  # '"'
            if m.end() - m.start() == 1:
                return None  # a string that never ends
        elif c in b"[{":
            depth += 1
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                if c != 0x5D or text[m.end() :].strip(_WS):
                    return None
                last = text[start : m.start()].strip(_WS)
                if last or out:
                    out.append(last)
                return out
        elif depth == 1:  # a comma between two elements
            out.append(text[start : m.start()].strip(_WS))
            start = m.end()
    return None


def split_events(
    req: Request, context_key: str | None, max_depth: int = DEFAULT_MAX_DEPTH, max_events: int = 0
) -> list[Payload]:
    """One record per event: array elements, the single value, or each JSON line as sent.

    Raises ``ValueError`` only for a body that is none of these (empty, ``null``, not JSON, an
    unclosed array); ``OverflowError`` for more than ``max_events`` (0: any number), counted
    before any work per event (5 MB of ``[{},{},…]`` took 27 s and 7 GB to be refused after it).
    What is wrong with one event is that event's: a line or element that is not JSON goes on as
    sent (the json bolt rejects it with the reason); one nested deeper than ``max_depth``, holding
    an integer beyond 64 bits (orjson would round it to a float), or already holding a
    ``context_key`` field gets a ``defect``. The others get the request context.
    """
    text = req.body.strip()
    if not text:
        raise ValueError("empty body")
    raws: list[bytes] | None = None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # One bad element must not sink the others: split the array without trusting them.
        raws = array_elements(text)
        if raws is not None:
            index = list(range(len(raws)))
        else:  # JSON lines: numbered as in the body, blank lines included
            lines = req.body.split(b"\n")
            index = [i for i, line in enumerate(lines) if line.strip()]
            if len(index) < 2:
                raise ValueError(
                    "body is not JSON, a JSON array, or JSON lines: "
                    f"{json_error(req.body, _as_sent(req.body, text, exc))}"  # a byte not UTF-8
                ) from None
            raws = [lines[i] for i in index]
    else:
        if doc is None:
            raise ValueError("body is JSON null, not an event, an array of events, or JSON lines")
        docs = doc if isinstance(doc, list) else [doc]
        index = list(range(len(docs)))
    if not index:  # else answered 400 {"accepted": 0, "rejected": []}: nothing named to fix
        raise ValueError("no events: the body is an empty array")
    if 0 < max_events < len(index):
        raise OverflowError(f"{len(index)} events in one request; at most {max_events}")
    if raws is not None:  # passed on raw when unread: the json bolt rejects it with the reason
        docs = [_read(raw) for raw in raws]
    deep = may_exceed_depth(text, max_depth)
    wide = may_hold_wide_int(text)
    context = {
        "source_ip": req.source_ip,
        "user_agent": req.user_agent,
        "request_id": req.request_id,
        "received_at": req.received_at.isoformat(),
    }
    clash = bool(context_key) and any(isinstance(d, dict) and context_key in d for d in docs)
    if raws is None and (deep or wide or clash):  # a defect's dead letter keeps the bytes as sent
        raws = _elements(text, doc)
    out = []
    for i, d in enumerate(docs):
        if d is _UNREAD:
            out.append(Payload(index[i], raws[i], _unread_defect(raws[i])))  # type: ignore[index]
            continue
        defect = None
        if raws is not None:
            defect = _defect(d, raws[i], context_key, max_depth, deep, wide)
        if defect is None:
            value = {**d, context_key: context} if isinstance(d, dict) and context_key else d
            try:
                out.append(Payload(index[i], orjson.dumps(value)))
                continue
            except (orjson.JSONEncodeError, TypeError) as exc:
                defect = f"cannot be re-encoded: {exc}"
                raws = raws or _elements(text, doc)
        out.append(Payload(index[i], raws[i], defect))  # type: ignore[index]
    return out


def _as_sent(body: bytes, text: bytes, exc: orjson.JSONDecodeError) -> orjson.JSONDecodeError:
    """orjson's error for ``body`` as sent, not for ``text`` (it stripped): its line, column and
    char were counted from the first non-blank byte, so `\n\n{"a": 1,}` was answered "line 1"."""
    if text == body:
        return exc
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as as_sent:
        return as_sent
    return exc  # blank bytes JSON does not take as whitespace (\v, \f): as it was


def _read(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNREAD


def _elements(text: bytes, doc: Any) -> list[bytes]:
    """Each event's bytes as sent, for a body orjson read whole."""
    raws = array_elements(text) if isinstance(doc, list) else [text]
    if raws is None or len(raws) != (len(doc) if isinstance(doc, list) else 1):
        raise AssertionError("a valid JSON array split into another number of elements")
    return raws


_UNREAD = object()
_GZIP_MAGIC = b"\x1f\x8b"


def _unread_defect(raw: bytes) -> str | None:
    """Why an event orjson could not read is refused when the json bolt would read it anyway,
    with no request context or the client's own: gzip-compressed, or an integer of 310 digits."""
    if raw.lstrip(_WS)[:2] == _GZIP_MAGIC:
        return "a gzip-compressed event in the body: compress the whole body (Content-Encoding)"
    return wide_int_reason(raw) if may_hold_wide_int(raw) else None


def _defect(
    d: Any, raw: bytes, context_key: str | None, max_depth: int, deep: bool, wide: bool
) -> str | None:
    """Why the producer refuses one decoded event, or None."""
    if deep and may_exceed_depth(raw, max_depth):
        depth = nesting_depth(d)
        if depth > max_depth:
            return f"nested {depth} levels deep, over the limit ({max_depth})"
    if wide and may_hold_wide_int(raw):
        reason = wide_int_reason(raw)
        if reason is not None:
            return reason
    if context_key and isinstance(d, dict) and context_key in d:
        return (
            f"the event has a field {context_key!r}, where the producer puts the request "
            "context (context_key): rename it in the client"
        )
    return None


#: The longest ``Retry-After`` the producer answers, whatever a dependency asked for: a client
#: told to wait longer would hold its events (an SDK's queue) for a wait the dependency may not
#: need by then.
MAX_RETRY_AFTER = 60


def retry_after_header(least: int, hints: Iterable[float | None]) -> str:
    """The 503's ``Retry-After`` (whole seconds): the longest wait a dependency asked for — a
    ``TransientError``'s ``retry_after``, a sink's throttling answer (an HTTP ``Retry-After``)
    — rounded up, at least ``least`` (the handler's ``retry_after``) and at most
    ``MAX_RETRY_AFTER``."""
    asked = max(
        # NaN and negative waits (-inf too: math.ceil raised OverflowError) count for nothing
        (min(h, MAX_RETRY_AFTER) for h in hints if h is not None and h >= 0),
        default=0,
    )
    return str(max(least, math.ceil(asked)))


#: The 500's error when a sink refuses every write for good (its stream missing, no permission).
MISCONFIGURED = "the producer cannot write events (its configuration: see its logs); retry later"


def _unavailable(
    least: int,
    hints: Iterable[float | None],
    which: dict[str, list] | None = None,
    request_id: str = "",
    limit: int = MAX_ANSWER_BYTES,
) -> dict[str, Any]:
    """The 503; ``which``: the events ``written``, ``not_written`` and ``rejected`` (absent when
    the batch failed as a whole: which events a sink wrote before is not known; cut when they do
    not fit in the ``limit`` of the answer: ``fitted``)."""
    return fitted(
        503,
        {"error": "temporarily unavailable, retry", **(which or {})},
        {"Retry-After": retry_after_header(least, hints)},
        request_id,
        limit,
    )


def make_handler(
    topology_path: str | Path,
    *,
    context_key: str | None = "request",
    max_body_bytes: int = 5_000_000,
    max_events: int = 500,
    retry_after: int = 1,
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler for API Gateway; the topology loads and its resources open now (init phase)."""
    redact.install()
    redact.mask_uncaught()  # a thread's uncaught error, an unraisable one: masked in the logs too
    lambda_logging()  # SQUALL_LOG_FORMAT before anything is logged
    with collector_paused():  # as the consumer's init
        topology = load(topology_path, secrets=aws_secrets())  # read at init, once
        warn_about_local_dead_letters(topology)
        # A request's events are answered one by one (accepted, rejected, or a 503 for the whole
        # request): an event after a rejected one is not delivered again, so it is not held back.
        engine = Engine.for_topology(topology, redelivers=False).open()
        observer = lambda_observer(topology.name)  # EMF metrics + one log line per request
        snapstart.prepare(engine)  # a SnapStart init: warm up now, reconnect after each restore
    margin = topology.settings.lambda_deadline_margin

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        with log_context(topology=topology.name):  # every line of the request names it
            out = answer(event, context)
        if multi_value(event):  # its answer's headers are read from multiValueHeaders only
            out["multiValueHeaders"] = {k: [v] for k, v in out.pop("headers").items()}
        return out

    def answer(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            req = parse_request(event, max_body_bytes)
        except OverflowError as exc:
            return _answer(413, {"error": str(exc)})
        except UnsupportedEncoding as exc:
            return _answer(415, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            return _answer(400, {"error": f"cannot read body: {exc}"})
        if req.method != "POST":
            return _answer(405, {"error": "use POST"}, {"Allow": "POST"})
        try:
            payloads = split_events(req, context_key, max_events=max_events)
        except OverflowError as exc:
            return _answer(413, {"error": str(exc)})
        except ValueError as exc:
            return _answer(400, {"error": str(exc)})
        stream = f"api:{req.request_id}"
        records = [
            # Numbered from 1 in each request: the request is the records' source (lineage).
            # No partition key: a sink's default is then the event id's, spreading a request's
            # events over the shards (the request id put a whole 5 MB body on one shard).
            Record(
                p.data,
                RecordMeta(
                    stream,
                    "api",
                    str(i + 1),
                    0,
                    "",
                    req.received_at,
                    defect=p.defect,
                    source=req.request_id,
                ),
            )
            for i, p in enumerate(payloads)
        ]
        # Retries (the engine's, and a sink's own such as PutRecords') are made only while their
        # backoff fits in the time left less lambda_deadline_margin: killed at its timeout, the
        # function answers nothing of its own (API Gateway's 502/504, no Retry-After).
        engine.time_left = Deadline.of(context, margin).seconds_left
        try:
            with observer.recorder.batch(engine, records) as watch:
                watch.result = result = engine.process(records)
        except BatchFailed as exc:
            log.error("request %s: %s", req.request_id, exc)
            if isinstance(exc.cause, SinkError):
                # Refused for good (the stream missing, no permission): every request fails
                # alike until the function is fixed. "503, retry in 1 s" brought every SDK back
                # each second for as long; the cause is in the log line above, not the answer.
                return _answer(500, {"error": MISCONFIGURED}, {"Retry-After": str(MAX_RETRY_AFTER)})
            hint = exc.cause.retry_after if isinstance(exc.cause, TransientError) else None
            return _unavailable(retry_after, [hint])
        finally:
            engine.time_left = None
            observer.flush(context)

        def at(o: Any) -> int:  # the event's place in the body: its array index, or its line
            return payloads[o.index].index if o.index < len(payloads) else o.index

        rejected, unwritten, hints, lost = [], [], [], []
        for o in result.records:
            # Only a write that failed after retries is worth a retry of the request. What a sink
            # refused (a missing partition key, a record over Kinesis' 1 MiB), what a bolt
            # rejected, and an event a bolt lost (returned neither emitted nor dropped: the
            # engine's "no outcome", a bug that loses it again on every resend) are that event's
            # problem, answered in "rejected": a 503 made the client resend it for ever.
            if o.outcome is Outcome.FAILED and o.retry:
                unwritten.append({"index": at(o), "event_id": o.event_id})
                hints.append(o.retry_after)
            elif o.outcome in (Outcome.FAILED, Outcome.DEAD_LETTERED):
                reason = redact.redact_text(f"{o.component}: {o.reason}")  # an answer, not a log
                # Without where in the bolt's code it raised (the server's paths and lines, for
                # the operator: in the dead letter, and the log line of the request's failures)
                rejected.append({"index": at(o), "reason": without_location(reason)})
                if o.outcome is Outcome.FAILED and o.component == ENGINE:
                    lost.append((at(o), reason))
        if lost:  # kept nowhere else (not dead-lettered): one line names them
            more = f" and {len(lost) - 10} more" if len(lost) > 10 else ""
            log.error(
                "request %s: %d event(s) rejected (%s) at index %s%s",
                req.request_id,
                len(lost),
                lost[0][1],
                ", ".join(str(i) for i, _ in lost[:10]),
                more,
            )
        if unwritten:
            # Which events to send again: a retry of the whole request duplicates the written
            # ones downstream unless the topology has an event_id_field. (A filtered event is
            # taken: nothing to write, nothing to resend.)
            written = [
                {"index": at(o), "event_id": o.event_id}
                for o in result.records
                if o.outcome in (Outcome.COMMITTED, Outcome.FILTERED)
            ]
            which = {"written": written, "not_written": unwritten, "rejected": rejected}
            return _unavailable(retry_after, hints, which, req.request_id, answer_limit(event))
        accepted = result.count(Outcome.COMMITTED) + result.count(Outcome.FILTERED)
        status = 202 if accepted else 400
        body = {"accepted": accepted, "rejected": rejected}
        return fitted(status, body, None, req.request_id, answer_limit(event))

    handler.engine = engine  # type: ignore[attr-defined]
    return handler


__all__ = ["make_handler", "parse_request", "split_events", "gzip"]
