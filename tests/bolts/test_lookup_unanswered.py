"""An HTTP lookup source answering 500 for some keys while it answers others: after repeated
attempts those keys' events fail, not the batch; an endpoint answering no key, a 429/502/503/504
or a timeout stay an outage. Against a real HTTP server on 127.0.0.1 (``Endpoint``)."""

from __future__ import annotations

import copy
import io
import json
import threading

import pytest
import redis

from squall.errors import TransientError
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.bolts.test_lookup import RECORDS, Endpoint, make_bolt, run
from tests.enrichment.support import make_batch, resources


def unanswerable(ep: Endpoint, keys: set[str], status: int = 500, headers=None) -> None:
    """The endpoint answers ``status`` for a GET of one of ``keys`` and for a POST naming one of
    them; every other request as before (``ep.status`` set: every request with it)."""
    handler = ep.server.RequestHandlerClass
    plain_get, plain_post = handler.do_GET, handler.do_POST

    def answer(self) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_get(self):
        if self.path.split("?")[0].rsplit("/", 1)[-1] in keys and not ep.status:
            ep.requests.append(("GET", self.path))
            return answer(self)
        return plain_get(self)

    def do_post(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        asked = json.loads(body)["keys"]
        if keys & set(asked) and not ep.status:
            ep.requests.append(("POST", ",".join(asked)))
            return answer(self)
        self.rfile = io.BytesIO(body)
        return plain_post(self)

    handler.do_GET, handler.do_POST = do_get, do_post


def attempt_fails(bolt, values: list, match: str) -> TransientError:
    """The batch raises ``TransientError`` (retried by the engine) with every event untouched."""
    batch = make_batch(values)
    before = copy.deepcopy([e.value for e in batch])
    with pytest.raises(TransientError, match=match) as info:
        bolt.process(batch)
    assert [e.value for e in batch] == before and all(e.failure is None for e in batch)
    return info.value


GET = "{ep}/apps/{{key}}?token=secret"
REASON = (
    "lookup endpoint {ep}/apps/{{key}} answered HTTP 500 for key '9', on {n} attempts in a row "
    "while it answered other keys"
)


def test_a_key_answered_500_while_others_are_answered_fails_its_events_after_retries():
    """The service cannot answer key 9 and answers every other key: the batch is retried (it
    may be a blip), and on the third attempt in a row key 9's events are dead-lettered with the
    endpoint, the key and the status — the rest is enriched. It failed the batch at every
    attempt and delivery: the shard stalled behind one record for good."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": GET.format(ep=ep.url)}
        )
        values = [{"app_id": 1}, {"app_id": 9}, {"app_id": 2}, {"app_id": 9}]
        first = attempt_fails(bolt, values, "HTTP 500 for key '9'")
        assert "1 of 3 key(s) asked" in str(first) and "secret" not in str(first)
        assert sorted(p for _, p in ep.requests) == [
            "/apps/1?token=secret",
            "/apps/2?token=secret",
            "/apps/9?token=secret",
        ]
        # the keys answered were cached: the retry asks key 9, and one cached key (the probe:
        # is the endpoint up?) when key 9 is the only one asked
        ep.requests.clear()
        attempt_fails(bolt, values, "HTTP 500 for key '9'")
        assert sorted(p for _, p in ep.requests) == ["/apps/2?token=secret", "/apps/9?token=secret"]
        ok, failed, _ = run(bolt, values)
        assert ok == {0: {"name": "Weather"}, 2: {"name": "Chess"}}
        assert failed == {1: REASON.format(ep=ep.url, n=3), 3: REASON.format(ep=ep.url, n=3)}
        # Known to fail: its next batch dead-letters it at once (no three attempts each time)
        ok, failed, _ = run(bolt, [{"app_id": 9}, {"app_id": 1}], 10)
        assert ok == {1: {"name": "Weather"}} and failed == {0: REASON.format(ep=ep.url, n=4)}
        bolt.close()


def test_a_known_bad_key_during_an_outage_is_the_outage_not_its_failure():
    """Each strike needs the endpoint seen answering: when it answers nothing (the probe too),
    a key that failed before is retried with the batch as every key is — never dead-lettered
    for the outage. Answered again, it loses its strikes."""
    with Endpoint(RECORDS) as ep:
        bad = {"9"}
        unanswerable(ep, bad)
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": GET.format(ep=ep.url)}
        )
        for _ in range(2):
            attempt_fails(bolt, [{"app_id": 1}, {"app_id": 9}], "HTTP 500")
        assert run(bolt, [{"app_id": 1}, {"app_id": 9}])[1] == {1: REASON.format(ep=ep.url, n=3)}
        ep.status = 500  # now failing every request: the probe (key 1) too
        for _ in range(3):
            error = attempt_fails(bolt, [{"app_id": 1}, {"app_id": 9}], "HTTP 500")
            assert str(error) == f"lookup endpoint {ep.url}/apps/{{key}}: HTTP 500"
        ep.status = None
        ep.records = {**RECORDS, "9": {"name": "Fixed"}}
        bad.clear()  # the service answers key 9 again
        bolt._found.clear()
        ok, failed, _ = run(bolt, [{"app_id": 9}])
        assert ok == {0: {"name": "Fixed"}} and not failed and not bolt._strikes
        bolt.close()


def test_with_no_key_to_probe_a_500_for_the_only_key_asked_is_an_outage():
    """A process that never had an answer, and a batch of that one key: nothing tells a key the
    endpoint cannot answer from an outage, so it stays the dependency's (as before)."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": GET.format(ep=ep.url)}
        )
        for _ in range(4):
            error = attempt_fails(bolt, [{"app_id": 9}, {"app_id": 9}], "HTTP 500")
            assert "answered others" not in str(error)
        assert not bolt._strikes
        bolt.close()


