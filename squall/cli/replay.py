"""``squall replay TOPOLOGY DEAD_LETTERS``: run dead letters through the topology again."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click

from squall.errors import SquallError
from squall.topology.model import Topology

log = logging.getLogger("squall.replay")


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--since``/``--until``: an ISO-8601 time or date (UTC without a zone), or epoch seconds."""
    if value is None:
        return None
    from squall.deploy.dead_letters import parse_time

    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not an ISO-8601 time (2026-12-06T10:00:00Z) nor epoch seconds"
        ) from None


def _endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from squall.aws import check_endpoint_url

    try:
        return check_endpoint_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _source(topo: Topology, where: str, region: str | None, endpoint_url: str | None) -> Iterator:
    """The dead letters of a file, an ``s3://bucket/prefix`` or ``sql://RESOURCE[/TABLE]``."""
    from squall.deploy import dead_letters

    if where.startswith("s3://"):
        return dead_letters.read_s3(where, region=region, endpoint_url=endpoint_url)
    if where.startswith("sql://"):
        from squall.sinks.dead_letter_table import DeadLetterTableConfig
        from squall.topology.resources import Resources

        resource, _, table = where.removeprefix("sql://").partition("/")
        if resource not in topo.resources:
            raise SquallError(f"{where}: the topology has no resource '{resource}'")
        # The topology's own dead_letter_table(s) on that resource: the default, and the hint.
        own = sorted(
            {
                s.table
                for s in topo.sinks
                if isinstance(s, DeadLetterTableConfig) and s.resource == resource
            }
        )
        if not table:
            table = own[0] if len(own) == 1 else DeadLetterTableConfig.model_fields["table"].default
        hint = ", ".join(f"sql://{resource}/{t}" for t in own if t != table)
        return _closing(Resources.for_topology(topo), resource, table, hint)
    if not Path(where).is_file():
        raise SquallError(f"cannot read dead letters from {where}: no such file")
    return dead_letters.read_file(Path(where))


def _closing(resources, resource: str, table: str, hint: str) -> Iterator:
    from squall.deploy.dead_letters import read_table

    try:
        yield from read_table(resources, resource, table, hint)
    finally:
        resources.close()


@click.command()
@click.argument("topology", type=click.Path(dir_okay=False))
@click.argument("dead_letters", metavar="DEAD_LETTERS")
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="ID",
    help="Only dead letters of this component (repeat for several).",
)
@click.option(
    "--reason-contains", metavar="TEXT", help="Only dead letters whose reason contains TEXT."
)
@click.option(
    "--since", callback=_time, help="Only dead letters that failed at or after this time."
)
@click.option("--until", callback=_time, help="Only dead letters that failed before this time.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what would be replayed, per component and reason; run nothing.",
)
@click.option(
    "--allow-unreadable",
    is_flag=True,
    help="Exit 0, not 3, when lines are not dead letters (torn, not JSON) or dead letters cannot "
    "be replayed; they are still counted and named.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    help="Records per batch (default: settings.batch_size).",
)
@click.option("--region", help="AWS region of an s3:// input.")
@click.option(
    "--endpoint-url", callback=_endpoint, help="S3 endpoint of an s3:// input (a local stand-in)."
)
def replay(
    topology: str,
    dead_letters: str,
    components: tuple[str, ...],
    reason_contains: str | None,
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
    allow_unreadable: bool,
    batch_size: int | None,
    region: str | None,
    endpoint_url: str | None,
) -> None:
    """Run the records of dead letters (a dead_letter file, .gz or not; s3://bucket/prefix of
    dead_letter_s3 objects; sql://RESOURCE[/TABLE] of a dead_letter_table) through TOPOLOGY's
    bolts and sinks again, with their original metadata and event ids. The spout is not read and
    no checkpoint moves. Exits 3 when lines of the input were not replayed (unreadable, or
    unreplayable dead letters), 4 when records failed and were dead-lettered again (or what
    the end of input's flush emitted was)."""
    from squall.cli import _load_or_exit
    from squall.deploy.replay import Replayer, ReplayReport, Selection, select

    topo = _load_or_exit(topology, resolve=True)  # its sinks write: their secrets are read
    selection = Selection(frozenset(components), reason_contains, since, until)
    unknown = sorted(set(components) - {n.id for n in topo.plan.nodes} - {topo.plan.spout_id})
    if unknown:
        click.echo(f"warning: the topology has no component {', '.join(unknown)}", err=True)
    report = ReplayReport(allow_unreadable=allow_unreadable)
    try:
        source = _source(topo, dead_letters, region, endpoint_url)
        records = select(source, selection, report)
        if dry_run:
            for _ in records:
                pass
    except SquallError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while counting: the interrupted exit code, as a run's
        click.echo("interrupted", err=True)
        sys.exit(130)
    if dry_run:
        _print_dry_run(report)
        sys.exit(report.exit_code)  # 3 as the replay would for the lines it cannot replay
    Replayer(topo, batch_size=batch_size).run(records, report)
    if report.setup_error is None:
        for line in report.summary():
            click.echo(line)
    sys.exit(report.exit_code)


def _print_dry_run(report) -> None:
    click.echo("dead letters to replay, per component and reason:")
    for (component, reason), n in sorted(report.selected.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"{n:>8,}  {component or '-'}: {reason}")
    click.echo(report.summary()[0])
    for line in report.summary()[2:]:
        if line.startswith(("unreplayable", "unreadable", "not replayed", "not selected")):
            click.echo(line)
