"""Re-driving dead letters (``squall replay``): each selected dead letter's original record, with
its original metadata, runs again through the topology's bolts and sinks.

The records keep their stream, shard, sequence and sub-sequence numbers, partition key, arrival
time, fingerprint and source, so each gets the event id it had: idempotent sinks and the
dead-letter sinks' de-duplication make a replay safe to repeat. ``meta.replay`` counts the
re-drives (the dead letter's own count plus one), so a record that fails again is dead-lettered
again, beside the dead letter it came from. The engine runs them in batches through the usual
commit sequence, without a checkpointer: the topology's spout is neither opened nor read, and no
stream's checkpoint moves.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

from squall.deploy import lock
from squall.deploy.dead_letters import DeadLetter, Unreadable
from squall.deploy.local import EXIT_OK, ExitStatus, one_line
from squall.errors import BatchFailed, SquallError
from squall.event import Record
from squall.observability.logs import batch_positions, log_context
from squall.topology.executor import Engine
from squall.topology.model import Topology
from squall.topology.outcomes import Outcome, RecordOutcome
from squall.topology.resources import Resources

log = logging.getLogger("squall.replay")

#: Characters of a reason that ``--dry-run`` groups by.
REASON_CHARS = 80
#: Unreadable lines and unreplayable dead letters the summary names one by one (each unreadable
#: line is also logged as it is read).
LISTED = 20

#: ``squall replay``'s exit codes beyond a run's (README's CLI table), for a script that deletes
#: its input when the replay succeeded (``squall replay t.yaml rejects.jsonl && rm rejects.jsonl``):
#: the input still holds lines that were not replayed — not dead letters (torn, not JSON), or
#: dead letters that cannot be replayed (a record kept in part, a corrupt S3 object's pointer);
#: every readable one was replayed. ``--allow-unreadable`` accepts them (exit 0).
EXIT_NOT_REPLAYED = 3
#: Every selected dead letter was replayed, but some records failed again: they are in the
#: topology's dead-letter sink again — often the very file or table replayed, which the replay
#: appends to.
EXIT_DEAD_LETTERED_AGAIN = 4


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: all of them unless a filter is given."""

    components: frozenset[str] = frozenset()
    reason_contains: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, dl: DeadLetter) -> bool:
        if self.components and dl.component not in self.components:
            return False
        if self.reason_contains is not None and self.reason_contains not in dl.reason:
            return False
        if self.since is not None and (dl.failed_at is None or dl.failed_at < self.since):
            return False
        return not (self.until is not None and (dl.failed_at is None or dl.failed_at >= self.until))


