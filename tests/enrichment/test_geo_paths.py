"""The geo bolt's inline paths against its general path, on the same inputs.

``process`` reads a one-level ``ip_field`` inline, writes a one-level ``target`` inline and
anonymizes a one-level ``ip_field`` (without ``xff_field``) inline. Each must behave exactly as
the getters, setters and ``_rewrite`` (what a bolt with the inline paths switched off does).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.component import ComponentContext
from squall.enrichment.geo import GeoBolt

from .support import Text, outcome

IPS = st.sampled_from(
    [
        "1.2.3.4",
        "1.2.9.9",
        "1.2.3.4 ",
        "10.0.0.1",
        "::1",
        "2001:db8::1",
        "",
        " ",
        "bad",
        16909060,
        0,
        True,
        1.5,
        ["1.2.3.4"],
        [],
        {"a": 1},
        None,
        Text("1.2.3.4"),
    ]
)


@pytest.fixture
def ctx(mmdb_dir: Path, tmp_path: Path) -> ComponentContext:
    (tmp_path / "city.mmdb").symlink_to(mmdb_dir / "city.mmdb")
    return ComponentContext("test", tmp_path)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ip_field=st.sampled_from(["ip", "payload.ip", "client.ip"]),
    target=st.sampled_from(["geo", "payload.geo", "x.geo", "ip"]),
    rewrite=st.sampled_from([{}, {"anonymize_ip": True}, {"drop_ip": True}]),
    payloads=st.lists(
        st.one_of(
            st.builds(lambda ip: {"ip": ip, "client": {"ip": ip}, "x": 1}, IPS),
            st.builds(lambda ip: {"ip": ip, "x": {}}, IPS),
            st.just({"other": 1}),
            st.just("not an object"),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_inline_paths_equal_the_general_path(ctx, ip_field, target, rewrite, payloads):
    config = GeoBolt.Config(
        id="geo", type="geo", database="city.mmdb", ip_field=ip_field, target=target, **rewrite
    )
    fast, slow = GeoBolt(config, ctx), GeoBolt(config, ctx)
    slow._ip_name = slow._target_name = None
    slow._anonymize_inline = False
    for b in (fast, slow):
        b.setup(None)
    assert outcome(fast, payloads) == outcome(slow, payloads)


@pytest.mark.parametrize("ip_field", ["ip", "client.ip"])
def test_an_address_in_a_str_subclass_is_looked_up_and_anonymized_as_its_text(ctx, ip_field):
    """A user bolt may set the address as a str subclass: it is the same text. Before, the lookup
    took its repr (status invalid) and the general rewrite path raised KeyError."""
    bolt = GeoBolt(
        GeoBolt.Config(
            id="geo", type="geo", database="city.mmdb", ip_field=ip_field, anonymize_ip=True
        ),
        ctx,
    )
    bolt.setup(None)
    [(_, value)], failed = outcome(
        bolt, [{"ip": Text("1.2.3.4"), "client": {"ip": Text("1.2.3.4")}}]
    )
    assert failed == []
    assert value["geo"]["city"] == "Sydney"
    stored = value["ip"] if ip_field == "ip" else value["client"]["ip"]
    assert stored == "1.2.3.0" and stored.__class__ is str
