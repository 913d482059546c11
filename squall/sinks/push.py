"""``push`` sink: a push notification per event through Firebase Cloud Messaging's HTTP v1 API.

Each event becomes one ``projects/{project}/messages:send`` request (FCM v1 has no batch call):
the device token from a payload path, title/body/data from templates whose ``{dotted.path}``
placeholders are filled from the event. An OAuth2 access token for the service account is
obtained with google-auth and cached until it expires (google-auth refreshes it a few minutes
early); a 401 answer refusing the token (not ``THIRD_PARTY_AUTH_ERROR``) refreshes it once.
Requests run on ``concurrency`` threads under a rate limit. Answers (FCM v1 error codes):

- ``UNREGISTERED`` (404), and ``INVALID_ARGUMENT`` (400) when FCM says it is the token: the token
  is dead. The event counts as written (there is nothing more to deliver) and the token is
  reported in ``PushWriteResult.dead_tokens``; with ``dead_tokens: {stream: …}`` the sink also
  puts an ``unsubscribe`` event per dead token into that Kinesis stream before the batch is
  acknowledged, so the subscription bolt reading the stream stops targeting the token; with
  ``unsubscribe: {state: <subscription bolt id>}`` the sink returns one ``unsubscribe`` event per
  dead token in ``WriteResult.feedback`` instead (or as well), and the engine stages it in that
  bolt and commits it with the batch's state — no round trip through a stream.
- ``INVALID_ARGUMENT`` otherwise: the record's failure (dead-lettered with FCM's message), the
  token kept. FCM answers INVALID_ARGUMENT for an invalid registration token *and* for an invalid
  message (too big, a reserved data key, a bad TTL or package name, a data value of the wrong
  type…); unsubscribing on every one would let a bad template unsubscribe every device of a
  campaign. The token is dead only when FCM names it: a ``google.rpc.BadRequest`` detail whose
  ``fieldViolations`` name the field ``message.token``, or — without field violations, as in the
  example of FCM's error-codes page (firebase.google.com/docs/cloud-messaging/error-codes) — its
  documented message "The registration token is not a valid FCM registration token". A BadRequest naming other fields only, or an answer with no
  details and another message (an oversized message gets the bare "Request contains an invalid
  argument."), keeps the token.
- ``QUOTA_EXCEEDED`` (429), ``UNAVAILABLE`` (503), ``INTERNAL`` (500): retried with backoff,
  waiting at least ``Retry-After``; still failing after ``max_attempts``: the record fails.
- ``UNAUTHENTICATED`` (401, still after the refresh) and ``PERMISSION_DENIED`` (403 without an
  FCM error code: the FCM API disabled in the project, a service account without the right, a
  wrong ``project_id``), or a bare 401/403 (a proxy's): the sink's configuration, the same for
  every message — the write stops (the messages not sent yet are not sent) and the batch fails
  (``SinkError``), nothing dead-lettered.
- ``SENDER_ID_MISMATCH`` (403: the token is another project's), ``THIRD_PARTY_AUTH_ERROR``
  (401: the APNs or web push credentials, for that platform's tokens only) and other 4xx: the
  record's failure.

A message whose payload is over FCM's 4096 bytes by the least FCM counts (the UTF-8 bytes of the
``data`` keys and values, the title and the body) is rejected in ``prepare`` with its size: FCM
answers it with a bare "Request contains an invalid argument.", which names nothing.

A failure's reason is ``FCM <status> <code>: <FCM's message>`` plus the fields a BadRequest
names; the device token, should FCM's message quote it, is replaced by ``<token>``.

Size (~730 lines): one sink speaking one protocol — the message templates, the OAuth2 token
cache, the answer codes (which INVALID_ARGUMENT is a dead token) and the two outlets for dead
tokens (stream, state feedback) read together; the config models are a third of it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from squall import aws, exact_json, paths
from squall.component import ComponentConfig, ComponentContext
from squall.errors import SinkError, TransientError
from squall.event import Event, Failure
from squall.kinesis.putrecords import Entry, PutRecordsWriter
from squall.redact import mask_request_urls
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.sinks.batchio import (
    NO_TIME_LEFT,
    ConcurrentRequests,
    Item,
    Reject,
    Retry,
    retry_after_seconds,
    send_all,
    time_left_of,
    truncate,
    write_result,
)
from squall.sinks.ratelimit import RateLimiter
from squall.times import Seconds

log = logging.getLogger("squall.sinks.push")

FCM_ENDPOINT = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: The field a ``google.rpc.BadRequest`` names for an invalid registration token.
TOKEN_FIELD = "message.token"
#: FCM's documented message for an invalid registration token (compared without case).
INVALID_TOKEN_MESSAGE = "the registration token is not a valid fcm registration token"
#: FCM's payload limit, in bytes (firebase.google.com/docs/cloud-messaging: "a payload of up to
#: 4096 bytes"). FCM counts more than the keys and values (it refuses a one-key data payload of
#: some 4050 bytes of key and value): over the limit by what the sink counts is refused for sure.
MAX_PAYLOAD = 4096
#: Answers that say the sink's credentials or project are wrong (the google.rpc status of a 401 or
#: 403 without an FCM error code, or a bare 401/403), not the message's: every send gets them.
MISCONFIGURED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "HTTP_401", "HTTP_403"})
#: The codes of a 401 that refuses the access token itself (refreshed once, then sent again); a
#: 401 ``THIRD_PARTY_AUTH_ERROR`` refuses the APNs or web push credentials for the message's
#: platform: refreshing the token and sending again got the same answer, for every such message.
BEARER_REFUSED = frozenset({"UNAUTHENTICATED", "HTTP_401"})
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_.]+)\}")


class Template:
    """A string with ``{dotted.path}`` placeholders (``{{``/``}}`` for literal braces), compiled once."""

    def __init__(self, text: str):
        self.text = text
        self.parts: list[str | tuple[str, Callable[[Event], Any]]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            self.parts.append(text[pos : m.start()])
            if m.group(1) is None:
                self.parts.append(m.group()[0])
            else:
                paths.validate_path(m.group(1))
                self.parts.append((m.group(1), paths.getter(m.group(1))))
            pos = m.end()
        self.parts.append(text[pos:])

    def placeholders(self) -> list[str]:
        """The placeholders' paths, in order."""
        return [part[0] for part in self.parts if isinstance(part, tuple)]

    def render(self, ev: Event) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            path, get = part
            value = get(ev)
            if value is paths.MISSING or value is None:
                raise ValueError(f"template field '{path}' is missing")
            if isinstance(value, str):
                out.append(value)
                continue
            try:  # an integer beyond 64 bits as its digits
                out.append(exact_json.dumps(value).decode())
            except TypeError as exc:
                raise ValueError(f"template field '{path}' cannot be serialized: {exc}") from None
        return "".join(out)


