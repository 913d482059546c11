"""The HTTP lookup source's ``fail_key_after``: the attempts in a row a key answered 500 (while
the endpoint answers others) is retried with the batch before its events fail — fixed at 3
before. A topology whose ``settings.retry.attempts`` gives up on the batch before that is told
at start, at the option. Against a real HTTP server on 127.0.0.1 (``Endpoint``)."""

from __future__ import annotations

import logging

import pytest

from squall.bolts.lookup import LookupBolt
from squall.component import ComponentContext
from squall.errors import TopologyError
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.loader import load
from squall.topology.outcomes import Outcome
from tests.bolts.test_lookup import RECORDS, Endpoint, make_bolt, run
from tests.bolts.test_lookup_unanswered import GET, REASON, attempt_fails, unanswerable
from tests.enrichment.support import resources


def _bolt(ep: Endpoint, **source):
    return make_bolt(
        resources(),
        key="app_id",
        source={"type": "http", "url": GET.format(ep=ep.url), **source},
    )


def test_fail_key_after_1_fails_the_keys_events_at_the_first_attempt():
    """No retry of the batch: key 9's events are dead-lettered at once, the rest enriched."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        bolt = _bolt(ep, fail_key_after=1)
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 9}])
        assert ok == {0: {"name": "Weather"}}
        assert failed == {1: REASON.format(ep=ep.url, n=1).replace("attempts", "attempt")}
        bolt.close()


def test_fail_key_after_5_retries_the_batch_four_times_first():
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        bolt = _bolt(ep, fail_key_after=5)
        for _ in range(4):
            error = attempt_fails(bolt, [{"app_id": 1}, {"app_id": 9}], "HTTP 500 for key '9'")
            assert "on 5 attempt(s) in a row fails its events" in str(error)
        assert run(bolt, [{"app_id": 1}, {"app_id": 9}])[1] == {1: REASON.format(ep=ep.url, n=5)}
        bolt.close()


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_fail_key_after_below_1_is_refused_at_load(value):
    with pytest.raises(ValueError, match="fail_key_after"):
        LookupBolt.Config(
            id="apps",
            type="lookup",
            key="app_id",
            target="app",
            source={"type": "http", "url": "http://h/{key}", "fail_key_after": value},
        )


def test_fail_key_after_is_not_part_of_the_shared_caches_default_prefix():
    """How many strikes a key gets changes nothing of what the endpoint answers: the prefix (and
    so a warm shared cache) is the same, and the same as before the option existed (the prefix
    of tests/bolts/test_kiosk_review.py's release before)."""

    def prefix(**source) -> str:
        config = LookupBolt.Config(
            id="kiosk",
            type="lookup",
            key="k",
            target="t",
            source={"type": "http", "url": "https://api.example/v1/kiosks/{key}", **source},
        )
        return LookupBolt(config, ComponentContext("orders"))._default_prefix()

    assert prefix(fail_key_after=7) == prefix() == "squall:lookup:orders:kiosk:be083ca334d0:"


def _topology(ep: Endpoint, name: str, attempts: int, fail_key_after: int | None) -> str:
    option = f", fail_key_after: {fail_key_after}" if fail_key_after is not None else ""
    return f"""name: lookup
spout: {{type: stdin}}
settings: {{retry: {{attempts: {attempts}}}}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: http, url: "{ep.url}/apps/{{key}}"{option}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {name}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {name}-dlq}}
"""


def test_with_fewer_retry_attempts_fail_key_after_settles_the_batch_in_one_delivery(unique_name):
    """``settings.retry.attempts: 2``: with ``fail_key_after: 2`` one delivery dead-letters key
    9's record (with the fixed 3, the batch failed at every delivery of ``squall run``)."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, {"9"})
        waits: list[float] = []
        result = run_topology(
            _topology(ep, unique_name, attempts=2, fail_key_after=2),
            records_from([{"app_id": 1}, {"app_id": 9}]),
            sleep=waits.append,
        )
        assert [o.outcome for o in result.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
        assert len(waits) == 1
        [dead] = MemorySink.stores[f"{unique_name}-dlq"]
        assert dead.failure.reason == REASON.format(ep=ep.url, n=2).replace("?token=secret", "")


@pytest.mark.parametrize("fail_key_after", [None, 3])
def test_more_strikes_than_retry_attempts_is_a_start_warning_at_the_option(
    tmp_path, caplog, unique_name, fail_key_after
):
    """The default (3) or a set ``fail_key_after`` over ``settings.retry.attempts``: the
    warning names the file and line, both numbers and what to change."""
    with Endpoint(RECORDS) as ep:
        path = tmp_path / "lookup.yaml"
        path.write_text(_topology(ep, unique_name, attempts=2, fail_key_after=fail_key_after))
        with caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
            run_topology(load(path), records_from([{"app_id": 1}]))
        [line] = [r.getMessage() for r in caplog.records if r.name == "squall.bolts.lookup"]
        assert line.startswith(f"{path}:10:")
        assert "fail_key_after" in line and "attempt 3 in a row" in line
        assert "settings.retry.attempts is 2" in line
        assert "set fail_key_after to 2 or less, or settings.retry.attempts to 3 or more" in line


@pytest.mark.parametrize(("attempts", "fail_key_after"), [(3, None), (5, 5), (1, 1)])
def test_no_warning_when_the_retries_reach_fail_key_after(
    caplog, unique_name, attempts, fail_key_after
):
    with Endpoint(RECORDS) as ep:
        yaml = _topology(ep, unique_name, attempts=attempts, fail_key_after=fail_key_after)
        with caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
            run_topology(yaml, records_from([{"app_id": 1}]))
        assert not [r for r in caplog.records if r.name == "squall.bolts.lookup"]


def test_fail_key_after_is_an_http_option_only():
    with pytest.raises((ValueError, TopologyError), match="fail_key_after"):
        LookupBolt.Config(
            id="apps",
            type="lookup",
            key="app_id",
            target="app",
            source={"type": "redis", "resource": "cache", "fail_key_after": 2},
        )
