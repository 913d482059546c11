"""Every `SQUALL_…` environment variable the docs name is one the code reads: a string literal in
squall/, tests/, benchmarks/ (Python) or a variable of scripts/ (shell)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_doc_links import ROOT
from tests.test_doc_snippets import user_docs

VARIABLE = re.compile(r"\bSQUALL_[A-Z][A-Z0-9_]*\b")


def read_variables(root: Path) -> set[str]:
    names: set[str] = set()
    for folder in ("squall", "tests", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](SQUALL_[A-Z][A-Z0-9_]*)[\"']", path.read_text()))
    for path in (root / "scripts").rglob("*"):
        if path.is_file() and path.suffix != ".py":
            names |= set(re.findall(r"\$\{?(SQUALL_[A-Z][A-Z0-9_]*)", path.read_text()))
    return names


def environment_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    read = read_variables(root)
    return [
        f"{path.relative_to(root)}:{number}: nothing reads {name}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in VARIABLE.findall(line)
        if name not in read
    ]


def test_every_environment_variable_the_docs_name_is_read():
    assert environment_problems(user_docs()) == []


def test_the_environment_checker_finds_a_renamed_variable(tmp_path: Path):
    for folder in ("squall", "tests", "benchmarks", "scripts"):
        (tmp_path / folder).mkdir()
    (tmp_path / "squall" / "a.py").write_text('os.environ.get("SQUALL_CACHE_DIR")\n')
    (tmp_path / "scripts" / "test").write_text('venv="${SQUALL_VENV:-x}"\n')
    page = tmp_path / "a.md"
    page.write_text("`SQUALL_CACHE_DIR`, `SQUALL_VENV=/v`\nset `SQUALL_CACHEDIR` empty\n")
    assert environment_problems([page], tmp_path) == ["a.md:2: nothing reads SQUALL_CACHEDIR"]
