"""Durable dead letters for Lambda and fleets: ``dead_letter_sqs``, ``dead_letter_s3``, ``dead_letter_kinesis``.

Each writes the same JSON document as the ``dead_letter`` file sink (``dead_letter_line``: event
id, component, stream, reason, failed_at, meta, record or record_base64, optionally payload), and
returns only after the service acknowledged it, so the engine moves the checkpoint only over
failures that are kept. A document over the service's limit keeps everything but a shortened
original record: ``payload`` is dropped first (``payload_dropped`` gives its size in bytes), then
``record``/``record_base64`` is cut and ``record_truncated`` gives its full size in bytes.

- ``dead_letter_sqs``: one message per failure (SendMessageBatch); on a FIFO queue the group is
  the failing component and the deduplication id the (event id, component) pair, so a replay
  within five minutes adds nothing.
- ``dead_letter_s3``: one gzip JSON-lines object per dead-letter write and source shard, named
  from the shard, the first/last failed positions and a digest of the failures it holds, so a
  replayed batch overwrites its object and other failures at the same positions never do.
- ``dead_letter_kinesis``: one record per failure (PutRecords, partition key = event id, or its
  digest when the id is longer than a partition key may be).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field

from squall import aws, safe_json
from squall.aws import chunks
from squall.component import Capabilities, ComponentConfig, ComponentContext
from squall.errors import SinkError, TransientError
from squall.event import Event
from squall.iam import AwsPermission, kinesis_stream_arn, s3_objects_arn, sqs_send
from squall.kinesis.putrecords import MAX_RECORD_BYTES, Entry, PutRecordsWriter, key_for_id
from squall.kinesis.stream_check import DESCRIBE, check_stream
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.sinks.batchio import (
    Item,
    Reject,
    Retry,
    aws_call,
    resolve_queue_url,
    send_all,
    time_left_of,
)
from squall.sinks.dead_letter import dead_letter_line

SQS_MAX_BYTES = 256 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._=-]")


#: U+FFFE and U+FFFF as UTF-8: the only characters outside XML 1.0 that orjson leaves unescaped
#: (it escapes the controls), and SQS refuses a body holding one for good.
_NOT_XML = ((b"\xef\xbf\xbe", b"\\ufffe"), (b"\xef\xbf\xbf", b"\\uffff"))


def _dumps(doc: dict, xml_safe: bool) -> bytes:
    # safe_json, as the file and table sinks: an integer beyond 64 bits is written as its digits,
    # a value orjson cannot write (a lone surrogate) as a marked repr; never a failed dead letter.
    data = safe_json.dumps(doc)
    if xml_safe and b"\xef\xbf" in data:
        for raw, escaped in _NOT_XML:  # only inside JSON strings: the escape is the same text
            data = data.replace(raw, escaped)
    return data


def fitted(ev: Event, limit: int, *, include_payload: bool, xml_safe: bool = False) -> bytes:
    """The dead-letter document of an event as JSON, cut to at most ``limit`` bytes (see module
    doc); ``xml_safe``: characters SQS refuses are written as JSON escapes."""
    doc = dead_letter_line(ev, include_payload=include_payload)
    data = _dumps(doc, xml_safe)
    if len(data) <= limit:
        return data
    payload = doc.pop("payload", None)
    if payload is not None:
        # Said, not dropped silently: a result a bolt made (a window's) has nothing but its
        # payload, and a replay's report says where its values went.
        doc["payload_dropped"] = len(_dumps(payload, xml_safe))
    data = _dumps(doc, xml_safe)
    if len(data) <= limit:
        return data
    field = "record" if "record" in doc else "record_base64"
    original = doc[field]
    doc["record_truncated"] = len(ev.raw)
    doc[field] = ""
    # The longest prefix that fits (a longer prefix never dumps shorter): found by halving, as a
    # character costs 1 to 6 bytes once encoded and escaped.
    lo, hi = 0, min(len(original), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        doc[field] = original[:mid]
        if len(_dumps(doc, xml_safe)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    doc[field] = original[:lo]
    return _dumps(doc, xml_safe)


class _AwsDeadLetter(Sink):
    dead_letter = True

    def __init__(self, config: Any, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self.sleep: Callable[[float], None] = time.sleep

    def _client(self, service: str, region: str | None = None) -> None:
        if self.client is None:
            self.client = aws.client(
                service, region=self.config.region or region, endpoint_url=self.config.endpoint_url
            )

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


class _AwsConfig(ComponentConfig):
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="Service endpoint (local testing).")
    include_payload: bool = Field(
        False, description="Also write the decoded payload as it was when it failed."
    )


class DeadLetterSqsConfig(_AwsConfig):
    region: aws.OptionalSetting = Field(
        None,
        description="AWS region (default: the one the queue's ARN or AWS URL names, else "
        "AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).",
    )
    queue: aws.SqsQueue = Field(
        description="Queue URL, ARN, or a name resolved with GetQueueUrl at start (`.fifo`: a FIFO "
        "queue); the region an ARN or AWS URL names is used unless `region` is set."
    )
    max_message_bytes: int = Field(
        SQS_MAX_BYTES,
        ge=1024,
        le=1024 * 1024,
        description="Largest message the queue takes; longer records are cut.",
    )
    max_attempts: int = Field(
        5, ge=1, le=20, description="SendMessageBatch attempts per message (first included)."
    )


class DeadLetterSqsSink(_AwsDeadLetter):
    """Send each failed event's dead-letter document as an SQS message."""

    Config = DeadLetterSqsConfig
    summary = "Write failed events (reason, component, original record) as SQS messages: durable in Lambda."

    @classmethod
    def aws_permissions(cls, config: DeadLetterSqsConfig) -> list[AwsPermission]:
        return [sqs_send(config.queue, config.region, f"dead letters {config.id}")]

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        self._client("sqs", aws.sqs_queue_region(cfg.queue))  # unless `region` is configured
        self.fifo = cfg.queue.endswith(".fifo")
        self.queue_url = resolve_queue_url(self.id, self.client, cfg.queue)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        cfg = self.config
        items = prepared.payload
        if items is None:  # first attempt of this batch: build once, so a retry skips what was sent
            items = prepared.payload = []
            for ev in prepared.events:
                body = fitted(
                    ev, cfg.max_message_bytes, include_payload=cfg.include_payload, xml_safe=True
                ).decode()
                entry: dict[str, Any] = {"MessageBody": body}
                if self.fifo:
                    component = ev.failure.component if ev.failure else "unknown"
                    entry["MessageGroupId"] = _SAFE.sub("_", component)[:128] or "unknown"
                    entry["MessageDeduplicationId"] = hashlib.blake2b(
                        _key(ev).encode(), digest_size=32
                    ).hexdigest()
                items.append(Item([ev], entry, len(body.encode())))
        outcome = send_all(
            f"{self.id}: SendMessageBatch",
            chunks(items, 10, cfg.max_message_bytes),
            self._send,
            max_attempts=cfg.max_attempts,
            backoff=aws.Backoff(0.1, 5.0),
            sleep=self.sleep,
            time_left=time_left_of(ctx),  # no retry past the runner's deadline
        )
        # A dead letter has no dead letter: what SQS did not take keeps its record failing (the source
        # delivers it again), with the failure it came with.
        failed = [ev for item, _ in outcome.failed + outcome.rejected for ev in item.events]
        return WriteResult(failed=failed) if failed else None

    def _send(self, chunk: list[Item]) -> list[Retry | Reject | None]:
        resp = aws_call(
            f"{self.id}: SendMessageBatch",
            self.client.send_message_batch,
            QueueUrl=self.queue_url,
            Entries=[{**item.body, "Id": str(i)} for i, item in enumerate(chunk)],
        )
        answers: list[Retry | Reject | None] = [None] * len(chunk)
        for f in resp.get("Failed", []):
            answers[int(f["Id"])] = Retry(
                f"SendMessageBatch: {f.get('Code')}: {f.get('Message', '')}"
            )
        return answers


