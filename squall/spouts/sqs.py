"""``sqs`` spout: read an SQS queue (local runner); delete a message only once it is settled.

SQS has no shards or offsets, so each message is given a position the engine's per-shard rule
("checkpoint up to the first failed record") turns into the right per-message answer:

- standard queue: each message is its own shard (``msg-<MessageId>``), so the checkpoint names
  exactly the messages that are committed, dead-lettered or filtered; those are deleted, the
  rest come back after their visibility timeout;
- FIFO queue: the shard is the message group and the position SQS's ``SequenceNumber``, so after
  a failed message the later messages of its group are not deleted either and come back in order.

Event ids derive from the queue name and the message id (or sequence number), so a redelivered
message has the same event id and idempotent sinks add nothing. The same mapping serves the
Lambda SQS trigger (``squall.deploy.lambda_sources``).

Size (~510 lines): one spout — the message mapping above, a batch's receives (follow-up polls and
their fill time) and the stop's give-back with its wait for the poll given up, which share the
spout's receive state; splitting them would pass that state between modules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from squall import aws
from squall.component import (
    Capabilities,
    ComponentConfig,
    ComponentContext,
    LambdaTrigger,
    TriggerSource,
)
from squall.errors import SquallError, TransientError
from squall.event import Position, Record, RecordMeta
from squall.spouts.base import Spout
from squall.times import WholeSeconds

log = logging.getLogger("squall.spouts.sqs")

MAX_RECEIVE = 10  # ReceiveMessage returns at most 10 messages per call
#: ReceiveMessage's answer when the queue has its most messages in flight (120,000): a state of
#: the queue (its consumers delete or give back messages), not of this spout's configuration.
OVER_LIMIT = "OverLimit"
#: Seconds between an empty batch and the next receive when every receive is a short poll
#: (``wait_time: 0``) and the spout polls until stopped; a ``stop()`` ends the pause at once.
IDLE_PAUSE = 1.0
#: Seconds a stop gives to making the messages of a receive given up visible again (one attempt
#: per call of 10; each call's connect and read bounded by the time left: ``aws.time_bounded``):
#: past them, or at a call's failure, the rest come back after their timeout.
GIVE_BACK_SECONDS = 3.0
#: Long-poll seconds of a batch's follow-up receives (with messages in hand; ``wait_time`` if
#: less). A short poll asks only some of SQS's servers and often answers nothing while messages
#: wait (fewer than ~1,000 in the queue), ending batches short; a long poll asks them all and
#: answers as soon as a message is there, so a batch fills while messages wait and ends within
#: about this long of the queue going empty. Not on a FIFO queue: SQS gives no more of a message
#: group while messages of it are in flight, so with one or a few groups every follow-up would
#: wait this long for nothing (a batch a second); its follow-ups stay short polls.
FOLLOW_UP_WAIT = 1
#: Seconds a batch goes on receiving after its first messages came (at most half the
#: ``visibility_timeout``, or unset the queue's, read at start): a trickle of a message at least every ``FOLLOW_UP_WAIT``
#: would keep a batch filling until ``batch_size``, its first messages past their visibility
#: timeout — received again into the same batch, their receive count raised towards a redrive
#: policy's ``maxReceiveCount`` — and none processed meanwhile. A follow-up whose long poll
#: would end past them is a short poll, so the batch's receiving ends within them.
FILL_SECONDS = 5.0
#: Seconds past a given-up receive's start plus its ``WaitTimeSeconds`` by which SQS has ended its
#: poll (the request reaching SQS after the attempt is sent; the answer's own lag): the give-back
#: waits until then, so the poll, which SQS goes on with after its client is gone, cannot take the
#: messages given back.
POLL_END_MARGIN = 0.5


@dataclass(frozen=True, slots=True)
class Message:
    """What squall needs of one SQS message, from ReceiveMessage or a Lambda event."""

    message_id: str
    receipt_handle: str
    body: str
    group_id: str | None = None
    sequence_number: str | None = None
    sent_at_ms: int | None = None


def message_record(queue: str, msg: Message) -> Record:
    """The record of a message: position and event id stable across redeliveries (see module doc)."""
    if msg.group_id is not None and msg.sequence_number is not None:
        shard, seq = f"group-{msg.group_id}", msg.sequence_number
    else:
        # A message id is a UUID: its 128 bits as a decimal make a stable sequence number.
        shard, seq = (
            f"msg-{msg.message_id}",
            str(int(msg.message_id.replace("-", ""), 16)) if _is_uuid(msg.message_id) else "0",
        )
    arrival = datetime.fromtimestamp(msg.sent_at_ms / 1000, UTC) if msg.sent_at_ms else None
    return Record(
        msg.body.encode(), RecordMeta(queue, shard, seq, 0, msg.group_id or msg.message_id, arrival)
    )


def _is_uuid(value: str) -> bool:
    hexpart = value.replace("-", "")
    return len(hexpart) == 32 and all(c in "0123456789abcdefABCDEF" for c in hexpart)


def settled(records: list[Record], checkpoint: dict[str, Position]) -> list[bool]:
    """Per record, whether the engine's checkpoint covers it (it may be deleted / acknowledged).

    The engine checkpoints each shard at its last settled record before the first failed one, in
    batch order; so a record is covered when it comes, in batch order, at or before the record of
    its shard at the checkpointed position (sequence numbers are not compared: a stand-in's may
    not increase).
    """
    last: dict[str, int] = {}
    for i, r in enumerate(records):
        pos = checkpoint.get(r.meta.shard_id)
        if pos is not None and r.meta.position == pos:
            last[r.meta.shard_id] = i
    return [i <= last.get(r.meta.shard_id, -1) for i, r in enumerate(records)]


def queue_name(url_or_arn: str) -> str:
    """The queue's name from its URL or ARN."""
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def queue_arn(queue: str) -> tuple[str, str, str] | None:
    """``(region, account, name)`` of a queue given by ARN (``arn:aws:sqs:region:account:name``,
    as the Lambda trigger's template takes it), else None."""
    parts = queue.split(":")
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs" and all(parts[3:]):
        return parts[3], parts[4], parts[5]
    return None


