"""A database driver that is not installed (the ``postgres`` or ``redis`` extra left out) stops the
start with one located line naming the resource and the ``pip install`` that adds it — from
every place that opens the resource (the run lock, the warehouse, the subscription store, a
lookup source, ``squall replay``'s dead-letter table), never a bare ``ModuleNotFoundError``.

The driver is made unimportable in a child process (a ``sitecustomize`` that refuses its import),
not uninstalled: the suite's own environment keeps it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[2]

BLOCK = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""

PG = "postgresql://squall:s3cret@127.0.0.1:1/nodb"  # never reached: the driver is missing first

HEAD = f"""name: nodriver
spout: {{type: file, path: in.jsonl}}
resources:
  db: {{url: "{PG}"}}
  cache: {{url: "redis://127.0.0.1:1/0"}}
"""

TOPOLOGIES = {
    # the run lock opens the warehouse's database first
    "warehouse": """bolts:
  - {id: decode, type: json}
sinks:
  - {id: out, type: warehouse, resource: db, table: t, columns: {a: a}}
""",
    # no lock on it (a store of a bolt's own): the bolt's open opens it
    "subscription": """bolts:
  - {id: decode, type: json}
  - {id: subs, type: subscription, store: db, key: a}
sinks:
  - {id: out, type: dead_letter, path: out.jsonl}
""",
    "lookup": """bolts:
  - {id: decode, type: json}
  - id: app
    type: lookup
    key: a
    target: app
    source: {type: sql, resource: db, table: apps, columns: [name]}
sinks:
  - {id: out, type: dead_letter, path: out.jsonl}
""",
}


def _squall(
    tmp_path: Path, blocked: set[str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess:
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCK.format(blocked=blocked))
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=tmp_path,
        env=child_env(PYTHONPATH=f"{block}:{ROOT}", AWS_REGION="us-east-1"),
        timeout=120,
    )


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "in.jsonl").write_text('{"a": "1"}\n')
    path = tmp_path / "t.yaml"
    path.write_text(HEAD + body)
    return path


@pytest.mark.parametrize("opener", sorted(TOPOLOGIES))
def test_run_without_psycopg2_names_the_resource_and_the_extra(tmp_path: Path, opener: str):
    _write(tmp_path, TOPOLOGIES[opener])
    r = _squall(tmp_path, {"psycopg2"}, "run", "t.yaml", "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "t.yaml:4:13: resources.db.url: resource 'db'" in r.stderr, r.stderr
    assert "pip install 'squall[postgres]'" in r.stderr
    assert "ModuleNotFoundError" not in r.stderr
    assert "s3cret" not in r.stderr


def test_validate_without_psycopg2_passes(tmp_path: Path):
    """``squall validate`` checks the topology, not this machine's drivers: a topology for a Lambda
    package built with ``--extras postgres`` validates where psycopg2 is not installed."""
    _write(tmp_path, TOPOLOGIES["warehouse"])
    r = _squall(tmp_path, {"psycopg2"}, "validate", "t.yaml")
    assert r.returncode == 0, r.stderr


def test_replay_of_a_dead_letter_table_without_psycopg2(tmp_path: Path):
    _write(tmp_path, TOPOLOGIES["subscription"])
    r = _squall(tmp_path, {"psycopg2"}, "replay", "t.yaml", "sql://db/dead_letters")
    assert r.returncode == 2, r.stderr
    assert "resources.db.url: resource 'db'" in r.stderr, r.stderr
    assert "pip install 'squall[postgres]'" in r.stderr
    assert "ModuleNotFoundError" not in r.stderr


def test_run_without_redis_names_the_resource_and_the_extra(tmp_path: Path):
    _write(
        tmp_path,
        """bolts:
  - {id: decode, type: json}
  - {id: subs, type: subscription, store: cache, key: a}
sinks:
  - {id: out, type: dead_letter, path: out.jsonl}
""",
    )
    r = _squall(tmp_path, {"redis", "hiredis"}, "run", "t.yaml", "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "t.yaml:5:16: resources.cache.url: resource 'cache'" in r.stderr, r.stderr
    assert "pip install 'squall[redis]'" in r.stderr
    assert "ModuleNotFoundError" not in r.stderr


BROKEN = """
import sys

class _Broken:
    # psycopg2 is there, its C extension does not load (a libpq it was built against is gone)
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg2._psycopg":
            raise ImportError(
                "libpq.so.5: cannot open shared object file: No such file or directory", name=name
            )
        return None

sys.meta_path.insert(0, _Broken())
"""


def test_an_installed_driver_that_fails_to_import_is_not_called_missing(tmp_path: Path):
    """psycopg2 installed but broken (its libpq gone, another module inside it failing): the
    import error is said as it is, at the resource's URL — not "not installed, pip install", which
    would send the operator to a pip that says "already satisfied"."""
    _write(tmp_path, TOPOLOGIES["warehouse"])
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BROKEN)
    r = subprocess.run(
        [sys.executable, "-m", "squall.cli", "run", "t.yaml", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(PYTHONPATH=f"{block}:{ROOT}", AWS_REGION="us-east-1"),
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "t.yaml:4:13: resources.db.url: resource 'db'" in r.stderr, r.stderr
    assert "libpq.so.5: cannot open shared object file" in r.stderr
    assert "is installed but" in r.stderr, r.stderr
    assert "pip install 'squall[postgres]'" not in r.stderr
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr
