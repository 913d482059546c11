"""Lambda triggers besides Kinesis: SQS (partial batch response) and S3 object-created events.

``make_handler`` (``squall.deploy.lambda_consumer``) hands an event here when its records come
from ``aws:sqs`` or ``aws:s3``; the same engine runs them, and only the answer differs:

- **SQS** (event source mapping with ``FunctionResponseTypes: [ReportBatchItemFailures]``): the
  response lists the message id of every message that is not committed, dead-lettered or
  filtered; Lambda deletes the others. For FIFO queues the later messages of a group after a
  failed one are listed too, so the group keeps its order (AWS requires this). A batch whose
  dependency stays down lists every message.
- **S3** (asynchronous invocation per ``s3:ObjectCreated:*`` notification): each object named is
  read (on a versioned bucket, the version the event names; JSON lines, gzip detected) and its
  lines run through the engine in ``batch_size`` slices.
  A truncated or corrupt gzip object is one dead letter naming it (``squall.spouts.s3``).
  If any line fails, the handler raises, so Lambda retries the event (twice, then its on-failure
  destination); event ids come from bucket, key and line, so a retry adds nothing to idempotent
  sinks and dead letters.

Each engine batch goes through the invocation's recorder, as a Kinesis slice does: its EMF
metrics and its ``squall.invocation`` line (the template's alarms watch them).

The SQS and S3 spout modules (and with them botocore) are imported when such an event arrives
or the topology's spout is S3, not at a Kinesis consumer's init.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from squall.errors import BatchFailed, SquallError

if TYPE_CHECKING:
    from squall.event import Record
    from squall.observability.metrics import Recorder
    from squall.spouts.sqs import Message
    from squall.topology.executor import Engine
    from squall.topology.outcomes import BatchResult

log = logging.getLogger("squall.lambda")


def event_source(event: object) -> str:
    """What kind of Lambda event this is: ``aws:kinesis``, ``aws:sqs``, ``aws:dynamodb``, ``aws:s3``,
    ``firehose``, … or a description of what arrived. The one dispatch point for triggers."""
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}, not an object"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        return str(
            records[0].get("eventSource")
            or records[0].get("EventSource")
            or "records without eventSource"
        )
    if "deliveryStreamArn" in event:
        return "firehose"
    if isinstance(records, list) and not records:
        return "an event with an empty Records list"
    keys = ", ".join(sorted(map(str, event))[:8]) or "none"
    return f"an object without Records (keys: {keys})"


def sqs_messages(event: dict[str, Any]) -> list[tuple[str, Message]]:
    """(queue name, message) per record of an SQS event."""
    from squall.spouts.sqs import Message, queue_name

    out = []
    for i, r in enumerate(event.get("Records", [])):
        if not isinstance(r, dict) or not isinstance(r.get("messageId"), str):
            keys = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise SquallError(
                f"not an SQS event-source batch: record {i} has no messageId (it has {keys}); "
                "nothing was processed"
            )
        a = r.get("attributes", {})
        sent = a.get("SentTimestamp")
        out.append(
            (
                queue_name(r.get("eventSourceARN", "sqs")),
                Message(
                    r["messageId"],
                    r.get("receiptHandle", ""),
                    r.get("body", ""),
                    a.get("MessageGroupId"),
                    a.get("SequenceNumber"),
                    int(sent) if sent else None,
                ),
            )
        )
    return out


def process(engine: Engine, records: list[Record], recorder: Recorder | None) -> BatchResult:
    """One engine batch, observed by the invocation's recorder (metrics, the invocation line)."""
    if recorder is None:
        return engine.process(records)
    with recorder.batch(engine, records) as watch:
        watch.result = result = engine.process(records)
    return result


def handle_sqs(
    engine: Engine, event: dict[str, Any], recorder: Recorder | None = None
) -> dict[str, list[dict[str, str]]]:
    """Run an SQS batch; the partial batch response names every message that is not settled."""
    from squall.spouts.sqs import message_record, settled

    messages = sqs_messages(event)
    records = [message_record(queue, m) for queue, m in messages]
    try:
        result = process(engine, records, recorder)
    except BatchFailed as exc:
        log.error("SQS batch of %d messages failed: %s", len(records), exc)
        return {"batchItemFailures": [{"itemIdentifier": m.message_id} for _, m in messages]}
    result.log_failures(log)
    done = settled(records, result.checkpoint)
    return {
        "batchItemFailures": [
            {"itemIdentifier": m.message_id}
            for (_, m), ok in zip(messages, done, strict=True)
            if not ok
        ]
    }


