"""Do two runs of the pistats chain store the same thing? Rows, subscription states, dead letters.

The benchmark calls ``compare`` after every measured run of every variant against the first
(squall's) output of the same round, and stops with the first differences when they differ: a
baseline that does less (or other) work would make any ratio meaningless.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Output:
    """Where one run wrote: the warehouse and state databases (URL + table) and its dead letters."""

    warehouse: str
    events_table: str
    state: str
    state_table: str
    rejects: Path


def dump(out: Output, path: Path) -> Path:
    """Write an ``Output`` as JSON, for ``main``."""
    path.write_text(json.dumps({**asdict(out), "rejects": str(out.rejects)}))
    return path


class Mismatch(AssertionError):
    """Two runs stored different things."""


def _rows(url: str, table: str, order: str) -> list[tuple]:
    if url.startswith("sqlite:///"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        finally:
            db.close()
    import psycopg2

    db = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))
    try:
        with db.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} ORDER BY {order}")
            return [tuple(_plain(v) for v in row) for row in cur.fetchall()]
    finally:
        db.close()


def _plain(v: Any) -> Any:
    return (
        orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode() if isinstance(v, dict | list) else v
    )


def dead_letters(path: Path) -> list[dict]:
    """The dead letters of a file without their ``failed_at`` time, in record order."""
    out = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                doc = orjson.loads(line)
                doc.pop("failed_at", None)
                out.append(doc)
    out.sort(key=lambda d: (int(d["meta"]["sequence_number"]), d["component"] or ""))
    return out


def snapshot(out: Output) -> dict[str, list]:
    """Everything a run stored, in a comparable form."""
    return {
        "rows": _rows(out.warehouse, out.events_table, "event_id"),
        "states": _rows(out.state, out.state_table, "key"),
        "dead_letters": dead_letters(out.rejects),
    }


def compare(expected: dict[str, list], got: dict[str, list], name: str) -> None:
    """Raise ``Mismatch`` naming the first differences between two snapshots."""
    problems = []
    for part in ("rows", "states", "dead_letters"):
        a, b = expected[part], got[part]
        if a == b:
            continue
        msg = f"{part}: {len(a)} expected, {len(b)} from {name}"
        for x, y in zip(a, b, strict=False):
            if x != y:
                msg += f"\n  first difference:\n    expected {x!r}\n    got      {y!r}"
                break
        problems.append(msg)
    if problems:
        raise Mismatch(f"{name} stored something else than the reference:\n" + "\n".join(problems))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/check.py REFERENCE.json OTHER.json NAME``: each file one ``Output``.

    Run in its own process by benchmarks/run.py, so that the benchmark's parent stays small: a
    child's peak RSS (``wait4``) counts the memory of the process it was spawned from.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    ref, other, name = args

    def load(path: str) -> Output:
        doc = json.loads(Path(path).read_text())
        return Output(**{**doc, "rejects": Path(doc["rejects"])})

    try:
        compare(snapshot(load(ref)), snapshot(load(other)), name)
    except Mismatch as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
