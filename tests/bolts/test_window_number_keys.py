"""A key field's numbers group by value: ``1`` and ``1.0`` (``0`` and ``-0.0``) are one key, as JSON
has one number for them and the `dedupe` bolt and `where` compare them so. They were two keys,
two results for one window — and a sink upserting on the key column wrote one over the other.
Booleans and text stay apart (``true`` is not ``1``, ``"1"`` is text). A window stored before
(its deltas keyed ``[1.0]``) is read with its keys made the same way: the key's events of both
sides of the upgrade are one result."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from squall.bolts.window import WindowBolt
from squall.event import Event, RecordMeta
from tests.bolts import test_window
from tests.bolts.test_window import MIN, T0, make_bolt

store_url = test_window.store_url  # the same fixture: SQLite, PostgreSQL and Redis stores


def ev(i: int, t: int, **payload) -> Event:
    meta = RecordMeta("s", "shardId-000000000000", str(1000 + i), 0, "pk")
    return Event(b"", meta, None, i, {"timestamp": t, **payload})


def run(bolt: WindowBolt, events: list[Event]) -> list[dict]:
    out = bolt.process(events)
    bolt.commit_state(lambda e: True, None)
    bolt.state_committed()
    return [e.value for e in out.streams.get("default", []) if e.value["final"]]


def counts(results: list[dict], *fields: str) -> list[tuple]:
    """(key values with their types, count) of each final result, sorted."""
    return sorted((tuple((type(r[f]).__name__, r[f]) for f in fields), r["n"]) for r in results)


def test_whole_numbers_group_by_value_and_booleans_and_text_stay_apart(store_url, unique_name):
    bolt = make_bolt(store_url, unique_name)
    apps = [1, 1.0, 0, -0.0, 0.0, True, "1", 2.5, 1e16, 10**16]
    run(bolt, [ev(i, T0 + 1000 + i, app=a) for i, a in enumerate(apps)])
    results = run(bolt, [ev(99, T0 + 3 * MIN, app="x")])
    assert counts(results, "app") == sorted(
        [
            ((("int", 0),), 3),
            ((("int", 1),), 2),
            ((("int", 10**16),), 2),
            ((("bool", True),), 1),
            ((("str", "1"),), 1),
            ((("float", 2.5),), 1),
        ]
    )


def test_a_composite_key_groups_its_numbers_by_value(tmp_path: Path, unique_name):
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, key=["app", "v"])
    run(
        bolt,
        [
            ev(0, T0 + 1000, app="a", v=3),
            ev(1, T0 + 2000, app="a", v=3.0),
            ev(2, T0 + 3000, app="a", v=True),
        ],
    )
    results = run(bolt, [ev(99, T0 + 3 * MIN, app="x", v=0)])
    assert counts(results, "app", "v") == [
        ((("str", "a"), ("bool", True)), 1),
        ((("str", "a"), ("int", 3)), 2),
    ]


def test_a_window_stored_with_float_keys_before_closes_as_one_key(store_url, unique_name):
    """The first batch runs as releases before this one did: its delta is stored under the key
    text ``[1.0]`` (and ``[-0.0]``). The window closes after the upgrade, with more events of
    ``1`` and ``0``: one result per key, counting both."""
    bolt = make_bolt(store_url, unique_name)
    old_texts = {1.0: "[1.0]", -0.0: "[-0.0]"}
    bolt._key = lambda event: old_texts[event.value["app"]]  # the key text as it was stored
    run(bolt, [ev(0, T0 + 1000, app=1.0), ev(1, T0 + 2000, app=-0.0), ev(2, T0 + 3000, app=1.0)])
    del bolt._key
    run(bolt, [ev(3, T0 + 4000, app=1), ev(4, T0 + 5000, app=0)])
    results = run(bolt, [ev(99, T0 + 3 * MIN, app="x")])
    assert counts(results, "app") == [((("int", 0),), 2), ((("int", 1),), 3)]


@pytest.mark.parametrize("big", [1e16, 1.5e17, 2.0**63, -1e18])
def test_a_window_stored_with_a_large_whole_float_key_closes_as_one_key(
    store_url, unique_name, big
):
    """Past 10**16 the releases before wrote a whole float key in orjson's exponent form
    (``[1e+16]``, ``[9.223372036854776e+18]``): no ``.0`` in it. Such a stored key was left as it
    was — the key's events of both sides of the upgrade gave two results of one window."""
    bolt = make_bolt(store_url, unique_name)
    old_text = orjson.dumps([big]).decode()  # the key text as the release before stored it
    assert ".0" not in old_text
    bolt._key = lambda event: old_text
    run(bolt, [ev(0, T0 + 1000, app=big), ev(1, T0 + 2000, app=big)])
    del bolt._key
    run(bolt, [ev(2, T0 + 4000, app=big), ev(3, T0 + 5000, app=int(big))])
    results = run(bolt, [ev(99, T0 + 3 * MIN, app="x")])
    assert counts(results, "app") == [((("int", int(big)),), 4)]
