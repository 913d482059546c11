"""boto3 clients, AWS error classification and jittered backoff for squall's Kinesis and DynamoDB I/O."""

from __future__ import annotations

import os
import random
import re
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
    """Throttling (a 429 answer too), a 5xx answer or a network failure: the same call may
    succeed later — what botocore's standard retry mode retries (but its service-modelled
    retryable errors, none among the services squall writes to)."""
    if isinstance(exc, NETWORK_ERRORS):
        return True
    code = error_code(exc)
    if code is None:
        return False
    if code in THROTTLING_CODES or code in SERVER_CODES:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)  # type: ignore[attr-defined]
    return status >= 500 or status == 429


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


def client(
    service: str,
    *,
    region: str | None,
    endpoint_url: str | None,
    botocore_retries: int = 3,
    read_timeout: float = 30.0,
) -> Any:
    """A boto3 client. ``botocore_retries`` is the total attempts botocore makes per call (1: none)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": botocore_retries},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=20,
    )
    made = boto3.session.Session().client(
        service, region_name=resolve_region(region), endpoint_url=endpoint_url, config=config
    )
    # First among the call's needs-retry handlers (botocore's retry handler is registered on the
    # same service-specific event): a False answer is the event's answer, so botocore sleeps
    # and retries only when this handler leaves the decision to it (None).
    made.meta.events.register_first(
        f"needs-retry.{made.meta.service_model.service_id.hyphenize()}",
        _no_retry_under_a_deadline,
        unique_id="squall-no-retry-under-a-deadline",
    )
    _clients.add(made)
    return made


#: The time left of the AWS calls made inside ``time_bounded`` in this thread (or task).
_call_time_left: ContextVar[Callable[[], float | None] | None] = ContextVar(
    "squall_aws_call_time_left", default=None
)


@contextmanager
def time_bounded(time_left: Callable[[], float | None] | None) -> Iterator[None]:
    """Calls of clients made by ``client`` inside the block, given ``time_left`` (a Lambda
    runner's ``WriteContext.time_left``: seconds before its deadline less its margin; None, or
    None answered: no limit), make one attempt each: botocore's own retries (standard mode: up
    to 3 attempts, backoff of up to 1 s then 2 s) do not know the deadline, so the caller's
    loops — the sinks' ``send_all``, ``PutRecordsWriter``, the engine's retry of a
    ``TransientError`` — which retry only while the backoff fits in the time left, decide."""
    token = _call_time_left.set(time_left)
    try:
        yield
    finally:
        _call_time_left.reset(token)


def _answers_false_as_no_retry() -> bool:
    """Whether botocore reads a ``needs-retry`` handler's False as "no retry" (1.43.3, May 2026,
    ``Endpoint._needs_retry``); before, any answer but None was a delay: False meant retry at once."""
    import botocore

    try:
        major, minor, patch = (int(p) for p in botocore.__version__.split(".")[:3])
    except ValueError:  # a build with another version scheme: assume the old reading
        return False
    return (major, minor, patch) >= (1, 43, 3)


#: Read once: an older botocore keeps its own retries under a deadline (docs/deploy.md).
NO_RETRY_VETO = _answers_false_as_no_retry()


def _no_retry_under_a_deadline(**_: Any) -> bool | None:
    """botocore's ``needs-retry`` event: False (no retry) inside ``time_bounded`` with a time
    left, else None (botocore's retry handler decides, as configured). botocore's handler still
    runs on a vetoed retry (an event calls every handler) and takes its retry-quota tokens for it,
    which come back one per successful call: a client's calls are all inside ``time_bounded`` in
    a Lambda runner, so only its calls outside (a sink's ``open``) could find the quota short.
    Each attempt still waits up to the client's ``read_timeout``: botocore sets it per client,
    not per call."""
    time_left = _call_time_left.get()
    if not NO_RETRY_VETO or time_left is None or time_left() is None:
        return None  # an older botocore would take False for "retry now, no backoff"
    return False


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
