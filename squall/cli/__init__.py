"""The ``squall`` command line: validate, run, graph, schema (and the commands of other parts)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from squall import __version__
from squall.errors import MetricsError, TopologyError
from squall.topology.loader import load
from squall.topology.references import SecretRef, placeholder
from squall.yaml_out import dump_yaml


def _load_or_exit(path: str, *, resolve: bool = False):
    """The topology, or its problems on stderr and exit 2 (1 when every problem is an outage of
    a service a secret reference is read from). ``resolve``: read the ``${ssm:…}`` and
    ``${secretsmanager:…}`` references from AWS (``validate``, ``run``); else each stands for a
    placeholder (``package``, ``graph``: the values are not needed, nor the rights to read them)."""
    try:
        return load(path, secrets=_aws_secrets if resolve else placeholder)
    except TopologyError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        sys.exit(1 if exc.outage else 2)


def _aws_secrets(ref: SecretRef) -> str:
    from squall.secrets import aws_secrets  # boto3 only when a topology has a reference

    return aws_secrets()(ref)


def _write(path: Path, text: str) -> None:
    """Write an output file; a path that cannot be written is one line and exit 1, no traceback."""
    try:
        path.write_text(text)
    except OSError as exc:
        click.echo(f"cannot write {path}: {exc.strerror or exc}", err=True)
        sys.exit(1)


def _metrics_port(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--metrics-port [ADDR:]PORT``: a usage error (exit 2) when it is not one."""
    if value is not None:
        from squall.observability.runners import parse_metrics_port

        try:
            parse_metrics_port(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _more_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """``-v`` given after a subcommand (``squall run -v``): lower the log level as the global one does."""
    if value:
        root = logging.getLogger()
        root.setLevel(min(root.level, logging.WARNING - 10 * min(value, 2)))


def _with_verbose(cmd: click.Command) -> click.Command:
    if not any("-v" in getattr(p, "opts", ()) for p in cmd.params):
        cmd.params.append(
            click.Option(
                ["-v", "--verbose"],
                count=True,
                expose_value=False,
                callback=_more_verbose,
                help="More log output (-vv for debug); also accepted before the command.",
            )
        )
    return cmd


class _Command(click.Command):
    """Every subcommand also accepts the global ``-v``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _with_verbose(self)


class _Commands(click.Group):
    """Commands whose modules import heavy clients (boto3) load only when called."""

    command_class = _Command
    lazy = {
        "produce": "squall.deploy.produce:produce",
        "package": "squall.cli.deploy:package",
        "local-aws": "squall.cli.deploy:local_aws",
        "kcl": "squall.cli.deploy:kcl",
        "replay": "squall.cli.replay:replay",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            return _with_verbose(getattr(importlib.import_module(module), attr))
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="squall")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    envvar="SQUALL_LOG_FORMAT",
    help="Log lines as text or one JSON object per line (env SQUALL_LOG_FORMAT).",
)
def main(verbose: int, log_format: str | None) -> None:
    """squall: Storm-style topologies for Amazon Kinesis streams."""
    from squall.observability.logs import configure

    configure(log_format, level=logging.WARNING - 10 * min(verbose, 2))
    logging.getLogger("squall.progress").setLevel(logging.INFO)
    from squall import redact

    redact.install()  # no password in any log line, whichever library writes it
    redact.mask_uncaught()  # nor in the traceback of an error nothing caught


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--skip-secrets",
    is_flag=True,
    help="Do not read the ${ssm:…} and ${secretsmanager:…} references (each stands for a "
    "placeholder): a check without AWS access, as in CI.",
)
def validate(file: str, skip_secrets: bool) -> None:
    """Check a topology file; print each problem as file:line:column: path: message."""
    topo = _load_or_exit(file, resolve=not skip_secrets)

    plan = topo.plan
    for bolt, stream in plan.unwired():
        if stream not in ("error", "invalid") and not plan.dead_letters:
            click.echo(
                f"{file}: warning: stream '{stream}' of '{bolt}' is not wired and there is no dead-letter sink",
                err=True,
            )
    click.echo(f"{file}: ok ({len(topo.bolts)} bolts, {len(topo.sinks)} sinks)")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--input",
    "input_path",
    type=click.Path(allow_dash=True),
    help="Read this JSON-lines file (or - for stdin) instead of the topology's spout.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    help="Records per batch (default: settings.batch_size).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal; else a log line every --log-interval s).",
)
@click.option(
    "--log-interval",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines when there is no progress bar.",
)
@click.option(
    "--metrics-port",
    metavar="[ADDR:]PORT",
    callback=_metrics_port,
    help="Serve Prometheus metrics on /metrics at this port.",
)
def run(
    file: str,
    input_path: str | None,
    batch_size: int | None,
    progress: bool | None,
    log_interval: float,
    metrics_port: str | None,
) -> None:
    """Run a topology locally until its spout is exhausted (or Ctrl-C / SIGTERM)."""
    try:
        from squall.deploy.console import run_with_console

        topo = _load_or_exit(file, resolve=True)
        if input_path:
            from squall.spouts.file import path_spout_config

            topo = topo.with_spout(path_spout_config(input_path, topo.spout.id))
        code = run_with_console(
            topo,
            batch_size=batch_size,
            progress=progress,
            metrics_port=metrics_port,
            log_every=log_interval,
        )
    except MetricsError as exc:  # a metrics port in use, SQUALL_OTEL without the extra
        click.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl-C before the runner took it (loading, opening) or while it closed: as documented,
        # 130 — not click's "Aborted!" and 1, which says a batch failed
        click.echo("aborted: nothing after the last checkpoint is acknowledged", err=True)
        sys.exit(130)
    sys.exit(code)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the topology's graph as Mermaid or Graphviz DOT."""

    plan = _load_or_exit(file).plan
    click.echo(plan.mermaid() if fmt == "mermaid" else plan.dot(), nl=False)


@main.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write to a file instead of stdout."
)
def schema(output: str | None) -> None:
    """Print the JSON Schema of topology files (for editor completion)."""
    from squall.topology.schema import topology_schema

    text = json.dumps(topology_schema(), indent=2) + "\n"
    if output:
        _write(Path(output), text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False), default="monitoring", show_default=True
)
@click.option(
    "--lag-ms",
    type=click.IntRange(1),
    default=60_000,
    show_default=True,
    help="Lag alert threshold.",
)
@click.option(
    "--dead-letter-ratio",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Dead-letter rate alert threshold (fraction of records).",
)
@click.option(
    "--heartbeat-s",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Hang alert threshold: seconds since a run's (a KCL shard's) last batch or idle poll.",
)
@click.option(
    "--retrying-s",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Retrying alert threshold: seconds one batch has been retrying a dependency that is down.",
)
@click.option(
    "--restarts",
    type=click.IntRange(2),
    default=3,
    show_default=True,
    help="Restart alert threshold: starts of one runner in 30 minutes (a deploy is one).",
)
def dashboards(
    file: str,
    output_dir: str,
    lag_ms: int,
    dead_letter_ratio: float,
    heartbeat_s: int,
    retrying_s: int,
    restarts: int,
) -> None:
    """Write Prometheus alerting rules, a Grafana dashboard and a CloudWatch dashboard for a topology."""
    from squall.observability.dashboards import (
        Thresholds,
        cloudwatch_dashboard,
        grafana_dashboard,
        prometheus_rules,
    )

    topo = _load_or_exit(file)
    th = Thresholds(
        lag_ms=lag_ms,
        dead_letter_ratio=dead_letter_ratio,
        heartbeat_s=heartbeat_s,
        retrying_s=retrying_s,
        restarts=restarts,
    )
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    files = {
        f"{topo.name}.rules.yaml": dump_yaml(
            prometheus_rules(topo, thresholds=th), sort_keys=False
        ),
        f"{topo.name}.grafana.json": json.dumps(grafana_dashboard(topo), indent=2) + "\n",
        f"{topo.name}.cloudwatch.json": json.dumps(
            cloudwatch_dashboard(topo, region="us-east-1"), indent=2
        )
        + "\n",
    }
    from squall.deploy.template import check_no_placeholder

    written = "\n".join([*files, *files.values()])
    try:  # a stream or topology name from a secret reference: the dashboards would show its stand-in
        check_no_placeholder(
            written, topo, Path(file).read_text(encoding="utf-8"), "the dashboards"
        )
    except TopologyError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        sys.exit(2)
    for name, text in files.items():
        _write(out / name, text)
        click.echo(str(out / name))


@main.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write to a file instead of stdout."
)
def reference(output: str | None) -> None:
    """Print the option reference of every component as Markdown (docs/reference.md)."""
    from squall.topology.reference import full_reference

    text = full_reference()
    if output:
        _write(Path(output), text)
    else:
        click.echo(text, nl=False)
