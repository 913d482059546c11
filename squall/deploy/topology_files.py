"""What of the topology's folder ships (in a Lambda zip or a fleet folder), checked before building.

The folder is copied whole, less :data:`IGNORED` (outputs of local runs, caches, local tooling).
Two things would make that copy differ from what ran locally without a word, so they are refused
with their place before anything is downloaded:

- a file the topology names by a relative path (a schema, a geo database, a service-account file)
  that is outside the folder (``../shared/event.json``) or left out by :data:`IGNORED`
  (``lookups.db``, ``build/…``): the package would build and the function fail at init;
- a symbolic link that points nowhere, or to a folder that contains it (a loop the copy would
  follow forty levels deep). Other links are followed: the copy holds what they point to.

Records are never shipped (:func:`left_out`): the files a local run's sinks wrote in the folder
(a dead-letter file), and the spout's input file (``Capabilities.input_files``), which a deployed
topology never reads: its trigger, the KCL or the HTTP request delivers the records instead.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squall.errors import Problem, SquallError, TopologyError
from squall.sinks.dead_letter_index import SUFFIXES as INDEX_SUFFIXES
from squall.topology.model import Topology

#: Skipped when copying the topology directory: outputs of local runs, caches, local tooling.
IGNORED = (
    "out",
    "build",
    "dist",
    "__pycache__",
    "*.db",
    "*.db-journal",
    "*.pyc",
    "*.zip",
    ".*",
    "tests",
    "venv",
    "node_modules",
    "*.kcl.properties",
)


#: Files a sink writes beside the one it is given (``dead_letter``'s key index), left out with it.
COMPANIONS = INDEX_SUFFIXES


def ignored_by(rel: str) -> str | None:
    """The pattern of :data:`IGNORED` that leaves ``rel`` (a path in the folder) out, if any."""
    for name in Path(rel).parts:
        for pattern in IGNORED:
            if fnmatch.fnmatch(name, pattern):
                return pattern
    return None


def _strings(value: Any, path: tuple) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def _named_files(topology: Topology, text: str) -> Iterator[tuple[bool, tuple, str, Any, str]]:
    """(written at run time?, YAML path, value, locator, component id) of each existing file a
    bolt or sink names by a relative path."""
    from squall.topology import registry
    from squall.topology.yamlsource import read_yaml

    data, loc, _ = read_yaml(text, topology.file, os.environ)
    if not isinstance(data, dict):
        return
    root = Path(topology.base_dir)
    for key, kind, configs in (
        ("bolts", "bolt", topology.bolts),
        ("sinks", "sink", topology.sinks),
    ):
        items = data.get(key)
        items = items if isinstance(items, list) else []
        for i, (item, cfg) in enumerate(zip(items, configs, strict=False)):
            written = registry.capabilities(kind, cfg).writes_local_files
            for path, value in _strings(item, (key, i)):
                if not value or "\n" in value or len(value) > 1024 or ":" in value:
                    continue  # inline text, URLs, module:Class
                if Path(value).is_absolute() or value.startswith("~"):
                    continue
                try:
                    # A dead-letter file deleted by hand may leave its index (its companions).
                    if (root / value).is_file() or (
                        written and any((root / (value + s)).is_file() for s in COMPANIONS)
                    ):
                        yield written, path, value, loc, f"{kind} '{cfg.id}'"
                except OSError:  # not a name the file system takes
                    continue


@dataclass(frozen=True)
class LeftOut:
    """A file of the topology's folder that packages leave out, and why."""

    #: Relative to the topology's folder.
    path: str
    why: str


