"""Bot detection for the strings the rules cannot decide: candidates measured on every corpus.

The device bolt's misses on the bot corpora are mostly strings in which ua-parser finds no
browser, OS or device and that hold no bot word or listed name (``Photon/1.0``, a product name
with a URL). This script measures what could decide those "undecided" strings, scored on every
corpus of :mod:`benchmarks.ua_corpus` as bot recall and precision before (the rules alone) and
after (the rules, then the candidate on the undecided strings only):

- ``model``: a learned classifier, logistic regression over character 1-5-grams (lower case,
  digit runs as ``0``, presence only), trained on the undecided strings of the non-acceptance
  corpora: Matomo's development half, CrawlerDetect, isbot, crawler-user-agents' examples,
  ua-parser-js and Mobile-Detect. Every string also present in browscap, WhichBrowser or
  Matomo's held-out half is left out of training, so those three are held out (CrawlerDetect,
  isbot and the others are spent: their figures are in-sample). Thresholds 0.5, 0.7, 0.9;
  out-of-fold figures (5 folds) of the training set are printed first.
- ``crawlerdetect``: the patterns of CrawlerDetect's Python port (PyPI ``crawlerdetect``, MIT),
  with its exclusions, on the undecided strings only (CrawlerDetect's own corpus is then spent).
- ``crawlerdetect+model``: both must say bot (model at 0.7).
- ``crawlerdetect, filtered``: its patterns without its exclusions, matched case-insensitively
  in one ua-parser-rs set as squall matches its lists, less every pattern that matches a
  string the training corpora label as not a bot (the way squall leaves out four patterns of
  crawler-user-agents); on the undecided strings, then on every string the rules do not call a
  bot.
- ``crawlerdetect, filtered, and isbot`` (with ``--isbot-git DIR``, a clone of omrilotan/isbot,
  Unlicense): both lists must match, on the undecided strings. isbot's pattern (its
  ``src/patterns.json``) has look-behinds, so it runs in the ``regex`` module.
- ``undecided, no known client`` (with ``--matomo-git DIR``, a clone of
  matomo-org/device-detector, LGPL-3.0-or-later): every undecided string that none of Matomo's
  client lists matches (``regexes/client/``: mobile apps, media players, feed readers, PIM,
  libraries, browsers; with Matomo's own prefix, case-insensitive) is a bot.

Needs scikit-learn and crawlerdetect, for this script only (``pip install scikit-learn
crawlerdetect``); neither is a dependency of squall. Nothing here is used at run time: every
candidate lost precision on the held-out corpora (docs/enrichment.md, "How well it classifies").

    python benchmarks/bot_candidates.py [--isbot-git DIR] [--matomo-git DIR]
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import ua_corpus  # noqa: E402

TRAIN = ("matomo:dev", "crawlerdetect", "isbot", "crawleruseragents", "uaparserjs", "mobiledetect")
HELD_OUT = ("browscap", "whichbrowser", "matomo:held-out")
SCORED = (*HELD_OUT, "matomo:dev", "crawlerdetect", "isbot")
THRESHOLDS = (0.5, 0.7, 0.9)


def parsed_corpus(name: str, bolt) -> list[tuple[str, str, bool, bool]]:
    """(label, user agent, rules say bot, undecided) of each labelled row of corpus ``name``
    ("matomo:dev" is a half; "crawleruseragents" the crawler list's example strings, all bots).
    Undecided: not a bot by the rules, and ua-parser names no browser, OS or device."""
    if name == "crawleruseragents":
        import crawleruseragents

        path = Path(crawleruseragents.__file__).parent / "crawler-user-agents.json"
        rows = [
            ("bot", ua, {})
            for item in json.loads(path.read_text())
            for ua in item.get("instances", ())
        ]
    else:
        corpus, _, half = name.partition(":")
        rows = ua_corpus.load(ua_corpus.CORPORA[corpus], half or None)
    out = []
    for label, ua, _ in rows:
        if label == ua_corpus.NOT_LABELLED:
            continue
        block = bolt.parse(ua.strip()[:512])
        is_bot = block["device_class"] == "bot"
        nothing = block["browser"] == block["os"] == block["device"] == "Other"
        out.append((label, ua, is_bot, not is_bot and nothing))
    return out


def features(ua: str) -> str:
    """The text the n-grams are taken from: lower case, each run of digits as one ``0``."""
    return re.sub(r"\d+", "0", ua.lower())


def train(corpora: dict[str, list], held: set[str]):
    """The fitted (vectorizer, model) and the out-of-fold probabilities of its training set."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts, labels, seen = [], [], set()
    for name in TRAIN:
        for label, ua, _, undecided in corpora[name]:
            if undecided and ua not in held and ua not in seen:
                seen.add(ua)
                texts.append(ua)
                labels.append(label == "bot")
    y = np.array(labels)
    vectorizer = CountVectorizer(
        analyzer="char", ngram_range=(1, 5), preprocessor=features, binary=True, min_df=2
    )
    matrix = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=0.3, max_iter=5000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=22)
    oof = cross_val_predict(model, matrix, y, cv=folds, method="predict_proba")[:, 1]
    model.fit(matrix, y)
    print(
        f"training set: {len(texts):,} undecided strings, {int(y.sum()):,} bots, "
        f"{matrix.shape[1]:,} n-grams"
    )
    for t in THRESHOLDS:
        flagged = oof >= t
        tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
        print(
            f"  out-of-fold at {t}: {tp} of {int(y.sum())} bots, {fp} of {int((~y).sum())} others"
        )
    return vectorizer, model


