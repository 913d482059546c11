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

import binascii
import functools
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from squall import redact
from squall.deploy import snapstart
from squall.deploy.deadline import Deadline
from squall.deploy.lambda_sources import LambdaSources, event_source
from squall.errors import BatchFailed, SquallError
from squall.event import Record, RecordMeta, new_meta
from squall.observability.logs import log_context
from squall.observability.runners import lambda_logging, lambda_observer
from squall.safe_json import json_type
from squall.secrets import aws_secrets
from squall.topology import registry
from squall.topology.executor import Engine, batch_collection
from squall.topology.loader import load
from squall.topology.outcomes import BatchResult

log = logging.getLogger("squall.lambda")


#: How much of an undecodable ``data`` field is kept for the dead letter.
KEPT_PREFIX = 1024


class NotAKinesisEvent(SquallError):
    """The Lambda event is not a Kinesis event-source-mapping batch (wrong trigger, or a test event)."""


def records_from_event(event: dict[str, Any]) -> list[Record]:
    """Kinesis records of a Lambda event (base64 data, shard id from ``eventID``).

    An event that is not a Kinesis batch raises ``NotAKinesisEvent`` naming what arrived. A
    record whose ``data`` is missing or not base64 is kept as a record marked with the reason
    (``RecordMeta.defect``): it goes to the dead letter, the rest of the batch goes on. A record
    without a sequence number cannot be reported back to Lambda, so it refuses the event too.
    """
    source = event_source(event)
    if source != "aws:kinesis":
        raise NotAKinesisEvent(
            f"not a Kinesis event: received {source}; this function is the consumer "
            "of a Kinesis event source mapping"
        )
    out: list[Record] = []
    append = out.append
    streams: dict[object, str] = {}  # ARN -> stream name: one ARN per event
    arrivals: dict[float, datetime | None] = {}  # records of a batch share arrival times
    for i, r in enumerate(event["Records"]):
        k = r.get("kinesis") if isinstance(r, dict) else None
        seq = k.get("sequenceNumber") if isinstance(k, dict) else None
        if not isinstance(seq, str) or not seq.isdigit():
            raise NotAKinesisEvent(
                f"Records[{i}]: no kinesis.sequenceNumber (a decimal string); got {seq!r:.80}"
            )
        event_id = r.get("eventID")
        shard_id = (event_id.split(":", 1)[0] if isinstance(event_id, str) else "") or "unknown"
        arn = r.get("eventSourceARN")
        stream = streams.get(arn) if isinstance(arn, str) else ""
        if stream is None:
            stream = streams[arn] = arn.rsplit("/", 1)[-1]
        data, defect = _data(k.get("data"))
        pk = k.get("partitionKey")
        ts = k.get("approximateArrivalTimestamp")
        if type(ts) is float or type(ts) is int:  # not bool (an int subclass)
            arrival = arrivals.get(ts, _UNSET)
            if arrival is _UNSET:
                arrival = arrivals[ts] = _arrival(ts)
        else:
            arrival = None
        append(
            Record(
                data,
                new_meta(  # every field, in order (squall.event.new_meta)
                    RecordMeta,
                    (
                        stream,
                        shard_id,
                        seq,
                        0,
                        pk if isinstance(pk, str) else "",
                        arrival,
                        None,
                        None,
                        defect,
                        None,
                        0,
                    ),
                ),
            )
        )
    return out


_UNSET: Any = object()


def _data(value: object) -> tuple[bytes, str | None]:
    if not isinstance(value, str):
        return (
            b"",
            f"kinesis.data is {'missing' if value is None else 'a JSON ' + json_type(value)}, not base64 text",
        )
    try:
        # What base64.b64decode(validate=True) accepts, without its regular-expression pre-check.
        return binascii.a2b_base64(value, strict_mode=True), None
    except (binascii.Error, ValueError) as exc:
        kept = value[:KEPT_PREFIX].encode("utf-8", "backslashreplace")
        return (
            kept,
            f"kinesis.data is not valid base64 ({exc}); its first {len(kept)} characters are kept",
        )


