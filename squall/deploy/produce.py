"""``squall produce``: send a JSON-lines file (optionally .gz) into a Kinesis stream.

Each non-blank line is one user record, sent as is. The partition key is a field of the line
(``--partition-key user.id``) or, by default, the line number; a line that is not JSON or lacks
the field is still sent (test files hold bad records on purpose), keyed by its line number. With ``--aggregate`` user records
are packed into KPL aggregates per shard; ``--rate`` paces user records per second.
"""

from __future__ import annotations

import gzip
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from squall import aws, exact_json
from squall.errors import SinkError, SquallError, TransientError
from squall.kinesis.putrecords import (
    MAX_CALL_BYTES,
    MAX_CALL_RECORDS,
    SHARD_MAP_TTL,
    Aggregator,
    Entry,
    PutRecordsWriter,
    ShardMap,
    load_shard_map,
    record_problem,
)
from squall.redact import redact_text
from squall.spouts.file import read_lines
from squall.spouts.lines import BOM

log = logging.getLogger("squall.produce")

#: Pending records are sent at least this often (seconds), so a slow --rate still flows.
FLUSH_INTERVAL = 0.5
#: Failure lines kept for the report.
MAX_REPORTED_FAILURES = 20


#: Lines without the partition key named in the report, so a user finds them in the file.
MAX_UNKEYED_LINES = 5


@dataclass
class ProduceReport:
    """The outcome of one produce run; counts are user records (lines) unless said otherwise."""

    lines: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0  # Kinesis records sent again after a partial failure
    resent: int = (
        0  # user records sent again because their aggregate landed on another shard (reshard)
    )
    unkeyed: int = 0  # lines without the partition key field, keyed by line number instead
    unkeyed_lines: list[int] = field(default_factory=list)  # the first MAX_UNKEYED_LINES of them
    kinesis_records: int = 0  # Kinesis records accepted (aggregates count once)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def fail(self, count: int, reason: str) -> None:
        self.failed += count
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(reason)


