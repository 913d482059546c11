"""Lambda SnapStart: an init that is snapshotted once and restored for every cold start.

With SnapStart (Python 3.12 and later; ``squall package --snapstart``), Lambda runs a function's
init when a version is published, snapshots the process, and starts each new execution
environment from that snapshot. Init time then costs nothing per cold start, so the handlers
spend more of it: every component builds what it would otherwise build at its first batch
(``Component.warm_up``: the device bolt's user-agent parser and rules, the schema bolt's
reporting validator). Two runtime hooks (AWS's ``snapshot_restore_py``, part of the managed
runtime) keep the copies apart: before the snapshot the resources' pooled connections are closed,
after a restore they are closed again (nothing of the original's sockets is used), ``random`` is
seeded anew and each component's ``after_restore`` runs.

Without SnapStart (``AWS_LAMBDA_INITIALIZATION_TYPE`` other than ``snap-start``) nothing here
happens: warming up would only move the first batch's work into every cold start's init.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("squall.snapstart")

#: Lambda SnapStart for Python starts with this runtime.
PYTHON = (3, 12)
#: The alias SAM publishes each version under (``squall package --snapstart``); the trigger
#: invokes it, so invocations start from the version's snapshot.
ALIAS = "live"
#: The variable Lambda sets for the init: "on-demand", "provisioned-concurrency" or "snap-start".
INIT_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"


def problem(python: str) -> str | None:
    """Why SnapStart cannot be used with this Lambda Python version (``--python``), or None."""
    try:
        version = tuple(int(part) for part in python.split(".")[:2])
    except ValueError:
        return f"--python {python!r} is not a version"
    if version < PYTHON:
        return f"Lambda SnapStart needs Python {PYTHON[0]}.{PYTHON[1]} or later (--python {python})"
    return None


def snap_starting() -> bool:
    """True during an init that Lambda will snapshot."""
    return os.environ.get(INIT_TYPE) == SNAP_START


def prepare(engine: Any) -> bool:
    """At the end of a handler's init: when SnapStart snapshots it, warm the engine's components
    up and register the runtime hooks. Returns whether it did."""
    if not snap_starting():
        return False
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # in every managed Python runtime; a custom image may lack it
        log.warning(
            "SnapStart init without snapshot_restore_py (pip install snapshot-restore-py): "
            "connections opened at init would be shared by every restored copy"
        )
        return False
    engine.warm_up()
    register_before_snapshot(engine.before_snapshot)
    register_after_restore(_restored, engine)
    log.info("SnapStart: components warmed up, snapshot hooks registered")
    return True


def _restored(engine: Any) -> None:
    engine.after_restore()
    log.info("SnapStart: restored from the snapshot")
