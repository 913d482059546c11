"""An HTTP lookup endpoint that answers the keys it answered before (its own cache, a healthy
partition of its backend) while it answers 500 for every other key — a partial outage, not keys
it cannot answer. The probe (a key it answered before) is answered, so hG's strikes took every
uncached key of the batch for a bad key: three attempts in a row, within the engine's retries
(~0.3 s with the default ``settings.retry``), dead-lettered them all; with ``batch_url``, every
POST was split to each key (two requests per key, on every attempt). A fetch of several keys
none of which is answered is now an outage: only an answer to another key of the same fetch, or
the probe for a fetch of one key, makes a 500 a key's."""

from __future__ import annotations

from tests.bolts.test_lookup import RECORDS, Endpoint, make_bolt, run
from tests.bolts.test_lookup_unanswered import GET, attempt_fails, unanswerable
from tests.enrichment.support import resources

NEW_KEYS = [str(k) for k in range(4, 12)]  # keys the endpoint has not answered before


def test_every_uncached_key_answered_500_while_the_probe_is_answered_is_an_outage():
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, set(NEW_KEYS))
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": GET.format(ep=ep.url)}
        )
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}  # answered, cached
        values = [{"app_id": 1}, {"app_id": 4}, {"app_id": 5}]
        for _ in range(5):  # the engine's attempts and more: never a key's failure
            error = attempt_fails(bolt, values, "HTTP 500")
            assert "answered others" not in str(error)
        assert not bolt._strikes
        # one key of the fetch answered: the 500 is key 4's (hG's case, unchanged)
        ep.requests.clear()
        values = [{"app_id": 2}, {"app_id": 4}]
        attempt_fails(bolt, values, "HTTP 500 for key '4'")
        assert bolt._strikes
        bolt.close()


def test_a_batch_post_all_of_whose_keys_fail_is_not_split_to_each_key():
    """Under that partial outage a POST of eight new keys cost the probe and fifteen more POSTs
    (split to each key) on every attempt, and the keys were dead-lettered on the third; now the
    POST, the probe and its two halves: an outage."""
    with Endpoint(RECORDS) as ep:
        unanswerable(ep, set(NEW_KEYS))
        batch_url = ep.url + "/apps:batch?token=secret"
        bolt = make_bolt(resources(), key="app_id", source={"type": "http", "batch_url": batch_url})
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}
        values = [{"app_id": 1}, *({"app_id": int(k)} for k in NEW_KEYS)]
        for _ in range(5):
            ep.requests.clear()
            error = attempt_fails(bolt, values, "HTTP 500")
            assert "answered others" not in str(error)
            assert (
                ep.requests
                == [
                    ("POST", ",".join(NEW_KEYS)),
                    ("POST", "1"),  # the probe: answered
                    ("POST", ",".join(NEW_KEYS[:4])),
                    ("POST", ",".join(NEW_KEYS[4:])),
                ]
            )
        assert not bolt._strikes
        bolt.close()