def test_a_batch_post_answered_500_for_one_key_is_split_to_it():
    """With `batch_url`: a POST answered 500 by an endpoint that answers other POSTs is split in
    halves to the key it cannot answer; that key fails as a GET's does. A process with no key
    to probe with asks the halves first: one answering shows the endpoint up."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        batch_url = ep.url + "/apps:batch?token=secret"
        bolt = make_bolt(resources(), key="app_id", source={"type": "http", "batch_url": batch_url})
        values = [{"app_id": 1}, {"app_id": 9}, {"app_id": 2}, {"app_id": 3}]
        attempt_fails(bolt, values, "HTTP 500 for key '9'")
        assert ep.requests == [
            ("POST", "1,9,2,3"),
            ("POST", "1,9"),  # not known yet whether the endpoint is up
            ("POST", "2,3"),  # answered: it is, and "1,9" is split (not asked again)
            ("POST", "1"),
            ("POST", "9"),
        ]
        ep.requests.clear()
        attempt_fails(bolt, values, "HTTP 500 for key '9'")
        assert ep.requests == [("POST", "9"), ("POST", "1")]  # key 9, then the probe
        ok, failed, _ = run(bolt, values)
        assert ok == {0: {"name": "Weather"}, 2: {"name": "Chess"}, 3: None}
        reason = REASON.format(ep=ep.url, n=3).replace("/apps/{key}", "/apps:batch")
        assert failed == {1: reason}
        # down for every key: an outage after a POST and the probe, not a POST per half
        ep.requests.clear()
        ep.status = 500
        attempt_fails(bolt, [{"app_id": 4}, {"app_id": 5}, {"app_id": 1}], "HTTP 500")
        assert ep.requests == [("POST", "4,5"), ("POST", "1")]
        # nothing to probe with (a cold process): the halves of the first POST, no more
        ep.requests.clear()
        cold = make_bolt(resources(), key="app_id", source={"type": "http", "batch_url": batch_url})
        attempt_fails(cold, values, "HTTP 500")
        assert ep.requests == [("POST", "1,9,2,3"), ("POST", "1,9"), ("POST", "2,3")]
        cold.close()
        bolt.close()


@pytest.mark.parametrize("status", [500, 429, 502, 503, 504])
def test_retry_after_is_the_retrys_wait_and_availability_statuses_are_never_a_keys(status):
    """A 500's Retry-After is the retry's minimum wait. 429 (the endpoint's quota), 502, 503 and
    504 (a gateway, overload, maintenance) say the endpoint cannot serve now, whatever the key:
    never a key's failure however many attempts — an overloaded service answering 503 to random
    keys would otherwise dead-letter whichever drew three in a row."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"}, status, {"Retry-After": "7"})
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": GET.format(ep=ep.url)}
        )
        for _ in range(2 if status == 500 else 5):
            error = attempt_fails(bolt, [{"app_id": 1}, {"app_id": 9}], f"HTTP {status}")
            assert error.retry_after == 7
        if status == 500:
            assert list(run(bolt, [{"app_id": 1}, {"app_id": 9}])[1]) == [1]
        bolt.close()


