"""Safe YAML reading that keeps every node's line and column, with ``${VAR}`` substitution.

The loader composes the YAML node tree (never constructing arbitrary Python objects), converts it
to plain data, and records where each value and each mapping key sits, so that every later error
(pydantic, registry, graph) can name ``file:line:column`` and the path in the document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from squall.errors import Problem

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_path(path: Path_) -> str:
    """``("bolts", 2, "type")`` → ``bolts[2].type``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Locator:
    """Where each path of a document sits in its file (1-based line and column)."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The mark of ``path`` or of its nearest located ancestor."""
        p = tuple(path)
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (0, 0)
            p = p[:-1]

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, format_path(path), message)


def read_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Any, Locator, list[Problem]]:
    """Parse ``text`` into plain data; returns the data, its locator and the problems found."""
    loc = Locator(file)
    problems: list[Problem] = []
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or str(exc)
        if exc.context:
            what = f"{what} ({exc.context})"
        problems.append(Problem(file, line, col, "", f"YAML syntax error: {what}"))
        return None, loc, problems
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        problems.append(Problem(file, 0, 0, "", f"YAML error: {exc}"))
        return None, loc, problems
    finally:
        loader.dispose()
    if node is None:
        problems.append(Problem(file, 1, 1, "", "the file is empty"))
        return None, loc, problems
    data = _convert(node, (), loc, env, problems, yaml.SafeLoader(""))
    return data, loc, problems


def _convert(node: yaml.Node, path: Path_, loc: Locator, env: Mapping[str, str], problems: list[Problem],
             ctor: yaml.SafeLoader) -> Any:
    loc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            kpath = (*path, key)
            if key in out:
                problems.append(Problem(loc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        format_path(kpath), "duplicate key"))
                continue
            loc.keys[kpath] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, kpath, loc, env, problems, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), loc, env, problems, ctor) for i, item in enumerate(node.value)]
    # scalar
    value = node.value
    if "$" in value and node.tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                                     "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"):
        substituted = _substitute(value, path, node, loc, env, problems)
        if substituted != value:
            if node.style is None:  # plain scalar: `batch_size: ${N:-500}` becomes an int
                tag = ctor.resolve(yaml.ScalarNode, substituted, (True, False))
            else:
                tag = "tag:yaml.org,2002:str"
            node = yaml.ScalarNode(tag, substituted, node.start_mark, node.end_mark, node.style)
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        problems.append(loc.problem(path, f"cannot read value: {exc.problem}"))
        return None


def _substitute(value: str, path: Path_, node: yaml.Node, loc: Locator, env: Mapping[str, str],
                problems: list[Problem]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(loc.problem(
            path, f"environment variable '{name}' is not set (write ${{{name}:-default}} to give a default)"))
        return ""

    return _VAR.sub(repl, value)
