"""``squall replay``'s exit code for a script that deletes its input when the replay succeeded
(``squall replay topology.yaml rejects.jsonl && rm rejects.jsonl``): 0 only when every line of
the input was read and every selected record went through. It exited 0 with lines it could not
read (named in the summary, then deleted with the file), and with records dead-lettered again
into the very file it read (deleted with it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.test_replay import (  # noqa: F401 - fixtures
    SCHEMA_V2,
    dead_letters,
    replay,
    rows,
    topology,
)

pytestmark = pytest.mark.parametrize("topology", ["sqlite"], indirect=True)


def fixable(topology: Path) -> bytes:  # noqa: F811 - the fixture's path
    """The dead letter of record 2 (``kind: c``), which SCHEMA_V2 lets through."""
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))
    for line in (topology.parent / "rejects.jsonl").read_bytes().splitlines():
        doc = json.loads(line)
        if doc["component"] == "validate" and json.loads(doc["record"])["n"] == 2:
            return line
    raise AssertionError("no dead letter of record 2")


def test_unreadable_lines_exit_3_after_every_readable_one_is_replayed(
    topology: Path,  # noqa: F811
    tmp_path: Path,
):
    no_meta = json.dumps({"event_id": "x", "component": "c", "reason": "r", "record": "{}"})
    path = tmp_path / "old.jsonl"
    path.write_bytes(b"\n".join([b"{torn", fixable(topology), no_meta.encode()]) + b"\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert "committed 1, dead-lettered again 0" in result.output
    assert [r[1] for r in rows(topology)] == [1, 2]  # the readable one went through
    assert f"unreadable: {path}:1: not JSON" in result.output
    assert f"unreadable: {path}:3: meta is not an object" in result.output
    assert (
        "not replayed: 2 unreadable line(s), named above; the input still holds them (exit 3; "
        "--allow-unreadable accepts them)" in result.output
    )

    dry = replay(topology, "--dry-run", input_path=path)  # says so before running anything
    assert dry.exit_code == 3 and "not replayed: 2 unreadable line(s)" in dry.output, dry.output

    accepted = replay(topology, "--allow-unreadable", input_path=path)

    assert accepted.exit_code == 0, accepted.output
    assert f"unreadable: {path}:1: not JSON" in accepted.output  # still named
    assert "not replayed, accepted (--allow-unreadable): 2 unreadable line(s)" in accepted.output


def test_an_unreplayable_dead_letter_exits_3_and_is_accepted_by_allow_unreadable(
    topology: Path,  # noqa: F811
    tmp_path: Path,
):
    doc = json.loads(fixable(topology))
    doc["meta"]["defect"] = "line of 2000000 bytes over max_line_bytes: kept its first 1048576"
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(doc) + "\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert "unreplayable 1" in result.output and f"unreplayable: {path}:1:" in result.output
    assert "not replayed: 1 unreplayable dead letter(s)" in result.output
    assert replay(topology, "--allow-unreadable", input_path=path).exit_code == 0


def test_more_unreadable_lines_than_listed_are_counted_in_the_summary(
    topology: Path,  # noqa: F811
    tmp_path: Path,
):
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b"".join(b"{torn %d\n" % n for n in range(25)) + fixable(topology) + b"\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert f"unreadable: {path}:20: not JSON" in result.output
    assert f"{path}:21:" not in result.output.split("replayed in")[1]  # listed: the first 20
    assert "unreadable: 5 more not listed (each was logged)" in result.output
    assert "committed 1" in result.output


def test_records_dead_lettered_again_into_the_file_read_exit_4_so_it_is_not_deleted(
    topology: Path,  # noqa: F811
):
    """Nothing fixed: the three records fail again, and their new dead letters are appended to
    rejects.jsonl, the file replayed — ``&& rm rejects.jsonl`` deleted them on exit 0."""
    before = dead_letters(topology)

    result = replay(topology)

    assert result.exit_code == 4, result.output
    assert len(dead_letters(topology)) == len(before) + 3
    assert (
        "failed again: 3 record(s) dead-lettered again, into the topology's dead-letter sink "
        "(exit 4): if it writes to the input, the input holds them now" in result.output
    )
    # unreadable lines and records failing again: 3, the lines only the input holds come first
    (topology.parent / "rejects.jsonl").open("a").write("{torn\n")
    both = replay(topology)
    assert both.exit_code == 3, both.output
    assert "failed again: 3 record(s)" in both.output and "(exit 4)" not in both.output


def test_every_record_through_exits_0(topology: Path, tmp_path: Path):  # noqa: F811
    path = tmp_path / "fixed.jsonl"
    path.write_bytes(fixable(topology) + b"\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 0, result.output
    assert "committed 1" in result.output
    assert "not replayed" not in result.output and "failed again" not in result.output


def test_a_filtered_replay_exits_0_and_says_the_input_still_holds_what_it_did_not_select(
    topology: Path,  # noqa: F811
    tmp_path: Path,
):
    """Exit 0 is about the selected dead letters: the summary names the ones the filters left in
    the input, so ``&& rm`` after a filtered replay is not taken for safe."""
    path = tmp_path / "fixed.jsonl"
    path.write_bytes(fixable(topology) + b"\n")

    result = replay(topology, "--component", "decode", input_path=path)

    assert result.exit_code == 0, result.output
    assert "not matching the filters 1" in result.output
    assert (
        "not selected: 1 dead letter(s) did not match the filters; the input still holds them"
        in result.output
    )
    dry = replay(topology, "--component", "decode", "--dry-run", input_path=path)
    assert dry.exit_code == 0 and "not selected: 1 dead letter(s)" in dry.output, dry.output
