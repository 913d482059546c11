"""``http`` sink (webhook): POST events to an HTTP endpoint with httpx.

One request per event (``mode: single``), or per ``batch_size`` events as a JSON array
(``json_batch``) or newline-delimited JSON (``ndjson_batch``). Requests run on at most
``concurrency`` threads sharing one connection pool, under an optional rate limit. Answers:
2xx is written; 408, 425, 429 and 5xx (and connection errors) are retried with jittered backoff,
waiting at least what ``Retry-After`` asks; a redirect (3xx, not followed), 401, 405 and 407
say the sink is misconfigured — the same answer for every record — and fail the batch
(``SinkError``) instead of dead-lettering every record, and so does a 403 for two requests or
more of a write none of whose requests was taken (a 403 beside a request taken is a record's: a
WAF's, a tenant's); any other status (a 4xx) is that
record's failure, with the status and the start of the response body as the reason — in the
batch modes a request of several events refused with 400, 403, 413 or 422 is sent again in halves
until the events refused alone are found (a 413, or one bad event, is not the whole request's).
When no request of a call got through
(the endpoint is down or throttles everything) the sink raises ``TransientError`` and the engine
retries only the requests not yet answered. Each request carries an idempotency header derived
from the event id (or the batch's event ids), so a receiver can drop a replay.

Size (~440 lines): one sink and what its answers mean — the statuses, the batch modes' halving,
when a 403 is the sink's, and the masking of secrets a receiver echoes — read together.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import Field, field_validator

from squall import aws, exact_json
from squall.component import (
    ComponentConfig,
    ComponentContext,
    HeaderValue,
    check_request_url,
)
from squall.errors import SinkError
from squall.event import Event
from squall.redact import mask_request_urls
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.sinks.batchio import (
    NO_TIME_LEFT,
    ConcurrentRequests,
    Item,
    Reject,
    Retry,
    SendOutcome,
    retry_after_seconds,
    send_all,
    time_left_of,
    truncate,
    write_result,
)
from squall.sinks.ratelimit import RateLimiter
from squall.times import Seconds

log = logging.getLogger("squall.sinks.http")


class HttpSinkConfig(ComponentConfig):
    url: str = Field(
        description="Endpoint URL (http or https); `${VAR}` works here as everywhere in the YAML."
    )
    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method.")
    mode: Literal["single", "json_batch", "ndjson_batch"] = Field(
        "single",
        description="`single`: one request per event; `json_batch`: a JSON array of up to batch_size "
        "events; `ndjson_batch`: the same as newline-delimited JSON.",
    )
    batch_size: int = Field(
        100, ge=1, le=10_000, description="Events per request in the batch modes."
    )
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        description='Extra request headers, e.g. `Authorization: "Bearer ${HOOK_TOKEN}"`. '
        "Values never appear in logs or errors.",
    )
    idempotency_header: str | None = Field(
        "Idempotency-Key",
        description="Header carrying the event id (batch modes: a digest of the batch's event "
        "ids); null to leave it out.",
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    rate_limit: float | None = Field(
        None,
        gt=0,
        description=(
            "Requests per second on average (all threads together), plus a burst of one second's "
            "worth when idle: up to twice this within a second (for a per-second quota, half)."
        ),
    )
    timeout: Seconds = Field(
        10.0, gt=0, description="Seconds to wait for a connection and for the answer."
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Attempts per request (first included) on 408, 425, 429, 5xx and "
        "connection errors; then the events fail the batch.",
    )
    max_retry_after: Seconds = Field(
        60.0, ge=0, description="Longest Retry-After honoured, in seconds."
    )
    reason_chars: int = Field(
        300, ge=20, le=10_000, description="Response body characters kept in a failure reason."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return check_request_url(value)


#: Answers a later attempt of the same request may not get: 408 Request Timeout, 425 Too Early,
#: 429 Too Many Requests (and every 5xx).
RETRIED = frozenset({408, 425, 429})
#: Answers that are the sink's configuration, not the record's: the same URL, method and headers
#: get them for every record (wrong or expired credentials, a method the endpoint does not take,
#: a proxy wanting credentials). Dead-lettering each record would empty the stream into the dead
#: letter until someone noticed; the batch fails instead (``SinkError``), nothing is checkpointed.
MISCONFIGURED = {
    401: "check the credentials in `headers`",
    405: "check `method`",
    407: "the proxy wants credentials",
}
#: A 403 is the sink's only when two requests or more of a write got it and none was taken:
#: a WAF blocking one record's content, or a receiver forbidding one tenant's record, answers
#: 403 too, and failing the batch for that record stalled the shard behind it for good (the
#: lookup's http source decides the same way). A 403 beside a request taken, or for a request
#: alone, is that request's refusal; a request of several events is split to find which.
FORBIDDEN = 403


#: Refusals of a batch-mode request that may be one event's (a 400 or 422 for one bad event among
#: a hundred, a 413 for the request's size): the request is sent again in halves. Any other
#: refusal (404, 409, 410, 415…) is the request's as a whole — a wrong path or content type
#: refuses every half too: splitting only multiplied the requests (2n − 1 for n events).
SPLIT = frozenset({400, 403, 413, 422})
_STATUS = re.compile(r"HTTP (\d{3})\b")


def status_of(reason: str) -> int | None:
    """The status of a refused request's reason (``HTTP <status>…``)."""
    found = _STATUS.match(reason)
    return None if found is None else int(found.group(1))


