"""The http (webhook) sink against a real local HTTP server: retries, Retry-After, 4xx, concurrency, idempotency."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from squall.component import ComponentContext
from squall.errors import BatchFailed, SinkError, TransientError
from squall.event import Event
from squall.sinks.base import WriteContext
from squall.sinks.batchio import retry_after_seconds
from squall.sinks.http import HttpSink, HttpSinkConfig
from squall.sinks.ratelimit import RateLimiter
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.ports import free_port
from tests.sinks.local_http import LocalHttp, Request


def events(payloads):
    return [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]


def make_sink(url: str, **cfg) -> HttpSink:
    sink = HttpSink(HttpSinkConfig(id="hook", type="http", url=url, **cfg), ComponentContext("t"))
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()
    return sink


def test_http_sink_posts_each_event_once_with_auth_from_env_and_an_idempotency_key(monkeypatch):
    with LocalHttp(lambda req: (200, {}, "ok")) as srv:
        monkeypatch.setenv("HOOK_TOKEN", "s3cret")
        yaml = f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - id: hook
    type: http
    url: {srv.url}/events
    headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}"}}
"""
        run = run_topology(yaml, records_from([{"n": i} for i in range(5)]))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 5
    assert sorted(json.loads(r.body)["n"] for r in srv.requests) == list(range(5))
    assert {r.headers["authorization"] for r in srv.requests} == {"Bearer s3cret"}
    assert {r.headers["idempotency-key"] for r in srv.requests} == {
        o.event_id for o in run.outcomes
    }
    assert {r.path for r in srv.requests} == {"/events"} and {r.method for r in srv.requests} == {
        "POST"
    }


def test_http_sink_retries_429_honouring_retry_after_and_5xx_then_succeeds():
    seen: dict[int, int] = {}
    lock = threading.Lock()
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    def answer(req: Request):
        n = json.loads(req.body)["n"]
        with lock:
            seen[n] = seen.get(n, 0) + 1
            k = seen[n]
        if n == 1 and k == 1:
            return 429, {"Retry-After": "7"}, "slow down"
        if n == 2 and k <= 2:
            return 503, {}, "maintenance"
        if n == 3 and k == 1:
            return 429, {"Retry-After": later}, ""
        return 201, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, max_retry_after=20)
        result = sink.write_batch(sink.prepare(events([{"n": i} for i in range(4)])), None)
        sink.close()
    assert result is None
    assert seen == {0: 1, 1: 2, 2: 3, 3: 2}
    assert sink.sleeps[0] == 20  # the longest Retry-After asked (an HTTP date 30 s away), capped
    assert len(sink.sleeps) == 2


@pytest.mark.parametrize(
    ("retry_after", "left", "retried"),
    [(None, 0.05, False), ("30", 10.0, False), ("30", 900.0, True), (None, 900.0, True)],
)
def test_http_sink_retries_only_while_the_backoff_or_retry_after_fits_in_the_time_left(
    retry_after, left, retried
):
    """``WriteContext.time_left`` (a Lambda runner's deadline less its margin): 50 ms is under the
    sink's shortest backoff (100 ms), and a ``Retry-After: 30`` outlasts 10 s left — the request
    the endpoint answered 503 is not made again, its event fails now with the reason (the runner
    answers it for Lambda's retry); with time left it is retried and written."""
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def answer(req: Request):
        n = json.loads(req.body)["n"]
        with lock:
            seen[n] = seen.get(n, 0) + 1
            first = seen[n] == 1
        if n == 1 and first:
            return 503, {"Retry-After": retry_after} if retry_after else {}, "busy"
        return 200, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url)
        prepared = sink.prepare(events([{"n": i} for i in range(3)]))
        result = sink.write_batch(prepared, WriteContext(time_left=lambda: left))
        sink.close()
    if retried:
        assert result is None and seen == {0: 1, 1: 2, 2: 1} and len(sink.sleeps) == 1
    else:
        assert seen == {0: 1, 1: 1, 2: 1} and sink.sleeps == []
        assert [ev.value["n"] for ev in result.failed] == [1]
        assert result.failed[0].failure.reason == (
            "HTTP 503: busy (not retried: the time left before the deadline is spent)"
        )


def test_http_sink_request_timeout_is_no_longer_than_the_time_left():
    """A receiver slower than the time left: the request is given up when the time left is
    spent (0.3 s here), not after the configured ``timeout`` (10 s) — the receiver answers 200
    only after 5 s, so a request waiting for it would be written. Nothing is timed: what is
    asserted is which answer the request got."""
    release = threading.Event()

    def answer(req: Request):
        release.wait(5)
        return 200, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, timeout=10, max_attempts=1)
        try:
            with pytest.raises(TransientError, match="ReadTimeout"):
                sink.write_batch(
                    sink.prepare(events([{"n": 1}])), WriteContext(time_left=lambda: 0.3)
                )
        finally:
            release.set()
            sink.close()
    assert len(srv.requests) == 1


