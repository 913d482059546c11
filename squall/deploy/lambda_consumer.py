"""Lambda stream consumer: a Kinesis event-source-mapping batch in, ``batchItemFailures`` out.

Deploy with ``FunctionResponseTypes: [ReportBatchItemFailures]`` on the event source mapping.
Lambda then checkpoints everything before the lowest reported sequence number and retries from
it — the same "stop at the first failed record" rule the engine applies per shard. A batch whose
dependency stays down after the engine's retries reports its first record, so Lambda retries
the whole batch; nothing is acknowledged that was not committed or dead-lettered.

Handler module (packaged with your topology):

    from squall.deploy.lambda_consumer import make_handler
    handler = make_handler("topology.yaml")   # loads and opens resources at init, outside the handler
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from squall.errors import BatchFailed
from squall.event import Record, RecordMeta
from squall.topology.executor import BatchResult, Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load

log = logging.getLogger("squall.lambda")


def records_from_event(event: dict[str, Any]) -> list[Record]:
    """Kinesis records of a Lambda event (base64 data, shard id from ``eventID``)."""
    out = []
    for r in event.get("Records", []):
        k = r["kinesis"]
        shard_id = r.get("eventID", "").split(":", 1)[0] or "unknown"
        stream = r.get("eventSourceARN", "").rsplit("/", 1)[-1]
        arrival = k.get("approximateArrivalTimestamp")
        out.append(Record(base64.b64decode(k["data"]), RecordMeta(
            stream=stream, shard_id=shard_id, sequence_number=k["sequenceNumber"],
            partition_key=k.get("partitionKey", ""),
            arrival_time=datetime.fromtimestamp(arrival, UTC) if arrival is not None else None)))
    return out


def batch_item_failures(records: list[Record], result: BatchResult | None) -> dict[str, list[dict[str, str]]]:
    """The response: per shard, the sequence number of its first failed record (Lambda retries from there)."""
    firsts: dict[str, str] = {}
    if result is None:  # the whole batch failed: retry it from its first record of each shard
        for r in records:
            firsts.setdefault(r.meta.shard_id, r.meta.sequence_number)
    else:
        for o in result.failed:
            firsts.setdefault(o.shard_id, o.position.sequence_number)
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in firsts.values()]}


def warn_about_local_dead_letters(topology) -> None:
    """A dead-letter file lives on the container's disk, which Lambda discards: say so at init."""
    for sink in topology.sinks:
        if sink.type == "dead_letter":
            log.warning("sink '%s' writes dead letters to a local file, lost with the Lambda container: "
                        "use type dead_letter_table (a SQL table) instead", sink.id)


def make_handler(topology_path: str | Path) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler for a topology; resources open now (the init phase), once per container."""
    topology = load(topology_path)
    warn_about_local_dead_letters(topology)
    # Lambda retries from a sequence number: every user record of a KPL aggregate comes again.
    engine = Engine(compile_plan(topology), whole_records=True).open()

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        records = records_from_event(event)
        try:
            result = engine.process(records)
        except BatchFailed as exc:
            log.error("batch of %d records failed: %s", len(records), exc)
            return batch_item_failures(records, None)
        for o in result.failed[:10]:
            log.error("record %s (%s) failed in %s: %s", o.position.sequence_number, o.shard_id, o.component,
                      o.reason)
        return batch_item_failures(records, result)

    handler.engine = engine  # type: ignore[attr-defined] - for tests and shutdown hooks
    return handler