class DeadTokenStream(BaseModel):
    """Where the push sink writes an unsubscribe event for each dead token."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    stream: aws.StreamName = Field(
        description="Kinesis stream name or ARN, usually the one the subscription bolt reads."
    )
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: from the ARN, AWS_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="Kinesis endpoint (local testing).")
    event_type: str = Field(
        "unsubscribe", description="Value of the type field of the events written."
    )
    type_field: str = Field(
        "event_type", description="Key of the event type in the events written."
    )
    token_field: str = Field("device_token", description="Key of the token in the events written.")
    id_field: str = Field(
        "message_id",
        description="Key of the event's id (derived from the event and token, "
        "so a replay writes the same id).",
    )


class UnsubscribeFeedback(BaseModel):
    """The unsubscribe events the push sink hands to the subscription bolt for dead tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    state: str = Field(
        description="Id of the subscription bolt that keeps the tokens' state (a stateful bolt of "
        "this topology)."
    )
    event_type: str = Field(
        "unsubscribe",
        description="Event type of the events (an unsubscribe in the bolt's actions).",
    )
    type_field: paths.DottedPath = Field(
        "event_type", description="Where the event type goes: the bolt's `type_field`."
    )
    token_field: paths.DottedPath = Field(
        "device_token", description="Where the dead token goes: the bolt's `key`."
    )
    time_field: paths.DottedPath | None = Field(
        "timestamp",
        description="The bolt's `time_field`: the event gets the pushed event's own time from this "
        "path (else its arrival time), so a later subscribe of the token still wins. Null: the bolt "
        "uses arrival times.",
    )


