"""What an EC2 fleet needs to run a topology under the KCL: a systemd unit, an instance bootstrap, an IAM role.

    squall package topology.yaml --handler kcl -o build/kcl

writes a folder to copy to each instance (``/opt/squall/<name>``, e.g. with ``aws s3 sync``):

- ``topology/``: the topology's folder (without local outputs and caches), imported as it is locally;
- ``requirements.txt``: squall with the KCL extra, the extras and your requirements; squall is
  not on PyPI: its own wheel, in ``wheels/`` and named there (built from a checkout, or its
  installed files packed again);
- ``squall-<name>.service``: the systemd unit. ``ExecStart`` is the ``squall kcl`` command line;
  ``KillMode=mixed`` sends SIGTERM to that main process only (it hands the shutdown to the KCL,
  which lets each record processor finish its batch and checkpoint), and the rest of the
  process group is killed only after ``TimeoutStopSec``, which is above the KCL's shutdown grace;
- ``bootstrap.sh``: run once as root (EC2 user data): Java, a virtualenv, the unit, started;
- ``instance-role.yaml``: a CloudFormation template of the instance role and profile with exactly
  what the KCL and the topology's components call (parameterised stream and lease table).

Retrieval is explicit: ``polling`` (GetRecords; every consumer of a shard shares its 2 MB/s and
5 reads/s) or ``fanout`` (enhanced fan-out: a dedicated 2 MB/s per consumer and shard, billed per
consumer-shard hour and per GB retrieved).

Size (~740 lines): the unit, the bootstrap script and the role are templates of literal text
(about 150 lines); the warnings about what a fleet cannot keep where the topology puts it
(SQLite files, the read-only topology folder) read the same loaded topology.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from squall import aws, iam
from squall.deploy.lambda_paths import sqlite_file, written_paths
from squall.deploy.topology_files import IGNORED, check_folder, left_out_paths
from squall.errors import SquallError
from squall.iam import AwsPermission, dynamodb_table_arn, kinesis_stream_arn
from squall.topology import registry
from squall.topology.model import Topology
from squall.yaml_out import dump_yaml

ROOT = "/opt/squall"
VAR_LIB = "/var/lib/squall"  # the unit's one writable folder, /var/lib/squall/<name>
#: Where systemd makes the unit's ``CacheDirectory`` (a system unit's, ``%C``): squall's cache of
#: checked schemas (``SQUALL_CACHE_DIR``), /var/cache/squall-<name>.
CACHE = "/var/cache"
#: The KCL's graceful shutdown budget (ms) written into the properties; systemd waits longer.
SHUTDOWN_GRACE_MS = 20_000
STOP_TIMEOUT_S = SHUTDOWN_GRACE_MS // 1000 + 25
RETRIEVAL = {"polling": "POLLING", "fanout": "FANOUT"}
#: What the KCL itself calls on the stream, per retrieval mode.
KCL_STREAM_READS = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:ListShards",
    "kinesis:GetShardIterator",
    "kinesis:GetRecords",
)
KCL_FANOUT = (
    "kinesis:RegisterStreamConsumer",
    "kinesis:DescribeStreamConsumer",
    "kinesis:ListStreamConsumers",
)
#: Leases and checkpoints in the application's DynamoDB table.
KCL_LEASES = (
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:Scan",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)


#: What the unit's ``ExecStart`` takes as it is: systemd splits words on white space and expands
#: ``%`` specifiers, ``$`` variables, quotes and backslashes.
_UNIT_WORD = re.compile(r"[A-Za-z0-9._:/\[\]-]+")
#: An AWS region's name (us-east-1, us-gov-west-1, cn-north-1).
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "topology"


def stream_given(topology: Topology, stream: str | None) -> str:
    """The stream to consume as it is named, a name or an ARN: the option, else the topology's
    kinesis spout's."""
    if stream:
        return stream
    streams = registry.capabilities("spout", topology.spout).kinesis_streams
    if streams:
        return str(streams[0])
    raise SquallError("the topology's spout is not kinesis: name the stream with --stream")


def stream_of(topology: Topology, stream: str | None) -> str:
    """The name of the stream to consume (an ARN's ``stream/NAME``): the option, else the
    topology's kinesis spout's."""
    return stream_given(topology, stream).rsplit("/", 1)[-1]


def kcl_stream_arn(topology: Topology, stream: str | None, region: str) -> str | None:
    """The ARN the option or the kinesis spout names the stream by (None for a name), checked
    against what the KCL 2.5.8 MultiLangDaemon can read: it takes ``streamArn`` but keeps only
    its name, read in the region it is configured with (``region``) and in the account of its
    credentials. An ARN of another region is refused here, located (the account is checked at
    start: ``kcl_daemon.check_stream_account``)."""
    given = stream_given(topology, stream)
    try:
        ref = aws.StreamRef.parse(given)
    except ValueError as exc:
        raise _stream_problem(topology, stream, str(exc)) from None
    if ref.arn is None:
        return None
    if ref.region != region:
        raise _stream_problem(
            topology,
            stream,
            f"stream ARN {ref.arn} is in region {ref.region}, but the KCL daemon reads "
            f"{region} (--set regionName, --region, else the spout's region): the KCL 2.5.8 "
            "MultiLangDaemon reads a stream ARN's name in the region it is configured with, so "
            "it would read another stream, or none",
        )
    return ref.arn


def _stream_problem(topology: Topology, stream: str | None, message: str) -> SquallError:
    if stream:
        return SquallError(f"--stream: {message}")
    from squall.errors import TopologyError

    return TopologyError(topology.problem(topology.spout.id, "stream", message))


def spout_region(topology: Topology, stream: str | None = None) -> str | None:
    """The region the topology's kinesis spout names for its stream (its ``region``, else its
    stream ARN's), when ``stream`` is that stream (or None); for another stream given by ARN,
    that ARN's region (as the spout reads one); None when neither names one."""
    streams = registry.capabilities("spout", topology.spout).kinesis_streams
    own = str(streams[0]) if streams else None
    if stream and stream != own and stream.startswith("arn:"):
        try:
            return aws.StreamRef.parse(stream).region
        except ValueError:  # refused, located, with the stream (kcl_stream_arn)
            return None
    if own is None:
        return None
    if stream and stream not in (own, own.rsplit("/", 1)[-1]):
        return None  # another stream: the spout's region says nothing of it
    return getattr(topology.spout, "region", None) or aws.StreamRef.parse(own).region


def region_of(topology: Topology, stream: str | None, region: str | None) -> str:
    """The region to consume in, as the spout resolves its own: the option, else the kinesis
    spout's (``region``, its stream's ARN) or a ``--stream`` ARN's, else AWS_REGION /
    AWS_DEFAULT_REGION, else us-east-1."""
    return region or aws.resolve_region(spout_region(topology, stream))


def fleet_warnings(topology: Topology) -> list[str]:
    """What would go wrong on a fleet with the topology's values of now: a SQLite resource is a
    file per instance (a shard's rows and state stay behind when its lease moves to another
    worker); a path the unit cannot keep — a ``sqlite:///`` URL, a dead-letter file — anywhere but
    under ``/var/lib/squall/<name>``: the topology folder (a relative path) and the rest of the
    system are read-only under the unit (``ProtectSystem=strict``), home folders hidden
    (``ProtectHome``), so every shard process would stop at start; its ``/tmp`` is private and
    emptied at each restart (``PrivateTmp``). Each warning is located (file, line, column and
    option) when the topology was read from a file."""
    folder = f"{VAR_LIB}/{_slug(topology.name)}"
    move = f"; point it under {folder} (a ${{VAR}} of the topology, set in environment)"
    out = []
    for name, res in topology.resources.items():
        database = sqlite_file(res.url)
        if database is None:
            continue
        at = ("resources", name, "url")
        out.append(
            _located(
                topology,
                at,
                f"resource '{name}' is a SQLite file ({database}): each instance of the fleet "
                "keeps its own, and a shard's rows and state stay behind on the instance its "
                "lease leaves; use PostgreSQL (state: PostgreSQL or Redis), or a fleet of one "
                "instance",
            )
        )
        if where := _unit_cannot_keep(database, folder):
            out.append(
                _located(topology, at, f"resource '{name}' ({database}) writes {where}{move}")
            )
    for kind, at, cfg, value in written_paths(topology):
        if where := _unit_cannot_keep(value, folder):
            out.append(_located(topology, at, f"{kind} '{cfg.id}' ({value}) writes {where}{move}"))
    return out


