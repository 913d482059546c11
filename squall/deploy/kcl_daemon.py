"""Launch the KCL MultiLangDaemon for a topology: properties file, jar path, java command.

The daemon (Java, KCL 2.x) holds the shard leases in DynamoDB, balances them across every
worker of the fleet, and starts one ``python -m squall.deploy.kcl TOPOLOGY`` per leased shard.

Fleet rules:

- every worker has its own id (default ``host:pid``, unique per process as the KCL's own default)
  and its own properties file (default: a private temporary directory), so two workers started
  from one topology folder never share either;
- a stop is graceful only when SIGTERM reaches the daemon alone: the JVM's shutdown hook asks each
  record processor to shut down (a final checkpoint) and waits up to ``shutdownGraceMillis``.
  Record processors that get the signal first die before their final checkpoint. So ``squall
  kcl`` runs the daemon in a session of its own and forwards SIGTERM/SIGINT/SIGHUP to it only;
  a service manager must signal the main process only (systemd ``KillMode=mixed``:
  ``systemd_stop_settings()``).

Size (~450 lines): the properties (each client's region and endpoint, the credentials provider's
spellings, the stream's ARN checked), the java command with its logging configuration, and the
signal forwarding are one launcher, read together.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from squall.errors import SquallError, safe_text

#: The signal that stops a ``squall kcl`` worker gracefully (what systemd and container runtimes send).
STOP_SIGNAL = signal.SIGTERM
#: systemd ``KillMode`` for a ``squall kcl`` unit: the stop signal goes to the main process only
#: (it forwards it to the daemon); SIGKILL goes to every process of the unit after TimeoutStopSec.
SYSTEMD_KILL_MODE = "mixed"
#: ``shutdownGraceMillis`` squall sets unless told otherwise: how long the daemon waits for the record
#: processors' final checkpoints on a stop (the KCL's own default, 0, gives them no time at all).
DEFAULT_SHUTDOWN_GRACE_MILLIS = 20_000
#: Seconds a service manager waits beyond the grace period before it kills the worker.
STOP_MARGIN_SECONDS = 10


def default_worker_id() -> str:
    """A worker id unique per process: ``host:pid`` (two workers on one host never share one)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def private_properties_path(worker_id: str) -> Path:
    """A properties file in a new private (0700) temporary directory, named after the worker."""
    directory = Path(tempfile.mkdtemp(prefix="squall-kcl-"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker_id)
    return directory / f"{safe}.properties"


def systemd_stop_settings(
    shutdown_grace_millis: int = DEFAULT_SHUTDOWN_GRACE_MILLIS,
) -> dict[str, str]:
    """The ``[Service]`` stop directives for a unit whose main process is ``squall kcl``."""
    return {
        "KillSignal": STOP_SIGNAL.name,
        "KillMode": SYSTEMD_KILL_MODE,
        "TimeoutStopSec": str(-(-shutdown_grace_millis // 1000) + STOP_MARGIN_SECONDS),
        "SendSIGKILL": "yes",
    }


#: The daemon's credentials unless ``--set AWSCredentialsProvider=…``: squall's own (the chain).
DEFAULT_CREDENTIALS = "DefaultAWSCredentialsProviderChain"


def _is_credentials_key(key: str) -> bool:
    """Whether a KCL property is the daemon's (Kinesis) credentials provider: the daemon reads
    any case of ``AWSCredentialsProvider`` as that one property (``KinesisClientLibConfigurator
    .processKey``: ``AwsCredentialsProvider`` in the KCL's own javadoc). Its DynamoDB and
    CloudWatch ones (``AWSCredentialsProviderDynamoDB``…) are other properties."""
    return key.lower() == "awscredentialsprovider"


def credentials_provider(props: dict[str, str]) -> str:
    """The credentials provider the daemon reads Kinesis with, given the ``--set`` properties;
    ``SquallError`` when they set it twice (in two cases of its name: the daemon would take
    one of them, the order of a Java ``Hashtable``)."""
    given = {k: v for k, v in props.items() if _is_credentials_key(k)}
    if len(given) > 1:
        raise SquallError(
            f"--set {', '.join(given)}: one property for the daemon (it reads any case of "
            "AWSCredentialsProvider as one): set it once"
        )
    return next(iter(given.values()), DEFAULT_CREDENTIALS)


def client_setting(
    props: Mapping[str, str], client: str, name: str, general: str, value: str | None
) -> str | None:
    """What the daemon's ``client`` (``kinesisClient``, ``dynamoDbClient``) uses for ``name``
    (``region``, ``endpointOverride``): its own property ``<client>.<name>`` when ``--set``,
    else ``value``, the general property's (``regionName``, which sets every client's region;
    ``kinesisEndpoint``, ``dynamoDBEndpoint``: ``general`` says which and where it comes from).
    Both set, to different values: ``SquallError`` — the daemon applies its properties in the
    order of a hash table (``java.util.Properties``), so which one its client gets is not known,
    nor where the stream check and the lease reads should go."""
    own = props.get(f"{client}.{name}")
    if own is None:
        return value
    if value is not None and _setting_key(name, own) != _setting_key(name, value):
        raise SquallError(
            f"--set {client}.{name}={own} and {general} = {value} both set the daemon's "
            f"{client} {name}; it applies them in the order of a hash table, so either may win: "
            "set one (or the same value in both)"
        )
    return own


def _setting_key(name: str, value: str) -> str:
    """A client setting as compared: an endpoint with or without its trailing '/' (its scheme and
    host in any case) is one endpoint to the daemon's clients, whichever property wins."""
    if name != "endpointOverride":
        return value
    scheme, sep, rest = value.rstrip("/").partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}"


#: The daemon's AWS clients, each with a ``<client>.region`` property of its own.
CLIENTS = ("kinesisClient", "dynamoDbClient", "cloudWatchClient")


def client_regions(props: dict[str, str]) -> None:
    """Write each client's region in ``props`` instead of ``regionName`` when a client's own
    region (``dynamoDbClient.region``: the lease table in another region than the stream) differs
    from it. The daemon sets ``regionName`` on all three clients (``MultiLangDaemonConfiguration
    .setRegionName``) and each property in the order of a hash table (``java.util.Properties``),
    so with both in the file either could win; per client, there is one region per client."""
    general = props.get("regionName")
    own = {c: props[f"{c}.region"] for c in CLIENTS if props.get(f"{c}.region")}
    if general is None or all(region == general for region in own.values()):
        return
    del props["regionName"]
    for client in CLIENTS:
        if not props.get(f"{client}.region"):
            props[f"{client}.region"] = general


@dataclass
class KclSettings:
    """What the properties file needs; ``extra`` is passed through verbatim (KCL property names)."""

    topology: Path
    stream: str
    application: str
    region: str = "us-east-1"
    initial_position: str = "TRIM_HORIZON"
    kinesis_endpoint: str | None = None
    dynamodb_endpoint: str | None = None
    #: The lease table's region (the daemon's DynamoDB client), when not the stream's ``region``.
    dynamodb_region: str | None = None
    worker_id: str | None = None
    metrics: bool = True
    python: str = sys.executable
    extra: dict[str, str] = field(default_factory=dict)
    #: The stream's ARN when the topology names it by one (``stream`` is then its name): written
    #: as ``streamArn`` (see ``check_stream_account`` for what the daemon reads of it).
    stream_arn: str | None = None

    def properties(self) -> str:
        from squall.deploy.kcl_lease import LeaseTable

        props = {
            "executableName": "",  # below: it names the lease table the daemon ends up using
            **({"streamArn": self.stream_arn} if self.stream_arn else {"streamName": self.stream}),
            "applicationName": self.application,
            "AWSCredentialsProvider": DEFAULT_CREDENTIALS,
            "processingLanguage": "python/3",
            "initialPositionInStream": self.initial_position,
            "regionName": self.region,
        }
        if self.kinesis_endpoint:
            props["kinesisEndpoint"] = self.kinesis_endpoint
        if self.dynamodb_endpoint:
            props["dynamoDBEndpoint"] = self.dynamodb_endpoint
        if self.dynamodb_region:
            props["dynamoDbClient.region"] = self.dynamodb_region
        if not self.metrics:
            props["metricsLevel"] = "NONE"
        props["workerId"] = self.worker_id or default_worker_id()
        props["shutdownGraceMillis"] = str(DEFAULT_SHUTDOWN_GRACE_MILLIS)
        # Idle polls reach the processor too: a sink that rolls files by age releases (and the
        # checkpoint moves) while no record arrives.
        props["callProcessRecordsEvenForEmptyRecordList"] = "true"
        if any(_is_credentials_key(k) for k in self.extra):
            # the user's, in whatever case: the daemon reads one (else two lines, one property)
            del props["AWSCredentialsProvider"]
        props.update(self.extra)
        if "workerIdentifier" in self.extra and "workerId" not in self.extra:
            del props["workerId"]  # one worker id in the file: the one the user set
        client_regions(props)
        # Absolute (the daemon's shard processes may run elsewhere) but not resolved: a symlink
        # swapped under a worker (a Kubernetes ConfigMap, whose old folder is then deleted) is
        # read as it is when a shard process starts — resolved, that process read a deleted file.
        topology = str(self.topology.absolute())
        if not self.extra.get("executableName"):
            # The processor reads its lease's owner before retrying a batch (kcl_lease): the
            # table, worker id, region and endpoint the daemon uses, ``--set`` ones included (a
            # worker id it does not write as ``leaseOwner`` gives up every retried batch).
            lease = LeaseTable(
                props.get("tableName") or props["applicationName"],
                props.get("workerIdentifier") or props["workerId"],
                # its own region (one per client, client_regions), else every client's
                props.get("dynamoDbClient.region") or props.get("regionName") or None,
                client_setting(
                    props,
                    "dynamoDbClient",
                    "endpointOverride",
                    "dynamoDBEndpoint (--dynamodb-endpoint)",
                    props.get("dynamoDBEndpoint") or None,
                ),
            )
            props["executableName"] = " ".join(
                [
                    self.python,
                    "-m",
                    "squall.deploy.kcl",
                    topology,
                    self.stream,
                    *lease.args(),
                ]
            )
        if " " in topology or " " in self.python:
            raise SquallError("the KCL splits executableName on spaces: use paths without spaces")
        return "".join(f"{_java(k)} = {_java(v)}\n" for k, v in props.items())


def check_stream_account(stream_arn: str, region: str, endpoint_url: str | None) -> None:
    """Refuse a stream ARN the daemon would not read. The KCL 2.5.8 MultiLangDaemon takes
    ``streamArn`` but keeps only its name (``KinesisClientLibConfigurator``: ``setStreamName``
    of the ARN's resource), which it reads in the account of its credentials: another account's
    ARN would read a same-named stream of this one, or fail with "stream not found". So the
    stream of that name here (DescribeStreamSummary) must be the one the ARN names."""
    from botocore.exceptions import BotoCoreError, ClientError

    from squall import aws
    from squall.redact import redact_text

    name = stream_arn.rsplit("/", 1)[-1]
    try:
        kinesis = aws.client("kinesis", region=region, endpoint_url=endpoint_url)
        here = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except (BotoCoreError, ClientError) as exc:
        code = aws.error_code(exc) or type(exc).__name__
        if code == "ResourceNotFoundException":  # the daemon cannot read it
            raise SquallError(
                f"stream ARN {stream_arn}: no stream {name} in region {region} of these "
                f"credentials' account ({code}): the KCL 2.5.8 MultiLangDaemon reads a stream by "
                "its name in its own account, so it cannot read another account's stream "
                "(cross-account reading: run squall kcl with that account's credentials, or use "
                "squall run)"
            ) from None
        # A check not made (denied, throttled, unanswered) says nothing of the stream: not "no
        # stream", but the daemon is not started on an ARN it may read wrongly either.
        cause = (
            f"these credentials may not call kinesis:DescribeStreamSummary on stream {name} in "
            f"region {region} (the fleet's instance role grants it)"
            if code in ("AccessDeniedException", "AccessDenied")
            else "the check failed"
        )
        detail = redact_text(safe_text(exc, 300))  # (an endpoint URL's password masked)
        raise SquallError(
            f"stream ARN {stream_arn}: not checked: {cause} ({code}: {detail}): "
            "squall kcl checks at start that the stream the KCL 2.5.8 MultiLangDaemon reads "
            "(the ARN's name, in these credentials' account) is the ARN's; the daemon was not "
            "started"
        ) from None
    if here["StreamARN"] != stream_arn:
        raise SquallError(
            f"stream ARN {stream_arn}: the KCL 2.5.8 MultiLangDaemon reads a stream by its name "
            f"in the account of its credentials, which is {here['StreamARN']}, not the stream "
            "asked for (cross-account reading: run squall kcl with that account's credentials, "
            "or use squall run)"
        )


def _java(text: str) -> str:
    """``text`` as ``java.util.Properties.load`` reads it back: the daemon reads the file as
    ISO-8859-1, so other characters are ``\\uXXXX`` escapes (a worker id ``wörker`` read as
    ``wÃ¶rker`` is the ``leaseOwner`` the KCL writes, and the processor's lease check, comparing
    ``wörker``, would take each of its leases for another worker's); a backslash is doubled."""
    if text.isascii() and "\\" not in text:
        return text
    out = []
    for ch in text.replace("\\", "\\\\"):
        if ch.isascii():
            out.append(ch)
            continue
        units = ch.encode("utf-16-be")
        out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    return "".join(out)


def jars_dir(explicit: str | Path | None = None) -> Path:
    """The KCL jars: an explicit directory, $SQUALL_KCL_JARS, or those installed with amazon_kclpy.
    A directory named (the option, the variable) that holds no jar is an error, not passed over
    for the installed ones: those may be another KCL version than the one asked for."""
    for given, name in (
        (explicit, "--jars"),
        (os.environ.get("SQUALL_KCL_JARS"), "SQUALL_KCL_JARS"),
    ):
        if given:
            if Path(given).is_dir() and any(Path(given).glob("*.jar")):
                return Path(given)
            what = "is not a directory" if not Path(given).is_dir() else "holds no .jar file"
            raise SquallError(f"{name} {given}: {what} (the KCL jars)")
    candidates = []
    try:
        import amazon_kclpy

        candidates.append(Path(amazon_kclpy.__file__).parent / "jars")
    except ImportError:
        pass
    for c in candidates:
        if c and Path(c).is_dir() and any(Path(c).glob("*.jar")):
            return Path(c)
    raise SquallError(
        "KCL jars not found: pip install 'squall[kcl]' (amazon-kclpy), or set SQUALL_KCL_JARS"
    )


#: The daemon's loggers that write one INFO line per message it exchanges with a shard process
#: (four per ``processRecords``, an empty one too: ``callProcessRecordsEvenForEmptyRecordList``):
#: 97 % of a worker's log, 16 lines a second per idle shard at 250 ms between reads. WARN unless
#: ``squall -v kcl``.
CHATTY_LOGGERS = (
    "software.amazon.kinesis.multilang.MessageWriter",
    "software.amazon.kinesis.multilang.LineReaderTask",
    "software.amazon.kinesis.multilang.MultiLangProtocol",
)
#: Logs each stderr line of a shard process at ERROR, whatever its level, and then prints the line
#: itself to the daemon's stderr: every line of squall was in the log twice. Off: the printed copy,
#: as the shard process wrote it (its level, its JSON under ``--log-format json``), stays.
STDERR_COPY_LOGGER = "software.amazon.kinesis.multilang.DrainChildSTDERRTask"


def logback_config(verbose: bool = False) -> str:
    """The daemon's logback configuration: the multilang jar's own (root INFO to the console, its
    pattern) with the per-message loggers at WARN (INFO when ``verbose``) and the ERROR copy of a
    shard process's stderr off."""
    levels = [(STDERR_COPY_LOGGER, "OFF")]
    if not verbose:
        levels += [(name, "WARN") for name in CHATTY_LOGGERS]
    loggers = "".join(f'    <logger name="{n}" level="{lv}"/>\n' for n, lv in levels)
    return (
        "<configuration>\n"
        '    <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">\n'
        "        <encoder>\n"
        "            <pattern>%d [%thread] %-5level %logger{36} [%mdc{ShardId:-NONE}] - %msg %n"
        "</pattern>\n"
        "        </encoder>\n"
        "    </appender>\n"
        f"{loggers}"
        '    <root level="INFO">\n'
        '        <appender-ref ref="CONSOLE" />\n'
        "    </root>\n"
        "</configuration>\n"
    )


#: Where a JVM reads options from the environment: ``JAVA_TOOL_OPTIONS`` (every JVM) and
#: ``JDK_JAVA_OPTIONS`` (the java launcher). A ``-D`` on the command line overrides theirs.
JVM_OPTION_VARIABLES = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")


def own_logback(env: Mapping[str, str]) -> str | None:
    """The variable that gives the daemon a logback configuration of its own
    (``-Dlogback.configurationFile=…``), if one does: ``squall kcl`` then passes none of its
    (``logback_config``), whose ``-D`` on the command line would override it silently."""
    for name in JVM_OPTION_VARIABLES:
        if "-Dlogback.configurationFile=" in env.get(name, ""):
            return name
    return None


def daemon_command(
    properties_file: Path, jars: Path, java: str | None = None, logback: Path | None = None
) -> list[str]:
    """The java command line; ``logback``: the daemon's logging configuration (``logback_config``)."""
    java = java or shutil.which("java") or "java"
    return [
        java,
        *([f"-Dlogback.configurationFile={logback}"] if logback else []),
        "-cp",
        f"{jars}/*",
        "software.amazon.kinesis.multilang.MultiLangDaemon",
        "--properties-file",
        str(properties_file),
    ]


def describe(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the daemon gets SIGKILL if ``squall kcl`` dies (kill -9), rather than living on unowned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def run_daemon(cmd: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run the daemon until it exits; a stop signal to this process is passed to the daemon alone.

    The daemon gets a session of its own, so a signal to this process group (Ctrl-C, ``kill --
    -PGID``) does not reach its record processors. Returns the daemon's exit code, 0 after a
    requested stop.
    """
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    try:
        proc = subprocess.Popen(
            cmd, env=None if env is None else dict(env), start_new_session=True, preexec_fn=preexec
        )  # noqa: PLW1509 - one thread here: the CLI
    except FileNotFoundError:
        raise SquallError(
            f"cannot start the KCL MultiLangDaemon: '{cmd[0]}' not found — it runs on Java 11+ "
            "(e.g. apt-get install openjdk-17-jre-headless); put java on PATH"
        ) from None
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if proc.poll() is None:
            proc.send_signal(STOP_SIGNAL)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping and code in (0, 128 + STOP_SIGNAL, -STOP_SIGNAL):
        return 0  # the JVM exits with 143 once its shutdown hook is done
    return code if code >= 0 else 128 - code