def split_worthy(reason: str) -> bool:
    """Whether a refused request's reason (``HTTP <status>…``) is one of ``SPLIT``."""
    return status_of(reason) in SPLIT


def answer_for(
    status: int,
    body: str,
    retry_after: str | None,
    *,
    reason_chars: int,
    max_retry_after: float,
    location: str | None = None,
    to_https: bool = False,
    size: int | None = None,
) -> Retry | Reject | None:
    """What an HTTP answer means for the request: written (2xx), retry (408, 425, 429, 5xx) or
    refused (another 4xx). Raises ``SinkError`` for a redirect (3xx, never followed: the URL is
    out of date; ``location`` is the masked ``Location``; ``to_https``: it is the same URL with
    https, a load balancer's) and for the statuses of ``MISCONFIGURED``. ``body`` and
    ``location`` come masked. ``size``: the request body's bytes, named in a 413's reason."""
    if 200 <= status < 300:
        return None
    reason = f"HTTP {status}: {truncate(body, reason_chars)}" if body.strip() else f"HTTP {status}"
    if 300 <= status < 400:
        moved = f" to {location}" if location else ""
        if to_https:
            raise SinkError(
                f"{reason} (redirect{moved}, not followed): the endpoint redirects http to "
                "https — set `url` to begin with https://"
            )
        raise SinkError(
            f"{reason} (redirect{moved}, not followed): set `url` to the endpoint the requests "
            "should go to"
        )
    if status == 413 and size is not None:  # the receiver's page rarely says how big it was
        reason = f"{reason} (a request body of {size} bytes)"
    if status in MISCONFIGURED:
        raise SinkError(f"{reason} ({MISCONFIGURED[status]}; every record would get it)")
    if status in RETRIED or status >= 500:
        after = retry_after_seconds(retry_after)
        return Retry(reason, None if after is None else min(after, max_retry_after))
    return Reject(reason)


