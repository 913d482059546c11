"""The push sink against a local server speaking FCM HTTP v1 send and the OAuth2 token endpoint.

The service account is a real RSA key made here; the token endpoint checks the signed JWT
assertion google-auth sends, and the send endpoint checks the bearer token it handed out.
"""

from __future__ import annotations

import json
import threading
import types
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from squall.component import ComponentContext
from squall.errors import SinkError, TransientError
from squall.event import Event
from squall.sinks.base import WriteContext
from squall.sinks.push import PushSink, PushSinkConfig, PushWriteResult
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.conftest import EXAMPLES
from tests.moto_standin import FlakyClient
from tests.ports import free_port
from tests.sinks.local_http import LocalHttp, Request


def invalid_argument(message: str, *, fcm_error: bool = False, fields: dict | None = None) -> str:
    """A 400 INVALID_ARGUMENT body of FCM v1: an ``FcmError`` detail and/or a ``BadRequest`` one
    whose ``fieldViolations`` name ``fields`` (field → description)."""
    details: list[dict] = []
    if fcm_error:
        details.append(
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "INVALID_ARGUMENT",
            }
        )
    if fields:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": f, "description": d} for f, d in fields.items()],
            }
        )
    error = {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    return json.dumps({"error": {**error, "details": details} if details else error})


#: FCM's INVALID_ARGUMENT answers, by device token.
INVALID_ARGUMENT = {
    # FCM's error-codes page, example 2: an invalid registration token (an FcmError detail only)
    "tok-invalid": invalid_argument(
        "The registration token is not a valid FCM registration token", fcm_error=True
    ),
    # a malformed token as FCM answers it too: a BadRequest naming message.token
    "tok-malformed": invalid_argument(
        "Request contains an invalid argument.",
        fcm_error=True,
        fields={"message.token": "Invalid registration token"},
    ),
    # the same page, example 1: an invalid payload (a data value that is not a string)
    "tok-payload": invalid_argument(
        "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
        fields={
            "message.data[0].value": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
        },
    ),
    # a message too big: no details at all
    "tok-toobig": invalid_argument("Request contains an invalid argument."),
    # a BadRequest naming another field, whose message quotes the token
    "tok-ttl": invalid_argument(
        "Invalid TTL for the message to tok-ttl", fields={"message.android.ttl": "Invalid TTL"}
    ),
}


class FakeFcm:
    """FCM v1 ``messages:send`` and Google's OAuth2 token endpoint, answering by device token.

    ``tok-dead``: 404 UNREGISTERED; ``tok-mismatch``: 403 SENDER_ID_MISMATCH; ``tok-quota``: 429
    QUOTA_EXCEEDED (Retry-After 3) on its first send; ``tok-down``: 503 UNAVAILABLE always;
    the 400 INVALID_ARGUMENT answers of ``INVALID_ARGUMENT`` for the tokens named there.
    ``reject_token``: an access token answered with 401; ``hold_token``: an event the token
    endpoint waits for before it answers (a stalled endpoint); ``token_failures``: how many
    token requests are answered 503 first.
    """

    def __init__(self, public_pem: bytes, expires_in: int = 3600):
        self.public_pem = public_pem
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.sent: list[dict] = []
        self.reject_token: str | None = None
        self.hold_token: threading.Event | None = None
        self.token_failures = 0
        self.tries: dict[str, int] = {}
        self.lock = threading.Lock()
        self.http = LocalHttp(self.answer)

    def answer(self, req: Request):
        if req.path == "/token":
            if self.hold_token is not None:
                self.hold_token.wait(60)
            with self.lock:
                if self.token_failures:
                    self.token_failures -= 1
                    return 503, {"Content-Type": "application/json"}, '{"error": "unavailable"}'
            form = parse_qs(req.body.decode())
            claims = jwt.decode(
                form["assertion"][0],
                certs=self.public_pem,
                audience="https://oauth2.googleapis.com/token",
            )  # google-auth signs for the real endpoint
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
            with self.lock:
                token = f"at-{len(self.issued) + 1}"
                self.issued.append(token)
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps(
                    {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
                ),
            )
        assert req.path == "/v1/projects/demo/messages:send", req.path
        bearer = req.headers.get("authorization", "")
        if (
            bearer.removeprefix("Bearer ") not in self.issued
            or bearer == f"Bearer {self.reject_token}"
        ):
            return (
                401,
                {},
                json.dumps(
                    {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "expired"}}
                ),
            )
        msg = json.loads(req.body)["message"]
        tok = msg["token"]
        with self.lock:
            self.tries[tok] = self.tries.get(tok, 0) + 1
            n = self.tries[tok]
        errors = {
            "tok-dead": (404, "NOT_FOUND", "UNREGISTERED"),
            "tok-mismatch": (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            "tok-down": (503, "UNAVAILABLE", "UNAVAILABLE"),
        }
        if tok in INVALID_ARGUMENT:
            return 400, {}, INVALID_ARGUMENT[tok]
        if tok == "tok-quota" and n == 1:
            errors[tok] = (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
        if tok in errors:
            status, rpc, code = errors[tok]
            details = (
                [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": code,
                    }
                ]
                if code
                else []
            )
            headers = {"Retry-After": "3"} if status == 429 else {}
            return (
                status,
                headers,
                json.dumps(
                    {
                        "error": {
                            "code": status,
                            "message": f"{rpc} for {tok}",
                            "status": rpc,
                            "details": details,
                        }
                    }
                ),
            )
        with self.lock:
            self.sent.append(msg)
        return 200, {}, json.dumps({"name": f"projects/demo/messages/{len(self.sent)}"})


@pytest.fixture(scope="module")
def key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def fcm(key_pair):
    server = FakeFcm(key_pair[1])
    yield server
    server.http.close()


def service_account(fcm: FakeFcm, private_pem: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "demo",
            "private_key_id": "k1",
            "private_key": private_pem,
            "client_email": "squall@demo.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{fcm.http.url}/token",
        }
    )