def pure_python_cost(vectorizer, model, texts: list[str]) -> float:
    """µs a string to score the model in plain Python (a dict of n-gram weights), as the bolt
    would have to: the figure that would be paid per undecided string."""
    import math

    weights = {
        gram: float(w)
        for gram, w in zip(vectorizer.get_feature_names_out(), model.coef_[0], strict=True)
        if w
    }
    bias = float(model.intercept_[0])

    def score(ua: str) -> float:
        text = features(ua)
        grams = {text[i : i + n] for n in range(1, 6) for i in range(len(text) - n + 1)}
        return 1 / (1 + math.exp(-(bias + sum(weights.get(g, 0.0) for g in grams))))

    started = time.perf_counter()
    for ua in texts:
        score(ua)
    return (time.perf_counter() - started) / max(1, len(texts)) * 1e6


def line(name: str, rows: list, flag, everywhere: bool = False) -> str:
    """Recall and precision before -> after for one corpus (``flag``: the strings the candidate
    calls bots; only the undecided ones count unless ``everywhere``)."""
    bots = sum(label == "bot" for label, *_ in rows)
    tp0 = sum(label == "bot" and is_bot for label, _, is_bot, _ in rows)
    flagged0 = sum(is_bot for _, _, is_bot, _ in rows)
    added = [
        label
        for label, ua, is_bot, undecided in rows
        if (undecided or (everywhere and not is_bot)) and ua in flag
    ]
    tp = tp0 + sum(label == "bot" for label in added)
    flagged = flagged0 + len(added)

    def pct(a: int, b: int) -> str:
        return f"{a / b:6.1%}" if b else "     -"

    return (
        f"  {name:<17} recall {pct(tp0, bots)} -> {pct(tp, bots)}   precision "
        f"{pct(tp0, flagged0)} -> {pct(tp, flagged)}   (+{len(added) - (tp - tp0)} others, "
        f"+{tp - tp0} bots of {bots})"
    )


