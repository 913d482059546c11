"""The house style is checked, not hoped for: ``ruff format`` and ``ruff check`` over the tree.

Run ``ruff format . && ruff check --fix .`` (from the project's venv) to fix what this reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_tree_is_formatted():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, "ruff format would change:\n" + result.stdout + result.stderr


def test_the_tree_passes_ruff_check():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