def test_a_key_not_answered_in_time_is_an_outage_not_its_failure():
    """A timeout says the endpoint is slow, not that the key is bad (under load keys time out
    at random): retried with the batch every time, never a strike."""
    with Endpoint(RECORDS) as ep:
        release = threading.Event()
        handler = ep.server.RequestHandlerClass
        plain_get = handler.do_GET

        def do_get(self):
            if self.path.startswith("/apps/slow"):
                # answered after the test, never within the timeout (1 s: the other key,
                # answered at once, has ample time even on a loaded machine)
                release.wait(30)
            return plain_get(self)

        handler.do_GET = do_get
        try:
            bolt = make_bolt(
                resources(),
                key="app_id",
                source={"type": "http", "url": ep.url + "/apps/{key}", "timeout": 1.0},
            )
            for _ in range(3):
                attempt_fails(bolt, [{"app_id": 1}, {"app_id": "slow"}], "ReadTimeout")
            assert not bolt._strikes
            bolt.close()
        finally:
            release.set()


def test_shared_cache_keeps_the_answered_keys_and_never_the_unanswered_one(redis_url, redis_prefix):
    """What the endpoint answered in a failing attempt is written to the shared cache (a retry,
    or another process, does not ask it again); the unanswered key is not cached as missing."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        bolt = make_bolt(
            resources(cache=redis_url),
            key="app_id",
            source={"type": "http", "url": GET.format(ep=ep.url)},
            shared_cache={"resource": "cache", "key_prefix": redis_prefix},
        )
        values = [{"app_id": 1}, {"app_id": 9}, {"app_id": 404}]
        attempt_fails(bolt, values, "HTTP 500")
        client = redis.Redis.from_url(redis_url)
        assert json.loads(client.get(f"{redis_prefix}1")) == [{"name": "Weather"}]
        assert client.get(f"{redis_prefix}404") == b"[]"
        assert client.get(f"{redis_prefix}9") is None
        attempt_fails(bolt, values, "HTTP 500")
        assert run(bolt, values)[1] == {1: REASON.format(ep=ep.url, n=3)}
        assert client.get(f"{redis_prefix}9") is None
        client.close()
        bolt.close()


def test_through_the_engine_the_key_is_dead_lettered_and_the_batch_checkpointed(unique_name):
    """The engine's retries (settings.retry) are the attempts: one delivery settles the batch,
    key 9's records dead-lettered with the reason, the others written."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        yaml = f"""
name: lookup
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: http, url: "{ep.url}/apps/{{key}}"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {unique_name}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}-dlq}}
"""
        waits: list[float] = []
        result = run_topology(
            yaml,
            records_from([{"app_id": 1}, {"app_id": 9}, {"app_id": 2}]),
            sleep=waits.append,
        )
        assert [o.outcome for o in result.outcomes] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
        assert len(waits) == 2  # two retries, the third attempt settles it
        names = [e.value["app"]["name"] for e in MemorySink.stores[unique_name]]
        assert names == ["Weather", "Chess"]
        [dead] = MemorySink.stores[f"{unique_name}-dlq"]
        assert dead.value == {"app_id": 9} and dead.failure.component == "app"
        assert dead.failure.reason == REASON.format(ep=ep.url, n=3)