def test_http_sink_sends_nothing_when_no_time_is_left():
    """No time left before the runner's deadline (its margin is for the answer): the request is
    not sent at all; the call fails as transient (the engine's own retry is bounded by the same
    time left)."""
    with LocalHttp(lambda req: (200, {}, "")) as srv:
        sink = make_sink(srv.url)
        with pytest.raises(
            TransientError, match="not sent: the time left before the deadline is spent"
        ):
            sink.write_batch(sink.prepare(events([{"n": 1}])), WriteContext(time_left=lambda: 0.0))
        sink.close()
    assert srv.requests == [] and sink.sleeps == []


def test_http_sink_4xx_is_the_records_failure_with_the_truncated_body_and_is_not_retried():
    def answer(req: Request):
        if json.loads(req.body)["n"] == 1:
            return 422, {}, '{"error": "unknown field ' + "x" * 1000 + '"}'
        return 200, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, reason_chars=40)
        result = sink.write_batch(sink.prepare(events([{"n": 0}, {"n": 1}, {"n": 2}])), None)
        sink.close()
    refused = getattr(result, "rejected", None) or result.failed
    assert [ev.value["n"] for ev in refused] == [1]
    assert refused[0].failure.reason.startswith('HTTP 422: {"error": "unknown field xxxxxxxxx')
    assert refused[0].failure.reason.endswith("(1027 chars)")
    assert len(srv.requests) == 3 and sink.sleeps == []


def test_http_sink_endpoint_down_is_transient_and_the_retry_sends_only_what_is_missing():
    state = {"down": False}

    def answer(req: Request):
        return (503, {"Retry-After": "3"}, "down") if state["down"] else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, mode="json_batch", batch_size=2, max_attempts=1)
        prepared = sink.prepare(events([{"n": i} for i in range(4)]))
        prepared.payload[0].done = True  # written by an earlier attempt
        state["down"] = True
        with pytest.raises(TransientError) as exc:
            sink.write_batch(prepared, None)
        assert exc.value.retry_after == 3
        state["down"] = False
        assert sink.write_batch(prepared, None) is None
        sink.close()
    assert [json.loads(r.body) for r in srv.requests] == [[{"n": 2}, {"n": 3}]] * 2


def test_http_sink_connection_refused_is_transient():
    sink = make_sink(f"http://127.0.0.1:{free_port()}/hook", timeout=2)
    with pytest.raises(TransientError, match="ConnectError"):
        sink.write_batch(sink.prepare(events([{"n": 1}])), None)
    sink.close()


def test_http_sink_batches_as_ndjson_with_a_digest_idempotency_key_stable_across_replays():
    with LocalHttp(lambda req: (200, {}, "")) as srv:
        for _ in range(2):
            sink = make_sink(srv.url, mode="ndjson_batch", batch_size=3)
            assert (
                sink.write_batch(sink.prepare(events([{"n": i} for i in range(7)])), None) is None
            )
            sink.close()
    first, second = srv.requests[:3], srv.requests[3:]
    assert sorted(r.body.decode().splitlines() for r in first) == [
        ['{"n":0}', '{"n":1}', '{"n":2}'],
        ['{"n":3}', '{"n":4}', '{"n":5}'],
        ['{"n":6}'],
    ]
    assert {r.headers["content-type"] for r in first} == {"application/x-ndjson"}
    assert sorted(r.headers["idempotency-key"] for r in first) == sorted(
        r.headers["idempotency-key"] for r in second
    )


def test_http_sink_keeps_at_most_concurrency_requests_in_flight():
    meet = threading.Barrier(2, timeout=10)

    def answer(req: Request):
        meet.wait()  # two requests must be in flight together to answer
        return 200, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, concurrency=2)
        assert sink.write_batch(sink.prepare(events([{"n": i} for i in range(10)])), None) is None
        sink.close()
    assert srv.max_in_flight == 2


