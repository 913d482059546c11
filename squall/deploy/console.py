"""Console front of the local runner: a progress bar while it runs, a summary table at the end.

rich draws both on a terminal. On a stderr that is no terminal (a file, a pipe, a benchmark's
``squall run``) the usual summary is written by ``_plain_summary`` without importing rich (~40 ms
of CPU with its table's rendering): the same characters rich would print there, a test compares
the two; anything out of the ordinary (an error to report, text that is not plain ASCII, forced
colours) is left to rich.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from squall.deploy.local import LocalRunner, RunReport
from squall.observability.progress import Totals, format_lag
from squall.observability.runners import local_recorder
from squall.redact import redact_text
from squall.topology.model import Topology
from squall.topology.outcomes import Outcome

if TYPE_CHECKING:
    from rich.console import Console

#: Seconds between progress log lines when stderr is not a terminal.
LOG_EVERY = 10.0


def _status(t: Totals, share: float | None = None) -> str:
    """``42% 3,000 rec 8,353/s lag 1.2s ok 2,940 dl 60 filt 0 fail 0``: fits 80 columns with the bar."""
    o = t.outcomes
    pct = f"{share:.0%} " if share is not None else ""
    lag = (
        f"lag {format_lag(t.lag_ms)} " if t.lag_ms is not None else ""
    )  # none from a file or stdin
    held = o.get("held", 0)  # only after a failure: the run stops at that batch
    return (
        f"{pct}{t.records:,} rec {t.rate:,.0f}/s {lag}ok {o['committed']:,} "
        f"dl {o['dead_lettered']:,} filt {o['filtered']:,} fail {o['failed']:,}"
        + (f" held {held:,}" if held else "")
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
    width = None if progress else _plain_width()
    console = None
    if width is None:
        from rich.console import Console

        console = Console(stderr=True)
    show = (console is not None and console.is_terminal) if progress is None else progress
    recorder = local_recorder(
        topo.name, metrics_port=metrics_port, log_every=None if show else (log_every or LOG_EVERY)
    )
    totals: Totals = recorder.totals  # type: ignore[attr-defined]
    bar = task = None
    if show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=10),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        task = bar.add_task(topo.name[:16], total=None, status="")

    def show_progress(spout) -> None:
        if bar is None:
            return
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
    if bar is not None:
        with bar:
            report = runner.run()
    else:
        report = runner.run()
    if console is None and width is not None and _plain_summary(topo, report, totals, width):
        return report.exit_code
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    print_summary(console, topo, report, totals)
    return report.exit_code


#: Where the next run starts when the spout's checkpoints were kept in memory.
_IN_MEMORY = (
    "its checkpoints were kept in memory (no checkpoint store, no 'warehouse' resource): the "
    "next run starts at the spout's `start` again"
)


def print_summary(
    console: Console, topo: Topology, report: RunReport, totals: Totals | None = None
) -> None:
    """The per-component table and the outcome line: within the console's width (80 columns
    without a terminal) unless the counts need more — a number is never cut. A run that could
    not start prints nothing: the runner logged its one `cannot start: …` line."""
    if report.setup_error is not None:
        return
    from rich.table import Table

    title, cols, widths, rows = _summary_table(topo, report, totals)
    table = Table(title=title, title_justify="left", padding=(0, 1), collapse_padding=True)
    for col, width in zip(cols, widths, strict=True):
        numeric = col != "component"
        table.add_column(
            col,
            justify="right" if numeric else "left",
            no_wrap=True,
            min_width=width if numeric else None,
        )
    for row in rows:
        table.add_row(*row)
    # Room for every column at its natural width (print() cannot go wider than the console).
    natural = sum(widths) + 3 * len(cols) + 1
    saved = console.width
    console.width = max(saved, natural)
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved
    console.print(_outcome_line(report, totals))
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
    if len(report.failed_records) > 10:
        console.print(
            f"… and {len(report.failed_records) - 10:,} more failed records in that batch"
        )
    if report.failed_records and report.error is None:
        # The run stops at the batch whose records failed: say so, or "1 batches" reads as
        # the whole input.
        if report.acknowledges:  # SQS: nothing to start from; what was not settled comes back
            where = (
                f"the {topo.spout.type} spout keeps no checkpoint: the messages that failed, and "
                "those held after them, were not deleted and come back after their visibility "
                "timeout"
            )
        elif report.checkpointed:
            where = "the checkpoint stops before the first of them: the next run starts there"
        elif report.checkpoint_in_memory:
            where = _IN_MEMORY
        else:
            where = (
                f"the {topo.spout.type} spout keeps no checkpoint: the next run reads its input "
                "from the start"
            )
        # With a dead-letter sink, what failed is not a record's fault (a service still
        # refusing it after the retries, or the dead letter itself failing): never dead-lettered,
        # so the advice to add one would be wrong.
        # Without one, records a service kept failing (``retry``: a sink's write still failing
        # after its retries) are no record's fault either: a dead-letter sink would not take
        # them, nor let the run go on.
        service_failed = any(n.dead_letter for n in topo.plan.nodes) or all(
            r.retry for r in report.failed_records
        )
        why = (
            "failed (still failing after the retries: not a record's fault, so not dead-lettered)"
            if service_failed
            else "failed with no dead letter to take them"
        )
        if report.failed_at_end:  # the flush at the end of the input: it was all read
            console.print(
                "[red]stopped:[/] what the bolts emitted at the end of the input (their flush) "
                + (
                    "failed (still failing after the retries: not dead-lettered)"
                    if service_failed
                    else "failed with no dead letter to take it"
                )
                + f", after the whole input was read ({report.batches:,} batches); {where}"
                + (
                    ""
                    if service_failed
                    else ". A dead_letter sink keeps bad records with their reasons"
                )
            )
        else:
            console.print(
                f"[red]stopped:[/] records {why}, so the run stopped after batch "
                f"{report.batches:,} and read no further; {where}"
                + (
                    ". Run again once what failed them answers"
                    if service_failed
                    else ". A dead_letter sink keeps bad records with their reasons and lets the "
                    "run go on"
                )
            )
    if report.aborted:
        # A second Ctrl-C, or a first one the runner's handler did not see (a library's own)
        by = "a second interrupt" if report.interrupted else "an interrupt"
        console.print(f"aborted by {by}: the batch in flight was not checkpointed")
    elif report.interrupted and report.checkpointed:
        console.print("interrupted: the batch in flight was finished and checkpointed")
    elif report.interrupted and report.checkpoint_in_memory:
        console.print(f"interrupted: the batch in flight was finished; {_IN_MEMORY}")
    elif report.interrupted:
        console.print(
            f"interrupted: the batch in flight was finished; the {topo.spout.type} spout keeps "
            "no checkpoint: the next run reads its input from the start (same event ids)"
        )
    sys.stderr.flush()


def _summary_table(
    topo: Topology, report: RunReport, totals: Totals | None
) -> tuple[str, list[str], list[int], list[list[str]]]:
    """The table's title, columns, their widths (a numeric column's least) and rows."""
    title = (
        f"{topo.name}: {report.records:,} records, {report.batches:,} batches, "
        f"{report.seconds:.1f}s"
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
    for row in rows:  # ids over 24 characters are shortened here, not by the layout
        row[0] = row[0] if len(row[0]) <= 24 else row[0][:23] + "…"
    return title, cols, widths, rows


def _outcome_line(report: RunReport, totals: Totals | None) -> str:
    active = totals.active_seconds if totals is not None and totals.batches else report.seconds
    written = totals.written if totals is not None else {}
    present = totals.present if totals is not None else {}
    c = report.counts
    rate = report.records / active if active else 0.0
    # held: after a failed record of its shard, not committed; the run stops, and a run from the
    # checkpoint (or of the same input) takes them again
    held = f", held {c[Outcome.HELD]:,}" if c[Outcome.HELD] else ""
    line = (
        f"committed {c[Outcome.COMMITTED]:,}, dead-lettered {c[Outcome.DEAD_LETTERED]:,}, "
        f"filtered {c[Outcome.FILTERED]:,}, failed {c[Outcome.FAILED]:,}{held}; "
        f"{rate:,.0f} records/s"
    )
    if written:
        line += (
            f"; rows written {sum(written.values()):,}, already present {sum(present.values()):,}"
        )
    return line


def _plain_width() -> int | None:
    """The width rich's console would give stderr when it is no terminal and nothing forces
    one (rich's own rules: the first of stdin, stdout, stderr that has a size, else
    ``COLUMNS``, else 80); None where rich may draw otherwise (styles, ASCII boxes, Windows)."""
    env = os.environ
    if sys.platform == "win32" or {"TTY_COMPATIBLE", "FORCE_COLOR", "TTY_INTERACTIVE"} & set(env):
        return None
    stream = sys.stderr
    try:
        if stream is None or stream.isatty():
            return None
    except ValueError:  # closed
        return None
    if not (getattr(stream, "encoding", None) or "utf-8").lower().startswith("utf"):
        return None
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd)[0]
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80


#: Text ``_plain_summary`` writes as rich would: printable ASCII (no markup, no emoji codes).
_PLAIN_TEXT = re.compile(r"[ -9;-Z\\-~]*")


def _wrap(text: str, width: int) -> list[str]:
    """rich's wrapping of a plain line with no word wider than ``width`` (``rich._wrap``)."""
    lines, start, used = [], 0, 0
    for word in re.finditer(r"\s*\S+\s*", text):
        if width - used >= len(word.group().rstrip()):
            used += len(word.group())
        elif used and word.start():
            lines.append(text[start : word.start()])
            start, used = word.start(), len(word.group())
    lines.append(text[start:])
    # a line's trailing spaces beyond the width are dropped, those within it kept
    return [line[: max(width, len(line.rstrip()))] for line in lines]


