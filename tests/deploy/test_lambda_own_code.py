"""A team's own bolt (a module beside the topology) in a Lambda function: what goes wrong at init
is one error naming the component, or the file and line of the team's code, with no password in it.

The function runs under AWS's runtime client (awslambdaric), which reports an init failure by
itself — the exception's message and stack go to the log and to the Runtime API as they are,
past squall's log filter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from squall.deploy.lambda_consumer import make_handler
from squall.deploy.lambda_producer import make_handler as make_producer
from squall.errors import SquallError
from squall.topology import registry
from tests.deploy.test_local_runner import run_cli
from tests.lambda_runtime import LambdaFunction

TOPOLOGY = """
name: own-code
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - id: score
    type: "myteam.bolts:ScoreBolt"
    api_url: "https://scorer:hunter2secret@scores.example.com/v1"
sinks:
  - {id: out, type: stdout}
"""

PACKAGE = """
from pydantic import Field

from squall.bolts import RecordBolt
from squall.component import ComponentConfig


class ScoreConfig(ComponentConfig):
    api_url: str = Field(description="The scoring service")


class ScoreBolt(RecordBolt):
    Config = ScoreConfig

    def open(self, resources):
        # what an HTTP client's error says when the service is down: the URL as configured
        raise ConnectionError(f"cannot reach {self.config.api_url}")

    def process_event(self, event):
        return "default"
"""


@pytest.fixture(autouse=True)
def fresh_imports(monkeypatch):
    """Each test's ``myteam`` is its own: not the module, path or resolved type of another test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "myteam" or m.startswith("myteam.")]:
        monkeypatch.delitem(sys.modules, name)
    registry.resolve.cache_clear()
    yield
    for name in [m for m in sys.modules if m == "myteam" or m.startswith("myteam.")]:
        del sys.modules[name]
    registry.resolve.cache_clear()


def project(tmp_path: Path, bolts: str = PACKAGE) -> Path:
    """The team's folder: the topology, and its package ``myteam`` beside it."""
    (tmp_path / "myteam").mkdir()
    (tmp_path / "myteam" / "__init__.py").write_text("")
    (tmp_path / "myteam" / "bolts.py").write_text(bolts)
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    return tmp_path / "topology.yaml"


@pytest.mark.parametrize("make", [make_handler, make_producer], ids=["consumer", "producer"])
def test_an_own_bolt_that_fails_to_open_is_named_and_its_password_masked(tmp_path: Path, make):
    with pytest.raises(SquallError) as err:
        make(project(tmp_path))
    message = str(err.value)
    assert "hunter2secret" not in message
    assert message == (
        "bolt 'score': open failed: ConnectionError: cannot reach "
        "https://scorer:***@scores.example.com/v1"
    )


def test_the_runtime_client_reports_that_init_error_masked(tmp_path: Path):
    project(tmp_path)
    (tmp_path / "app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\n"
        "handler = make_handler('topology.yaml')\n"
    )
    fn = LambdaFunction("app.handler", tmp_path)
    try:
        assert fn.proc.wait(60) == 1  # the runtime exits once it has reported the init error
    finally:
        fn.stop()
    [error] = [json.loads(body) for body in fn.api.init_errors]
    assert error["errorMessage"].startswith("bolt 'score': open failed: ConnectionError")
    assert "scorer:***@" in error["errorMessage"]
    assert "hunter2secret" not in json.dumps(error) + fn.log()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("import cachetools_not_installed", "ModuleNotFoundError: No module named"),
        ("WEIGHTS = load_weights()", "NameError: name 'load_weights' is not defined"),
    ],
)
def test_an_error_importing_an_own_module_says_where_in_it(tmp_path: Path, line: str, error: str):
    """The team's module fails at import (a requirement left out of requirements.txt, a typo):
    the YAML place of the type, and the file and line of the team's code that raised."""
    bolts = PACKAGE.replace("from pydantic import Field\n", f"from pydantic import Field\n{line}\n")
    topology = project(tmp_path, bolts)
    with pytest.raises(SquallError) as err:
        make_handler(topology)
    message = str(err.value)
    assert message.startswith(f"{topology}:7:11: bolts[1].type: cannot import")
    assert error in message
    assert message.endswith(f"(at {tmp_path / 'myteam' / 'bolts.py'}, line 3)")


def test_a_type_naming_no_module_or_no_class_says_no_more_than_that(tmp_path: Path):
    topology = project(tmp_path)
    for ref, detail in [
        ("nomodule.bolts:ScoreBolt", "ModuleNotFoundError: No module named 'nomodule'"),
        ("myteam.bolts:ScoreBlot", "AttributeError: module 'myteam.bolts' has no attribute"),
    ]:
        topology.write_text(TOPOLOGY.replace("myteam.bolts:ScoreBolt", ref))
        with pytest.raises(SquallError) as err:
            make_handler(topology)
        assert detail in str(err.value) and "(at " not in str(err.value)


def test_squall_run_says_it_in_one_line_and_with_vv_shows_where_in_the_team_s_code(
    tmp_path: Path,
):
    topology = project(tmp_path)
    quiet = run_cli(["run", str(topology)], input="")
    assert quiet.returncode == 2
    assert quiet.stderr.strip().endswith(
        "cannot start: bolt 'score': open failed: ConnectionError: cannot reach "
        "https://scorer:***@scores.example.com/v1"
    )
    assert "Traceback" not in quiet.stderr
    debug = run_cli(["run", "-vv", str(topology)], input="")
    assert f'{tmp_path / "myteam" / "bolts.py"}", line 17, in open' in debug.stderr
    assert "hunter2secret" not in quiet.stderr + debug.stderr
