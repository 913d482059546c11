"""Component registry: built-in types, plugin entry points, and ``module:Class`` references.

Each type maps to a class whose ``Config`` (a pydantic model with ``extra="forbid"``) drives
parsing, ``squall validate``, ``squall schema`` and the YAML reference alike. Built-ins are named
by import path and imported on first use, so an unused component costs nothing at start-up.
"""

from __future__ import annotations

import difflib
import importlib
import traceback
from functools import cache
from typing import Any

from squall.component import Capabilities, Component, ComponentConfig
from squall.errors import SquallError

#: kind -> type -> "module:Class"
BUILTINS: dict[str, dict[str, str]] = {
    "spout": {
        "file": "squall.spouts.file:FileSpout",
        "stdin": "squall.spouts.file:StdinSpout",
        "kinesis": "squall.spouts.kinesis:KinesisSpout",
        "sqs": "squall.spouts.sqs:SqsSpout",
        "s3": "squall.spouts.s3:S3Spout",
    },
    "bolt": {
        "json": "squall.bolts.json_decode:JsonBolt",
        "schema": "squall.bolts.schema:SchemaBolt",
        "filter": "squall.bolts.filter:FilterBolt",
        "project": "squall.bolts.project:ProjectBolt",
        "route": "squall.bolts.route:RouteBolt",
        "dedupe": "squall.bolts.dedupe:DedupeBolt",
        "lookup": "squall.bolts.lookup:LookupBolt",
        "window": "squall.bolts.window:WindowBolt",
        "geo": "squall.enrichment.geo:GeoBolt",
        "device": "squall.enrichment.device:DeviceBolt",
        "subscription": "squall.enrichment.subscription:SubscriptionBolt",
    },
    "sink": {
        "warehouse": "squall.sinks.warehouse:WarehouseSink",
        "dead_letter": "squall.sinks.dead_letter:DeadLetterSink",
        "dead_letter_table": "squall.sinks.dead_letter_table:DeadLetterTableSink",
        "dead_letter_sqs": "squall.sinks.dead_letter_aws:DeadLetterSqsSink",
        "dead_letter_s3": "squall.sinks.dead_letter_aws:DeadLetterS3Sink",
        "dead_letter_kinesis": "squall.sinks.dead_letter_aws:DeadLetterKinesisSink",
        "stdout": "squall.sinks.stdout:StdoutSink",
        "kinesis": "squall.sinks.kinesis:KinesisSink",
        "sqs": "squall.sinks.sqs:SqsSink",
        "s3": "squall.sinks.s3:S3Sink",
        "firehose": "squall.sinks.firehose:FirehoseSink",
        "http": "squall.sinks.http:HttpSink",
        "push": "squall.sinks.push:PushSink",
    },
}

#: Entry-point group per kind, for plugin packages: ``[options.entry_points] squall.bolts = mytype = pkg.mod:MyBolt``
ENTRY_POINT_GROUPS = {"spout": "squall.spouts", "bolt": "squall.bolts", "sink": "squall.sinks"}


class UnknownType(SquallError, LookupError):
    """No component of that kind and type; ``message`` says what was meant when it can."""

    def __init__(self, kind: str, type_name: str, known: list[str], detail: str = ""):
        self.kind, self.type_name = kind, type_name
        elsewhere = [k for k in BUILTINS if k != kind and type_name in BUILTINS[k]]
        if detail:
            message = detail
        elif elsewhere:  # `bolts: [{type: warehouse}]`: not unknown, in the wrong list
            message = misplaced(type_name, kind, elsewhere[0])
        else:
            lowered = {k.lower(): k for k in known}  # `type: JSON`: no close ratio
            close = [lowered[type_name.lower()]] if type_name.lower() in lowered else []
            close = close or difflib.get_close_matches(type_name, known, n=1, cutoff=0.6)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f" (known: {', '.join(sorted(known))})"
            )
            message = f"unknown {kind} type '{type_name}'{hint}"
        self.message = message
        super().__init__(message)


#: Where a component of each kind is listed in a topology.
SECTIONS = {"spout": "spout", "bolt": "bolts", "sink": "sinks"}


