"""KCL record processor: the MultiLangDaemon's five lifecycle hooks, delegating to the engine.

The daemon starts one process per shard lease: ``python -m squall.deploy.kcl TOPOLOGY``. Records
arrive already de-aggregated by the KCL (with sub-sequence numbers). After each batch the
processor checkpoints the engine's safe position. Two rules keep the at-least-once promise,
because amazon-kclpy swallows exceptions from ``process_records`` and reports the batch done:

- a batch whose dependency stays down is retried here, with capped backoff, until it succeeds
  or the lease is lost — the shard waits rather than skipping records;
- records that failed with nowhere to go (no dead-letter sink) are not skippable: the processor
  checkpoints the position before the first of them and exits, so the daemon restarts the shard
  from that checkpoint.

stdout is the daemon's protocol channel: logs go to stderr (the daemon logs them at ERROR).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from squall import redact
from squall.errors import BatchFailed, SquallError
from squall.event import Position, Record, RecordMeta
from squall.topology.executor import Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load
from squall.topology.model import Topology

log = logging.getLogger("squall.kcl")

EXIT_RECORDS_FAILED = 3


def check_kcl_safe(topology: Topology) -> None:
    """Refuse sinks that write to stdout: under the KCL it is the daemon's protocol channel."""
    for sink in topology.sinks:
        if sink.type == "stdout":
            raise SquallError(f"sink '{sink.id}': the stdout sink cannot run under the KCL "
                              "(stdout is the MultiLangDaemon protocol channel)")


class RecordProcessor:
    """A v3 amazon-kclpy record processor over a squall engine (duck-typed; no kclpy import needed)."""

    version = 3

    def __init__(self, engine: Engine, *, stream: str = "", sleep: Callable[[float], None] = time.sleep,
                 max_backoff: float = 30.0):
        self.engine = engine
        self.stream = stream
        self.shard_id = ""
        self._sleep = sleep
        self._max_backoff = max_backoff
        self.last_checkpoint: Position | None = None

    def initialize(self, initialize_input) -> None:
        self.shard_id = initialize_input.shard_id
        self.engine.open()
        log.info("shard %s: starting at %s", self.shard_id, initialize_input.sequence_number)

    def process_records(self, process_records_input) -> None:
        records = [self._record(r) for r in process_records_input.records]
        if not records:
            return
        backoff = 1.0
        while True:
            try:
                result = self.engine.process(records)
                break
            except BatchFailed as exc:
                log.error("shard %s: %s; retrying the batch in %.0fs", self.shard_id, exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        position = result.checkpoint.get(self.shard_id)
        if position is not None:
            self._checkpoint(process_records_input.checkpointer, position)
        if not result.ok:
            first = result.failed[0]
            log.error("shard %s: record %s failed in %s: %s; exiting so the daemon restarts from the checkpoint",
                      self.shard_id, first.position.sequence_number, first.component, first.reason)
            sys.exit(EXIT_RECORDS_FAILED)

    def lease_lost(self, lease_lost_input) -> None:
        log.warning("shard %s: lease lost", self.shard_id)

    def shard_ended(self, shard_ended_input) -> None:
        # KCL rule: checkpoint at SHARD_END so the child shards can start.
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input) -> None:
        if self.last_checkpoint is not None:
            self._checkpoint(shutdown_requested_input.checkpointer, self.last_checkpoint)
        self.engine.close()

    def _checkpoint(self, checkpointer, position: Position) -> None:
        checkpointer.checkpoint(position.sequence_number, position.sub_sequence_number)
        self.last_checkpoint = position

    def _record(self, r) -> Record:
        ms = r.timestamp_millis
        arrival = datetime.fromtimestamp(ms / 1000.0, UTC) if ms else None
        return Record(r.binary_data, RecordMeta(self.stream, self.shard_id, r.sequence_number,
                                                r.sub_sequence_number or 0, r.partition_key or "", arrival))


def main(argv: list[str] | None = None) -> None:
    """Entry point the daemon runs: ``python -m squall.deploy.kcl TOPOLOGY [STREAM]``."""
    from amazon_kclpy import kcl

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    redact.install()
    topology = load(args[0])
    check_kcl_safe(topology)
    engine = Engine(compile_plan(topology))
    kcl.KCLProcess(RecordProcessor(engine, stream=args[1] if len(args) > 1 else "")).run()


if __name__ == "__main__":
    main()
