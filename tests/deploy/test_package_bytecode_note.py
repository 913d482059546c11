"""`squall package` says why a zip has no bytecode.

Bytecode is compiled only by the target's Python (docs/deploy.md, "What goes in a zip"): a
`--python 3.12` build (every `--snapstart` one) run from a 3.11 virtualenv was silently left
without, and its summary said only "bytecode: not compiled" — each cold start then compiles
every module it imports again (the example's init 2.7x longer, measured).
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from squall.cli import main
from squall.deploy import package as pkg

TOPOLOGY = """
name: bytecode-note
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: "squall.testing:MemorySink"}]
"""

RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"
OTHER = "3.13" if RUNNING != "3.13" else "3.12"


def package(tmp_path: Path, monkeypatch, *args: str) -> str:
    monkeypatch.setattr(pkg, "_pip", lambda *a: None)  # no dependency: the topology alone
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    path = tmp_path / "producer.yaml"
    path.write_text(TOPOLOGY)
    result = CliRunner().invoke(
        main,
        ["package", str(path), "--handler", "producer", "-o", str(tmp_path / "f.zip"), *args],
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_another_python_s_build_says_its_bytecode_needs_that_python(tmp_path, monkeypatch):
    out = package(tmp_path, monkeypatch, "--python", OTHER)
    assert (
        f"bytecode: not compiled (python{OTHER}'s needs squall package run by python{OTHER}, "
        f"not python{RUNNING}" in out
    )


def test_no_compile_and_the_same_python_say_what_they_did(tmp_path, monkeypatch):
    assert "bytecode: not compiled (--no-compile)" in package(
        tmp_path, monkeypatch, "--python", RUNNING, "--no-compile"
    )
    assert "bytecode: compiled\n" in package(tmp_path, monkeypatch, "--python", RUNNING)