def left_out(topology: Topology, text: str) -> list[LeftOut]:
    """Files of the folder that hold records, not code, so are never shipped: those a local run's
    sinks wrote (a dead-letter file; Lambda could not write them there anyway) and the spout's
    input (``Capabilities.input_files``) unless a bolt or sink reads it too."""
    from squall.topology import registry

    root = Path(topology.base_dir)
    found: dict[str, LeftOut] = {}
    read_by_others = set()
    for written, _, value, _, component in _named_files(topology, text):
        rel = os.path.normpath(value)
        if not written:
            read_by_others.add(rel)
        elif not rel.startswith(".." + os.sep) and ignored_by(rel) is None:
            if (root / rel).is_file():
                found.setdefault(rel, LeftOut(rel, f"written by {component} in a local run"))
            for suffix in COMPANIONS:  # a dead-letter file's key index (and SQLite's own files)
                if (root / (rel + suffix)).is_file():
                    found.setdefault(
                        rel + suffix,
                        LeftOut(rel + suffix, f"written by {component} in a local run"),
                    )
    spout = topology.spout
    for value in registry.capabilities("spout", spout).input_files:
        path = Path(value).expanduser()
        rel = os.path.relpath(path if path.is_absolute() else root / path, root)
        if rel.startswith(".." + os.sep) or ignored_by(rel) is not None or rel in read_by_others:
            continue  # not shipped anyway, or needed deployed
        if not (root / rel).is_file():
            continue
        found.setdefault(
            rel,
            LeftOut(
                rel,
                f"input of the {spout.type} spout '{spout.id}', which does not run deployed "
                "(the trigger delivers the records)",
            ),
        )
    return sorted(found.values(), key=lambda item: item.path)


def left_out_paths(topology: Topology, text: str) -> set[str]:
    """:func:`left_out` as normalised absolute paths, as :func:`copy_folder` takes them."""
    root = Path(topology.base_dir)
    return {os.path.normpath(root / item.path) for item in left_out(topology, text)}


def referenced_files_left_out(topology: Topology, text: str) -> list[Problem]:
    """Files the topology's components read by a relative path that the copy would not hold."""
    root = Path(topology.base_dir)
    problems = []
    for written, path, value, loc, _ in _named_files(topology, text):
        if written:
            continue  # written at run time (under /tmp in Lambda), not shipped
        rel = os.path.normpath(value)
        if rel == ".." or rel.startswith(".." + os.sep):
            why = "is outside the topology's folder"
        elif (pattern := ignored_by(rel)) is not None:
            why = f"is left out of packages (it matches '{pattern}')"
        else:
            continue
        problems.append(
            loc.problem(
                path,
                f"'{value}' {why}, so the package would not hold it and the function "
                f"would not find it: keep the files the topology reads in {root}",
            )
        )
    return problems


def check_links(folder: Path) -> None:
    """Refuse a link that points nowhere or to a folder containing it (the copy follows links)."""

    def walk(directory: Path, ancestors: tuple[str, ...]) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = Path(entry.path).relative_to(folder)
            if ignored_by(str(rel)) is not None:
                continue
            if entry.is_symlink() and not os.path.exists(entry.path):
                raise SquallError(
                    f"{rel} in {folder} is a link to {os.readlink(entry.path)}, which does not "
                    "exist: the package would not hold it; remove the link or restore its target"
                )
            if entry.is_dir():
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    raise SquallError(
                        f"{rel} in {folder} is a link to a folder that contains it "
                        f"({os.readlink(entry.path)}): the package would copy it into itself "
                        "again and again; remove the link"
                    )
                walk(Path(entry.path), (*ancestors, real))

    walk(folder, (os.path.realpath(folder),))


def check_folder(topology: Topology, text: str) -> None:
    """Both checks of this module; ``SquallError`` (a located ``TopologyError`` for files)."""
    problems = referenced_files_left_out(topology, text)
    if problems:
        raise TopologyError(problems)
    check_links(Path(topology.base_dir))


def copy_folder(source: Path, dest: Path, leave_out: set[str] | None = None) -> None:
    """The topology's folder as it ships (after :func:`check_folder`), less ``leave_out``
    (paths as :func:`left_out_paths` gives them)."""
    patterns = shutil.ignore_patterns(*IGNORED)
    leave_out = leave_out or set()

    def ignore(folder: str, names: list[str]) -> set[str]:
        left = {n for n in names if os.path.normpath(os.path.join(folder, n)) in leave_out}
        return set(patterns(folder, names)) | left

    shutil.copytree(source, dest, ignore=ignore)