def test_rate_limiter_spaces_requests_at_the_configured_rate():
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    limiter = RateLimiter(5, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(11):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # 1 at once, then 10 more at 5 per second
    assert len(waits) == 10


def test_rate_limiter_takes_no_token_it_would_have_to_wait_for_longer_than_max_wait():
    now = [0.0]
    waits: list[float] = []
    limiter = RateLimiter(2, burst=1, clock=lambda: now[0], sleep=waits.append)
    assert limiter.acquire(max_wait=0.1) is None  # the burst's token: taken, no wait
    assert limiter.acquire(max_wait=0.4) == pytest.approx(0.5)  # the next comes in 0.5 s
    assert waits == [] and limiter.waited == 0.0
    assert limiter.acquire(max_wait=0.6) is None  # nothing was taken: still 0.5 s, not 1.0
    assert waits == [pytest.approx(0.5)]


def test_rate_limiter_gives_back_exactly_the_tokens_it_did_not_take_under_concurrency():
    """Eight threads acquire with mixed ``max_wait`` (none, 0, and waits some tokens fit in) on a
    frozen clock: every token taken is one the bucket lost, every wait returned took nothing —
    no token leaks and none is made (the burst is never exceeded)."""
    import random

    for _ in range(5):
        limiter = RateLimiter(5, burst=3, clock=lambda: 0.0, sleep=lambda s: None)
        taken: list[int] = []

        def work(limiter: RateLimiter = limiter, taken: list[int] = taken) -> None:
            rng = random.Random()
            n = sum(
                limiter.acquire(max_wait=rng.choice([None, 0.0, 0.5, 1.0, 2.0])) is None
                for _ in range(1000)
            )
            taken.append(n)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert limiter._tokens == pytest.approx(3 - sum(taken))


def test_http_sink_rate_limit_waits_only_while_the_time_left_allows():
    """A rate limit's wait (``rate_limit: 1``: a request a second) longer than the time left before
    the runner's deadline: the requests it holds back are not sent and their events fail now with
    the reason, instead of the sink sleeping into Lambda's timeout. The limiter's clock is frozen,
    so nothing here depends on how fast the machine is."""
    with LocalHttp(lambda req: (200, {}, "")) as srv:
        sink = make_sink(srv.url, rate_limit=1)
        slept: list[float] = []
        sink.limiter = RateLimiter(1, burst=1, clock=lambda: 0.0, sleep=slept.append)
        prepared = sink.prepare(events([{"n": i} for i in range(3)]))
        result = sink.write_batch(prepared, WriteContext(time_left=lambda: 0.5))
        sink.close()
    assert len(srv.requests) == 1 and slept == []
    assert len(result.failed) == 2
    assert {ev.failure.reason for ev in result.failed} == {
        "not sent: the time left before the deadline is spent"
    }


def test_http_sink_takes_no_rate_limit_token_for_a_request_it_does_not_send():
    """No time left: the request is not sent, and the rate limit's token stays for the next
    write (a warm Lambda's next invocation keeps the sink and its limiter). The token was taken
    before the time check, so the next write waited for a token nothing had used. The limiter's
    clock is frozen: no refill hides the loss."""
    with LocalHttp(lambda req: (200, {}, "")) as srv:
        sink = make_sink(srv.url, rate_limit=1)
        slept: list[float] = []
        sink.limiter = RateLimiter(1, burst=1, clock=lambda: 0.0, sleep=slept.append)
        with pytest.raises(TransientError, match="not sent: the time left before the deadline"):
            sink.write_batch(sink.prepare(events([{"n": 0}])), WriteContext(time_left=lambda: 0.0))
        assert srv.requests == []
        result = sink.write_batch(sink.prepare(events([{"n": 1}])), WriteContext())
        sink.close()
    assert result is None and len(srv.requests) == 1
    assert slept == []  # the burst's token, not a wait for the next one


def test_retry_after_parses_seconds_and_http_dates():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("Sat, 28 Nov 2026 12:00:30 GMT", now=lambda: now) == 30
    assert retry_after_seconds("garbage") is None and retry_after_seconds(None) is None


def test_http_sink_header_values_stay_out_of_the_config_repr():
    cfg = HttpSinkConfig(
        id="h", type="http", url="http://127.0.0.1:1/x", headers={"Authorization": "Bearer s3cret"}
    )
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())


def test_http_sink_a_refused_record_is_still_reported_after_the_engine_retries_the_batch():
    state = {"down": True}

    def answer(req: Request):
        n = json.loads(req.body)["n"]
        if n == 0:
            return 400, {}, "bad"
        return (503, {}, "down") if state["down"] else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, max_attempts=2)
        prepared = sink.prepare(events([{"n": 0}, {"n": 1}]))
        with pytest.raises(TransientError):  # n=1 never got through: the whole call is transient
            sink.write_batch(prepared, None)
        state["down"] = False
        result = sink.write_batch(prepared, None)  # the engine's retry of the same batch
        sink.close()
    refused = getattr(result, "rejected", None) or result.failed
    assert [(ev.value["n"], ev.failure.reason) for ev in refused] == [(0, "HTTP 400: bad")]
    assert [json.loads(r.body)["n"] for r in srv.requests].count(0) == 1  # not sent again


