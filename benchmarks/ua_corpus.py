"""Device class and bot detection against labelled corpora; prints the confusion matrix.

Three corpora, each labelled by the maintainers of another detector (never by squall):

- ``browscap`` (the acceptance corpus): the test fixtures of Browser Capabilities Project
  (github browscap/browscap, tests/issues/*.php, MIT): ~24,000 distinct user agents with the
  ``Device_Type`` and ``Browser_Type`` its maintainers expect. No rule of squall was written
  while reading it, so its figures are the independent ones.
- ``whichbrowser``: the test fixtures of WhichBrowser Parser-PHP (tests/data/**/*.yaml, MIT),
  ~5,700 user agents with device types; independent too, but below 20,000 rows.
- ``matomo``: the test fixtures of Matomo Device Detector (Tests/fixtures/*.yml,
  LGPL-3.0-or-later), ~38,000 user agents. squall's hand rules were written while reading this
  corpus's misses, so its figures are NOT independent; it is the development corpus. ``--half
  dev`` and ``--half held-out`` split it by fixture (see :func:`matomo_half`): new rules are
  tuned on the dev half only and the held-out half is quoted.

``build NAME --git DIR`` turns a git directory of the source into benchmarks/data/
ua-corpus-NAME.tsv.gz (label, user agent, client-hint headers as JSON, fixture); ``run`` scores
the device bolt on it.

    python benchmarks/ua_corpus.py run                         # browscap, the acceptance corpus
    python benchmarks/ua_corpus.py run --corpus matomo --half held-out
    python benchmarks/ua_corpus.py run --sample tests/enrichment/data/ua_sample.tsv
    python benchmarks/ua_corpus.py build browscap --git DIR [--commit SHA]
    python benchmarks/ua_corpus.py sample browscap --out FILE --sizes mobile=1000,tablet=600,…
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPORA = {
    name: HERE / "data" / f"ua-corpus-{name}.tsv.gz"
    for name in ("browscap", "whichbrowser", "matomo")
}
CORPUS = CORPORA["browscap"]
SOURCES = {
    "browscap": "browscap/browscap tests/issues, MIT",
    "whichbrowser": "WhichBrowser/Parser-PHP tests/data, MIT",
    "matomo": "matomo-org/device-detector Tests/fixtures, LGPL-3.0-or-later",
}
# Matomo device types -> squall classes; a fixture with no device type is left out of the class
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
# Browscap Device_Type -> squall class. "Mobile Device" is browscap's handheld of unknown kind
# (iPod touch, CFNetwork apps); "unknown" is left unlabelled. Browser_Type "Bot" or
# "Bot/Crawler" labels a bot whatever the device type; a Browser_Type "unknown" (or none) says
# the maintainers did not label the kind of client, so such a row ("?") counts nowhere, not even
# as "not a bot" for precision.
BROWSCAP_TYPES = {
    "Mobile Phone": "mobile",
    "Mobile Device": "mobile",
    "Tablet": "tablet",
    "Ebook Reader": "tablet",
    "Desktop": "desktop",
    "TV Device": "tv",
    "Console": "console",
    "Car Entertainment System": "other",
    "Digital Camera": "other",
}
BROWSCAP_BOTS = {"Bot", "Bot/Crawler"}
# WhichBrowser device types -> squall class ("emulator" and a missing type stay unlabelled).
WHICHBROWSER_TYPES = {
    "mobile": "mobile",
    "pda": "mobile",
    "tablet": "tablet",
    "ereader": "tablet",
    "desktop": "desktop",
    "television": "tv",
    "gaming": "console",
    "bot": "bot",
    **dict.fromkeys(
        (
            "media",
            "watch",
            "headset",
            "car",
            "camera",
            "printer",
            "signage",
            "appliance",
            "gps",
            "devboard",
        ),
        "other",
    ),
}
CLASSES = ("mobile", "tablet", "desktop", "tv", "console", "other", "bot")
# Label of a row whose maintainers labelled neither a class nor a kind of client: not scored.
NOT_LABELLED = "?"


def _git(git_dir: str):
    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "--git-dir", git_dir, *args], check=True, capture_output=True
        ).stdout

    return git


def build_matomo(git, commit: str) -> list[tuple[str, str, dict, str]]:
    """(label, user agent, headers, fixture) rows of Matomo's fixtures."""
    import yaml

    names = git("ls-tree", "--name-only", commit, "Tests/fixtures/").decode().split()
    rows = []
    for name in sorted(names):
        items = yaml.load(git("show", f"{commit}:{name}"), Loader=yaml.CSafeLoader) or []
        for i, item in enumerate(items):
            label = (
                "bot"
                if "bot" in item
                else MATOMO_TYPES[(item.get("device") or {}).get("type") or ""]
            )
            rows.append(
                (label, str(item["user_agent"]), item.get("headers") or {}, f"{name[15:]}:{i}")
            )
    return rows


