"""`.inf` and `.nan` (YAML's infinity and not-a-number) are refused at load, located at their key,
by every number option: `poll_interval: .inf` passed and `time.sleep(inf)` failed at run time;
`timeout: .inf` meant a request that never times out (found by the YAML review)."""

from __future__ import annotations

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load_text

BASE = """
name: t
spout: {spout}
settings: {settings}
sinks:
  - {sink}
"""
KINESIS = "{type: kinesis, stream: s, poll_interval: 1}"
STDOUT = "{id: o, type: stdout}"


@pytest.mark.parametrize(
    "spout, settings, sink, where",
    [
        ("{type: kinesis, stream: s, poll_interval: .inf}", "{}", STDOUT, "spout.poll_interval"),
        ("{type: kinesis, stream: s, idle_exit: .nan}", "{}", STDOUT, "spout.idle_exit"),
        (KINESIS, "{retry: {max_backoff: .inf}}", STDOUT, "settings.retry.max_backoff"),
        (
            KINESIS,
            "{}",
            "{id: h, type: http, url: 'http://127.0.0.1:9/x', timeout: .inf}",
            "sinks[0].timeout",
        ),
    ],
)
def test_an_infinite_or_nan_number_is_a_located_error(spout, settings, sink, where):
    with pytest.raises(TopologyError) as err:
        load_text(BASE.format(spout=spout, settings=settings, sink=sink))
    assert where in str(err.value) and "finite number" in str(err.value)
