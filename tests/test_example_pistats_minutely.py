"""The pistats minutely example: subscriptions and active users per app per minute, app metadata
looked up from the `apps` table, upserted into `pistats_minutely`; a replay changes nothing."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from tests.child_env import child_env
from tests.conftest import EXAMPLES
from tests.test_example_pistats import expected_split

NAMES = {"app-news": "Daily News", "app-weather": "Weather Now"}  # app-shop is not in the table
LATENESS = 10_000


@pytest.fixture
def example(tmp_path: Path) -> Path:
    dst = tmp_path / "pistats"
    shutil.copytree(EXAMPLES / "pistats", dst, ignore=shutil.ignore_patterns("out"))
    return dst


def expected_rows(example: Path) -> tuple[set[tuple], int]:
    """Per (minute, app): the counts, computed from the file by the documented rules: the
    watermark is the latest event time so far; an event whose minute ended at least
    ``allowed_lateness`` before the watermark is late; a minute closes when the watermark passes
    its end plus ``allowed_lateness``, and at the end of the file every minute still open does."""
    valid, _ = expected_split(example / "events.jsonl.gz")
    seen: set[str] = set()
    cells: dict[tuple[int, str], dict] = defaultdict(
        lambda: {"n": 0, "sub": 0, "unsub": 0, "reg": 0, "users": set()}
    )
    wm, late = None, 0
    for line in gzip.open(example / "events.jsonl.gz", "rt"):
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            not isinstance(ev, dict)
            or ev.get("message_id") not in valid
            or ev["message_id"] in seen
        ):
            continue
        seen.add(ev["message_id"])
        t = int(datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        wm = t if wm is None else max(wm, t)
        minute = t - t % 60_000
        if minute + 60_000 <= wm - LATENESS:
            late += 1
            continue
        c = cells[(minute, ev["app_id"])]
        c["n"] += 1
        c["sub"] += ev["event_type"] == "subscribe"
        c["unsub"] += ev["event_type"] == "unsubscribe"
        c["reg"] += ev["event_type"] == "register"
        if ev.get("user_id") is not None:
            c["users"].add(ev["user_id"])
    rows = set()
    for (minute, app), c in cells.items():  # every minute: the end of the file closes the last ones
        start = datetime.utcfromtimestamp(minute / 1000).strftime("%Y-%m-%d %H:%M:%S+00:00")
        rows.add(
            (
                start,
                app,
                NAMES.get(app),
                c["n"],
                c["sub"],
                c["unsub"],
                c["reg"],
                len(c["users"]),
            )
        )
    return rows, late


def test_minutely_example_counts_per_app_and_minute_and_a_replay_changes_nothing(example: Path):
    env = child_env(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        HOME=str(example),
        PYTHONPATH=os.environ.get("PYTHONPATH", ""),  # the squall under test
    )
    summaries = []
    for args in (
        ["apps.py"],
        ["-m", "squall.cli", "run", "--no-progress", "minutely_topology.yaml"],
        ["-m", "squall.cli", "run", "--no-progress", "minutely_topology.yaml"],
    ):
        r = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            cwd=example,
            env=env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        summaries.append(" ".join((r.stdout + r.stderr).split()))
    db = sqlite3.connect(example / "out" / "pistats.db")
    # The first run's summary counts the rows the end-of-input flush wrote too; the replay none.
    rows = db.execute("select count(*) from pistats_minutely").fetchone()[0]
    assert f"rows written {rows:,}, already present 0" in summaries[1], summaries[1]
    assert "rows written" not in summaries[2] or "rows written 0," in summaries[2], summaries[2]
    got = set(
        db.execute(
            "select window_start, app_id, app_name, events, subscriptions, unsubscriptions, "
            "registrations, active_users from pistats_minutely"
        ).fetchall()
    )
    want, _ = expected_rows(example)
    assert len(want) >= 27 and got == want