class HttpSink(ConcurrentRequests, Sink):
    """POST events (one per request, or batched) to a webhook; 429/5xx retried, 4xx fail the record."""

    Config = HttpSinkConfig
    summary = "POST events to an HTTP endpoint (webhook), with retries, a rate limit and idempotency keys."

    @classmethod
    def packages(cls, config: HttpSinkConfig) -> frozenset[str]:
        """httpx (the ``http`` extra's), imported at open."""
        return frozenset({"httpx"})

    def __init__(self, config: HttpSinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self.pool: ThreadPoolExecutor | None = None
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        self.backoff = aws.Backoff(base=0.2, cap=10.0)
        self.sleep: Callable[[float], None] = time.sleep
        self.requests = 0
        #: The misconfiguration an answer revealed in this write: the requests not sent yet are
        #: not sent (they would get the same answer).
        self._broken: str | None = None
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        self._secrets = _secret_parts(self._headers.values(), config.url)

    def open(self, resources: Any = None) -> None:
        import httpx

        cfg = self.config
        if self.client is None:
            limits = httpx.Limits(
                max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
            )
            mask_request_urls()  # httpx logs each request's URL: a webhook's path is its secret
            self.client = httpx.Client(
                timeout=cfg.timeout,
                limits=limits,
                follow_redirects=False,
                headers={"User-Agent": "squall"},
            )
        if self.pool is None:
            self.pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=f"squall-{self.id}")

    def prepare(self, events: list[Event]) -> Prepared:
        out = Prepared([])
        bodies: list[tuple[Event, bytes]] = []
        for ev in events:
            if ev.value is None:
                out.reject(ev, self.id, "event has no decoded value: add a decode bolt")
                continue
            try:
                bodies.append((ev, exact_json.dumps(ev.value)))  # wide integers as digits
            except TypeError as exc:
                out.reject(ev, self.id, f"value cannot be serialized as JSON: {exc}")
                continue
            out.events.append(ev)
        cfg = self.config
        items: list[Item] = []
        if cfg.mode == "single":
            items = [  # each body kept for the batch: a copy, not orjson's ~4 KB buffer
                Item([ev], exact_json.owned(body), len(body), key=header_value(ev.event_id))
                for ev, body in bodies
            ]
        else:
            for i in range(0, len(bodies), cfg.batch_size):
                items.append(self._batch_item(bodies[i : i + cfg.batch_size]))
        out.payload = items
        return out

    def _batch_item(self, group: list[tuple[Event, bytes]]) -> Item:
        """One request of the batch modes: the events' bodies as a JSON array or as NDJSON, and
        a digest of their event ids as the idempotency key."""
        evs = [ev for ev, _ in group]
        if self.config.mode == "json_batch":
            body = b"[" + b",".join(b for _, b in group) + b"]"
        else:
            body = b"".join(b + b"\n" for _, b in group)
        digest = hashlib.blake2b(
            "\x1f".join(ev.event_id for ev in evs).encode(), digest_size=16
        ).hexdigest()
        return Item(evs, body, len(body), key=digest)

    def _halves(self, item: Item) -> list[Item]:
        """A refused request of several events as two requests of half of them each."""
        group = [(ev, exact_json.dumps(ev.value)) for ev in item.events]  # as prepare made them
        mid = len(group) // 2
        return [self._batch_item(group[:mid]), self._batch_item(group[mid:])]

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if self.client is None or self.pool is None:
            raise SinkError(f"{self.id}: open() the sink first")
        items = prepared.payload or []
        self.time_left = time_left_of(ctx)  # the requests' timeouts and the retries fit in it
        self._broken = None
        self.took = False  # an outage until the service takes a request of this write
        outcome = self._send_all(items)
        self._check_forbidden(items)
        # Batch modes: a request refused (a 413, a 400, 403 or 422 for one bad event among a
        # hundred: ``SPLIT``) is not each of its events' problem. It is split in halves, sent
        # again, until the events refused alone are found; the halves replace it in the batch's
        # payload, so the engine's retry of a call that failed as a whole sends what is missing.
        while split := [
            item for item, why in outcome.rejected if len(item.events) > 1 and split_worthy(why)
        ]:
            log.info(
                "%s: %d request(s) of several events refused (%s); sending each in halves",
                self.id,
                len(split),
                split[0].refused,
            )
            halves = []
            for item in split:
                at = next(i for i, other in enumerate(items) if other is item)
                items[at : at + 1] = parts = self._halves(item)
                halves.extend(parts)
            more = self._send_all(halves)
            self._check_forbidden(items)
            outcome.rejected = [
                (item, why)
                for item, why in outcome.rejected
                if len(item.events) == 1 or not split_worthy(why)
            ] + more.rejected
            outcome.failed.extend(more.failed)
        return write_result(self.id, outcome)

    def _check_forbidden(self, items: list[Item]) -> None:
        """Fail the batch (``SinkError``) when two requests or more of this write were answered
        403 and none was taken: the credentials or the endpoint's permissions, not a record's
        content. Decided once the requests of a round are answered, whatever their order. The
        requests are the write's as they are now (``items``): a request split in halves is its
        halves — counted beside them, one blocked record's 403 was two refusals."""
        forbidden = [i.refused for i in items if i.refused and status_of(i.refused) == FORBIDDEN]
        if len(forbidden) >= 2 and not any(item.done for item in items):
            raise SinkError(
                f"{self.id}: {self.config.method} {forbidden[0]} (check the credentials in "
                f"`headers` and the endpoint's permissions; {len(forbidden)} requests refused, "
                "none taken)"
            )

    def _send_all(self, items: list[Item]) -> SendOutcome:
        return send_all(
            f"{self.id}: {self.config.method}",
            iter([items]),
            self._send,
            max_attempts=self.config.max_attempts,
            backoff=self.backoff,
            sleep=self.sleep,
            time_left=self.time_left,  # no retry past the runner's deadline
        )

    def _request(self, item: Item) -> Retry | Reject | None:
        import httpx

        cfg = self.config
        if self._broken is not None:  # another request's answer says the sink is misconfigured
            raise SinkError(self._broken)
        if self._timeout(cfg.timeout) is None:  # no time left: not sent, and no token taken
            return Retry(f"not sent: {NO_TIME_LEFT}")
        held = self._held_back(self.limiter)  # a rate limit's wait past the deadline
        if held is not None:
            return held
        headers = {
            "Content-Type": "application/x-ndjson"
            if cfg.mode == "ndjson_batch"
            else "application/json",
            **self._headers,
        }
        if cfg.idempotency_header:
            headers[cfg.idempotency_header] = item.key
        timeout = self._timeout(cfg.timeout)
        if timeout is None:
            return Retry(f"not sent: {NO_TIME_LEFT}")
        self.requests += 1
        try:
            resp = self.client.request(
                cfg.method, cfg.url, content=item.body, headers=headers, timeout=timeout
            )
        except httpx.TransportError as exc:  # connect, read, write errors and timeouts
            return Retry(
                self._mask(f"{type(exc).__name__}: {exc}"),
                unreachable=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
            )
        location = resp.headers.get("Location")
        try:
            return answer_for(
                resp.status_code,
                self._mask(resp.text),
                resp.headers.get("Retry-After"),
                reason_chars=cfg.reason_chars,
                max_retry_after=cfg.max_retry_after,
                location=None if location is None else self._mask(location),
                to_https=location is not None and _same_url_in_https(cfg.url, location),
                size=item.size,
            )
        except SinkError as exc:
            self._broken = f"{self.id}: {cfg.method} {exc}"
            raise SinkError(self._broken) from None

    def _mask(self, text: str) -> str:
        """``text`` without the header values (a receiver may echo the request in its answer)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _same_url_in_https(url: str, location: str) -> bool:
    """Whether a redirect's ``location`` is ``url`` (http) on https: a load balancer's or a
    server's http → https redirect, whatever the ports."""
    was, now = urlsplit(url), urlsplit(location)
    return (
        was.scheme == "http"
        and now.scheme == "https"
        and was.hostname == now.hostname
        and (was.path or "/") == (now.path or "/")
    )


