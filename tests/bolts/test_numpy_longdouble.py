"""NumPy's ``longdouble`` (``float128`` on x86-64 Linux) is a scalar of kind ``f`` whose
``item()`` is itself, not a Python float: ``exact_json.as_number`` returned it as "its number",
so every caller that asks again (orjson's ``default``, the dedupe key, the event time) looped
until Python's recursion limit. It is no JSON number squall can write exactly: it is refused
(or written as text) with a reason that names it, as any value without a JSON form is."""

from __future__ import annotations

import orjson
import pytest

from squall import exact_json
from squall.bolts.dedupe import compared
from squall.times import parse_time
from tests.bolts.test_window import T0, ev, make_bolt

np = pytest.importorskip("numpy")


def test_as_number_is_not_a_number_for_a_longdouble():
    assert exact_json.as_number(np.longdouble(1.5)) is exact_json.NOT_A_NUMBER
    assert exact_json.as_number(np.float16(0.25)) == 0.25  # the others stay numbers


def test_a_longdouble_is_refused_by_name_and_written_as_text_by_the_lines_sinks():
    with pytest.raises(orjson.JSONEncodeError, match="not JSON serializable: numpy.longdouble"):
        exact_json.dumps({"v": np.longdouble(1.5)})
    line = orjson.dumps({"v": np.longdouble(1.5)}, default=exact_json.text_default)
    assert orjson.loads(line) == {"v": "1.5"}


def test_a_longdouble_event_time_is_not_a_time():
    with pytest.raises(ValueError, match="not a time: longdouble"):
        parse_time(np.longdouble(T0))


def test_a_longdouble_dedupe_key_is_compared_as_itself():
    assert compared(np.longdouble(1.5)) == 1.5


def test_the_window_bolt_fails_a_longdouble_time_or_key_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    bolt = make_bolt(url, "ld", key=["app", "kn"])
    at_time, in_key = ev(1, T0 + 1), ev(2, T0 + 2, kn=np.longdouble(1.5))
    at_time.value["timestamp"] = np.longdouble(T0 + 1)
    out = bolt.process([at_time, in_key])
    reasons = [e.failure.reason for e in out.streams["error"]]
    assert reasons == [
        "bad 'timestamp': not a time: longdouble",
        "key field 'kn': a value without a JSON form (Type is not JSON serializable: "
        "numpy.longdouble)",
    ]