_PHP_STRING = r"'((?:[^'\\]|\\.)*)'"
_PHP_ENTRY = re.compile(r"\n    " + _PHP_STRING + r" => \[\n(.*?)\n    \],", re.S)
_PHP_PROPERTY = re.compile(_PHP_STRING + r" => (" + _PHP_STRING + r"|true|false|\d+)")


def build_browscap(git, commit: str) -> list[tuple[str, str, dict, str]]:
    """(label, user agent, {}, test id) rows of browscap's full-mode test expectations.

    Each user agent is kept once, from its first "full" entry (the "lite" and "standard" entries
    of the same string carry fewer properties and sometimes a coarser device type).
    """
    names = git("ls-tree", "-r", "--name-only", commit, "tests/issues/").decode().split()
    rows, seen = [], set()
    for name in sorted(n for n in names if n.endswith(".php")):
        for entry in _PHP_ENTRY.finditer(git("show", f"{commit}:{name}").decode()):
            props: dict[str, str] = {}
            for prop in _PHP_PROPERTY.finditer(entry.group(2)):
                value = prop.group(3) if prop.group(3) is not None else prop.group(2)
                props.setdefault(prop.group(1), value)
            if props.get("full") != "true" or "ua" not in props:
                continue
            ua = re.sub(r"\\([\\'])", r"\1", props["ua"])
            if ua in seen:
                continue
            seen.add(ua)
            kind = props.get("Browser_Type", "unknown")
            label = (
                "bot"
                if kind in BROWSCAP_BOTS
                else "?"
                if kind == "unknown"
                else BROWSCAP_TYPES.get(props.get("Device_Type", ""), "")
            )
            rows.append((label, ua, {}, f"{name[13:]}:{entry.group(1)}"))
    return rows