def test_http_sink_a_request_failing_beside_delivered_ones_fails_alone_after_max_attempts():
    """One event the receiver answers 503 at every attempt, beside one it takes: the sink's
    second round sent it alone, got nothing through and raised TransientError — the engine then
    failed the whole batch, `max_attempts` never applied. The receiver is up: that event fails
    after `max_attempts`, the other stays written."""

    def answer(req: Request):
        return (503, {}, "busy") if json.loads(req.body)["n"] == 1 else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, max_attempts=3)
        result = sink.write_batch(sink.prepare(events([{"n": 0}, {"n": 1}])), None)
        sink.close()
    assert [(ev.value["n"], ev.failure.reason) for ev in result.failed] == [(1, "HTTP 503: busy")]
    assert [json.loads(r.body)["n"] for r in srv.requests].count(1) == 3


def test_http_sink_a_receiver_refusing_connections_after_a_delivered_request_fails_the_batch():
    """An outage that begins mid-write: one event taken, then the receiver's host refuses every
    connection (down since). A refused connection says nothing of the event it was to carry:
    the batch fails (TransientError), not the event after `max_attempts`."""
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"

    def answer(req: Request):
        return (503, {}, "busy") if json.loads(req.body)["n"] == 1 else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, max_attempts=3)

        def sleep(seconds: float) -> None:  # between rounds: the host goes down
            sink.sleeps.append(seconds)
            sink.config = sink.config.model_copy(update={"url": dead})

        sink.sleep = sleep
        with pytest.raises(TransientError, match="ConnectError"):
            sink.write_batch(sink.prepare(events([{"n": 0}, {"n": 1}])), None)
        sink.close()
    assert sorted(json.loads(r.body)["n"] for r in srv.requests) == [0, 1]


def test_http_sink_never_puts_header_secrets_a_receiver_echoes_into_reasons_or_logs(caplog):
    # Receivers often echo the request (headers included) in an error body; the body becomes the
    # failure reason (dead letters, logs): the configured header values must not come with it.
    seen = []

    def answer(req: Request):
        echo = json.dumps({"error": "bad", "headers": req.headers})
        n = json.loads(req.body)["n"]
        seen.append(n)
        if n == 0:
            return (503, {}, echo) if seen.count(0) == 1 else (200, {}, "")
        return 400, {}, echo

    with LocalHttp(answer) as srv:
        sink = make_sink(
            srv.url,
            max_attempts=2,
            headers={"Authorization": "Bearer tok-9f8e7d6c5b", "X-Api-Key": "key-1a2b3c4d5e"},
        )
        with caplog.at_level("INFO"):
            result = sink.write_batch(sink.prepare(events([{"n": 0}, {"n": 1}])), None)
        sink.close()
    assert result.failed == [] and [ev.value["n"] for ev in result.rejected] == [1]
    text = result.rejected[0].failure.reason + caplog.text
    assert "HTTP 400" in text and "HTTP 503" in text
    assert "authorization" in text  # the echo is there, without the values
    assert "tok-9f8e7d6c5b" not in text and "key-1a2b3c4d5e" not in text


def test_a_webhook_url_s_secret_path_never_reaches_the_logs(caplog):
    """httpx logs each request at INFO with its URL; an incoming webhook's path is its secret
    (https://hooks.slack.com/services/T…/B…/<token>). The logs keep the scheme, host and port."""
    secret = "XyZ-9f8e7d6c5b4a"
    with LocalHttp(lambda req: (200, {}, "ok")) as srv:
        sink = make_sink(f"{srv.url}/services/T000/B000/{secret}?sig={secret}")
        with caplog.at_level("INFO"):
            sink.write_batch(sink.prepare(events([{"n": 0}])), None)
        sink.close()
    assert [json.loads(r.body)["n"] for r in srv.requests] == [0]
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests and all(secret not in line for line in requests)
    host = srv.url.split("://", 1)[1].rstrip("/")
    assert f"{host}/…" in requests[0] and "200 OK" in requests[0]


def test_http_sink_an_event_id_from_the_client_with_a_newline_or_non_ascii_is_sent_percent_encoded():
    """`event_id_field` takes the client's text: a CR/LF in it made every attempt fail (the batch
    failed, retried for ever, its shard stuck), a non-ASCII one failed the event."""
    with LocalHttp(lambda req: (200, {}, "ok")) as srv:
        yaml = f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json, event_id_field: id}}]
