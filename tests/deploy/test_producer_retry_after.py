"""The Lambda producer's 503 passes on the longest wait a dependency asked for (``Retry-After``).

A webhook sink on a real local HTTP server answers some requests 503 with a ``Retry-After``; the
Lambda context's remaining time is set by the test (10 s past the margin: a wait of 20 s or more
is not made). The producer answered ``Retry-After: 1`` whatever the dependency asked for, so an
SDK came back at once into the same refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.deploy.lambda_producer import MAX_RETRY_AFTER, make_handler, retry_after_header
from tests.factories import api_gateway_event
from tests.sinks.local_http import LocalHttp


class Context:
    function_name = "producer"

    def __init__(self, remaining_ms: float):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> float:
        return self.remaining_ms


def post(tmp_path: Path, answer, n: int = 3, remaining_ms: float = 11_000) -> dict:
    """POST ``n`` events through a producer whose sink is a webhook answering ``answer``."""
    with LocalHttp(answer) as srv:
        path = tmp_path / "producer.yaml"
        path.write_text(
            f"""
name: producer
spout: {{type: stdin}}
settings: {{lambda_deadline_margin: 1.0}}
bolts: [{{id: decode, type: json, event_id_field: id}}]
sinks:
  - {{id: hook, type: http, url: "{srv.url}/events", concurrency: 1, max_retry_after: 900}}
"""
        )
        handler = make_handler(path)
        slept: list[float] = []
        [hook] = [c for c in handler.engine.components if c.id == "hook"]
        hook.sleep = slept.append
        handler.engine._sleep = slept.append
        body = json.dumps([{"id": f"m{i}", "n": i} for i in range(n)])
        response = handler(api_gateway_event(body), Context(remaining_ms))
    assert slept == []  # no wait fits in the time left: nothing is slept
    return response


def only(n: int, status: int, headers: dict[str, str]):
    def answer(req):
        return (status, headers, "busy") if json.loads(req.body)["n"] == n else (200, {}, "")

    return answer


@pytest.mark.parametrize(("asked", "answered"), [("30", "30"), ("12.5", "13"), ("600", "60")])
def test_a_record_the_sink_was_asked_to_wait_for_sets_the_503s_retry_after(
    tmp_path, asked, answered
):
    """One record's request answered 503 + Retry-After (the others written): the producer's
    503 asks the client to wait as long — rounded up to whole seconds, at most 60 s."""
    response = post(tmp_path, only(1, 503, {"Retry-After": asked}))
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == answered


def test_a_whole_call_refused_passes_on_its_retry_after(tmp_path):
    """Every request refused: the sink's TransientError carries the longest Retry-After, the
    engine's retry does not fit in the time left, and the producer's 503 passes it on."""
    response = post(tmp_path, lambda req: (429, {"Retry-After": "20"}, "slow down"))
    assert response["statusCode"] == 503 and response["headers"]["Retry-After"] == "20"


def test_without_a_wait_asked_the_503_says_one_second(tmp_path):
    """A 503 with no Retry-After and 50 ms left (under the sink's shortest backoff): 1 s."""
    response = post(tmp_path, only(0, 503, {}), remaining_ms=1_050)
    assert response["statusCode"] == 503 and response["headers"]["Retry-After"] == "1"


def test_retry_after_header_bounds():
    assert retry_after_header(1, []) == "1"
    assert retry_after_header(1, [None, 0.2]) == "1"
    assert retry_after_header(5, [2.0]) == "5"  # the handler's own least value
    assert retry_after_header(1, [4.0, None, 7.5]) == "8"
    assert retry_after_header(1, [float("inf")]) == str(MAX_RETRY_AFTER)
    assert retry_after_header(1, [float("nan"), 3.0]) == "3"
    # a component's TransientError(retry_after=-inf) made the handler raise OverflowError
    assert retry_after_header(1, [float("-inf")]) == "1"
    assert retry_after_header(1, [-2.0, None]) == "1"