class DeadLetterS3Config(_AwsConfig):
    bucket: str = Field(description="Bucket name.")
    prefix: str = Field("dead-letters/", description="Key prefix of the objects.")


class DeadLetterS3Sink(_AwsDeadLetter):
    """Write failed events as gzip JSON-lines objects, one per batch and source shard."""

    Config = DeadLetterS3Config
    summary = (
        "Write failed events (reason, component, original record) as gzip JSON-lines S3 objects."
    )

    @classmethod
    def capabilities(cls, config: DeadLetterS3Config) -> Capabilities:
        """Its objects: ``prefix…`` ending in a hex digest's digit and ``.jsonl.gz``."""
        return Capabilities(
            s3_objects=((config.bucket, config.prefix, ".jsonl.gz", "0123456789abcdef"),)
        )

    @classmethod
    def aws_permissions(cls, config: DeadLetterS3Config) -> list[AwsPermission]:
        return [
            AwsPermission(
                ("s3:PutObject",),
                s3_objects_arn(config.bucket, config.prefix),
                f"dead letters {config.id}",
            )
        ]

    def open(self, resources: Any = None) -> None:
        self._client("s3")

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        cfg = self.config
        objects = prepared.payload
        if objects is None:
            groups: dict[tuple[str, str], list[Event]] = {}
            for ev in prepared.events:
                groups.setdefault((ev.meta.stream, ev.meta.shard_id), []).append(ev)
            objects = prepared.payload = []
            for (stream, shard), evs in groups.items():
                evs.sort(
                    key=lambda ev: ev.meta.position.key()
                )  # failures arrive from several components
                first, last = evs[0].meta, evs[-1].meta
                key = (
                    f"{cfg.prefix}{_SAFE.sub('_', stream)}/{_SAFE.sub('_', shard)}/"
                    f"{first.sequence_number}.{first.sub_sequence_number}-"
                    f"{last.sequence_number}.{last.sub_sequence_number}.{_failures_digest(evs)}"
                    ".jsonl.gz"
                )
                lines = b"".join(
                    safe_json.dumps(dead_letter_line(ev, include_payload=cfg.include_payload))
                    + b"\n"
                    for ev in evs
                )
                objects.append([key, gzip.compress(lines, mtime=0), False])
        for obj in objects:
            if obj[2]:
                continue
            if aws.time_spent(time_left_of(ctx)):  # no call started with no time left
                raise TransientError(f"{self.id}: PutObject: {aws.NOT_SENT}")
            with aws.time_bounded(time_left_of(ctx)):  # one attempt: the engine's retry decides
                aws_call(
                    f"{self.id}: PutObject s3://{cfg.bucket}/{obj[0]}",
                    self.client.put_object,
                    Bucket=cfg.bucket,
                    Key=obj[0],
                    Body=obj[1],
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                )
            obj[2] = True


