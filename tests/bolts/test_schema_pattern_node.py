"""``ecma_pattern`` against node's RegExp (ECMA-262, the ``u`` flag JSON Schema 2020-12
advises): a table of random patterns from a small grammar (classes and their escapes inside and
outside brackets, ``.``, ``\\b``, groups, look-arounds, quantifiers, backreferences) × random
texts (ASCII, other digits and letters, ECMA's and Python's white space, line terminators, an
astral character), each answer node's. Rows node refuses under ``u``, or Python's ``re`` refuses
as written (the schema is refused at load then), are left out."""

from __future__ import annotations

import json
import random
import re
import subprocess
import warnings

from squall.bolts.schema import ecma_pattern

CHARS = ["a", "Z", "0", "9", "_", "-", " ", "\n", "\r", "\t", "\xe9", "\u0663", "\ufeff"]
CHARS += ["\x1c", "\x85", "\u2028", "\xa0", "^", "]", "$", "\\", ".", "\u212a", "\U0001f600"]
ESCAPES = [r"\d", r"\D", r"\w", r"\W", r"\s", r"\S"]
LITERALS = ["a", "0", "9", "_", "-", "\xe9", r"\.", r"\\", r"\$", r"\^", r"\]", r"\[", " ", "#"]
LITERALS += [r"\x41", r"\u00e9", r"\t", r"\n", r"\/", "\u0663"]
MEMBERS = ["a-z", "0-5", r"\x41-\x5a", "$", ".", r"\b", r"\-", r"\0", r"\1", *LITERALS]

NODE = """
const rows = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(rows.map(([p, t]) => {
  try { return new RegExp(p, "u").test(t); } catch (e) { return null; }
})));
"""


def table(seed: int, patterns: int, texts: int) -> list[tuple[str, str]]:
    rnd = random.Random(seed)

    def bracket() -> str:
        items = [rnd.choice(ESCAPES if rnd.random() < 0.4 else MEMBERS)]
        items += [rnd.choice(ESCAPES + MEMBERS + ["^"]) for _ in range(rnd.randint(0, 2))]
        return "[" + ("^" if rnd.random() < 0.3 else "") + "".join(items) + "]"

    def atom(depth: int) -> str:
        r = rnd.random()
        if r < 0.05:
            return rnd.choice([r"\b", r"\B", "^", "$"])
        if r < 0.3:
            a = rnd.choice(ESCAPES)
        elif r < 0.4:
            a = "."
        elif r < 0.52:
            a = bracket()
        elif r < 0.62 and depth < 3:
            kind = rnd.choice(["", "", "?:", "?=", "?!", "?<=", "?<!"])
            a = f"({kind}{seq(depth + 1)}{'|' + seq(depth + 1) if rnd.random() < 0.3 else ''})"
        elif r < 0.7:
            a = r"\1"
        else:
            a = rnd.choice(LITERALS)
        if rnd.random() < 0.15:
            a += rnd.choice(["*", "+", "?", "{2}", "{1,2}", "*?", "+?"])
        return a

    def seq(depth: int = 0) -> str:
        return "".join(atom(depth) for _ in range(rnd.randint(1, 4)))

    def referring() -> str:  # a backreference to a group that may take part in no match
        group = rnd.choice(["({})?", "(?:({})|{})", "(?!({}))", "(?:({}){})?"])
        return seq(1) + group.format(seq(2), seq(2)) + "\\1" + seq(1)

    return [
        (p, "".join(rnd.choice(CHARS) for _ in range(rnd.randint(0, 5))))
        for p in (seq() if i % 4 else referring() for i in range(patterns))
        for _ in range(texts)
    ]


def python_reads(pattern: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "[\\--a]": possible set difference
            re.compile(pattern)
    except re.error:
        return False
    return True


def test_ecma_pattern_answers_as_node_does_on_a_random_table():
    rows = [(p, t) for p, t in table(2026, 1500, 6) if python_reads(p)]
    done = subprocess.run(
        ["node", "-e", NODE], input=json.dumps(rows), capture_output=True, text=True, check=True
    )
    answers = json.loads(done.stdout)
    compared = [
        (p, t, ecma) for (p, t), ecma in zip(rows, answers, strict=True) if ecma is not None
    ]
    assert len(compared) > 4000  # the table is not mostly refused
    python = {p: re.compile(ecma_pattern(p)) for p, _, _ in compared}
    differ = [(p, t, ecma) for p, t, ecma in compared if bool(python[p].search(t)) != ecma]
    assert differ == []
