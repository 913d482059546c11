"""Console front of the local runner: a progress bar while it runs, a summary table at the end."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from squall.deploy.local import LocalRunner, RunReport
from squall.topology.executor import Outcome
from squall.topology.model import Topology


def run_with_console(topo: Topology, *, batch_size: int | None = None, progress: bool | None = None) -> int:
    """Run a topology with a progress bar on stderr; print the summary; return the exit code."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = max(console.width, 110)
    show = console.is_terminal if progress is None else progress
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[records]} records"), TimeElapsedColumn(), console=console,
                   disable=not show)
    runner: LocalRunner
    task = bar.add_task(topo.name, total=None, records=0)
    seen = 0

    def on_batch(result, spout) -> None:
        nonlocal seen
        seen += len(result)
        p = spout.progress()
        if p is not None:
            bar.update(task, completed=p.done, total=p.total, records=seen)
        else:
            bar.update(task, completed=seen, records=seen)

    runner = LocalRunner(topo, batch_size=batch_size, on_batch=on_batch)
    with bar:
        report = runner.run()
    print_summary(console, topo, report)
    return report.exit_code


def print_summary(console: Console, topo: Topology, report: RunReport) -> None:
    table = Table(title=f"{topo.name}: {report.records} records in {report.batches} batches, "
                        f"{report.seconds:.2f}s", title_justify="left")
    for col in ("component", "type", "in", "out", "dead letter", "filtered", "retries", "seconds"):
        table.add_column(col, justify="left" if col in ("component", "type") else "right", no_wrap=True)
    order = {"spout": 0, "bolt": 1, "sink": 2}
    for s in sorted(report.stats, key=lambda s: order.get(s.kind, 3)):  # stable: plan order within a kind
        table.add_row(s.id, s.type, str(s.received), str(s.emitted), str(s.dead_lettered),
                      str(s.dropped), str(s.retries), f"{s.seconds:.3f}")
    console.print(table)
    c = report.counts
    rate = report.records / report.seconds if report.seconds else 0.0
    console.print(f"committed {c[Outcome.COMMITTED]}, dead-lettered {c[Outcome.DEAD_LETTERED]}, "
                  f"filtered {c[Outcome.FILTERED]}, failed {c[Outcome.FAILED]} — {rate:,.0f} records/s")
    if report.setup_error is not None:
        console.print(f"[red]cannot start:[/] {report.setup_error}")
    if report.error is not None:
        console.print(f"[red]error:[/] {report.error} — nothing after the last checkpoint was acknowledged")
    for r in report.failed_records[:10]:
        console.print(f"[red]failed:[/] {r.event_id} ({r.shard_id} seq {r.position.sequence_number}) "
                      f"in {r.component}: {r.reason}")
    if report.aborted:
        console.print("aborted by a second interrupt: the batch in flight was not checkpointed")
    elif report.interrupted:
        console.print("interrupted: the batch in flight was finished and checkpointed")
    sys.stderr.flush()
