"""The Lambda benchmark (``lambda_bench.py``) inside a memory limit, as a function of N MB runs.

    sudo python benchmarks/lambda_cgroup.py --limit-mb 128 [--drop-caches] [--records 10000]

RSS counts pages a function may never need to keep (shared libraries, the geo database's mapped
pages: clean, reclaimable) and misses none of the anonymous memory; what decides whether a
function of N MB works is whether its process runs inside N MB without the kernel evicting the
pages it keeps using. This runs ``lambda_bench.py`` (init, two invocations of ``--records``) in a
memory cgroup of ``--limit-mb`` (cgroup v1 ``memory`` controller or cgroup v2), then prints
``lambda_bench.py``'s JSON line with the group's peak usage and how often it hit the limit.

A file page is charged to the group that read it first: without ``--drop-caches`` the libraries
and the geo database already cached by other processes are not counted, and the limit looks
roomier than a fresh function's. ``--drop-caches`` (``echo 3 > /proc/sys/vm/drop_caches``)
empties the machine's page cache first — every process on the machine reads its files again.
Linux only, as root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def make_group(limit_mb: int) -> tuple[Path, dict[str, str]]:
    """A new memory group with the limit; the names of its peak, limit-hit and procs files."""
    name = f"squall-lambda-{os.getpid()}"
    if V1.is_dir():
        group = V1 / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mb << 20))
        files = {"peak": "memory.max_usage_in_bytes", "hits": "memory.failcnt"}
    elif (V2 / "cgroup.controllers").exists():
        group = V2 / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit_mb << 20))
        files = {"peak": "memory.peak", "hits": "memory.events"}
    else:
        raise SystemExit("no cgroup memory controller found (needs Linux, cgroup v1 or v2)")
    return group, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-mb", type=int, required=True)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument(
        "--drop-caches",
        action="store_true",
        help="empty the machine's page cache first (every file page is then charged to the group)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: creating a memory cgroup needs it")
    group, files = make_group(args.limit_mb)
    try:
        with tempfile.TemporaryDirectory(prefix="squall-lambda-cgroup-") as tmp:
            events = Path(tmp) / "events.jsonl"
            subprocess.run(  # outside the group: generating the events is not the function's
                [sys.executable, str(ROOT / "examples/pistats/make_events.py")]
                + [str(2 * args.records), str(events)],
                check=True,
                capture_output=True,
            )
            if args.drop_caches:
                os.sync()
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            cmd = [
                sys.executable,
                str(ROOT / "benchmarks/lambda_bench.py"),
                "--dir",
                str(Path(tmp) / "work"),
                "--events",
                str(events),
                "--records",
                str(args.records),
            ]
            procs = group / "cgroup.procs"
            # The child joins the group before it starts Python: all of its memory is counted.
            done = subprocess.run(
                ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd],
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
        result.update(
            limit_mb=args.limit_mb,
            drop_caches=args.drop_caches,
            exit_status=done.returncode,
            group_peak_mb=int((group / files["peak"]).read_text()) / 2**20,
            group_limit_hits=(group / files["hits"]).read_text().strip(),
        )
        print(json.dumps(result))
        return 0 if done.returncode == 0 else 1
    finally:
        group.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
