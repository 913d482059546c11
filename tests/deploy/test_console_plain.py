"""The run summary written without rich (stderr no terminal) is the text rich prints there."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pytest
from rich.console import Console

from squall.deploy import console as console_mod
from squall.deploy.local import RunReport
from squall.observability.progress import Totals
from squall.topology.loader import load_text
from squall.topology.outcomes import ComponentStats, Outcome
from tests.child_env import child_env
from tests.conftest import ROOT

IDS = ["spout", "decode", "v", "warehouse-events", "a-very-long-component-identifier-here", "x9"]


def _case(rng: random.Random, name: str) -> tuple:
    topo = load_text(
        f"name: {name}\nspout: {{type: stdin}}\nsinks:\n  - {{id: out, type: stdout}}\n"
    )
    big = rng.choice([1, 10, 10_000, 2_000_000, 10**12])
    report = RunReport(
        batches=rng.randrange(big), records=rng.randrange(big), seconds=rng.random() * big
    )
    report.counts = {o: rng.randrange(big) for o in Outcome}
    ids = rng.sample(IDS, rng.randrange(1, len(IDS)))
    report.stats = [
        ComponentStats(
            i,
            rng.choice(["spout", "bolt", "sink"]),
            "t",
            rng.randrange(big),
            rng.randrange(big),
            dead_lettered=rng.randrange(big),
            dropped=rng.randrange(big),
            retries=rng.randrange(20),
            seconds=rng.random() * big,
        )
        for i in ids
    ]
    totals = Totals()
    if rng.random() < 0.6:
        totals.written = {i: rng.randrange(big) for i in ids if rng.random() < 0.5}
        totals.present = {i: rng.randrange(big) for i in totals.written}
    return topo, report, totals


@pytest.mark.parametrize("seed", range(60))
def test_the_plain_summary_is_what_rich_prints_without_a_terminal(seed: int, monkeypatch):
    rng = random.Random(seed)
    name = rng.choice(["pistats", "t", "a-rather-long-topology-name-for-a-title-to-wrap-x"])
    topo, report, totals = _case(rng, name)
    width = rng.choice([80, 40, 60, 120, 200])
    out = io.StringIO()
    console_mod.print_summary(
        Console(file=out, width=width, force_terminal=False), topo, report, totals
    )
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert console_mod._plain_summary(topo, report, totals, width)
    assert plain.getvalue() == out.getvalue()


@pytest.mark.parametrize("field", ["error", "failed_records", "interrupted", "aborted", "odd"])
def test_anything_else_is_left_to_rich(field: str, monkeypatch):
    topo, report, totals = _case(random.Random(1), "t")
    if field == "failed_records":
        report.failed_records = ["r"]  # type: ignore[list-item]
    elif field == "odd":
        report.stats[0].id = "naïve"  # not ASCII: rich measures its cells
    else:
        setattr(report, field, True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not console_mod._plain_summary(topo, report, totals, 80)
    assert sys.stderr.getvalue() == ""


def test_a_run_into_a_pipe_imports_no_rich(tmp_path):
    """`squall run` with stderr not a terminal: the summary without rich (~40 ms of CPU)."""
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "t.yaml").write_text(
        "name: t\nspout: {type: file, path: in.jsonl}\nbolts:\n  - {id: decode, type: json}\n"
        "sinks:\n  - {id: out, type: dead_letter, path: out.jsonl}\n"
    )
    code = (
        "import sys\nfrom squall.cli import main\nsys.argv = ['squall', 'run', sys.argv[1]]\n"
        "try:\n    main()\nfinally:\n    print(sorted(m for m in sys.modules if m.startswith('rich')))"
    )
    env = child_env(PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.yaml")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    lines = r.stderr.splitlines()
    assert lines[0].startswith("t: 1 records, 1 batches, ")
    assert lines[2] == "┃ component ┃in ┃out ┃dead ┃filtered ┃retries ┃   s ┃"
    assert lines[-1].startswith("committed 0, dead-lettered 1, filtered 0, failed 0; ")
