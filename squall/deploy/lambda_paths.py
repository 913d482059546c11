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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from squall.errors import SquallError
from squall.topology import registry
from squall.topology.model import Topology

#: Lambda's one writable folder.
TMP = "/tmp"
#: The topology's folder in the function (``package.TASK_ROOT``/topology): a relative path is its.
TOPOLOGY_ROOT = "/var/task/topology"


def as_deployed(path: Path, topology: Topology) -> Topology:
    """The topology with the values its template deploys by default: each ``${VAR:-default}``
    as its default (the parameter's default: an environment variable set where the package is
    built is not in the template), the other variables as they are now (a parameter without a
    default: the deploy asks for it); ``topology`` itself when that does not load. A variable
    with a default is set to it, as the function's environment is (its parameter's value): a
    ``${VAR}`` written elsewhere without one is that default too."""
    from squall.deploy.template import LAMBDA_RESERVED, variable_defaults
    from squall.topology.loader import load
    from squall.topology.references import placeholder

    defaults = variable_defaults(path.read_text(encoding="utf-8"))
    env = {
        k: v for k, v in os.environ.items() if k in LAMBDA_RESERVED or defaults.get(k, None) is None
    }
    env |= {k: d for k, d in defaults.items() if d is not None and k not in LAMBDA_RESERVED}
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
        database = sqlite_file(res.url)
        if database is None:
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
                hint="url",
            )
        )
    for kind, at, cfg, value in written_paths(topology):
        tmp = _in_tmp(value)
        if tmp:
            problem = "in the execution environment's /tmp: lost when Lambda discards it"
        else:
            problem = f"{_where(value)}: every init would stop"
        out.append(
            _located(
                topology,
                text,
                at,
                f"{kind} '{cfg.id}' writes {value} {problem}; use a durable sink "
                "(dead letters: dead_letter_table, dead_letter_sqs, dead_letter_s3 or "
                "dead_letter_kinesis)" + ("" if tmp else ", or a path under /tmp"),
                hint=None if tmp else "path",
            )
        )
    return out


def written_paths(topology: Topology) -> Iterator[tuple[str, tuple[str, int, str], Any, str]]:
    """(kind, option's place, config, path) of each file path a bolt or sink that writes local
    files (``writes_local_files``) is given: its text options, URLs left out (a file name may
    hold a ``:``, ``12:00.jsonl``). The Lambda build's and the fleet's warnings read them so."""
    groups = {"bolt": ("bolts", topology.bolts), "sink": ("sinks", topology.sinks)}
    for kind, (key, configs) in groups.items():
        for i, cfg in enumerate(configs):
            if not registry.capabilities(kind, cfg).writes_local_files:
                continue
            for field in type(cfg).model_fields:
                value = getattr(cfg, field)
                if field in ("id", "type") or not isinstance(value, str) or not value:
                    continue
                if "://" not in value:  # a URL is not a path
                    yield kind, (key, i, field), cfg, value


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL opens (``sqlite:///out/w.db`` → ``out/w.db``; the scheme in any case,
    with a driver, ``%2F`` read as SQLAlchemy reads it), None for another URL or an in-memory
    database. The Lambda build's and the fleet's warnings (``fleet.fleet_warnings``) read it so."""
    scheme, _, database = url.partition(":///")
    database = unquote(database.split("?", 1)[0])
    if scheme.split("+", 1)[0].lower() != "sqlite" or database in ("", ":memory:"):
        return None
    return database


def _in_lambda(path: str) -> str:
    """Where ``path`` is in the function: a relative one in the topology's folder, resolved
    (``../../tmp/x`` is /tmp/x there); ``~`` as it is (the home folder)."""
    return path if path.startswith("~") else os.path.normpath(os.path.join(TOPOLOGY_ROOT, path))


def _in_tmp(path: str) -> bool:
    path = _in_lambda(path)
    return path == TMP or path.startswith(TMP + "/")


def _where(path: str) -> str:
    if path.startswith("~"):  # expanded, as every path squall writes
        return "in the home folder, outside /tmp, read-only in Lambda"
    if not path.startswith("/"):
        there = _in_lambda(path)
        if there != TOPOLOGY_ROOT and not there.startswith(TOPOLOGY_ROOT + "/"):
            return f"outside /tmp ({there} in Lambda), read-only"
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
    hint: str | None = None,
) -> str:
    """``file:line:col: path: message``; with ``hint``, the template parameter to set when the
    value is written with a ``${VAR}`` (the parameter's default is the value warned about):
    ``"path"``, any of the value's; ``"url"``, one that starts it (another cannot make the URL
    PostgreSQL's: ``sqlite:///${DIR:-out}/w.db`` is the topology's to change)."""
    loc = topology.locator
    if loc is None:
        return message
    if hint and text and tuple(path) in loc.variables:
        message += _parameters(text, loc.where(path), whole_url=hint == "url")
    return str(loc.problem(path, message))


def _parameters(text: str, at: tuple[int, int], *, whole_url: bool = False) -> str:
    """`` (the template's parameter X, when you deploy)``: the parameters of the variables of the
    value at ``at`` (its own, not its line's: another value on the line may hold another; a
    folded value's are on the next lines), none for one Lambda sets itself (no parameter)."""
    import yaml

    from squall.deploy.template import LAMBDA_RESERVED, param_name
    from squall.topology.yamlsource import variable_marks

    try:
        names = variable_marks(text).get(at, [])
    except yaml.YAMLError:
        return ""
    if whole_url:
        names = [(v, start) for v, start in names if start == 0]
    params = [param_name(v) for v in dict.fromkeys(v for v, _ in names) if v not in LAMBDA_RESERVED]
    if not params:
        return ""
    if len(params) == 1:
        return f" (the template's parameter {params[0]}, when you deploy)"
    return (
        f" (the template's parameters {', '.join(params[:-1])} and {params[-1]}, when you deploy)"
    )
