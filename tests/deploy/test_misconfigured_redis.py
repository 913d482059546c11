"""A Redis the topology cannot use for good — a wrong or missing password, an ACL that does not
allow the command — is a misconfiguration, not an outage: the batch fails at once with a
``SinkError`` (nothing retried, no record dead-lettered, nothing checkpointed) and the KCL record
processor exits with ``EXIT_MISCONFIGURED``. redis-py makes ``AuthenticationError`` a
``ConnectionError``, so it used to be waited for as an outage (the KCL processor for ever), and
an ACL refusal (``NOPERM``) escaped as each record's own fault. A private redis-server with a
password on another loopback port; the shared one is not touched."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from squall.deploy.kcl import EXIT_MISCONFIGURED, RecordProcessor
from squall.errors import BatchFailed, SinkError
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.deploy.test_misconfigured_database import Waited, no_wait
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records
from tests.private_redis import private_redis_server

PASSWORD = "redis-pw-5c1e"
ACL_USER, ACL_PASSWORD = "pinger", "pinger-pw-77"  # may connect and PING, nothing else

SUBSCRIPTION = """
name: misconfigured-redis
resources: {{state: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subs, type: subscription, store: state}}
sinks:
  - {{id: out, type: stdout}}
"""

LOOKUP = """
name: misconfigured-redis-lookup
resources: {{apps: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: app, type: lookup, key: app_id, target: app, source: {{type: redis, resource: apps}}}}
sinks:
  - {{id: out, type: stdout}}
"""

REGISTER = {"event_type": "register", "device_token": "k", "timestamp": "2024-05-01T10:00:00Z"}


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory) -> Iterator[int]:
    directory: Path = tmp_path_factory.mktemp("locked-redis")
    with private_redis_server(directory, "--requirepass", PASSWORD) as port:
        admin = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)
        admin.execute_command(
            "ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "-@all", "+ping", "+hello"
        )
        admin.close()
        yield port


def urls(port: int) -> dict[str, str]:
    return {
        "wrong password": f"redis://:not-{PASSWORD}@127.0.0.1:{port}/0",
        "no password": f"redis://127.0.0.1:{port}/0",
        "ACL refusal": f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}/0",
    }


@pytest.mark.parametrize("case", ["wrong password", "no password", "ACL refusal"])
@pytest.mark.parametrize("template", [SUBSCRIPTION, LOOKUP], ids=["subscription", "lookup"])
def test_a_redis_refusing_for_good_fails_the_batch_at_once_as_a_sink_error(
    locked_redis: int, case: str, template: str
):
    engine = Engine.for_topology(load_text(template.format(url=urls(locked_redis)[case])))
    with pytest.raises(BatchFailed) as failed:
        engine.process(records_from([{**REGISTER, "app_id": "a"}, {**REGISTER, "app_id": "b"}]))
    assert failed.value.attempts == 1  # before: 3 attempts (a wrong password looked like an outage)
    assert isinstance(failed.value.__cause__, SinkError)  # not two records' faults (NOPERM)
    assert "not an outage" in str(failed.value) and PASSWORD not in str(failed.value)


def test_kcl_stops_on_a_wrong_redis_password_instead_of_waiting(locked_redis: int, caplog):
    url = urls(locked_redis)["wrong password"]
    slept: list[float] = []
    engine = Engine.for_topology(load_text(SUBSCRIPTION.format(url=url)))
    processor = RecordProcessor(engine, stream="s", sleep=no_wait(slept))
    cp = KclCheckpointer()
    kcl_initialize().dispatch(cp, processor)  # Redis is not touched before the first batch
    with caplog.at_level(logging.ERROR, logger="squall.kcl"), pytest.raises(SystemExit) as exited:
        try:
            kcl_process_records([REGISTER], start=100).dispatch(cp, processor)
        except Waited as exc:  # the failure before the fix: waited as for an outage
            pytest.fail(str(exc))
    assert exited.value.code == EXIT_MISCONFIGURED
    assert slept == [] and cp.calls == []
    assert any("AuthenticationError" in r.getMessage() for r in caplog.records)
    assert not any(PASSWORD in r.getMessage() for r in caplog.records)
