"""Run Prometheus' own ``promtool`` on generated alerting rules: ``check rules``, then ``test
rules`` with input series sampled a minute apart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml


def promtool_test(
    tmp_path: Path,
    rules: dict[str, Any],
    series: dict[str, list[str]],
    checks: list,
    *,
    interval: str = "1m",
) -> None:
    """Check ``rules`` and evaluate the ``alert_rule_test`` entries ``checks`` against ``series``
    (one value an ``interval`` each, a scrape's); fail with promtool's output."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    check = _promtool(tmp_path, "check", "rules", "rules.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": interval,
                "input_series": [{"series": k, "values": " ".join(v)} for k, v in series.items()],
                "alert_rule_test": checks,
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    r = _promtool(tmp_path, "test", "rules", "test.yaml")
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "test.yaml").read_text()


def _promtool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
