"""Console front of the local runner: a progress bar while it runs, a summary table at the end."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from squall.deploy.local import LocalRunner, RunReport
from squall.observability.progress import Totals, format_lag
from squall.observability.runners import local_recorder
from squall.redact import redact_text
from squall.topology.model import Topology
from squall.topology.outcomes import Outcome

#: Seconds between progress log lines when stderr is not a terminal.
LOG_EVERY = 10.0


def _status(t: Totals, share: float | None = None) -> str:
    """``42% 3,000 rec 8,353/s lag 1.2s ok 2,940 dl 60 filt 0 fail 0``: fits 80 columns with the bar."""
    o = t.outcomes
    pct = f"{share:.0%} " if share is not None else ""
    lag = (
        f"lag {format_lag(t.lag_ms)} " if t.lag_ms is not None else ""
    )  # none from a file or stdin
    return (
        f"{pct}{t.records:,} rec {t.rate:,.0f}/s {lag}ok {o['committed']:,} "
        f"dl {o['dead_lettered']:,} filt {o['filtered']:,} fail {o['failed']:,}"
    )


def run_with_console(
    topo: Topology,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
    metrics_port: str | None = None,
    log_every: float | None = None,
) -> int:
    """Run a topology with a progress bar on stderr (or a log line every N s); print the summary."""
    console = Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    recorder = local_recorder(
        topo.name, metrics_port=metrics_port, log_every=None if show else (log_every or LOG_EVERY)
    )
    totals: Totals = recorder.totals  # type: ignore[attr-defined]
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=10),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    task = bar.add_task(topo.name[:16], total=None, status="")

    def show_progress(spout) -> None:
        p = spout.progress()  # in the spout's own unit (bytes of a file): shown as a share only
        done, total = (p.done, p.total) if p is not None else (totals.records, None)
        share = done / total if total else None
        bar.update(task, completed=done, total=total, status=_status(totals, share))

    runner = LocalRunner(
        topo,
        batch_size=batch_size,
        on_batch=lambda result, spout: show_progress(spout),
        on_idle=show_progress,  # an idle stream's lag moves (caught up: 0) though no batch ran
        recorder=recorder,
    )
    with bar:
        report = runner.run()
    print_summary(console, topo, report, totals)
    return report.exit_code


def print_summary(
    console: Console, topo: Topology, report: RunReport, totals: Totals | None = None
) -> None:
    """The per-component table and the outcome line: within the console's width (80 columns
    without a terminal) unless the counts need more — a number is never cut. A run that could
    not start prints nothing: the runner logged its one `cannot start: …` line."""
    if report.setup_error is not None:
        return
    active = totals.active_seconds if totals is not None and totals.batches else report.seconds
    table = Table(
        title=f"{topo.name}: {report.records:,} records, {report.batches:,} batches, "
        f"{report.seconds:.1f}s",
        title_justify="left",
        padding=(0, 1),
        collapse_padding=True,
    )
    written = totals.written if totals is not None else {}
    present = totals.present if totals is not None else {}
    cols = ["component", "in", "out", "dead", "filtered", "retries", "s"]
    if written or present:
        cols[2:2] = ["written", "present"]
    order = {"spout": 0, "bolt": 1, "sink": 2}
    rows = []
    for s in sorted(
        report.stats, key=lambda s: order.get(s.kind, 3)
    ):  # stable: plan order within a kind
        row = [
            s.id,
            f"{s.received:,}",
            f"{s.emitted:,}",
            f"{s.dead_lettered:,}",
            f"{s.dropped:,}",
            str(s.retries),
            f"{s.seconds:.2f}",
        ]
        if written or present:
            row[2:2] = [
                f"{written[s.id]:,}" if s.id in written else "",
                f"{present[s.id]:,}" if s.id in present else "",
            ]
        rows.append(row)
    # Numbers are never cut ("200,0…" would lie): their columns are as wide as their widest
    # value, and the table gets the width it needs when that is more than the console's.
    widths = [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(cols)]
    for col, width in zip(cols, widths, strict=True):
        numeric = col != "component"
        table.add_column(
            col,
            justify="right" if numeric else "left",
            no_wrap=True,
            min_width=width if numeric else None,
        )
    for row in rows:
        name = row[0]  # ids over 24 characters are shortened here, not by the layout
        table.add_row(name if len(name) <= 24 else name[:23] + "…", *row[1:])
    # Room for every column at its natural width (print() cannot go wider than the console).
    natural = sum(widths) + 3 * len(cols) + 1
    saved = console.width
    console.width = max(saved, natural)
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved
    c = report.counts
    rate = report.records / active if active else 0.0
    line = (
        f"committed {c[Outcome.COMMITTED]:,}, dead-lettered {c[Outcome.DEAD_LETTERED]:,}, "
        f"filtered {c[Outcome.FILTERED]:,}, failed {c[Outcome.FAILED]:,}; {rate:,.0f} records/s"
    )
    if written:
        line += (
            f"; rows written {sum(written.values()):,}, already present {sum(present.values()):,}"
        )
    console.print(line)
    if report.input_error is not None:
        console.print(
            f"[red]input stopped after {report.batches:,} committed batches:[/] "
            f"{_plain(report.input_error)}; what was read after the last committed batch was "
            "not committed"
        )
    if report.error is not None:
        console.print(f"[red]batch failed:[/] {_plain(report.error)}")
        console.print(
            "nothing after the last checkpoint was acknowledged; run again to retry from there"
        )
    for r in report.failed_records[:10]:
        console.print(f"[red]failed:[/] {_plain(r)}")
    if report.aborted:
        # A second Ctrl-C, or a first one the runner's handler did not see (a library's own)
        by = "a second interrupt" if report.interrupted else "an interrupt"
        console.print(f"aborted by {by}: the batch in flight was not checkpointed")
    elif report.interrupted and report.checkpointed:
        console.print("interrupted: the batch in flight was finished and checkpointed")
    elif report.interrupted:
        console.print(
            f"interrupted: the batch in flight was finished; the {topo.spout.type} spout keeps "
            "no checkpoint: the next run reads its input from the start (same event ids)"
        )
    sys.stderr.flush()


def _plain(value: object) -> str:
    """A reason or an error as text in a markup line: passwords masked (as in the log lines),
    brackets escaped (a record's `[/]` crashed the summary, `[bold]` styled it)."""
    return escape(redact_text(str(value)))