def _located(topology: Topology, path: tuple[str | int, ...], message: str) -> str:
    """``file:line:col: option: message`` when the topology was read from a file, else the message."""
    loc = topology.locator
    return message if loc is None else str(loc.problem(path, message))


#: Where the unit writes but keeps nothing: its private /tmp and /var/tmp (``PrivateTmp``),
#: emptied at each restart.
_PRIVATE_TMP = ("/tmp", "/var/tmp")


def _unit_cannot_keep(path: str, folder: str) -> str | None:
    """Where ``path`` is, when the unit cannot write it there or keeps nothing written there (None:
    under ``folder``, the unit's one writable folder; or no path)."""
    if not path:
        return None
    if path.startswith("~"):
        return (
            "in a home folder, hidden from the unit (ProtectHome=true): every shard process "
            "would stop at start"
        )
    if not path.startswith("/"):
        return "inside topology/, read-only under the unit: every shard process would stop at start"
    path = os.path.normpath(path)
    if _under(path, folder):
        return None
    if any(_under(path, tmp) for tmp in _PRIVATE_TMP):
        return (
            "in the unit's private /tmp (PrivateTmp=true), emptied at each restart: what it "
            "keeps is lost"
        )
    return (
        f"outside {folder}, read-only under the unit (ProtectSystem=strict): every shard "
        "process would stop at start"
    )


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def environment_file(
    text: str, name: str, set_now: str, *, skip: frozenset[str] | set[str] = frozenset()
) -> str:
    """The unit's ``environment``: the stream's variables set (``set_now``), then every other
    variable of the topology but ``skip`` as a comment with its default, for the user to fill in."""
    from squall.deploy.template import variable_defaults

    given = {line.split("=", 1)[0] for line in set_now.splitlines()} | skip
    hints = [
        f"# {var}={default or ''}\n"
        for var, default in variable_defaults(text).items()
        if var not in given and "\n" not in (default or "")
    ]
    head = "# KEY=VALUE lines for the unit (the topology's ${VARS}); bootstrap.sh adds AWS_REGION\n"
    if hints:
        head += (
            "# The topology's variables, with their defaults: uncomment and set. The topology folder\n"
            f"# is read-only under the unit: files (SQLite, dead letters) go under {VAR_LIB}/{name}.\n"
            + "".join(hints)
        )
    return head + set_now


def exec_start(
    topology_file: str,
    name: str,
    stream: str,
    application: str,
    retrieval: str,
    metrics_port: str | None = None,
    *,
    spout_region: bool = False,
    dynamodb_region: str | None = None,
) -> list[str]:
    """The unit's ``squall kcl`` command line (``${AWS_REGION}`` comes from the environment file;
    none when the spout names the stream's region: ``squall kcl`` reads it there);
    ``dynamodb_region``: the lease table's region, when not the stream's."""
    metrics = ["--metrics-port", metrics_port] if metrics_port else []
    leases = ["--dynamodb-region", dynamodb_region] if dynamodb_region else []
    region = [] if spout_region else ["--region", "${AWS_REGION}"]
    return [
        f"{ROOT}/venv/bin/squall",
        "kcl",
        f"{ROOT}/{name}/topology/{topology_file}",
        "--stream",
        stream,
        "--application",
        application,
        *region,
        *leases,
        "--properties-out",
        f"/run/squall-{name}/kcl.properties",
        "--set",
        f"retrievalMode={RETRIEVAL[retrieval]}",
        "--set",
        f"shutdownGraceMillis={SHUTDOWN_GRACE_MS}",
        *metrics,
    ]


def systemd_unit(name: str, command: list[str]) -> str:
    return f"""[Unit]
Description=squall KCL worker: topology {name}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=squall
Group=squall
WorkingDirectory={ROOT}/{name}/topology
EnvironmentFile={ROOT}/{name}/environment
RuntimeDirectory=squall-{name}
# The home folder is read-only under the unit: without a cache folder of its own, every shard
# process checked its topology's JSON Schemas again at start (~40 ms of CPU each). systemd makes
# this one (owned by User, writable under ProtectSystem=strict); `environment` may override it.
CacheDirectory=squall-{name}
Environment=SQUALL_CACHE_DIR={CACHE}/squall-{name}
ExecStart={" ".join(command)}
# SIGTERM to the main process only: the KCL shuts the record processors down gracefully (each
# finishes its batch and checkpoints); whatever is left gets SIGKILL after TimeoutStopSec.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={STOP_TIMEOUT_S}
Restart=on-failure
RestartSec=5
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=/var/lib/squall/{name}

[Install]
WantedBy=multi-user.target
"""