class S3EventFailed(SquallError):
    """Some lines of the event's objects were not committed: Lambda retries the event."""


def handle_s3(
    engine: Engine,
    event: dict[str, Any],
    client: Any,
    *,
    batch_size: int,
    recorder: Recorder | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every line of the objects an S3 event names; raise if any line is not settled.
    ``options``: the s3 spout's reading options (``skip_blank``, ``max_line_bytes``,
    ``max_object_bytes``)."""
    from squall.spouts.s3 import object_batches, open_object

    counts = {"objects": 0, "records": 0, "failed": 0}
    for r in event.get("Records", []):
        s3 = r.get("s3", {})
        bucket = s3.get("bucket", {}).get("name")
        obj = s3.get("object", {})
        key = unquote_plus(obj.get("key", ""))  # keys arrive URL-encoded, spaces as '+'
        if not bucket or not key:
            raise S3EventFailed(f"S3 event record without bucket or key: {r.get('eventName')}")
        # A versioned bucket's event names the version it is about: the key's latest version
        # may be a later upload (with an event of its own), and this one's lines must be read.
        version = obj.get("versionId") if isinstance(obj.get("versionId"), str) else None
        counts["objects"] += 1
        s3_object = open_object(client, bucket, key, version)
        for part in object_batches(s3_object, batch_size, **(options or {})):
            try:
                result = process(engine, part, recorder)
            except BatchFailed as exc:
                raise S3EventFailed(
                    f"s3://{bucket}/{key}: lines {part[0].meta.sequence_number}-"
                    f"{part[-1].meta.sequence_number} failed: {exc}"
                ) from exc
            counts["records"] += len(result)
            if not result.ok:
                first = result.failed[0]
                raise S3EventFailed(
                    f"s3://{bucket}/{key}: {len(result.failed)} line(s) failed, first line "
                    f"{first.position.sequence_number} in {first.component}: {first.reason}"
                )
    return counts


class LambdaSources:
    """The SQS and S3 triggers of one Lambda handler. The S3 client opens once per container, at
    the first S3 event (a Kinesis or SQS function never imports what it needs)."""

    def __init__(self, topology: Any, *, s3_client: Any = None):
        self.batch_size = topology.settings.batch_size
        self._s3 = s3_client
        self._spout = topology.spout
        self._s3_options: dict[str, Any] | None = None

    def handle(
        self, engine: Engine, event: dict[str, Any], recorder: Recorder | None = None
    ) -> Any:
        """The answer to an SQS or S3 event; ``NotImplemented`` for others (Kinesis)."""
        source = event_source(event)
        if source == "aws:sqs":
            return handle_sqs(engine, event, recorder)
        if source == "aws:s3":
            if self._s3 is None:
                self._s3 = self._s3_client()
            return handle_s3(
                engine,
                event,
                self._s3,
                batch_size=self.batch_size,
                recorder=recorder,
                options=self._s3_options,
            )
        return NotImplemented

    def _s3_client(self) -> Any:
        """An S3 client; with the spout's endpoint and region when the spout declares the S3
        trigger (it reads the same bucket)."""
        from squall import aws
        from squall.component import TriggerSource
        from squall.topology import registry

        trigger = registry.capabilities("spout", self._spout).lambda_trigger
        own = trigger is not None and trigger.source is TriggerSource.S3
        if own:  # the spout's reading options too (a spout of yours may not have them all)
            names = ("skip_blank", "max_line_bytes", "max_object_bytes")
            self._s3_options = {
                n: getattr(self._spout, n) for n in names if hasattr(self._spout, n)
            }
        return aws.client(
            "s3",
            region=getattr(self._spout, "region", None) if own else None,
            endpoint_url=getattr(self._spout, "endpoint_url", None) if own else None,
        )