def make_sink(fcm: FakeFcm, key_pair, **cfg) -> PushSink:
    base = {
        "project_id": "demo",
        "credentials": service_account(fcm, key_pair[0]),
        "endpoint": fcm.http.url,
        "title": "{campaign.title}",
        "body": "Hi {user.name}, {campaign.body}",
        "data": {"id": "{campaign.id}"},
    }
    sink = PushSink(
        PushSinkConfig(id="push", type="push", **{**base, **cfg}), ComponentContext("t")
    )
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()
    return sink


def events(tokens: list[str], **extra) -> list[Event]:
    payloads = [
        {
            "device_token": t,
            "user": {"name": f"u{i}"},
            "campaign": {"id": 7, "title": "Sale", "body": "50% off"},
            **extra,
        }
        for i, t in enumerate(tokens)
    ]
    return [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]


def test_push_sends_a_templated_v1_message_per_event_with_one_cached_access_token(fcm, key_pair):
    sink = make_sink(fcm, key_pair, message={"android": {"priority": "high"}})
    for _ in range(2):
        assert sink.write_batch(sink.prepare(events(["tok-1", "tok-2"])), None) is None
    sink.close()
    assert fcm.issued == ["at-1"]  # one token for both batches: cached until it expires
    assert sorted(m["token"] for m in fcm.sent) == ["tok-1", "tok-1", "tok-2", "tok-2"]
    first = next(m for m in fcm.sent if m["token"] == "tok-2")
    assert first == {
        "token": "tok-2",
        "android": {"priority": "high"},
        "notification": {"title": "Sale", "body": "Hi u1, 50% off"},
        "data": {"id": "7"},
    }


def test_push_refreshes_an_expired_access_token(fcm, key_pair):
    fcm.expires_in = 60  # google-auth refreshes tokens that expire within a few minutes
    sink = make_sink(fcm, key_pair)
    sink.write_batch(sink.prepare(events(["tok-1"])), None)
    sink.write_batch(sink.prepare(events(["tok-1"])), None)
    sink.close()
    assert fcm.issued == ["at-1", "at-2"] and len(fcm.sent) == 2


def test_push_a_401_refreshes_the_token_once_and_resends(fcm, key_pair):
    sink = make_sink(fcm, key_pair)
    fcm.reject_token = "at-1"  # revoked by the server after it was issued
    assert sink.write_batch(sink.prepare(events(["tok-1"])), None) is None
    sink.close()
    assert fcm.issued == ["at-1", "at-2"] and [m["token"] for m in fcm.sent] == ["tok-1"]


def test_push_dead_tokens_are_reported_for_unsubscribing_and_count_as_written(fcm, key_pair):
    sink = make_sink(fcm, key_pair)
    evs = events(["tok-1", "tok-dead", "tok-invalid", "tok-2"])
    result = sink.write_batch(sink.prepare(evs), None)
    sink.close()
    assert isinstance(result, PushWriteResult)
    assert result.failed == [] and getattr(result, "rejected", []) == []
    assert sorted((d.token, d.code, d.event.event_id) for d in result.dead_tokens) == sorted(
        [
            ("tok-dead", "UNREGISTERED", evs[1].event_id),
            ("tok-invalid", "INVALID_ARGUMENT", evs[2].event_id),
        ]
    )
    assert sorted(m["token"] for m in fcm.sent) == ["tok-1", "tok-2"]


def test_push_invalid_argument_is_a_dead_token_only_when_fcm_names_the_token(fcm, key_pair):
    # FCM answers INVALID_ARGUMENT for an invalid token and for an invalid message alike: only an
    # answer naming the token (a BadRequest on message.token, or the documented invalid-token
    # message) unsubscribes it; any other is that record's dead letter, its token kept.
    sink = make_sink(fcm, key_pair, unsubscribe={"state": "subs"})
    tokens = ["tok-invalid", "tok-malformed", "tok-payload", "tok-toobig", "tok-ttl", "tok-1"]
    result = sink.write_batch(sink.prepare(events(tokens)), None)
    sink.close()
    dead = ["tok-invalid", "tok-malformed"]
    assert sorted(d.token for d in result.dead_tokens) == dead and sink.dead_tokens_seen == 2
    assert sorted(fb.value["device_token"] for fb in result.feedback) == dead
    assert result.failed == []
    assert {ev.value["device_token"]: ev.failure.reason for ev in result.rejected} == {
        "tok-payload": "FCM 400 INVALID_ARGUMENT: Invalid value at 'message.data[0].value' "
        "(TYPE_STRING), 12",
        "tok-toobig": "FCM 400 INVALID_ARGUMENT: Request contains an invalid argument.",
        "tok-ttl": "FCM 400 INVALID_ARGUMENT: Invalid TTL for the message to <token> "
        "(field message.android.ttl)",
    }
    assert [m["token"] for m in fcm.sent] == ["tok-1"]


