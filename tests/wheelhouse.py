"""One wheelhouse for the session's `squall package` runs: what PyPI gives, resolved once.

Each build resolves its requirements twice against the index (``pip wheel`` for the source-only
ones, then ``pip install --platform`` for Lambda's), and pip reads every index page in full
(thousands of files for botocore): most of a build's time. The packaging tests run four builds
of the same dependencies, and install awslambdaric twice. Here the same two resolutions run
once, for the union of what those tests need, into a folder; the builds then run offline
against it (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``: pip's own settings, which ``squall package``
passes on), with the same pip commands, flags and versions, and give the same zips byte for byte.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from squall.deploy import package as pkg

#: What the packaging tests install besides squall: the kiosk bolt's requirement, AWS's runtime
#: client, and the build backend of squall and of the kiosk plugin (pyproject.toml).
EXTRA = ("humanize==4.17.0", "awslambdaric==4.2.2", "setuptools>=68", "wheel")
#: squall's extras the tests package (the others' dependencies are a subset).
EXTRAS = "[postgres,redis]"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def build(dest: Path, root: Path) -> dict[str, str]:
    """Fill ``dest`` with this platform's wheels and Lambda's (python3.11, x86_64: the packager's
    defaults); returns the environment that points pip at it alone."""
    with tempfile.TemporaryDirectory(prefix="squall-wheelhouse-") as tmp:
        source = pkg.source_copy(root, Path(tmp) / "source")  # no build/ left in the checkout
        _pip("wheel", "-w", str(dest), f"{source}{EXTRAS}", *EXTRA)
    [squall] = dest.glob("squall-*.whl")
    _pip(
        "download",
        "-d",
        str(dest),
        "--find-links",
        str(dest),
        *(arg for p in pkg.platforms("3.11", "x86_64") for arg in ("--platform", p)),
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--only-binary=:all:",
        f"{squall}{EXTRAS}",
        *EXTRA,
    )
    squall.unlink()  # each build makes its own from the checkout, as it does for a user
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(dest)}


def build_once(dest: Path, root: Path) -> dict[str, str]:
    """``build`` into ``dest`` unless a process of the same run (another xdist worker) has: the
    first takes the lock and builds, the others wait for it and read the environment it wrote."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = dest.parent / "wheelhouse.json"
    with open(dest.parent / "wheelhouse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return json.loads(done.read_text())
        dest.mkdir(exist_ok=True)
        env = build(dest, root)
        done.write_text(json.dumps(env))
        return env
