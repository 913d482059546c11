"""The validated, frozen topology model. Nothing here runs: ``Topology.plan`` is its compiled graph."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squall.component import ComponentConfig
from squall.errors import Problem
from squall.times import Seconds
from squall.topology.resource_config import ResourceConfig
from squall.topology.yamlsource import Locator, format_path

if TYPE_CHECKING:
    from squall.topology.graph import Plan

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )


class RetryConfig(_Strict):
    """Bounded retries with jittered exponential backoff for transient dependency errors."""

    attempts: int = Field(
        5, ge=1, le=100, description="Calls per component and batch, first included."
    )
    initial_backoff: Seconds = Field(
        0.1, ge=0, le=3600, description="Seconds before the first retry (at most an hour)."
    )
    max_backoff: Seconds = Field(
        10.0, ge=0, le=3600, description="Upper bound of one backoff, in seconds (at most an hour)."
    )
    multiplier: float = Field(2.0, ge=1, description="Growth of the backoff between retries.")


def backoff_ceiling(initial: float, multiplier: float, maximum: float, attempt: int) -> float:
    """The most a retry after call ``attempt`` (1-based) waits: ``initial * multiplier **
    (attempt - 1)``, at most ``maximum`` — without the float power's OverflowError, which a large
    ``multiplier`` over many ``attempts`` raised (1e10 from the 32nd call on) and failed the
    invocation instead of retrying."""
    if initial <= 0:
        return 0.0
    try:
        grown = initial * multiplier ** (attempt - 1)
    except OverflowError:
        return maximum
    return min(maximum, grown)


class Settings(_Strict):
    """Topology-wide settings."""

    batch_size: int = Field(
        500, ge=1, le=100_000, description="Records per batch in the local runner."
    )
    lambda_batch_size: int = Field(
        2_500,
        ge=1,
        le=100_000,
        description="Kinesis records or SQS messages per engine batch in the Lambda consumer: "
        "an invocation (up to 10,000 records) runs in slices of this many, each committed "
        "before the next, so memory holds one slice's events.",
    )
    lambda_deadline_margin: Seconds = Field(
        1.0,
        ge=0,
        le=900,
        description="Seconds the Lambda consumer keeps free before the function's timeout: a "
        "slice starts only while the time left is over twice the longest slice of the "
        "invocation plus this margin (the first slice always runs); otherwise the records not "
        "started are answered as failures, and Lambda retries from them. Covers the answer, "
        "the metrics flush and a slice slower than any before it. The consumer and the API "
        "producer retry a dependency (the engine's retries, and the sinks' own: PutRecords, "
        "SQS, Firehose, HTTP, FCM) only while the backoff fits in the time left less this "
        "margin; the producer then answers 503 with Retry-After. Keep it under the function's "
        "timeout (squall package refuses one that is not).",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)


class Edge(_Strict):
    """An explicit edge: events of ``stream`` from component ``from`` go to component ``to``."""

    from_: str = Field(alias="from", description="Id of the spout or bolt the stream comes from.")
    stream: str = Field(
        "default", description="Stream name: default, error, invalid, or a named stream."
    )
    to: str = Field(description="Id of the bolt or sink that receives the stream.")


class TopologyDocument(_Strict):
    """The top level of a topology YAML file."""

    name: str = Field(
        pattern=NAME_PATTERN, description="Topology name; also the checkpoint application name."
    )
    description: str = ""
    resources: dict[str, ResourceConfig] = Field(
        default_factory=dict, description="Shared connections, opened once per process."
    )
    spout: dict = Field(description="Where records come from (`type` and its options).")
    bolts: list[dict] = Field(
        default_factory=list, description="Processing steps, chained in listed order."
    )
    sinks: list[dict] = Field(min_length=1, description="Where events end up.")
    streams: list[Edge] = Field(
        default_factory=list, description="Explicit edges beside the default chain."
    )
    settings: Settings = Field(default_factory=Settings)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        """What a name may hold, in words (the pattern's own error quoted the regular expression)."""
        if isinstance(value, str) and not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                "a topology name is a letter, then up to 127 letters, digits, '_', '.' or '-' "
                "(it also names the checkpoints)"
            )
        return value


@dataclass(frozen=True, eq=False)
class Topology:
    """A loaded and validated topology: component configs are their types' own models."""

    name: str
    description: str
    resources: dict[str, ResourceConfig]
    spout: ComponentConfig
    bolts: tuple[ComponentConfig, ...]
    sinks: tuple[ComponentConfig, ...]
    streams: tuple[Edge, ...]
    settings: Settings
    file: str = "<string>"
    base_dir: Path = field(default_factory=Path.cwd)
    locator: Locator | None = None
    #: Where the spout came from when not from the file (``--input``): its problems name that.
    spout_source: str | None = None

    @cached_property
    def plan(self) -> Plan:
        """The compiled graph (checked, ordered, streams wired): what the engine, ``squall graph``
        and the deploy artifacts run from. ``load`` compiles it once (graph problems are load
        problems); every caller takes it from here instead of compiling again."""
        from squall.topology.graph import compile_plan

        return compile_plan(self)

    def with_spout(self, spout: ComponentConfig, source: str = "--input") -> Topology:
        """The same topology reading from another spout (e.g. ``squall run --input``), which
        ``source`` names in the spout's problems (the file's spout entry is not where it is)."""
        from dataclasses import replace

        return replace(self, spout=spout, spout_source=source)

    def problem(self, component: str, option: str, message: str) -> Problem:
        """A problem a component found at start (a table or file it names is not there), at its
        ``option`` (dotted; "" for the entry itself) in the topology file: file, line and column
        when the topology was read from one. The message names the component."""
        kind, place = "component", ()
        if component == self.spout.id:
            kind, place = "spout", ("spout",)
        for name, key, configs in (("bolt", "bolts", self.bolts), ("sink", "sinks", self.sinks)):
            i = next((i for i, c in enumerate(configs) if c.id == component), None)
            if i is not None:
                kind, place = name, (key, i)
        path = (*place, *option.split(".")) if option else place
        text = f"{kind} '{component}': {message}"
        if kind == "spout" and self.spout_source is not None:
            return Problem(self.spout_source, 0, 0, "", text)
        if self.locator is not None:
            return self.locator.problem(path, text)
        return Problem(self.file, 0, 0, format_path(path), text)

    def resource_problem(self, name: str, message: str) -> Problem:
        """A problem of resource ``name`` found at start (its driver is not installed), at its
        ``url`` in the topology file."""
        path = ("resources", name, "url")
        if self.locator is not None:
            return self.locator.problem(path, message)
        return Problem(self.file, 0, 0, format_path(path), message)
