"""``squall --log-format json kcl``: the shard processes log JSON too."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy import kcl_daemon
from tests.kinesis.test_kcl_stream_arn import topology_file


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-format", "json"], {}, "json"),
        (["--log-format", "text"], {"SQUALL_LOG_FORMAT": "json"}, "text"),
        ([], {"SQUALL_LOG_FORMAT": "json"}, "json"),
        ([], {}, "text"),
    ],
)
def test_the_shard_processes_get_the_command_s_log_format(
    tmp_path, monkeypatch, args, env, expected
):
    """The daemon starts one ``python -m squall.deploy.kcl`` per shard, which reads its format from
    ``SQUALL_LOG_FORMAT``. The option was not passed on: under ``squall --log-format json kcl``
    the command's lines were JSON and every shard process's (the batches' lines, their failures)
    text, which a log pipeline parsing JSON drops or mangles (seen in the on-call rehearsal)."""
    started: list[dict] = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(env) or 0)
    monkeypatch.delenv("SQUALL_LOG_FORMAT", raising=False)
    topology = topology_file(tmp_path, "pistats")
    argv = [*args, "kcl", str(topology), "--properties-out", str(tmp_path / "kcl.properties")]
    result = CliRunner().invoke(main, argv, env={"AWS_REGION": "us-east-1", **env})
    assert result.exit_code == 0, result.output
    (daemon_env,) = started
    assert daemon_env["SQUALL_LOG_FORMAT"] == expected
