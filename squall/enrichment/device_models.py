"""Device models and bots named in a user agent, from Matomo's device database and bot list.

A cheap Android tablet whose browser writes "Mobile", or an Android TV that does not say TV, is
told from a phone only by its model name. ``data/device-models.tsv.gz`` holds ~52,000 model
names and name prefixes with their class (mobile, tablet, tv, console, other), derived by
``scripts/device_models.py`` from Matomo Device Detector's ``regexes/device/mobiles.yml``
(LGPL-3.0-or-later; the file's header names the commit). They are found in a user agent with one
Aho-Corasick pass (``pyahocorasick``, ~3 µs a string) instead of Matomo's ~17,000 regexes,
which take seconds to compile. The same pass finds the ~1,200 bot names of Matomo's
``regexes/bots.yml`` (the names its regexes match in full; an open-ended regex such as
``Baidu.*spider`` gives none).

A name counts where a model name can start (not inside a longer word: the character before it
is none of ``a-z0-9_-``); a *name* must also be followed by ``)``, ``;``, ``/``, a space or the
end, a *prefix* need not. The longest match wins. The pass also finds *literals* given to
:meth:`ModelIndex.load` (the crawler list's plain-text patterns): anywhere, exact case.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

#: The characters that continue a word: a model name does not start after one of them.
_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_END = frozenset(");/ ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


#: Class codes stored in the automaton (an int per entry, not a Python object per entry).
CLASSES = ("bot", "mobile", "tablet", "tv", "console", "other", "desktop")
_CODE = {name: code for code, name in enumerate(CLASSES)}
#: The code (after the classes') of a literal's key: see :meth:`ModelIndex.scan_all`.
_LITERAL = 7


class ModelIndex:
    """Model names and prefixes with their device class, and bot names; built once by
    :meth:`load` from the bundled data file (or from ``entries``: ``(kind, text, class)`` with
    kind ``n`` for a name that must end at a terminator, ``p`` for a prefix)."""

    def __init__(self, entries: Iterable[tuple[str, str, str]] | None = None) -> None:
        self._entries = entries
        self._automaton: Any = None
        self._lock = threading.Lock()
        #: Per literal key: the literals (exact case) it stands for, and the value it replaced.
        self._literal_keys: list[tuple[frozenset[str], int]] = []
        #: The literals the automaton holds (those given to the first :meth:`load`).
        self.literals: frozenset[str] = frozenset()
        self.source = ""
        self.size = 0

    def load(self, literals: Iterable[str] = ()) -> None:
        """Read the data file and build the automaton (once; ~40-60 ms). ``literals``: strings
        found anywhere, case-sensitively (:meth:`scan_all`'s third answer); only the first
        call's are built in (see :attr:`literals`)."""
        with self._lock:
            if self._automaton is None:
                entries = self._entries if self._entries is not None else read_data(self)
                self._build(entries, literals)

    def _build(self, entries: Iterable[tuple[str, str, str]], literals: Iterable[str]) -> None:
        import ahocorasick

        # Each entry's value is one int: length << 4 | class code << 1 | must end at a terminator.
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for kind, text, cls in entries:
            automaton.add_word(text, len(text) << 4 | _CODE[cls] << 1 | (kind == "n"))
        self.size = len(automaton)
        # A literal's key is its ASCII-folded text, as the scanned text is; its value is
        # index << 4 | LITERAL << 1, the index naming the literals of that key and the value
        # of a model or bot name the key already had (-1 if none).
        groups: dict[str, set[str]] = {}
        for literal in literals:
            if literal:
                groups.setdefault(literal.translate(_ASCII_LOWER), set()).add(literal)
        keys = []
        for key, originals in groups.items():
            keys.append((frozenset(originals), automaton.get(key, -1)))
            automaton.add_word(key, (len(keys) - 1) << 4 | _LITERAL << 1)
        automaton.make_automaton()
        self._literal_keys = keys
        self.literals = frozenset().union(*(originals for originals, _ in keys))
        self._automaton = automaton

    def lookup(self, ua: str) -> str | None:
        """The class of the longest model name found in ``ua``, or None."""
        return self.scan(ua)[1]

    def scan(self, ua: str) -> tuple[int, str | None]:
        """(where the first bot name found in ``ua`` starts, -1 if none; the class of the
        longest model name found, None if none), in one pass."""
        return self.scan_all(ua)[:2]

    def scan_all(self, ua: str) -> tuple[int, str | None, int]:
        """:meth:`scan`'s answers and where the last of the :attr:`literals` found in ``ua``
        (exact case, anywhere) starts, -1 if none; in one pass."""
        if self._automaton is None:
            self.load()
        # ASCII case folding only: positions stay those of ``ua`` ("İ".lower() is two characters).
        text = ua.lower() if ua.isascii() else ua.translate(_ASCII_LOWER)
        last = len(text) - 1
        bot_at, best_length, best, literal_at = -1, 0, 0, -1
        for end, value in self._automaton.iter(text):
            if value >> 1 & 7 == _LITERAL:
                originals, value = self._literal_keys[value >> 4]
                start = end - len(next(iter(originals))) + 1
                if start > literal_at and ua[start : end + 1] in originals:
                    literal_at = start
                if value < 0:
                    continue
            length, code = value >> 4, value >> 1 & 7
            if code and length <= best_length:
                continue
            start = end - length + 1
            if start and text[start - 1] in _WORD:
                continue
            if value & 1 and end < last and text[end + 1] not in _END:
                continue
            if not code:  # a bot name
                # A bot name is a word: "OrangeBot" is not in "FBCR/OrangeBotswana".
                if bot_at < 0 and (end == last or not text[end + 1].isalpha()):
                    bot_at = start
            else:
                best_length, best = length, code
        return bot_at, CLASSES[best] if best else None, literal_at


def read_data(index: ModelIndex | None = None) -> Iterator[tuple[str, str, str]]:
    """The entries of the bundled data file (``squall/enrichment/data/device-models.tsv.gz``),
    one line at a time; its ``# source:`` header goes to ``index.source``."""
    path = resources.files("squall.enrichment").joinpath("data/device-models.tsv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#"):
                if line.startswith("# source: ") and index is not None:
                    index.source = line[10:].strip()
                continue
            kind, text, cls = line.rstrip("\n").split("\t")
            yield kind, text, cls