class _StopWait:
    """A wait ``set`` ends at once, also when ``set`` is called by a signal handler that
    interrupted the waiting thread (``squall run``'s, which calls ``stop()``): its lock is
    re-entrant — ``threading.Event``'s is not, and a handler that ran while the wait held it
    (entering or leaving the wait) blocked for ever on it in ``set``."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._set = False

    def set(self) -> None:
        with self._cond:
            self._set = True
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        with self._cond:
            if not self._set:
                self._cond.wait(seconds)


class SqsSpoutConfig(ComponentConfig):
    queue: str = Field(
        description="Queue URL, ARN, or a queue name resolved with GetQueueUrl at start."
    )
    region: aws.OptionalSetting = Field(
        None,
        description="AWS region (default: the one the queue's ARN or AWS URL names, else "
        "AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).",
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="SQS endpoint (local testing).")
    wait_time: WholeSeconds = Field(
        5,
        ge=0,
        le=20,
        description="Long-poll seconds of a batch's first ReceiveMessage call (its later ones, "
        "with messages in hand, long-poll 1 s — a FIFO queue's, one whose 1 s would end past "
        "the batch's fill time, or with wait_time 0: short polls).",
    )
    visibility_timeout: WholeSeconds | None = Field(
        None,
        ge=0,
        le=43200,
        description="Seconds a received message stays hidden (default: the queue's).",
    )
    stop_when_empty: bool = Field(
        True, description="End when a receive returns nothing (false: poll until stopped)."
    )


class SqsSpout(Spout):
    """Receive messages (up to 10 per call) and delete each once it is committed or dead-lettered."""

    Config = SqsSpoutConfig
    summary = (
        "Read messages from an SQS queue; delete each once processed (FIFO order kept per group)."
    )
    acknowledges = True  # a settled message is deleted: no run reads it again
    # A long poll (``wait_time``, up to 20 s) may outlast a service manager's grace after SIGTERM
    # (``docker stop``: 10 s). ``squall run`` gives a receive up at a stop: nothing read is
    # deleted before its batch is committed, and the messages received into the unfinished batch
    # are made visible again once the poll given up has ended at SQS (``_give_back``).
    read_interruptible = True

    @classmethod
    def capabilities(cls, config: SqsSpoutConfig) -> Capabilities:
        """Lambda delivers this queue's messages with an SQS trigger (``squall package --template``)."""
        return Capabilities(
            lambda_trigger=LambdaTrigger(TriggerSource.SQS, config.queue, config.region)
        )

    def __init__(
        self,
        config: SqsSpoutConfig,
        context: ComponentContext,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ):
        """``clock`` (monotonic seconds) and ``sleep`` time the give-back's bound, its wait for a
        given-up receive's poll to end and the idle pause: tests pass their own instead of
        waiting. Unset, the give-back waits with ``time.sleep`` and the idle pause until its end
        or a ``stop()``, whichever comes first."""
        super().__init__(config, context)
        #: Ended by ``stop()``: the idle pause (``IDLE_PAUSE``) waits on it.
        self._stopped = _StopWait()
        self._clock, self._sleep = clock, sleep or time.sleep
        self._sleep_given = sleep is not None
        self.client: Any = None
        self.queue_url: str | None = (  # a URL as SQS gives it: no '/' at the end
            aws.url_without_slash(config.queue)
            if config.queue.startswith(("http://", "https://"))
            else None
        )
        self.name = queue_name(config.queue)
        self._handles: dict[
            tuple[str, str], str
        ] = {}  # (shard, sequence) -> receipt handle, in flight
        self._records: list[Record] = []  # read, not yet deleted (in order)
        self.deleted = 0
        # The receive in progress: its WaitTimeSeconds, and the time by which SQS has ended its
        # poll (None: no receive left unanswered; see ``_receive``).
        self._poll_wait = 0
        self._poll_end: float | None = None
        # The messages' visibility timeout: the config's, else the queue's (``open``; None:
        # unknown); a batch fills for at most half of it.
        self._visibility: int | None = config.visibility_timeout

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        arn = queue_arn(cfg.queue)
        if self.client is None:
            region = aws.resolve_region(cfg.region, aws.sqs_queue_region(cfg.queue))
            self.client = aws.client("sqs", region=region, endpoint_url=cfg.endpoint_url)
        if self.queue_url is None:
            # by ARN: its name in its account (the Lambda trigger's template takes an ARN too)
            named = {"QueueName": arn[2], "QueueOwnerAWSAccountId": arn[1]} if arn else {}
            try:
                self.queue_url = self.client.get_queue_url(**(named or {"QueueName": cfg.queue}))[
                    "QueueUrl"
                ]
            except Exception as exc:
                raise SquallError(
                    f"{self.id}: queue '{cfg.queue}': {aws.error_code(exc) or exc}"
                ) from None
        if self._visibility is None:
            self._visibility = self._queue_visibility()
        meta = getattr(self.client, "meta", None)
        if meta is not None:  # each attempt's send (a botocore retry polls anew, later)
            meta.events.register(
                "before-send.sqs.ReceiveMessage",
                self._attempt_sent,
                unique_id=f"squall-sqs-poll-start-{id(self)}",
            )

    def _queue_visibility(self) -> int | None:
        """The queue's own visibility timeout (GetQueueAttributes), which its messages get with
        ``visibility_timeout`` unset; None when it cannot be read (the identity may lack
        ``sqs:GetQueueAttributes``): a batch then fills ``FILL_SECONDS``."""
        try:
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"]
            )["Attributes"]
            return int(attrs["VisibilityTimeout"])
        except Exception as exc:  # noqa: BLE001 - best effort: the receives do not need it
            log.info(
                "%s: the queue's visibility timeout is unknown (%s): a batch fills up to %g s",
                self.id,
                aws.error_code(exc) or type(exc).__name__,
                FILL_SECONDS,
            )
            return None

    def _attempt_sent(self, **_: Any) -> None:
        """An attempt of the receive in progress is sent now: its poll ends after its wait."""
        self._poll_end = self._clock() + self._poll_wait + POLL_END_MARGIN

    def _receive(self, n: int, wait: int) -> list[Message]:
        """One ReceiveMessage call of up to ``n`` messages, long-polling ``wait`` seconds."""
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": min(n, MAX_RECEIVE),
            "WaitTimeSeconds": wait,
            "MessageSystemAttributeNames": ["SentTimestamp", "MessageGroupId", "SequenceNumber"],
        }
        if self.config.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self.config.visibility_timeout
        # Until it is answered, SQS may be polling for it: a stop that gives it up (or a network
        # error) leaves the poll running there, and the give-back waits for its end.
        self._poll_wait = wait
        self._poll_end = self._clock() + wait + POLL_END_MARGIN
        try:
            resp = self.client.receive_message(**kwargs)
        except Exception as exc:  # past botocore's retries: located, one line (not a traceback)
            if isinstance(exc, ClientError):  # SQS answered: its poll is over
                self._poll_end = None
            transient = aws.is_retryable(exc) or aws.error_code(exc) == OVER_LIMIT
            error = TransientError if transient else SquallError
            raise error(f"{self.id}: receiving from queue '{self.name}' failed: {exc}") from exc
        self._poll_end = None
        out = []
        for m in resp.get("Messages", []):
            a = m.get("Attributes", {})
            out.append(
                Message(
                    m["MessageId"],
                    m["ReceiptHandle"],
                    m["Body"],
                    a.get("MessageGroupId"),
                    a.get("SequenceNumber"),
                    int(a["SentTimestamp"]) if "SentTimestamp" in a else None,
                )
            )
        return out

    def stop(self) -> None:
        """Ask ``read`` to end after the batch in flight; an idle pause ends at once (a stop
        from another thread: the pause, a plain sleep, went on to its end)."""
        super().stop()
        self._stopped.set()

    def _idle_pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if ``stop()`` is called (the give-back's wait uses
        ``_sleep``, not this: a stop is what starts it); a test's ``sleep`` if one was given."""
        if self._sleep_given:
            self._sleep(seconds)
        else:
            self._stopped.wait(seconds)

    def read(self, max_records: int) -> Iterator[list[Record]]:
        while not self.stopping:
            batch = self._fill(max_records)
            if not batch:
                if self.config.stop_when_empty:
                    return
                if self.config.wait_time == 0 and not self.stopping:
                    # short polls only: without a pause an idle queue was polled without end
                    # (as fast as SQS answers: 185 a second on moto's server, each a billed request)
                    self._idle_pause(IDLE_PAUSE)
                if self.idle_batches:
                    yield batch  # empty: a sink rolling by age hears that time moves
                continue
            self._keep(batch)
            yield batch

    def _fill(self, max_records: int) -> list[Record]:
        """Receive up to ``max_records`` messages: until a receive returns none. The first
        receive long-polls ``wait_time``; with messages in hand a receive long-polls
        ``FOLLOW_UP_WAIT`` (at most ``wait_time``; a FIFO queue's is a short poll), so the batch
        fills while messages wait and ends soon after the queue is empty, or ``FILL_SECONDS``
        after its first messages came (a trickle). A stop that gives a follow-up up leaves its poll running at SQS, which
        would take the messages given back: ``_give_back`` waits for its end."""
        batch: list[Record] = []
        received: list[Message] = []
        fifo = self.name.endswith(".fifo")
        follow_up = 0 if fifo else min(self.config.wait_time, FOLLOW_UP_WAIT)
        visibility = self._visibility
        fill_seconds = FILL_SECONDS if visibility is None else min(FILL_SECONDS, visibility / 2)
        filled_by = 0.0  # the batch receives no more after then (set at its first messages)
        try:
            while len(batch) < max_records:
                if batch and self._clock() >= filled_by:
                    break
                wait = self.config.wait_time
                if batch:  # a long poll only if it ends within the fill time, else a short one
                    wait = follow_up if self._clock() + follow_up <= filled_by else 0
                msgs = self._receive(max_records - len(batch), wait)
                received.extend(msgs)
                if not msgs:
                    break
                if not batch:
                    filled_by = self._clock() + fill_seconds
                for m in msgs:
                    rec = message_record(self.name, m)
                    self._handles[(rec.meta.shard_id, rec.meta.sequence_number)] = m.receipt_handle
                    batch.append(rec)
        except BaseException:  # a stop gave the receive up (``read_interruptible``), or it failed
            if received:
                self._give_back(received)
            raise
        return batch

    def _give_back(self, received: list[Message]) -> None:
        """Make the messages of a receive given up visible again at once
        (ChangeMessageVisibilityBatch, VisibilityTimeout 0), so a FIFO group is not blocked and
        no message waits out its visibility timeout. First it waits until the poll of the receive
        given up has ended at SQS (``_poll_end``), or the poll would take them again. Best effort
        and bounded (a stop stays prompt): one attempt per call, ``GIVE_BACK_SECONDS`` in all, the
        wait included; what fails, or what a stop during it leaves (the stop raised on), is
        logged and comes back after its timeout. A message a held batch still holds (a rolling
        sink; SQS delivered it again) is not given back: its receipt handle, the newest, stays
        for that batch's delete."""
        held = {(r.meta.shard_id, r.meta.sequence_number) for r in self._records}
        handles: dict[tuple[str, str], str] = {}  # the newest handle of each message given back
        kept: set[tuple[str, str]] = set()
        for m in received:
            meta = message_record(self.name, m).meta
            key = (meta.shard_id, meta.sequence_number)
            if key in held:
                kept.add(key)
            else:
                handles[key] = m.receipt_handle
                self._handles.pop(key, None)
        given, failure = 0, None
        todo = list(handles.values())
        deadline = self._clock() + GIVE_BACK_SECONDS
        poll_end, self._poll_end = self._poll_end, None
        try:
            with aws.time_bounded(lambda: deadline - self._clock()):
                if poll_end is not None and todo and poll_end > self._clock():
                    self._sleep(min(poll_end, deadline) - self._clock())
                for i in range(0, len(todo), MAX_RECEIVE):
                    if self._clock() >= deadline:
                        failure = aws.NO_TIME_LEFT
                        break
                    chunk = todo[i : i + MAX_RECEIVE]
                    try:
                        resp = self.client.change_message_visibility_batch(
                            QueueUrl=self.queue_url,
                            Entries=[
                                {"Id": str(k), "ReceiptHandle": h, "VisibilityTimeout": 0}
                                for k, h in enumerate(chunk)
                            ],
                        )
                    except Exception as exc:  # the endpoint is down or slow: try no more
                        failure = aws.error_code(exc) or type(exc).__name__
                        break
                    failed = resp.get("Failed") or []
                    given += len(chunk) - len(failed)
                    if failed:
                        failure = failed[0].get("Code") or "failed"
        except BaseException:  # a stop during it: a second one (``squall run`` aborts), or the
            failure = "a stop interrupted the give-back"  # first after a receive's error
            raise
        finally:
            log.warning(
                "%s: %d message(s) received into the unfinished batch given back (visible "
                "again)%s%s",
                self.id,
                given,
                f"; {len(handles) - given} come back after their visibility timeout ({failure})"
                if given < len(handles)
                else "",
                f"; {len(kept)} held by an earlier batch kept" if kept else "",
            )

    def _keep(self, batch: list[Record]) -> None:
        """Remember the batch's records until a checkpoint covers them. A message received again
        (its visibility timeout passed: it failed, or a sink held it long) replaces its earlier
        record — a stale copy ahead of it would count as covered with it, and be deleted (FIFO:
        before the checkpoint) — and its receipt handle is the new one."""
        keys = {(r.meta.shard_id, r.meta.sequence_number) for r in batch}
        if len(keys) < len(batch):  # SQS delivered one message twice in the batch: keep the last
            last = {(r.meta.shard_id, r.meta.sequence_number): i for i, r in enumerate(batch)}
            batch[:] = [
                r
                for i, r in enumerate(batch)
                if last[(r.meta.shard_id, r.meta.sequence_number)] == i
            ]
        if self._records:
            self._records = [
                r for r in self._records if (r.meta.shard_id, r.meta.sequence_number) not in keys
            ]
        self._records.extend(batch)

    def commit(self, checkpoint: dict[str, Position]) -> None:
        """Delete the messages the checkpoint covers, of every batch not yet deleted (a sink that
        holds across batches makes one checkpoint cover several)."""
        covered = settled(self._records, checkpoint)
        done = [r for r, ok in zip(self._records, covered, strict=True) if ok]
        self._records = [r for r, ok in zip(self._records, covered, strict=True) if not ok]
        handles = [self._handles.pop((r.meta.shard_id, r.meta.sequence_number)) for r in done]
        for i in range(0, len(handles), MAX_RECEIVE):
            chunk = handles[i : i + MAX_RECEIVE]
            try:
                resp = self.client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(k), "ReceiptHandle": h} for k, h in enumerate(chunk)],
                )
            except Exception as exc:  # past botocore's retries: located, one line
                error = TransientError if aws.is_retryable(exc) else SquallError
                raise error(
                    f"{self.id}: deleting {len(handles) - i} message(s) from queue '{self.name}' "
                    f"failed (they come back after their visibility timeout): {exc}"
                ) from exc
            if resp.get("Failed"):
                # The message comes back after its visibility timeout and is processed again;
                # idempotent sinks make that harmless.
                raise SquallError(
                    f"{self.id}: DeleteMessageBatch failed for {len(resp['Failed'])} message(s): "
                    f"{resp['Failed'][0].get('Code')}"
                )
            self.deleted += len(chunk)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
