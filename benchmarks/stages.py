"""Where squall's extra CPU per event is: each stage of the example chain beside the optimized
hand loop's code for the same stage, on the same events, in one process.

    python benchmarks/stages.py [--events 50000] [--rounds 5] [--no-results]

``run.py`` compares whole processes; this splits the difference. Per stage, squall's component
(built with the example topology's options) and the loop's code for that stage
(``benchmarks/hand_loop.py``, the same functions it runs) each process the same batches of 500,
alternating which goes first; CPU time (``process_time``) of the stage's work only — building the
events a stage receives is not timed. The collector is set as the engine sets it during a batch
(``gc.freeze`` after set-up, a generation-0 threshold of 50,000) for both. Medians of the rounds,
µs of CPU per event read, and the paired ratio squall ÷ loop.

Stages: reading the input (squall's line reader with its records, the loop's lines with their
digest), decode + validate + dedupe, geo, device, subscription (the rules and the state load,
then writing the changed states in a transaction of their own: ``commit``). Not here: the row
values and the warehouse writes (``profile_pipeline.py``: level with the loop's), the engine's own
work between components and start-up (whole-process figures in ``run.py``).

Figures are written to ``benchmarks/results/<UTC time>-stages.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks import hand_loop as loop  # noqa: E402
from benchmarks.run import events_file, machine  # noqa: E402

BATCH = 500
EXAMPLE = ROOT / "examples" / "pistats"


def _bolts(tmp: str) -> dict:
    """squall's components with the example topology's options (state in its own SQLite file)."""
    from squall.bolts.dedupe import DedupeBolt
    from squall.bolts.json_decode import JsonBolt
    from squall.bolts.schema import SchemaBolt
    from squall.component import ComponentContext
    from squall.enrichment.device import DeviceBolt
    from squall.enrichment.geo import GeoBolt
    from squall.enrichment.subscription import SubscriptionBolt
    from squall.topology.model import ResourceConfig
    from squall.topology.resources import Resources

    ctx = ComponentContext("stages")
    schema = str(EXAMPLE / "schemas" / "event.json")
    bolts = {
        "decode": JsonBolt(
            JsonBolt.Config(id="decode", type="json", event_id_field="message_id"), ctx
        ),
        "validate": SchemaBolt(SchemaBolt.Config(id="validate", type="schema", schema=schema), ctx),
        "dedupe": DedupeBolt(DedupeBolt.Config(id="dedupe", type="dedupe"), ctx),
        "geo": GeoBolt(GeoBolt.Config(id="geo", type="geo", ip_field="ip", anonymize_ip=True), ctx),
        "device": DeviceBolt(
            DeviceBolt.Config(id="device", type="device", ua_field="user_agent"), ctx
        ),
    }
    resources = Resources({"state": ResourceConfig(url=f"sqlite:///{tmp}/squall-state.db")})
    bolts["subscription"] = SubscriptionBolt(
        SubscriptionBolt.Config(
            id="subscription", type="subscription", store="state", key="device_token"
        ),
        ctx,
    )
    for name, bolt in bolts.items():
        bolt.open(resources if name == "subscription" else None)
        getattr(bolt, "warm_up", lambda: None)()
    return bolts


def _records(path: Path) -> list[list]:
    from squall.spouts.lines import line_batches

    with open(path, "rb") as fh:
        return list(line_batches(fh, path.name, "file", BATCH, where=str(path), skip_blank=True))


def _events(batch: list) -> list:
    from squall.event import Event, derive_event_id

    return [
        Event(raw=r.data, meta=r.meta, event_id=derive_event_id(r.meta), origin=i)
        for i, r in enumerate(batch)
    ]


def _passed(out) -> list:
    return out.streams.get("default", [])


def one_round(path: Path, tmp: str, first: str) -> dict[str, dict[str, float]]:
    """CPU seconds per stage for squall and the loop over the whole input, ``first`` going first
    in every stage."""
    clock = time.process_time
    bolts = _bolts(tmp)
    args = types.SimpleNamespace(
        variant="optimized",
        input=str(path),
        warehouse=f"sqlite:///{tmp}/loop.db",
        state=f"sqlite:///{tmp}/loop.db",
        events_table="bench_stages_events",
        state_table="bench_stages_state",
        rejects=f"{tmp}/loop-rejects.jsonl",
        batch=BATCH,
    )
    hand = loop.Loop(args)
    spent: dict[str, dict[str, float]] = {"squall": {}, "loop": {}}

    def add(side: str, stage: str, seconds: float) -> None:
        spent[side][stage] = spent[side].get(stage, 0.0) + seconds

    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, *thresholds[1:])
    try:
        # reading
        order = ("squall", "loop") if first == "squall" else ("loop", "squall")
        for side in order:
            t = clock()
            if side == "squall":
                batches = _records(path)
            else:
                lines = list(loop.read_batches(path, BATCH))
            add(side, "read", clock() - t)
        hand.lineage = f"file\x1f{path.name}\x1f{lines[0][0][2]}"
        for records, raw in zip(batches, lines, strict=True):
            events = _events(records)
            for side in order:
                if side == "squall":
                    _squall_batch(bolts, events, add, clock)
                else:
                    _loop_batch(hand, raw, add, clock)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        hand.close()
        for bolt in bolts.values():
            bolt.close()
    return spent


def _squall_batch(bolts: dict, events: list, add: Callable, clock: Callable) -> None:
    t0 = clock()
    events = _passed(bolts["decode"].process(events))
    events = _passed(bolts["validate"].process(events))
    events = _passed(bolts["dedupe"].process(events))
    t1 = clock()
    events = _passed(bolts["geo"].process(events))
    t2 = clock()
    events = _passed(bolts["device"].process(events))
    t3 = clock()
    sub = bolts["subscription"]
    sub.process(events)
    t4 = clock()
    sub.commit_state(lambda _event: True)
    sub.state_committed()
    t5 = clock()
    _add_stages(add, "squall", (t0, t1, t2, t3, t4, t5))


STAGES = ("decode + validate + dedupe", "geo", "device", "subscription", "subscription commit")


def _add_stages(add: Callable, side: str, marks: tuple[float, ...]) -> None:
    """The CPU seconds between consecutive clock marks, one per stage of ``STAGES``."""
    for stage, start, end in zip(STAGES, marks[:-1], marks[1:], strict=True):
        add(side, stage, end - start)


def _loop_batch(hand: loop.Loop, raw: list, add: Callable, clock: Callable) -> None:
    """The loop's ``batch``, stage by stage (its own code: ``Loop.batch`` inlines the first)."""
    t0 = clock()
    events, seen = [], set()
    loads, validate = orjson.loads, hand.validator.reason
    for seq, data, fp in raw:
        try:
            p = loads(data)
        except orjson.JSONDecodeError:
            continue
        if p.__class__ is not dict:
            continue
        eid = p.get("message_id")
        eid = str(eid) if eid is not None and eid != "" else loop.derived_id("s", seq, fp)
        if validate(p) is not None or eid in seen:
            continue
        seen.add(eid)
        events.append((seq, data, eid, p))
    t1 = clock()
    geo = hand.geo
    for _seq, _data, _eid, p in events:
        ip = p.get("ip")
        if ip is not None and ip != "":
            geo(ip)
    t2 = clock()
    device = hand.device
    for _seq, _data, _eid, p in events:
        device(p.get("user_agent"))
    t3 = clock()
    states = hand.subscription(events, [])
    t4 = clock()
    changed = [loop.state_row(k, s) for k, s in states["changed"].items()]
    db = hand.sdb
    db.execute("BEGIN")
    db.executemany(hand.upsert_sql, changed)
    db.execute("COMMIT")
    t5 = clock()
    _add_stages(add, "loop", (t0, t1, t2, t3, t4, t5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-results", action="store_true", help="print only, write no result file")
    args = ap.parse_args(argv)
    path = events_file(args.events)
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="squall-stages-") as tmp:
            spent = one_round(path, tmp, "squall" if r % 2 == 0 else "loop")
        rounds.append(spent)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    n = args.events
    stages = list(rounds[0]["squall"])
    summary = {}
    print(f"{'stage':28} {'squall µs':>10} {'loop µs':>10} {'extra µs':>9} {'ratio':>6}")
    for stage in [*stages, "total"]:

        def of(side: str, spent: dict, stage: str = stage) -> float:
            values = spent[side].values() if stage == "total" else [spent[side][stage]]
            return sum(values) / n * 1e6

        sq = statistics.median(of("squall", s) for s in rounds)
        lp = statistics.median(of("loop", s) for s in rounds)
        ratio = statistics.median(of("squall", s) / of("loop", s) for s in rounds)
        summary[stage] = {"squall_us": sq, "loop_us": lp, "ratio": ratio}
        print(f"{stage:28} {sq:10.2f} {lp:10.2f} {sq - lp:+9.2f} {ratio:5.2f}×")
    if not args.no_results:
        doc = {
            "date": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "command": " ".join(["benchmarks/stages.py", *(argv or sys.argv[1:])]),
            "events": n,
            "rounds": rounds,
            "summary": summary,
        }
        out = ROOT / "benchmarks" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-stages.json"
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"result: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
