"""Credentials as headers, dict or JSON keys, XML elements and query parameters are masked in
every error and log line (squall.redact), and ordinary text — a device token among it — is not."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from squall import redact
from squall.errors import SinkError
from squall.redact import redact_text

SECRET = "S3CRETpw"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer ***"),
        (f"authorization: bearer {JWT}", "authorization: bearer ***"),
        ("Authorization: dXNlcjpwYXNz", "Authorization: ***"),  # no scheme: the whole value
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic ***"),
        ("authorization=Basic dXNlcjpwYXNz next=1", "authorization=Basic *** next=1"),
        ("X-Api-Key: abc123", "X-Api-Key: ***"),
        ("api-key: abc123 (retrying)", "api-key: *** (retrying)"),
        ("x-amz-security-token:IQoJb3JpZ2luX2Vj", "x-amz-security-token:***"),  # canonical form
        ("Cookie: a=1; sid=S3CRETpw", "Cookie: ***"),
        ("Set-Cookie: sid=S3CRETpw; Path=/; HttpOnly", "Set-Cookie: ***"),
        ("password: S3CRETpw, user: bob", "password: ***, user: bob"),
        ("client_secret: cs1 refresh_token: rt1", "client_secret: *** refresh_token: ***"),
        ("(password=S3CRETpw)", "(password=***)"),
        ("https://h/cb?access_token=AT1&sig=SIG2&x=1", "https://h/cb?access_token=***&sig=***&x=1"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = ***"),
        (
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIAEXAMPLE&Signature=M9H6%3D"
            "&x-amz-security-token=IQoJ&Expires=1796558263",
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIAEXAMPLE&Signature=***"
            "&x-amz-security-token=***&Expires=1796558263",
        ),
        (
            "?X-Amz-Credential=AKIA%2F20261206&X-Amz-Signature=abc0123&X-Amz-SignedHeaders=host",
            "?X-Amz-Credential=AKIA%2F20261206&X-Amz-Signature=***&X-Amz-SignedHeaders=host",
        ),
        ("Signature:\n" + "c6c93a54" * 8, "Signature:\n***"),  # botocore's debug line
        (
            "<Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>SAK1</SecretAccessKey>"
            "<SessionToken>ST1</SessionToken></Credentials>",
            "<Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>***</SecretAccessKey>"
            "<SessionToken>***</SessionToken></Credentials>",
        ),
        # http.client's debug output: a bytes repr, its headers between '\r\n' escapes
        (
            r"send: b'POST / HTTP/1.1\r\nHost: h\r\nX-Api-Key: abc123\r\nAuthorization: Bearer"
            r" xyz\r\nCookie: sid=1\r\n\r\n{}'",
            r"send: b'POST / HTTP/1.1\r\nHost: h\r\nX-Api-Key: ***\r\nAuthorization: Bearer"
            r" ***\r\nCookie: ***\r\n\r\n{}'",
        ),
        (r"{\"apiKey\": \"K123\", \"n\": 1}", r"{\"apiKey\": \"***\", \"n\": 1}"),
    ],
)
def test_credential_headers_and_pairs_are_masked_in_plain_text(text, expected):
    assert redact_text(text) == expected


HEADERS = {
    "Authorization": f"Bearer {JWT}",
    "X-Api-Key": SECRET,
    "Content-Type": "application/json",
    "device_token": "fcm-device-1",
    "X-Amz-Security-Token": "IQoJb3JpZ2luX2VjEA",
}


@pytest.mark.parametrize("render", [str, json.dumps, lambda h: json.dumps(json.dumps(h))])
def test_credential_keys_of_a_rendered_dict_or_json_are_masked(render):
    shown = redact_text(f"POST https://hooks.example.com/x failed, headers={render(HEADERS)}")
    for value in (JWT, SECRET, "IQoJb3JpZ2luX2VjEA"):
        assert value not in shown
    assert "Bearer ***" in shown
    assert "application/json" in shown and "fcm-device-1" in shown  # not credentials


def test_a_signed_botocore_request_shows_no_session_token_and_no_signature():
    """botocore logs every request it sends at DEBUG (``Sending http request: <AWSPreparedRequest
    … headers={…}>``; its header values are bytes by then)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("POST", "http://127.0.0.1:1/", data=b"{}")
    SigV4Auth(
        Credentials("AKIDEXAMPLE", SECRET, "SESSIONtoken123"), "kinesis", "us-east-1"
    ).add_auth(request)
    prepared = request.prepare()
    signature = str(prepared.headers["Authorization"]).rsplit("Signature=", 1)[1]
    shown = redact_text(f"Sending http request: {prepared!r}")
    assert "SESSIONtoken123" not in shown and signature not in shown
    assert re.search(r"'Authorization': b?'AWS4-HMAC-SHA256 \*\*\*'", shown)
    assert re.search(r"'X-Amz-Security-Token': b?'\*\*\*'", shown)


def _logged(emit) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    redact.install(handler)
    logger = logging.getLogger("squall.test.redaction_headers")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return out.getvalue()


