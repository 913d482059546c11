"""A process the suite starts writes no cache of checked schemas under the real home folder.

conftest.py empties ``SQUALL_CACHE_DIR`` for the suite; a child inheriting ``os.environ`` keeps
that, and one given an environment of its own gets it from ``tests.child_env.child_env``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.child_env import child_env
from tests.conftest import ROOT

TESTS = Path(__file__).resolve().parent
_SUBPROCESS_CALLS = frozenset({"run", "Popen", "check_output", "check_call", "call"})


def _unpacks_os_environ(node: ast.Dict) -> bool:
    """``{**os.environ, …}`` (or ``__import__("os").environ``): the suite's environment."""
    return any(
        key is None and isinstance(value, ast.Attribute) and value.attr == "environ"
        for key, value in zip(node.keys, node.values, strict=True)
    )


def _keys(node: ast.Dict) -> set[str]:
    return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def environments_of_their_own() -> list[str]:
    """Where a test builds a process environment that is not the suite's, nor ``child_env``'s:
    a dict literal holding ``PATH`` (an environment from scratch), or one passed as a
    subprocess's ``env=``, that neither unpacks ``os.environ`` nor sets ``SQUALL_CACHE_DIR``."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "child_env.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        suspects: list[ast.Dict] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and "PATH" in _keys(node):
                suspects.append(node)
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in _SUBPROCESS_CALLS:
                    suspects += [
                        k.value
                        for k in node.keywords
                        if k.arg == "env" and isinstance(k.value, ast.Dict)
                    ]
        for node in suspects:
            if not _unpacks_os_environ(node) and "SQUALL_CACHE_DIR" not in _keys(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sorted(set(found))


def test_every_environment_a_test_builds_keeps_the_suites_cache_setting():
    assert environments_of_their_own() == [], (
        "build these with tests.child_env.child_env (or from os.environ): a squall started with "
        "them writes checked schemas under the real home folder"
    )


def test_the_scan_finds_an_environment_built_from_scratch(tmp_path: Path, monkeypatch):
    (tmp_path / "test_x.py").write_text(
        "import os, subprocess\n"
        "subprocess.run(['x'], env={'PYTHONPATH': '.'})\n"
        "E = {'PATH': '/bin', 'HOME': '/tmp'}\n"
        "subprocess.run(['x'], env={**os.environ, 'A': '1'})\n"
        "F = {'PATH': '/bin', 'SQUALL_CACHE_DIR': ''}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "TESTS", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert environments_of_their_own() == ["test_x.py:2", "test_x.py:3"]


def test_a_squall_started_with_child_env_writes_no_cache_under_its_home(tmp_path: Path):
    (tmp_path / "event.json").write_text(json.dumps({"type": "object"}))
    (tmp_path / "topology.yaml").write_text(
        "name: t\nspout: {type: stdin}\n"
        "bolts:\n  - {id: decode, type: json}\n  - {id: v, type: schema, schema: event.json}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
    )
    home = tmp_path / "home"
    env = child_env(PYTHONPATH=str(ROOT), HOME=str(home))
    without = {k: v for k, v in env.items() if k != "SQUALL_CACHE_DIR"}
    for environment in (env, without):
        r = subprocess.run(
            [sys.executable, "-m", "squall.cli", "validate", "topology.yaml"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        if environment is env:
            assert not (home / ".cache").exists()
    # (without the suite's setting, the same command wrote under the home folder)
    assert len(list((home / ".cache" / "squall" / "checked-schemas").iterdir())) == 1