class PushSinkConfig(ComponentConfig):
    project_id: str = Field(
        description="Firebase project id (`projects/{project_id}/messages:send`)."
    )
    credentials: SecretStr = Field(
        description="Service-account key: a JSON file path (relative to the topology) or the JSON itself "
        "(e.g. `${FCM_SERVICE_ACCOUNT}`), not base64-encoded (decode a CI secret kept so). Never "
        "logged."
    )
    token: paths.DottedPath = Field(
        "device_token", description="Dotted path of the device registration token."
    )
    title: str | None = Field(
        None, description="Notification title template: text with `{dotted.path}` placeholders."
    )
    body: str | None = Field(None, description="Notification body template.")
    data: dict[str, str] = Field(
        default_factory=dict, description="Data payload: key → template (values are strings)."
    )
    message: dict[str, Any] = Field(
        default_factory=dict,
        description="More fields of the v1 message as they are (android, apns, webpush, fcm_options).",
    )
    endpoint: str = Field(FCM_ENDPOINT, description="FCM base URL; a local stand-in for testing.")
    rate_limit: float | None = Field(
        None,
        gt=0,
        description=(
            "Sends per second on average (all threads together), plus a burst of one second's "
            "worth when idle: up to twice this within a second (for a per-second quota, half)."
        ),
    )
    concurrency: int = Field(8, ge=1, le=256, description="Sends in flight at once.")
    timeout: Seconds = Field(
        10.0,
        gt=0,
        description="Seconds to wait for FCM's answer, and for the OAuth2 token endpoint's.",
    )
    max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per message on throttling and 5xx answers."
    )
    max_retry_after: Seconds = Field(
        60.0, ge=0, description="Longest Retry-After honoured, in seconds."
    )
    dead_tokens: DeadTokenStream | None = Field(
        None,
        description="Write an unsubscribe event per dead token to this Kinesis stream before the batch is "
        "acknowledged ({stream, region, endpoint_url, event_type, type_field, token_field, "
        "id_field}); the subscription bolt reading that stream then stops targeting it.",
    )
    unsubscribe: UnsubscribeFeedback | None = Field(
        None,
        description="Unsubscribe each dead token in the subscription bolt `state` of this topology, "
        "committed with the batch's state ({state, event_type, type_field, token_field, "
        "time_field}).",
    )

    @model_validator(mode="after")
    def _templates(self) -> PushSinkConfig:
        if self.title is None and self.body is None and not self.data:
            raise ValueError("give at least one of title, body or data")
        for text in [self.title, self.body, *self.data.values()]:
            if text is not None:
                Template(text)
        if "token" in self.message:
            raise ValueError("the token comes from the `token` path, not from `message`")
        return self


@dataclass(frozen=True)
class DeadToken:
    """A registration token FCM says is no longer valid, and the event that targeted it."""

    token: str
    code: str
    event: Event


@dataclass
class PushWriteResult(WriteResult):
    """A ``WriteResult`` that also names the dead tokens found while sending."""

    dead_tokens: list[DeadToken] = field(default_factory=list)


@dataclass(frozen=True)
class _TokenAnswer:
    """An httpx answer as google-auth's transport ``Response`` (status, headers, data)."""

    status: int
    headers: Any
    data: bytes


