"""Without a terminal, `squall run` logs a progress line every `--log-interval` seconds (README,
CLI; docs/operating.md) — also while its Kinesis stream is idle: the polls that bring nothing
still report the lag (0: caught up), and an operator reading the log must tell an idle consumer
from a stalled one. The KCL's idle `process_records` take the same path."""

from __future__ import annotations

import io
import logging

from squall.observability.metrics import Recorder
from squall.observability.progress import PeriodicLog, Totals


def _periodic(now: list[float]) -> tuple[Recorder, io.StringIO]:
    totals = Totals(clock=lambda: now[0])
    stream = io.StringIO()
    logger = logging.getLogger("squall.test.idle_progress")
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    periodic = PeriodicLog(totals, 10.0, clock=lambda: now[0], logger=logger)
    return Recorder("idle", [totals, periodic]), stream


def test_idle_polls_log_progress_every_interval():
    now = [0.0]
    recorder, stream = _periodic(now)
    for _ in range(25):  # an idle poll a second for 25 s, no batch
        now[0] += 1.0
        recorder.lag({"shardId-000000000000": 0})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # at 10 and 20 s
    assert lines[-1] == "progress: batches=0 records=0 committed=0 dead_lettered=0 filtered=0 " + (
        "failed=0 held=0 rate_per_s=0.0 lag_ms=0"
    )


def test_polls_between_lines_do_not_log():
    now = [0.0]
    recorder, stream = _periodic(now)
    now[0] += 9.0
    recorder.lag({"shardId-000000000000": 1200})
    assert stream.getvalue() == ""
