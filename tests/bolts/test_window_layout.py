"""A window bolt whose `aggregates` (or `key`) changed while its state holds windows: a topology
edited and redeployed with windows open, or a file run again after more input was appended.
The stored states are lists in the order of the aggregates; before each stored body named its
layout, an added aggregate failed every record of the batch (`zip() argument 2 is shorter than
argument 1`, each record dead-lettered alone) and two aggregates swapped exchanged their counts
silently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from squall.errors import SinkError
from squall.event import Event
from squall.topology.executor import END_OF_INPUT
from tests.bolts.test_window import MIN, T0, ev, finals, make_bolt, run, store_url  # noqa: F401

OPENS = {"fn": "count", "where": {"kind": "open"}}
DEVICES = {"fn": "count_distinct", "field": "device"}


def events(first: int, n: int, t: int) -> list:
    """``n`` events of app "a" in the minute of ``t``: kinds register, open, open, …"""
    return [
        ev(i, t + i, kind="register" if i % 3 == 0 else "open", device=f"d{i % 4}")
        for i in range(first, first + n)
    ]


def to_the_end(bolt) -> list[dict]:
    """The results of the end of input (``squall run`` at a file's end), committed."""
    out = bolt.flush(Event(b"", END_OF_INPUT, None, None, {}))
    bolt.commit_state(lambda e: True)
    bolt.state_committed()
    return [e.value for e in out.streams.get("default", [])]


def test_an_aggregate_added_while_a_window_is_open_counts_from_then_on(store_url, unique_name):  # noqa: F811
    before = make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}})
    results, late = run(before, events(0, 6, T0))
    assert results == [] and late == []
    after = make_bolt(
        store_url, unique_name, aggregates={"n": {"fn": "count"}, "opens": OPENS, "d": DEVICES}
    )
    results, late = run(after, events(6, 3, T0) + [ev(20, T0 + 2 * MIN, kind="open")])
    assert late == []
    result = finals(results)[("2024-05-01T10:00:00.000Z", "a")]
    # n over the whole window; the new aggregates over the events since the change (6, 7, 8)
    assert (result["n"], result["opens"], result["d"]) == (9, 2, 3)


def test_aggregates_reordered_and_renamed_keep_their_own_states(store_url, unique_name):  # noqa: F811
    regs = {"fn": "count", "where": {"kind": "register"}}
    before = make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}, "regs": regs})
    run(before, events(0, 6, T0))  # 6 events, 2 registrations
    after = make_bolt(
        store_url, unique_name, aggregates={"registrations": regs, "n": {"fn": "count"}}
    )
    results, _ = run(after, events(6, 3, T0) + [ev(20, T0 + 2 * MIN, kind="open")])
    result = finals(results)[("2024-05-01T10:00:00.000Z", "a")]
    assert (result["n"], result["registrations"]) == (9, 3)


def test_an_aggregate_removed_leaves_the_others_counts(store_url, unique_name):  # noqa: F811
    before = make_bolt(store_url, unique_name, aggregates={"opens": OPENS, "n": {"fn": "count"}})
    run(before, events(0, 6, T0))
    after = make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}})
    results, _ = run(after, events(6, 3, T0) + [ev(20, T0 + 2 * MIN, kind="open")])
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 9


def test_a_closed_window_reopened_under_new_aggregates_is_emitted_complete(
    store_url,  # noqa: F811
    unique_name,
):
    """The window's snapshot (its closed state) is read by the layout too."""
    before = make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}})
    run(before, events(0, 6, T0))
    assert [r["n"] for r in to_the_end(before)] == [6]  # emitted and closed
    after = make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}, "opens": OPENS})
    results, late = run(after, events(6, 2, T0))  # not late: the end moved no watermark; 1 open
    assert late == [] and results == []
    assert [(r["n"], r["opens"]) for r in to_the_end(after)] == [(8, 1)]


def test_another_key_fails_the_batch_as_a_misconfiguration(store_url, unique_name):  # noqa: F811
    before = make_bolt(store_url, unique_name, key=["app"])
    run(before, events(0, 3, T0))
    after = make_bolt(store_url, unique_name, key=["app", "kind"])
    with pytest.raises(SinkError, match=r"keyed by \['app'\], this bolt by \['app', 'kind'\]"):
        after.process(events(3, 1, T0) + [ev(20, T0 + 2 * MIN, kind="open")])


