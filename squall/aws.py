"""boto3 clients, AWS error classification and jittered backoff for squall's AWS I/O.

Size (~500 lines): the clients' settings, the bound of their calls by a Lambda's time left
(``time_bounded``: one attempt, read and connect timeouts of the time left), error
classification and backoff — one module, since every AWS component needs all of them together.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from pydantic import AfterValidator, BeforeValidator

from squall.iam import sqs_url_parts


def blank_is_unset(value: Any) -> Any:
    """``None`` for an empty or blank string (``"${LOCAL_ENDPOINT:-}"`` with the variable unset),
    else the value as given."""
    return None if isinstance(value, str) and not value.strip() else value


#: An optional client setting in a component's config (``region``): an empty value —
#: ``"${AWS_REGION:-}"`` in the YAML — means unset, in every AWS component.
OptionalSetting = Annotated[str | None, BeforeValidator(blank_is_unset)]

DEFAULT_REGION = "us-east-1"

#: Error codes meaning "slow down": Kinesis read/write limits, control-plane limits, KMS.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        # SQS when KMS throttles an SSE-KMS queue's data keys: the JSON protocol's shape and the
        # query protocol's code (botocore gives the latter when SQS sends x-amzn-query-error).
        # SQS reports them per message with SenderFault true; KMS is only busy.
        "KmsThrottled",
        "KMS.ThrottlingException",
        # botocore's standard retry mode counts these as throttling too: a call it retried
        # is one squall's loops retry when it makes one attempt (``time_bounded``).
        "SlowDown",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "TransactionInProgressException",
    }
)
#: Server-side errors worth a retry.
SERVER_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "InternalError",
        "ServiceUnavailableException",
        "RequestTimeout",  # botocore's standard mode: transient, whatever the status
        "RequestTimeoutException",
    }
)
#: Errors botocore's service models mark retryable (not throttling) among the services squall
#: calls: DynamoDB's write to an item a request in another Region is modifying (a multi-Region
#: strongly consistent table: the checkpoint store's ``UpdateItem``), 409, which botocore retries.
MODELED_RETRYABLE_CODES = frozenset({"ReplicatedWriteConflictException"})
#: Network-level failures botocore raises before any answer (its standard retry mode retries
#: every ``ConnectionError`` and ``HTTPClientError``: a reset, a proxy or TLS failure too).
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    BotocoreConnectionError,
    HTTPClientError,
)

_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:kinesis:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):stream/(?P<name>[a-zA-Z0-9_.-]+)$"
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, else None."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def is_throttling(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING_CODES


def is_retryable(exc: BaseException) -> bool:
    """Throttling (a 429 answer too), a transient server answer (``TRANSIENT_STATUSES``, or a
    server error code of ``SERVER_CODES`` whatever its status) or a network failure: the same
    call may succeed later — what botocore's standard retry mode retries, its service-modelled
    retryable errors too (``MODELED_RETRYABLE_CODES``)."""
    if isinstance(exc, NETWORK_ERRORS):
        return True
    code = error_code(exc)
    if code is None:
        return False
    if code in THROTTLING_CODES or code in SERVER_CODES or code in MODELED_RETRYABLE_CODES:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)  # type: ignore[attr-defined]
    return status in TRANSIENT_STATUSES


#: The statuses of an answer worth a retry whatever its error code: botocore's standard retry
#: mode's transient ones (500 Internal Server Error, 502 Bad Gateway, 503 Service Unavailable,
#: 504 Gateway Timeout: ``TransientRetryableChecker``) and its throttling one (429). No other 5xx:
#: 501 Not Implemented (an S3-compatible store without the feature) and 505 say the call will
#: never succeed; 506 to 599 are no AWS answer (a proxy's or an S3-compatible store's own: 507
#: Insufficient Storage, 508 Loop Detected, 511 Network Authentication Required) and botocore
#: does not retry them either — a retry would fail the same, until the attempts ran out.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def resolve_region(region: str | None, arn_region: str | None = None) -> str:
    """Configured region, else the stream ARN's, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    return (
        region
        or arn_region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )


@dataclass(frozen=True)
class StreamRef:
    """A Kinesis stream named by name or ARN; ``params`` are the API call arguments that name it."""

    name: str
    arn: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, value: str) -> StreamRef:
        m = _ARN.match(value)
        if m:
            return cls(m["name"], value, m["region"])
        if value.startswith("arn:"):
            raise ValueError(
                f"'{value}' is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
            )
        return cls(value)

    @property
    def params(self) -> dict[str, str]:
        return {"StreamARN": self.arn} if self.arn else {"StreamName": self.name}


