"""The engine's outcome codes per record (``Engine._codes``) over random ledgers: the usual
batch's shortcut (every record committed or dead-lettered) gives what the full rule gives —
failed, else dead-lettered, else committed, else filtered, else failed as lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from squall.event import Failure
from squall.topology.executor import Engine
from squall.topology.outcomes import _COMMITTED, _DEAD, _FAILED, _FILTERED, _Ledger

COUNT = st.sampled_from([0, 0, 1, 2])


def reference(ledger: _Ledger) -> tuple[list[int], list[int]]:
    """The rule, record by record: the codes and the failed records' indices, in order."""
    failed = dict(ledger.failed)
    codes = []
    for i in range(ledger.n):
        if i in failed:
            codes.append(_FAILED)
        elif ledger.dead[i]:
            codes.append(_DEAD)
        elif ledger.committed[i]:
            codes.append(_COMMITTED)
        elif ledger.dropped[i]:
            codes.append(_FILTERED)
        else:
            failed[i] = Failure("engine", "no outcome: a bolt lost the event")
            codes.append(_FAILED)
    return codes, list(failed)


@st.composite
def ledgers(draw: st.DrawFn) -> _Ledger:
    n = draw(st.integers(0, 40))
    ledger = _Ledger(n)
    usual = draw(st.booleans())  # every record committed or dead-lettered
    for i in range(n):
        ledger.committed[i] = draw(COUNT)
        ledger.dead[i] = draw(COUNT)
        if usual and not ledger.committed[i] and not ledger.dead[i]:
            ledger.committed[i] = 1
        ledger.dropped[i] = draw(COUNT)
    for i in draw(st.lists(st.integers(0, n - 1), max_size=5)) if n else []:
        ledger.failed[i] = Failure("sink", "write failed")
    return ledger


@given(ledgers())
def test_codes_follow_the_rule_record_by_record(ledger: _Ledger):
    expected, failed = reference(ledger)
    assert Engine._codes(ledger) == expected
    assert list(ledger.failed) == failed
