"""A Kinesis spout's SQL checkpoint store pointed at a Redis resource is refused at start at
`spout.checkpoint.resource`, with the file and line, as a sink's wrong resource is."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.test_local_runner import run_cli
from tests.deploy.test_start_errors import one_error_line

TOPOLOGY = """\
name: checkpoint-kind
resources:
  cache: {url: "redis://:s3cret@127.0.0.1:1/0"}
spout:
  type: kinesis
  stream: never-read
  endpoint_url: "http://127.0.0.1:1"
  checkpoint: {store: sql, resource: cache}
sinks: [{id: out, type: stdout}]
"""


def test_a_sql_checkpoint_on_a_redis_resource_is_located(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(TOPOLOGY)
    r = run_cli(["run", str(t)], input="")
    assert r.returncode == 2
    assert one_error_line(r.stderr).endswith(
        f"{t}:8:38: spout.checkpoint.resource: resource 'cache' is not a SQL "
        "database (redis://:***@127.0.0.1:1/0)"
    )