#: What an event id may keep in a header value as it is: visible ASCII but ``%``.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def header_value(event_id: str) -> str:
    """An event id as a header value: itself when visible ASCII (digests, UUIDs, most message ids),
    else percent-encoded (UTF-8). An id from ``event_id_field`` is the client's text: its CR/LF
    made every attempt of the request fail (a batch retried for ever), a non-ASCII one the event."""
    return quote(event_id, safe=_HEADER_SAFE, errors="surrogatepass")


def _secret_parts(values: Any, url: str = "") -> list[str]:
    """Header values to mask, longest first: each whole, and the credential of ``Scheme credential``
    (``Bearer abc``: an echo may show ``abc`` alone); and the URL's path and query, which are often
    a webhook's secret (``/services/T…/B…/<token>``) and which a receiver's 404 page echoes
    (``Cannot POST /services/…``): the path with its query, the path, a segment of 16 characters
    or more, a query value. Parts under 6 characters are left: masking them would mangle
    ordinary text."""
    parts = set()
    for value in values:
        words = value.split()
        for part in (value, words[-1] if len(words) > 1 else ""):
            if len(part) >= 6:
                parts.add(part)
    split = urlsplit(url)
    found = [*(v for _, v in parse_qsl(split.query, keep_blank_values=True))]
    if split.path.strip("/"):
        found += [split.path, f"{split.path}?{split.query}" if split.query else ""]
        found += [seg for seg in split.path.split("/") if len(seg) >= 16]
    for part in found:
        if len(part) >= 6:
            parts.update((part, unquote(part), quote(part, safe="/")))
    return sorted(parts, key=len, reverse=True)
