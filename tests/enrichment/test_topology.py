"""The three enrichment bolts in a YAML topology, through the engine (squall.testing.run_topology)."""

from __future__ import annotations

from pathlib import Path

from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome

YAML = """
name: enrich
resources:
  state: {{url: "sqlite:///{state}"}}
  cache: {{url: "{redis}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: geo, type: geo, database: "{mmdb}/city.mmdb", asn_database: "{mmdb}/asn.mmdb", anonymize_ip: true}}
  - {{id: device, type: device}}
  - {{id: subscription, type: subscription, store: state, cache: cache, cache_ttl: 60, key_prefix: "{prefix}"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: "{tag}-out"}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: "{tag}-dlq"}}
"""

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Mobile/15E148 Safari/604.1"
)


def test_enrichment_chain_in_a_topology(
    tmp_path: Path, mmdb_dir: Path, redis_url: str, redis_prefix: str, unique_name: str
):
    yaml = YAML.format(
        state=tmp_path / "state.db",
        redis=redis_url,
        mmdb=mmdb_dir,
        prefix=redis_prefix,
        tag=unique_name,
    )
    payloads = [
        {
            "event_type": "register",
            "device_token": "t1",
            "timestamp": "2024-05-01T10:00:00Z",
            "ip": "1.2.3.4",
            "user_agent": IPHONE,
        },
        {
            "event_type": "subscribe",
            "device_token": "t1",
            "timestamp": "2024-05-01T10:00:01Z",
            "topics": ["news"],
            "ip": "2a00:1450:4001::1",
            "user_agent": "curl/8.5.0",
        },
        {"event_type": "page_view", "ip": "10.0.0.1"},
        {"event_type": "subscribe", "device_token": "t2", "timestamp": "not a time"},
    ]
    run = run_topology(yaml, records_from(payloads))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED] * 3 + [Outcome.DEAD_LETTERED]
    first, second, anonymous = [e.value for e in MemorySink.stores[f"{unique_name}-out"]]
    assert (first["ip"], first["geo"]["city"], first["geo"]["asn"]) == ("1.2.3.0", "Sydney", 13335)
    assert (first["device"]["device_class"], first["subscription"]["status"]) == (
        "mobile",
        "registered",
    )
    assert (second["geo"]["city"], second["device"]["is_bot"]) == ("Dublin", True)
    assert (second["subscription"]["status"], second["subscription"]["topics"]) == (
        "subscribed",
        ["news"],
    )
    assert (anonymous["geo"]["status"], anonymous["device"]["device_class"]) == (
        "private",
        "unknown",
    )
    assert anonymous["subscription"]["status"] == "unknown"
    [dead] = MemorySink.stores[f"{unique_name}-dlq"]
    assert dead.failure.component == "subscription"
    assert "bad 'timestamp'" in dead.failure.reason

    # The same records again (a replay): identical enrichment, no state change.
    again = run_topology(yaml, records_from(payloads))
    assert [o.outcome for o in again.outcomes] == [Outcome.COMMITTED] * 3 + [Outcome.DEAD_LETTERED]
    replayed = [e.value for e in MemorySink.stores[f"{unique_name}-out"][3:]]
    assert replayed == [first, second, anonymous]