def test_push_quota_exceeded_waits_retry_after_then_sends_and_other_4xx_fail_the_record(
    fcm, key_pair
):
    sink = make_sink(fcm, key_pair)
    result = sink.write_batch(sink.prepare(events(["tok-quota", "tok-mismatch", "tok-1"])), None)
    sink.close()
    refused = getattr(result, "rejected", None) or result.failed
    assert [ev.value["device_token"] for ev in refused] == ["tok-mismatch"]
    assert (
        refused[0].failure.reason
        == "FCM 403 SENDER_ID_MISMATCH: PERMISSION_DENIED for <token>"  # FCM's text, no token
    )
    assert sink.sleeps[0] >= 3  # Retry-After honoured
    assert fcm.tries["tok-quota"] == 2 and sorted(m["token"] for m in fcm.sent) == [
        "tok-1",
        "tok-quota",
    ]


@pytest.mark.parametrize(("left", "retried"), [(2.0, False), (900.0, True)])
def test_push_retries_only_while_retry_after_fits_in_the_time_left(fcm, key_pair, left, retried):
    """``WriteContext.time_left`` (a Lambda runner's deadline less its margin): FCM's
    ``Retry-After: 3`` outlasts 2 s left, so the send is not made again — the event fails now
    with the reason (the runner answers it for Lambda's retry); with time left it is sent."""
    sink = make_sink(fcm, key_pair)
    prepared = sink.prepare(events(["tok-quota", "tok-1"]))
    result = sink.write_batch(prepared, WriteContext(time_left=lambda: left))
    sink.close()
    if retried:
        assert result is None and sink.sleeps == [3.0] and fcm.tries["tok-quota"] == 2
    else:
        assert sink.sleeps == [] and fcm.tries["tok-quota"] == 1
        assert [ev.value["device_token"] for ev in result.failed] == ["tok-quota"]
        assert result.failed[0].failure.reason.endswith(
            "(not retried: the time left before the deadline is spent)"
        )
    assert [m["token"] for m in fcm.sent] == (["tok-1", "tok-quota"] if retried else ["tok-1"])


def test_push_sends_nothing_to_fcm_when_no_time_is_left(fcm, key_pair):
    """No time left before the runner's deadline: no message is sent (the call is transient)."""
    sink = make_sink(fcm, key_pair)
    with pytest.raises(TransientError, match="not sent: the time left before the deadline"):
        sink.write_batch(sink.prepare(events(["tok-1"])), WriteContext(time_left=lambda: 0.0))
    sink.close()
    assert fcm.tries == {} and sink.sleeps == []


def test_push_refreshes_no_access_token_when_no_time_is_left(fcm, key_pair):
    """No time left before the runner's deadline: the OAuth2 token endpoint is not asked either
    (the refresh came before the time check, and had no timeout of its own)."""
    sink = make_sink(fcm, key_pair)
    with pytest.raises(TransientError, match="not sent: the time left before the deadline"):
        sink.write_batch(sink.prepare(events(["tok-1"])), WriteContext(time_left=lambda: 0.0))
    sink.close()
    assert fcm.issued == [] and fcm.http.requests == []


def test_push_token_refresh_waits_no_longer_than_the_time_left(fcm, key_pair):
    """A token endpoint that does not answer: the refresh gives up within the 0.3 s left (the
    call is transient, nothing is sent) instead of waiting for the endpoint — urllib3 has no
    timeout of its own, so the refresh waited until the endpoint answered (here: when the test's
    fail-safe lets it, 20 s later, and the message was then sent)."""
    release = threading.Event()
    fcm.hold_token = release
    failsafe = threading.Timer(20, release.set)
    failsafe.start()
    sink = make_sink(fcm, key_pair)
    try:
        with pytest.raises(TransientError, match="OAuth2 token endpoint unreachable"):
            sink.write_batch(sink.prepare(events(["tok-1"])), WriteContext(time_left=lambda: 0.3))
    finally:
        release.set()
        failsafe.cancel()
        sink.close()
    assert fcm.sent == []  # the endpoint answers once released: the sink asked no more


@pytest.mark.parametrize("left", [0.5, None])
def test_push_token_refresh_is_not_retried_by_google_auth_past_the_time_left(
    fcm, key_pair, monkeypatch, left
):
    """The token endpoint answers 503 once. google-auth retries a refresh on its own, sleeping
    about 1 s first — longer than the 0.5 s left before the runner's deadline: with a deadline
    the refresh is not retried there (the call is transient; the engine's retry, which knows
    the time left, decides); with none (the local runner, the KCL), google-auth's retry stays."""
    import google.auth._exponential_backoff as backoff

    slept: list[float] = []
    monkeypatch.setattr(backoff, "time", SimpleNamespace(sleep=slept.append))
    fcm.token_failures = 1
    sink = make_sink(fcm, key_pair)
    prepared = sink.prepare(events(["tok-1"]))
    ctx = WriteContext(time_left=None if left is None else lambda: left)
    if left is None:
        assert sink.write_batch(prepared, ctx) is None
        assert len(slept) == 1 and [m["token"] for m in fcm.sent] == ["tok-1"]
    else:
        with pytest.raises(TransientError, match="OAuth2 token endpoint answered 503"):
            sink.write_batch(prepared, ctx)
        assert slept == [] and fcm.sent == [] and fcm.issued == []
    sink.close()


