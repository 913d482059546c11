"""Lambda API-Gateway producer: SDK events over HTTP in, the topology (ending in a Kinesis sink) run, an HTTP answer out.

Accepts REST API (payload v1) and HTTP API (payload v2) proxy events. The body is one JSON
event, a JSON array of events, or JSON lines (optionally ``Content-Encoding: gzip``). Each event
gets the request context under ``context_key`` (source IP, user agent, request id, received
time) so enrichment bolts can use them — ``geo`` with ``ip_field: request.source_ip``.

Answers: ``202`` with ``{"accepted": n, "rejected": [{"index", "reason"}]}`` when at least one
event was accepted; ``400`` when none was (bad body, or every event rejected); ``413`` for a body
over ``max_body_bytes``; ``503`` with ``Retry-After`` when a sink (Kinesis) could not take the
events after retries — the SDK should retry the request, and a stable ``event_id_field`` (the
SDK's message id) makes that retry harmless downstream.
"""

from __future__ import annotations

import base64
import gzip
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from squall.deploy.lambda_consumer import warn_about_local_dead_letters
from squall.errors import BatchFailed
from squall.event import Record, RecordMeta
from squall.topology.executor import Engine, Outcome
from squall.topology.graph import compile_plan
from squall.topology.loader import load

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


def parse_request(event: dict[str, Any], max_body_bytes: int) -> Request:
    """REST (v1) or HTTP API (v2) proxy event → ``Request``; raises ``ValueError`` for a bad body."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    ctx = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        http = ctx.get("http") or {}
        method, source_ip, ua = http.get("method", "POST"), http.get("sourceIp", ""), http.get("userAgent", "")
        epoch_ms = ctx.get("timeEpoch")
    else:
        ident = ctx.get("identity") or {}
        method, source_ip = event.get("httpMethod", "POST"), ident.get("sourceIp", "")
        ua, epoch_ms = ident.get("userAgent") or headers.get("user-agent", ""), ctx.get("requestTimeEpoch")
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    if len(raw) > max_body_bytes:
        raise OverflowError(f"body of {len(raw)} bytes exceeds {max_body_bytes}")
    if headers.get("content-encoding", "").lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = d.decompress(raw, max_body_bytes + 1)
        except zlib.error as exc:
            raise ValueError(f"Content-Encoding is gzip but the body is not: {exc}") from None
        if len(raw) > max_body_bytes:
            raise OverflowError(f"gzip body decompresses to more than {max_body_bytes} bytes")
        if not d.eof:
            raise ValueError("truncated gzip body")
    received = datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms else datetime.now(UTC)
    return Request(raw, ctx.get("requestId", ""), source_ip, ua or headers.get("user-agent", ""), received,
                   headers.get("content-type", ""), method.upper())


def split_events(req: Request, context_key: str | None) -> list[bytes]:
    """One record per event: array elements, the single object, or each JSON line as sent."""
    text = req.body.strip()
    if not text:
        raise ValueError("empty body")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = None
    if doc is None:  # JSON lines: keep each line's bytes, so a bad line reaches dead letter as sent
        lines = [line for line in text.split(b"\n") if line.strip()]
        if len(lines) < 2:
            raise ValueError("body is not JSON, a JSON array, or JSON lines")
        docs: list[Any] = []
        for line in lines:
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                docs.append(line)  # passed on raw: the json bolt rejects it with the reason
    else:
        docs = doc if isinstance(doc, list) else [doc]
    context = {"source_ip": req.source_ip, "user_agent": req.user_agent, "request_id": req.request_id,
               "received_at": req.received_at.isoformat()}
    out = []
    for d in docs:
        if isinstance(d, bytes):
            out.append(d)
        elif isinstance(d, dict) and context_key:
            out.append(orjson.dumps({**d, context_key: context}))
        else:
            out.append(orjson.dumps(d))
    return out


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": orjson.dumps(body).decode()}


def make_handler(topology_path: str | Path, *, context_key: str | None = "request", max_body_bytes: int = 5_000_000,
                 max_events: int = 500, retry_after: int = 1) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler for API Gateway; the topology loads and its resources open now (init phase)."""
    topology = load(topology_path)
    warn_about_local_dead_letters(topology)
    engine = Engine(compile_plan(topology)).open()
    sinks = {n.id for n in engine.plan.nodes if n.kind == "sink"} | {"engine"}

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        try:
            req = parse_request(event, max_body_bytes)
        except OverflowError as exc:
            return _answer(413, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            return _answer(400, {"error": f"cannot read body: {exc}"})
        if req.method != "POST":
            return _answer(405, {"error": "use POST"}, {"Allow": "POST"})
        try:
            payloads = split_events(req, context_key)
        except ValueError as exc:
            return _answer(400, {"error": str(exc)})
        if len(payloads) > max_events:
            return _answer(413, {"error": f"{len(payloads)} events in one request; at most {max_events}"})
        stream = f"api:{req.request_id}"
        records = [Record(p, RecordMeta(stream, "api", str(i + 1), 0, req.request_id, req.received_at))
                   for i, p in enumerate(payloads)]
        try:
            result = engine.process(records)
        except BatchFailed as exc:
            log.error("request %s: %s", req.request_id, exc)
            return _answer(503, {"error": "temporarily unavailable, retry"}, {"Retry-After": str(retry_after)})
        rejected, unavailable = [], False
        for o in result.records:
            if o.outcome is Outcome.FAILED and o.component in sinks:
                unavailable = True
            elif o.outcome in (Outcome.FAILED, Outcome.DEAD_LETTERED):
                rejected.append({"index": o.index, "reason": f"{o.component}: {o.reason}"})
        if unavailable:
            return _answer(503, {"error": "temporarily unavailable, retry"}, {"Retry-After": str(retry_after)})
        accepted = result.count(Outcome.COMMITTED) + result.count(Outcome.FILTERED)
        return _answer(202 if accepted else 400, {"accepted": accepted, "rejected": rejected})

    handler.engine = engine  # type: ignore[attr-defined]
    return handler


__all__ = ["make_handler", "parse_request", "split_events", "gzip"]