def bootstrap_script(name: str, python: str, wheel: str | None = None) -> str:
    """``wheel``: squall's, as ``requirements.txt`` names it (``wheels/…whl``), reinstalled: pip
    keeps an installed squall of its version ("already installed with the same version as the
    provided wheel"), so a wheel rebuilt from a changed checkout, bootstrapped again, would not
    be. That one file: a sync that deletes nothing leaves older wheels beside it."""
    reinstall = (
        "# pip keeps an installed squall of this wheel's version: a rebuilt one is installed.\n"
        f'{ROOT}/venv/bin/pip install -q --no-deps --force-reinstall "$here/{wheel}"\n'
        if wheel
        else ""
    )
    return f"""#!/bin/bash
# Instance bootstrap for the squall KCL worker '{name}' (EC2 user data, run as root).
# Expects this folder at {ROOT}/{name} (e.g. aws s3 sync s3://BUCKET/{name} {ROOT}/{name}).
set -euo pipefail
here={ROOT}/{name}
if command -v dnf >/dev/null; then
  dnf install -y java-17-amazon-corretto-headless python{python}
elif command -v apt-get >/dev/null; then
  apt-get update -q && apt-get install -y -q openjdk-17-jre-headless python{python} python{python}-venv
fi
id squall >/dev/null 2>&1 || useradd --system --home-dir /var/lib/squall --shell /usr/sbin/nologin squall
install -d -o squall -g squall /var/lib/squall/{name}
[ -x {ROOT}/venv/bin/python ] || python{python} -m venv {ROOT}/venv
{ROOT}/venv/bin/pip install -q --upgrade pip
# From the folder: requirements.txt may name squall's wheel in wheels/ by a relative path.
(cd "$here" && {ROOT}/venv/bin/pip install -q -r requirements.txt)
{reinstall}# The region of this instance (IMDSv2), for the unit's --region.
token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')
region=$(curl -sf -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
touch "$here/environment"
# It holds the topology's ${{VARS}} (database passwords): systemd reads it as root; nobody else may.
chown root:root "$here/environment"
chmod 600 "$here/environment"
grep -q '^AWS_REGION=' "$here/environment" || echo "AWS_REGION=$region" >> "$here/environment"
install -m 0644 "$here/squall-{name}.service" /etc/systemd/system/squall-{name}.service
systemctl daemon-reload
systemctl enable squall-{name}.service
# started, or restarted when bootstrapped again: a running worker takes the new squall and topology
systemctl restart squall-{name}.service
"""


