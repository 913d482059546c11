"""The environment of a process a test starts with an environment of its own (not the suite's).

conftest.py sets ``SQUALL_CACHE_DIR`` empty for the suite (no cache of checked schemas:
squall/bolts/schema.py), and a child that inherits ``os.environ`` inherits that. A child given
only ``PATH`` and ``HOME`` did not: a ``squall`` it started wrote its cache under the real home
folder (``~/.cache/squall``, or its ``HOME``). Build such environments here;
tests/test_child_env.py checks that every one of the suite's is.
"""

from __future__ import annotations

import os


def child_env(**variables: str) -> dict[str, str]:
    """``PATH`` (``/usr/bin:/bin``) and the suite's ``SQUALL_CACHE_DIR``, then ``variables``."""
    return {
        "PATH": "/usr/bin:/bin",
        "SQUALL_CACHE_DIR": os.environ.get("SQUALL_CACHE_DIR", ""),
        **variables,
    }