sinks: [{{id: hook, type: http, url: "{srv.url}/events", max_attempts: 2}}]
"""
        ids = ["a\r\nX-Injected: 1", "café", "50%", "msg-1f3a"]
        run = run_topology(yaml, records_from([{"id": i} for i in ids]))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 4
    got = {json.loads(r.body)["id"]: r.headers["idempotency-key"] for r in srv.requests}
    assert got == {
        "a\r\nX-Injected: 1": "a%0D%0AX-Injected:%201",
        "café": "caf%C3%A9",
        "50%": "50%25",
        "msg-1f3a": "msg-1f3a",
    }
    assert not any("x-injected" in r.headers for r in srv.requests)


@pytest.mark.parametrize(
    "echo",
    [
        "Cannot POST {path}",  # Express's 404 page
        "no such hook: {token}",
        "bad request to {path}?{query}",
        "signature {sig} expired",
    ],
)
def test_http_sink_never_puts_the_urls_secret_path_or_query_a_receiver_echoes_into_reasons(echo):
    """A webhook's path or query is its secret (the logs show only scheme, host and port): a
    receiver's error page that echoes it made it the failure reason — dead letters, logs, metrics."""
    token, sig = "XyZ9f8e7d6c5b4a3", "s1g-77aa88bb"
    path, query = f"/services/T000/B000/{token}", f"sig={sig}"
    text = echo.format(path=path, token=token, query=query, sig=sig)
    with LocalHttp(lambda req: (404, {}, text)) as srv:
        sink = make_sink(f"{srv.url}{path}?{query}", max_attempts=1)
        result = sink.write_batch(sink.prepare(events([{"n": 0}])), None)
        sink.close()
    [rejected] = result.rejected
    reason = rejected.failure.reason
    assert reason.startswith("HTTP 404: ") and "***" in reason
    assert token not in reason and sig not in reason, reason


class StrictHook(HttpSink):
    """The http sink with a check of its own that raises on one kind of record (a record's fault:
    the engine isolates it)."""

    def write_batch(self, prepared, ctx):
        if any(ev.value.get("poison") for ev in prepared.events):
            raise ValueError("this hook takes no poison")
        return super().write_batch(prepared, ctx)


@pytest.mark.parametrize("mode", ["single", "json_batch"])
def test_a_poison_record_does_not_make_the_http_sink_post_the_rest_of_its_batch_twice(mode):
    """The isolation's part writes are the batch's write: each good event is posted once (it
    was posted twice: once by a part, once more with "the rest")."""
    with LocalHttp(lambda req: (200, {}, "ok")) as srv:
        yaml = f"""
name: hook
spout: {{type: 'squall.testing:ListSpout'}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: hook, type: '{__name__}:StrictHook', url: "{srv.url}/events", mode: {mode},
      batch_size: 4}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: hook-poison-{mode}}}
"""
        payloads = [{"n": i, "poison": i in (6, 13)} for i in range(20)]
        run = run_topology(yaml, records_from(payloads), batch_size=20)
    posted: dict[int, int] = {}
    for r in srv.requests:
        body = json.loads(r.body)
        for item in body if isinstance(body, list) else [body]:
            posted[item["n"]] = posted.get(item["n"], 0) + 1
    assert posted == {i: 1 for i in range(20) if i not in (6, 13)}
    dead = [o.index for o in run.outcomes if o.outcome is Outcome.DEAD_LETTERED]
    assert dead == [6, 13]
    assert [o.index for o in run.outcomes if o.outcome is Outcome.COMMITTED] == [
        i for i in range(20) if i not in (6, 13)
    ]


@pytest.mark.parametrize(
    "status, headers, says",
    [
        (401, {"WWW-Authenticate": "Bearer"}, "check the credentials in `headers`"),
        (405, {"Allow": "GET"}, "check `method`"),
        (407, {}, "the proxy wants credentials"),
        (301, {"Location": "/hooks/moved-9f8e7d6c5b"}, "redirect to ***, not followed"),
        (307, {"Location": "https://new.example/x"}, "redirect to https://new.example/x"),
        (308, {}, "redirect, not followed"),
    ],
)
def test_http_sink_an_answer_every_record_would_get_fails_the_batch_and_dead_letters_nothing(
    tmp_path, status, headers, says
):
    """Wrong credentials, a method the endpoint refuses or a moved endpoint are the sink's
    configuration: each record dead-lettered with `HTTP 401` emptied the stream into the dead
    letter (and checkpointed it) until someone looked. The batch fails, nothing is committed."""

    def answer(req: Request):
        return (200, {}, "") if json.loads(req.body)["n"] == 0 else (status, headers, "no")

    with LocalHttp(answer) as srv:
        yaml = f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: hook, type: http, url: "{srv.url}/hooks/moved-9f8e7d6c5b", concurrency: 1}}
  - {{id: rejects, type: dead_letter, path: "{tmp_path / "rejects.jsonl"}"}}
