"""`squall kcl` and a logback configuration of the user's for the daemon.

d3abca2 gave the daemon squall's own logging configuration with `-Dlogback.configurationFile` on
its command line. A JVM reads options from JAVA_TOOL_OPTIONS (and the java launcher from
JDK_JAVA_OPTIONS) first and the command line's `-D` overrides them: an SRE's own configuration
(`JAVA_TOOL_OPTIONS=-Dlogback.configurationFile=/etc/kcl/logback.xml`, say JSON lines for the log
shipper) was replaced by squall's, silently. It rules again; squall's is written and passed only
without one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from squall.cli import main
from tests.kinesis.test_kcl_stream_arn import topology_file


def kcl_print(tmp_path: Path, env: dict[str, str | None]):
    jars = tmp_path / "jars"
    jars.mkdir(exist_ok=True)
    (jars / "kcl.jar").write_bytes(b"")  # --print starts nothing: any jar folder
    props = tmp_path / "kcl.properties"
    result = CliRunner().invoke(
        main,
        ["kcl", str(topology_file(tmp_path, "pistats")), "--print", "--worker-id", "w1"]
        + ["--jars", str(jars), "--properties-out", str(props)],
        env={"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": None, **env},
    )
    assert result.exit_code == 0, result.output
    return result.output, tmp_path / "kcl.logback.xml"


@pytest.mark.parametrize("variable", ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"])
def test_a_logback_configuration_of_the_user_s_is_not_overridden(tmp_path: Path, variable: str):
    mine = f"-Xmx512m -Dlogback.configurationFile={tmp_path / 'mine.xml'}"
    env = {v: None for v in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")} | {variable: mine}
    out, logback = kcl_print(tmp_path, env)
    assert "-Dlogback.configurationFile" not in out
    assert not logback.exists()


def test_without_one_squall_s_configuration_is_written_and_passed(tmp_path: Path):
    out, logback = kcl_print(tmp_path, {"JAVA_TOOL_OPTIONS": None, "JDK_JAVA_OPTIONS": None})
    assert f"-Dlogback.configurationFile={logback}" in out
    assert 'name="software.amazon.kinesis.multilang.DrainChildSTDERRTask" level="OFF"' in (
        logback.read_text()
    )
