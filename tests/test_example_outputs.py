"""What the examples write when run as their docs say (`out/` beside the topology) stays out of
git: running the kiosk example from a checkout left `examples/kiosk/out/rejects.jsonl` as an
untracked file (only pistats' `out/` was ignored)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.test_doc_links import ROOT


def example_output_dirs() -> list[str]:
    """``examples/<name>/out`` of each example whose topology writes under ``out/``."""
    found = set()
    for topology in sorted((ROOT / "examples").glob("*/*.yaml")):
        if "out/" in topology.read_text():
            found.add(topology.parent.relative_to(ROOT).as_posix() + "/out")
    return sorted(found)


def test_every_examples_output_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    dirs = example_output_dirs()
    assert "examples/kiosk/out" in dirs
    written = [f"{d}/rejects.jsonl" for d in dirs]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *written],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert sorted(ignored) == sorted(written)
