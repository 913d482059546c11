"""A dead-letter file and its path as squall of 6 December (0824e7c, before the key index) left
them, opened by this version: its dead letters are not written again, and a path where the index
cannot go (a device, a folder the process may not create files in) is no index, or a clear error."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from squall.errors import SinkError
from squall.sinks import dead_letter
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome

DATA = Path(__file__).parent / "data"

TOPOLOGY = """
name: dl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: up-{name}}}
  - {{id: dlq, type: dead_letter, path: '{path}', fsync: {fsync}, remember: 1}}
"""


def engine(path: str, name: str, *, fsync: bool = False) -> Engine:
    text = TOPOLOGY.format(path=path, name=name, fsync=str(fsync).lower())
    return Engine(compile_plan(load_text(text, base_dir=Path(path).parent))).open()


def the_input() -> list[list]:
    """The records the fixture's run had (tests/sinks/data/dead-letters-0824e7c.jsonl: written
    by squall at 0824e7c from these, with the same sink): 12 bad ones in three batches."""
    return [
        records_from(
            [f"not json {i}".encode() for i in range(start, start + 4)] + [{"ok": start}],
            start=start * 2 + 1,
        )
        for start in (0, 4, 8)
    ]


def test_the_dead_letters_squall_of_6_december_wrote_are_not_written_again(tmp_path: Path):
    """The file is indexed at the first open (it has no index) and its keys are those this
    version makes: a second run of the input (a file spout after the upgrade) adds no line.
    ``remember: 1``: the index, not the memory of the file's tail, recognises them."""
    path = tmp_path / "rejects.jsonl"
    shutil.copyfile(DATA / "dead-letters-0824e7c.jsonl", path)
    before = path.read_bytes()
    e = engine(str(path), "old")
    for batch in the_input():
        result = e.process(batch)
        assert result.ok and result.count(Outcome.DEAD_LETTERED) == 4
    e.close()
    assert path.read_bytes() == before
    assert path.with_name("rejects.jsonl.index").exists()
    assert len({json.loads(line)["event_id"] for line in before.splitlines()}) == 12


def test_a_dead_letter_path_that_is_no_regular_file_keeps_no_index(monkeypatch):
    """``path: /dev/null`` (a device: nothing to read back) wrote with 6 December's squall; the
    index beside it stopped the start where the process may not create files in /dev, and root
    created ``/dev/null.index``. Now a device keeps no index (as ``index: false``)."""
    made = []

    def no_index(path, *args, **kwargs):  # (never beside /dev/null, even if the test fails)
        made.append(path)
        raise AssertionError(f"an index of {path}")

    monkeypatch.setattr(dead_letter, "KeyIndex", no_index)
    for run in range(2):
        e = engine("/dev/null", f"null{run}")
        for batch in the_input():
            result = e.process(batch)
            assert result.ok and result.count(Outcome.DEAD_LETTERED) == 4
        e.close()
    assert made == []


def test_an_index_the_process_cannot_create_is_a_clear_error_at_start():
    """A file in a folder where this process may not create the index's files (another user's
    folder; here /proc, where not even root may): the start fails naming the index, the folder and
    ``index: false``, not SQLite's bare ``unable to open database file``."""
    with tempfile.NamedTemporaryFile() as f:
        path = f"/proc/self/fd/{f.fileno()}"
        with pytest.raises(SinkError) as err:
            engine(path, "proc")
    message = str(err.value)
    assert f"cannot create the key index of {path} ({path}.index: unable to open" in message
    assert "/proc/self/fd must let this process create files" in message
    assert "`index: false`" in message


@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
@pytest.mark.parametrize("device", ["terminal", "/dev/null"])
def test_a_terminal_or_dev_null_takes_the_dead_letters_whatever_fsync_says(
    device: str, fsync: bool
):
    """The README says a path that is no regular file (``/dev/null``, a terminal) keeps no index;
    but a terminal failed the start (its tail was read: "not seekable"), and either with the
    default ``fsync: true`` failed it too (fsync of a device: "Invalid argument"). A device keeps
    nothing to read back nor to make durable: its tail is not read, it is not fsynced."""
    import os
    import pty

    master = slave = None
    if device == "terminal":
        master, slave = pty.openpty()
        device = os.ttyname(slave)
    try:
        e = engine(device, f"dev{fsync}", fsync=fsync)
        result = e.process(the_input()[0])
        assert result.ok and result.count(Outcome.DEAD_LETTERED) == 4
        e.close()
        if master is not None:
            shown = os.read(master, 1 << 16)
            assert shown.count(b'"event_id"') == 4
    finally:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