def test_push_takes_no_rate_limit_token_for_a_message_it_does_not_send(fcm, key_pair):
    """No time left: the message is not sent, and the rate limit's token stays for the next write
    (the limiter's clock is frozen: no refill hides a token taken for nothing)."""
    from squall.sinks.ratelimit import RateLimiter

    sink = make_sink(fcm, key_pair, rate_limit=1)
    slept: list[float] = []
    sink.limiter = RateLimiter(1, burst=1, clock=lambda: 0.0, sleep=slept.append)
    with pytest.raises(TransientError, match="not sent: the time left before the deadline"):
        sink.write_batch(sink.prepare(events(["tok-1"])), WriteContext(time_left=lambda: 0.0))
    result = sink.write_batch(sink.prepare(events(["tok-2"])), WriteContext())
    sink.close()
    assert result is None and [m["token"] for m in fcm.sent] == ["tok-2"]
    assert slept == []  # the burst's token, not a wait for the next one


def test_push_rate_limit_waits_only_while_the_time_left_allows(fcm, key_pair):
    """``rate_limit: 1`` holds the second and third message back a second each, longer than the
    0.5 s left before the runner's deadline: they are not sent and fail now with the reason; the
    sink does not sleep into Lambda's timeout (the limiter's clock is frozen)."""
    from squall.sinks.ratelimit import RateLimiter

    sink = make_sink(fcm, key_pair, rate_limit=1)
    slept: list[float] = []
    sink.limiter = RateLimiter(1, burst=1, clock=lambda: 0.0, sleep=slept.append)
    prepared = sink.prepare(events(["tok-1", "tok-2", "tok-3"]))
    result = sink.write_batch(prepared, WriteContext(time_left=lambda: 0.5))
    sink.close()
    assert len(fcm.sent) == 1 and slept == [] and sink.sleeps == []
    assert len(result.failed) == 2
    assert {ev.failure.reason for ev in result.failed} == {
        "not sent: the time left before the deadline is spent"
    }


def test_push_fcm_unavailable_for_every_message_is_transient(fcm, key_pair):
    sink = make_sink(fcm, key_pair)
    with pytest.raises(TransientError, match="UNAVAILABLE"):
        sink.write_batch(sink.prepare(events(["tok-down", "tok-down"])), None)
    sink.close()


def test_push_a_message_fcm_keeps_failing_beside_one_delivered_fails_alone_after_max_attempts(
    fcm, key_pair
):
    """Found against an FCM stand-in: one message answered 500 (or timing out) at every attempt
    beside one delivered. The sink's second round sent that message alone, got nothing through
    and raised TransientError, so the engine failed the whole batch after its retries —
    `max_attempts` never applied, nothing was checkpointed and the delivered notification was
    sent again by the next delivery. The service answered: the message is that record's failure
    after `max_attempts`, the delivered one stays written."""
    sink = make_sink(fcm, key_pair, max_attempts=4)
    result = sink.write_batch(sink.prepare(events(["tok-1", "tok-down"])), None)
    sink.close()
    assert [ev.value["device_token"] for ev in result.failed] == ["tok-down"]
    assert "FCM 503 UNAVAILABLE" in result.failed[0].failure.reason
    assert fcm.tries["tok-down"] == 4
    assert [m["token"] for m in fcm.sent] == ["tok-1"]


def test_push_fcm_refusing_connections_after_a_delivered_message_fails_the_batch(fcm, key_pair):
    """An outage that begins mid-write: one message delivered, then FCM's host refuses every
    connection. A refused connection says nothing of the message it was to carry, so it is the
    dependency's outage — the batch fails (TransientError: the engine retries it, the KCL waits
    in-process), not the records after `max_attempts` (which made a KCL shard process exit and
    told `squall run` the records failed)."""
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1/projects/demo/messages:send"
    sink = make_sink(fcm, key_pair, max_attempts=4)

    def sleep(seconds: float) -> None:  # between rounds: the host goes down
        sink.sleeps.append(seconds)
        sink.url = dead

    sink.sleep = sleep
    with pytest.raises(TransientError, match="ConnectError"):
        sink.write_batch(sink.prepare(events(["tok-1", "tok-down"])), None)
    sink.close()
    assert [m["token"] for m in fcm.sent] == ["tok-1"]
    assert fcm.tries["tok-down"] == 1


def test_push_rejects_events_without_a_token_or_a_template_field(fcm, key_pair):
    sink = make_sink(fcm, key_pair)
    evs = events(["tok-1"]) + [Event(b"{}", records_from([{}])[0].meta, None, 1, {"campaign": {}})]
    evs[0].value["campaign"].pop("title")
    prepared = sink.prepare(evs)
    sink.close()
    assert [ev.failure.reason for ev in prepared.rejected] == [
        "template field 'campaign.title' is missing",
        "device token 'device_token' is missing or not text",
    ]