@dataclass
class ReplayReport(ExitStatus):
    """What a replay read, selected and did; the summary and the exit code."""

    read: int = 0
    not_selected: int = 0
    duplicates: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)
    unreplayable: list[DeadLetter] = field(default_factory=list)
    #: ``(component, first REASON_CHARS characters of the reason)`` → dead letters selected.
    selected: Counter[tuple[str, str]] = field(default_factory=Counter)
    batches: int = 0
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    failed_records: list[RecordOutcome] = field(default_factory=list)
    error: BatchFailed | None = None
    setup_error: SquallError | None = None
    input_error: SquallError | None = None
    interrupted: bool = False
    aborted: bool = False
    seconds: float = 0.0
    #: The end of input's flush (windows still open, emitted after the last batch) had output
    #: dead-lettered: no record of the input, but dead letters written as a record's are.
    dead_lettered_at_end: bool = False
    #: ``--allow-unreadable``: unreadable lines and unreplayable dead letters do not make the
    #: exit code (they are still counted and named).
    allow_unreadable: bool = False

    @property
    def exit_code(self) -> int:
        """A run's exit code (README's table), else 3 when lines of the input were not replayed
        (unless allowed), else 4 when records were dead-lettered again."""
        code = super().exit_code
        if code != EXIT_OK:
            return code
        if (self.unreadable or self.unreplayable) and not self.allow_unreadable:
            return EXIT_NOT_REPLAYED
        if self.counts[Outcome.DEAD_LETTERED] or self.dead_lettered_at_end:
            return EXIT_DEAD_LETTERED_AGAIN
        return EXIT_OK

    def summary(self) -> list[str]:
        """The lines ``squall replay`` prints at the end."""
        c = self.counts
        # held: re-driven after a failed dead letter of the same record (their one lineage),
        # not committed; they stay in the input, as the failed one does
        held = f", held {c[Outcome.HELD]:,}" if c[Outcome.HELD] else ""
        lines = [
            f"read {self.read:,} dead letters: selected {sum(self.selected.values()):,}, "
            f"not matching the filters {self.not_selected:,}, duplicates {self.duplicates:,}, "
            f"unreplayable {len(self.unreplayable):,}, unreadable {len(self.unreadable):,}",
            f"replayed in {self.batches:,} batches: committed {c[Outcome.COMMITTED]:,}, "
            f"dead-lettered again {c[Outcome.DEAD_LETTERED]:,}, filtered {c[Outcome.FILTERED]:,}, "
            f"failed {c[Outcome.FAILED]:,}{held}; {self.seconds:.1f}s",
        ]
        lines += [
            f"unreplayable: {dl.where}: {dl.unreplayable}" for dl in self.unreplayable[:LISTED]
        ]
        if len(self.unreplayable) > LISTED:
            lines.append(f"unreplayable: {len(self.unreplayable) - LISTED:,} more not listed")
        lines += [f"unreadable: {u.where}: {u.why}" for u in self.unreadable[:LISTED]]
        if len(self.unreadable) > LISTED:
            lines.append(
                f"unreadable: {len(self.unreadable) - LISTED:,} more not listed (each was logged)"
            )
        lines += [f"failed: {r}" for r in self.failed_records[:10]]
        if self.input_error is not None:
            lines.append(f"input stopped: {self.input_error}")
        if self.error is not None:
            lines.append(
                f"batch failed: {self.error}; what was committed stays, run again to finish"
            )
        if self.aborted:
            by = "a second interrupt" if self.interrupted else "an interrupt"
            lines.append(f"aborted by {by}: the batch in flight was not committed")
        elif self.interrupted:
            lines.append("interrupted: the batch in flight was finished and committed")
        lines += self.verdict()
        return lines

    def verdict(self) -> list[str]:
        """Why the exit code is 3 or 4, and what the input still holds (the dead letters the
        filters did not select too: a filtered replay exits 0 without them)."""
        code, out = self.exit_code, []
        skipped = []
        if self.unreadable:
            skipped.append(f"{len(self.unreadable):,} unreadable line(s)")
        if self.unreplayable:
            skipped.append(f"{len(self.unreplayable):,} unreplayable dead letter(s)")
        if skipped and self.allow_unreadable:
            out.append(f"not replayed, accepted (--allow-unreadable): {' and '.join(skipped)}")
        elif code == EXIT_NOT_REPLAYED:
            out.append(
                f"not replayed: {' and '.join(skipped)}, named above; the input still holds "
                f"them (exit {code}; --allow-unreadable accepts them)"
            )
        if self.not_selected:  # whatever the exit code: 0 says nothing of them
            out.append(
                f"not selected: {self.not_selected:,} dead letter(s) did not match the filters; "
                "the input still holds them"
            )
        again = self.counts[Outcome.DEAD_LETTERED]
        if again and code in (EXIT_NOT_REPLAYED, EXIT_DEAD_LETTERED_AGAIN):
            exit_note = f" (exit {code})" if code == EXIT_DEAD_LETTERED_AGAIN else ""
            out.append(
                f"failed again: {again:,} record(s) dead-lettered again, into the topology's "
                f"dead-letter sink{exit_note}: if it writes to the input, the input holds them now"
            )
        if self.dead_lettered_at_end and code in (EXIT_NOT_REPLAYED, EXIT_DEAD_LETTERED_AGAIN):
            exit_note = f" (exit {code})" if code == EXIT_DEAD_LETTERED_AGAIN and not again else ""
            out.append(
                "failed at the end: what the end of input's flush emitted (windows still open) "
                f"was dead-lettered, into the topology's dead-letter sink{exit_note}: if it "
                "writes to the input, the input holds it now"
            )
        return out