def instance_role(
    topology: Topology,
    marked: Topology,
    application: str,
    retrieval: str,
    stream: str,
    region: str | None = None,
    dynamodb_region: str | None = None,
) -> dict[str, Any]:
    """CloudFormation: the instance role (KCL reads, leases, metrics in its namespace, components' calls).
    ``region``: the stream's, when the spout names it; ``dynamodb_region``: the lease table's,
    when the unit names one (``squall kcl --dynamodb-region``)."""
    from squall.deploy.template import (
        _statements,
        component_permissions,
        param_name,
        reference_permissions,
        variable_defaults,
    )

    stream_arn = kinesis_stream_arn("${StreamName}", region)  # the spout's region, if it names one
    perms = [
        AwsPermission(
            KCL_STREAM_READS + (KCL_FANOUT if retrieval == "fanout" else ()), stream_arn, "KCL"
        ),
        # the KCL keeps its leases in the region it reads the stream in, or the unit's own
        AwsPermission(
            KCL_LEASES,
            dynamodb_table_arn("${ApplicationName}", dynamodb_region or region),
            "KCL leases",
        ),
    ]
    if retrieval == "fanout":
        perms.append(
            AwsPermission(
                ("kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"),
                stream_arn + "/consumer/${ApplicationName}:*",
                "KCL enhanced fan-out",
            )
        )
    text = Path(topology.file).read_text() if Path(topology.file).is_file() else ""
    perms += reference_permissions(text)  # each shard process reads them at its start
    statements = _statements(perms + component_permissions(marked), pseudo=False)
    # PutMetricData has no resource-level permission: it is limited to the application's namespace.
    statements.append(
        {
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": {"Ref": "ApplicationName"}}},
        }
    )
    params: dict[str, Any] = {
        "StreamName": {
            "Type": "String",
            "Default": stream,
            "Description": "The consumed Kinesis stream",
        },
        "ApplicationName": {
            "Type": "String",
            "Default": application,
            "Description": "KCL application: the DynamoDB lease table and the metrics namespace",
        },
    }
    # Only the variables a granted resource names: the others (a database password, a webhook
    # token) are no business of the role, and a parameter here would show them in the console.
    used = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", json.dumps(statements)))
    for var, default in variable_defaults(text).items():
        if param_name(var) not in used:
            continue
        params.setdefault(
            param_name(var),
            {
                "Type": "String",
                **({"Default": default} if default is not None else {}),
                "Description": f"Value of ${{{var}}} in the topology",
            },
        )
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"squall KCL fleet {topology.name}: instance role and profile",
        "Parameters": params,
        "Resources": {
            "InstanceRole": iam.service_role(
                "ec2.amazonaws.com", statements, policy_name="squall-kcl"
            ),
            "InstanceProfile": {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"Roles": [{"Ref": "InstanceRole"}]},
            },
        },
        "Outputs": {"InstanceProfileArn": {"Value": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}}},
    }


def requirements(
    version: str,
    extras: tuple[str, ...],
    requirements_file: Path | None,
    with_packages: tuple[str, ...],
    wheel: str | None = None,
) -> str:
    """``wheel``: squall's own wheel, a path relative to the folder (``wheels/…whl``), installed
    instead of ``squall==version`` from PyPI."""
    names = f"[{','.join(('kcl', *extras))}]"
    lines = [f"./{wheel}{names}" if wheel else f"squall{names}=={version}", *with_packages]
    if requirements_file is not None:
        lines.append(f"# from {requirements_file.name}")
        lines += [ln for ln in requirements_file.read_text().splitlines() if ln.strip()]
    return "\n".join(lines) + "\n"


#: squall's wheel built from a checkout, per source fingerprint (built once per process).
_WHEELS: dict[tuple, tuple[str, bytes]] = {}


def _fingerprint(root: Path) -> tuple:
    from squall.deploy.package import SOURCE_FILES

    files = [root / n for n in SOURCE_FILES if (root / n).is_file()]
    files += [
        f
        for f in sorted((root / "squall").rglob("*"))
        if f.is_file() and "__pycache__" not in f.parts
    ]
    return (str(root), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def squall_wheel(out: Path) -> str | None:
    """squall is not on PyPI: its wheel, into ``out/wheels/`` for the instance to install, and its
    path relative to ``out``. Run from a checkout (``pip install -e .``), built (pure Python);
    installed from a wheel, its installed files packed again (``installed_wheel``); None when
    neither can be (``requirements.txt`` names ``squall==version``)."""
    import tempfile

    from squall.deploy.package import _pip, installed_wheel, project_root, source_copy

    root = project_root()
    if root is None:  # installed from a wheel (or pip install .): the same files, packed again
        folder = out / "wheels"
        if folder.exists():
            shutil.rmtree(folder)
        built = installed_wheel(folder)
        return f"wheels/{built.name}" if built else None
    key = _fingerprint(root)
    if key not in _WHEELS:
        with tempfile.TemporaryDirectory(prefix="squall-wheel-") as tmp:
            source = source_copy(root, Path(tmp) / "source")
            try:
                _pip("wheel", "--no-deps", "-q", "-w", str(Path(tmp) / "wheels"), str(source))
            except SquallError as exc:  # pip's own words say neither what nor why
                raise SquallError(
                    f"building squall's wheel from the checkout {root} for the folder's wheels/ "
                    "(squall is on no index): pip fetches its build requirements (setuptools>=68, "
                    "wheel: pyproject.toml) from your index, PyPI or PIP_FIND_LINKS: "
                    f"{exc}"
                ) from None
            [built] = (Path(tmp) / "wheels").glob("squall-*.whl")
            _WHEELS[key] = (built.name, built.read_bytes())
    filename, data = _WHEELS[key]
    folder = out / "wheels"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / filename).write_bytes(data)
    return f"wheels/{filename}"


