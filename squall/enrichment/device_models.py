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
end, a *prefix* need not. The longest match wins.
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


class ModelIndex:
    """Model names and prefixes with their device class, and bot names; built once by
    :meth:`load` from the bundled data file (or from ``entries``: ``(kind, text, class)`` with
    kind ``n`` for a name that must end at a terminator, ``p`` for a prefix)."""

    def __init__(self, entries: Iterable[tuple[str, str, str]] | None = None) -> None:
        self._entries = entries
        self._automaton: Any = None
        self._lock = threading.Lock()
        self.source = ""
        self.size = 0

    def load(self) -> None:
        """Read the data file and build the automaton (once; ~40-60 ms)."""
        with self._lock:
            if self._automaton is None:
                self._build(self._entries if self._entries is not None else read_data(self))

    def _build(self, entries: Iterable[tuple[str, str, str]]) -> None:
        import ahocorasick

        # Each entry's value is one int: length << 4 | class code << 1 | must end at a terminator.
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for kind, text, cls in entries:
            automaton.add_word(text, len(text) << 4 | _CODE[cls] << 1 | (kind == "n"))
        automaton.make_automaton()
        self.size = len(automaton)
        self._automaton = automaton

    def lookup(self, ua: str) -> str | None:
        """The class of the longest model name found in ``ua``, or None."""
        return self.scan(ua)[1]

    def scan(self, ua: str) -> tuple[int, str | None]:
        """(where the first bot name found in ``ua`` starts, -1 if none; the class of the
        longest model name found, None if none), in one pass."""
        if self._automaton is None:
            self.load()
        # ASCII case folding only: positions stay those of ``ua`` ("İ".lower() is two characters).
        text = ua.lower() if ua.isascii() else ua.translate(_ASCII_LOWER)
        last = len(text) - 1
        bot_at, best_length, best = -1, 0, 0
        for end, value in self._automaton.iter(text):
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
        return bot_at, CLASSES[best] if best else None


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
