"""Device models and bots named in a user agent, from Matomo's device database and bot list.

A cheap Android tablet whose browser writes "Mobile", or an Android TV that does not say TV, is
told from a phone only by its model name. ``data/device-models.json.gz`` holds ~52,000 model
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
import json
import threading
from importlib import resources
from typing import Any

#: The characters that continue a word: a model name does not start after one of them.
_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_END = frozenset(");/ ")
BOT = "bot"


class ModelIndex:
    """Model names and prefixes with their device class; built once by :meth:`load`."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self._data = data
        self._automaton: Any = None
        self._lock = threading.Lock()
        self.source = ""
        self.size = 0

    def load(self) -> None:
        """Read the data file and build the automaton (once; ~40-60 ms)."""
        with self._lock:
            if self._automaton is None:
                self._build(self._data if self._data is not None else read_data())

    def _build(self, doc: dict[str, Any]) -> None:
        import ahocorasick

        automaton = ahocorasick.Automaton()
        bots = doc.get("bots", {})
        for name in bots.get("names", ()):
            automaton.add_word(name, (len(name), BOT, True))
        for name in bots.get("prefixes", ()):
            automaton.add_word(name, (len(name), BOT, False))
        for name, cls in doc["names"].items():  # a model name wins over a bot name
            automaton.add_word(name, (len(name), cls, True))
        for name, cls in doc["prefixes"].items():  # also a name: it matches as a prefix
            automaton.add_word(name, (len(name), cls, False))
        automaton.make_automaton()
        self.source = doc.get("source", "")
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
        text = ua.lower()
        last = len(text) - 1
        bot_at, best_length, best = -1, 0, None
        for end, (length, cls, bounded) in self._automaton.iter(text):
            if cls is not BOT and length <= best_length:
                continue
            start = end - length + 1
            if start and text[start - 1] in _WORD:
                continue
            if bounded and end < last and text[end + 1] not in _END:
                continue
            if cls is BOT:
                # A bot name is a word: "OrangeBot" is not in "FBCR/OrangeBotswana".
                if bot_at < 0 and (end == last or not text[end + 1].isalpha()):
                    bot_at = start
            else:
                best_length, best = length, cls
        return bot_at, best


def read_data() -> dict[str, Any]:
    """The bundled model data (``squall/enrichment/data/device-models.json.gz``)."""
    path = resources.files("squall.enrichment").joinpath("data/device-models.json.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return json.load(fh)
