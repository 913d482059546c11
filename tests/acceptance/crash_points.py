"""``squall run`` that kills itself with SIGKILL at a chosen point of the commit sequence.

Test-side only (no hook in the product): ``python -m tests.acceptance.crash_points run …`` wraps
a few engine methods, then runs the CLI as usual. ``CRASH_AT=<point>:<n>`` kills the process at
the ``n``-th time (1-based, counted in this process) it reaches ``<point>``:

- ``dead_letters``: the batch's dead letters are written (step 1), nothing else is;
- ``in_tx``: the batch's transaction has written rows, state and checkpoint, and not committed;
- ``after_tx``: the transaction committed; a state outside it (Redis) is not written yet;
- ``state``: a stateful bolt's ``commit_state`` returned (in or after the transaction);
- ``after_batch``: ``Engine.process`` returned: the batch is committed, the runner not told.

The kill is ``os.kill(os.getpid(), SIGKILL)``: no ``finally``, no flush, no lock release — as a
power cut or the OOM killer leaves it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

POINTS = ("dead_letters", "in_tx", "after_tx", "state", "after_batch")


def _parse(spec: str) -> tuple[str, int]:
    point, _, n = spec.partition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"CRASH_AT={spec!r}: expected <point>:<n> with point in {POINTS}, n >= 1")
    return point, int(n)


def install(spec: str) -> None:
    """Wrap the engine so that the process dies at ``spec`` (``<point>:<n>``)."""
    from squall.bolts.base import Bolt
    from squall.topology import executor, sql

    point, target = _parse(spec)
    seen = {p: 0 for p in POINTS}

    def reached(name: str) -> None:
        seen[name] += 1
        if name == point and seen[name] == target:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def after(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            reached(name)
            return result

        return wrapper

    engine = executor.Engine
    engine._write_dead_letters = after("dead_letters", engine._write_dead_letters)  # type: ignore[method-assign]
    engine._commit_transaction = after("after_tx", engine._commit_transaction)  # type: ignore[method-assign]
    engine.process = after("after_batch", engine.process)  # type: ignore[method-assign]

    original_transaction = sql.transaction

    @contextlib.contextmanager
    def transaction(db: Any) -> Iterator[Any]:
        with original_transaction(db) as conn:
            yield conn
            reached("in_tx")  # the body ran to its end; COMMIT comes when this block exits

    sql.transaction = transaction  # type: ignore[assignment]

    # Every concrete stateful bolt overrides commit_state: wrap each subclass's own.
    wrapped: set[type] = set()

    def wrap_subclasses(cls: type) -> None:
        for sub in cls.__subclasses__():
            if "commit_state" in vars(sub) and sub not in wrapped:
                wrapped.add(sub)
                sub.commit_state = after("state", vars(sub)["commit_state"])  # type: ignore[attr-defined]
            wrap_subclasses(sub)

    import squall.bolts.window
    import squall.enrichment.subscription  # noqa: F401 - the stateful bolts, before wrapping

    wrap_subclasses(Bolt)


def main() -> None:
    spec = os.environ.get("CRASH_AT")
    if spec:
        install(spec)
    from squall.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
