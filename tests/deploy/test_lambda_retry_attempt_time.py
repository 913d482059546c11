"""A dependency down whose every attempt takes seconds (a database's lock or connect wait, SQLite's
busy timeout) inside a Lambda invocation: the engine retried it whenever the retry's *backoff* fit
in the time left, though the next attempt would take as long again. Measured under AWS's runtime
client with the topology's SQLite warehouse locked by another process (5 s busy timeout, 8 s
left): the second attempt began with 2.9 s left and the invocation ran 10.1 s — in Lambda, killed
at its timeout, and the whole batch, committed slices too, delivered again. A retry is now made
only when its backoff and another attempt as long as the last fit in the time left.

The test's clock is the deadline's and the engine's: each call of the bolt "takes" 6 s of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from squall.bolts import Bolt, Output
from squall.deploy.lambda_consumer import make_handler
from squall.errors import TransientError
from tests.factories import kinesis_lambda_event

TIMEOUT_S = 20.0
ATTEMPT_S = 6.0


class Clock:
    now = 0.0


class LockedBolt(Bolt):
    """Each call waits ``ATTEMPT_S`` on a lock (of the test's clock), then gives up: an outage."""

    calls = 0

    def process(self, batch) -> Output:
        LockedBolt.calls += 1
        Clock.now += ATTEMPT_S
        raise TransientError("registry: database is locked")


class Context:
    function_name = "consumer"

    def get_remaining_time_in_millis(self) -> float:
        return (TIMEOUT_S - Clock.now) * 1000


TOPOLOGY = f"""
name: lambda-attempt-time
spout: {{type: stdin}}
settings: {{retry: {{attempts: 8, initial_backoff: 0.01, max_backoff: 0.01}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: locked, type: "{__name__}:LockedBolt"}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink"}}
"""


def test_a_retry_is_not_made_when_another_attempt_as_long_would_outlast_the_invocation(
    tmp_path: Path, caplog
):
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    handler = make_handler(topology)
    handler.engine._clock = lambda: Clock.now
    handler.engine._sleep = lambda seconds: None
    handler.engine._rng = lambda: 1.0  # the backoff is its ceiling, 0.01 s
    Clock.now, LockedBolt.calls = 0.0, 0
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}])
    with caplog.at_level(logging.WARNING, logger="squall.engine"):
        answer = handler(event, Context())
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": first}]}
    # attempts at 0 s and 6 s were retried (13 s and 7 s left less the 1 s margin); the one
    # ending at 18 s was not (1 s left, another would end at 24 s): the answer came in time
    assert LockedBolt.calls == 3
    assert Clock.now <= TIMEOUT_S
    assert "not retried: 1.00s left, 0.01s of backoff and 6.00s for another attempt" in caplog.text
