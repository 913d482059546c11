"""Ctrl-C reaches the main thread while a progress bar's thread runs (squall/deploy/signals.py).

`squall produce`'s interrupt test timed out now and then: the main thread waited in its read of
a FIFO, the kernel gave the SIGINT to rich's refresh thread, and Python's handler waited for the
read to end (the faulthandler dump showed the main thread still in ``raw.read(2)``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from squall.deploy.signals import signals_to_main_thread


def blocked(tid: int) -> set[int]:
    """The signals thread ``tid`` of this process blocks (its ``SigBlk`` mask)."""
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigBlk line")


def test_a_thread_started_inside_blocks_the_stopping_signals_and_the_caller_does_not():
    before = blocked(threading.get_native_id())
    ready, done = threading.Event(), threading.Event()
    seen: list[set[int]] = []

    def run() -> None:
        seen.append(blocked(threading.get_native_id()))
        ready.set()
        done.wait(5)

    with signals_to_main_thread():
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
    ready.wait(5)
    done.set()
    thread.join(5)
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert blocked(threading.get_native_id()) == before  # the caller's mask as it was
    assert signal.SIGINT not in before


def test_the_produce_progress_bar_thread_blocks_them(monkeypatch):
    """The refresh thread `squall produce` starts is one of those: started inside the block."""
    import rich.live

    masks: list[set[int]] = []
    run = rich.live._RefreshThread.run

    def recording(self) -> None:
        masks.append(blocked(threading.get_native_id()))
        run(self)

    monkeypatch.setattr(rich.live._RefreshThread, "run", recording)
    from rich.console import Console
    from rich.progress import Progress

    out = open("/dev/null", "w")  # noqa: SIM115 - closed below
    bar = Progress(console=Console(file=out, force_terminal=True), transient=True)
    with signals_to_main_thread():
        bar.start()
    thread = bar.live._refresh_thread
    bar.stop()
    assert thread is not None
    thread.join(5)
    out.close()
    assert masks and {signal.SIGINT, signal.SIGTERM} <= masks[0]
