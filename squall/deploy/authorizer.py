"""API Gateway (HTTP API) Lambda authorizer for the producer: an app key in ``x-api-key``.

Why an app key: the producer is called by an SDK inside browsers and apps that have no AWS
credentials (IAM signing would need a Cognito identity pool per app) and no logged-in user (a JWT
authorizer needs one). The key identifies the app, is shipped inside it — so it is not a secret,
like any analytics "write key" — and is revoked by removing it from ``SQUALL_APP_KEYS`` (the
``AppKeys`` template parameter). HTTP APIs have no API keys or usage plans (REST APIs do, at
3.5 times the price per request), so the key check runs here and throttling is the API's route
throttling. API Gateway caches each answer per key for ``ReauthorizeEvery`` seconds.

Answers use the simple response format (``EnableSimpleResponses``): ``{"isAuthorized": bool}``;
API Gateway answers ``403 {"message":"Forbidden"}`` when it is false and ``401
{"message":"Unauthorized"}`` when the header is missing (the authorizer is not even called).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

HEADER = "x-api-key"


def app_keys(value: str | None = None) -> tuple[str, ...]:
    """The accepted keys: comma separated, blanks ignored."""
    raw = os.environ.get("SQUALL_APP_KEYS", "") if value is None else value
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def authorize(headers: dict[str, str] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """``{"isAuthorized": …, "context": {"app_key_index": i}}``; compares in constant time, never logs a key."""
    sent = {k.lower(): v for k, v in (headers or {}).items()}.get(HEADER, "")
    for i, key in enumerate(keys):
        if sent and hmac.compare_digest(sent.encode(), key.encode()):
            return {"isAuthorized": True, "context": {"app_key_index": i}}
    return {"isAuthorized": False}


_KEYS = app_keys()  # read once, at init


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (payload format 2.0)."""
    return authorize(event.get("headers"), _KEYS)