def test_push_config_needs_something_to_send_and_a_bad_key_is_not_echoed(fcm, key_pair):
    with pytest.raises(ValueError, match="at least one of title, body or data"):
        PushSinkConfig(id="p", type="push", project_id="demo", credentials="{}")
    sink = PushSink(
        PushSinkConfig(
            id="p",
            type="push",
            project_id="demo",
            credentials='{"private_key": "SECRET"',
            title="x",
        ),
        ComponentContext("t"),
    )
    with pytest.raises(Exception) as exc:
        sink.open()
    assert "SECRET" not in str(exc.value) and "not valid JSON" in str(exc.value)
    assert "SECRET" not in repr(sink.config)


@pytest.mark.parametrize(
    "wrap", [0, 76]
)  # base64 on one line (`base64 -w0`), or as `base64` wraps it
def test_push_a_base64_encoded_key_is_not_echoed_as_a_file_name(fcm, key_pair, wrap):
    """Found with `FCM_SERVICE_ACCOUNT="$(base64 -w0 key.json)"` (CI secrets keep keys so): not
    JSON, the value was read as a file path and the start failed with `cannot read the
    service-account file /dir/eyJ0eXBlIjog…` — the whole key, base64-encoded, in the log."""
    import base64

    encoded = base64.b64encode(service_account(fcm, key_pair[0]).encode()).decode()
    if wrap:
        encoded = "\n".join(encoded[i : i + wrap] for i in range(0, len(encoded), wrap))
    sink = PushSink(
        PushSinkConfig(id="p", type="push", project_id="demo", credentials=encoded, title="x"),
        ComponentContext("t"),
    )
    with pytest.raises(Exception) as exc:
        sink.open()
    text = str(exc.value)
    assert encoded[:40] not in text and encoded[-40:] not in text
    assert "base64-encoded must be decoded" in text
    assert f"a value of {len(encoded):,} characters, not shown" in text


@pytest.mark.parametrize(
    "name",
    ["My Keys/key.json", "/".join(["workspace-of-a-deep-ci-job"] * 12) + "/key.json"],
    ids=["spaces", "over-255-chars"],
)
def test_push_an_unreadable_key_file_is_named_with_spaces_or_a_long_path(tmp_path, name):
    """A path with spaces (``/Users/me/My Keys/key.json``) or longer than 255 characters (a
    deep CI workspace's) is a file name, not a key: the start error names it (the base64
    detector took every value with a space or over 255 characters for a key, and said
    "a value of 42 characters, not shown: a key kept base64-encoded must be decoded")."""
    path = str(tmp_path / name)
    assert len(path) > 255 or " " in path
    sink = PushSink(
        PushSinkConfig(id="p", type="push", project_id="demo", credentials=path, title="x"),
        ComponentContext("t"),
    )
    with pytest.raises(Exception) as exc:
        sink.open()
    assert str(exc.value).endswith(
        f"cannot read the service-account file {path}: No such file or directory"
    )


def test_pistats_notify_example_pushes_to_subscribed_devices_only(
    fcm, key_pair, tmp_path: Path, monkeypatch
):
    key_file = tmp_path / "sa.json"
    key_file.write_text(service_account(fcm, key_pair[0]))
    monkeypatch.setenv("FCM_PROJECT", "demo")
    monkeypatch.setenv("FCM_SERVICE_ACCOUNT", str(key_file))
    monkeypatch.setenv("FCM_ENDPOINT", fcm.http.url)
    monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("NOTIFY_REJECTS", str(tmp_path / "rejects.jsonl"))
    lines = (EXAMPLES / "pistats" / "campaign-events.jsonl").read_bytes().splitlines()
    run = run_topology(
        EXAMPLES / "pistats" / "notify.yaml", records_from(lines, stream="campaign-events.jsonl")
    )
    push = next(c for c in run.engine.components if c.id == "push")
    # tok-a subscribed: pushed; tok-b unsubscribed and tok-c never subscribed: filtered;
    # tok-dead subscribed but FCM says UNREGISTERED: unsubscribed; c-43 has no body: dead letter
    assert [
        (m["token"], m["notification"]["title"], m["data"]["campaign_id"]) for m in fcm.sent
    ] == [("tok-a", "Storm warning", "c-42")]
    assert push.dead_tokens_seen == 1
    subscription = next(c for c in run.engine.components if c.id == "subscription")
    states = subscription.store.load(["tok-a", "tok-dead"])  # the dead token was unsubscribed
    assert (states["tok-a"].status, states["tok-dead"].status) == ("subscribed", "unsubscribed")
    counts = run.results[0].counts()
    assert counts[Outcome.DEAD_LETTERED] == 1 and counts[Outcome.FAILED] == 0
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["component"], r["reason"]) for r in rejects] == [
        ("push", "template field 'campaign.body' is missing")
    ]