def _key(ev: Event) -> str:
    """A failure's identity: event id and component (and the replay count of a re-driven record,
    so its new failure is kept beside the one it was replayed from)."""
    key = f"{ev.event_id}\x1f{ev.failure.component if ev.failure else ''}"
    return f"{key}\x1f{ev.meta.replay}" if ev.meta.replay else key


def _failures_digest(events: list[Event]) -> str:
    """A digest of the (event id, component) pairs an object holds, for its name: the same failures
    (a replayed batch) get the same name, other failures at the same positions another one — a
    second dead-letter write in one batch (a record refused by two sinks) or another input with the
    same name and line numbers (the event ids of line-numbered sources carry the input's
    fingerprint) never overwrites the first."""
    keys = sorted(_key(ev) for ev in events)
    return hashlib.blake2b("\x1e".join(keys).encode(), digest_size=6).hexdigest()


class DeadLetterKinesisConfig(_AwsConfig):
    region: aws.OptionalSetting = Field(
        None,
        description="AWS region (default: the stream ARN's, else AWS_REGION, AWS_DEFAULT_REGION, "
        "else us-east-1).",
    )
    stream: aws.StreamName = Field(description="Stream name or ARN.")
    max_attempts: int = Field(
        5, ge=1, le=20, description="PutRecords attempts per record (first included)."
    )


class DeadLetterKinesisSink(_AwsDeadLetter):
    """Put each failed event's dead-letter document as a Kinesis record (partition key: the event id)."""

    Config = DeadLetterKinesisConfig
    summary = "Write failed events (reason, component, original record) to a Kinesis stream."

    @classmethod
    def aws_permissions(cls, config: DeadLetterKinesisConfig) -> list[AwsPermission]:
        return [
            AwsPermission(
                ("kinesis:PutRecords", DESCRIBE),
                kinesis_stream_arn(config.stream, config.region),
                f"dead letters {config.id}",
            )
        ]

    def open(self, resources: Any = None) -> None:
        self.ref = aws.StreamRef.parse(self.config.stream)
        if self.client is None:
            self.client = aws.client(
                "kinesis",
                region=aws.resolve_region(self.config.region, self.ref.region),
                endpoint_url=self.config.endpoint_url,
            )
        check_stream(self.id, self.client, self.ref)  # a missing stream stops the start
        self.writer = PutRecordsWriter(
            self.client, self.ref, max_attempts=self.config.max_attempts, sleep=self.sleep
        )

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if aws.time_spent(time_left_of(ctx)):
            # No call is started with no time left, as dead_letter_sqs' and the sinks': the
            # engine's retry, bounded by the same time left, is not made.
            raise TransientError(f"{self.id}: PutRecords: {aws.NOT_SENT}")
        entries = []
        for ev in prepared.events:
            key = key_for_id(ev.event_id)
            limit = MAX_RECORD_BYTES - len(key.encode())
            entries.append(
                Entry(
                    fitted(ev, limit, include_payload=self.config.include_payload), key, None, [ev]
                )
            )
        try:
            outcome = self.writer.put(entries, time_left_of(ctx))  # retries only while time is left
        except SinkError as exc:
            raise SinkError(f"{self.id}: {exc}") from exc
        if not outcome.failed:
            return None
        return WriteResult(failed=[ev for entry, _ in outcome.failed for ev in entry.items])
