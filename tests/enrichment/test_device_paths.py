"""The device bolt's inline paths against its general path, on the same inputs.

``process`` reads a one-level ``ua_field`` and writes a one-level ``target`` inline; each must
behave exactly as the getter and setter (what a bolt with the inline paths switched off does).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.component import ComponentContext
from squall.enrichment.device import DeviceBolt

from .support import Text, outcome

UAS = st.sampled_from(
    [
        "curl/8.5.0",
        "  Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 ",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
        "",
        "   ",
        None,
        7,
        True,
        ["curl/8.5.0"],
        {"ua": "curl/8.5.0"},
        Text("curl/8.5.0"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    ua_field=st.sampled_from(["user_agent", "payload.user_agent", "http.user_agent"]),
    target=st.sampled_from(["device", "payload.device", "x.device", "user_agent"]),
    payloads=st.lists(
        st.one_of(
            st.builds(lambda ua: {"user_agent": ua, "http": {"user_agent": ua}, "x": 1}, UAS),
            st.builds(lambda ua: {"user_agent": ua, "x": {}}, UAS),
            st.just({"other": 1}),
            st.just("not an object"),
            st.just(["a list"]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_inline_paths_equal_the_general_path(ua_field, target, payloads):
    config = DeviceBolt.Config(id="device", type="device", ua_field=ua_field, target=target)
    fast = DeviceBolt(config, ComponentContext("test"))
    slow = DeviceBolt(config, ComponentContext("test"))
    slow._ua_key = slow._target_key = None
    for b in (fast, slow):
        b.open(None)
    assert outcome(fast, payloads) == outcome(slow, payloads)


def test_one_level_paths_are_inline():
    bolt = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", ua_field="payload.ua", target="dev"),
        ComponentContext("test"),
    )
    assert (bolt._ua_key, bolt._target_key) == ("ua", "dev")
    nested = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", ua_field="a.ua", target="x.y"),
        ComponentContext("test"),
    )
    assert (nested._ua_key, nested._target_key) == (None, None)
