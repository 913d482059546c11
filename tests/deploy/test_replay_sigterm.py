"""``squall replay`` stopped by SIGTERM (a service manager's stop, ``timeout``) finishes the batch
in flight and exits 130, as Ctrl-C does and as ``squall run`` does for both (README). It
handled SIGINT only: SIGTERM killed it mid-batch, without a summary."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

from squall.deploy.replay import Replayer, ReplayReport
from squall.event import Record
from squall.testing import records_from
from squall.topology.loader import load

TOPOLOGY = """
name: replay-sigterm
spout: {type: file, path: unused.jsonl}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: 'squall.testing:MemorySink'}]
"""


class NotHandled(Exception):
    """SIGTERM reached the test's own handler: the replay had none of its own."""


def test_sigterm_finishes_the_batch_in_flight_and_exits_130(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    topology = load(path)
    records = records_from([{"n": i} for i in range(1000)])

    def stopped_after_the_first_batch() -> Iterator[Record]:
        for i, record in enumerate(records):
            if i == 100:  # the first batch is through: the stop comes while the next is read
                os.kill(os.getpid(), signal.SIGTERM)
            yield record

    def refuse(signum, frame):
        raise NotHandled

    previous = signal.signal(signal.SIGTERM, refuse)
    try:
        report = Replayer(topology, batch_size=100).run(
            stopped_after_the_first_batch(), ReplayReport()
        )
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert report.interrupted and not report.aborted
    assert report.batches == 2  # the batch being read when it came was finished, then no more
    assert report.exit_code == 130
    assert after is refuse  # the handler it replaced, given back
