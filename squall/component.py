"""What every spout, bolt and sink shares: a validated config model and a runtime context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from squall.errors import Problem
from squall.iam import AwsPermission

#: Stream names every bolt has: the normal output, and failures (dead letter unless wired).
DEFAULT = "default"
ERROR = "error"
#: The schema bolt's stream of events that fail validation.
INVALID = "invalid"


#: The longest component id (CloudWatch allows 1,024 characters a dimension value; an id is a
#: name, and metrics label every series with it).
MAX_ID_LENGTH = 128


def _header_value(value: SecretStr) -> SecretStr:
    """A header value with a line break or another control character, or a space or tab at
    either end: every request would be refused by the HTTP client (h11's ``Illegal header
    value``), each batch failing again; often a secret stored with its trailing newline or a
    pasted space. One with a character that is not ASCII: httpx encodes header values as ASCII,
    so every record of the sink failed alone (``UnicodeEncodeError``, each dead-lettered) and
    the lookup's client was never made. Said at load, without the value."""
    text = value.get_secret_value()
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
        raise ValueError(
            "the header value holds a line break or another control character (a secret or "
            "variable stored with its trailing newline?): remove it"
        )
    if not text.isascii():  # httpx sends header values as ASCII: each record failed alone
        raise ValueError(
            "the header value holds a character that is not ASCII, which an HTTP header cannot "
            "carry as text: percent-encode it, or keep it out of the header"
        )
    if text != text.strip(" \t"):
        raise ValueError(
            "the header value begins or ends with a space or tab, which HTTP refuses (a secret "
            "or variable stored with a pasted space?): remove it"
        )
    return value


def check_request_url(value: str) -> str:
    """An HTTP component's URL with a line break or another control character (a webhook URL
    kept in a secret or variable with its trailing newline): httpx refused it at each request
    (``InvalidURL``), so every record failed alone and was dead-lettered. Said at load, without
    the URL (its path is often a webhook's secret)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(
            "the URL holds a line break or another control character (a secret or variable "
            "stored with its trailing newline?): remove it"
        )
    return value


#: Request headers of an HTTP component: values secret (never shown), refused with a control
#: character.
HeaderValue = Annotated[SecretStr, AfterValidator(_header_value)]


class ComponentConfig(BaseModel):
    """Base of every component's YAML configuration: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(
        description="Unique id of the component in the topology: 1–128 characters, no spaces or "
        "control characters."
    )
    type: str = Field(
        description="Component type: a built-in name, a plugin name or 'module:Class'."
    )

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        # An id names the component in dead letters, logs, metric labels and CloudWatch
        # dimensions (which refuse empty values): an empty or blank one, or one with spaces or
        # control characters, would be a component nobody can find again.
        if not value:
            raise ValueError("an id cannot be empty")
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"an id has at most {MAX_ID_LENGTH} characters")
        if any(not c.isprintable() or c.isspace() for c in value):
            raise ValueError(f"an id cannot hold spaces or control characters: {value!r}")
        return value


class TriggerSource(StrEnum):
    """The Lambda event sources the consumer handler serves."""

    KINESIS = "kinesis"
    SQS = "sqs"
    S3 = "s3"