def _check_stream(value: str) -> str:
    StreamRef.parse(value)
    return value


#: A config field naming a Kinesis stream: a name or an ARN, checked at load time.
StreamName = Annotated[str, AfterValidator(_check_stream)]


def check_endpoint_url(url: str | None) -> str | None:
    """An endpoint URL as botocore needs it (http or https, a host, a numeric port), else ``ValueError``.

    ``None`` — and an empty or blank string, as ``"${LOCAL_ENDPOINT:-}"`` gives with the variable
    unset — means AWS's endpoint (``None`` is returned), for every AWS component and
    ``squall produce --endpoint-url``. The message masks any password in the URL.
    """
    if url is None or not url.strip():
        return None
    from squall.redact import redact_url

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"endpoint URL '{redact_url(url)}' is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint URL '{redact_url(url)}' must be http(s)://host[:port]")
    return url


#: A component's ``endpoint_url``: empty or blank means AWS's endpoint (as for ``OptionalSetting``),
#: anything else must be http(s)://host[:port] — checked at load time, the same in every AWS
#: component.
EndpointUrl = Annotated[
    str | None, BeforeValidator(blank_is_unset), AfterValidator(check_endpoint_url)
]


def url_without_slash(value: str) -> str:
    """A queue URL as SQS gives it — without a ``/`` at the end, which SQS's calls refuse
    (moto's server: NonExistentQueue) and which hid a FIFO queue's ``.fifo`` —; a name or an ARN
    as it is."""
    return value.rstrip("/") if value.startswith(("http://", "https://")) else value


#: An SQS queue in a sink's config (a URL, an ARN or a name): a URL ending in ``/`` is used
#: without it.
SqsQueue = Annotated[str, AfterValidator(url_without_slash)]


def sqs_queue_region(queue: str) -> str | None:
    """The region a queue's ARN or AWS URL names (None for a name, or another endpoint's URL): a
    client of another region is told the queue does not exist."""
    arn = sqs_queue_arn_parts(queue)
    if arn:
        return arn[0]
    url = sqs_url_parts(queue)  # the URL forms the IAM statements read too
    return url[0] if url else None


def sqs_queue_arn_parts(queue: str) -> tuple[str, str, str] | None:
    """``(region, account, name)`` of a queue given by ARN (``arn:aws:sqs:region:account:name``,
    as a template's ``GetAtt Queue.Arn`` gives it), else None."""
    parts = queue.split(":")
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs" and all(parts[3:]):
        return parts[3], parts[4], parts[5]
    return None


#: Seconds a client's call waits for its connection (botocore's default is 60); inside
#: ``time_bounded``, no longer than the time left.
CONNECT_TIMEOUT = 5.0


#: The boto3 session the clients are made from, and the AWS_* environment it was made in.
_shared: tuple[str, Any] | None = None
_session_lock = threading.Lock()


def _session(boto3: Any) -> Any:
    """One boto3 session for every client of the process, made again when an ``AWS_*``
    variable changed (a test's, or a region set after the first client). A session of its own
    per client parsed botocore's endpoint rules and the service's model again for each: the
    kiosk's three SQS components or the ETL's S3 and Kinesis ones paid ~100 ms of CPU of a
    Lambda's init per client (docs/performance.md, "AWS clients at init")."""
    global _shared
    key = environment_key()
    if _shared is None or _shared[0] != key:
        _shared = (key, boto3.session.Session())
    return _shared[1]


def environment_key() -> str:
    """A digest of the process's ``AWS_*`` variables (not the secrets themselves, kept aside): what
    a client made from them is valid for (``_session``; the secret source's clients and values)."""
    env = "\0".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("AWS_"))
    return hashlib.sha256(env.encode()).hexdigest()


