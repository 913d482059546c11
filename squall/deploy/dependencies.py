"""Which of squall's dependencies a Lambda zip leaves out: those only some topologies use
(``OPTIONAL``), when the topology's components and resources do not declare them and nothing the
user asked for needs them.

A component declares what it imports when it runs (``Component.packages``: the device bolt
ua-parser, a Parquet sink pyarrow, a lookup's SQL source SQLAlchemy); a resource that may be
Redis at run time declares redis-py. The packager then deletes, from the folder pip installed
for Lambda, the optional distributions nobody declared and what they alone require — keeping
what ``--with``, ``--requirements`` and plugins name (and what those require), every
distribution squall does not require, and whatever the code beside the topology imports.

Size (~680 lines): one question — what the function imports — read from the topology (options,
resources, variables), from the code beside it (imports, its asks for SQLAlchemy's engine) and
from the installed distributions' metadata, then the pruning those answers allow.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import types
import typing
from collections import defaultdict
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from squall.topology.model import Topology

#: squall's dependencies that only some topologies use: the import name a component declares
#: (``Component.packages``) or a Redis resource needs → the distributions that provide it. A zip
#: holds one only when the topology declares it, or when you ask for it: ``--with``,
#: ``--requirements``, a plugin's own requirements, or an import in the code beside the topology.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "sqlalchemy": ("sqlalchemy",),  # lookup's SQL source, window stores, attached SQLite schemas
    "redis": ("redis", "hiredis"),  # a Redis resource
    "pyarrow": ("pyarrow",),  # the s3 sink's Parquet
    "maxminddb": ("maxminddb",),  # the geo bolt
    "_maxminddb_geolite2": ("maxminddb-geolite2",),  # a geo bolt without database:
    "ua_parser": ("ua-parser",),  # the device bolt, and the four below
    "ua_parser_builtins": ("ua-parser-builtins",),
    "ua_parser_rs": ("ua-parser-rs",),
    "re2": ("google-re2",),  # the device bolt's engine: re2
    "crawleruseragents": ("crawler-user-agents",),
    "ahocorasick": ("pyahocorasick",),
    "rich": ("rich",),  # the CLI's console and options: no function imports them
    "click": ("click",),
}


def needed_packages(topology: Topology, text: str) -> frozenset[str]:
    """Import names (``OPTIONAL``'s) the function imports: what its bolts and sinks declare
    (``Component.packages``; the spout does not run in Lambda), and what a resource may need at
    run time — ``redis`` when its URL is Redis, ``sqlalchemy`` when it is a SQL URL that stays
    on SQLAlchemy's engine.

    A value taken from a variable (``${VAR}``, ``${VAR:-default}``, a secret reference) may be
    another one when deployed: an option from a variable counts with every value it may take
    (``variable_configs``), a component whose ``type`` is a variable keeps every module a
    function may import, and a resource whose URL or options come from a variable keeps redis-py
    unless an option taking only SQL names it, and SQLAlchemy unless one taking only Redis does
    (the load refuses the other kind there)."""
    from squall.topology import registry
    from squall.topology.loader import resource_kinds
    from squall.topology.resource_config import REDIS_SCHEMES, SQL_SCHEMES
    from squall.topology.resources import on_plain_driver

    variables = _variable_paths(topology, text)
    empty = _empty_paths(topology)
    needs: set[str] = set()
    kinds: dict[str, set[str]] = defaultdict(set)
    may_be_sql = any(
        resource.scheme in SQL_SCHEMES or any(p[:2] == ("resources", name) for p in variables)
        for name, resource in topology.resources.items()
    )
    for key, kind, configs in (
        ("bolts", "bolt", topology.bolts),
        ("sinks", "sink", topology.sinks),
    ):
        for i, cfg in enumerate(configs):
            if (key, i, "type") in variables:  # any component when deployed
                needs |= set(OPTIONAL) - CLI_ONLY
            cls = registry.resolve(kind, cfg.type)
            for variant in variable_configs(cfg, (key, i), variables, empty):
                needs |= cls.packages(variant)
            if may_be_sql and joins_on_sqlalchemy(cls):
                needs.add("sqlalchemy")  # the batch's transaction is then SQLAlchemy's
            for _, name, k in resource_kinds(cfg, ()):
                kinds[name].add(k.kind)
    for name, resource in topology.resources.items():
        from_variable = any(p[:2] == ("resources", name) for p in variables)
        if resource.scheme in REDIS_SCHEMES or (from_variable and "sql" not in kinds[name]):
            needs.add("redis")
        if resource.scheme in SQL_SCHEMES and not on_plain_driver(resource):
            needs.add("sqlalchemy")  # its load (URL check) and every engine on it are SQLAlchemy's
        elif from_variable and "redis" not in kinds[name]:
            needs.add("sqlalchemy")  # deployed with a query string, `:memory:`, several hosts…
    return frozenset(needs)


def declared_by(topology: Topology, text: str = "") -> dict[str, list[str]]:
    """Each module the bolts and sinks declare (``packages``, with their options' values from
    variables as in ``needed_packages``) → those that do, as a warning names them: ``sink
    'lake' (s3)``, ``bolt 'app' (lookup, an option from a variable)``."""
    from squall.topology import registry

    variables = _variable_paths(topology, text)
    empty = _empty_paths(topology)
    out: dict[str, list[str]] = defaultdict(list)
    for key, kind, configs in (
        ("bolts", "bolt", topology.bolts),
        ("sinks", "sink", topology.sinks),
    ):
        for i, cfg in enumerate(configs):
            cls = registry.resolve(kind, cfg.type)
            written = cls.packages(cfg)
            for name in set().union(
                *(cls.packages(v) for v in variable_configs(cfg, (key, i), variables, empty))
            ):
                why = "" if name in written else ", as an option from a variable may be deployed"
                out[name].append(f"{kind} '{cfg.id}' ({cfg.type}{why})")
    return dict(out)


def joins_on_sqlalchemy(cls: type) -> bool:
    """Whether a component may write in the batch's SQL transaction (a sink's
    ``transaction_resource``, a stateful bolt's ``state_resource``) without ``driver_sql``: the
    engine then opens that transaction on SQLAlchemy's engine (``WriteContext.connection``), for
    every component in it — a sink of yours writing with ``exec_driver_sql`` alone imports no
    SQLAlchemy itself."""
    from squall.bolts.base import Bolt
    from squall.sinks.base import Sink

    if getattr(cls, "driver_sql", False):
        return False
    if issubclass(cls, Sink):
        return cls.transaction_resource is not Sink.transaction_resource
    if issubclass(cls, Bolt):
        return cls.state_resource is not Bolt.state_resource
    return False


def resource_uses(topology: Topology) -> dict[str, set[str]]:
    """Resource name → the kinds (``sql``, ``redis``) of the options of the spout, bolts and
    sinks that name it (options taking either kind, such as a store, are left out)."""
    from squall.topology.loader import resource_kinds

    uses: dict[str, set[str]] = defaultdict(set)
    for cfg in (topology.spout, *topology.bolts, *topology.sinks):
        for _, name, k in resource_kinds(cfg, ()):
            uses[name].add(k.kind)
    return uses


#: Modules components declare that come with an extra of squall only (the others they declare
#: are its requirements): import name → the extra that installs it.
EXTRA_OF = {
    "pyarrow": "s3",
    "httpx": "http",
    "google.auth": "push",
    "datasketches": "windows",
    "re2": "re2",
}
#: Their distributions, where the name is not the import name.
DISTRIBUTION_OF = {"google.auth": "google-auth", "re2": "google-re2"}


#: Modules only the CLI imports: no function needs them, whatever its topology.
CLI_ONLY = frozenset({"rich", "click"})
#: At most this many variants of one component's config are asked what they declare (the
#: values of its options from variables combined; beyond, one option varied at a time).
_MAX_VARIANTS = 256


def _variable_paths(topology: Topology, text: str) -> set[tuple[str | int, ...]]:
    """The document paths whose values hold a variable or a secret reference: as the loader
    recorded them (``Locator.variables``); a topology built without one, from ``text``'s
    resources (each a whole, as before)."""
    if topology.locator is not None:
        return set(topology.locator.variables)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    resources = raw.get("resources") if isinstance(raw, dict) else None
    if not isinstance(resources, dict):
        return {("resources", name) for name in topology.resources}  # unknown: any may be
    return {("resources", n) for n, r in resources.items() if "${" in str(r)}


def _empty_paths(topology: Topology) -> set[tuple[str | int, ...]] | None:
    """The paths of values from variables that may be empty (or null) when deployed
    (``Locator.may_be_empty``); ``None`` when unknown (a topology built without a locator)."""
    return set(topology.locator.may_be_empty) if topology.locator is not None else None


def _alternatives(annotation: Any, current: Any, empty: bool = True) -> list[Any]:
    """Values an option of this type may take that may change what a component declares: each
    of a ``Literal``'s, both booleans, and — when its value ``empty``-ies when deployed (all of
    it a ``${VAR}``, ``${VAR:-}`` or a secret) — ``None`` when it is optional and empty text;
    some text when it is text that is empty now (``"${GEO_DB:-}"``); other values are taken as
    the current one. ``"/opt/${GEO_FILE:-city.mmdb}"`` is never empty: a geo bolt's database
    there does not keep the bundled GeoLite2."""
    out: list[Any] = []
    todo = [annotation]
    while todo:
        t = todo.pop()
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            todo.append(typing.get_args(t)[0])
        elif origin is typing.Literal:
            out += typing.get_args(t)
        elif origin in (typing.Union, types.UnionType):
            todo += typing.get_args(t)
        elif t is type(None):
            out += [None] if empty else []
        elif t is bool:
            out += [True, False]
        elif t is str and not current:
            out.append("variable")
        elif t is str and empty:
            out.append("")
    return [current, *(v for v in out if v != current or type(v) is not type(current))]


def _members(annotation: Any) -> list[type]:
    """The pydantic models a (union, ``Annotated``) annotation names: a lookup's sources."""
    from pydantic import BaseModel

    out, todo = [], [annotation]
    while todo:
        t = todo.pop()
        if typing.get_origin(t) in (typing.Annotated, typing.Union, types.UnionType):
            todo += (
                typing.get_args(t)[:1]
                if typing.get_origin(t) is typing.Annotated
                else typing.get_args(t)
            )
        elif isinstance(t, type) and issubclass(t, BaseModel):
            out.append(t)
    return out