def filtered_crawlerdetect(corpora: dict[str, list], held: set[str]):
    """A test of CrawlerDetect's patterns less those matching a non-bot string of the training
    corpora (one ua-parser-rs set, case-insensitive, no exclusions)."""
    import ua_parser_rs
    from crawlerdetect.providers.crawlers import data as patterns

    others = {
        ua for name in TRAIN for label, ua, *_ in corpora[name] if label != "bot" and ua not in held
    }
    kept = []
    for pattern in patterns:
        compiled = re.compile(pattern, re.I)
        if not any(compiled.search(ua) for ua in others):
            kept.append(pattern)
    started = time.perf_counter()
    found = ua_parser_rs.DeviceExtractor([(p, "i", "bot", None, None) for p in kept])
    print(
        f"crawlerdetect, filtered: {len(kept):,} of {len(patterns):,} patterns kept, compiled "
        f"in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    return lambda ua: found.extract(ua) is not None


def isbot_test(git_dir: str):
    """isbot's pattern (``src/patterns.json`` at the clone's HEAD), case-insensitive."""
    import subprocess

    import regex

    text = subprocess.run(
        ["git", "--git-dir", git_dir, "show", "HEAD:src/patterns.json"],
        check=True,
        capture_output=True,
    ).stdout
    pattern = regex.compile("|".join(json.loads(text)), regex.I)
    return lambda ua: pattern.search(ua) is not None


MATOMO_CLIENTS = ("mobile_apps", "mediaplayers", "feed_readers", "pim", "libraries", "browsers")


def matomo_client_test(git_dir: str):
    """Whether one of Matomo's client regexes (:data:`MATOMO_CLIENTS`, at the clone's HEAD)
    matches, with the prefix Matomo puts in front of them."""
    import subprocess

    import regex
    import yaml

    patterns = []
    for name in MATOMO_CLIENTS:
        text = subprocess.run(
            ["git", "--git-dir", git_dir, "show", f"HEAD:regexes/client/{name}.yml"],
            check=True,
            capture_output=True,
        ).stdout
        patterns += [item["regex"] for item in yaml.load(text, Loader=yaml.CSafeLoader)]
    pattern = regex.compile(
        r"(?:^|[^A-Z0-9_-]|[^A-Z0-9-]_|sprd-|MZ-)(?:"
        + "|".join(f"(?:{p})" for p in patterns)
        + ")",
        regex.I,
    )
    return lambda ua: pattern.search(ua) is not None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isbot-git", help="git dir of a clone of omrilotan/isbot")
    parser.add_argument("--matomo-git", help="git dir of a clone of matomo-org/device-detector")
    args = parser.parse_args(argv)
    from squall.component import ComponentContext
    from squall.enrichment.device import DeviceBolt

    bolt = DeviceBolt(DeviceBolt.Config(id="device", type="device"), ComponentContext("bots"))
    corpora = {name: parsed_corpus(name, bolt) for name in dict.fromkeys((*TRAIN, *SCORED))}
    held = {ua for name in HELD_OUT for _, ua, *_ in corpora[name]}
    vectorizer, model = train(corpora, held)
    undecided = {ua for rows in corpora.values() for _, ua, _, u in rows if u}
    texts = sorted(undecided)
    probability = dict(
        zip(texts, model.predict_proba(vectorizer.transform(texts))[:, 1], strict=True)
    )
    print(
        f"model in plain Python: {pure_python_cost(vectorizer, model, texts):.0f} µs a string "
        f"({len(texts):,} undecided strings)"
    )
    candidates = {
        f"model >= {t}": {ua for ua, p in probability.items() if p >= t} for t in THRESHOLDS
    }
    if args.matomo_git:
        known = matomo_client_test(args.matomo_git)
        candidates["undecided, no known client"] = {ua for ua in texts if not known(ua)}
    try:
        from crawlerdetect import CrawlerDetect
    except ImportError:
        print("crawlerdetect not installed: its candidates are skipped")
    else:
        detect = CrawlerDetect()
        listed = {ua for ua in texts if detect.is_crawler(ua)}
        candidates["crawlerdetect"] = listed
        candidates["crawlerdetect+model >= 0.7"] = listed & candidates["model >= 0.7"]
        kept = filtered_crawlerdetect(corpora, held)
        every = {ua for rows in corpora.values() for _, ua, *_ in rows}
        filtered = {ua for ua in every if kept(ua)}
        candidates["crawlerdetect, filtered"] = filtered
        candidates["crawlerdetect, filtered, on every string"] = filtered
        if args.isbot_git:
            isbot = isbot_test(args.isbot_git)
            candidates["crawlerdetect, filtered, and isbot"] = {ua for ua in filtered if isbot(ua)}
    for title, flag in candidates.items():
        print(f"{title} (held out: {', '.join(HELD_OUT)}; the others are spent)")
        for name in SCORED:
            print(line(name, corpora[name], flag, everywhere=title.endswith("every string")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
