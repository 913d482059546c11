"""Batched sends with per-item answers, shared by the sqs, firehose, http and push sinks
(``ConcurrentRequests``: the http and push sinks' thread pool of requests).

A sink turns its prepared events into ``Item``s (one request entry each) and a ``send`` function
that takes one chunk and answers per item: ``None`` (written), ``Retry(reason)`` (throttled, a
5xx, an internal error: the same item may succeed later) or ``Reject(reason)`` (the service
refuses this item for good: a 4xx, an invalid body). ``send_all`` retries the ``Retry`` items
with jittered backoff up to ``max_attempts``; what still fails is the batch's partial failure.
Given the runner's ``time_left`` (``WriteContext.time_left``: the Lambda runners' deadline less
their margin), a retry whose backoff (or ``Retry-After``) would outlast it is not made: its items
fail now, and the runner answers them for a retry — a Lambda killed at its timeout answers
nothing, and its whole batch comes again. No call is started once that time is spent
(``TransientError`` ``not sent: …``, as an http request's), and a call's AWS client makes one
attempt (``aws.time_bounded``: botocore's retries do not know the deadline; a whole call
throttled is the sink's ``TransientError``, which the engine retries only while its backoff
fits).

Items remember that they were written (``done``) on the ``Prepared`` payload, so when a whole
call fails (connection lost, the service throttles everything) the sink raises
``TransientError`` and the engine's retry of ``write_batch`` sends only what was not written yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from squall import aws
from squall.errors import TransientError
from squall.event import Event, Failure
from squall.sinks.base import WriteResult

log = logging.getLogger("squall.sinks")

NO_TIME_LEFT = aws.NO_TIME_LEFT
#: Appended to the reason of an item that was not retried because the deadline was near.
NOT_RETRIED = f"(not retried: {NO_TIME_LEFT})"
#: The reason of an item no call was started for because the deadline was reached.
NOT_SENT = aws.NOT_SENT


@dataclass(frozen=True, slots=True)
class Retry:
    """The service could not take the item now; the same request may succeed later."""

    reason: str
    retry_after: float | None = None
    #: No connection could be made (refused, or the connect timed out): the service is
    #: unreachable, whatever the request carried (``ConcurrentRequests._send``: an outage).
    unreachable: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """The service refuses the item for good (a 4xx, an invalid message)."""

    reason: str


Answer = Retry | Reject | None


@dataclass(slots=True)
class Item:
    """One request entry and the events it carries; ``done`` once the service took it."""

    events: list[Event]
    body: Any
    size: int = 0
    done: bool = False
    key: str = ""
    refused: str | None = None  # the service refused it for good (kept across engine retries)
    tried: bool = False  # sent and not taken yet (the sqs sink's FIFO queues send it first)
    retry_after: float | None = None  # the wait the service asked for when it last failed it


@dataclass
class SendOutcome:
    """Items still failing after the retries, items refused for good, and call counts."""

    failed: list[tuple[Item, str]] = field(default_factory=list)
    rejected: list[tuple[Item, str]] = field(default_factory=list)
    calls: int = 0
    retried: int = 0


def send_all(
    name: str,
    groups: Iterator[list[Item]],
    send: Callable[[list[Item]], list[Answer]],
    *,
    max_attempts: int,
    backoff: aws.Backoff,
    sleep: Callable[[float], None] = time.sleep,
    time_left: Callable[[], float | None] | None = None,
) -> SendOutcome:
    """Send each group; retry items answered ``Retry`` (bounded). ``send`` raises ``TransientError``
    for a whole-call failure: items already written stay ``done``, so the engine's retry skips them.
    ``time_left`` (seconds before the runner's deadline, less its margin; None: no limit): a retry
    whose delay would outlast it is not made — its items fail with the reason."""
    outcome = SendOutcome()
    for group in groups:
        outcome.rejected.extend((i, i.refused) for i in group if i.refused is not None)
        pending = [i for i in group if not i.done and i.refused is None]
        attempt = 0
        while pending:
            if attempt == 0 and aws.time_spent(time_left):
                # No call is started with no time left (the http and push sinks' requests
                # neither): the call fails as transient, and the engine's retry, bounded by
                # the same time left, is not made — what was written stays done.
                raise TransientError(f"{name}: {NOT_SENT}")
            attempt += 1
            outcome.calls += 1
            with aws.time_bounded(time_left):  # botocore's own retries do not know the deadline
                answers = send(pending)
            if len(answers) != len(pending):  # pragma: no cover - a contract bug in the caller
                raise RuntimeError(f"{name}: {len(answers)} answers for {len(pending)} items")
            retry: list[tuple[Item, Retry]] = []
            for item, answer in zip(pending, answers, strict=True):
                if answer is None:
                    item.done = True
                elif isinstance(answer, Reject):
                    item.refused = answer.reason  # never sent again for this batch, still reported
                    outcome.rejected.append((item, answer.reason))
                else:
                    item.retry_after = answer.retry_after  # the runner's answer may pass it on
                    retry.append((item, answer))
            if not retry:
                break
            if attempt >= max_attempts:
                log.warning(
                    "%s: %d item(s) still failing after %d attempts: %s",
                    name,
                    len(retry),
                    attempt,
                    retry[0][1].reason,
                )
                outcome.failed.extend((item, a.reason) for item, a in retry)
                break
            delay = max(backoff.delay(attempt - 1), max((a.retry_after or 0.0) for _, a in retry))
            left = time_left() if time_left is not None else None
            if left is not None and delay >= left:
                # The invocation's time is nearly spent: the retry would be cut off by the timeout.
                log.warning(
                    "%s: %d item(s) not taken (%s); not retried: %.2fs left before the deadline, "
                    "%.2fs of backoff",
                    name,
                    len(retry),
                    retry[0][1].reason,
                    max(left, 0.0),
                    delay,
                )
                outcome.failed.extend(
                    (item, a.reason if NO_TIME_LEFT in a.reason else f"{a.reason} {NOT_RETRIED}")
                    for item, a in retry
                )
                break
            outcome.retried += len(retry)  # a retry made (not one the deadline left out)
            log.info(
                "%s: %d of %d item(s) not taken (%s); retrying in %.2fs",
                name,
                len(retry),
                len(pending),
                retry[0][1].reason,
                delay,
            )
            sleep(delay)
            pending = [item for item, _ in retry]
    return outcome


def time_left_of(ctx: Any) -> Callable[[], float | None] | None:
    """The write's ``time_left`` (None without a context: a sink called directly)."""
    return getattr(ctx, "time_left", None)


#: Set by the engine's commit path when it can dead-letter records a sink refused at write time.
_HAS_REJECTED = "rejected" in {f.name for f in fields(WriteResult)}


def write_result(component: str, outcome: SendOutcome) -> WriteResult | None:
    """The sink's answer: still-failing items are ``failed`` (the source delivers them again);
    refused items are ``rejected`` (dead-lettered) where ``WriteResult`` supports it, else failed."""
    failed: list[Event] = []
    rejected: list[Event] = []
    for item, reason in outcome.failed:
        for ev in item.events:
            ev.failure = Failure(component, reason, retry_after=item.retry_after)
            failed.append(ev)
    for item, reason in outcome.rejected:
        for ev in item.events:
            ev.failure = Failure(component, reason)
            rejected.append(ev)
    if not failed and not rejected:
        return None
    if _HAS_REJECTED:
        return WriteResult(failed=failed, rejected=rejected)  # type: ignore[call-arg]
    return WriteResult(failed=failed + rejected)


def truncate(text: str, limit: int = 300) -> str:
    """A service's answer shortened for a failure reason."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def aws_call(name: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """One AWS API call: throttling, 5xx and network errors become ``TransientError``, others ``SinkError``."""
    from squall.errors import SinkError, TransientError

    try:
        return fn(**kwargs)
    except Exception as exc:
        code = aws.error_code(exc)
        if aws.is_retryable(exc):
            raise TransientError(f"{name}: {code or type(exc).__name__}: {exc}") from exc
        raise SinkError(f"{name} failed: {code or type(exc).__name__}: {exc}") from exc


def resolve_queue_url(component: str, client: Any, queue: str) -> str:
    """The URL of ``queue`` (a name: GetQueueUrl; an ARN: GetQueueUrl of its name in its
    account; a URL as it is). An error names the queue and the client's region: with the name
    from ``${VAR}`` or another region's queue, "the specified queue does not exist" alone does
    not say which one was asked for."""
    if queue.startswith(("http://", "https://")):
        return queue
    region = getattr(getattr(client, "meta", None), "region_name", None)
    where = f" in {region}" if isinstance(region, str) and region else ""
    name = f"{component}: GetQueueUrl of queue '{queue}'{where}"
    arn = aws.sqs_queue_arn_parts(queue)  # before, the ARN was asked for as a name: "no such queue"
    named = {"QueueName": arn[2], "QueueOwnerAWSAccountId": arn[1]} if arn else {"QueueName": queue}
    return aws_call(name, client.get_queue_url, **named)["QueueUrl"]


def retry_after_seconds(
    value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class ConcurrentRequests:
    """What the http and push sinks share: one request per ``Item`` on a thread pool over an
    httpx client. A sink sets ``pool`` and ``client`` in ``open`` and implements ``_request``."""

    id: str
    pool: Any = None  # concurrent.futures.ThreadPoolExecutor
    client: Any = None  # httpx.Client
    time_left: Callable[[], float | None] | None = None  # the write's (set by write_batch)
    #: The service took a request of this write: it is up, so a retry round whose requests all
    #: fail again is those records' failure after ``max_attempts``, not an outage — unless no
    #: request of the round could connect (``Retry.unreachable``). The sink's write_batch resets
    #: it; a refusal alone proves nothing: a front may refuse while the service behind it is down.
    took: bool = False

    def _timeout(self, configured: float) -> float | None:
        """A request's timeout: the configured one, but no longer than the time left before the
        runner's deadline (httpx applies it to the connect and to each read); None: no time is
        left, the request is not sent."""
        left = self.time_left() if self.time_left is not None else None
        if left is None:
            return configured
        return min(configured, left) if left > 0 else None

    def _held_back(self, limiter: Any) -> Retry | None:
        """Wait for ``limiter``'s next token (None: no rate limit), but only while it comes before
        the runner's deadline; otherwise the request is not sent: a ``Retry`` whose
        ``retry_after`` is the wait (``send_all`` then fails it at once, the time being spent)."""
        if limiter is None:
            return None
        left = self.time_left() if self.time_left is not None else None
        wait = limiter.acquire(max_wait=None if left is None else max(0.0, left))
        return None if wait is None else Retry(NOT_SENT, retry_after=wait)

    def _request(self, item: Item) -> Retry | Reject | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _send(self, items: list[Item]) -> list[Retry | Reject | None]:
        """Every item's answer. When nothing of the write got through (the endpoint is down or
        throttles everything) raise ``TransientError``: the engine retries the batch with
        backoff, and what was already written stays done. Once the service took a request of
        the write, the requests still failing are retried by ``send_all`` up to
        ``max_attempts`` and then fail as records: one message FCM answers 500 to at every
        attempt failed the whole batch after two attempts (nothing checkpointed, the messages
        it had delivered sent again)."""
        assert self.pool is not None
        futures = [self.pool.submit(self._request, item) for item in items]
        answers: list[Retry | Reject | None] = []
        error: BaseException | None = None
        for future in futures:  # every request ends before anything is raised
            try:
                answers.append(future.result())
            except Exception as exc:  # a token refresh that failed, a bug: the call's error
                error = error or exc
                answers.append(Retry(str(exc)))
        if error is not None:
            # What got through stays done (what was refused, refused): the engine's retry of the
            # call must not send it again.
            for item, future, answer in zip(items, futures, answers, strict=True):
                if future.exception() is None:
                    if answer is None:
                        item.done = True
                    elif isinstance(answer, Reject):
                        item.refused = answer.reason
            raise error
        if any(a is None for a in answers):
            self.took = True
        elif (
            answers
            and all(isinstance(a, Retry) for a in answers)
            and (not self.took or all(a.unreachable for a in answers))  # type: ignore[union-attr]
        ):
            # A round whose every request found no connection is an outage even after the
            # service took a request of the write (it went down since): a refused connection
            # says nothing of the message it was to carry.
            waits = [
                a.retry_after for a in answers if isinstance(a, Retry) and a.retry_after is not None
            ]
            raise TransientError(
                f"{self.id}: {answers[0].reason}", retry_after=max(waits) if waits else None
            )
        return answers

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        if self.client is not None:
            self.client.close()
            self.client = None