@dataclass(frozen=True)
class LambdaTrigger:
    """How Lambda delivers a spout's records to the consumer function: the event source that
    ``squall package --template`` writes, and whose reads it grants on ``name`` only."""

    source: TriggerSource
    #: Kinesis: the stream (name or ARN); SQS: the queue (name, URL or ARN); S3: the bucket.
    name: str
    #: The source's region when the spout sets one (default: the function's).
    region: str | None = None
    #: S3: only new objects whose keys start with ``prefix`` and end with ``suffix``.
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a component does outside its process, declared by the component (``capabilities``)
    so that runners and deploy tools ask it instead of matching on ``type`` names."""

    #: It writes files on the machine's disk (a Lambda container's disk is discarded).
    writes_local_files: bool = False
    #: It writes to the process's standard output (the KCL MultiLangDaemon's protocol channel).
    needs_stdout: bool = False
    #: The Kinesis streams it reads or writes, as configured (a name or an ARN).
    kinesis_streams: tuple[str, ...] = ()
    #: A spout: the Lambda trigger that delivers its records (None: a Kinesis stream, if any).
    lambda_trigger: LambdaTrigger | None = None
    #: The S3 objects it writes, as ``(bucket, key prefix, key suffix, characters before the
    #: suffix)``: every key it puts starts with the prefix and ends with one of those characters
    #: (any, if empty) and the suffix (the loader refuses a topology whose ``s3`` spout would
    #: read them back as input).
    s3_objects: tuple[tuple[str, str, str, str], ...] = ()
    #: A spout: the local files it reads its records from, as configured (relative to the
    #: topology file). Deployed, the spout does not run (Lambda's trigger, the KCL or the HTTP
    #: request delivers the records), so ``squall package`` leaves them out of the package.
    input_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComponentContext:
    """What a component may know about where it runs: never which runner it is in."""

    topology: str
    base_dir: Path = field(default_factory=Path.cwd)
    #: ``(component id, option, message) -> Problem`` located in the topology file
    #: (``Topology.problem``); None for a component built without one (a test).
    locate: Callable[[str, str, str], Problem] | None = field(default=None, compare=False)
    #: Calls the engine makes of a component per batch before the batch fails
    #: (``settings.retry.attempts``); None for a component built without an engine (a test).
    retry_attempts: int | None = None
    #: Seconds before the runner's time limit, less its margin (None: no limit), read at each
    #: call: the engine's ``time_left`` (a Lambda invocation's remaining time). A component
    #: that waits on a dependency bounds its wait by it; None for a component built without an
    #: engine (a test).
    time_left: Callable[[], float | None] | None = field(default=None, compare=False)

    def path(self, value: str | Path) -> Path:
        """Resolve a path from the YAML relative to the topology file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def problem(self, component: str, option: str, message: str) -> Problem:
        """A problem found at start at a component's ``option`` (dotted; "" for its entry):
        file, line and column in the topology file when the runner gave them, else named by
        the topology and the component id."""
        if self.locate is not None:
            return self.locate(component, option, message)
        return Problem(
            self.topology, 0, 0, f"{component}.{option}" if option else component, message
        )


class Component:
    """Base for spouts, bolts and sinks: keeps the id, the config and the context."""

    kind: ClassVar[str] = "component"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    summary: ClassVar[str] = ""
    #: True when the component uses the batch's SQL connection (a sink's
    #: ``WriteContext.connection``, a stateful bolt's ``commit_state(connection=…)``) through
    #: ``exec_driver_sql`` and ``connection.connection.dbapi_connection`` only: the transaction may
    #: then run on a plain driver's connection (no SQLAlchemy import). By default the component
    #: gets a SQLAlchemy connection, as documented.
    driver_sql: ClassVar[bool] = False

    def __init__(self, config: Any, context: ComponentContext):
        self.config = config
        self.id: str = config.id
        self.context = context

    @classmethod
    def capabilities(cls, config: Any) -> Capabilities:
        """What a component with this config does outside its process (none by default)."""
        return Capabilities()

    @classmethod
    def packages(cls, config: Any) -> frozenset[str]:
        """The optional dependencies a component with this config imports when it runs (import
        names: ``sqlalchemy``, ``pyarrow``, ``google.auth``…). ``squall package`` ships squall's
        optional dependencies (``OPTIONAL`` in ``squall/deploy/dependencies.py``) only when a
        component of the topology declares them here, and warns of one declared that the
        package does not hold (an extra's: ``pyarrow`` without ``--extras s3``); a Redis
        resource declares ``redis`` (none by default)."""
        return frozenset()

    @classmethod
    def aws_permissions(cls, config: Any) -> list[AwsPermission]:
        """The AWS actions a component with this config calls (``squall package`` grants them)."""
        return []

    def open(self, resources: Any) -> None:
        """Open what the component needs (clients, files, caches) from the topology's shared
        ``resources``. The one lifecycle hook of every spout, bolt and sink: called once per
        process (in Lambda, during init), before any batch."""

    def close(self) -> None:
        """Release what the component opened. Called once when the process shuts down."""

    def warm_up(self) -> None:
        """Build now what the component would otherwise build at its first batch (parsers, rule
        sets, modules imported on first use). Called after ``open`` only where init runs ahead
        of traffic: a Lambda init that SnapStart snapshots, or one for provisioned concurrency
        (docs/deploy.md)."""

    def after_restore(self) -> None:
        """The process was restored from a snapshot (Lambda SnapStart), maybe days after ``open``
        and in many copies at once: drop what must not be shared or may be stale (data loaded at
        ``open``, a random seed of its own). Pooled connections of the topology's resources are
        closed by the runner already; a component's own clients are reopened here."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"