"""
        with pytest.raises(BatchFailed) as failed:
            run_topology(yaml, records_from([{"n": i} for i in range(3)]))
    text = str(failed.value)
    assert f"hook: POST HTTP {status}" in text and says in text, text
    assert "moved-9f8e7d6c5b" not in text  # the URL's secret path, masked in the Location too
    rejects = tmp_path / "rejects.jsonl"
    assert not rejects.exists() or rejects.read_text() == ""
    assert len(srv.requests) == 2  # n=0 written, n=1 stopped the sink: n=2 never sent


@pytest.mark.parametrize("status", [408, 425])
def test_http_sink_retries_request_timeout_and_too_early(status):
    """408 (the server gave up waiting for the request) and 425 (Too Early) ask for the same
    request again: they dead-lettered the record at once."""
    tries = []

    def answer(req: Request):
        tries.append(1)
        return (status, {"Retry-After": "2"}, "again") if len(tries) == 1 else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, max_attempts=3)
        result = sink.write_batch(sink.prepare(events([{"n": 0}, {"n": 1}])), None)
        sink.close()
    assert result is None and len(srv.requests) == 3 and sink.sleeps == [2.0]


@pytest.mark.parametrize("mode", ["json_batch", "ndjson_batch"])
def test_http_sink_a_refused_batch_request_is_split_until_the_refused_events_are_alone(mode):
    """A 413 for a request of many events, or a 400 for one bad event among them, dead-lettered
    every event of the request. The request is sent again in halves until the events refused
    alone are found: only those are dead-lettered, the rest is delivered once."""

    def parse(body: bytes) -> list[dict]:
        if mode == "json_batch":
            return json.loads(body)
        return [json.loads(line) for line in body.decode().splitlines()]

    def answer(req: Request):
        got = parse(req.body)
        if len(got) > 2:
            return 413, {}, "payload too large"
        if any(e["n"] == 3 for e in got):
            return 400, {}, "n=3 is not allowed"
        return 200, {}, ""

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, mode=mode, batch_size=4)
        prepared = sink.prepare(events([{"n": i} for i in range(7)]))
        result = sink.write_batch(prepared, None)
        sink.close()
    assert result.failed == []
    assert [(ev.value["n"], ev.failure.reason) for ev in result.rejected] == [
        (3, "HTTP 400: n=3 is not allowed")
    ]
    delivered = [[e["n"] for e in parse(r.body)] for r in srv.requests if answer(r)[0] == 200]
    assert sorted(n for got in delivered for n in got) == [0, 1, 2, 4, 5, 6]
    # [0-3] 413 → [0,1] ok, [2,3] 400 → [2] ok, [3] 400; [4-6] 413 → [4] ok, [5,6] ok
    assert len(srv.requests) == 8
    assert sorted(len(item.events) for item in prepared.payload) == [1, 1, 1, 2, 2]


def test_http_sink_the_halves_of_a_refused_request_are_what_the_engines_retry_sends():
    state = {"down": True}

    def answer(req: Request):
        if len(json.loads(req.body)) > 2:
            return 413, {}, "payload too large"
        return (503, {}, "down") if state["down"] else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, mode="json_batch", batch_size=4, max_attempts=1)
        prepared = sink.prepare(events([{"n": i} for i in range(4)]))
        with pytest.raises(TransientError):  # neither half got through
            sink.write_batch(prepared, None)
        state["down"] = False
        assert sink.write_batch(prepared, None) is None  # the engine's retry of the call
        sink.close()
    sizes = [len(json.loads(r.body)) for r in srv.requests]
    assert sizes == [4, 2, 2, 2, 2]  # the 4-event request is not sent again


@pytest.mark.parametrize("status", [404, 409, 410, 415])
def test_http_sink_a_batch_request_refused_as_a_whole_is_not_split(status):
    """Only 400, 413 and 422 may be one event's refusal (as the lookup's batch_url splits). A
    404 (a wrong path), 410 or 415 (a wrong `mode`) refuses every half too: splitting sent
    2n − 1 requests for n events — a batch_size of 100 became 199 requests — before
    dead-lettering each event with the same answer."""
    with LocalHttp(lambda req: (status, {}, "no such hook")) as srv:
        sink = make_sink(srv.url, mode="json_batch", batch_size=8)
        result = sink.write_batch(sink.prepare(events([{"n": i} for i in range(16)])), None)
        sink.close()
    assert len(srv.requests) == 2  # one request of 8 events each, none split
    assert result.failed == []
    assert [ev.failure.reason for ev in result.rejected] == [f"HTTP {status}: no such hook"] * 16


@pytest.mark.parametrize("status", [400, 422])
def test_http_sink_a_batch_request_refused_for_an_event_is_still_split(status):
    with LocalHttp(
        lambda req: (status, {}, "bad") if b'"n":2' in req.body else (200, {}, "")
    ) as srv:
        sink = make_sink(srv.url, mode="json_batch", batch_size=4)
        result = sink.write_batch(sink.prepare(events([{"n": i} for i in range(4)])), None)
        sink.close()
    assert [ev.value["n"] for ev in result.rejected] == [2]
    assert len(srv.requests) == 5  # [0-3] → [0,1] ok, [2,3] → [2] refused, [3] ok


@pytest.mark.parametrize("mode", ["single", "json_batch"])
def test_http_sink_a_413_for_one_event_names_the_size_of_its_request(mode):
    """An event refused alone with 413 is too big for the receiver: its dead letter said
    `HTTP 413: Request Entity Too Large`, not how big the request was."""

    def answer(req: Request):
        return (413, {}, "Request Entity Too Large") if len(req.body) > 1000 else (200, {}, "")

    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, mode=mode, batch_size=4)
        result = sink.write_batch(sink.prepare(events([{"n": 0}, {"n": "x" * 5000}])), None)
        sink.close()
    size = len(orjson.dumps({"n": "x" * 5000})) + (2 if mode == "json_batch" else 0)  # [ ]
    assert [ev.failure.reason for ev in result.rejected] == [
        f"HTTP 413: Request Entity Too Large (a request body of {size} bytes)"
    ]


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("https://127.0.0.1/hooks/a", "the endpoint redirects http to https"),
        ("https://127.0.0.1:8443/hooks/a", "the endpoint redirects http to https"),
        ("https://other.example/hooks/a", "set `url` to the endpoint the requests should go to"),
        ("/hooks/b", "set `url` to the endpoint the requests should go to"),
    ],
)
def test_http_sink_a_redirect_to_the_same_url_on_https_says_so(location, says):
    """A load balancer answering an http URL with a redirect to its https twin: the message
    said only `set url to the endpoint the requests should go to`, and a secret path is
    masked in the Location (`https://host***`), so the fix was not to be read from it."""
    with LocalHttp(lambda req: (301, {"Location": location}, "")) as srv:
        sink = make_sink(f"{srv.url}/hooks/a")
        with pytest.raises(SinkError) as failed:
            sink.write_batch(sink.prepare(events([{"n": 0}])), None)
        sink.close()
    assert says in str(failed.value), failed.value


def hook_yaml(url: str, tmp_path, **opts) -> str:
    extra = "".join(f", {k}: {v}" for k, v in opts.items())
    return f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: hook, type: http, url: "{url}/hook", concurrency: 1{extra}}}
  - {{id: rejects, type: dead_letter, path: "{tmp_path / "rejects.jsonl"}"}}
"""


