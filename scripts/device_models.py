"""Build squall's device-model index from Matomo Device Detector's device database.

    python scripts/device_models.py --git /path/to/device-detector.git [--commit SHA]

Matomo's ``regexes/device/mobiles.yml`` (LGPL-3.0-or-later, https://github.com/matomo-org/
device-detector) names, brand by brand, the models of ~2,000 makers with the type of each
(smartphone, tablet, tv, wearable, …): the knowledge that tells a cheap Android tablet whose
browser writes "Mobile" from a phone. Its ~17,000 regexes take seconds to compile as one set, so
squall does not run them. This script turns each model regex into the literal model names it
matches (``SM-T81[05]`` → ``sm-t810``, ``sm-t815``; a regex that continues with something
open-ended, ``SM-T(\\d+)``, becomes the prefix ``sm-t``), lower-cased, with its type, and writes
them to ``squall/enrichment/data/device-models.tsv.gz`` (an LGPL-3.0-or-later data file: see
the header it carries). :mod:`squall.enrichment.device_models` finds them in a user agent with
one Aho-Corasick pass.

What is lost: the brand regex Matomo requires before a model regex may match (a model name
shared by two makers gets the first type the file gives it), look-around, and names shorter
than :data:`MIN_LENGTH` characters (too generic without the brand). Those are the approximations
docs/enrichment.md measures.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
from pathlib import Path

try:  # Python 3.11+
    import re._constants as sre_c
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as sre_c
    import sre_parse

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "squall" / "enrichment" / "data" / "device-models.tsv.gz"
#: Matomo device types -> squall classes (types squall derives otherwise are left out).
TYPES = {
    "smartphone": "mobile",
    "phablet": "mobile",
    "feature phone": "mobile",
    "tablet": "tablet",
    "tv": "tv",
    "console": "console",
    "wearable": "other",
    "smart display": "other",
    "smart speaker": "other",
    "camera": "other",
    "car browser": "other",
    "peripheral": "other",
    "portable media player": "other",
    "desktop": "desktop",
}
#: Shortest model name kept: shorter ones ("A5", "K01") collide across makers.
MIN_LENGTH = 4
#: Most names one regex may expand into; beyond it the regex is cut where it branches.
MAX_EXPANSIONS = 256
#: Characters that end a model name in a user agent (Matomo's ``(?:[);/ ]|$)``).
TERMINATORS = frozenset(");/ ")


class _Open(Exception):
    """The regex continues with something that is not a finite set of literals."""


def _chars(item) -> list[str] | None:
    """The characters of an ``IN`` set (case-folded), or None when it is not small and literal."""
    out: set[str] = set()
    for op, arg in item:
        if op is sre_c.LITERAL:
            out.add(chr(arg).lower())
        elif op is sre_c.RANGE and arg[1] - arg[0] < 16:
            out.update(chr(c).lower() for c in range(arg[0], arg[1] + 1))
        elif op is sre_c.CATEGORY and arg is sre_c.CATEGORY_DIGIT:
            out.update("0123456789")
        else:
            return None
    return sorted(out)


#: How an expansion stops: it may go on with the next item, it ended at a terminator (the name
#: must be followed by one in the user agent), or the regex goes on with something open-ended
#: (the text is a prefix).
GO, END, OPEN = "go", "end", "open"


def _item(op, arg, limit: int) -> list[tuple[str, str]] | str:
    """Expansions of one parsed item, or END / OPEN for the whole item."""
    if op is sre_c.LITERAL:
        return [(chr(arg).lower(), GO)]
    if op is sre_c.AT:
        return END if arg in (sre_c.AT_END, sre_c.AT_END_STRING) else [("", GO)]
    if op is sre_c.CATEGORY and arg is sre_c.CATEGORY_DIGIT:  # \d
        return [(ch, GO) for ch in "0123456789"]
    if op is sre_c.IN:
        chars = _chars(arg)
        if chars is None:
            return OPEN
        return END if set(chars) <= TERMINATORS else [(ch, GO) for ch in chars]
    if op is sre_c.SUBPATTERN:
        return _seq(arg[-1], limit)
    if op is sre_c.BRANCH:
        if all(_ends(alt) for alt in arg[1]):
            return END
        return [s for alt in arg[1] for s in _seq(alt, limit)]
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        low, high, body = arg
        if low == 0 and high == 1:
            return [("", GO), *_seq(body, limit)]
        if low == high and low <= 3:
            out = [("", GO)]
            for _ in range(low):
                out = [(a + b, st) for a, sta in out if sta == GO for b, st in _seq(body, limit)]
            return out
        return OPEN
    return OPEN  # ANY, CATEGORY, NOT_LITERAL, look-around, back-references


def _seq(items, limit: int) -> list[tuple[str, str]]:
    """Expansions of a parsed sequence: (text, how it stops)."""
    finished: list[tuple[str, str]] = []
    current = [""]
    for op, arg in items:
        sub = _item(op, arg, limit)
        if isinstance(sub, str):
            return finished + [(c, sub) for c in current]
        if len(current) * len(sub) > limit:
            return finished + [(c, OPEN) for c in current]
        nxt = []
        for c in current:
            for text, st in sub:
                if st == GO:
                    nxt.append(c + text)
                else:
                    finished.append((c + text, st))
        current = nxt
    return finished + [(c, GO) for c in current]


def _ends(alternative) -> bool:
    """An alternative of Matomo's end group: one terminator character, or the end."""
    items = list(alternative)
    if len(items) != 1:
        return False
    op, arg = items[0]
    if op is sre_c.AT:
        return arg in (sre_c.AT_END, sre_c.AT_END_STRING)
    if op is sre_c.LITERAL:
        return chr(arg) in TERMINATORS
    if op is sre_c.CATEGORY and arg is sre_c.CATEGORY_DIGIT:  # \d
        return [(ch, GO) for ch in "0123456789"]
    if op is sre_c.IN:
        chars = _chars(arg)
        return chars is not None and set(chars) <= TERMINATORS
    return False


