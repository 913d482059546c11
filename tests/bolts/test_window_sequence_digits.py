"""A sequence number of Unicode digits that ``int`` cannot read ("²", "①": ``str.isdigit`` takes
them) — a custom spout's, or a dead letter's edited and replayed — is no number for the window
bolt: its commit read the last record's number with ``int`` and raised ``ValueError`` (every
retry of the batch), and a later batch's process did too once its shard had a mark."""

from __future__ import annotations

from squall.event import Event, RecordMeta
from tests.bolts.test_window import MIN, T0, make_bolt, run


def events(numbers: list[str], t: int, start: int = 0) -> list[Event]:
    out = []
    for i, seq in enumerate(numbers):
        meta = RecordMeta("s", "shardId-000000000000", seq, 0, "pk")
        out.append(Event(b"", meta, None, start + i, {"timestamp": t + i, "app": "a"}))
    return out


def test_a_sequence_number_int_cannot_read_is_no_number(tmp_path):
    bolt = make_bolt(f"sqlite:///{tmp_path / 'state.db'}", "digits", emit="every_batch")
    results, late = run(bolt, events(["1000", "1001"], T0))  # the shard's mark
    assert not late and results[-1]["n"] == 2
    results, late = run(bolt, events(["1002", "1003²"], T0 + 10))  # the last one: no number
    assert not late and results[-1]["n"] == 4
    # a partial commit (a failed record of the shard): its uncovered records are kept aside
    batch = events(["1004", "①", "1006"], T0 + 20)
    results, late = run(bolt, batch, covered=lambda e: e is batch[0])
    assert not late and results[-1]["n"] == 7
    results, _ = run(bolt, events(["²"], T0 + 2 * MIN))  # the next window closes the first
    # committed: 4 and the covered one (the two uncovered would come again, as records do)
    assert [r["n"] for r in results if r["final"]] == [5]