def test_a_logged_exception_that_echoes_request_headers_is_masked_by_the_filter():
    def emit(logger: logging.Logger) -> None:
        try:
            raise RuntimeError(f"401 from https://api.example.com: request headers {HEADERS}")
        except RuntimeError:
            logger.exception("push failed")
        logger.warning("retrying with %s", {"authorization": f"Basic {SECRET}"})
        logger.warning("sent:\nAuthorization: Bearer %s\nX-Api-Key: %s", JWT, SECRET)

    logged = _logged(emit)
    assert "Traceback" in logged and "RuntimeError: 401" in logged
    for value in (JWT, SECRET, "IQoJb3JpZ2luX2VjEA"):
        assert value not in logged
    assert "'Authorization': 'Bearer ***'" in logged and "'authorization': 'Basic ***'" in logged


def test_sts_credentials_in_botocore_debug_output_of_a_response_are_masked():
    body = (
        b"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE"
        b"</AccessKeyId><SecretAccessKey>" + SECRET.encode() + b"</SecretAccessKey><SessionToken>"
        b"FwoGZXIvYXdzEA</SessionToken></Credentials></AssumeRoleResult></AssumeRoleResponse>"
    )
    logged = _logged(lambda logger: logger.debug("Response body:\n%r", body))
    assert SECRET not in logged and "FwoGZXIvYXdzEA" not in logged
    assert "<AccessKeyId>ASIAEXAMPLE</AccessKeyId>" in logged


def test_a_sink_error_quoting_an_oauth_answer_is_masked():
    answer = {"access_token": "ya29.a0AfH6SM", "token_type": "Bearer", "id_token": JWT}
    message = str(SinkError(f"OAuth2 token refresh failed: ('unexpected answer', {answer!r})"))
    assert "ya29.a0AfH6SM" not in message and JWT not in message
    assert "'token_type': 'Bearer'" in message


@pytest.mark.parametrize(
    "text",
    [
        "device token 'device_token' is missing or not text",
        "device_token=fcm-device-1 deviceToken: fcm-device-2",
        '{"message": {"token": "fcm-device-1", "notification": {"title": "Hi"}}}',
        "push: token of event e1 is dead (UNREGISTERED)",
        "NextToken: AAAA, key: events/2026/a.json, Kinesis partition key 'u1'",
        "if password == 'x': retry; the secret is safe; an auth token expired",
        "signature_version=s3v4 SignedHeaders=host;x-amz-date X-Amz-Credential=AKIA%2Fx",
        "max_tokens=5 mytoken=abc passwords=2 keys: 3 authorized: yes",
        "HTTP 503 Service Unavailable; retrying in 0.40s [topology=t shard=shardId-0001]",
        "déjà vu: İstanbul — Ünïcode text with no credential",
        # a located config error: the path's last key is no header
        "t.yaml:5:81: sinks[0].headers.Authorization: Input should be a valid string",
    ],
)
def test_ordinary_text_is_left_as_it_is(text):
    assert redact_text(text) == text


def test_a_text_whose_lowercase_is_longer_is_masked_at_the_right_place():
    """'İ'.lower() is two characters: the lowercase copy's offsets are not the text's."""
    text = f"İİİ password={SECRET} İ X-Api-Key: {SECRET} İ Authorization: Bearer {JWT}"
    assert redact_text(text) == "İİİ password=*** İ X-Api-Key: *** İ Authorization: Bearer ***"


def test_a_long_text_with_many_credential_words_is_scanned_in_linear_time():
    import time

    text = ("key: token: secret: x-api-key " * 4000) + "a" * 100_000
    start = time.perf_counter()
    shown = redact_text(text)
    assert time.perf_counter() - start < 2.0
    assert re.search(r"x-api-key: [^*]", shown) is None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_both_log_formats_mask_headers_and_credential_fields(fmt):
    import sys

    from squall.observability.logs import configure, log_context

    stream = io.StringIO()
    configure(fmt, level=logging.WARNING, stream=stream)
    try:
        with log_context(topology="t"):
            logging.getLogger("squall.test.redaction_headers").error(
                "hook answered 401 to Authorization: Bearer %s",
                JWT,
                extra={"fields": {"request": {"headers": HEADERS, "url": "https://h/x"}}},
            )
    finally:
        configure("text", stream=sys.stderr)
    line = stream.getvalue()
    assert "Bearer ***" in line
    for value in (JWT, SECRET, "IQoJb3JpZ2luX2VjEA"):
        assert value not in line
    if fmt == "json":
        headers = json.loads(line)["request"]["headers"]
        assert headers["Authorization"] == "Bearer ***" and headers["X-Api-Key"] == "***"
        assert headers["device_token"] == "fcm-device-1"


def test_botocore_debug_output_of_a_real_call_shows_no_session_token_or_signature(monkeypatch):
    """At DEBUG botocore logs the canonical request (``x-amz-security-token:…``), the signature
    (``Signature:\\n<hex>``) and the signed request's headers; the call goes to 127.0.0.1:1."""
    from squall import aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONtoken123")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    redact.install(handler)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        client = aws.client(
            "kinesis", region="us-east-1", endpoint_url="http://127.0.0.1:1", botocore_retries=1
        )
        with pytest.raises(Exception):  # noqa: B017, PT011 - botocore's EndpointConnectionError
            client.list_streams()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = out.getvalue()
    assert "x-amz-security-token:***" in logged and "AWS4-HMAC-SHA256 ***" in logged
    assert "SESSIONtoken123" not in logged and SECRET not in logged
    assert re.search(r"Signature[=:]\s*[0-9a-f]", logged) is None