def expand(pattern: str) -> list[tuple[str, bool]]:
    """The literal model names (lower case) a Matomo regex matches, each with whether the user
    agent must have a terminator (``);/`` or a space, or its end) right after it."""
    try:
        parsed = sre_parse.parse(pattern, re.I)
    except re.error:
        return []
    return [(text, st == END) for text, st in _seq(list(parsed), MAX_EXPANSIONS)]


def entries(mobiles: dict) -> list[tuple[str, str]]:
    """(regex, squall class) of every model of every brand, in the file's order."""
    out = []
    for brand in mobiles.values():
        default = brand.get("device")
        models = brand.get("models")
        if not models:
            if default in TYPES:
                out.append((brand["regex"], TYPES[default]))
            continue
        for model in models:
            kind = model.get("device", default)
            if kind in TYPES:
                out.append((model["regex"], TYPES[kind]))
    return out


#: Texts that are not model names: a platform or browser token some regexes start with
#: ("Android 4\\.[0-4]; …" selects an OS version, not a device).
NOT_MODELS = re.compile(
    r"^(?:android|linux|mozilla|build|opera|presto|google|windows|iphone|ipad|cpu |mobile|"
    r"safari|chrome|version|dalvik|ucweb|u;|adr |ios|tizen|kaios|webos|hbbtv|smart-?tv)"
)


def usable(text: str, bounded: bool = False) -> bool:
    """A text specific enough to name a model without its brand: long enough, with a digit or
    a hyphen (or a whole name of 6 characters or more), and not a platform token."""
    return (
        len(text) >= MIN_LENGTH
        and (any(ch.isdigit() or ch == "-" for ch in text) or (bounded and len(text) >= 6))
        and NOT_MODELS.match(text) is None
    )


def build(mobiles: dict) -> dict[str, dict[str, str]]:
    """``{"names": {name: class}, "prefixes": {text: class}}``: a name must be followed by a
    terminator in the user agent, a prefix need not. A text the file gives two classes
    (different makers' models) is left out: without the brand it decides nothing."""
    found: dict[tuple[str, bool], set[str]] = {}
    for regex, kind in entries(mobiles):
        for text, bounded in expand(regex):
            text = text.strip()
            if usable(text, bounded):
                found.setdefault((text, bounded), set()).add(kind)
    names = {t: k.pop() for (t, bounded), k in found.items() if bounded and len(k) == 1}
    prefixes = {t: k.pop() for (t, bounded), k in found.items() if not bounded and len(k) == 1}
    return {"names": names, "prefixes": prefixes}