def driver_warnings(topology: Topology, requirements_text: str) -> list[str]:
    """A PostgreSQL resource whose driver the fleet's ``requirements.txt`` does not install:
    psycopg2 comes with the ``postgres`` extra only (or ``--with``, ``--requirements``) — a URL
    from a variable or a secret too, which may be PostgreSQL when deployed (unless only options
    taking Redis name it); and a module a component declares that comes with an extra only
    (``dependencies.EXTRA_OF``). What the file installs is read from its requirements, not
    from its comments."""
    from squall.deploy.dependencies import (
        DISTRIBUTION_OF,
        EXTRA_OF,
        _canonical,
        _parsed,
        _variable_paths,
        declared_by,
        needed_packages,
        resource_uses,
    )

    first = requirements_text.split("\n", 1)[0]  # squall[kcl,…]==version
    extras = first.partition("[")[2].partition("]")[0].split(",")
    names, paths = set(), []
    for line in requirements_text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            req = _parsed(line)
            if req is not None:
                names.add(_canonical(req.name))
            else:  # a wheel's path or URL: its file name holds the distribution's
                paths.append(line.lower().replace("-", "_"))

    def installs(*dists: str) -> bool:
        return any(
            _canonical(d) in names or any(d.lower().replace("-", "_") in p for p in paths)
            for d in dists
        )

    out = []
    if "postgres" not in extras and not installs("psycopg2", "psycopg2-binary"):
        variables, uses = _variable_paths(topology, ""), resource_uses(topology)
        for name, res in topology.resources.items():
            if res.scheme == "postgresql":
                out.append(
                    f"resource '{name}' is PostgreSQL, but requirements.txt installs no psycopg2 "
                    "(its driver): every shard process would stop at start; add --extras postgres"
                )
            elif any(p[:2] == ("resources", name) for p in variables) and "redis" not in uses[name]:
                out.append(
                    f"resource '{name}' takes its URL from a variable or a secret, and "
                    "requirements.txt installs no psycopg2: deployed with a PostgreSQL URL, every "
                    "shard process would stop at start; if it may be one, add --extras postgres"
                )
    who = declared_by(topology)
    # a module of an extra a component declares (an s3 sink's Parquet: pyarrow, `s3`)
    for name in sorted(needed_packages(topology, "") & EXTRA_OF.keys()):
        extra, dist = EXTRA_OF[name], DISTRIBUTION_OF.get(name, name)
        if extra not in extras and not installs(dist):
            users = who.get(name) or ["the topology's components"]
            out.append(
                f"{', '.join(users)} import{'s' if len(users) == 1 and name in who else ''} "
                f"{name}, but requirements.txt installs none: every shard process would stop "
                f"at start; add --extras {extra}"
            )
    return out


