"""The engine's retry of a ``TransientError`` and the wait it asks for (``retry_after``): a wait
that is not a number or is negative counts for nothing, one beyond ``MAX_RETRY_AFTER`` (a day's
quota, ``inf``) is cut to it. ``inf`` made the retry's sleep raise OverflowError out of the
retry loop; a huge wait parked the batch for as long."""

from __future__ import annotations

import math

import pytest

from squall.errors import TransientError
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import MemorySink, records_from, topology_from
from squall.topology.executor import MAX_RETRY_AFTER, Engine

ASKED: list[float] = []


class AskingSink(MemorySink):
    """Refuses its first write as a dependency asking to wait ``ASKED[0]`` seconds."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if not getattr(self, "asked", False):
            self.asked = True
            raise TransientError("throttled", retry_after=ASKED[0])
        return super().write_batch(prepared, ctx)


@pytest.mark.parametrize(
    ("asked", "waited"),
    [
        (math.inf, MAX_RETRY_AFTER),
        (1e12, MAX_RETRY_AFTER),
        # an int no float holds (a sink of yours): float() raised OverflowError out of the loop
        pytest.param(10**400, MAX_RETRY_AFTER, id="int-beyond-float"),
        (42.0, 42.0),
        (math.nan, None),  # the engine's own backoff
        (-5.0, None),
    ],
)
def test_the_wait_a_transient_error_asks_for_is_bounded(asked, waited):
    ASKED[:] = [asked]
    slept: list[float] = []
    engine = Engine(
        topology_from(
            f"""
name: t
spout: {{type: stdin}}
settings: {{retry: {{attempts: 3, initial_backoff: 0.5, max_backoff: 0.5}}}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: "{__name__}:AskingSink"}}
"""
        ).plan,
        sleep=slept.append,
    )
    with engine:
        engine.process(records_from([{"n": 1}]))
        out = next(c for c in engine.components if c.id == "out")
        assert len(out.store) == 1
    assert len(slept) == 1 and math.isfinite(slept[0])
    if waited is None:
        assert 0.0 <= slept[0] <= 0.5
    else:
        assert slept[0] == waited