def test_push_unsubscribe_feedback_is_shaped_for_the_subscription_bolt(fcm, key_pair):
    sink = make_sink(
        fcm,
        key_pair,
        unsubscribe={"state": "subs", "token_field": "who.token", "time_field": "at"},
    )
    evs = events(["tok-1", "tok-dead", "tok-invalid"], at="2026-11-03T18:05:00Z")
    del evs[2].value["at"]  # no time in the payload: the record's arrival time
    evs[2].meta = evs[2].meta._replace(arrival_time=datetime(2026, 11, 3, 18, 6, tzinfo=UTC))
    result = sink.write_batch(sink.prepare(evs), None)
    replayed = events(["tok-1", "tok-dead"], at="2026-11-03T18:05:00Z")
    again = sink.write_batch(sink.prepare(replayed), None)
    sink.close()
    assert sink.feedback_target() == "subs"
    by_token = {fb.value["who"]["token"]: fb for fb in result.feedback}
    dead = by_token["tok-dead"]
    assert dead.value == {
        "event_type": "unsubscribe",
        "who": {"token": "tok-dead"},
        "at": "2026-11-03T18:05:00Z",  # the push's own time: a later subscribe still wins
        "reason": "fcm:UNREGISTERED",
    }
    assert (dead.meta, dead.origin) == (evs[1].meta, evs[1].origin)  # committed with its record
    assert dead.event_id == again.feedback[0].event_id != evs[1].event_id  # replay-stable
    assert by_token["tok-invalid"].value["reason"] == "fcm:INVALID_ARGUMENT"
    assert by_token["tok-invalid"].value["at"] == "2026-11-03T18:06:00+00:00"


@pytest.mark.parametrize(("left", "retried"), [(0.04, False), (900.0, True)])
def test_push_unsubscribe_put_is_retried_only_while_the_backoff_fits_in_the_time_left(
    fcm, key_pair, moto_server, left, retried
):
    """The dead token's unsubscribe, throttled by Kinesis, is put again only while the backoff
    (50 ms at least) fits in ``WriteContext.time_left``; else its pushed event fails now (sent
    again with the batch, its unsubscribe then)."""
    kinesis = moto_server.client("kinesis")
    stream = f"pistats-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    sink = make_sink(
        fcm, key_pair, dead_tokens={"stream": stream, "endpoint_url": moto_server.endpoint}
    )
    calls = {"n": 0}

    def throttle_first(kw, call):
        calls["n"] += 1
        if calls["n"] > 1:
            return call(**kw)
        error = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"}
        return {"FailedRecordCount": len(kw["Records"]), "Records": [error] * len(kw["Records"])}

    writer = sink.unsubscribe_writer
    writer.client = FlakyClient(writer.client, put_records=throttle_first)
    result = sink.write_batch(
        sink.prepare(events(["tok-1", "tok-dead"])), WriteContext(time_left=lambda: left)
    )
    sink.close()
    if retried:
        assert result.failed == [] and calls["n"] == 2 and len(sink.sleeps) == 1
    else:
        assert calls["n"] == 1 and sink.sleeps == []
        assert [ev.value["device_token"] for ev in result.failed] == ["tok-dead"]
        assert result.failed[0].failure.reason == (
            "unsubscribe of a dead token not written: ProvisionedThroughputExceededException: "
            "slow (not retried: the time left before the deadline is spent)"
        )