def client(
    service: str,
    *,
    region: str | None,
    endpoint_url: str | None,
    botocore_retries: int = 3,
    read_timeout: float = 30.0,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> Any:
    """A boto3 client. ``botocore_retries`` is the total attempts botocore makes per call (1: none)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": botocore_retries},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=20,
    )
    with _session_lock:  # a botocore session is not thread-safe; the clients it makes are
        made = _session(boto3).client(
            service, region_name=resolve_region(region), endpoint_url=endpoint_url, config=config
        )
    _bound_by_the_deadline(made, botocore_retries, read_timeout)
    _clients.add(made)
    return made


#: Said of a call not started, or not retried, because the runner's deadline is near.
NO_TIME_LEFT = "the time left before the deadline is spent"
#: The reason of what no call was started for because the deadline was reached.
NOT_SENT = f"not sent: {NO_TIME_LEFT}"
#: The shortest read timeout a call inside ``time_bounded`` gets, however little time is left
#: (urllib3 takes 0 for "fail at once"): the sinks start no call with no time left at all.
MIN_READ_TIMEOUT = 0.1

#: The time left of the AWS calls made inside ``time_bounded`` in this thread (or task).
_call_time_left: ContextVar[Callable[[], float | None] | None] = ContextVar(
    "squall_aws_call_time_left", default=None
)


@contextmanager
def time_bounded(time_left: Callable[[], float | None] | None) -> Iterator[None]:
    """Calls of clients made by ``client`` inside the block, given ``time_left`` (a Lambda
    runner's ``WriteContext.time_left``: seconds before its deadline less its margin; None, or
    None answered: no limit), make one attempt each and wait for their answer no longer than the
    time left: botocore's own retries (standard mode: up to 3 attempts, backoff of up to 1 s then
    2 s) and its read timeout (30 s a read) do not know the deadline, so the caller's loops — the
    sinks' ``send_all``, ``PutRecordsWriter``, the engine's retry of a ``TransientError`` — which
    retry only while the backoff fits in the time left, decide. Not bounded: the name lookup
    (``getaddrinfo``) of a call that opens a new connection — urllib3 gives it no timeout and no
    hook (docs/deploy.md says what bounds it, ``RES_OPTIONS``)."""
    token = _call_time_left.set(time_left)
    try:
        yield
    finally:
        _call_time_left.reset(token)


def _time_left_now() -> float | None:
    """The time left of the ``time_bounded`` block the current call is made in (None: none)."""
    time_left = _call_time_left.get()
    return None if time_left is None else time_left()


def time_spent(time_left: Callable[[], float | None] | None) -> bool:
    """Whether a deadline is known and no time is left before it: no call is started then."""
    left = time_left() if time_left is not None else None
    return left is not None and left <= 0


def __getattr__(name: str) -> Any:
    """``PER_REQUEST_READ_TIMEOUT``: whether this botocore takes a read timeout per request
    (``read_timeout`` in the request's context, read by its urllib3 session;
    botocore/botocore#3770): before it, a call inside ``time_bounded`` still waits up to the
    client's read timeout for an answer. Found at the first read, not at import: importing
    ``botocore.httpsession`` (urllib3, http.client, ssl) was 13 % of the example Lambda
    consumer's init instructions (~45-60 ms of CPU on a 2-core VM), which a topology without
    AWS clients (every runner imports this module) need not pay (docs/performance.md)."""
    if name != "PER_REQUEST_READ_TIMEOUT":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from botocore.httpsession import URLLib3Session
    except ImportError:  # pragma: no cover - every botocore has it
        found = False
    else:
        found = hasattr(URLLib3Session, "_get_request_timeout")
    globals()[name] = found
    return found


def _bound_by_the_deadline(made: Any, attempts: int, read_timeout: float) -> None:
    """Make the client's calls inside ``time_bounded`` one attempt each and their reads no
    longer than the time left.

    Retries: botocore's standard retry handler (on ``needs-retry.<service>``, unique id
    ``retry-config-<service>``) is replaced by the same handler behind a gate that, inside
    ``time_bounded`` with a time left, answers None (no retry) without asking it. Other
    ``needs-retry`` handlers still answer: S3's region redirect (a bucket in another region:
    "retry at once, elsewhere") is no retry of botocore's and is kept — a handler answering
    "no retry" ahead of them all swallowed it, and botocore's handler, still called, took its
    retry-quota tokens for retries never made (5 a call; after ~100 throttled calls in a warm
    Lambda the client's calls outside ``time_bounded`` were not retried at all). None is "no
    retry" in every botocore, where an answer of False was "retry at once" before 1.43.3.

    Read timeout: a ``request-created`` handler (each attempt) sets the request's
    ``read_timeout`` to the time left (at most ``read_timeout``, at least ``MIN_READ_TIMEOUT``)
    where botocore reads one per request (``PER_REQUEST_READ_TIMEOUT``); urllib3 applies it to
    each read of the answer, as httpx does the http sink's. The same handler puts the time left
    as the attempt's connect timeout (at most the client's ``CONNECT_TIMEOUT``) in the request's
    context, which ``_ConnectTimeout`` — put in front of the client's urllib3 session's own
    per-request timeout — applies: botocore takes the pool's connect timeout with a per-request
    read timeout, so an endpoint that does not answer the connection kept a call started with
    little time left waiting up to 5 s.
    """
    from botocore.retries import standard

    events = made.meta.events
    name = made.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{name}", f"retry-config-{name}"
    events.unregister(event, unique_id=unique_id)  # botocore's own, made with the client
    botocore_retry = standard.register_retry_handler(made, max_attempts=attempts)
    events.unregister(event, unique_id=unique_id)
    events.register(event, _UnlessBounded(botocore_retry.needs_retry), unique_id=unique_id)
    events.register(
        f"request-created.{name}",
        _ReadTimeout(read_timeout),
        unique_id="squall-read-timeout-of-the-time-left",
    )
    # botocore has no per-request connect timeout: its urllib3 session's own per-request timeout
    # (``_get_request_timeout``, the one that takes ``read_timeout``) is wrapped on this client's
    # session, where the request's context can shorten the connect timeout too.
    session = getattr(getattr(made, "_endpoint", None), "http_session", None)
    get_timeout = getattr(session, "_get_request_timeout", None)
    if get_timeout is not None:
        session._get_request_timeout = _ConnectTimeout(get_timeout)


class _UnlessBounded:
    """botocore's retry handler, asked only outside ``time_bounded`` (or with no time known)."""

    def __init__(self, needs_retry: Callable[..., Any]):
        self._needs_retry = needs_retry

    def __call__(self, **kwargs: Any) -> Any:
        if _time_left_now() is not None:
            return None  # one attempt: the caller's time-aware loop decides
        return self._needs_retry(**kwargs)


