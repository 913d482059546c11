"""``sqs`` sink: send each event as an SQS message with SendMessageBatch.

SQS limits (SendMessageBatch API reference): at most 10 messages per call, and a message — body
plus attribute names, types and values — at most 256 KiB, as is the whole call; bodies are text
of XML-legal characters. FIFO queues need a message group id and a deduplication id (1-128
characters of letters, digits and punctuation): the group comes from a payload path, the
deduplication id from the event id, so a replay within SQS's 5-minute deduplication interval adds
nothing. Standard queues have no deduplication: every message carries the event id as the
``event_id`` message attribute for consumers to deduplicate on. On a standard queue a message
group id makes a fair queue (SQS developer guide, "Using the message group ID": each group's
share of the consumers is kept even), never an ordered one: it is sent, and the start says so.

FIFO order when a call fails in part: SQS enqueues a call's messages in the order sent and
answers per message, so a message it did not take may sit before later messages of its group
that it took. Sending it again then would put it after them. So, within one write: once a
message of a group is not taken, the group's later messages are held back (not sent) and go
again after it, in order, or fail with it (the source delivers them again, in order); a message
not taken while SQS took a later one of its group in the same call cannot be put back in order
and is refused (the dead letter) rather than sent after it.

Size (~500 lines): one sink — the message building (body, attributes, FIFO ids) and the
SendMessageBatch loop that keeps FIFO order through partial failures are read together.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from squall import aws, exact_json, paths
from squall.aws import chunks
from squall.component import ComponentConfig, ComponentContext
from squall.errors import SinkError
from squall.event import Event
from squall.iam import AwsPermission, sqs_send
from squall.sinks.base import AbsentPaths, Prepared, Sink, WriteContext, WriteResult
from squall.sinks.batchio import (
    NOT_SENT,
    Answer,
    Item,
    Reject,
    Retry,
    SendOutcome,
    aws_call,
    resolve_queue_url,
    send_all,
    time_left_of,
    write_result,
)
from squall.times import WholeSeconds

log = logging.getLogger("squall.sinks.sqs")

MAX_BATCH_ENTRIES = 10
#: 256 KiB: the limit the issue and most deployed queues use; queues created with a larger
#: MaximumMessageSize (up to 1 MiB since 2025) can raise it with ``max_message_bytes``.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
MAX_ID_CHARS = 128
_ID_CHARS = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")
#: Characters SQS refuses in a body: XML 1.0's #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
_BAD_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: SendMessageBatch entry error codes that mean "try again later" even when reported as a sender fault.
_RETRY_CODES = (
    aws.THROTTLING_CODES | aws.SERVER_CODES | {"AWS.SimpleQueueService.ServiceUnavailable"}
)
#: Whole-call SendMessageBatch refusals one message can cause — a message over the queue's own
#: MaximumMessageSize, an attribute value SQS refuses — rather than the queue (gone, no rights,
#: KMS): the call is split in halves until the refused messages are alone.
_MESSAGE_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidMessageContents",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
    }
)


class SqsSinkConfig(ComponentConfig):
    queue: aws.SqsQueue = Field(
        description="Queue URL, ARN, or a queue name resolved with GetQueueUrl at start (an ARN: "
        "its name in its account). The region an ARN or AWS URL names is used unless `region` is "
        "set. A name, URL or ARN ending in `.fifo` is a FIFO queue."
    )
    region: aws.OptionalSetting = Field(
        None,
        description="AWS region (default: the one the queue's ARN or AWS URL names, else "
        "AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).",
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="SQS endpoint (local testing).")
    format: Literal["json", "raw"] = Field(
        "json",
        description="`json`: the event's value as JSON (orjson; an integer beyond 64 bits as its "
        "digits); `raw`: the record's bytes (UTF-8 text).",
    )
    message_group: paths.DottedPath | None = Field(
        None,
        description="Dotted path of the message group id (`kiosk_id`). FIFO queues (required): "
        "messages of one group are delivered in order. Standard queues: the fair-queue group "
        "(a tenant), no order; an event without one is sent without it.",
    )
    deduplication_id: paths.DottedPath = Field(
        "meta.event_id",
        description="FIFO queues: dotted path of the deduplication id (default: the event id).",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Message attribute name → dotted path; values are sent as String "
        "(Number for numbers; booleans, objects and lists as JSON text); missing, null and empty "
        "values are left out.",
    )
    event_id_attribute: str | None = Field(
        "event_id",
        description="Message attribute carrying the event id (for consumers of standard queues to "
        "deduplicate on); null to leave it out.",
    )
    delay_seconds: WholeSeconds = Field(
        0, ge=0, le=900, description="Standard queues: delivery delay per message."
    )
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        le=1024 * 1024,
        description="Largest message (body and attributes), also the largest call.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="SendMessageBatch attempts for messages that fail "
        "(first included); then their records fail, not the whole batch (FIFO: with their "
        "group's later messages, held back unsent): their shard's later records are held, "
        "delivered again from the first failed.",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,256}", name) or name.lower().startswith(
                ("aws.", "amazon.")
            ):
                raise ValueError(f"'{name}' is not a valid SQS message attribute name")
            paths.validate_path(path)
        return value

    @model_validator(mode="after")
    def _fifo(self) -> SqsSinkConfig:
        if self.queue.endswith(".fifo"):
            if self.message_group is None:
                raise ValueError(
                    "a FIFO queue needs message_group (the dotted path of the message group id)"
                )
            if self.delay_seconds:
                raise ValueError("FIFO queues take no per-message delay_seconds")
        return self


#: The values an attribute takes as they are; ``_plain`` reads the rest.
_PLAIN = frozenset((str, int, float, bool, dict, list, type(None)))


def _plain(value: Any) -> Any:
    """An attribute's value as the body's JSON writes it (``exact_json.plain``): a subclass of
    ``int``, ``float`` or ``str`` (an ``IntEnum`` member, NumPy's ``float64``) and NumPy's other
    scalars (``int64``, ``bool_``) as the plain value — their own text (``np.float64(0.5)``,
    ``<Tier.GOLD: 3>``) was a Number attribute SQS refuses, ``int64`` a String one, ``bool_``
    ``True``; a NaN or infinity as null (left out)."""
    number = exact_json.plain(value)
    return None if number.__class__ is float and not math.isfinite(number) else number


def _id_problem(what: str, value: Any) -> tuple[str | None, str | None]:
    if value is paths.MISSING or value is None or isinstance(value, dict | list):
        return None, f"{what} is missing or not a scalar"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if not _ID_CHARS.match(text):
        return None, f"{what} '{text[:40]}' is not 1-128 letters, digits or punctuation"
    return text, None


class SqsSink(Sink):
    """Send events as SQS messages, 10 per SendMessageBatch call; failed messages are retried, then fail."""

    Config = SqsSinkConfig
    summary = "Send events to an SQS queue (standard or FIFO) with SendMessageBatch."

    @classmethod
    def aws_permissions(cls, config: SqsSinkConfig) -> list[AwsPermission]:
        return [sqs_send(config.queue, config.region, f"sink {config.id}")]

    @classmethod
    def payload_reads(cls, config: SqsSinkConfig) -> list[tuple[tuple[str | int, ...], str]]:
        """The attributes' paths; a FIFO queue's group and deduplication ids (a standard queue
        reads neither)."""
        reads: list[tuple[tuple[str | int, ...], str]] = [
            (("attributes", name), path) for name, path in config.attributes.items()
        ]
        if config.message_group:
            reads.append((("message_group",), config.message_group))
        if config.queue.endswith(".fifo"):
            reads.append((("deduplication_id",), config.deduplication_id))
        return reads

    def __init__(self, config: SqsSinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self.queue_url: str | None = (
            config.queue if config.queue.startswith(("http://", "https://")) else None
        )
        self.fifo = config.queue.endswith(".fifo")
        self._time_left: Callable[[], float | None] | None = None  # the send's (``send``)
        self._group = paths.getter(config.message_group) if config.message_group else None
        self._dedup = paths.getter(config.deduplication_id)
        self._attributes = [(name, paths.getter(path)) for name, path in config.attributes.items()]
        # An attribute's path absent from every event leaves the attribute out of every message:
        # warned once (a typo the load-time check could not rule out).
        self._absent = AbsentPaths(
            self.id,
            {f"attribute '{name}'": path for name, path in config.attributes.items()},
            "their messages go without it",
            log,
        )
        self.backoff = aws.Backoff(base=0.1, cap=5.0)
        self.sleep: Callable[[float], None] = time.sleep  # tests inject a recorder

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        if self.client is None:
            # The region an ARN or AWS URL names, unless one is configured.
            region = cfg.region or aws.sqs_queue_region(cfg.queue)
            self.client = aws.client("sqs", region=region, endpoint_url=cfg.endpoint_url)
        if self.queue_url is None:
            self.queue_url = resolve_queue_url(self.id, self.client, cfg.queue)
        if cfg.message_group and not self.fifo:
            # SQS takes a group id on a standard queue (a fair queue) but keeps no order in it:
            # a user expecting FIFO order is told, not left to find out from the consumers.
            log.warning(
                "%s: queue '%s' is a standard queue: message_group '%s' makes it a fair queue "
                "(each group's share of the consumers kept even), messages of a group are NOT "
                "delivered in order: for per-group order use a .fifo queue",
                self.id,
                cfg.queue,
                cfg.message_group,
            )

    def prepare(self, events: list[Event]) -> Prepared:
        """Build each message and check it against the SQS limits; reject what SQS would refuse."""
        self._absent.check(events)
        ids = itertools.count()  # entry ids, unique in the batch
        return Prepared.each(events, self.id, lambda ev: self._message(ev, next(ids)))

    def _message(self, ev: Event, n: int) -> Item:
        cfg = self.config
        if cfg.format == "raw":
            try:
                body = ev.raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    "record is not UTF-8 text (SQS message bodies are text): use format: json"
                ) from None
        else:
            if ev.value is None:
                raise ValueError(
                    "event has no decoded value: add a decode bolt, or set format: raw"
                )
            try:
                body = exact_json.dumps(ev.value).decode()  # wide integers as digits
            except TypeError as exc:
                raise ValueError(f"value cannot be serialized as JSON: {exc}") from None
        if not body:
            raise ValueError("empty message body (SQS needs at least one character)")
        bad = _BAD_CHARS.search(body)
        if bad:
            raise ValueError(
                f"body holds U+{ord(bad.group()):04X} at offset {bad.start()}, which SQS refuses"
            )
        entry: dict[str, Any] = {"Id": str(n), "MessageBody": body}
        size = len(body.encode())
        attrs: dict[str, dict[str, str]] = {}
        if cfg.event_id_attribute:
            attrs[cfg.event_id_attribute] = {"DataType": "String", "StringValue": ev.event_id}
        for name, get in self._attributes:
            value = get(ev)
            if value.__class__ not in _PLAIN:
                value = _plain(value)
            elif value.__class__ is float and not math.isfinite(value):
                value = None  # NaN and the infinities: the body's JSON writes null, SQS no Number
            if value is paths.MISSING or value is None or value == "":  # SQS refuses an empty value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    text = (  # booleans as JSON writes them (true), as the group id does
                        exact_json.dumps(value).decode()
                        if isinstance(value, dict | list | bool)
                        else str(value)
                    )
                except TypeError as exc:
                    raise ValueError(
                        f"attribute '{name}' cannot be serialized as JSON: {exc}"
                    ) from None
                attrs[name] = {"DataType": "String", "StringValue": text}
            else:
                attrs[name] = {"DataType": "Number", "StringValue": repr(value)}
        for name, attr in attrs.items():
            size += len(name.encode()) + len(attr["DataType"]) + len(attr["StringValue"].encode())
        if len(attrs) > 10:
            raise ValueError(f"{len(attrs)} message attributes (SQS allows at most 10)")
        if attrs:
            entry["MessageAttributes"] = attrs
        if size > cfg.max_message_bytes:
            raise ValueError(
                f"message is {size} bytes with its attributes (the queue takes at most "
                f"{cfg.max_message_bytes})"
            )
        if self.fifo:
            assert self._group is not None
            group, problem = _id_problem(f"message group '{cfg.message_group}'", self._group(ev))
            if problem:
                raise ValueError(problem)
            dedup, problem = _id_problem(
                f"deduplication id '{cfg.deduplication_id}'", self._dedup(ev)
            )
            if problem:
                raise ValueError(problem)
            entry["MessageGroupId"] = group
            entry["MessageDeduplicationId"] = dedup
        else:
            if self._group is not None:  # a fair queue's group: optional per message
                value = self._group(ev)
                if value is not paths.MISSING and value is not None:
                    group, problem = _id_problem(f"message group '{cfg.message_group}'", value)
                    if problem:
                        raise ValueError(problem)
                    entry["MessageGroupId"] = group
            if cfg.delay_seconds:
                entry["DelaySeconds"] = cfg.delay_seconds
        return Item([ev], entry, size)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if self.client is None or self.queue_url is None:
            raise SinkError(f"{self.id}: open() the sink first")
        outcome = self.send(prepared.payload or [], time_left_of(ctx))
        return write_result(self.id, outcome)

    def send(
        self, items: list[Item], time_left: Callable[[], float | None] | None = None
    ) -> SendOutcome:
        """Send items in calls of 10 (and at most max_message_bytes); retry the failed entries.
        FIFO queues: every attempt goes over all the messages still to send, in order, so a
        group's later messages held back by ``_send_parts`` go again after the failed one."""
        size = self.config.max_message_bytes
        self._time_left = time_left  # no call of a round, or of a split call, once it is spent
        return send_all(
            f"{self.id}: SendMessageBatch",
            iter([items]) if self.fifo else chunks(items, MAX_BATCH_ENTRIES, size),
            self._send_round if self.fifo else self._send_chunk,
            max_attempts=self.config.max_attempts,
            backoff=self.backoff,
            sleep=self.sleep,
            time_left=time_left,  # no retry past the runner's deadline
        )

    def _send_round(self, pending: list[Item]) -> list[Answer]:
        """FIFO: one attempt at each pending message, in calls of 10 in order. Once a message was
        not taken (``tried``: a retry, or the engine's retry of the batch), each group's earliest
        message goes first, in calls of their own, and the group's later messages only once SQS
        took it: in one call with them, it could fail again while SQS took them, and could then
        never be sent in order (``_keep_order``)."""
        size = self.config.max_message_bytes
        if not any(item.tried for item in pending):
            return self._send_parts(chunks(pending, MAX_BATCH_ENTRIES, size))
        heads: list[Item] = []
        rest: list[Item] = []
        seen: set[str] = set()
        for item in pending:
            group = item.body["MessageGroupId"]
            (rest if group in seen else heads).append(item)
            seen.add(group)
        parts = itertools.chain(
            chunks(heads, MAX_BATCH_ENTRIES, size), chunks(rest, MAX_BATCH_ENTRIES, size)
        )
        answers = dict(zip(map(id, heads + rest), self._send_parts(parts), strict=True))
        return [answers[id(item)] for item in pending]

    def _send_parts(self, parts: Iterable[list[Item]]) -> list[Answer]:
        """The answers to each part sent in turn (one call each, split if SQS refuses it whole).
        What a part wrote stays done, what SQS refused stays refused, even when a later part
        meets an outage: the engine's retry of the batch sends only the rest. FIFO: once a
        message of a group is not taken, the group's later messages are held back (answered
        ``Retry``, not sent): they go again after it, in order, or fail with it."""
        answers: list[Answer] = []
        waiting: dict[str, str] = {}  # FIFO: group → why its earliest message is not taken yet
        for part in parts:
            if aws.time_spent(self._time_left):
                # No call with no time left — a FIFO round's next call of 10, a split call's
                # half (``send_all`` checks only before a group's first): the rest is not sent,
                # what SQS took stays taken, as for a PutRecords of several calls.
                answers.extend(Retry(NOT_SENT) for _ in part)
                continue
            held = [self.fifo and item.body["MessageGroupId"] in waiting for item in part]
            send = [item for item, hold in zip(part, held, strict=True) if not hold]
            got = iter(self._send_chunk(send) if send else [])
            for item, hold in zip(part, held, strict=True):
                group = item.body.get("MessageGroupId", "")
                if hold:
                    answer: Answer = Retry(
                        f"held back behind an earlier message of group '{group}' that SQS did "
                        f"not take ({waiting[group]})"
                    )
                else:
                    answer = next(got)
                    if answer is None:
                        item.done = True
                    elif isinstance(answer, Reject):
                        item.refused = answer.reason
                    elif self.fifo:
                        item.tried = True
                        waiting.setdefault(group, answer.reason)
                answers.append(answer)
        return answers

    def _send_chunk(self, chunk: list[Item]) -> list[Answer]:
        entries = []
        for i, item in enumerate(chunk):  # ids are positions in this call
            entries.append({**item.body, "Id": str(i)})
        try:
            resp = aws_call(
                f"{self.id}: SendMessageBatch",
                self.client.send_message_batch,
                QueueUrl=self.queue_url,
                Entries=entries,
            )
        except SinkError as exc:
            return self._split(chunk, exc)
        answers: list[Answer] = [None] * len(chunk)
        seen = {s["Id"] for s in resp.get("Successful", [])}
        for f in resp.get("Failed", []):
            i = int(f["Id"])
            reason = f"SendMessageBatch: {f.get('Code', 'error')}: {f.get('Message', '')}".rstrip(
                ": "
            )
            if f.get("SenderFault") and f.get("Code") not in _RETRY_CODES:
                answers[i] = Reject(reason)
            else:
                answers[i] = Retry(reason)
            seen.add(f["Id"])
        for i in range(len(chunk)):
            if str(i) not in seen:  # neither successful nor failed: not known to be written
                answers[i] = Retry("SendMessageBatch did not answer for this message")
        if self.fifo:
            _keep_order(chunk, answers)
        return answers

    def _split(self, chunk: list[Item], exc: SinkError) -> list[Answer]:
        """The answers to a call SQS refused whole: a message's fault (``_MESSAGE_CODES``) is
        found by sending each half alone, down to single messages, which are refused with SQS's
        reason; any other refusal is the queue's and fails the batch. What a half wrote stays
        done even if a later half meets an outage, so the engine's retry does not send it again."""
        cause = exc.__cause__
        code = aws.error_code(cause) if cause is not None else None
        if code not in _MESSAGE_CODES:
            raise exc
        if len(chunk) == 1:
            message = cause.response.get("Error", {}).get("Message", "")  # type: ignore[union-attr]
            return [
                Reject(f"SendMessageBatch refused this message: {code}: {message}".rstrip(": "))
            ]
        half = len(chunk) // 2
        return self._send_parts((chunk[:half], chunk[half:]))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _keep_order(chunk: list[Item], answers: list[Answer]) -> None:
    """FIFO: a message SQS did not take in a call where it took a later message of the same
    group can no longer be sent in its group's order: it is refused (the dead letter), never
    sent after that later message."""
    taken: set[str] = set()
    for i in range(len(chunk) - 1, -1, -1):
        group = chunk[i].body["MessageGroupId"]
        answer = answers[i]
        if answer is None:
            taken.add(group)
        elif isinstance(answer, Retry) and group in taken:
            answers[i] = Reject(
                f"{answer.reason}; not sent again: SQS took a later message of group "
                f"'{group}' in the same call, and this one after it would break the group's order"
            )
