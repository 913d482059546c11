"""A bug in a team's own ``RecordBolt`` (a module beside the topology), met on one record in a
Lambda consumer: that record alone is dead-lettered, and its reason says where in the team's code
it raised — ``KeyError: 'amount'`` alone leaves a bug to be searched for in every line that reads
``amount``. The other records are committed and the invocation reports no failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from squall.deploy.lambda_consumer import make_handler
from squall.errors import MAX_REASON, describe_exception_at, without_location
from squall.topology import registry
from tests.factories import kinesis_lambda_event

TOPOLOGY = """
name: own-code-records
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: score, type: "myscore.bolts:ScoreBolt"}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink"}}
  - {{id: rejects, type: dead_letter, path: {rejects}}}
"""

BOLTS = """\
from squall.bolts import Bolt, Output, RecordBolt


def ratio(order):
    return order["amount"] / order["items"]


class ScoreBolt(RecordBolt):
    def process_event(self, event):
        order = event.value
        if order.get("kind") == "helper":
            order["ratio"] = ratio(order)
        order["score"] = order["amount"] * 2
        return "default"


class BatchScoreBolt(Bolt):
    def process(self, batch):
        out = Output(self.id)
        for event in batch:
            event.value["score"] = event.value["amount"] * 2
            out.emit(event)
        return out
"""


@pytest.fixture(autouse=True)
def fresh_imports(monkeypatch):
    """This test's ``myscore`` is its own: not the module, path or resolved type of another."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m == "myscore" or m.startswith("myscore.")]:
        del sys.modules[name]
    registry.resolve.cache_clear()


def project(tmp_path: Path, bolt: str) -> Path:
    (tmp_path / "myscore").mkdir()
    (tmp_path / "myscore" / "__init__.py").write_text("")
    module = tmp_path / "myscore" / "bolts.py"
    module.write_text(BOLTS)
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        TOPOLOGY.format(rejects=tmp_path / "rejects.jsonl").replace("ScoreBolt", bolt)
    )
    return module


def dead_letters(tmp_path: Path) -> list[tuple[str, str]]:
    text = (tmp_path / "rejects.jsonl").read_text()
    return [(d["component"], d["reason"]) for d in map(json.loads, text.splitlines())]


def test_a_record_a_bolt_of_yours_raises_on_is_dead_lettered_saying_where(tmp_path: Path):
    module = project(tmp_path, "ScoreBolt")
    handler = make_handler(tmp_path / "topology.yaml")
    event = kinesis_lambda_event(
        [
            {"amount": 3},
            {"total": 4},  # no amount: KeyError in process_event itself
            {"kind": "helper", "amount": 5, "items": 0},  # ZeroDivisionError in a helper
            {"amount": 6},
        ]
    )
    assert handler(event, None) == {"batchItemFailures": []}
    assert dead_letters(tmp_path) == [
        ("score", f"KeyError: 'amount' (at {module}, line 13, in process_event)"),
        (
            "score",
            "ZeroDivisionError: division by zero "
            f"(at {module}, line 12, in process_event; raised at {module}, line 5, in ratio)",
        ),
    ]


def test_a_batch_bolt_of_yours_raising_on_one_record_says_where_too(tmp_path: Path, caplog):
    """The engine isolates the record (halving the batch) and logs it at WARNING, with the same
    location, from the bolt's ``process`` on."""
    module = project(tmp_path, "BatchScoreBolt")
    handler = make_handler(tmp_path / "topology.yaml")
    event = kinesis_lambda_event([{"amount": 3}, {"total": 4}, {"amount": 6}])
    assert handler(event, None) == {"batchItemFailures": []}
    reason = f"KeyError: 'amount' (at {module}, line 21, in process)"
    assert dead_letters(tmp_path) == [("score", reason)]
    assert any(
        r.getMessage().endswith(f"isolated from its batch: {reason}") for r in caplog.records
    )


def test_the_location_keeps_the_reason_within_its_bound_and_masks_the_message():
    line = sys._getframe().f_lineno + 2
    try:
        raise ValueError("postgresql://app:hunter2secret@db.internal/x " + "x" * 5000)
    except ValueError as exc:
        reason = describe_exception_at(exc)
    assert "hunter2secret" not in reason
    assert len(reason) <= MAX_REASON + 40
    assert reason.endswith(f"(at {__file__}, line {line}, in {sys._getframe().f_code.co_name})")


def test_a_long_path_keeps_the_files_name():
    """A module deep in a build's or a venv's directories: the path was cut keeping its start,
    and the file's name, the part that says where, was what the reason lost."""
    path = "/opt/build/" + "cache/" * 40 + "myscore/bolts.py"
    scope: dict = {}
    exec(compile("def score(order):\n    return order['amount']\n", path, "exec"), scope)
    try:
        scope["score"]({})
    except KeyError as exc:
        reason = describe_exception_at(exc, skip=1)  # from the function called on
    assert reason.startswith("KeyError: 'amount' (at …")
    assert reason.endswith("/cache/myscore/bolts.py, line 2, in score)")
    assert len(reason) <= MAX_REASON + 40


def test_a_cut_message_keeps_its_length_with_the_location():
    """The location cut the reason again with a bare ``…``: the ``… [truncated, 5000 chars]``
    of the message's own cut was lost, and with it how long the message was."""
    try:
        raise ValueError("x" * 5000)
    except ValueError as exc:
        reason = describe_exception_at(exc)
    assert len(reason) <= MAX_REASON + 40
    assert reason.split(" (at ")[0].endswith("x… [truncated, 5000 chars]")


@pytest.mark.parametrize(
    ("reason", "answered"),
    [
        (
            "KeyError: 'amount' (at /var/task/t/b.py, line 13, in process_event)",
            "KeyError: 'amount'",
        ),
        (
            "ZeroDivisionError: division by zero (at /var/task/b.py, line 12, in process_event; "
            "raised at /var/task/b.py, line 5, in ratio)",
            "ZeroDivisionError: division by zero",
        ),
        # a path holding " (at ": cut from the first, never half shown
        ("KeyError: 'a' (at /srv/x (at y)/b.py, line 2, in f)", "KeyError: 'a'"),
        ("schema: amount too large (at most 3)", "schema: amount too large (at most 3)"),
        ("a RecordError's reason", "a RecordError's reason"),
    ],
)
def test_without_location_leaves_the_reason_an_outside_caller_may_read(reason, answered):
    assert without_location(reason) == answered
