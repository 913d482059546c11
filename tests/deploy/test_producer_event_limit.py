"""The producer counts a request's events before any work per event: a 5 MB body of
`[{},{},…]` (1.7 million events, every one merged with the request context and encoded, the
limit checked only after) took 27 s and 7 GB of memory to be answered 413 — past the function's
timeout and memory, from one request any holder of the app key (shipped in the SDK) can send."""

from __future__ import annotations

import json

import pytest

from squall.deploy import lambda_producer
from tests.deploy.test_lambda_producer import body, handler_for  # noqa: F401 - the fixture
from tests.factories import api_gateway_event


@pytest.mark.parametrize("shape", ["array", "array with a bad element", "json lines"])
def test_a_request_over_max_events_is_refused_before_any_event_is_built(
    handler_for,  # noqa: F811
    monkeypatch,
    shape,
):
    handler, _ = handler_for()
    built = []
    real = lambda_producer.Payload
    monkeypatch.setattr(lambda_producer, "Payload", lambda *a: built.append(a) or real(*a))
    events = ["{}"] * 501
    if shape == "array with a bad element":
        events[-1] = "{bad: 1}"
    text = "\n".join(events) if shape == "json lines" else "[" + ",".join(events) + "]"
    resp = handler(api_gateway_event(text), None)
    assert resp["statusCode"] == 413
    assert body(resp) == {"error": "501 events in one request; at most 500"}
    assert built == []


def test_split_events_counts_before_it_reads_the_elements():
    from datetime import UTC, datetime

    req = lambda_producer.Request(
        json.dumps([{}] * 3).encode(), "r", "1.2.3.4", "ua", datetime.now(UTC), "", "POST"
    )
    with pytest.raises(OverflowError, match="3 events in one request; at most 2"):
        lambda_producer.split_events(req, "request", max_events=2)
    assert len(lambda_producer.split_events(req, "request", max_events=3)) == 3
    assert len(lambda_producer.split_events(req, "request")) == 3  # 0: any number