def build_whichbrowser(git, commit: str) -> list[tuple[str, str, dict, str]]:
    """(label, user agent, other headers, fixture) rows of WhichBrowser's test data."""
    import yaml

    names = git("ls-tree", "-r", "--name-only", commit, "tests/data/").decode().split()
    rows, seen = [], set()
    for name in sorted(n for n in names if n.endswith(".yaml")):
        items = yaml.load(git("show", f"{commit}:{name}"), Loader=yaml.CSafeLoader) or []
        for i, item in enumerate(items):
            raw = item["headers"]
            if isinstance(raw, str):
                headers = dict(line.split(": ", 1) for line in raw.splitlines() if ": " in line)
            else:
                headers = {str(k): str(v) for k, v in raw.items()}
            ua = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
            if ua is None:
                continue
            others = {k: v for k, v in headers.items() if k.lower() != "user-agent"}
            key = (ua, json.dumps(others, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            device = (item.get("result") or {}).get("device") or {}
            label = WHICHBROWSER_TYPES.get(device.get("type") or "", "")
            rows.append((label, ua, others, f"{name[11:]}:{i}"))
    return rows


BUILDERS = {"browscap": build_browscap, "whichbrowser": build_whichbrowser, "matomo": build_matomo}


def build(name: str, git_dir: str, commit: str, out: Path) -> None:
    """Write corpus ``name`` from a git directory of its source."""
    git = _git(git_dir)
    sha = git("rev-parse", commit).decode().strip()
    rows = [r for r in BUILDERS[name](git, sha) if "\t" not in r[1] and "\n" not in r[1]]
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(f"# {SOURCES[name].replace(' ', f' {sha} ', 1)}\n")
        for label, ua, headers, source in rows:
            fh.write(f"{label}\t{ua}\t{json.dumps(headers) if headers else ''}\t{source}\n")
    print(f"{len(rows)} user agents -> {out} ({out.stat().st_size:,} bytes)")


def matomo_half(source: str) -> str:
    """ "dev" or "held-out" for a Matomo row, from its fixture ("smartphone-12.yml:40").

    The long series of files (smartphone*.yml, tablet*.yml, tv*.yml: 44, 13 and 6 files) are
    split by file: odd-numbered files are held out. Every other file (bots.yml, desktop.yml,
    console.yml, …) is split in blocks of 25 consecutive fixtures: odd blocks are held out.
    Neighbouring fixtures are usually the same brand or product, so a block stays on one side.
    """
    name, _, index = source.partition(":")
    series = re.fullmatch(r"(smartphone|tablet|tv)(?:-(\d+))?\.yml", name)
    part = int(series.group(2) or 0) if series else int(index) // 25
    return "held-out" if part % 2 else "dev"


def sample(name: str, sizes: dict[str, int], out: Path, seed: int = 22) -> None:
    """Write a stratified sample of corpus ``name``: ``sizes[label]`` rows of each label (all of
    a label when it has fewer), unlabelled rows under the label ""; "?" rows are left out."""
    import random

    by_label: dict[str, list[str]] = defaultdict(list)
    with gzip.open(CORPORA[name], "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#") and line.strip():
                label, ua, headers, *_ = line.rstrip("\n").split("\t")
                by_label[label].append(f"{label}\t{ua}\t{headers}\n")
    rng = random.Random(seed)
    lines = []
    for label, size in sizes.items():
        rows = by_label[label]
        lines += rng.sample(rows, size) if size < len(rows) else rows
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(f"# stratified sample (seed {seed}) of {CORPORA[name].name}: {SOURCES[name]}\n")
        fh.writelines(lines)
    print(f"{len(lines)} user agents -> {out}")


def load(path: Path, half: str | None = None) -> list[tuple[str, str, dict]]:
    """The (label, user agent, headers) rows of a corpus file (.tsv or .tsv.gz).

    ``half`` ("dev" or "held-out") keeps that half of the Matomo corpus (:func:`matomo_half`).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            label, ua, headers, *source = line.rstrip("\n").split("\t")
            if half is not None:
                if not source:
                    raise SystemExit(f"{path}: no fixture column, cannot split it in halves")
                if matomo_half(source[0]) != half:
                    continue
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
    flagged = sum(counts["bot"] for label, counts in matrix.items() if label != NOT_LABELLED)
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
    for label in (*CLASSES, "(unlabelled)", NOT_LABELLED):
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
    b.add_argument("name", choices=sorted(CORPORA))
    b.add_argument("--git", required=True, help="git dir of the corpus's source repository")
    b.add_argument("--commit", default="HEAD")
    b.add_argument("--out", type=Path, help="default: benchmarks/data/ua-corpus-NAME.tsv.gz")
    s = sub.add_parser("sample")
    s.add_argument("name", choices=sorted(CORPORA))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument(
        "--sizes",
        required=True,
        help='rows per label, e.g. "mobile=1000,tablet=600,=100" ("" is the unlabelled rows)',
    )
    r = sub.add_parser("run")
    r.add_argument("--corpus", choices=sorted(CORPORA), default="browscap")
    r.add_argument("--sample", type=Path, help="a corpus file to score instead of --corpus")
    r.add_argument("--half", choices=("dev", "held-out"), help="half of the Matomo corpus")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.name, args.git, args.commit, args.out or CORPORA[args.name])
        return 0
    if args.command == "sample":
        sizes = {k: int(v) for k, v in (item.split("=") for item in args.sizes.split(","))}
        sample(args.name, sizes, args.out)
        return 0
    path = args.sample or CORPORA[args.corpus]
    rows = load(path, args.half)
    started = time.perf_counter()
    result = score(rows)
    elapsed = time.perf_counter() - started
    print(
        f"{result['rows']:,} user agents from {path.name}{f' ({args.half} half)' if args.half else ''}, "
        f"classified in {elapsed:.2f} s (rules loading included, every string distinct)"
    )
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
