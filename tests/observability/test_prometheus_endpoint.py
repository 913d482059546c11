"""``squall run --metrics-port``: the endpoint is scraped while the run goes on, against its known outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port

TOPOLOGY = """
name: scraped
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
resources:
  db: {{url: "sqlite:///{db}"}}
"""


def scrape(port: int) -> dict[tuple, float]:
    """Samples of the endpoint as {(name, sorted labels): value}; {} while it is not up."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def total(samples: dict[tuple, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def test_squall_run_serves_metrics_that_match_the_runs_outcomes(tmp_path: Path):
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(db=tmp_path / "w.db", dlq=tmp_path / "dlq.jsonl"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "run",
            str(topology),
            "--input",
            "-",
            "--batch-size",
            "5",
            "--metrics-port",
            f"127.0.0.1:{port}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        lines = [json.dumps({"n": i}) for i in range(12)] + [
            "not json",
            json.dumps({"fail": "no"}),
            json.dumps({"drop": True}),
            json.dumps({"n": 99}),
        ]
        assert len(lines) == 16  # three full batches of 5 are processed while stdin stays open
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        samples: dict = {}
        while time.monotonic() < deadline:
            samples = scrape(port)
            if total(samples, "squall_batches_total") >= 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail(f"no 3 batches on the endpoint: {samples}")
        # 15 records through: 12 committed, 'not json' and the 'fail' record dead-lettered, 1 filtered
        assert (
            total(samples, "squall_topology_records_total", topology="scraped", outcome="committed")
            == 12
        )
        assert total(samples, "squall_topology_records_total", outcome="dead_lettered") == 2
        assert total(samples, "squall_topology_records_total", outcome="filtered") == 1
        assert total(samples, "squall_records_total", component="decode", outcome="in") == 15
        assert (
            total(samples, "squall_records_total", component="decode", outcome="dead_lettered") == 1
        )
        assert total(samples, "squall_records_total", component="rows", outcome="out") == 12
        assert total(samples, "squall_checkpoints_total") == 3
        assert total(samples, "squall_batch_duration_seconds_count") == 3
        assert total(samples, "squall_component_duration_seconds_count", component="rows") == 3
        assert total(samples, "process_resident_memory_bytes") > 0
        # the run's start (SquallRestarting counts its changes), as prometheus-client reads it
        started = total(samples, "squall_start_time_seconds", topology="scraped")
        assert started == pytest.approx(total(samples, "process_start_time_seconds"), abs=0.01)
    finally:
        out, err = proc.communicate(timeout=30)  # closes stdin: the run ends
    assert proc.returncode == 0, err.decode()
    assert "committed 13" in err.decode()  # the last record, in a batch of 1 at end of input


@pytest.mark.parametrize("value", ["abc", "99999", "127.0.0.1:", "host:port"])
def test_a_bad_metrics_port_is_a_usage_error_not_a_traceback(tmp_path: Path, value: str):
    from tests.deploy.test_local_runner import run_cli

    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(dlq=tmp_path / "dlq.jsonl", db=tmp_path / "w.db"))
    for command in (
        ["run", str(topology), "--input", "-"],
        ["kcl", str(topology), "--stream", "s"],
    ):
        r = run_cli([*command, "--metrics-port", value], input="")
        assert r.returncode == 2, r.stderr
        assert "Invalid value for '--metrics-port'" in r.stderr and "Traceback" not in r.stderr


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path):
    import socket

    from tests.deploy.test_local_runner import run_cli

    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(dlq=tmp_path / "dlq.jsonl", db=tmp_path / "w.db"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(
            ["run", str(topology), "--input", "-", "--metrics-port", f"127.0.0.1:{port}"],
            input='{"n": 1}\n',
        )
    assert r.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9108", ("0.0.0.0", 9108)),
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("[::1]:9108", ("::1", 9108)),  # brackets as in a URL: the address is served without them
        ("::1:9108", ("::1", 9108)),
    ],
)
def test_metrics_port_forms(value: str, expected: tuple[str, int]):
    from squall.observability.runners import parse_metrics_port

    assert parse_metrics_port(value) == expected


@pytest.mark.parametrize("value", ["٩١٠٨", "1:٩١٠٨"])  # Arabic-Indic digits: str.isdigit says yes
def test_metrics_port_digits_are_ascii(value: str):
    from squall.observability.runners import parse_metrics_port

    with pytest.raises(ValueError, match="is not \\[ADDR:\\]PORT"):
        parse_metrics_port(value)


def test_an_ipv6_metrics_address_in_brackets_is_served():
    from squall.observability.prometheus import PrometheusBackend, serve
    from squall.observability.runners import parse_metrics_port

    addr, port = parse_metrics_port(f"[::1]:{free_port()}")
    serve(port, PrometheusBackend().registry, addr)  # a daemon thread, gone with the process
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200


def test_a_kcl_metrics_port_in_use_is_one_line_and_the_daemon_does_not_start(tmp_path: Path):
    """The scrape server of ``squall kcl`` runs in a process of its own: a port in use must stop
    ``squall kcl`` with one line, not leave a traceback in that process and a fleet unscraped."""
    import socket

    from tests.deploy.test_local_runner import run_cli

    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.format(dlq=tmp_path / "dlq.jsonl", db=tmp_path / "w.db"))
    bin_dir = tmp_path / "bin"  # a "java" that only says it ran: no daemon, no network
    bin_dir.mkdir()
    (bin_dir / "java").write_text(f"#!/bin/sh\ntouch {tmp_path / 'daemon-started'}\n")
    (bin_dir / "java").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(
            [
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
        )
    assert r.returncode == 2, r.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "daemon-started").exists()