def _anchored(items) -> bool:
    """Whether a parsed regex holds ``^`` or ``$`` anywhere (its texts match only there)."""
    for op, arg in items:
        if op is sre_c.AT and arg in (
            sre_c.AT_BEGINNING,
            sre_c.AT_BEGINNING_STRING,
            sre_c.AT_END,
            sre_c.AT_END_STRING,
        ):
            return True
        if op is sre_c.SUBPATTERN and _anchored(arg[-1]):
            return True
        if op is sre_c.BRANCH and any(_anchored(alt) for alt in arg[1]):
            return True
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT) and _anchored(arg[2]):
            return True
    return False


def bot_names(pattern: str) -> list[tuple[str, bool]]:
    """The bot names (lower case) a regex of Matomo's ``bots.yml`` matches in full, each with
    whether a terminator must follow. Only whole literals count: a regex that goes on with
    something open-ended (``Baidu.*spider``) gives nothing, and an alternative anchored with
    ``^``/``$`` (``^(?:chrome|firefox)$``: a user agent that is only that word) is left out."""
    try:
        parsed = list(sre_parse.parse(pattern, re.I))
    except re.error:
        return []
    if len(parsed) == 1 and parsed[0][0] is sre_c.BRANCH:
        alternatives = parsed[0][1][1]
    else:
        alternatives = [parsed]
    out = []
    for alternative in alternatives:
        if _anchored(alternative):
            continue
        out += [(t, st == END) for t, st in _seq(list(alternative), MAX_EXPANSIONS) if st != OPEN]
    return out


def build_bots(bots: list[dict]) -> dict[str, list[str]]:
    """``{"names": [...], "prefixes": [...]}`` of Matomo's bot list (same matching as models)."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for bot in bots:
        for text, bounded in bot_names(bot["regex"]):
            text = text.strip()
            if len(text) >= MIN_LENGTH and any(ch.isalnum() for ch in text):
                (names if bounded else prefixes).add(text)
    return {"names": sorted(names), "prefixes": sorted(prefixes - names)}


def write(index: dict, source: str, out: Path) -> None:
    """The data file: gzip text, ``#`` header lines, then one ``kind<TAB>text<TAB>class`` line
    per entry (kind ``n`` a name, ``p`` a prefix; class ``bot`` for the bot list), so that the
    reader adds entries one line at a time without holding the whole table in memory."""
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(f"# source: {source}\n")
        fh.write(
            "# license: LGPL-3.0-or-later (https://www.gnu.org/licenses/lgpl-3.0.html); derived "
            "from Matomo Device Detector by scripts/device_models.py\n"
        )
        rows = [("n", t, c) for t, c in index["names"].items()]
        rows += [("p", t, c) for t, c in index["prefixes"].items()]
        rows += [("n", t, "bot") for t in index["bots"]["names"]]
        rows += [("p", t, "bot") for t in index["bots"]["prefixes"]]
        for kind, text, cls in sorted(rows):
            if "\t" not in text and "\n" not in text:
                fh.write(f"{kind}\t{text}\t{cls}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--git", required=True, help="git dir of matomo-org/device-detector")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import yaml

    def git(*a: str) -> bytes:
        return subprocess.run(
            ["git", "--git-dir", args.git, *a], check=True, capture_output=True
        ).stdout

    sha = git("rev-parse", args.commit).decode().strip()
    mobiles = yaml.load(
        git("show", f"{sha}:regexes/device/mobiles.yml"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    bots = yaml.load(git("show", f"{sha}:regexes/bots.yml"), Loader=loader)
    index = build(mobiles)
    index["bots"] = build_bots(bots)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(
        index,
        f"matomo-org/device-detector {sha} regexes/device/mobiles.yml, regexes/bots.yml",
        args.out,
    )
    print(
        f"{len(index['names']):,} names, {len(index['prefixes']):,} prefixes, "
        f"{sum(map(len, index['bots'].values())):,} bot names -> {args.out} "
        f"({args.out.stat().st_size:,} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