def test_a_body_stored_before_layouts_is_read_as_before_or_refused(tmp_path: Path, unique_name):
    """A window a squall before this one stored (no layout in its body): read as it is while its
    states fit the aggregates, else the batch fails naming the state and what to do."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    before = make_bolt(url, unique_name)
    run(before, events(0, 4, T0))
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    table = f"w_{unique_name}_log"
    (body,) = db.execute(f"select body from {table} where body like '%layout%'").fetchone()
    assert body.startswith('{"~layout":')
    db.execute(f"update {table} set body = ? where body = ?", ('{"[\\"a\\"]":[4]}', body))
    same = make_bolt(url, unique_name)
    results, _ = run(same, events(4, 1, T0) + [ev(20, T0 + 2 * MIN)])
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 5
    again = make_bolt(url, unique_name + "x")
    run(again, events(0, 4, T0))
    table = f"w_{unique_name}x_log"
    db.execute(f"update {table} set body = ? where body like '%layout%'", ('{"[\\"a\\"]":[4]}',))
    changed = make_bolt(
        url,
        unique_name + "x",
        table=f"w_{unique_name}x",
        aggregates={"n": {"fn": "count"}, "opens": OPENS},
    )
    with pytest.raises(SinkError, match="holds 1 aggregate.* this bolt has 2.*another `name:`"):
        changed.process([ev(20, T0 + 2 * MIN)])


def test_another_size_fails_the_batch_as_a_misconfiguration(store_url, unique_name):  # noqa: F811
    """A minute's states read as an hour's (its start not even an hour's) were emitted as an
    hour's result: the batch fails instead, naming both."""
    before = make_bolt(store_url, unique_name)
    run(before, events(0, 3, T0 + MIN))
    after = make_bolt(store_url, unique_name, size="1h")
    with pytest.raises(SinkError, match="60000 ms long every 60000 ms, this bolt's 3600000 ms"):
        after.process([ev(20, T0 + 3 * 3_600_000)])


def test_a_where_of_a_yaml_date_reads_its_own_states(tmp_path: Path, unique_name):
    """The layout is compared as JSON gives it back: a `where` value YAML makes a date (JSON
    writes its text) must not make the bolt take its own states for another aggregate's."""
    import datetime

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = {"n": {"fn": "count", "where": {"kind": [datetime.date(2026, 3, 29), "open"]}}}
    run(make_bolt(url, unique_name, aggregates=config), events(0, 6, T0))  # 4 opens
    results, _ = run(
        make_bolt(url, unique_name, aggregates=config),
        events(6, 3, T0) + [ev(20, T0 + 2 * MIN, kind="x")],
    )
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 6


def test_a_where_from_1_to_true_is_another_aggregate(store_url, unique_name):  # noqa: F811
    """`where: {vip: 1}` and `{vip: true}` match other events (JSON's true is not 1), but Python
    says ``True == 1``: the layouts compared equal and the new filter took the old one's count."""
    before = make_bolt(
        store_url, unique_name, aggregates={"n": {"fn": "count", "where": {"vip": 1}}}
    )
    run(before, [ev(i, T0 + i, vip=1) for i in range(6)])
    after = make_bolt(
        store_url, unique_name, aggregates={"n": {"fn": "count", "where": {"vip": True}}}
    )
    batch = [ev(i, T0 + i, vip=True) for i in range(6, 9)] + [ev(20, T0 + 2 * MIN, vip=1)]
    results, _ = run(after, batch)
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 3  # since the change


def test_a_where_list_reordered_keeps_its_count(store_url, unique_name):  # noqa: F811
    """`[open, register]` and `[register, open]` (and `open` and `[open]`) are one filter: the
    states were dropped and the aggregate counted from the change, as if it were new."""
    first = {"n": {"fn": "count", "where": {"kind": ["open", "register"]}}}
    run(make_bolt(store_url, unique_name, aggregates=first), events(0, 6, T0))
    then = {"n": {"fn": "count", "where": {"kind": ["register", "open"]}}}
    run(make_bolt(store_url, unique_name, aggregates=then), events(6, 3, T0))
    opens = {"n": {"fn": "count", "where": {"kind": "open"}}}
    run(make_bolt(store_url, unique_name, aggregates=opens), events(9, 3, T0))  # 2 opens
    last = {"n": {"fn": "count", "where": {"kind": ["open"]}}}
    results, _ = run(
        make_bolt(store_url, unique_name, aggregates=last),
        events(12, 3, T0) + [ev(20, T0 + 2 * MIN, kind="x")],  # 2 opens
    )
    # 9 (kind open or register), then opens only: an aggregate dropped for `open` (from 9),
    # whose count starts at 0 there: 2 + 2 under `[open]` read as `open`
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 4


def test_a_where_of_an_integer_beyond_64_bits_is_written_in_the_layout(store_url, unique_name):  # noqa: F811
    """JSON writes no integer beyond 64 bits (orjson: `Integer exceeds 64-bit range`): the bolt
    could not start (`squall run` exit 2) where it had counted them; the number's text (a
    `where` of another value) is still another filter."""
    big = 2**70
    config = {"n": {"fn": "count", "where": {"x": big}}}
    run(
        make_bolt(store_url, unique_name, aggregates=config),
        [ev(i, T0 + i, x=big) for i in range(4)],
    )
    results, _ = run(
        make_bolt(store_url, unique_name, aggregates=config),
        [ev(4, T0 + 4, x=big), ev(5, T0 + 5, x=str(big)), ev(20, T0 + 2 * MIN, x=1)],
    )
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 5
    text = {"n": {"fn": "count", "where": {"x": str(big)}}}
    results, _ = run(
        make_bolt(store_url, unique_name + "t", table=f"w_{unique_name}t", aggregates=config),
        [ev(i, T0 + i, x=big) for i in range(3)],
    )
    results, _ = run(
        make_bolt(store_url, unique_name + "t", table=f"w_{unique_name}t", aggregates=text),
        [ev(3, T0 + 3, x=str(big)), ev(20, T0 + 2 * MIN, x=1)],
    )
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 1  # since the change


def test_a_where_of_a_lone_surrogate_is_written_in_the_layout(store_url, unique_name):  # noqa: F811
    """YAML's ``"\\ud800"`` is a text JSON (orjson) does not write: the bolt could not start;
    a Python bolt's ``json.loads`` gives such a text, which the `where` counts."""
    config = {"n": {"fn": "count", "where": {"x": ["\ud800", "y"]}}}
    run(make_bolt(store_url, unique_name, aggregates=config), [ev(0, T0, x="y")])
    results, _ = run(
        make_bolt(store_url, unique_name, aggregates=config),
        [ev(1, T0 + 1, x="y"), ev(2, T0 + 2, x="\\ud800"), ev(3, T0 + 3, x="\ud800")]
        + [ev(20, T0 + 2 * MIN, x=1)],
    )
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 3  # not the escaped text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf"), 1]])
def test_a_where_of_nan_or_infinity_is_refused(value):
    """JSON has neither: the layout wrote both as null, so `where: {x: .inf}` took the states
    of `where: {x: null}` (another filter: the events whose `x` is null), seen: 5 + 1."""
    from squall.bolts.window import Aggregate

    with pytest.raises(ValueError, match=r"where\.x: .* is no JSON value"):
        Aggregate(fn="count", where={"x": value})


def test_an_empty_where_is_no_where(store_url, unique_name):  # noqa: F811
    """`where: {}` counts every event, as no `where` does: the layouts differed and the
    aggregate restarted from the change as if it were new."""
    run(make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count"}}), events(0, 6, T0))
    results, _ = run(
        make_bolt(store_url, unique_name, aggregates={"n": {"fn": "count", "where": {}}}),
        events(6, 3, T0) + [ev(20, T0 + 2 * MIN, kind="x")],
    )
    assert finals(results)[("2024-05-01T10:00:00.000Z", "a")]["n"] == 9