def write_fleet(
    topology: Topology,
    topology_file: Path,
    out: Path,
    *,
    stream: str | None = None,
    retrieval: str = "polling",
    application: str | None = None,
    extras: tuple[str, ...] = (),
    requirements_file: Path | None = None,
    with_packages: tuple[str, ...] = (),
    python: str = "3.11",
    metrics_port: str | None = None,
    dynamodb_region: str | None = None,
) -> list[Path]:
    """Write the fleet folder; returns the files written (the topology folder as one entry).
    ``metrics_port``: the unit's ``squall kcl --metrics-port`` (Prometheus), none without it.
    ``dynamodb_region``: the lease table's region, when not the stream's (the unit's ``squall
    kcl --dynamodb-region``; the instance role grants the table there)."""
    from squall import __version__
    from squall.deploy.kcl import check_kcl_safe
    from squall.deploy.template import (
        _MARKER,
        check_no_placeholder,
        parameterised,
        variable_defaults,
    )

    if retrieval not in RETRIEVAL:
        raise SquallError(f"retrieval must be one of {', '.join(RETRIEVAL)}")
    if dynamodb_region is not None and not _REGION.fullmatch(dynamodb_region):
        raise SquallError(
            f"--dynamodb-region {dynamodb_region!r}: an AWS region is expected (eu-west-1): it "
            "goes into the unit's command line and the instance role's lease table ARN"
        )
    check_kcl_safe(topology)
    check_folder(topology, topology_file.read_text(encoding="utf-8"))
    name = _slug(topology.name)
    stream_name = stream_of(topology, stream)
    app = application or topology.name
    if " " in topology_file.name:
        raise SquallError(
            "the KCL splits its command line on spaces: name the topology file without spaces"
        )
    for what, word in (
        ("the topology file's name", topology_file.name),
        ("--metrics-port", metrics_port),
    ):
        if word is not None and not _UNIT_WORD.fullmatch(word):
            raise SquallError(
                f"{what} {word!r}: the unit's command line takes letters, digits and . _ - : [ ] "
                "/ only (systemd splits on spaces and expands %, $ and quotes)"
            )
    out.mkdir(parents=True, exist_ok=True)
    code = out / "topology"
    if code.exists():
        shutil.rmtree(code)
    patterns = shutil.ignore_patterns(*IGNORED)
    target = out.resolve()
    records = left_out_paths(topology, topology_file.read_text(encoding="utf-8"))

    def ignore(
        folder: str, names: list[str]
    ) -> set[str]:  # never copy the output folder into itself
        return set(patterns(folder, names)) | {
            n
            for n in names
            if (Path(folder) / n).resolve() == target
            or os.path.normpath(Path(folder) / n) in records
        }

    shutil.copytree(topology_file.resolve().parent, code, ignore=ignore)
    text = topology_file.read_text(encoding="utf-8")
    marked = parameterised(topology, text)
    # A stream the topology names with ${VARS}: the unit reads them from `environment` (where
    # the docs put the topology's variables), set there to their values of now.
    # An ARN stays one: ``squall kcl`` checks that the daemon reads that stream.
    unit_stream, stream_vars = stream or stream_given(topology, None), ""
    if stream is None and _MARKER.search(raw := stream_given(marked, None)):
        unit_stream = _MARKER.sub(lambda m: "${" + m.group(1) + "}", raw)
        defaults = variable_defaults(text)
        stream_vars = "".join(
            f"{v}={os.environ.get(v, defaults.get(v) or '')}\n" for v in _MARKER.findall(raw)
        )
    # The spout's stream variables are the unit's (above) or unused (an explicit --stream: the KCL
    # delivers the records): no hint for them.
    try:
        spout_vars = set(_MARKER.findall(stream_given(marked, None)))
    except SquallError:  # the spout is not kinesis
        spout_vars = set()
    region = spout_region(topology, stream)
    if region is not None:  # the unit reads in the spout's region: an ARN of another is refused
        kcl_stream_arn(topology, stream, region)
    command = exec_start(
        topology_file.resolve().name,
        name,
        unit_stream,
        app,
        retrieval,
        metrics_port,
        spout_region=region is not None,
        dynamodb_region=dynamodb_region,
    )
    wheel = squall_wheel(out)
    written = [code, *([out / wheel] if wheel else [])]
    files = {
        "requirements.txt": requirements(
            __version__, extras, requirements_file, with_packages, wheel
        ),
        f"squall-{name}.service": systemd_unit(name, command),
        "bootstrap.sh": bootstrap_script(name, python, wheel),
        "instance-role.yaml": "# Generated by squall package --handler kcl\n"
        + dump_yaml(
            instance_role(
                topology,
                marked,
                app,
                retrieval,
                stream_name,
                region,
                dynamodb_region,
            ),
            sort_keys=False,
            width=100,
        ),
        "environment": environment_file(text, name, stream_vars, skip=spout_vars),
    }
    check_no_placeholder(
        "\n".join(files.values()), topology, text, "the fleet's unit and instance role"
    )
    for filename, text in files.items():
        path = out / filename
        path.write_text(text)
        written.append(path)
    (out / "bootstrap.sh").chmod(0o755)
    (out / "environment").chmod(0o600)  # for the topology's secrets (see bootstrap.sh)
    return written


def describe_command(command: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in command)
