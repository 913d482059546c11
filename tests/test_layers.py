"""Imports run one way: model/loader → engine → components → runners → CLI.

Every ``import`` statement in ``squall/`` (also those inside functions) is read with ``ast``.
A module may import its own layer or a lower one; a component package may import the engine's
public types and the shared building blocks, never another component package's modules. The
registry finds components by name (strings), which is how the engine runs them without
importing them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SQUALL = Path(__file__).resolve().parents[1] / "squall"

# Lowest first. A module belongs to the first (longest) prefix that matches it.
LAYERS: dict[str, int] = {
    # model and loader: YAML → validated models → compiled plan; knows no runtime
    "squall": 0,
    "squall.errors": 0,
    "squall.event": 0,
    "squall.paths": 0,
    "squall.component": 0,
    "squall.identifiers": 0,
    "squall.topology": 0,
    "squall.topology.yamlsource": 0,
    "squall.topology.loader": 0,
    "squall.topology.model": 0,
    "squall.topology.schema": 0,
    "squall.topology.graph": 0,
    "squall.topology.registry": 0,
    "squall.topology.reference": 0,
    # the engine and the small public types components implement, plus shared building blocks
    "squall.topology.executor": 1,
    "squall.topology.checkpoint": 1,
    "squall.topology.dynamodb_checkpoint": 1,
    "squall.topology.resources": 1,
    "squall.topology.sql": 1,
    "squall.topology.outcomes": 1,
    "squall.bolts.base": 1,
    "squall.sinks.base": 1,
    "squall.spouts.base": 1,
    "squall.aws": 1,
    "squall.secrets": 1,
    "squall.kinesis": 1,
    "squall.cache": 1,
    "squall.observability.logs": 1,
    "squall.testing": 3,
    # components
    "squall.bolts": 2,
    "squall.enrichment": 2,
    "squall.sinks": 2,
    "squall.spouts": 2,
    # runners and what ships them
    "squall.deploy": 3,
    "squall.observability": 3,
    # the command line
    "squall.cli": 4,
}
COMPONENT_PACKAGES = ("squall.bolts", "squall.enrichment", "squall.sinks", "squall.spouts")


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return prefix, LAYERS[prefix]
    raise KeyError(module)


def package_of(module: str) -> str | None:
    return next((p for p in COMPONENT_PACKAGES if module == p or module.startswith(p + ".")), None)


def module_name(path: Path) -> str:
    rel = path.relative_to(SQUALL.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "squall" or name.startswith("squall.")]


def violations() -> list[str]:
    out = []
    for path in sorted(SQUALL.rglob("*.py")):
        module = module_name(path)
        _, own = layer_of(module)
        own_pkg = package_of(module) if own == 2 else None
        for line, target in imports(path):
            prefix, level = layer_of(target)
            where = f"{path.relative_to(SQUALL.parent)}:{line}: {module} imports {target}"
            if level > own:
                out.append(f"{where} (layer {level} above {own})")
            elif own == 2 and level == 2 and package_of(target) != own_pkg:
                out.append(f"{where} (another component package's internals)")
    return out


def test_imports_run_one_way():
    found = violations()
    assert not found, "forbidden imports:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from squall.deploy.local import LocalRunner\n", "layer 3 above 1"),
        (
            "from squall.sinks.warehouse.columns import check_identifier\n",
            "another component package",
        ),
    ],
)
def test_the_check_fails_on_a_forbidden_import(tmp_path, monkeypatch, source, expected):
    """The check itself can fail: a planted import in an engine module and in a bolt is reported."""
    fake = tmp_path / "squall"
    (fake / "topology").mkdir(parents=True)
    (fake / "bolts").mkdir()
    (fake / "topology" / "executor.py").write_text(source if "deploy" in source else "")
    (fake / "bolts" / "mine.py").write_text(source if "sinks" in source else "")
    monkeypatch.setattr(__import__(__name__, fromlist=["SQUALL"]), "SQUALL", fake)
    found = violations()
    assert len(found) == 1 and expected in found[0]
