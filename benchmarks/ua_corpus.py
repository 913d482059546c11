"""Device class and bot detection against an independent labelled corpus; prints the confusion matrix.

The corpus is the test fixtures of Matomo Device Detector (github matomo-org/device-detector,
Tests/fixtures/*.yml, LGPL-3.0-or-later): ~38,000 user agents, each labelled by Matomo's
maintainers with a device type (smartphone, phablet, feature phone, tablet, desktop, tv, console,
…) or as a bot. squall uses neither Matomo's rules nor its fixtures to decide a class, so the
corpus is independent of the detector measured. ``build`` turns a checkout's fixtures into
benchmarks/data/ua-corpus-matomo.tsv.gz (label, user agent, client-hint headers as JSON);
``run`` scores the device bolt on it.

    python benchmarks/ua_corpus.py run                       # the full corpus
    python benchmarks/ua_corpus.py run --sample tests/enrichment/data/ua_sample.tsv
    python benchmarks/ua_corpus.py build --git DIR [--commit SHA]   # regenerate from a git dir
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "ua-corpus-matomo.tsv.gz"
# Matomo device types → squall classes; a fixture with no device type is left out of the class
# scores (its maintainers did not label one) but still counts as "not a bot".
MATOMO_TYPES = {
    "smartphone": "mobile",
    "phablet": "mobile",
    "feature phone": "mobile",
    "tablet": "tablet",
    "desktop": "desktop",
    "tv": "tv",
    "console": "console",
    "camera": "other",
    "car browser": "other",
    "peripheral": "other",
    "portable media player": "other",
    "smart display": "other",
    "smart speaker": "other",
    "wearable": "other",
    "": "",
}
CLASSES = ("mobile", "tablet", "desktop", "tv", "console", "other", "bot")


def build(git_dir: str, commit: str, out: Path) -> None:
    """Extract (label, user agent, headers) from Matomo's fixtures in a git directory."""
    import yaml

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "--git-dir", git_dir, *args], check=True, capture_output=True
        ).stdout

    names = git("ls-tree", "--name-only", commit, "Tests/fixtures/").decode().split()
    lines = []
    for name in sorted(names):
        for item in yaml.load(git("show", f"{commit}:{name}"), Loader=yaml.CSafeLoader) or []:
            ua = str(item["user_agent"])
            label = (
                "bot"
                if "bot" in item
                else MATOMO_TYPES[(item.get("device") or {}).get("type") or ""]
            )
            headers = item.get("headers") or {}
            if "\t" in ua or "\n" in ua:
                continue
            lines.append(f"{label}\t{ua}\t{json.dumps(headers) if headers else ''}\n")
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(
            f"# matomo-org/device-detector {git('rev-parse', commit).decode().strip()} Tests/fixtures, LGPL-3.0-or-later\n"
        )
        fh.writelines(lines)
    print(f"{len(lines)} user agents -> {out} ({out.stat().st_size:,} bytes)")


def load(path: Path) -> list[tuple[str, str, dict]]:
    """The (label, user agent, headers) rows of a corpus file (.tsv or .tsv.gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            label, ua, headers = line.rstrip("\n").split("\t")
            rows.append((label, ua, json.loads(headers) if headers else {}))
    return rows


def score(rows: list[tuple[str, str, dict]], bolt=None) -> dict:
    """Confusion matrix, per-class agreement and bot precision/recall of the device bolt."""
    from squall.component import ComponentContext
    from squall.enrichment.device import DeviceBolt
    from squall.event import Event, RecordMeta

    if bolt is None:
        config = DeviceBolt.Config(id="device", type="device", hints_field="headers")
        bolt = DeviceBolt(config, ComponentContext("ua-corpus"))
        bolt.open(None)
    events = []
    for i, (_, ua, headers) in enumerate(rows):
        meta = RecordMeta("corpus", "shardId-000000000000", str(i), 0, "pk", None)
        events.append(
            Event(
                raw=b"",
                meta=meta,
                event_id=str(i),
                origin=i,
                value={"user_agent": ua, "headers": headers},
            )
        )
    out = bolt.process(events)
    predicted = [e.value["device"]["device_class"] for e in out.streams["default"]]
    matrix: dict[str, Counter] = defaultdict(Counter)
    for (label, _, _), got in zip(rows, predicted, strict=True):
        matrix[label or "(unlabelled)"][got] += 1
    agreement = {
        label: matrix[label][label] / sum(matrix[label].values())
        for label in CLASSES
        if matrix[label]
    }
    labelled = [label for label in matrix if label in CLASSES]
    total = sum(sum(matrix[label].values()) for label in labelled)
    agreed = sum(matrix[label][label] for label in labelled)
    flagged = sum(counts["bot"] for counts in matrix.values())
    return {
        "matrix": matrix,
        "agreement": agreement,
        "overall": agreed / total,
        "bot_recall": matrix["bot"]["bot"] / max(1, sum(matrix["bot"].values())),
        "bot_precision": matrix["bot"]["bot"] / max(1, flagged),
        "rows": len(rows),
    }


def report(result: dict) -> None:
    columns = (*CLASSES, "unknown")
    print(f"{'labelled as':<13}" + "".join(f"{c:>9}" for c in columns) + f"{'n':>8}{'agree':>8}")
    for label in (*CLASSES, "(unlabelled)"):
        counts = result["matrix"].get(label)
        if not counts:
            continue
        n = sum(counts.values())
        agree = f"{counts[label] / n:8.1%}" if label in CLASSES else "       -"
        print(f"{label:<13}" + "".join(f"{counts[c]:>9}" for c in columns) + f"{n:>8}{agree}")
    print(f"overall class agreement {result['overall']:.1%} over the labelled rows")
    print(f"bot recall {result['bot_recall']:.1%}, bot precision {result['bot_precision']:.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--git", required=True, help="git dir of matomo-org/device-detector")
    b.add_argument("--commit", default="HEAD")
    b.add_argument("--out", type=Path, default=CORPUS)
    r = sub.add_parser("run")
    r.add_argument("--sample", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.git, args.commit, args.out)
        return 0
    rows = load(args.sample)
    started = time.perf_counter()
    result = score(rows)
    elapsed = time.perf_counter() - started
    print(
        f"{result['rows']:,} user agents from {args.sample.name}, classified in {elapsed:.2f} s "
        f"(rules loading included, every string distinct)"
    )
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
