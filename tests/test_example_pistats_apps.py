"""The pistats apps example: app metadata looked up from an `apps` table, last activity upserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.child_env import child_env
from tests.conftest import EXAMPLES
from tests.test_example_pistats import expected_split, sample_events

NAMES = {"app-news": "Daily News", "app-weather": "Weather Now"}  # app-shop is not in the table


@pytest.fixture
def example(tmp_path: Path) -> Path:
    dst = tmp_path / "pistats"
    shutil.copytree(EXAMPLES / "pistats", dst, ignore=shutil.ignore_patterns("out"))
    return dst


def run(cwd: Path, env: dict[str, str], *args: str) -> None:
    r = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(cwd), **env),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr


def expected_activity(directory: Path, valid: set[str]) -> dict[tuple[str, str], tuple]:
    """The last event of each (app, event type) in file order: what the upserts must leave."""
    last = {}
    for ev in sample_events(directory):
        if ev.get("message_id") in valid:
            last[(ev["app_id"], ev["event_type"])] = (
                NAMES.get(ev["app_id"]),
                ev["user_id"],
                ev["message_id"],
            )
    return last


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_apps_example_enriches_from_the_table_and_upserts_the_last_activity(
    example: Path, backend: str, request, unique_name: str
):
    env = {}
    url = f"sqlite:///{example / 'out' / 'pistats.db'}"
    if backend == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        url = pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        env = {
            "WAREHOUSE_URL": pg_url,
            "APP_EVENTS_TABLE": f"{unique_name}_e",
            "APP_ACTIVITY_TABLE": f"{unique_name}_a",
        }
    events_table = env.get("APP_EVENTS_TABLE", "app_events")
    activity_table = env.get("APP_ACTIVITY_TABLE", "app_activity")
    valid, _ = expected_split(example / "events.jsonl.gz")
    expected = expected_activity(example, valid)
    engine = sa.create_engine(url)
    try:
        run(example, env, "apps.py")
        for _ in range(2):  # a replay of the whole file changes nothing
            run(example, env, "-m", "squall.cli", "run", "apps_topology.yaml")
            with engine.connect() as conn:
                names = dict(
                    conn.exec_driver_sql(
                        f'select event_id, app_name from "{events_table}"'
                    ).fetchall()
                )
                activity = conn.exec_driver_sql(
                    f"select app_id, event_type, app_name, last_user_id, last_event_id, last_seen_at "
                    f'from "{activity_table}"'
                ).fetchall()
            by_id = {ev["message_id"]: ev for ev in sample_events(example)}
            assert set(names) == valid
            assert all(names[i] == NAMES.get(by_id[i]["app_id"]) for i in valid)
            assert {(a, t): (n, u, e) for a, t, n, u, e, _ in activity} == expected
            for *_, e, seen in activity:
                seen = seen if isinstance(seen, datetime) else datetime.fromisoformat(seen)
                assert seen == datetime.fromisoformat(
                    by_id[e]["timestamp"].replace("Z", "+00:00")
                ).astimezone(UTC)
    finally:
        if backend == "postgresql":
            with engine.begin() as conn:
                for table in (events_table, activity_table, "apps"):
                    conn.exec_driver_sql(f'drop table if exists "{table}"')
        engine.dispose()
