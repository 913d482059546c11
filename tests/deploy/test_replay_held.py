"""``squall replay``'s summary accounts for every record it re-drove, held ones included."""

from __future__ import annotations

import json
from pathlib import Path

from tests.deploy.test_replay import SCHEMA_V2, TOPOLOGY, replay


def test_a_record_held_in_a_replay_is_in_its_summary(tmp_path: Path):
    """Two dead letters of one record (one position, two dead-lettered events) are one lineage
    in the replay: the second is held after the first fails again (no dead-letter sink). The
    summary said "committed 0, …, failed 1" for 2 selected: the held one was in no figure."""
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V2))
    path = tmp_path / "topology.yaml"
    path.write_text(
        TOPOLOGY.format(url=f"sqlite:///{tmp_path / 'wh.db'}", table="events").replace(
            "  - {id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}\n", ""
        )
    )
    meta = {"stream": "events", "shard_id": "s", "sequence_number": "1"}
    docs = [
        {"event_id": e, "component": "validate", "reason": "r", "meta": meta, "record": r}
        for e, r in (("a", '{"n": 9, "kind": "a"}'), ("b", '{"n": 1, "kind": "a"}'))
    ]
    dl = tmp_path / "dl.jsonl"
    dl.write_text("".join(json.dumps(d) + "\n" for d in docs))

    result = replay(path, input_path=dl)

    assert result.exit_code == 1, result.output
    assert "selected 2," in result.output
    assert "committed 0, dead-lettered again 0, filtered 0, failed 1, held 1;" in result.output
