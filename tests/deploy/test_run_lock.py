"""One `squall run` per topology and store: the second is refused in one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from squall.deploy.lock import AlreadyRunning, acquire, advisory_key
from squall.topology.loader import load_text
from squall.topology.resources import Resources

YAML = """
name: {name}
resources: {resources}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{sink}]
"""


def topology(tmp_path: Path, name: str, url: str | None):
    if url is None:
        resources, sink = "{}", "{id: out, type: stdout}"
    else:
        resources = f'{{warehouse: {{url: "{url}"}}}}'
        sink = "{id: out, type: warehouse, resource: warehouse, table: t_lock, columns: {n: n}}"
    return load_text(YAML.format(name=name, resources=resources, sink=sink), base_dir=tmp_path)


@pytest.fixture(params=["topology-file", "sqlite", "postgres"])
def url(request, tmp_path: Path):
    if request.param == "topology-file":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'w.db'}"
    return request.getfixturevalue("pg_url")


def test_a_second_run_of_the_same_topology_is_refused_until_the_first_ends(
    tmp_path: Path, url, unique_name
):
    topo = topology(tmp_path, unique_name, url)
    first_resources, second_resources = (
        Resources(topo.resources, tmp_path),
        Resources(topo.resources, tmp_path),
    )
    first = acquire(topo, first_resources)
    try:
        with pytest.raises(AlreadyRunning, match=f"topology '{unique_name}' is already running"):
            acquire(topo, second_resources)
        other = acquire(
            topology(tmp_path, unique_name + "_other", url), second_resources
        )  # another topology
        other.release()
    finally:
        first.release()
    again = acquire(topo, second_resources)  # released: the next run may start
    again.release()
    first_resources.close()
    second_resources.close()


def test_the_lock_lives_next_to_the_sqlite_database(tmp_path: Path, unique_name: str):
    topo = topology(tmp_path, unique_name, f"sqlite:///{tmp_path / 'db' / 'w.db'}")
    resources = Resources(topo.resources, tmp_path)
    held = acquire(topo, resources)
    try:
        assert held.where == str(tmp_path / "db" / f"w.db.{unique_name}.lock")
    finally:
        held.release()
        resources.close()


def test_a_symlink_at_the_lock_path_is_not_followed(tmp_path: Path, unique_name: str, caplog):
    """The lock file was opened through a symlink and truncated: in a shared directory (a
    database in /tmp), another user's link had the run overwrite the file it pointed to."""
    topo = topology(tmp_path, unique_name, f"sqlite:///{tmp_path / 'w.db'}")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / f"w.db.{unique_name}.lock").symlink_to(victim)
    resources = Resources(topo.resources, tmp_path)
    held = acquire(topo, resources)
    held.release()
    resources.close()
    assert victim.read_text() == "keep me\n"
    assert "cannot create the run lock" in caplog.text


def test_the_advisory_lock_is_released_when_the_holder_dies(pg_url: str, unique_name: str):
    key = advisory_key(unique_name)
    # No pool: closing a connection ends its session, as a process that dies does.
    engine = sa.create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=sa.NullPool
    )
    with engine.connect() as conn:
        assert conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        # another session cannot take it while this one lives
        with engine.connect() as other:
            assert not other.execute(
                sa.text("select pg_try_advisory_lock(:k)"), {"k": key}
            ).scalar()
    with engine.connect() as conn:  # the first session closed: the lock went with it
        assert conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": key})
    engine.dispose()


def test_squall_run_twice_exits_2_with_one_line(tmp_path: Path, unique_name: str):
    t = tmp_path / "topology.yaml"
    t.write_text(
        YAML.format(
            name=unique_name,
            resources=f'{{warehouse: {{url: "sqlite:///{tmp_path / "w.db"}"}}}}',
            sink="{id: out, type: warehouse, resource: warehouse, table: t_lock, columns: {n: n}}",
        )
    )
    lock_file = tmp_path / f"w.db.{unique_name}.lock"
    first = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(t)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (lock_file.exists() and lock_file.read_text().strip() == str(first.pid)):
            assert time.monotonic() < deadline and first.poll() is None, (
                "the first run never took its lock"
            )
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "squall.cli", "run", str(t)],
            input='{"n": 1}\n',
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"topology '{unique_name}' is already running (pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        out, err = first.communicate('{"n": 2}\n', timeout=120)
    assert first.returncode == 0, err