def variable_configs(
    cfg: Any, path: tuple[str | int, ...], variables: set, empty: set | None = None
) -> list[Any]:
    """``cfg``, and the configs it may be when deployed: each of its options whose value comes
    from a variable given every value of ``_alternatives`` (``empty``: the paths of those that
    may be empty, ``None`` for any), and each whose value is a block with a variable inside
    (a lookup's ``source: {type: "${SOURCE:-sql}"}``) its own variants and every other model
    the option takes (not validated: only ``packages`` reads them)."""
    from pydantic import BaseModel

    fields = type(cfg).model_fields
    varied = []
    for name, f in fields.items():
        here = (*path, f.alias or name)
        current = getattr(cfg, name)
        if here in variables:
            values = _alternatives(f.annotation, current, empty is None or here in empty)
        elif isinstance(current, BaseModel) and any(p[: len(here)] == here for p in variables):
            # its discriminator (a Literal: `type`) from a variable: any model the option takes
            chosen = any(
                (*here, k) in variables and typing.get_origin(sub.annotation) is typing.Literal
                for k, sub in type(current).model_fields.items()
            )
            values = variable_configs(current, here, variables, empty) + [
                model.model_construct(
                    **{k: v for k, v in current if k in model.model_fields and k != "type"}
                )
                for model in (_members(f.annotation) if chosen else ())
                if model is not type(current)
            ]
        elif any(p[: len(here)] == here for p in variables):  # a list, a mapping: as it is
            values = _alternatives(f.annotation, current, False)
        else:
            continue
        if len(values) > 1:
            varied.append((name, values))
    if not varied:
        return [cfg]
    combos = 1
    for _, values in varied:
        combos *= len(values)
    if combos <= _MAX_VARIANTS:
        names = [name for name, _ in varied]
        return [
            cfg.model_copy(update=dict(zip(names, pick, strict=True)))
            for pick in itertools.product(*(values for _, values in varied))
        ]
    return [cfg, *(cfg.model_copy(update={n: v}) for n, values in varied for v in values)]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parsed(requirement: str):  # -> packaging.requirements.Requirement | None
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(requirement)
    except InvalidRequirement:  # a path, a URL: found as a distribution squall does not require
        return None


def _edges(dist: metadata.Distribution, extras: set[str]) -> list[tuple[str, set[str]]]:
    """The distributions ``dist`` requires with ``extras``: every requirement whatever its
    environment markers (the build's Python is not the target's: keeping one too many is safe),
    except those of extras not asked for."""
    out = []
    for text in dist.requires or ():
        req = _parsed(text)
        if req is None:
            continue
        wants = set(re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", str(req.marker or "")))
        if wants and not {_canonical(e) for e in wants} & extras:
            continue
        out.append((_canonical(req.name), {_canonical(e) for e in req.extras}))
    return out


def _closure(
    installed: dict[str, metadata.Distribution],
    roots: list[tuple[str, set[str]]],
    cut: frozenset[str] = frozenset(),
) -> set[str]:
    """The installed distributions ``roots`` require, transitively; squall's own requirements
    named in ``cut`` are not followed, nor an extra of one of them that adds only distributions
    in ``cut`` (``ua-parser[regex]``'s ua-parser-rs: a topology whose device bolt runs on
    google-re2 does not declare it)."""
    extras_of: dict[str, set[str]] = defaultdict(set)
    kept: set[str] = set()
    stack = list(roots)
    while stack:
        name, extras = stack.pop()
        if name not in installed or (name in kept and extras <= extras_of[name]):
            continue
        kept.add(name)
        extras_of[name] |= extras
        for dep, dep_extras in _edges(installed[name], extras_of[name]):
            if name == "squall":
                if dep in cut:
                    continue
                dep_extras = {e for e in dep_extras if not _adds_only(installed, dep, e, cut)}
            stack.append((dep, dep_extras))
    return kept


def _adds_only(
    installed: dict[str, metadata.Distribution], name: str, extra: str, cut: frozenset[str]
) -> bool:
    """Whether ``extra`` of the installed ``name`` adds requirements, all of them in ``cut``."""
    if name not in installed:
        return False
    dist = installed[name]
    added = {d for d, _ in _edges(dist, {extra})} - {d for d, _ in _edges(dist, set())}
    return bool(added) and added <= cut


def _import_names(dist: metadata.Distribution) -> set[str]:
    """The top-level modules a distribution installs (``yaml``, ``_yaml``…), from its RECORD."""
    names = set()
    for f in dist.files or ():
        top = f.parts[0]
        if len(f.parts) == 1 and not top.endswith((".py", ".so", ".pyd")):
            continue
        if not top.endswith((".dist-info", ".data", ".libs")) and top not in ("..", "bin"):
            names.add(top.split(".", 1)[0])
    return names


def _imports(files: list[Path]) -> set[str]:
    """The top-level modules Python files import (absolute imports; a file that does not parse
    is skipped), and the optional ones squall's modules they import import at module level;
    ``sqlalchemy`` when the files — one body of code: the project beside the topology, or one
    distribution — import squall and one of them asks a resource for SQLAlchemy's engine
    (``_asks_for_sqlalchemy``: a helper module of yours that is handed ``resources`` need not
    import squall itself)."""
    dotted: set[str] = set()
    engines = False
    for path in files:
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        bound: dict[str, str] = {}  # a name an import binds → the dotted name it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                dotted.update(alias.name for alias in node.names)
                for alias in node.names:
                    first = alias.name.split(".", 1)[0]
                    bound[alias.asname or first] = alias.name if alias.asname else first
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                dotted.add(node.module)
                dotted.update(f"{node.module}.{alias.name}" for alias in node.names)
                bound.update((a.asname or a.name, f"{node.module}.{a.name}") for a in node.names)
        dotted.update(_squall_attributes(tree, bound))
        engines = engines or _asks_for_sqlalchemy(tree)
    names = {name.split(".", 1)[0] for name in dotted}
    if "squall" not in names:
        engines = False  # not squall's resources
    return names | squall_module_needs(dotted) | ({"sqlalchemy"} if engines else set())


def _squall_attributes(tree: ast.AST, bound: dict[str, str]) -> set[str]:
    """The dotted names of squall's that code reaches through a module it imported
    (``from squall.enrichment import geo`` … ``geo.bundled_database()``): a function named so
    counts with its body's imports as one imported by name does (``_function_imports``)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in bound:
            name = ".".join([bound[value.id], *reversed(chain)])
            if name.startswith("squall."):
                out.add(name)
    return out


def _asks_for_sqlalchemy(tree: ast.AST) -> bool:
    """Whether code names ``….sql`` (``Resources.sql``: SQLAlchemy's engine of a SQL resource;
    called, or taken as a value: ``engine_of = resources.sql``), ``getattr(…, "sql")``, or
    ``….open_store`` other than in a call with ``driver_sql=True`` (which opens the SQL side on
    ``Resources.sql``): SQLAlchemy is imported then, though the code names it nowhere.

    A hint, read from the source: it cannot see through every indirection, and another
    object's ``.sql`` (``duckdb.sql(…)``) counts too (a few MiB of SQLAlchemy kept). A
    component of yours declares it for sure: ``packages(config)`` returning ``{"sqlalchemy"}``
    (or ``squall package --with sqlalchemy``)."""
    plain_stores: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "open_store" and any(
                k.arg == "driver_sql"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            ):
                plain_stores.add(id(node.func))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr == "sql" or (node.attr == "open_store" and id(node) not in plain_stores):
                return True
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in ("sql", "open_store")
        ):
            return True
    return False


def _module_level_imports(tree: ast.Module, package: str) -> set[str]:
    """The dotted modules a module imports when it is imported: its statements, class bodies and
    ``if``/``try``/``with`` blocks, not its functions' bodies nor ``if TYPE_CHECKING:``; ``from
    a import b`` names both ``a`` and ``a.b`` (b may be a submodule)."""
    names: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    stack.append(child)
                elif isinstance(child, ast.excepthandler):
                    stack += child.body
    return names


def squall_module_needs(modules: set[str]) -> set[str]:
    """The optional modules (``OPTIONAL``'s) that importing squall's ``modules`` (dotted names;
    others are ignored) imports at module level, through squall's modules in turn: code that
    reuses ``squall.bolts.lookup_sources`` imports SQLAlchemy and redis-py with it. A function
    of squall's that ``modules`` name (``squall.enrichment.geo.bundled_database``) counts with
    what its body imports (``_function_imports``); those squall's modules import by name do
    not (they may never call them)."""
    import squall

    root = Path(squall.__file__).parent
    needs: set[str] = set()
    seen: set[str] = set()
    todo = [m for m in modules if m == "squall" or m.startswith("squall.")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages run first
        rel = Path(*parts[1:])
        found = False
        for path, package in ((root / rel / "__init__.py", name), (root / f"{rel}.py", "")):
            tree = _parsed_file(path)
            if tree is None:
                continue
            found = True
            for imported in _module_level_imports(tree, package or name.rpartition(".")[0]):
                top = imported.split(".", 1)[0]
                if top == "squall":
                    todo.append(imported)
                elif top in OPTIONAL:
                    needs.add(top)
        if not found and len(parts) > 2 and name in modules:  # your code's, not squall's:
            todo += _function_imports(root, parts, needs)  # `import bundled_database`, called
    return needs


def _parsed_file(path: Path) -> ast.Module | None:
    if not path.is_file():
        return None
    try:
        return ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return None


def _function_imports(root: Path, parts: list[str], needs: set[str]) -> list[str]:
    """For ``squall.….module.function``, a top-level function of that module: what its body
    imports when called (``bundled_database`` imports the GeoLite2 package) — the optional
    modules added to ``needs``, squall's returned. A class's methods are not read (a base
    class's lazy imports are its components' to declare)."""
    module = Path(*parts[1:-1])
    for path, package in (
        (root / module / "__init__.py", ".".join(parts[:-1])),
        (root / f"{module}.py", ".".join(parts[:-2])),
    ):
        tree = _parsed_file(path)
        for node in tree.body if tree is not None else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == parts[-1]:
                inner = ast.Module(
                    body=[ast.If(ast.Constant(True), node.body, [])], type_ignores=[]
                )
                out = []
                for imported in _module_level_imports(inner, package):
                    top = imported.split(".", 1)[0]
                    if top == "squall":
                        out.append(imported)
                    elif top in OPTIONAL:
                        needs.add(top)
                return out
    return []


def local_code(topology: Topology, folder: Path) -> list[Path]:
    """The Python files beside the topology that its function imports: the modules of its
    ``module:Class`` types found in ``folder``, and the modules of the folder those import, in
    turn (a script beside it that no type names, such as a table's setup, is not)."""
    files: list[Path] = []
    seen: set[str] = set()
    todo = [
        cfg.type.split(":", 1)[0].split(".", 1)[0]
        for cfg in (topology.spout, *topology.bolts, *topology.sinks)
        if ":" in cfg.type
    ]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found = [folder / f"{name}.py"] if (folder / f"{name}.py").is_file() else []
        if (folder / name).is_dir():
            package = folder / name
            found += sorted(_package_files(package))
        files += found
        todo += sorted(_imports(found))
    return files


def _package_files(package: Path) -> Iterator[Path]:
    """The ``.py`` files of a package folder the function may run (not ``_not_run``), its
    left-out folders not walked: a ``node_modules`` beside the code is not read file by file."""
    for top, dirs, names in os.walk(package):
        rel = Path(top).relative_to(package)
        dirs[:] = sorted(d for d in dirs if not _not_run(rel / d / "x.py"))
        yield from (Path(top) / n for n in names if n.endswith(".py") and not _not_run(rel / n))


def _not_run(path: Path) -> bool:
    """A file of a package folder (``path``: inside it) the function does not run: its tests
    (a ``tests``/``test`` folder, ``test_*.py``, ``*_test.py``, ``conftest.py``), or anything in
    a hidden folder or an installed environment (``.venv``, ``site-packages``), or a folder the
    package leaves out (``topology_files.IGNORED``: ``node_modules``, ``build``, ``venv``…) —
    their imports, and asks for SQLAlchemy's engine, would keep what the function never
    imports."""
    from squall.deploy.topology_files import ignored_by

    name = path.name
    return (
        ignored_by(path.parent.as_posix()) is not None
        or name == "conftest.py"
        or name.startswith("test_")
        or name.endswith("_test.py")
        or any(
            p in ("tests", "test", "site-packages") or p.startswith(".") for p in path.parts[:-1]
        )
    )


def prune_unused(
    deps: Path,
    needs: frozenset[str],
    *,
    extras: set[str],
    asked: list[str],
    code: list[Path],
) -> list[str]:
    """Delete from ``deps`` the distributions of ``OPTIONAL`` the function does not use, and
    what they alone require; the names of those deleted.

    Kept whatever the topology declares (``needs``): what squall requires with ``extras``
    besides ``OPTIONAL``; what ``asked`` names (``--with``, ``--requirements`` lines, plugins)
    and every installed distribution squall does not require (a requirement given as a path),
    with what they require; and the distributions of the modules that code imports — the
    topology's own modules (``code``: ``local_code``) and those distributions' files."""
    installed = {
        _canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(deps)])
    }
    if "squall" not in installed:
        return []
    cut = frozenset(_canonical(n) for dists in OPTIONAL.values() for n in dists)
    wanted = {_canonical(n) for name in needs for n in OPTIONAL.get(name, ())}
    every_extra = installed["squall"].metadata.get_all("Provides-Extra") or []
    squall_side = _closure(installed, [("squall", {_canonical(e) for e in every_extra})])
    users = [n for n in installed if n not in squall_side]
    roots = [(n, set()) for n in users]
    for text in asked:
        req = _parsed(text)
        if req is not None:
            roots.append((_canonical(req.name), {_canonical(e) for e in req.extras}))
    imported = _imports(code)  # the project's code, then each distribution's: one body each
    for n in users:
        files = installed[n].files or ()
        imported |= _imports(
            [Path(installed[n].locate_file(f)) for f in files if f.suffix == ".py"]
        )
    for name, dist in installed.items():
        if name in cut and _import_names(dist) & imported:
            roots.append((name, set()))
    roots += [("squall", {_canonical(e) for e in extras}), *((n, set()) for n in wanted)]
    kept = _closure(installed, roots, cut - wanted)
    dropped = sorted(set(installed) - kept)
    names = [installed[n].metadata["Name"] for n in dropped]  # before its METADATA goes
    root = deps.resolve()
    for name in dropped:
        dist = installed[name]
        files = [Path(dist.locate_file(f)).resolve() for f in dist.files or ()]  # RECORD too
        for path in files:
            if path.is_relative_to(root) and path.is_file():
                path.unlink()
        # then its folders, deepest first, as far as they are empty (another distribution's
        # files in a shared namespace folder stay)
        folders = {f.parent for f in files if f.is_relative_to(root)} - {root}
        for folder in sorted(folders, key=lambda f: -len(f.parts)):
            while folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
    return names


def requirement_lines(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    """The requirements a ``--requirements`` file names, as pip reads it: continuation lines
    joined, comments and per-requirement options (``--hash=…``) dropped, nested ``-r FILE``
    followed (beside the file); other option lines (``--index-url``, ``-c``) skipped."""
    if path.resolve() in seen or not path.is_file():  # a loop, or a file pip reports missing
        return []
    seen |= {path.resolve()}
    text = re.sub(r"\\\r?\n", " ", path.read_text(encoding="utf-8"))
    out: list[str] = []
    for line in text.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        nested = re.fullmatch(r"(?:-r|--requirement)(?:\s+|=)(\S+)", line)
        if nested:
            out += requirement_lines(path.parent / nested[1], seen)
        elif line and not line.startswith("-"):
            out.append(re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip())
    return out
