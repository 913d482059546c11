"""What a Lambda function cannot keep where the topology writes it: ``squall package``'s warnings.

In Lambda the package is unzipped read-only under ``/var/task`` (the topology under
``/var/task/topology``) and ``/tmp`` is the only writable place, each execution environment's
own and discarded with it. So a SQLite resource or a file a component writes (the dead-letter
file) at a relative path — the topology's folder — or anywhere but ``/tmp`` stops every init,
and under ``/tmp`` keeps what it writes only as long as one environment lives. The warnings read
the values the template deploys unless told otherwise (``as_deployed``: a ``${VAR:-default}``
as its default, its parameter's default, whatever the variable holds where the package is
built), as the fleet's read the values it deploys (``fleet.fleet_warnings``), and name the
parameter to set when the value comes from a variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from squall.errors import SquallError
from squall.topology import registry
from squall.topology.model import Topology

#: Lambda's one writable folder.
TMP = "/tmp"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def as_deployed(path: Path, topology: Topology) -> Topology:
    """The topology with the values its template deploys by default: each ``${VAR:-default}``
    as its default (the parameter's default: an environment variable set where the package is
    built is not in the template), the other variables as they are now (a parameter without a
    default: the deploy asks for it); ``topology`` itself when that does not load."""
    from squall.deploy.template import LAMBDA_RESERVED, variable_defaults
    from squall.topology.loader import load
    from squall.topology.references import placeholder

    defaults = variable_defaults(path.read_text(encoding="utf-8"))
    env = {
        k: v for k, v in os.environ.items() if k in LAMBDA_RESERVED or defaults.get(k, None) is None
    }
    try:
        return load(path, env, secrets=placeholder)
    except SquallError:
        return topology


def lambda_path_warnings(topology: Topology, text: str = "") -> list[str]:
    """One warning per SQLite resource and per path a component writes (``writes_local_files``)
    that the function cannot write or cannot keep; ``text``: the topology file's, to name a
    value's variable (its template parameter), located when the topology has a locator."""
    out = []
    for name, res in topology.resources.items():
        scheme, _, database = res.url.partition(":///")
        database = database.split("?", 1)[0]
        if scheme.split("+", 1)[0] != "sqlite" or database in ("", ":memory:"):
            continue
        path = ("resources", name, "url")
        if _in_tmp(database):
            problem = (
                "in the execution environment's /tmp: each environment keeps its own, and its "
                "rows and state are lost when Lambda discards it"
            )
        else:
            problem = f"{_where(database)}: every init would stop"
        fix = "a PostgreSQL URL" + (" (or Redis)" if name in _state_resources(topology) else "")
        out.append(
            _located(
                topology,
                text,
                path,
                f"resource '{name}' is a SQLite file ({database}) {problem}; give it {fix}",
                hint=True,
            )
        )
    groups = {"bolt": ("bolts", topology.bolts), "sink": ("sinks", topology.sinks)}
    for kind, (key, configs) in groups.items():
        for i, cfg in enumerate(configs):
            if not registry.capabilities(kind, cfg).writes_local_files:
                continue
            for field in type(cfg).model_fields:
                value = getattr(cfg, field)
                if field in ("id", "type") or not isinstance(value, str) or not value:
                    continue
                if ":" in value:
                    continue  # a URL, not a path
                tmp = _in_tmp(value)
                if tmp:
                    problem = "in the execution environment's /tmp: lost when Lambda discards it"
                else:
                    problem = f"{_where(value)}: every init would stop"
                out.append(
                    _located(
                        topology,
                        text,
                        (key, i, field),
                        f"{kind} '{cfg.id}' writes {value} {problem}; use a durable sink "
                        "(dead letters: dead_letter_table, dead_letter_sqs, dead_letter_s3 or "
                        "dead_letter_kinesis)" + ("" if tmp else ", or a path under /tmp"),
                        hint=not tmp,
                    )
                )
    return out


def _in_tmp(path: str) -> bool:
    path = os.path.normpath(path)
    return path.startswith("/") and (path == TMP or path.startswith(TMP + "/"))


def _where(path: str) -> str:
    if not path.startswith("/"):
        return "inside topology/, read-only in Lambda (/var/task)"
    return "outside /tmp, read-only in Lambda"


def _state_resources(topology: Topology) -> set[str]:
    """The resources a component keeps state in (a ``store:`` option): Redis may serve them."""
    stores = (getattr(cfg, "store", None) for cfg in (*topology.bolts, *topology.sinks))
    return {s for s in stores if isinstance(s, str)}


def _located(
    topology: Topology,
    text: str,
    path: tuple[str | int, ...],
    message: str,
    *,
    hint: bool = False,
) -> str:
    """``file:line:col: path: message``; with ``hint``, the template parameter to set when the
    value is written with a ``${VAR}`` (the parameter's default is the value warned about)."""
    from squall.deploy.template import param_name

    loc = topology.locator
    if loc is None:
        return message
    line, _col = loc.where(path)
    if hint and text and line and tuple(path) in loc.variables:
        lines = text.splitlines()
        names = _VARIABLE.findall(lines[line - 1]) if line <= len(lines) else []
        if len(names) == 1:
            message += f" (the template's parameter {param_name(names[0])}, when you deploy)"
    return str(loc.problem(path, message))
