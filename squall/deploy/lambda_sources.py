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
  A truncated or corrupt gzip object is one dead letter naming it (``squall.spouts.s3``); so is
  an object S3 does not have (NoSuchKey, NoSuchVersion: deleted after its notification), where
  every retry would fail alike. An AccessDenied fails the event: the generated role has
  ``s3:ListBucket`` on the bucket (under the trigger's prefix), so S3 answers a missing object
  NoSuchKey, and AccessDenied means a permission is missing.
  With an ``s3`` spout the same objects may be named by notifications through SNS, SQS or
  EventBridge (``squall.deploy.s3_events``); through SQS, failures are answered per message.
  If any line fails, the handler raises, so Lambda retries the event (twice, then its on-failure
  destination); event ids come from bucket, key and line, so a retry adds nothing to idempotent
  sinks and dead letters.

Each engine batch goes through the invocation's recorder, as a Kinesis slice does: its EMF
metrics and its ``squall.invocation`` line (the template's alarms watch them).

The SQS and S3 spout modules (and with them botocore) are imported when such an event arrives
or the topology's spout is S3, not at a Kinesis consumer's init.

Size (~465 lines): the SQS and S3 answers share the slicing, the scope check and the object
runner; each is the whole of one trigger's semantics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from squall.errors import BatchFailed, SquallError
from squall.safe_json import json_type

if TYPE_CHECKING:
    from squall.deploy.deadline import Deadline
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
        return f"a JSON {json_type(event)}, not an object"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        return str(
            records[0].get("eventSource")
            or records[0].get("EventSource")
            or "records without eventSource"
        )
    if "deliveryStreamArn" in event:
        return "firehose"
    if "detail-type" in event and isinstance(event.get("source"), str):
        return event["source"]  # EventBridge: aws.s3, …
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
    engine: Engine,
    event: dict[str, Any],
    recorder: Recorder | None = None,
    *,
    size: int = 10_000,
    deadline: Deadline | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Run an SQS batch in slices of ``size`` messages; the partial batch response names every
    message that is not settled.

    A FIFO group with a message not settled keeps its later messages out of the later slices
    (they are named too, so the group keeps its order). A slice whose dependency stays down
    names its messages and every later one; so does a slice that would not end before the
    invocation's ``deadline`` (not started: ``squall.deploy.deadline``). The slices before are
    committed, and their messages deleted by Lambda.
    """
    from squall.spouts.sqs import message_record, settled
    from squall.topology.executor import batch_collection

    messages = sqs_messages(event)
    records = [message_record(queue, m) for queue, m in messages]
    unsettled: set[int] = set()  # indexes of the messages to name
    held: set[str] = set()  # FIFO groups (the records' shards) with a message not settled
    for start in range(0, len(records), size):
        if deadline is not None and not deadline.next_slice():
            deadline.report(len(records) - start, "messages")
            unsettled.update(range(start, len(records)))
            break
        indexes = list(range(start, min(start + size, len(records))))
        if held:
            unsettled.update(i for i in indexes if records[i].meta.shard_id in held)
            indexes = [i for i in indexes if records[i].meta.shard_id not in held]
        part = [records[i] for i in indexes]
        # The slice's collector threshold until its result is let go: the young collection due
        # after it then scans what outlives it, not its events.
        with batch_collection():
            try:
                result = process(engine, part, recorder) if part else None
            except BatchFailed as exc:
                log.error("SQS batch of %d messages failed: %s", len(part), exc)
                unsettled.update(indexes, range(start + size, len(records)))
                break
            if result is None:
                continue
            result.log_failures(log)
            for i, r, ok in zip(indexes, part, settled(part, result.checkpoint), strict=True):
                if not ok:
                    unsettled.add(i)
                    held.add(r.meta.shard_id)
            del part, result
    return batch_item_failures(messages[i][1].message_id for i in sorted(unsettled))


def batch_item_failures(message_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """The partial batch response naming these SQS messages (Lambda deletes the others)."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in message_ids]}


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
    scope: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """Run every line of the objects an S3, SNS or EventBridge event names (all its records
    checked first); raise if any line is not settled. ``options``: the s3 spout's reading
    options (``skip_blank``, ``max_line_bytes``, ``max_object_bytes``); ``scope``: its bucket,
    prefix and suffix (objects outside them are skipped, see ``in_scope``)."""
    from squall.deploy.s3_events import event_objects

    counts = {"objects": 0, "records": 0, "failed": 0, "skipped": 0}
    for ref in event_objects(event):
        if in_scope(ref, scope, "the event", counts):
            run_object(engine, ref, client, batch_size, recorder, options, counts)
    return counts


def in_scope(ref: Any, scope: tuple[str, str, str] | None, where: str, counts: dict) -> bool:
    """Whether an object lies in the spout's bucket, under its prefix and with its suffix.

    A notification of another object (a topic or an EventBridge rule shared with other readers,
    a bucket-wide notification) is not this topology's input: the template grants reads under
    the prefix only, so reading it would fail with AccessDenied at every delivery until the
    queue's dead-letter queue. It is skipped, with an INFO line naming it."""
    if scope is None:
        return True
    bucket, prefix, suffix = scope
    if ref.bucket == bucket and ref.key.startswith(prefix) and ref.key.endswith(suffix):
        return True
    log.info(
        "%s: s3://%s/%s skipped: outside the spout's s3://%s/%s%s",
        where,
        ref.bucket,
        ref.key,
        bucket,
        prefix,
        f" (*{suffix})" if suffix else "",
    )
    counts["skipped"] = counts.get("skipped", 0) + 1
    return False


def handle_s3_messages(
    engine: Engine,
    event: dict[str, Any],
    client: Any,
    *,
    batch_size: int,
    recorder: Recorder | None = None,
    options: dict[str, Any] | None = None,
    scope: tuple[str, str, str] | None = None,
    deadline: Deadline | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Run the objects named by the S3 notifications an SQS batch carries (S3 → SQS, S3 → SNS →
    SQS, EventBridge → SQS); the partial batch response names each message whose objects are not
    all settled. A message that is no S3 notification is dead-lettered with the reason (naming
    its index and id). For a FIFO queue the messages after a failed one are not run and are
    named too, as AWS requires; so are every queue's after a dependency stayed down
    (``BatchFailed``): each would wait through its own retries, the invocation then outlasting
    its timeout. A message that would not end before the invocation's ``deadline`` (its
    messages are its slices) is not started, nor are the later ones: they are named."""
    from squall.deploy.s3_events import NotAnS3Notification, notification_objects
    from squall.spouts.s3 import ObjectReadError
    from squall.spouts.sqs import message_record

    counts = {"objects": 0, "records": 0, "failed": 0}
    failed: list[str] = []
    down = False  # a dependency stayed down: the later messages are not run
    messages = sqs_messages(event)
    for i, (queue, m) in enumerate(messages):
        if down or (failed and m.group_id is not None):
            failed.append(m.message_id)
            continue
        if deadline is not None and not deadline.next_slice():
            deadline.report(len(messages) - i, "messages")
            failed.extend(rest.message_id for _, rest in messages[i:])
            break
        where = f"Records[{i}] (SQS message {m.message_id})"
        try:
            body = orjson.loads(m.body)
        except orjson.JSONDecodeError:
            body = m.body
        try:
            refs = notification_objects(body, where)
        except NotAnS3Notification as exc:
            rec = message_record(queue, m)
            bad = type(rec)(rec.data, rec.meta._replace(defect=str(exc)))
            try:
                ok = process(engine, [bad], recorder).ok
            except BatchFailed as exc:
                log.error("%s: %s", where, exc)
                ok, down = False, True
            if not ok:
                failed.append(m.message_id)
            continue
        try:
            for ref in refs:
                if in_scope(ref, scope, where, counts):
                    run_object(engine, ref, client, batch_size, recorder, options, counts)
        except (S3EventFailed, ObjectReadError) as exc:
            log.error("%s: %s", where, exc)
            failed.append(m.message_id)
            # S3 down (a read's retries spent) or the time left spent: a sink's BatchFailed
            down = isinstance(exc.__cause__, BatchFailed) or getattr(exc, "transient", False)
    return batch_item_failures(failed)


def run_object(
    engine: Engine,
    ref: Any,
    client: Any,
    batch_size: int,
    recorder: Recorder | None,
    options: dict[str, Any] | None,
    counts: dict[str, int],
) -> None:
    """Run one object's lines in ``batch_size`` slices; raise ``S3EventFailed`` at the first
    slice with a line that is not settled.

    The object's reads are bounded by the engine's ``time_left`` (the invocation's, less its
    margin), as its sinks' AWS calls are (``squall.spouts.s3.ReadBound``): a GetObject or a read
    of its body that cannot finish in time is an ``ObjectReadError`` (``transient``), the event's
    failure (S3 events) or its message's (SQS), not an invocation killed at its timeout."""
    from squall.spouts.s3 import (
        MISSING,
        REPLACED,
        ObjectReadError,
        gone_on_second_read,
        missing_object_record,
        object_batches,
    )
    from squall.topology.executor import batch_collection

    counts["objects"] += 1
    try:
        s3_object = _open(engine, ref, client)
    except ObjectReadError as exc:
        if exc.code not in MISSING:  # AccessDenied (a permission, or no s3:ListBucket), 5xx
            raise
        # Deleted after its notification (or never readable): every retry would fail alike,
        # until the queue's dead-letter queue or the event's on-failure destination. It is that
        # object's problem: one dead letter naming it, the event's other objects go on.
        bucket, key = ref.bucket, ref.key
        parts: Any = [[missing_object_record(bucket, key, ref.version_id, exc.code, ref.sequencer)]]
    else:
        bucket, key = s3_object.bucket, s3_object.key
        etag = s3_object.etag  # a replaced object's dead letter names the upload read first
        parts = gone_on_second_read(
            object_batches(s3_object, batch_size, **(options or {})),
            lambda code: missing_object_record(
                bucket,
                key,
                ref.version_id,
                code,
                ref.sequencer,
                etag=etag if code == REPLACED else None,
            ),
        )
    for part in parts:
        # The slice's collector threshold until its lines and result are let go: the young
        # collection due after it then scans what outlives it, not its events.
        with batch_collection():
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
            del part, result


def _open(engine: Engine, ref: Any, client: Any) -> Any:
    """The object an event names (``S3Object``), its reads bounded by the engine's time left; an
    EventBridge key that was URL-encoded after all is read decoded. Neither there: the
    ``ObjectReadError`` of the key as the event gave it."""
    from squall.spouts.s3 import MISSING, ObjectReadError, ReadBound, open_object

    bound = ReadBound.of(getattr(engine, "time_left", None), getattr(engine, "retry", None))
    try:
        return open_object(client, ref.bucket, ref.key, ref.version_id, bound=bound)
    except ObjectReadError as exc:
        if ref.decoded is None or exc.code not in MISSING:
            raise
        try:
            return open_object(client, ref.bucket, ref.decoded, ref.version_id, bound=bound)
        except ObjectReadError as again:
            if again.code not in MISSING:
                raise
            raise exc from None


class LambdaSources:
    """The SQS and S3 triggers of one Lambda handler. Whether the spout reads S3 (and with it the
    S3 client) is settled at the first SQS, SNS, EventBridge or S3 event, once per container (a
    Kinesis function never imports what it needs)."""

    #: Event sources an ``s3`` spout's function may get its notifications through.
    S3_ENVELOPES = ("aws:sqs", "aws:sns", "aws.s3")

    def __init__(self, topology: Any, *, s3_client: Any = None):
        self.batch_size = topology.settings.batch_size
        self.lambda_batch_size = topology.settings.lambda_batch_size
        self._s3 = s3_client
        self._spout = topology.spout
        self._reads_s3: bool | None = None
        self._s3_options: dict[str, Any] = {}
        self._s3_scope: tuple[str, str, str] | None = None

    def handle(
        self,
        engine: Engine,
        event: dict[str, Any],
        recorder: Recorder | None = None,
        deadline: Deadline | None = None,
    ) -> Any:
        """The answer to an SQS, S3, SNS or EventBridge event; ``NotImplemented`` for others
        (Kinesis). SQS messages are messages unless the spout reads S3: then they, like SNS and
        EventBridge events, carry S3 notifications. The ``deadline`` stops SQS batches early;
        an S3, SNS or EventBridge event has no partial answer, so it is not stopped between
        slices (stopping early would fail it, and its retry would start it over); the S3 reads
        of all of them fit in the time left (``run_object``)."""
        source = event_source(event)
        if source != "aws:s3" and source not in self.S3_ENVELOPES:
            return NotImplemented
        if source != "aws:s3" and not self.reads_s3():
            if source != "aws:sqs":
                return NotImplemented
            return handle_sqs(
                engine, event, recorder, size=self.lambda_batch_size, deadline=deadline
            )
        if self._s3 is None:
            self._s3 = self._s3_client()
        kwargs = {
            "batch_size": self.batch_size,
            "recorder": recorder,
            "options": self._s3_options,
            "scope": self._s3_scope,
        }
        if source == "aws:sqs":
            return handle_s3_messages(engine, event, self._s3, **kwargs, deadline=deadline)
        return handle_s3(engine, event, self._s3, **kwargs)

    def reads_s3(self) -> bool:
        """Whether the topology's spout declares the S3 trigger (``s3``, or a spout of yours)."""
        if self._reads_s3 is None:
            from squall.component import TriggerSource
            from squall.topology import registry

            trigger = registry.capabilities("spout", self._spout).lambda_trigger
            self._reads_s3 = trigger is not None and trigger.source is TriggerSource.S3
            if self._reads_s3:  # its reading options (a spout of yours may not have them all)
                self._s3_scope = (trigger.name, trigger.prefix, trigger.suffix)  # type: ignore[union-attr]
                names = ("skip_blank", "max_line_bytes", "max_object_bytes")
                self._s3_options = {
                    n: getattr(self._spout, n) for n in names if hasattr(self._spout, n)
                }
        return self._reads_s3

    def _s3_client(self) -> Any:
        """An S3 client; with the spout's endpoint and region when the spout declares the S3
        trigger (it reads the same bucket)."""
        from squall import aws

        own = self.reads_s3()
        return aws.client(
            "s3",
            region=getattr(self._spout, "region", None) if own else None,
            endpoint_url=getattr(self._spout, "endpoint_url", None) if own else None,
        )