@pytest.mark.parametrize("mode", ["single", "json_batch"])
def test_http_sink_a_403_for_one_records_content_is_that_records_dead_letter(tmp_path, mode):
    """A WAF blocking one record's content (AWS WAF, Cloudflare: 403) or a receiver forbidding
    one tenant's record failed the batch as a misconfiguration — every delivery of the batch
    again, the shard stalled behind that record for good. Beside requests taken, a 403 is the
    record's: dead-lettered with the answer (in the batch modes found by halving)."""

    def answer(req: Request):
        return (403, {}, "Request blocked") if b"DROP TABLE" in req.body else (200, {}, "")

    payloads = [{"n": i, "q": "DROP TABLE users" if i == 2 else "hello"} for i in range(6)]
    with LocalHttp(answer) as srv:
        yaml = hook_yaml(srv.url, tmp_path, mode=mode, batch_size=6)
        run = run_topology(yaml, records_from(payloads))
    dead = [o.index for o in run.outcomes if o.outcome is Outcome.DEAD_LETTERED]
    assert dead == [2]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["HTTP 403: Request blocked"]


@pytest.mark.parametrize(("mode", "sent", "counted"), [("single", 3, 3), ("json_batch", 3, 2)])
def test_http_sink_a_403_for_every_request_fails_the_batch_and_dead_letters_nothing(
    tmp_path, mode, sent, counted
):
    """Credentials the endpoint forbids: two requests or more answered 403 and none taken
    fail the batch (nothing dead-lettered, nothing checkpointed). In the batch modes the
    refused request's two halves are the second and third requests, and they are the two
    refusals counted (the request they split is theirs)."""
    with LocalHttp(lambda req: (403, {}, "forbidden")) as srv:
        yaml = hook_yaml(srv.url, tmp_path, mode=mode, batch_size=6)
        with pytest.raises(BatchFailed) as failed:
            run_topology(yaml, records_from([{"n": i} for i in range(3)]))
    assert "hook: POST HTTP 403: forbidden (check the credentials in `headers`" in str(failed.value)
    assert f"{counted} requests refused, none taken" in str(failed.value)
    rejects = tmp_path / "rejects.jsonl"
    assert not rejects.exists() or rejects.read_text() == ""
    assert len(srv.requests) == sent