def select(
    items: Iterable[DeadLetter | Unreadable], selection: Selection, report: ReplayReport
) -> Iterator[Record]:
    """The records to replay, counted into ``report``: each selected, replayable dead letter's
    record once (the first document of an event id: a record dead-lettered by two branches runs
    once, through both), with its replay count raised by one."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Unreadable):
            report.unreadable.append(item)
            log.warning("%s: skipped, not a dead letter: %s", item.where, item.why)
            continue
        report.read += 1
        if not selection.matches(item):
            report.not_selected += 1
        elif item.unreplayable is not None:
            report.unreplayable.append(item)
        elif item.event_id in seen:
            report.duplicates += 1
        else:
            seen.add(item.event_id)
            report.selected[(item.component or "", item.reason[:REASON_CHARS])] += 1
            meta = item.record.meta
            yield Record(item.record.data, meta._replace(replay=meta.replay + 1))


def batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """``records`` in lists of ``size``; when the input breaks (a truncated gzip), the records
    read before the break are a last batch of their own, then the error is raised."""
    batch: list[Record] = []
    try:
        for record in records:
            batch.append(record)
            if len(batch) >= size:
                yield batch
                batch = []
    except SquallError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


class Replayer:
    """Runs selected dead letters through a topology's bolts and sinks (never its spout)."""

    def __init__(
        self,
        topology: Topology,
        *,
        batch_size: int | None = None,
        on_batch: Callable[[ReplayReport], None] | None = None,
    ):
        self.topology = topology
        self.batch_size = batch_size or topology.settings.batch_size
        self.resources = Resources.for_topology(topology)
        self.on_batch = on_batch
        self._interrupted = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C, or SIGTERM (a service manager's stop), as for ``squall run``: finish the
        batch in flight, stop; a second one aborts at once."""
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        name = "SIGTERM" if signum == signal.SIGTERM else "interrupt"
        log.warning("%s: finishing the batch in flight (Ctrl-C again to abort)", name)

    def run(self, records: Iterator[Record], report: ReplayReport) -> ReplayReport:
        """Replay ``records`` (from ``select``, which counts into the same ``report``)."""
        started = time.perf_counter()
        previous: dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_sigint)
        except ValueError:  # not the main thread
            pass
        run_lock = None
        try:
            try:
                run_lock = lock.acquire(self.topology, self.resources)
                engine = Engine(self.topology.plan, resources=self.resources)
                engine.open()
            except SquallError as exc:
                report.setup_error = exc
                log.error("cannot start: %s", exc)
                log.debug("cannot start", exc_info=True)  # -vv: where (a component's own code)
                return report
            except Exception as exc:  # noqa: BLE001 - a driver's own error at start: one line
                report.setup_error = SquallError(one_line(exc))
                log.error("cannot start: %s", report.setup_error)
                return report
            try:
                with log_context(topology=self.topology.name):  # each line about a batch names it
                    self._loop(engine, records, report)
            except KeyboardInterrupt:
                report.aborted = True
            except SquallError as exc:  # the input broke mid-way (a truncated .gz)
                report.input_error = exc
                log.error("%s", exc)
            finally:
                engine.close()
        finally:
            if run_lock is not None:
                run_lock.release()
            self.resources.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            report.interrupted = self._interrupted
            report.seconds = time.perf_counter() - started
        return report

    def _loop(self, engine: Engine, records: Iterator[Record], report: ReplayReport) -> None:
        for batch in batches(records, self.batch_size):
            # its lines name it as a run's do: the batch id, the dead letters' shards and ranges
            with log_context(batch_id=report.batches + 1, **batch_positions(batch)):
                try:
                    result = engine.process(batch)
                except BatchFailed as exc:
                    report.error = exc
                    log.error("%s", exc)
                    return
            report.batches += 1
            for outcome, n in result.counts().items():
                report.counts[outcome] += n
            # No checkpoint to hold back: a record that failed stays in the input and the rest
            # go on; the replay's exit code says some failed.
            report.failed_records += result.failed
            if self.on_batch is not None:
                self.on_batch(report)
            if self._interrupted:
                return
        try:
            result = engine.finish()  # the input ended: windows still open are emitted
        except BatchFailed as exc:
            report.error = exc
            log.error("%s", exc)
            return
        if result is not None:
            report.failed_records += result.failed
            # its one unit stands for the end of input, not a record: not in the counts
            report.dead_lettered_at_end = result.counts()[Outcome.DEAD_LETTERED] > 0
