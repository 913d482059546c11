"""Does the geo bolt's network cache (and its table of shared answers) pay for itself?

    python benchmarks/geo_networks.py [--events 50000] [--rounds 7] [--no-results]

The ``geo`` bolt (the example's options: ``ip_field: ip``, ``anonymize_ip: true``, the bundled
GeoLite2-City, ``cache_size`` 20,000) alone, in this process, over three streams of addresses in
batches of 500, each in three variants, a fresh bolt per run, the order rotated every round:

- ``as is``: the address cache, the network cache, equal answers kept once (``_Database``);
- ``no network cache``: every address the address cache misses is a reader lookup;
- ``no answer table``: the network cache, but each network's answer a block of its own.

Streams (a fixed seed): ``example`` — the ``ip`` of the benchmark's events (``run.py``'s
``events_file``: random hosts in a few networks); ``clustered`` — hosts of 3,000 public /24
networks drawn with Zipf-like weights (s = 0.8), as a consumer app's clients concentrate in
ISPs' and mobile carriers' ranges; ``uniform`` — uniformly random public IPv4 addresses (the
worst case for a network cache: almost no two addresses share a network).

Per stream and variant: CPU (``process_time``) per event, median of the rounds, and the paired
ratio to ``as is``; reader lookups, cached networks and distinct answers after a run; the
memory the bolt holds after a run (``tracemalloc``, a separate pass). Figures are written to
``benchmarks/results/<UTC time>-geo-networks.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import statistics
import sys
import time
import tracemalloc
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import events_file, machine  # noqa: E402
from squall.component import ComponentContext  # noqa: E402
from squall.enrichment import addresses  # noqa: E402
from squall.enrichment.geo import GeoBolt, _Database  # noqa: E402
from squall.event import Event, RecordMeta, new_meta  # noqa: E402

BATCH = 500
VARIANTS = ("as is", "no network cache", "no answer table")
#: First octets left out of the synthetic streams (private, loopback, shared, link-local, test).
RESERVED = {0, 10, 100, 127, 169, 172, 192, 198, 203}


def _no_network_cache(self: _Database, version: int, n: int) -> tuple[Any, bool]:
    """``_Database.lookup`` without its network cache (a reader lookup per call)."""
    if version == 6 and self.ip_version == 4:
        return None, False
    record, _ = self.reader.get_with_prefix_len(addresses.to_object(version, n))
    return (self._shared(self.convert(record)) if record else None), False


def _own_answers(self: _Database, fields: dict[str, Any]) -> dict[str, Any]:
    """``_Database._shared`` that shares nothing: each network keeps its own answer."""
    return fields


def bolt(variant: str) -> GeoBolt:
    config = GeoBolt.Config(id="geo", type="geo", ip_field="ip", anonymize_ip=True)
    geo = GeoBolt(config, ComponentContext("geo-networks"))
    geo.open(None)
    db = geo.city
    assert db is not None
    if variant == "no network cache":
        db.lookup = types.MethodType(_no_network_cache, db)  # type: ignore[method-assign]
    elif variant == "no answer table":
        db._shared = types.MethodType(_own_answers, db)  # type: ignore[method-assign]
    return geo


def streams(events: int, seed: int = 7) -> dict[str, list[str]]:
    rnd = random.Random(seed)
    example = []
    with open(events_file(events), "rb") as fh:
        for line in fh:
            try:
                ip = json.loads(line).get("ip")
            except (ValueError, AttributeError):
                continue
            if isinstance(ip, str):
                example.append(ip)

    def first_octet() -> int:
        while True:
            a = rnd.randrange(1, 224)
            if a not in RESERVED:
                return a

    networks = [(first_octet() << 24) | (rnd.randrange(1 << 16) << 8) for _ in range(3_000)]
    weights = [1 / (i + 1) ** 0.8 for i in range(len(networks))]
    clustered = [
        str(addresses.to_object(4, net | rnd.randrange(1, 255)))
        for net in rnd.choices(networks, weights, k=events)
    ]
    uniform = [
        f"{first_octet()}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        for _ in range(events)
    ]
    return {"example": example[:events], "clustered": clustered, "uniform": uniform}


def batches(ips: list[str]) -> list[list[Event]]:
    meta = new_meta(RecordMeta, ("s", "shard", "1", 0, "", None, None, "f", None, None, 0))
    out = []
    for start in range(0, len(ips), BATCH):
        batch = []
        for ip in ips[start : start + BATCH]:
            event = Event(b"", meta, "id", 0)
            event.value = {"ip": ip}
            batch.append(event)
        out.append(batch)
    return out


def timed(variant: str, ips: list[str]) -> tuple[float, dict[str, int]]:
    """CPU seconds of the bolt's ``process`` over ``ips``; its counts after the run."""
    geo = bolt(variant)
    work = batches(ips)  # built before the clock starts: only the bolt is timed
    spent = 0.0
    for batch in work:
        t = time.process_time()
        geo.process(batch)
        spent += time.process_time() - t
    db = geo.city
    assert db is not None
    counts = {
        "reader_lookups": geo.lookups,
        "cached_networks": len(db.networks),
        "distinct_answers": len(db._answers),
    }
    geo.close()
    return spent, counts


def held(variant: str, ips: list[str]) -> int:
    """Bytes the bolt holds after a run (tracemalloc: its caches, answers and blocks)."""
    work = batches(ips)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    geo = bolt(variant)
    for batch in work:
        geo.process(batch)
    del work, batch
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    geo.close()
    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="addresses per stream")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-results", action="store_true", help="print only, write no result file")
    args = ap.parse_args(argv)
    logging.getLogger("squall.enrichment.geo").setLevel(logging.ERROR)  # the bundled file's notice
    started = datetime.now(UTC)
    result: dict[str, Any] = {"started": started.isoformat(), **machine(), "streams": {}}
    gc.collect()
    gc.freeze()  # as the engine after set-up; young collections as during its batches
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    for name, ips in streams(args.events).items():
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        counts: dict[str, dict[str, int]] = {}
        for r in range(args.rounds):
            for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
                spent, counts[variant] = timed(variant, ips)
                cpu[variant].append(spent)
        figures = {}
        for variant in VARIANTS:
            ratios = [a / b for a, b in zip(cpu[variant], cpu["as is"], strict=True)]
            figures[variant] = {
                "us_cpu_per_event": statistics.median(cpu[variant]) / len(ips) * 1e6,
                "ratio_to_as_is": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                **counts[variant],
                "held_mb": held(variant, ips) / 1e6,
            }
        result["streams"][name] = {
            "addresses": len(ips),
            "distinct": len(set(ips)),
            "variants": figures,
        }
        print(f"# {name}: {len(ips):,} addresses, {len(set(ips)):,} distinct")
        for variant, f in figures.items():
            print(
                f"  {variant:17} {f['us_cpu_per_event']:6.2f} µs/event  "
                f"× {f['ratio_to_as_is']:.3f} ({f['ratio_range'][0]:.3f}–{f['ratio_range'][1]:.3f})  "
                f"lookups {f['reader_lookups']:,}  networks {f['cached_networks']:,}  "
                f"answers {f['distinct_answers']:,}  held {f['held_mb']:.1f} MB",
                flush=True,
            )
    if not args.no_results:
        out = ROOT / "benchmarks" / "results" / f"{started:%Y%m%dT%H%M%SZ}-geo-networks.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"result: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