def misplaced(type_name: str, kind: str, other: str) -> str:
    """A type of another kind than its place in the topology wants."""
    return (
        f"'{type_name}' is a {other} type, not a {kind} one: list it under "
        f"'{SECTIONS[other]}', not '{SECTIONS[kind]}'"
    )


@cache
def _plugins() -> dict[str, dict[str, str]]:
    """kind -> type -> ``module:Class`` of the installed plugin packages.

    One scan of the installed distributions for every kind, made only when a type is not a
    built-in: it reads every package's metadata (~2 ms of a Lambda init with the packaged
    dependencies), which a topology of built-ins does not pay."""
    from importlib.metadata import entry_points

    found = entry_points()
    return {
        kind: {ep.name: ep.value for ep in found.select(group=group)}
        for kind, group in ENTRY_POINT_GROUPS.items()
    }


def known_types(kind: str) -> dict[str, str]:
    """Every registered type of a kind, as ``type -> module:Class``: the built-ins, then the
    plugins' names that are not built in (a built-in name stays the built-in's)."""
    builtins = BUILTINS[kind]
    return {**builtins, **{k: v for k, v in _plugins()[kind].items() if k not in builtins}}


def _import(ref: str) -> type:
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def _raised_at(exc: BaseException) -> str:
    """`` (at FILE, line N)``: the innermost line of code (a module's own, or one it imports) that
    raised while importing a type's module; empty when only the import machinery did (no such
    module, no such class). A ``SyntaxError`` says its file and line itself."""
    if isinstance(exc, SyntaxError):
        return ""
    where = ""
    for frame, line in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module != __name__ and module != "importlib" and not module.startswith("importlib."):
            where = f" (at {frame.f_code.co_filename}, line {line})"
    return where


@cache
def resolve(kind: str, type_name: str) -> type[Component]:
    """The class for a type name or a ``module:Class`` reference; ``UnknownType`` otherwise.

    A built-in name is a built-in: a plugin's entry point of the same name does not replace it
    (installing a package must not change what a topology runs; name the plugin's class as
    ``module:Class`` to use it). Plugin metadata is read only for a name that is not built in.
    """
    types = BUILTINS[kind]
    ref = types.get(type_name)
    if ref is None and ":" in type_name:
        ref = type_name
    if ref is None:
        types = known_types(kind)
        ref = types.get(type_name)
    if ref is None:
        raise UnknownType(kind, type_name, list(types))
    try:
        cls = _import(ref)
    except SystemExit as exc:  # argparse or sys.exit() run at import: not squall's exit
        raise UnknownType(
            kind,
            type_name,
            list(types),
            f"cannot import '{ref}': the module exits when imported (SystemExit: {exc.code})"
            f'{_raised_at(exc)}; keep a script\'s code under `if __name__ == "__main__":`',
        ) from None
    except Exception as exc:  # a missing module, a bad reference, or a module that fails at import
        raise UnknownType(
            kind,
            type_name,
            list(types),
            f"cannot import '{ref}': {type(exc).__name__}: {exc}{_raised_at(exc)}",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Component) and cls.kind == kind):
        other = cls.kind if isinstance(cls, type) and issubclass(cls, Component) else None
        detail = (
            misplaced(ref, kind, other)
            if other in SECTIONS
            else f"'{ref}' is not a squall {kind} class"
        )
        raise UnknownType(kind, type_name, list(types), detail)
    return cls


def capabilities(kind: str, config: ComponentConfig) -> Capabilities:
    """What the component of ``config`` (of ``kind``) declares it does outside its process."""
    return resolve(kind, config.type).capabilities(config)


def declared(
    topology: Any, kinds: tuple[str, ...] = ("spout", "bolt", "sink")
) -> list[tuple[str, ComponentConfig, Capabilities]]:
    """(kind, config, capabilities) of a loaded topology's components of ``kinds``, in order."""
    groups = {"spout": [topology.spout], "bolt": topology.bolts, "sink": topology.sinks}
    return [(kind, cfg, capabilities(kind, cfg)) for kind in kinds for cfg in groups[kind]]