class HttpxTransport:
    """google-auth's transport ``Request`` over the sink's httpx client, so the token endpoint is
    reached as the sends are: through ``HTTPS_PROXY``/``HTTP_PROXY`` (not for ``NO_PROXY``
    hosts), with the same certificate checks (``SSL_CERT_FILE``). google-auth's urllib3
    transport ignores the proxy variables: behind an egress proxy the sends went through it and
    every token refresh failed (``OAuth2 token endpoint unreachable``), so nothing was sent."""

    def __init__(self, client: Any, timeout: float):
        self.client = client
        self.timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _TokenAnswer:
        import httpx
        from google.auth.exceptions import TransportError

        try:
            resp = self.client.request(
                method,
                url,
                content=body,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            error = TransportError(type(exc).__name__)  # no URL: the key's token_uri
            error.kind = type(exc).__name__  # type: ignore[attr-defined]  # ConnectError, ProxyError…
            raise error from None
        return _TokenAnswer(resp.status_code, resp.headers, resp.content)


class AccessTokens:
    """OAuth2 access tokens for a service account (google-auth), cached until they expire.
    ``transport``: google-auth's ``Request`` (the sink's ``HttpxTransport``)."""

    def __init__(self, info: dict[str, Any], transport: Callable[..., Any]):
        from google.oauth2 import service_account

        self._creds = service_account.Credentials.from_service_account_info(
            info, scopes=[FCM_SCOPE]
        )
        self._request = transport
        self._lock = threading.Lock()
        self.refreshes = 0

    def get(
        self,
        *,
        stale: str | None = None,
        timeout: Callable[[], float | None] | None = None,
        deadline: bool = False,
    ) -> str:
        """A valid token; ``stale``: the token a 401 refused, refreshed unless another thread already did.
        ``timeout``: each request of a refresh waits at most what it answers then (the sink's
        ``timeout`` capped at the time left before the runner's deadline); None from it: no time
        is left, the request is not made (``TransientError``): without it a token endpoint that
        did not answer held the sends until it did. ``deadline`` (the
        runner has one): a throttled or failing token endpoint is not retried by google-auth,
        whose backoff (1 s, then 2 s) knows nothing of the time left — ``TransientError`` now,
        and the engine's retry, which does, decides."""
        from google.auth.exceptions import RefreshError, TransportError

        request = self._request
        if timeout is not None:

            def request(*args: Any, **kwargs: Any) -> Any:  # google-auth's retries ask again
                seconds = timeout()
                if seconds is None:
                    raise TransientError(f"OAuth2 token not refreshed: {NO_TIME_LEFT}")
                resp = self._request(*args, **{**kwargs, "timeout": seconds})
                if deadline and (resp.status >= 500 or resp.status in (408, 429)):
                    raise TransientError(f"OAuth2 token endpoint answered {resp.status}")
                return resp

        with self._lock:
            if self._creds.valid and (stale is None or self._creds.token != stale):
                return self._creds.token
            try:
                self._creds.refresh(request)
            except TransportError as exc:
                raise TransientError(
                    f"OAuth2 token endpoint unreachable: {getattr(exc, 'kind', type(exc).__name__)}"
                ) from None
            except RefreshError as exc:
                retryable = getattr(exc, "retryable", False)
                msg = f"OAuth2 token refresh failed: {truncate(str(exc), 200)}"
                raise (TransientError(msg) if retryable else SinkError(msg)) from None
            self.refreshes += 1
            return self._creds.token


#: The longest `credentials` value of base64's characters only (no '.', no space) an
#: unreadable-file error quotes as a path: a longer one (a service-account key is 2,300
#: characters and more) may be the key itself, encoded.
MAX_SHOWN_PATH = 255
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=")


def _may_be_a_key(text: str) -> bool:
    """Whether a ``credentials`` value that names no readable file may be the key in another
    form (base64, as CI secrets keep it), not a file name to quote: it spans lines (``base64``
    wraps at 76), decodes from base64 to a JSON object, or is longer than ``MAX_SHOWN_PATH`` in
    base64's characters alone. A path with spaces (``/Users/me/My Keys/key.json``) or longer
    than 255 characters (a deep CI workspace's) is still named."""
    import base64
    import binascii

    if "\n" in text or "\r" in text:
        return True
    packed = "".join(text.split())
    if not packed or not set(packed) <= _BASE64_CHARS:
        return False
    if len(packed) > MAX_SHOWN_PATH:
        return True
    try:
        decoded = base64.b64decode(
            packed.replace("-", "+").replace("_", "/") + "=" * (-len(packed) % 4)
        )
    except (binascii.Error, ValueError):
        return False
    return decoded.lstrip().startswith(b"{")


def _load_service_account(value: str, context: ComponentContext) -> dict[str, Any]:
    text = value.strip()
    if not text.startswith("{"):
        path = context.path(text)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            if _may_be_a_key(text):
                # No key file is named so: the key in another form (base64, as CI secrets keep
                # it), whose whole text the message quoted as the file's name.
                raise SinkError(
                    f"the service-account key is neither its JSON (which begins with '{{') nor "
                    f"the path of a readable file (a value of {len(text):,} characters, not "
                    "shown: a key kept base64-encoded must be decoded into the variable)"
                ) from None
            raise SinkError(
                f"cannot read the service-account file {path}: {exc.strerror}"
            ) from None
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SinkError(
            "the service-account key is not valid JSON"
        ) from None  # never echo a secret
    missing = [k for k in ("client_email", "private_key", "token_uri") if k not in info]
    if missing:
        raise SinkError(f"the service-account key lacks {', '.join(missing)}")
    return info


@dataclass(frozen=True)
class FcmAnswer:
    """An FCM error answer: its code (``details[].errorCode``, else the google.rpc status), its
    message and the fields a ``google.rpc.BadRequest`` detail names (``fieldViolations[].field``)."""

    code: str
    message: str
    fields: tuple[str, ...] = ()

    def dead_token(self) -> bool:
        """Whether the answer says the registration token is dead (see the module docstring)."""
        if self.code == "UNREGISTERED":
            return True
        if self.code != "INVALID_ARGUMENT":
            return False
        if self.fields:
            return TOKEN_FIELD in self.fields
        return self.message.strip().rstrip(".").lower() == INVALID_TOKEN_MESSAGE

    def reason(self, status: int, token: str) -> str:
        """The record's failure reason: FCM's message and the fields named, never the token."""
        text = truncate(self.message.replace(token, "<token>") if token else self.message, 200)
        named = [f for f in self.fields if f not in text]
        if named:
            text = f"{text} (field {', '.join(named)})".lstrip()
        return f"FCM {status} {self.code}: {text}".rstrip(": ")


def fcm_error(status: int, text: str) -> FcmAnswer:
    """The ``FcmAnswer`` of an error answer's body (``HTTP_<status>`` and the text when not JSON)."""
    try:
        err = orjson.loads(text).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        return FcmAnswer(f"HTTP_{status}", text)
    if not isinstance(err, dict):
        return FcmAnswer(f"HTTP_{status}", text)
    code = err.get("status") or f"HTTP_{status}"
    fields: list[str] = []
    for d in err.get("details") or []:
        if not isinstance(d, dict):
            continue
        if d.get("errorCode"):
            code = d["errorCode"]
        for v in d.get("fieldViolations") or []:
            if isinstance(v, dict) and isinstance(v.get("field"), str):
                fields.append(v["field"])
    return FcmAnswer(str(code), str(err.get("message", "")), tuple(fields))


class PushSink(ConcurrentRequests, Sink):
    """Send a push notification per event with FCM HTTP v1; dead tokens are reported for unsubscribing."""

    Config = PushSinkConfig
    summary = "Send push notifications with Firebase Cloud Messaging HTTP v1 (templates from payload paths)."

    @classmethod
    def packages(cls, config: PushSinkConfig) -> frozenset[str]:
        """httpx and google-auth (the ``push`` extra's), imported at open."""
        return frozenset({"httpx", "google.auth"})

    @classmethod
    def payload_reads(cls, config: PushSinkConfig) -> list[tuple[tuple[str | int, ...], str]]:
        """The token's path and each template's placeholders. Not ``unsubscribe.time_field``:
        an event without it takes its arrival time (and the path is the subscription bolt's)."""
        reads: list[tuple[tuple[str | int, ...], str]] = [(("token",), config.token)]
        templates: list[tuple[tuple[str | int, ...], str | None]] = [
            (("title",), config.title),
            (("body",), config.body),
            *((("data", key), text) for key, text in config.data.items()),
        ]
        for option, text in templates:
            if text is not None:
                reads.extend(
                    (option, path) for path in dict.fromkeys(Template(text).placeholders())
                )
        return reads

    def __init__(self, config: PushSinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self._token = paths.getter(config.token)
        self._title = Template(config.title) if config.title is not None else None
        self._body = Template(config.body) if config.body is not None else None
        self._data = {k: Template(v) for k, v in config.data.items()}
        self.url = f"{config.endpoint.rstrip('/')}/v1/projects/{config.project_id}/messages:send"
        self.tokens: AccessTokens | None = None
        self.client: Any = None
        self.pool: ThreadPoolExecutor | None = None
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        self.backoff = aws.Backoff(base=0.2, cap=10.0)
        self.sleep: Callable[[float], None] = time.sleep
        self.sent = 0
        #: The misconfiguration an answer revealed in this write: the messages not sent yet are
        #: not sent (they would get the same answer).
        self._broken: str | None = None
        self.dead_tokens_seen = 0
        self.unsubscribe_writer: PutRecordsWriter | None = None
        feedback = config.unsubscribe
        self._feedback_time = (
            paths.getter(feedback.time_field) if feedback and feedback.time_field else None
        )
        self._feedback_set = (
            [
                paths.setter(feedback.type_field),
                paths.setter(feedback.token_field),
                paths.setter(feedback.time_field) if feedback.time_field else None,
            ]
            if feedback
            else []
        )

    def open(self, resources: Any = None) -> None:
        import httpx

        cfg = self.config
        if self.client is None:
            mask_request_urls()  # httpx logs each request's URL: a webhook's path is its secret
            self.client = httpx.Client(
                timeout=cfg.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=cfg.concurrency),
            )
        if self.tokens is None:
            self.tokens = AccessTokens(
                _load_service_account(cfg.credentials.get_secret_value(), self.context),
                HttpxTransport(self.client, cfg.timeout),
            )
        if self.pool is None:
            self.pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=f"squall-{self.id}")
        if cfg.dead_tokens is not None and self.unsubscribe_writer is None:
            ref = aws.StreamRef.parse(cfg.dead_tokens.stream)
            client = aws.client(
                "kinesis",
                region=aws.resolve_region(cfg.dead_tokens.region, ref.region),
                endpoint_url=cfg.dead_tokens.endpoint_url,
            )
            self.unsubscribe_writer = PutRecordsWriter(client, ref, sleep=lambda s: self.sleep(s))

    def prepare(self, events: list[Event]) -> Prepared:
        return Prepared.each(
            events, self.id, lambda ev: Item([ev], self._message(ev), key=ev.event_id)
        )

    def _message(self, ev: Event) -> tuple[str, bytes]:
        token = self._token(ev)
        if not isinstance(token, str) or not token:
            raise ValueError(f"device token '{self.config.token}' is missing or not text")
        message: dict[str, Any] = {**self.config.message, "token": token}
        notification = {}
        if self._title is not None:
            notification["title"] = self._title.render(ev)
        if self._body is not None:
            notification["body"] = self._body.render(ev)
        if notification:
            message["notification"] = notification
        if self._data:
            message["data"] = {k: t.render(ev) for k, t in self._data.items()}
        size = _payload_bytes(notification, message.get("data"))
        if size > MAX_PAYLOAD:
            raise ValueError(
                f"FCM payload of at least {size} bytes (title, body, data keys and values) is "
                f"over FCM's {MAX_PAYLOAD}-byte limit"
            )
        return token, orjson.dumps({"message": message})

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if self.pool is None:
            raise SinkError(f"{self.id}: open() the sink first")
        # Dead tokens live on the batch: when a call raises and the engine retries write_batch, the
        # sends already answered are skipped, and the tokens they found are still reported.
        dead: list[DeadToken] | None = getattr(prepared, "dead_tokens", None)
        if dead is None:
            dead = prepared.dead_tokens = []  # type: ignore[attr-defined]
        self._dead = dead
        self._broken = None
        self.took = False  # an outage until the service takes a request of this write
        self.time_left = time_left_of(ctx)  # the requests' timeouts and the retries fit in it
        outcome = send_all(
            f"{self.id}: FCM send",
            iter([prepared.payload or []]),
            self._send,
            max_attempts=self.config.max_attempts,
            backoff=self.backoff,
            sleep=self.sleep,
            time_left=self.time_left,  # no retry past the runner's deadline
        )
        base = write_result(self.id, outcome)
        if not dead:
            return base
        self.dead_tokens_seen += len(dead)
        known = (
            {f.name: getattr(base, f.name) for f in fields(WriteResult)} if base is not None else {}
        )
        result = PushWriteResult(**known, dead_tokens=list(dead))
        if self.unsubscribe_writer is not None:
            result.failed = result.failed + self._emit_unsubscribes(dead)
        if self.config.unsubscribe is not None:
            failed = {id(ev) for ev in result.failed}  # sent again: their feedback comes then
            result.feedback = [self._feedback(d) for d in dead if id(d.event) not in failed]
        return result

    def feedback_target(self) -> str | None:
        return self.config.unsubscribe.state if self.config.unsubscribe is not None else None

    def _feedback(self, d: DeadToken) -> Event:
        """An unsubscribe of the dead token for the subscription bolt: the pushed event's ``meta``
        and ``origin`` (committed only when its record is), its time, a replay-stable id."""
        cfg = self.config.unsubscribe
        assert cfg is not None
        ev = Event(b"", d.event.meta, _unsubscribe_id(d), d.event.origin, {})
        set_type, set_token, set_time = self._feedback_set
        set_type(ev, cfg.event_type)
        set_token(ev, d.token)
        if set_time is not None and self._feedback_time is not None:
            when = self._feedback_time(d.event)
            if (when is paths.MISSING or when is None) and d.event.meta.arrival_time is not None:
                arrival = d.event.meta.arrival_time
                when = (arrival if arrival.tzinfo else arrival.replace(tzinfo=UTC)).isoformat()
            if when is not paths.MISSING and when is not None:
                set_time(ev, when)
        ev.value["reason"] = f"fcm:{d.code}"
        ev.raw = exact_json.dumps(ev.value)  # the event's time may be a wide integer
        return ev

    def _emit_unsubscribes(self, dead: list[DeadToken]) -> list[Event]:
        """Put one unsubscribe event per dead token; the events whose put failed fail (sent again later)."""
        cfg = self.config.dead_tokens
        assert cfg is not None and self.unsubscribe_writer is not None
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        entries = []
        for d in dead:
            doc = {
                cfg.id_field: _unsubscribe_id(d),
                cfg.type_field: cfg.event_type,
                cfg.token_field: d.token,
                "timestamp": now,
                "reason": f"fcm:{d.code}",
                "source_event_id": d.event.event_id,
            }
            entries.append(Entry(orjson.dumps(doc), d.token[:256], None, [d.event]))
        try:
            outcome = self.unsubscribe_writer.put(entries, self.time_left)
        except SinkError as exc:
            raise SinkError(f"{self.id}: dead-token stream: {exc}") from exc
        failed = []
        for entry, reason in outcome.failed:
            for ev in entry.items:
                ev.failure = Failure(self.id, f"unsubscribe of a dead token not written: {reason}")
                failed.append(ev)
        return failed

    def _request(self, item: Item) -> Retry | Reject | None:
        import httpx

        assert self.tokens is not None
        token, body = item.body
        if self._broken is not None:  # another send's answer says the sink is misconfigured
            raise SinkError(self._broken)
        if self._timeout(self.config.timeout) is None:  # no time left: no token taken, no refresh
            return Retry(f"not sent: {NO_TIME_LEFT}")
        held = self._held_back(self.limiter)  # a rate limit's wait past the deadline
        if held is not None:
            return held
        bounded = partial(self._timeout, self.config.timeout)  # a refresh fits in the time left
        deadline = self.time_left is not None and self.time_left() is not None
        access = self.tokens.get(timeout=bounded, deadline=deadline)
        for attempt in range(2):  # a 401 refusing the access token refreshes it once
            timeout = bounded()
            if timeout is None:
                return Retry(f"not sent: {NO_TIME_LEFT}")
            try:
                resp = self.client.post(
                    self.url,
                    content=body,
                    headers={
                        "Authorization": f"Bearer {access}",
                        "Content-Type": "application/json; charset=UTF-8",
                    },
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                return Retry(
                    f"{type(exc).__name__}: {exc}",
                    unreachable=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
                )
            if resp.status_code != 401 or attempt == 1:
                break
            if fcm_error(401, resp.text).code not in BEARER_REFUSED:
                break  # THIRD_PARTY_AUTH_ERROR: the platform's credentials, not the token
            access = self.tokens.get(stale=access, timeout=bounded, deadline=deadline)
        status = resp.status_code
        if 200 <= status < 300:
            self.sent += 1
            return None
        answer = fcm_error(status, resp.text)
        if status in (401, 403) and answer.code in MISCONFIGURED:
            self._broken = (
                f"{self.id}: {answer.reason(status, token)} (check `credentials`, `project_id` "
                "and that the Firebase Cloud Messaging API is enabled for the project; every "
                "message would get it)"
            )
            raise SinkError(self._broken)
        if answer.dead_token():
            self._dead.append(DeadToken(token, answer.code, item.events[0]))
            log.info("%s: token of event %s is dead (%s)", self.id, item.key, answer.code)
            return None  # nothing more to deliver; the token is reported for unsubscribing
        reason = answer.reason(status, token)
        if status == 429 or status >= 500:
            after = retry_after_seconds(resp.headers.get("Retry-After"))
            return Retry(reason, None if after is None else min(after, self.config.max_retry_after))
        return Reject(reason)


def _payload_bytes(notification: dict[str, str], data: Any) -> int:
    """The least FCM counts of a message's payload: the UTF-8 bytes of the title, the body and
    the ``data`` keys and values that are text. ``data`` may come as it is from the ``message``
    option (``message: {data: {n: 1}}``): what is not text there is FCM's to refuse (a data value
    must be a string), not a crash of ``prepare`` for every event."""
    size = sum(len(v.encode()) for v in notification.values())
    if isinstance(data, dict):
        size += sum(len(k.encode()) for k in data if isinstance(k, str))
        size += sum(len(v.encode()) for v in data.values() if isinstance(v, str))
    return size


def _unsubscribe_id(d: DeadToken) -> str:
    """The id of a dead token's unsubscribe: from the pushed event and the token (replay-stable)."""
    return hashlib.blake2b(f"{d.event.event_id}\x1f{d.token}".encode(), digest_size=16).hexdigest()