def test_push_dead_tokens_become_unsubscribe_events_that_the_subscription_bolt_applies(
    fcm, key_pair, moto_server, tmp_path: Path
):
    kinesis = moto_server.client("kinesis")
    stream = f"pistats-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    sink = make_sink(
        fcm, key_pair, dead_tokens={"stream": stream, "endpoint_url": moto_server.endpoint}
    )
    evs = events(["tok-1", "tok-dead"])
    for _ in range(2):  # the batch delivered twice: the same unsubscribe ids
        result = sink.write_batch(sink.prepare(events(["tok-1", "tok-dead"])), None)
        assert result.failed == [] and [d.token for d in result.dead_tokens] == ["tok-dead"]
    sink.close()
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    written = [orjson.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=it)["Records"]]
    assert [
        (w["event_type"], w["device_token"], w["reason"], w["source_event_id"]) for w in written
    ] == [("unsubscribe", "tok-dead", "fcm:UNREGISTERED", evs[1].event_id)] * 2
    assert written[0]["message_id"] == written[1]["message_id"]
    # The subscription bolt reading that stream now stops targeting the token.
    yaml = f"""
name: state
resources: {{state: {{url: "sqlite:///{tmp_path / "state.db"}"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: subscription, type: subscription, store: state, key: device_token}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {stream}-state}}
"""
    subscribe = {
        "message_id": "s-1",
        "event_type": "subscribe",
        "device_token": "tok-dead",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    run_topology(yaml, records_from([subscribe, *written]))
    from squall.testing import MemorySink

    states = [ev.value["subscription"] for ev in MemorySink.stores[f"{stream}-state"]]
    assert states[0]["subscribed"] is True and states[-1]["subscribed"] is False


def test_push_sends_that_got_through_before_a_failed_token_refresh_are_not_sent_again(
    fcm, key_pair, monkeypatch
):
    # The access token is refused mid-batch and the token endpoint is down for the refresh: the
    # call raises TransientError. The engine retries write_batch on the same prepared batch; the
    # notification already delivered must not be pushed a second time.
    import google.auth._exponential_backoff as backoff

    slept: list[float] = []  # google-auth's own retries of the token endpoint: recorded, not slept
    monkeypatch.setattr(backoff, "time", types.SimpleNamespace(sleep=slept.append))
    answer, down = fcm.answer, {"on": False}

    def flaky(req: Request):
        if req.path == "/token" and down["on"]:
            return 503, {}, json.dumps({"error": "temporarily_unavailable"})
        if req.path != "/token" and json.loads(req.body)["message"]["token"] == "tok-2":
            if fcm.reject_token is None:
                down["on"], fcm.reject_token = True, "at-1"  # revoked; the refresh fails
        return answer(req)

    fcm.http.answer = flaky
    sink = make_sink(fcm, key_pair, concurrency=1)
    prepared = sink.prepare(events(["tok-1", "tok-2", "tok-3"]))
    with pytest.raises(TransientError):
        sink.write_batch(prepared, None)
    down["on"] = False
    assert sink.write_batch(prepared, None) is None
    sink.close()
    assert sorted(m["token"] for m in fcm.sent) == ["tok-1", "tok-2", "tok-3"]


def fcm_answer(status: int, rpc: str, message: str, code: str | None = None) -> str:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    error = {"code": status, "message": message, "status": rpc}
    return json.dumps({"error": {**error, "details": details} if code else error})


DISABLED = (
    "Firebase Cloud Messaging API has not been used in project 1234 before or it is disabled. "
    "Enable it by visiting https://console.developers.google.com/apis/api/fcm.googleapis.com/"
    "overview?project=1234 then retry."
)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            403,
            fcm_answer(403, "PERMISSION_DENIED", DISABLED),
            "FCM 403 PERMISSION_DENIED: Firebase",
        ),
        (
            401,
            fcm_answer(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            "FCM 401 UNAUTHENTICATED: Request had invalid",
        ),
        (403, "<html>Forbidden</html>", "FCM 403 HTTP_403: <html>Forbidden</html>"),
    ],
)
def test_push_credentials_or_a_project_fcm_refuses_fail_the_batch_and_dead_letter_nothing(
    fcm, key_pair, status, body, reason
):
    """The FCM API disabled in the project, a service account without the right to send, a key
    FCM does not take: every message gets the same 401/403, and each was dead-lettered as its
    record's failure — a whole campaign emptied into the dead letter and checkpointed. The first
    such answer stops the write and fails the batch."""

    def answer(req: Request):
        if json.loads(req.body)["message"]["token"] == "tok-1":
            return 200, {}, "{}"
        return status, {}, body

    with LocalHttp(answer) as send:
        sink = make_sink(fcm, key_pair, endpoint=send.url, concurrency=1)
        with pytest.raises(SinkError) as failed:
            sink.write_batch(sink.prepare(events(["tok-1", "tok-2", "tok-3"])), None)
        sink.close()
    assert str(failed.value).startswith(f"push: {reason}"), failed.value
    assert "every message would get it" in str(failed.value)
    # tok-1 written, tok-2 stopped the sink (a 401 after one refresh), tok-3 never sent
    sends = [json.loads(r.body)["message"]["token"] for r in send.requests]
    assert sends == ["tok-1", "tok-2"] + (["tok-2"] if status == 401 else [])