class _ReadTimeout:
    """Each attempt inside ``time_bounded`` reads its answer no longer than the time left."""

    def __init__(self, configured: float):
        self._configured = configured

    def __call__(self, request: Any, **_: Any) -> None:
        context = getattr(request, "context", None)
        if context is None:
            return
        left = _time_left_now()
        if left is None:
            context.pop("read_timeout", None)  # the client's
            context.pop(_CONNECT_KEY, None)
        else:
            context["read_timeout"] = max(MIN_READ_TIMEOUT, min(self._configured, left))
            context[_CONNECT_KEY] = max(MIN_READ_TIMEOUT, min(CONNECT_TIMEOUT, left))


#: Where ``_ReadTimeout`` puts an attempt's connect timeout for ``_ConnectTimeout``.
_CONNECT_KEY = "squall_connect_timeout"


class _ConnectTimeout:
    """A client's urllib3 session's per-request timeout, its connect part shortened to the time
    left that ``_ReadTimeout`` put in the request's context (botocore keeps the pool's)."""

    def __init__(self, get_request_timeout: Callable[[Any], Any]):
        self._get = get_request_timeout

    def __call__(self, request: Any) -> Any:
        timeout = self._get(request)
        context = getattr(request, "context", None)
        connect = context.get(_CONNECT_KEY) if isinstance(context, dict) else None
        if timeout is None or connect is None:
            return timeout
        from urllib3 import Timeout

        configured = timeout.connect_timeout
        if isinstance(configured, int | float) and configured < connect:
            connect = configured
        return Timeout(connect=connect, read=timeout.read_timeout)


#: Every client ``client`` made that is still alive (for ``close_connections``).
_clients: weakref.WeakSet[Any] = weakref.WeakSet()


def close_connections() -> int:
    """Close the pooled HTTP connections of every live client ``client`` made; the clients stay
    usable (their next call connects again). For a process about to be snapshotted, or restored
    from a snapshot (Lambda SnapStart): no copy sends on the original's sockets. Returns how
    many clients had their connections closed."""
    closed = 0
    for made in list(_clients):
        # botocore has no public call for this: its endpoint's urllib3 session, whose close()
        # clears the pool managers (a later request opens a new pool).
        session = getattr(getattr(made, "_endpoint", None), "http_session", None)
        close = getattr(session, "close", None)
        if close is not None:
            close()
            closed += 1
    return closed


class Backoff:
    """Jittered exponential backoff ("full jitter"): attempt n waits uniform(0, min(cap, base * 2**n))."""

    def __init__(
        self, base: float = 0.1, cap: float = 10.0, rng: Callable[[], float] = random.random
    ):
        self.base, self.cap, self._rng = base, cap, rng

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); never below base / 2."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return max(self.base / 2, self._rng() * ceiling)


class Sized(Protocol):
    """An item of a batch call: its size in bytes counts against the call's limit."""

    size: int


_S = TypeVar("_S", bound=Sized)


def chunks(items: Sequence[_S], max_items: int, max_bytes: int | None = None) -> Iterator[list[_S]]:
    """Consecutive runs of at most ``max_items`` items and ``max_bytes`` bytes (an item over it goes alone)."""
    chunk: list[_S] = []
    size = 0
    for item in items:
        if chunk and (
            len(chunk) >= max_items or (max_bytes is not None and size + item.size > max_bytes)
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item.size
    if chunk:
        yield chunk
