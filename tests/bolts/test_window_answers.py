"""The window bolt's *answers* checked as a data engineer would: the numbers of its results
against an independent computation in plain Python over the same events (for the sketches, their
documented error bounds), at window boundaries, across stores and across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.bolts import window_aggs
from squall.times import parse_time
from tests.bolts.test_window import MIN, T0, ev, make_bolt, run


def sqlite(tmp_path: Path, name: str = "s") -> str:
    return f"sqlite:///{tmp_path / (name + '.db')}"


def final_results(bolt, events, end=T0 + 10 * MIN) -> dict:
    """The final results of one batch of ``events`` and a later event closing their windows:
    (window start, app) → result."""
    results, _ = run(bolt, events)
    more, _ = run(bolt, [ev(10**6, end, app="closer")])
    return {
        (r["window_start"], r["app"]): r for r in results + more if r["final"] and r["app"] != "closer"
    }


# -- event times at a window's boundary --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [1_714_557_659.9996, "1714557659.9996", 1_714_557_659_999.6, "1714557659999.6"],
)
def test_an_epoch_time_with_a_fraction_of_a_millisecond_stays_in_its_millisecond(value):
    """10:00:59.9996 is in the window [10:00, 10:01), as its ISO form is: epoch seconds and
    milliseconds with a fraction were rounded to the nearest millisecond, 10:01:00.000 — the next
    window (a producer stamping ``time.time()`` put ~1 event in 2,000 in the next window)."""
    assert parse_time("2024-05-01T10:00:59.9996Z") == T0 + 59_999
    assert parse_time(value) == T0 + 59_999


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1_714_557_600.1, T0 + 100),  # (the float is 1714557600.0999999: its decimal counts)
        (1_714_557_600.001, T0 + 1),
        (1_714_557_600.0009, T0),
        ("1714557600.12345678901234567890123456789", T0 + 123),
        (1e10, 10**13),
        (99_999_999_999.9999, 99_999_999_999_999),  # seconds: the last below 10¹¹
        (100_000_000_000.9, 100_000_000_000),  # milliseconds from 10¹¹
    ],
)
def test_epoch_times_are_floored_to_the_millisecond_from_their_decimal_value(value, ms):
    assert parse_time(value) == ms


def test_an_event_a_fraction_of_a_millisecond_before_the_end_is_counted_in_its_window(tmp_path):
    bolt = make_bolt(sqlite(tmp_path), "w")
    events = [
        ev(0, T0 + 1000),
        ev(1, T0 + 1000),
        ev(2, T0 + 1000),
    ]
    events[1].value["timestamp"] = 1_714_557_659.9996  # 10:00:59.9996, epoch seconds
    events[2].value["timestamp"] = "2024-05-01T10:00:59.9996Z"
    got = final_results(bolt, events)
    assert {k[0]: r["n"] for k, r in got.items()} == {"2024-05-01T10:00:00.000Z": 3}