def _plain_summary(topo: Topology, report: RunReport, totals: Totals, width: int) -> bool:
    """Write the usual summary (the table and the outcome line, nothing to report besides) to a
    stderr that is no terminal, as rich would print it; False (nothing written) otherwise."""
    if report.setup_error is not None:
        return True
    if (
        report.input_error is not None
        or report.error is not None
        or report.failed_records
        or report.aborted
        or report.interrupted
        or not report.stats
    ):
        return False
    title, cols, widths, rows = _summary_table(topo, report, totals)
    line = _outcome_line(report, totals)
    cells = [c.replace("…", "") for row in rows for c in row]
    if not all(_PLAIN_TEXT.fullmatch(t) for t in [title.replace(": ", " ", 1), line, *cells]):
        return False
    if any(len(w.rstrip()) > width for w in line.split()):
        return False
    # collapsed padding (0, 1): one space before the first column, one after each
    sizes = [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(cols)]
    inner = [n + 1 + (i == 0) for i, n in enumerate(sizes)]
    table_width = sum(inner) + len(cols) + 1
    if table_width > max(width, sum(widths) + 3 * len(cols) + 1) or any(
        len(w.rstrip()) > table_width for w in title.split()
    ):
        return False

    def row_text(left: str, sep: str, right: str, values: list[str]) -> str:
        return (
            left
            + sep.join(
                (" " if i == 0 else "") + (v.ljust(n) if i == 0 else v.rjust(n)) + " "
                for i, (v, n) in enumerate(zip(values, sizes, strict=True))
            )
            + right
        )

    out = [t.ljust(table_width) for t in _wrap(title, table_width)]
    out.append("┏" + "┳".join("━" * n for n in inner) + "┓")
    out.append(row_text("┃", "┃", "┃", cols))
    out.append("┡" + "╇".join("━" * n for n in inner) + "┩")
    out += [row_text("│", "│", "│", row) for row in rows]
    out.append("└" + "┴".join("─" * n for n in inner) + "┘")
    out += _wrap(line, width)
    sys.stderr.write("\n".join(out) + "\n")
    sys.stderr.flush()
    return True


def _plain(value: object) -> str:
    """A reason or an error as text in a markup line: passwords masked (as in the log lines),
    brackets escaped (a record's `[/]` crashed the summary, `[bold]` styled it)."""
    from rich.markup import escape

    return escape(redact_text(str(value)))