def _arrival(value: object) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def process_in_slices(
    engine: Engine,
    observer: Any,
    records: list[Record],
    size: int,
    deadline: Deadline | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Run an invocation's records through the engine ``size`` at a time; the Lambda response.

    Each slice is a whole batch of the engine (its own commit sequence), so memory holds one
    slice's events, not the invocation's. Slices cut between Kinesis records, never inside a KPL
    aggregate. A slice that fails, or has failed records, ends the invocation: what is left is
    reported from its first record (or the first failed one), and Lambda retries from there; the
    slices before it are committed and are not processed again. A slice that would not end
    before the invocation's ``deadline`` is not started (``squall.deploy.deadline``): what is
    left is reported from each shard's first record, as after a failed slice.

    ``records`` is consumed: a committed slice's records leave the list (and with its result,
    the memory) before the next slice runs — 10 MB less RSS after the example's 10,000-record
    invocation (benchmarks/lambda_bench.py). On return the list holds what was not committed.
    """
    while records:
        if deadline is not None and not deadline.next_slice():
            deadline.report(len(records), "records")
            return batch_item_failures(records, None)
        # The slice's collector threshold until its records and result are let go: the young
        # collection due after it then scans what outlives it, not its events.
        with batch_collection():
            part = records[:size]
            try:
                # An event source mapping's batch is one shard's: every line of it names the shard.
                shard = part[0].meta.shard_id
                with observer.recorder.batch(engine, part, shard=shard) as watch:
                    watch.result = result = engine.process(part)
            except BatchFailed as exc:
                with log_context(shard=shard):
                    log.error("batch of %d records failed: %s", len(part), exc)
                return batch_item_failures(records, None)
            with log_context(shard=shard):
                result.log_failures(log)
            if result.failed:
                return batch_item_failures(records, result, after=records[size:])
            del records[:size], part, result, watch  # committed
    return {"batchItemFailures": []}


def batch_item_failures(
    records: list[Record], result: BatchResult | None, after: Sequence[Record] = ()
) -> dict[str, list[dict[str, str]]]:
    """The response: per shard, the sequence number of its first failed record (Lambda retries from there).

    ``after``: records not processed (a later slice): each shard's first one is reported when
    the shard has no failed record before it.
    """
    firsts: dict[str, str] = {}
    if result is None:  # the whole batch failed: retry it from its first record of each shard
        for r in records:
            firsts.setdefault(r.meta.shard_id, r.meta.sequence_number)
    else:
        for o in result.failed:
            firsts.setdefault(o.shard_id, o.position.sequence_number)
    for r in after:
        firsts.setdefault(r.meta.shard_id, r.meta.sequence_number)
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in firsts.values()]}


def warn_about_local_dead_letters(topology) -> None:
    """A sink writing local files (the dead-letter file) writes to the container's disk, which
    Lambda discards: say so at init. Sinks declare it (``Capabilities.writes_local_files``)."""
    for _kind, sink, caps in registry.declared(topology, ("sink",)):
        if caps.writes_local_files:
            log.warning(
                "sink '%s' writes to a local file, lost with the Lambda container: use a durable "
                "sink instead (dead letters: dead_letter_sqs, dead_letter_s3, dead_letter_kinesis "
                "or dead_letter_table; docs/sinks.md)",
                sink.id,
            )


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (Lambda's Python runtimes run on glibc), or None elsewhere."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system after an invocation.

    An invocation's slices allocate and free tens of megabytes of small objects (records,
    events, rows, SQL parameters); glibc keeps the freed pages in its arenas, so the container's
    RSS stays at the invocation's peak. ``malloc_trim(0)`` returns them: measured on the example
    (benchmarks/lambda_bench.py), 4-9 MB less RSS after a 10,000-record invocation for 1-3 ms
    of CPU (the first call includes loading ctypes).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while a Lambda init runs (restored after, as it was).

    Init builds ~60,000 objects that live as long as the container (modules, classes, parsers)
    and the engine then freezes them (``gc.freeze``). Collecting while they are built ran ~150
    collections, 45-55 ms of the example's init, to free ~1,400 objects (under 1 MB, measured
    with ``gc.collect()`` after such an init), which now stay in the frozen heap.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def make_handler(topology_path: str | Path) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler for a topology; resources open now (the init phase), once per container."""
    with collector_paused():
        return _make_handler(topology_path)


def _make_handler(topology_path: str | Path) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    redact.install()  # Lambda's runtime logs through the root logger: mask passwords there too
    redact.mask_uncaught()  # a thread's uncaught error, an unraisable one: masked in the logs too
    lambda_logging()  # SQUALL_LOG_FORMAT before anything is logged
    topology = load(topology_path, secrets=aws_secrets())  # read at init, once
    warn_about_local_dead_letters(topology)
    # Lambda retries from a sequence number: every user record of a KPL aggregate comes again.
    engine = Engine.for_topology(topology, whole_records=True).open()
    observer = lambda_observer(topology.name)  # EMF metrics + one log line per invocation

    sources = LambdaSources(topology)  # SQS and S3 triggers

    size = topology.settings.lambda_batch_size
    margin = topology.settings.lambda_deadline_margin
    snapstart.prepare(engine)  # a SnapStart init: warm up now, reconnect after each restore

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        with log_context(topology=topology.name):  # every line of the invocation names it
            return invoke(event, context)

    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        deadline = Deadline.of(context, margin)
        # A dependency down inside a slice is retried only while time is left: a retry cut off
        # by the timeout would have the whole batch, its committed slices too, delivered again.
        engine.time_left = deadline.seconds_left
        try:  # SQS and S3 batches are observed as Kinesis' are (an S3 failure raises)
            answer = sources.handle(engine, event, observer.recorder, deadline)
            if answer is not NotImplemented:
                return answer
            try:
                records = records_from_event(event)
            except NotAKinesisEvent as exc:
                # the invocation fails with this message; nothing is acknowledged
                log.error("%s", exc)
                raise
            return process_in_slices(engine, observer, records, size, deadline)
        finally:
            engine.time_left = None
            if deadline.stopped:
                observer.deadline_stop()
            observer.flush(context)
            release_free_memory()

    handler.engine = engine  # type: ignore[attr-defined] - for tests and shutdown hooks
    return handler