def test_http_sink_a_403_for_a_record_alone_in_its_batch_is_its_dead_letter(tmp_path):
    """One request, answered 403: nothing says it is the credentials rather than the record
    (as the lookup's source decides), and failing the batch would stall the shard for good if
    it is the record's. The price, with credentials revoked: a batch of one record is
    dead-lettered before a batch of two stops the run."""
    with LocalHttp(lambda req: (403, {}, "forbidden")) as srv:
        run = run_topology(hook_yaml(srv.url, tmp_path), records_from([{"n": 0}]))
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED]


def test_http_sink_a_half_keeps_its_idempotency_key_across_retries_and_replays():
    """docs/sinks.md says a half's Idempotency-Key is the same on each attempt and replay of
    that half (the digest of its events' ids), so a receiver drops a half it already took."""
    answered: dict[str, int] = {}

    def answer(req: Request):
        got = json.loads(req.body)
        if len(got) > 2:
            return 413, {}, "too large"
        key = req.headers["idempotency-key"]
        answered[key] = answered.get(key, 0) + 1
        return (503, {}, "busy") if answered[key] == 1 and got[0]["n"] == 2 else (200, {}, "")

    with LocalHttp(answer) as srv:
        for _ in range(2):  # the batch, then its replay
            sink = make_sink(srv.url, mode="json_batch", batch_size=4)
            assert (
                sink.write_batch(sink.prepare(events([{"n": i} for i in range(4)])), None) is None
            )
            sink.close()
    keys: dict[tuple[int, ...], list[str]] = {}
    for r in srv.requests:
        got = tuple(e["n"] for e in json.loads(r.body))
        keys.setdefault(got, []).append(r.headers["idempotency-key"])
    # each run: [0-3] 413, [0,1] ok, [2,3] 503 then ok (the retry); the replay: the same
    assert {half: len(k) for half, k in keys.items()} == {(0, 1, 2, 3): 2, (0, 1): 2, (2, 3): 3}
    assert all(len(set(k)) == 1 for k in keys.values())  # one key per request, every time
    assert len({k[0] for k in keys.values()}) == 3


def test_http_sink_a_records_403_answered_before_any_request_is_taken_is_still_the_records():
    """Whether a 403 is the sink's is decided once the write's requests are answered, not on
    the first answer: here the blocked record's 403 comes back while the others are held, and
    it stays that record's dead letter (on the first answer it would fail the batch, or not,
    as the answers happened to arrive)."""
    refused = threading.Event()

    def answer(req: Request):
        if b"DROP TABLE" in req.body:
            refused.set()
            return 403, {}, "Request blocked"
        refused.wait(20)  # the others are answered after the 403 (a fail-safe bound only)
        return 200, {}, ""

    payloads = [{"n": i, "q": "DROP TABLE" if i == 3 else "ok"} for i in range(4)]
    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, concurrency=4)
        result = sink.write_batch(sink.prepare(events(payloads)), None)
        sink.close()
    assert refused.is_set() and len(srv.requests) == 4
    assert [(ev.value["n"], ev.failure.reason) for ev in result.rejected] == [
        (3, "HTTP 403: Request blocked")
    ]


def test_http_sink_a_records_403_counted_once_when_its_request_is_split():
    """A batch mode's request refused with 403 is sent again in halves: the half holding the
    blocked record gets the 403 again. That was counted as a second request refused, so with
    the other half not taken (answered 503 and not retried: ``max_attempts: 1``, or a Lambda's
    time spent) the write had "two requests
    refused, none taken" and failed the batch as the credentials' — a run stopped as
    misconfigured for one record's content. A split request's 403 is its halves' now: the
    blocked record is dead-lettered and the other one fails for a retry."""

    def answer(req: Request):
        if b"DROP TABLE" in req.body:
            return 403, {}, "Request blocked"
        return 503, {}, "busy"

    payloads = [{"n": 0, "q": "DROP TABLE users"}, {"n": 1, "q": "hello"}]
    with LocalHttp(answer) as srv:
        sink = make_sink(srv.url, mode="json_batch", batch_size=2, max_attempts=1)
        result = sink.write_batch(sink.prepare(events(payloads)), None)
        sink.close()
    assert [(ev.value["n"], ev.failure.reason) for ev in result.rejected] == [
        (0, "HTTP 403: Request blocked")
    ]
    assert [ev.value["n"] for ev in result.failed] == [1]