def _open_lines(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(raw file for progress, line source) — gzip is detected by its magic bytes."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by produce_file
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return raw, gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    raw.seek(0)
    return raw, raw


def _key_of(data: bytes, path: str) -> str | None:
    """The scalar at a dotted path of a JSON line, as a string; None if not JSON or absent."""
    try:
        doc: Any = exact_json.loads(data)  # an integer key beyond 64 bits as its digits
    except ValueError:
        return None
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    if doc is None or isinstance(doc, dict | list) or doc == "":
        return None
    return str(doc)


def produce_file(
    path: str | Path,
    *,
    stream: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    rate: float | None = None,
    aggregate: bool = False,
    partition_key: str | None = None,
    max_attempts: int = 5,
    client: Any = None,
    on_progress: Callable[[int, ProduceReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    report: ProduceReport | None = None,
) -> ProduceReport:
    """Send every non-blank line of ``path`` to ``stream``; returns counts, never raises for a record.

    Raises ``SinkError`` when the stream cannot be written at all (missing, access denied).

    ``on_progress(bytes_read, report)`` is called after each PutRecords round. ``report``: the
    one to count into (the caller reads it when the send is interrupted), else a new one.
    """
    ref = aws.StreamRef.parse(stream)
    endpoint_url = aws.check_endpoint_url(endpoint_url)  # empty: AWS's endpoint
    if client is None:
        client = aws.client(
            "kinesis", region=aws.resolve_region(region, ref.region), endpoint_url=endpoint_url
        )
    writer = PutRecordsWriter(client, ref, max_attempts=max_attempts, sleep=sleep)
    aggregator = Aggregator(load_shard_map(client, ref)) if aggregate else None
    report = ProduceReport() if report is None else report
    started = clock()
    raw, lines = _open_lines(Path(path))
    pending: list[Entry] = []
    pending_bytes = 0
    last_flush = started

    def flush() -> None:
        nonlocal pending, pending_bytes, last_flush
        refilled: list[Entry] = []
        if pending:
            shard_map = _send(writer, pending, report, max_attempts, sleep)
            if aggregator is not None:
                if (
                    shard_map is None
                    and time.monotonic() - aggregator.shard_map.loaded_at > SHARD_MAP_TTL
                ):
                    shard_map = _relist(client, ref)
                if (
                    shard_map is not None
                ):  # what waits in open aggregates is re-grouped by the new map
                    refilled = aggregator.reroute(shard_map)
        pending, pending_bytes, last_flush = refilled, sum(e.size for e in refilled), clock()
        report.seconds = last_flush - started
        if on_progress is not None:
            on_progress(raw.tell(), report)

    try:
        for number, data, too_long in _records(lines):
            report.lines += 1
            if too_long is not None:
                report.fail(1, f"line {number}: {too_long}")
                continue
            if rate:
                due = started + (report.lines - 1) / rate
                wait = due - clock()
                if wait > 0:
                    sleep(wait)
            pk = str(number)
            if partition_key:
                value = _key_of(data, partition_key)
                if value is None:  # still sent: a test file may hold bad records on purpose
                    report.unkeyed += 1
                    if len(report.unkeyed_lines) < MAX_UNKEYED_LINES:
                        report.unkeyed_lines.append(number)
                else:
                    pk = value
            problem = record_problem(data, pk)
            if problem is not None:
                report.fail(1, f"line {number}: {problem}")
                continue
            new = (
                aggregator.add(data, pk, None, number)
                if aggregator
                else [Entry(data, pk, None, [number])]
            )
            for entry in new:
                pending.append(entry)
                pending_bytes += entry.size
            if (
                len(pending) >= MAX_CALL_RECORDS
                or pending_bytes >= MAX_CALL_BYTES
                or clock() - last_flush >= FLUSH_INTERVAL
            ):
                if aggregator is not None and clock() - last_flush >= FLUSH_INTERVAL:
                    pending.extend(aggregator.flush())
                flush()
        while True:
            if aggregator is not None:
                pending.extend(aggregator.flush())
            flush()
            if not pending:  # a last re-grouping may leave full aggregates to send
                break
    finally:
        raw.close()
    report.seconds = clock() - started
    return report


def _relist(client: Any, ref: aws.StreamRef) -> ShardMap | None:
    """The shard map listed again, or None (keep the old one) when ListShards cannot answer now."""
    try:
        return load_shard_map(client, ref)
    except TransientError as exc:
        log.info("ListShards of '%s' failed (%s): keeping the shard map", ref.name, exc)
        return None


#: Longer lines cannot be one Kinesis record (1 MiB with its key): read no more of them than this.
PRODUCE_MAX_LINE = 1_048_576


def _records(lines: IO[bytes]) -> Iterator[tuple[int, bytes, str | None]]:
    for number, line in enumerate(read_lines(lines, "input", PRODUCE_MAX_LINE), start=1):
        if line.too_long:
            yield (
                number,
                b"",
                f"record is {line.length} bytes, over the Kinesis record limit ({PRODUCE_MAX_LINE})",
            )
        elif line.data.strip():
            # A UTF-8 BOM opening the file (Excel and Windows exports) is not the first record's:
            # the file spout drops it too, and a JSON decoder refuses it.
            data = line.data[len(BOM) :] if number == 1 and line.data.startswith(BOM) else line.data
            yield number, data, None


def _send(
    writer: PutRecordsWriter,
    entries: list[Entry],
    report: ProduceReport,
    attempts: int,
    sleep: Callable[[float], None],
) -> ShardMap | None:
    """Put entries; a whole-call transient failure (nothing written) is retried here, bounded.

    Returns the shard map listed again when an aggregate was misplaced (a reshard), else None.
    ``SinkError`` (missing stream, access denied) propagates: the rest of the file would fail alike.
    """
    for attempt in range(attempts):
        try:
            outcome = writer.put(entries)
            break
        except TransientError as exc:
            if attempt + 1 >= attempts:
                report.fail(
                    sum(len(e.items) for e in entries), f"{len(entries)} Kinesis record(s): {exc}"
                )
                return None
            sleep(writer.backoff.delay(attempt))
    report.retried += outcome.retried
    report.resent += outcome.resent
    report.kinesis_records += outcome.sent
    failed = 0
    for entry, reason in outcome.failed:
        failed += len(entry.items)
        report.fail(
            len(entry.items),
            f"lines {entry.items[0]}..{entry.items[-1]}: {reason}"
            if len(entry.items) > 1
            else f"line {entry.items[0]}: {reason}",
        )
    report.sent += sum(len(e.items) for e in entries) - failed
    return outcome.shard_map


@click.command("produce")
@click.option("--stream", required=True, help="Stream name or ARN.")
@click.option("--endpoint-url", default=None, help="Kinesis endpoint (e.g. a local kinesis-mock).")
@click.option(
    "--region",
    default=None,
    help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Send at most N user records per second.",
)
@click.option("--aggregate", is_flag=True, help="Pack records into KPL aggregates (per shard).")
@click.option(
    "--partition-key",
    default=None,
    metavar="FIELD",
    help="Dotted path of the partition key in each line (default: the line number).",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def produce(
    stream: str,
    endpoint_url: str | None,
    region: str | None,
    rate: float | None,
    aggregate: bool,
    partition_key: str | None,
    file: Path,
) -> None:
    """Send a JSON-lines FILE (optionally .gz) into a Kinesis stream, one record per line."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True, soft_wrap=True)
    total = file.stat().st_size
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[sent]:,} sent · {task.fields[failed]:,} failed"),
        TimeRemainingColumn(),
    )
    # counted into as the file is read (a line refused before any PutRecords round too): said
    # when interrupted
    last = ProduceReport()
    previous = _stop_on_sigterm()
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"→ {stream}", total=total, sent=0, failed=0)

            def update(done: int, report: ProduceReport) -> None:
                bar.update(task, completed=done, sent=report.sent, failed=report.failed)

            report = produce_file(
                file,
                stream=stream,
                region=region,
                endpoint_url=endpoint_url,
                rate=rate,
                aggregate=aggregate,
                partition_key=partition_key,
                on_progress=update,
                report=last,
            )
    except (
        SinkError,
        TransientError,
        ValueError,
    ) as exc:  # ValueError: a malformed ARN or endpoint URL
        err.print(f"[red]produce failed:[/red] {_text(exc)}")
        raise click.exceptions.Exit(2) from None
    except SquallError as exc:  # the file itself (a truncated .gz)
        err.print(f"[red]produce failed:[/red] {_text(exc)}")
        raise click.exceptions.Exit(1) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: 130, as `squall run` (not click's 1, "Aborted!")
        err.print(
            f"interrupted: {last.sent:,} records sent, {last.failed:,} failed before the stop; "
            "the rest of the file was not sent (the records of a PutRecords call in flight "
            "may have been)",
            highlight=False,
        )
        raise click.exceptions.Exit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    click.echo(
        f"sent {report.sent:,} records ({report.kinesis_records:,} Kinesis records) to {stream} "
        f"in {report.seconds:.1f}s: {report.records_per_second:,.0f} records/s; "
        f"failed {report.failed:,}, retried {report.retried:,}"
    )
    if report.resent:
        err.print(
            f"{report.resent:,} record(s) sent again, re-grouped: their aggregate landed on another shard "
            "(the stream was resharded)"
        )
    if report.unkeyed:
        err.print(
            f"{report.unkeyed:,} line(s) had no '{_text(partition_key)}' (or were not JSON): "
            f"keyed by line number ({unkeyed_lines(report)})"
        )
    for line in report.failures:
        err.print(f"[red]failed[/red] {_text(line)}", highlight=False)
    if report.failed > MAX_REPORTED_FAILURES:
        err.print(f"… and {report.failed - len(report.failures):,} more")
    if report.failed:
        raise click.exceptions.Exit(1)


def _stop_on_sigterm() -> Any:
    """SIGTERM (a service manager's stop, ``timeout``, ``kill``) stops the send as Ctrl-C does;
    returns the handler it replaces (None off the main thread, where no handler can be set)."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:
        return None


def _text(value: object) -> str:
    """Text for the console, as printed: passwords masked, rich's markup brackets escaped (an
    endpoint or a record's reason holding ``[/]`` raised MarkupError, ``[bold]`` styled it)."""
    from rich.markup import escape

    return escape(redact_text(str(value)))


def unkeyed_lines(report: ProduceReport) -> str:
    """``line 2``, ``lines 2, 3`` or ``first lines 2, 3, 5, 6, 8`` of the lines without the key."""
    shown = ", ".join(str(n) for n in report.unkeyed_lines)
    if report.unkeyed > len(report.unkeyed_lines):
        return f"first lines {shown}"
    return f"line {shown}" if report.unkeyed == 1 else f"lines {shown}"
