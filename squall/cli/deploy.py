"""``squall package``, ``squall local-aws`` and ``squall kcl``: the commands that build and
start deployments (loaded only when called; see ``_Commands.lazy`` in ``squall/cli``).

Size (~680 lines): ``package`` has twenty-seven options, each with its help text; no logic lives
here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from squall.cli import _load_or_exit, _metrics_port


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--handler",
    type=click.Choice(["consumer", "producer", "kcl"]),
    required=True,
    help="consumer: Lambda on a Kinesis trigger; producer: Lambda behind an HTTP API; "
    "kcl: a folder for an EC2 fleet (systemd unit, bootstrap, IAM policy).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="The zip (default build/<handler>.zip), or the folder for --handler kcl (default build/kcl).",
)
@click.option(
    "--extras", default="", help="squall extras to include, comma separated (e.g. postgres,redis)."
)
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(dir_okay=False, exists=True),
    help="A pip requirements file of your bolts' dependencies, installed for Lambda's platform.",
)
@click.option(
    "--with",
    "with_packages",
    multiple=True,
    metavar="PACKAGE",
    help="A dependency to add (a pip requirement such as 'httpx>=0.27'); repeatable. Also ships "
    "one of squall's optional dependencies the topology does not declare (--with sqlalchemy).",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="DISTRIBUTION",
    help="An installed plugin distribution to include (those the topology's types come from are "
    "included anyway); repeatable.",
)
@click.option(
    "--layer",
    "layer_path",
    type=click.Path(dir_okay=False),
    help="Put squall and the dependencies in this Lambda layer zip; the function zip keeps your code.",
)
@click.option(
    "--aws-service",
    "aws_service",
    multiple=True,
    metavar="NAME",
    help="Keep this botocore service model (e.g. s3) besides Kinesis, DynamoDB, STS and those the "
    "components declare; 'all' keeps every one. Repeatable.",
)
@click.option(
    "--compile/--no-compile",
    "compile_bytecode",
    default=None,
    help="Ship bytecode for the target Python (default: when this Python is the target's version).",
)
@click.option(
    "--python", "python_version", default="3.11", show_default=True, help="Lambda runtime version."
)
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default="x86_64", show_default=True)
@click.option(
    "--template",
    "template_path",
    type=click.Path(dir_okay=False),
    help="Also write an AWS SAM template for the function, its trigger and its IAM role here.",
)
@click.option(
    "--snapstart",
    is_flag=True,
    help="With --template: Lambda SnapStart (Python 3.12 or later). Each deploy publishes a "
    "version, snapshotted after its init, under the alias 'live' that the trigger invokes; init "
    "then also builds what the first batch would (docs/deploy.md).",
)
@click.option(
    "--provisioned-concurrency",
    "provisioned",
    type=click.IntRange(1),
    help="With --template: keep N execution environments of the alias 'live' initialised "
    "(parameter ProvisionedConcurrency); their init also builds what the first batch would.",
)
@click.option(
    "--on-failure",
    type=click.Choice(["sqs", "sns"]),
    help="Consumer of Kinesis or S3: bounded retries (parameter MaximumRetryAttempts), then the "
    "failed batch's metadata (Kinesis) or the S3 event goes to an SQS queue or SNS topic "
    "(parameter OnFailureDestinationArn). An SQS trigger uses its queue's redrive policy instead.",
)
@click.option(
    "--batch-window",
    type=click.IntRange(0, 300),
    help="Consumer of Kinesis or SQS: MaximumBatchingWindowInSeconds (Kinesis default 1; SQS "
    "default none, which limits a batch to 10 messages).",
)
@click.option(
    "--s3-bucket",
    "s3_bucket",
    type=click.Choice(["create", "existing"]),
    default=None,
    help="Consumer of an s3 spout: declare the spout's bucket in the template (the default with "
    "--s3-delivery direct or eventbridge), or use an existing bucket and output the notification "
    "to add to it (always, with --s3-delivery sqs).",
)
@click.option(
    "--s3-delivery",
    type=click.Choice(["direct", "sqs", "eventbridge"]),
    default="direct",
    show_default=True,
    help="Consumer of an s3 spout: how the bucket's notifications reach the function — S3 "
    "invokes it, an SQS queue it (or an SNS topic) feeds (the queue ARN a parameter), or an "
    "EventBridge rule on the bucket and prefix.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Producer: an origin allowed to post from a browser (repeatable; default *).",
)
@click.option(
    "--context-key",
    default="request",
    show_default=True,
    metavar="NAME",
    help="Producer: the field each event gets the request context under (an event that already "
    "has it is rejected).",
)
@click.option(
    "--auth",
    type=click.Choice(["app-key", "none"]),
    default="app-key",
    show_default=True,
    help="Producer: an app key in x-api-key checked by a Lambda authorizer, or no auth.",
)
@click.option(
    "--throttle-rate",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Producer: default steady requests/s of the API.",
)
@click.option(
    "--throttle-burst",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Producer: default burst of the API.",
)
@click.option(
    "--stream",
    help="consumer and kcl: the Kinesis stream consumed (default: the topology's kinesis spout; "
    "refused when the spout is triggered by SQS or S3).",
)
@click.option(
    "--retrieval",
    type=click.Choice(["polling", "fanout"]),
    default="polling",
    show_default=True,
    help="kcl, and consumer of Kinesis (with --template): GetRecords polling (the 2 MB/s and 5 "
    "reads/s of a shard shared by its consumers) or enhanced fan-out (a stream consumer of its own "
    "pushing a dedicated 2 MB/s per shard; billed per consumer-shard hour and per GB).",
)
@click.option(
    "--metrics-port",
    metavar="[ADDR:]PORT",
    callback=_metrics_port,
    help="kcl: the unit's `squall kcl` serves the Prometheus metrics of the host's shard "
    "processes on this port (what `squall dashboards` reads); none without it.",
)
@click.option(
    "--dynamodb-region",
    metavar="REGION",
    help="kcl: the lease table's region, when not the stream's: the unit's `squall kcl "
    "--dynamodb-region`, and the instance role grants the table in that region.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when the build warned (a driver or module the function or fleet imports that "
    "the package lacks, a file written where it cannot be): for CI. The package is written.",
)
def package(
    file: str,
    handler: str,
    output: str | None,
    extras: str,
    requirements_file: str | None,
    with_packages: tuple[str, ...],
    plugins: tuple[str, ...],
    layer_path: str | None,
    aws_service: tuple[str, ...],
    compile_bytecode: bool | None,
    python_version: str,
    arch: str,
    template_path: str | None,
    snapstart: bool,
    provisioned: int | None,
    on_failure: str | None,
    batch_window: int | None,
    s3_bucket: str | None,
    s3_delivery: str,
    cors_origins: tuple[str, ...],
    context_key: str,
    auth: str,
    throttle_rate: int,
    throttle_burst: int,
    stream: str | None,
    retrieval: str,
    metrics_port: str | None,
    dynamodb_region: str | None,
    strict: bool,
) -> None:
    """Package a topology for production: a Lambda zip (+ SAM template) or an EC2 fleet folder."""
    import os

    from squall.errors import SquallError

    if context_key != "request" and handler != "producer":
        raise click.UsageError("--context-key is for the producer (--handler producer)")
    if retrieval != "polling" and handler == "producer":
        raise click.UsageError(
            "--retrieval is how a consumer reads a Kinesis stream (--handler consumer or kcl); "
            "the producer reads none"
        )
    if metrics_port and handler != "kcl":
        raise click.UsageError(
            "--metrics-port is for a KCL fleet (--handler kcl); a Lambda function's metrics go "
            "to CloudWatch (EMF)"
        )
    if dynamodb_region and handler != "kcl":
        raise click.UsageError(
            "--dynamodb-region is the lease table's region of a KCL fleet (--handler kcl)"
        )
    topo = _load_or_exit(file)
    extra_list = tuple(e.strip() for e in extras.split(",") if e.strip())
    # Flags of the SAM template (whether given): refused for a fleet and without --template.
    template_flags = (
        ("--snapstart", snapstart),
        ("--provisioned-concurrency", provisioned),
        ("--on-failure", on_failure),
        ("--batch-window", batch_window is not None),
        ("--s3-bucket", s3_bucket),
        ("--s3-delivery", s3_delivery != "direct"),
    )
    if handler == "kcl":
        from squall.deploy.fleet import write_fleet

        for flag, given in template_flags:
            if given:
                raise click.UsageError(f"{flag} is for a Lambda function, not a KCL fleet")

        try:
            written = write_fleet(
                topo,
                Path(file),
                Path(output or "build/kcl"),
                stream=stream,
                retrieval=retrieval,
                extras=extra_list,
                requirements_file=Path(requirements_file) if requirements_file else None,
                with_packages=with_packages,
                python=python_version,
                metrics_port=metrics_port,
                dynamodb_region=dynamodb_region,
            )
        except SquallError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        for path in written:
            click.echo(str(path))
        from squall.deploy.topology_files import left_out

        for item in left_out(topo, Path(file).read_text(encoding="utf-8")):
            click.echo(f"  left out of topology/: {item.path} ({item.why})")
        from squall.deploy.fleet import driver_warnings, fleet_warnings

        reqs = next((p for p in written if p.name == "requirements.txt"), None)
        drivers = driver_warnings(topo, reqs.read_text()) if reqs is not None else []
        warnings = [*fleet_warnings(topo), *drivers]
        for warning in warnings:
            click.echo(f"  warning: {warning}", err=True)
        _strict_exit(strict, warnings)
        return

    from squall.deploy import snapstart as snap
    from squall.deploy.package import DIRECT_UPLOAD_LIMIT, build, describe_sizes
    from squall.deploy.template import TemplateOptions, sam_template, write_template

    for flag, given in (*template_flags, ("--retrieval", retrieval != "polling")):
        if given and not template_path:
            raise click.UsageError(f"{flag} configures the SAM template: give --template")
    problem = snap.add_to_function(
        {},
        {},
        {},
        TemplateOptions(python=python_version, snapstart=snapstart, provisioned=provisioned),
    )
    if problem is not None:
        raise click.UsageError(problem)

    out = Path(output or f"build/{handler}.zip")
    try:
        if template_path:
            tdir = Path(template_path).resolve().parent
            options = TemplateOptions(
                python=python_version,
                arch=arch,
                on_failure=on_failure,
                batch_window=batch_window,
                s3_bucket=s3_bucket,
                s3_delivery=s3_delivery,
                snapstart=snapstart,
                provisioned=provisioned,
                cors_origins=cors_origins,
                auth=auth,
                throttle_rate=throttle_rate,
                throttle_burst=throttle_burst,
                stream=stream,
                retrieval=retrieval,
                layer_uri=os.path.relpath(Path(layer_path).resolve(), tdir) if layer_path else None,
            )
            template = sam_template(
                topo,
                Path(file).read_text(),
                handler=handler,
                code_uri=os.path.relpath(out.resolve(), tdir),
                options=options,
            )
        report = build(
            Path(file),
            handler=handler,
            output=out,
            extras=extra_list,
            python=python_version,
            arch=arch,
            requirements_file=Path(requirements_file) if requirements_file else None,
            with_packages=with_packages,
            plugins=plugins,
            layer=Path(layer_path) if layer_path else None,
            compile_bytecode=compile_bytecode,
            aws_service=aws_service,
            context_key=context_key,
        )
        if template_path:
            write_template(Path(template_path), template)
    except SquallError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"{report.path}: {report.zipped_bytes / 2**20:.1f} MiB zipped, "
        f"{report.unzipped_bytes / 2**20:.1f} MiB unzipped; handler {report.handler}, runtime "
        f"python{python_version}, architecture {arch}"
    )
    click.echo(f"  largest: {describe_sizes(report.largest, report.zipped_bytes)}")
    if report.layer is not None:
        click.echo(
            f"{report.layer.path}: {report.layer.zipped_bytes / 2**20:.1f} MiB zipped, "
            f"{report.layer.unzipped_bytes / 2**20:.1f} MiB unzipped (layer)"
        )
        click.echo(f"  largest: {describe_sizes(report.layer.largest, report.layer.zipped_bytes)}")
    bytecode = "compiled"
    if not report.compiled:
        # Not asked for --no-compile: the Python running the build is not the target's (a
        # --snapstart build needs 3.12+). Said only as "not compiled", the cost went unnoticed.
        bytecode = (
            "not compiled (--no-compile)"
            if compile_bytecode is False
            else f"not compiled (python{python_version}'s needs squall package run by "
            f"python{python_version}, not python{sys.version_info[0]}.{sys.version_info[1]}: "
            "each cold start compiles what it imports again, docs/deploy.md)"
        )
    click.echo(
        f"  bundled GeoLite2: {'included (a geo bolt, or your code, opens it)' if report.geolite_included else 'left out'}"
        f"; bytecode: {bytecode}"
        + (f"; plugins: {', '.join(report.distributions)}" if report.distributions else "")
    )
    if report.left_out_packages:
        click.echo(
            f"  dependencies left out (the topology does not use them; --with NAME ships one): "
            f"{', '.join(report.left_out_packages)}"
        )
    for item in report.left_out:
        click.echo(f"  left out: {item.path} ({item.why})")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if template_path:
        click.echo(f"{template_path}: SAM template (sam deploy --guided)")
    for z in (report, report.layer):
        if z is not None and z.zipped_bytes > DIRECT_UPLOAD_LIMIT:
            click.echo(
                f"note: {z.path} is over 50 MiB zipped, so upload it through S3 (sam deploy does), "
                "not directly",
                err=True,
            )
    _strict_exit(strict, report.warnings)


def _strict_exit(strict: bool, warnings: list[str]) -> None:
    """``--strict``: a build that warned fails (exit 1), the package written as it is."""
    if strict and warnings:
        click.echo(
            f"error: --strict: {len(warnings)} warning(s) above; deployed so, the package would "
            "fail where they say",
            err=True,
        )
        sys.exit(1)


@click.command("local-aws")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, exists=True))
@click.option("--kinesis-port", type=int, default=4567, show_default=True)
@click.option("--dynamodb-port", type=int, default=4569, show_default=True)
@click.option(
    "--shards",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Shards of each stream created.",
)
@click.option(
    "--node-modules",
    type=click.Path(file_okay=False),
    help="Where kinesis-local and dynalite are installed: an npm prefix or its node_modules "
    "(default: ~/.cache/squall/node, installed with npm on first use).",
)
@click.option(
    "--env-file", type=click.Path(dir_okay=False), help="Also write the environment to this file."
)
def local_aws(
    files: tuple[str, ...],
    kinesis_port: int,
    dynamodb_port: int,
    shards: int,
    node_modules: str | None,
    env_file: str | None,
) -> None:
    """Start local Kinesis (kinesis-mock) and DynamoDB (dynalite) on 127.0.0.1; create the topologies' streams."""
    from squall.deploy.localaws import run_local_aws, streams_of
    from squall.deploy.template import check_no_placeholder
    from squall.errors import SquallError, TopologyError

    topologies = [_load_or_exit(f) for f in files]
    for f, topo in zip(files, topologies, strict=True):
        try:  # a stream named by a secret reference: its stand-in would be created (not read here)
            names = "\n".join(streams_of([topo]))
            text = Path(f).read_text(encoding="utf-8")
            check_no_placeholder(names, topo, text, "the streams squall local-aws creates")
        except TopologyError as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            sys.exit(2)
    try:
        sys.exit(
            run_local_aws(
                topologies,
                kinesis_port=kinesis_port,
                dynamodb_port=dynamodb_port,
                shards=shards,
                node_modules=Path(node_modules) if node_modules else None,
                env_file=Path(env_file) if env_file else None,
                echo=click.echo,
            )
        )
    except SquallError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--stream",
    help="Kinesis stream name or ARN (default: the stream of the topology's kinesis spout); an "
    "ARN must be of the region read and of the credentials' account (checked at start).",
)
@click.option(
    "--application", help="KCL application name: the DynamoDB lease table (default: topology name)."
)
@click.option(
    "--region",
    help="AWS region (default: the kinesis spout's region or stream ARN's, else $AWS_REGION, "
    "else $AWS_DEFAULT_REGION, else us-east-1).",
)
@click.option(
    "--initial-position",
    type=click.Choice(["TRIM_HORIZON", "LATEST"]),
    default="TRIM_HORIZON",
    show_default=True,
)
@click.option(
    "--kinesis-endpoint", help="Kinesis endpoint URL (local testing; must be http:// for h2c)."
)
@click.option("--dynamodb-endpoint", help="DynamoDB endpoint URL (local testing).")
@click.option(
    "--dynamodb-region",
    help="Region of the lease table (the KCL's DynamoDB client), when not the stream's region.",
)
@click.option("--no-metrics", is_flag=True, help="metricsLevel = NONE (no CloudWatch).")
@click.option("--worker-id", help="Worker id, unique in the fleet (default: host:pid).")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Any other KCL property.")
@click.option("--jars", type=click.Path(file_okay=False), help="Directory of the KCL jars.")
@click.option(
    "--properties-out",
    type=click.Path(dir_okay=False),
    help="Where to write the properties file (default: a private temporary directory per worker).",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the properties and the command; do not start.",
)
@click.option(
    "--metrics-port",
    metavar="[ADDR:]PORT",
    callback=_metrics_port,
    help="Serve the Prometheus metrics of all shard processes of this host on /metrics.",
)
def kcl(
    file: str,
    stream: str | None,
    application: str | None,
    region: str | None,
    initial_position: str,
    kinesis_endpoint: str | None,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    no_metrics: bool,
    worker_id: str | None,
    extra: tuple[str, ...],
    jars: str | None,
    properties_out: str | None,
    print_only: bool,
    metrics_port: str | None,
) -> None:
    """Run a topology on an EC2 fleet: start the KCL MultiLangDaemon with squall as record processor.

    SIGTERM (or Ctrl-C) stops it gracefully: the daemon alone gets it and asks every record
    processor for a final checkpoint."""
    import hashlib
    import os
    import shutil

    from squall.deploy.fleet import kcl_stream_arn, region_of, stream_of
    from squall.deploy.kcl import TOPOLOGY_DIGEST_ENV, check_kcl_safe
    from squall.deploy.kcl_daemon import (
        DEFAULT_CREDENTIALS,
        KclSettings,
        check_stream_account,
        client_setting,
        credentials_provider,
        daemon_command,
        default_worker_id,
        describe,
        jars_dir,
        logback_config,
        own_logback,
        private_properties_path,
        run_daemon,
    )
    from squall.errors import SquallError
    from squall.observability.logs import log_format

    # The secret references are read here too (each shard process reads them again): one missing
    # or not readable by this host's role is a located error before any daemon starts.
    topo = _load_or_exit(file, resolve=True)
    try:
        check_kcl_safe(topo)
        for item in extra:
            if "=" not in item:
                raise SquallError(f"--set {item!r}: KEY=VALUE expected (a KCL property)")
        props = {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in extra)}
        for key in ("streamArn", "streamName"):
            if key in props:  # the daemon would read it unchecked, the processors label another
                raise SquallError(
                    f"--set {key}: name the stream with --stream (a name or an ARN): squall kcl "
                    "checks an ARN and gives the record processors the stream's name"
                )
        provider = credentials_provider(props)  # (any case of its name: the daemon's rule)
        worker_id = worker_id or default_worker_id()
        # a --set regionName / kinesisEndpoint is what the daemon uses (the file's last word),
        # and so is its Kinesis client's own kinesisClient.region / .endpointOverride (refused
        # when it differs: the daemon would apply both, in an order not known)
        region = props.get("regionName") or region_of(topo, stream, region)
        kinesis_endpoint = props.get("kinesisEndpoint") or kinesis_endpoint
        region = (
            client_setting(
                props,
                "kinesisClient",
                "region",
                "regionName (--region, --set regionName, else the spout's region)",
                region,
            )
            or region
        )
        kinesis_endpoint = client_setting(
            props,
            "kinesisClient",
            "endpointOverride",
            "kinesisEndpoint (--kinesis-endpoint)",
            kinesis_endpoint,
        )
        # the lease table's region: --dynamodb-region or the DynamoDB client's own property,
        # written per client when it is not the stream's (kcl_daemon.client_regions)
        own = props.get("dynamoDbClient.region")
        if dynamodb_region and own and own != dynamodb_region:
            raise SquallError(
                f"--dynamodb-region {dynamodb_region} and --set dynamoDbClient.region={own}: "
                "two regions for the lease table: give one"
            )
        stream_arn = kcl_stream_arn(topo, stream, region)
        settings = KclSettings(
            Path(file),
            stream_of(topo, stream),
            application or topo.name,
            region=region,
            initial_position=initial_position,
            kinesis_endpoint=kinesis_endpoint,
            dynamodb_endpoint=dynamodb_endpoint,
            dynamodb_region=dynamodb_region,
            worker_id=worker_id,
            metrics=not no_metrics,
            extra=props,
            stream_arn=stream_arn,
        )
        text = settings.properties()
        if stream_arn and not print_only:  # the account: one call to the stream, at start
            if provider == DEFAULT_CREDENTIALS:
                check_stream_account(stream_arn, region, kinesis_endpoint)
            else:  # (the KCL's cross-account reading: an assumed role's account, not ours)
                click.echo(
                    f"warning: stream ARN {stream_arn}: its account not checked: the daemon "
                    f"reads with AWSCredentialsProvider={provider.split('|', 1)[0]}, not these "
                    "credentials: it reads the ARN's name in that provider's account",
                    err=True,
                )
        out = Path(properties_out) if properties_out else private_properties_path(worker_id)
        out.write_text(text)
        # the daemon's log without its line per message exchanged, nor a copy of each of ours;
        # a logback configuration of the user's (JAVA_TOOL_OPTIONS) is left to rule
        logback = None if own_logback(os.environ) else out.with_suffix(".logback.xml")
        if logback is not None:
            verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
            logback.write_text(logback_config(verbose))
        cmd = daemon_command(out, jars_dir(jars), logback=logback)
    except (SquallError, ValueError) as exc:
        from squall.redact import redact_text

        click.echo(f"error: {redact_text(str(exc))}", err=True)
        sys.exit(2)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    try:
        if print_only:  # the file keeps a secret reference's value (the daemon reads it)
            from squall.redact import redact_text

            click.echo(redact_text(text + describe(cmd)))
            return
        if metrics_port:  # a scrape server beside the daemon, summing the shard processes' files
            from squall.errors import MetricsServerError
            from squall.observability.prometheus import start_multiprocess_server

            try:
                start_multiprocess_server(metrics_port, out.with_suffix(".metrics"), topo.name)
            except MetricsServerError as exc:  # the daemon is not started without its metrics
                click.echo(str(exc), err=True)
                sys.exit(2)
        # The shard processes log as this command does: its level, and its --log-format (an
        # option, not the environment they inherit: they logged text under `--log-format json`)
        fmt = log_format(click.get_current_context().find_root().params.get("log_format"))
        env = {**os.environ, "SQUALL_LOG_LEVEL": level, "SQUALL_LOG_FORMAT": fmt}
        # a shard process started after the file changed says so (warn_if_topology_changed)
        env[TOPOLOGY_DIGEST_ENV] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        code = run_daemon(cmd, env=env)
    except SquallError as exc:  # the daemon could not start (no java)
        click.echo(f"error: {exc}", err=True)
        code = 2
    finally:
        if not properties_out:  # the private directory goes with the worker
            shutil.rmtree(out.parent, ignore_errors=True)
    sys.exit(code)
