"""``SquallRestarting``: a runner that exits soon after it starts and is started again (systemd's
``Restart=on-failure``, every few seconds) raised none of the generated alerts: each start exports
its series anew, at 0, and a process that is down exports nothing. Its start time
(``squall_start_time_seconds``: ``squall run``'s, under the KCL the host's ``squall kcl``) changes
at each start a scrape sees; the rule counts the changes in 30 minutes. One deploy, or a deploy and
its rollback, is no crash loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from squall.observability.dashboards import prometheus_rules
from squall.observability.prometheus import PrometheusBackend, process_start_time
from squall.topology.loader import load_text
from tests.observability.promtool import promtool_test

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/tools.sh; Debian: apt install prometheus)",
)

TOPOLOGY = "name: looping\nspout: {type: stdin}\nsinks: [{id: out, type: stdout}]\n"
EPOCH = 1_765_000_000  # a start time: any UNIX time
SERIES = 'squall_start_time_seconds{{topology="looping",job="squall",instance="{instance}"}}'


def rule() -> dict:
    rules = prometheus_rules(load_text(TOPOLOGY))
    return {"groups": [{**rules["groups"][0], "rules": [restarting(rules)]}]}


def restarting(rules: dict) -> dict:
    [found] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "SquallRestarting"]
    return found


def fires(at: str, instance: str, restarts: int) -> dict:
    summary = restarting(rule())["annotations"]["summary"].replace("{{ $value }}", str(restarts))
    labels = {"severity": "critical", "topology": "looping", "job": "squall", "instance": instance}
    return {
        "eval_time": at,
        "alertname": "SquallRestarting",
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": {"summary": summary}}],
    }


def quiet(at: str) -> dict:
    return {"eval_time": at, "alertname": "SquallRestarting", "exp_alerts": []}


def lives(starts: dict[int, int], minutes: int) -> list[str]:
    """A start time scraped each minute: ``starts`` maps the minute each process was first seen
    to how many minutes it was seen; a minute it is down (nothing to scrape) is stale."""
    values = ["stale"] * minutes
    for first, seen in starts.items():
        values[first : first + seen] = [str(EPOCH + first * 60 - 1)] * seen
    return values[:minutes]


@needs_promtool
def test_a_crash_loop_fires_a_deploy_and_its_rollback_do_not(tmp_path: Path):
    """A runner seen every 3 minutes, each time started again (minutes 0 to 24), then fixed at
    27: the third restart seen fires (at 9, counted at 10), and the alert holds while the
    restarts are within 30 minutes, not flapping between them; 30 minutes after the last one it
    ends. A deploy (one restart) and a deploy rolled back (two) never fire."""
    loop = lives({m: 1 for m in range(0, 25, 3)} | {27: 33}, 60)
    deploy = lives({0: 20, 21: 39}, 60)
    rollback = lives({0: 10, 11: 8, 20: 40}, 60)
    series = {
        SERIES.format(instance="loop:9100"): loop,
        SERIES.format(instance="deploy:9100"): deploy,
        SERIES.format(instance="rollback:9100"): rollback,
    }
    promtool_test(
        tmp_path,
        rule(),
        series,
        [
            quiet("7m"),  # two restarts seen so far
            fires("10m", "loop:9100", 3),
            fires("11m", "loop:9100", 3),  # between two starts: still firing
            fires("40m", "loop:9100", 5),  # 12, 15, 18, 21, 24 and the fixed 27
            quiet("50m"),  # 21 → 24 → 27: two in the last 30 minutes
        ],
    )


@needs_promtool
def test_a_crash_loop_is_seen_at_a_15_second_scrape_interval(tmp_path: Path):
    """A `squall run` whose PostgreSQL refuses connections lived 1.3–1.8 s (measured, three
    runs), and serves metrics only after its topology is loaded: here its last half second. With
    systemd's RestartSec=5 it starts every 6.5 s; a scrape every 15 s sees one start in 13 — the
    alert fires still."""
    cycle, live_from, live_to = 65, 10, 15  # tenths of a second: 6.5 s; served 1.0 … 1.5 s
    values = []
    for scrape in range(0, 30 * 60 * 10 + 1, 150):  # 30 minutes, every 15 s
        start, phase = divmod(scrape, cycle)
        live = live_from <= phase < live_to
        values.append(str(EPOCH + start * cycle / 10) if live else "stale")
    seen = [v for v in values if v != "stale"]
    assert 5 <= len(seen) < len(values) // 10  # few scrapes see it alive: `up` is 0 mostly
    promtool_test(
        tmp_path,
        rule(),
        {SERIES.format(instance="loop:9100"): values},
        [fires("30m", "loop:9100", len(seen) - 1)],
        interval="15s",
    )


def test_the_threshold_is_an_option_of_squall_dashboards(tmp_path: Path):
    topology = tmp_path / "looping.yaml"
    topology.write_text(TOPOLOGY)
    cmd = [sys.executable, "-m", "squall.cli", "dashboards", str(topology), "-o", str(tmp_path)]
    r = subprocess.run([*cmd, "--restarts", "5"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((tmp_path / "looping.rules.yaml").read_text())
    assert restarting(written)["expr"] == (
        'changes(squall_start_time_seconds{topology="looping"}[30m]) >= 5'
    )


def test_squall_run_exports_its_process_start_time_and_a_kcl_shard_process_does_not(
    tmp_path: Path, monkeypatch
):
    backend = PrometheusBackend(CollectorRegistry(), topology="looping")
    value = backend.registry.get_sample_value("squall_start_time_seconds", {"topology": "looping"})
    from prometheus_client import ProcessCollector

    [own] = [
        s.value
        for m in ProcessCollector(registry=None).collect()
        for s in m.samples
        if s.name == "process_start_time_seconds"
    ]
    assert value == pytest.approx(own, abs=0.01)  # prometheus-client's reading of /proc

    from squall.observability.prometheus import MULTIPROC_ENV
    from squall.observability.runners import kcl_recorder

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    [shard] = [b for b in kcl_recorder("looping").backends if isinstance(b, PrometheusBackend)]
    assert shard.started is None  # the daemon starts one per lease: not the host's restarts


def test_squall_kcl_serves_its_own_start_time_not_its_scrape_servers(tmp_path: Path):
    """The host's scrape server is a process of its own, started after the topology is loaded:
    it says when `squall kcl` (its parent, the process systemd restarts) started."""
    from tests.observability.test_prometheus_endpoint import scrape
    from tests.ports import free_port, wait_port

    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.replace("type: stdout", "type: 'squall.testing:MemorySink'"))
    bin_dir = tmp_path / "bin"  # a "java" that waits to be stopped: no daemon, no network
    bin_dir.mkdir()
    stop = tmp_path / "stop"
    (bin_dir / "java").write_text(f"#!/bin/sh\nwhile [ ! -e {stop} ]; do sleep 0.1; done\n")
    (bin_dir / "java").chmod(0o755)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "kcl",
            str(topology),
            "--stream",
            "s",
            "--kinesis-endpoint",
            "http://127.0.0.1:9",
            "--dynamodb-endpoint",
            "http://127.0.0.1:9",
            "--metrics-port",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr").open("wb"),  # (the server holds a pipe until kcl is reaped)
    )
    try:
        try:
            wait_port(port, proc)
        except RuntimeError:
            proc.wait(timeout=30)
            pytest.fail((tmp_path / "stderr").read_text())
        samples = scrape(port)
        started = samples[("squall_start_time_seconds", (("topology", "looping"),))]
        assert started == pytest.approx(process_start_time(proc.pid), abs=0.01)
    finally:
        stop.touch()  # the "daemon" exits, and `squall kcl` (and its scrape server) with it
        proc.wait(timeout=30)


@needs_promtool
def test_the_documented_up_rule_fires_for_a_host_down_or_restarting_not_for_a_deploy(
    tmp_path: Path,
):
    """docs/operating.md's `SquallDown` (the rule a user adds with their job's name: `up` has
    no topology label), run as it is written there."""
    from tests.test_doc_links import ROOT
    from tests.test_doc_snippets import fenced_blocks

    doc = ROOT / "docs" / "operating.md"
    [text] = [t for _, t in fenced_blocks(doc, ("yaml",)) if "alert: SquallDown" in t]
    rules = yaml.safe_load(text)
    [down] = rules["groups"][0]["rules"]
    job = 'up{{job="squall-pistats",instance="{}"}}'
    series = {
        job.format("down:9100"): ["1"] * 10 + ["0"] * 30,
        # alive for one scrape in four (a start seen, then down until the next one seen)
        job.format("loop:9100"): (["1", "0", "0", "0"] * 10),
        job.format("deploy:9100"): ["1"] * 10 + ["0", "0"] + ["1"] * 28,
    }

    def firing(at: str, *instances: str) -> dict:
        alerts = [
            {
                "exp_labels": {**down["labels"], "job": "squall-pistats", "instance": i},
                "exp_annotations": {
                    "summary": down["annotations"]["summary"].replace("{{ $labels.instance }}", i)
                },
            }
            for i in instances
        ]
        return {"eval_time": at, "alertname": "SquallDown", "exp_alerts": alerts}

    promtool_test(
        tmp_path,
        rules,
        series,
        [
            firing("5m"),  # the loop: most scrapes failed, not yet for 5 minutes
            firing("8m", "loop:9100"),
            firing("12m", "loop:9100"),  # the deploy missed two scrapes: no
            firing("19m", "loop:9100"),  # the host down for 9 minutes: not yet
            firing("25m", "down:9100", "loop:9100"),
        ],
    )
