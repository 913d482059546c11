"""Lambda SnapStart: an init that is snapshotted once and restored for every cold start.

With SnapStart (Python 3.12 and later; ``squall package --snapstart``), Lambda runs a function's
init when a version is published, snapshots the process, and starts each new execution
environment from that snapshot. Init time then costs nothing per cold start, so the handlers
spend more of it: every component builds what it would otherwise build at its first batch
(``Component.warm_up``: the device bolt's user-agent parser and rules, the schema bolt's
reporting validator). Two runtime hooks (AWS's ``snapshot_restore_py``, part of the managed
runtime) keep the copies apart: before the snapshot the pooled connections of the resources
(SQL, Redis) and of the AWS clients (``squall.aws.client``) are closed, after a restore they are
closed again (nothing of the original's sockets is used), ``random`` is seeded anew and each
component's ``after_restore`` runs.

An init for provisioned concurrency runs ahead of traffic too: there the components warm up
(no snapshot, no hooks). On demand (``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``, or unset)
nothing here happens: warming up would only move the first batch's work into every cold start.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("squall.snapstart")

#: Lambda SnapStart for Python starts with this runtime.
PYTHON = (3, 12)
#: The alias SAM publishes each version under (``squall package --snapstart`` or
#: ``--provisioned-concurrency``); the trigger invokes it.
ALIAS = "live"
#: The variable Lambda sets for the init: "on-demand", "provisioned-concurrency" or "snap-start".
INIT_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"
PROVISIONED = "provisioned-concurrency"


def problem(python: str) -> str | None:
    """Why SnapStart cannot be used with this Lambda Python version (``--python``), or None."""
    try:
        version = tuple(int(part) for part in python.split(".")[:2])
    except ValueError:
        return f"--python {python!r} is not a version"
    if version < PYTHON:
        return f"Lambda SnapStart needs Python {PYTHON[0]}.{PYTHON[1]} or later (--python {python})"
    return None


def add_to_function(
    props: dict[str, Any], params: dict[str, Any], outputs: dict[str, Any], options: Any
) -> str | None:
    """The SAM function's SnapStart or provisioned concurrency (``options.snapstart``,
    ``options.provisioned``): each deploy publishes a version under the alias ``live``, which SAM
    makes the trigger (or the API's integration) invoke. Returns why it cannot, or None."""
    if options.snapstart and options.provisioned:
        return (
            "--snapstart and --provisioned-concurrency cannot be combined: Lambda refuses both "
            "on one function version"
        )
    if options.snapstart:
        why = problem(options.python)
        if why is not None:
            return why
        props["SnapStart"] = {"ApplyOn": "PublishedVersions"}  # snapshotted at publication
    elif options.provisioned:
        params["ProvisionedConcurrency"] = {
            "Type": "Number",
            "Default": options.provisioned,
            "MinValue": 1,
            "Description": "Execution environments of the alias kept initialised",
        }
        props["ProvisionedConcurrencyConfig"] = {
            "ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}
        }
    else:
        return None
    props["AutoPublishAlias"] = ALIAS
    outputs["FunctionAlias"] = {"Value": {"Ref": alias_resource(options)}}
    return None


def alias_resource(options: Any) -> str | None:
    """The logical id of the alias SAM makes for ``AutoPublishAlias`` (``FunctionAliaslive``;
    ``Ref`` gives its ARN) when the function has one (``--snapstart``,
    ``--provisioned-concurrency``), else None. What invokes the function must invoke this: an
    unqualified invocation runs $LATEST, never snapshotted nor provisioned."""
    return f"FunctionAlias{ALIAS}" if options.snapstart or options.provisioned else None


def snap_starting() -> bool:
    """True during an init that Lambda will snapshot."""
    return os.environ.get(INIT_TYPE) == SNAP_START


def prepare(engine: Any) -> str | None:
    """At the end of a handler's init, by the kind of init: SnapStart — warm the engine's
    components up and register the snapshot hooks (``"snapstart"``); provisioned concurrency —
    an init that also runs ahead of traffic — warm up only (``"warm-up"``); on demand — nothing
    (None: warming up would move the first batch's work into every cold start)."""
    kind = os.environ.get(INIT_TYPE)
    if kind not in (SNAP_START, PROVISIONED):
        return None
    engine.warm_up()
    if kind == PROVISIONED:
        log.info("provisioned concurrency: components warmed up at init")
        return "warm-up"
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # in every managed Python runtime; a custom image may lack it
        _snapshotting(engine)  # at least no socket in the snapshot: copies connect anew
        log.warning(
            "SnapStart init without snapshot_restore_py (pip install snapshot-restore-py): "
            "connections are closed now, but restored copies are not told (random is not "
            "reseeded, components' after_restore does not run)"
        )
        return "warm-up"
    register_before_snapshot(_snapshotting, engine)
    register_after_restore(_restored, engine)
    log.info("SnapStart: components warmed up, snapshot hooks registered")
    return "snapstart"


def _close_aws_connections() -> None:
    """Close the AWS clients' pooled connections (made by ``squall.aws.client``: components that
    call AWS at ``open``, e.g. an SQS sink resolving its queue URL, keep one alive)."""
    aws = sys.modules.get("squall.aws")  # not imported: no client was made
    if aws is not None:
        aws.close_connections()


def _snapshotting(engine: Any) -> None:
    engine.before_snapshot()
    _close_aws_connections()


def _restored(engine: Any) -> None:
    _close_aws_connections()
    engine.after_restore()
    log.info("SnapStart: restored from the snapshot")
