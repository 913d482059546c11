"""The producer's app-key authorizer (HTTP API, simple responses): what API Gateway turns into 200, 401 or 403.

API Gateway's own answers cannot run offline: with ``isAuthorized: false`` it answers
``403 {"message":"Forbidden"}``; without the ``x-api-key`` header it answers ``401
{"message":"Unauthorized"}`` without calling the authorizer; over the route's throttling limits it
answers ``429 {"message":"Too Many Requests"}``. The SDK retries 429 and 503 (with ``Retry-After``).
"""

from __future__ import annotations

import importlib

import pytest

from squall.deploy import authorizer
from tests.factories import api_gateway_event


def test_a_known_key_is_authorized_whatever_the_header_case():
    keys = authorizer.app_keys(" key-web , key-ios ,,")
    assert keys == ("key-web", "key-ios")
    assert authorizer.authorize({"X-Api-Key": "key-ios"}, keys) == {
        "isAuthorized": True,
        "context": {"app_key_index": 1},
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        None,
        {"x-api-key": ""},
        {"x-api-key": "key-web "},
        {"x-api-key": "guess"},
        {"authorization": "key-web"},
    ],
)
def test_an_unknown_or_missing_key_is_refused(headers):
    assert authorizer.authorize(headers, ("key-web",)) == {"isAuthorized": False}


def test_no_configured_key_refuses_everything():
    assert authorizer.authorize({"x-api-key": "anything"}, authorizer.app_keys("")) == {
        "isAuthorized": False
    }


def test_the_handler_reads_the_keys_once_at_init(monkeypatch):
    monkeypatch.setenv("SQUALL_APP_KEYS", "k1,k2")
    module = importlib.reload(authorizer)
    try:
        event = api_gateway_event("{}", version=2)
        event["headers"]["x-api-key"] = "k2"
        assert module.handler(event)["isAuthorized"] is True
        monkeypatch.setenv("SQUALL_APP_KEYS", "other")
        assert module.handler(event)["isAuthorized"] is True  # not re-read per request
        del event["headers"]["x-api-key"]
        assert module.handler(event) == {"isAuthorized": False}
    finally:
        monkeypatch.delenv("SQUALL_APP_KEYS")
        importlib.reload(authorizer)