def test_push_a_token_of_another_project_or_platform_credentials_stay_that_records_failure(
    fcm, key_pair
):
    """SENDER_ID_MISMATCH (403) and THIRD_PARTY_AUTH_ERROR (401, the APNs or web push key) carry
    an FCM error code: they are about the message's token or platform, not the sink."""
    answers = {
        "tok-other": (
            403,
            fcm_answer(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
        ),
        "tok-ios": (
            401,
            fcm_answer(401, "UNAUTHENTICATED", "Auth error from APNS", "THIRD_PARTY_AUTH_ERROR"),
        ),
    }

    def answer(req: Request):
        status, body = answers.get(json.loads(req.body)["message"]["token"], (200, "{}"))
        return status, {}, body

    with LocalHttp(answer) as send:
        sink = make_sink(fcm, key_pair, endpoint=send.url)
        result = sink.write_batch(sink.prepare(events(["tok-other", "tok-ios", "tok-1"])), None)
        sink.close()
    assert {ev.value["device_token"]: ev.failure.reason for ev in result.rejected} == {
        "tok-other": "FCM 403 SENDER_ID_MISMATCH: SenderId mismatch",
        "tok-ios": "FCM 401 THIRD_PARTY_AUTH_ERROR: Auth error from APNS",
    }


def test_push_a_payload_over_fcms_4096_bytes_is_that_records_dead_letter_with_its_size(
    fcm, key_pair
):
    """FCM refuses a payload over 4096 bytes with a bare "Request contains an invalid argument.":
    the dead letter said nothing of the size. Counted in UTF-8 bytes (é is two)."""
    sink = make_sink(fcm, key_pair, body="{campaign.body}", data={"id": "{campaign.id}"})
    evs = events(["tok-1", "tok-2", "tok-3"])
    evs[0].value["campaign"]["body"] = "é" * 2100  # 4200 bytes
    evs[1].value["campaign"]["body"] = "x" * 4000  # 4000 + "Sale" + "id" + "7": 4007 bytes
    evs[2].value["campaign"]["title"] = "y" * 90  # 4000 + 90 + 3 = 4093 bytes
    evs[2].value["campaign"]["body"] = "x" * 4000
    prepared = sink.prepare(evs)
    assert [(ev.value["device_token"], ev.failure.reason) for ev in prepared.rejected] == [
        (
            "tok-1",
            "FCM payload of at least 4207 bytes (title, body, data keys and values) is over "
            "FCM's 4096-byte limit",
        )
    ]
    assert sink.write_batch(prepared, None) is None
    sink.close()
    assert sorted(m["token"] for m in fcm.sent) == ["tok-2", "tok-3"]


def test_push_reaches_the_token_endpoint_through_the_proxy_the_sends_use(
    fcm, key_pair, monkeypatch
):
    """Behind an egress proxy (HTTPS_PROXY/HTTP_PROXY) the sends went through it, but the OAuth2
    token refresh (google-auth over urllib3) ignored the variables and went direct: every batch
    failed with `OAuth2 token endpoint unreachable`, nothing was ever sent. Here the proxy is
    the only way to the token endpoint and FCM: direct, 127.0.0.2 refuses the connection."""
    closed = f"http://127.0.0.2:{free_port()}"
    proxy = LocalHttp(lambda req: fcm.answer(replace(req, path=urlsplit(req.path).path)))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    account = json.loads(service_account(fcm, key_pair[0]))
    account["token_uri"] = f"{closed}/token"
    try:
        sink = make_sink(fcm, key_pair, credentials=json.dumps(account), endpoint=closed)
        assert sink.write_batch(sink.prepare(events(["tok-1"])), None) is None
        sink.close()
    finally:
        proxy.close()
    assert [r.path for r in proxy.requests] == [
        f"{closed}/token",
        f"{closed}/v1/projects/demo/messages:send",
    ]
    assert fcm.issued == ["at-1"] and [m["token"] for m in fcm.sent] == ["tok-1"]


def test_push_a_data_payload_given_as_it_is_in_message_is_counted_without_crashing(fcm, key_pair):
    """`message: {data: …}` passes the v1 fields as they are. A value there that is not text
    (`n: 1`) made the payload count raise AttributeError in `prepare`, for every event: FCM's
    own answer (a data value must be a string) is the record's dead letter, as before the count
    came in. Text values there are counted as the templates' are."""
    sink = make_sink(fcm, key_pair, data={}, message={"data": {"n": 1}})
    prepared = sink.prepare(events(["tok-payload"]))
    assert prepared.rejected == [] and len(prepared.events) == 1
    result = sink.write_batch(prepared, None)
    assert [ev.failure.reason for ev in result.rejected] == [
        "FCM 400 INVALID_ARGUMENT: Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
    ]
    sink.close()
    sink = make_sink(fcm, key_pair, data={}, body=None, message={"data": {"k": "x" * 4092}})
    prepared = sink.prepare(events(["tok-1"]))  # "Sale" + "k" + 4092 bytes
    assert [ev.failure.reason for ev in prepared.rejected] == [
        "FCM payload of at least 4097 bytes (title, body, data keys and values) is over "
        "FCM's 4096-byte limit"
    ]
    sink.close()


def test_push_third_party_auth_error_neither_refreshes_the_access_token_nor_resends(fcm, key_pair):
    """A 401 THIRD_PARTY_AUTH_ERROR is FCM refusing the APNs or web push credentials for that
    message's platform, not the sink's access token: each such message refreshed the OAuth2
    token (a request to Google's token endpoint per message) and was sent a second time, to
    the same answer — a campaign to 10,000 iOS devices made 10,000 refreshes."""
    apns = fcm_answer(401, "UNAUTHENTICATED", "Auth error from APNS", "THIRD_PARTY_AUTH_ERROR")

    def answer(req: Request):
        ios = json.loads(req.body)["message"]["token"].startswith("ios-")
        return (401, {}, apns) if ios else (200, {}, "{}")

    with LocalHttp(answer) as send:
        sink = make_sink(fcm, key_pair, endpoint=send.url, concurrency=1)
        result = sink.write_batch(sink.prepare(events(["ios-1", "ios-2", "ios-3", "tok-1"])), None)
        sink.close()
    assert [ev.failure.reason for ev in result.rejected] == [
        "FCM 401 THIRD_PARTY_AUTH_ERROR: Auth error from APNS"
    ] * 3
    assert len(fcm.issued) == 1  # the one token of the first send
    assert len(send.requests) == 4  # each message once


def test_push_an_unreachable_token_endpoint_is_named_by_what_failed(fcm, key_pair):
    """The refresh's transport names the httpx error (ConnectError, ConnectTimeout, ProxyError)
    for the reason; it said `OAuth2 token endpoint unreachable: TransportError` whatever failed,
    so a proxy refusing and an endpoint not answering read the same."""
    info = json.loads(service_account(fcm, key_pair[0]))
    info["token_uri"] = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
    sink = make_sink(fcm, key_pair, credentials=json.dumps(info))
    try:
        with pytest.raises(TransientError) as failed:
            sink.write_batch(sink.prepare(events(["tok-1"])), None)
    finally:
        sink.close()
    assert "OAuth2 token endpoint unreachable: ConnectError" in str(failed.value)
    assert fcm.sent == []
