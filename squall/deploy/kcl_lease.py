"""Whether this worker still holds a shard's lease, read from the KCL's lease table.

A record processor waiting for a dependency (a batch retried with backoff) hears nothing from
the daemon while it waits: the multilang protocol has no message for a lease that moved, and a
checkpoint at the position already stored is a no-op that checks nothing. Another worker may
have taken the lease meanwhile (a worker joining the fleet steals leases to balance them) and
committed the same batch and the next ones; a batch committed by the old processor after them
puts older rows back (an upsert table) or sends again (a push). So before each retry the
processor reads its lease's owner: the lease table is named after the application, its key is
the shard id, ``leaseOwner`` the worker id (KCL 2.x, single-stream mode).

``squall kcl`` passes the table, the worker id, the region and the DynamoDB endpoint on the
record processor's command line (``args()``). Without them (a processor started by hand) or when
the table cannot be read, the lease counts as held: the probe only ever stops a retry early.
The instance role has ``dynamodb:GetItem`` on the lease table already (the KCL's own calls).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from squall.errors import safe_text

log = logging.getLogger("squall.kcl")

#: The option that starts the lease table's arguments on the record processor's command line.
OPTION = "--lease-table"


@dataclass
class LeaseTable:
    table: str
    worker: str
    region: str | None = None
    endpoint: str | None = None

    def args(self) -> list[str]:
        """Command-line words (the KCL splits ``executableName`` on spaces: each is quoted)."""
        words = [self.table, self.worker, self.region or "", self.endpoint or ""]
        return [OPTION, *(quote(w, safe="") or "-" for w in words)]

    @classmethod
    def from_args(cls, argv: list[str]) -> tuple[list[str], LeaseTable | None]:
        """Split ``argv`` into the other arguments and the lease table (None when absent)."""
        if OPTION not in argv:
            return argv, None
        i = argv.index(OPTION)
        words = [None if w == "-" else unquote(w) for w in argv[i + 1 : i + 5]]
        table, worker, region, endpoint = words + [None] * (4 - len(words))
        rest = argv[:i] + argv[i + 5 :]
        return rest, (cls(table, worker, region, endpoint) if table and worker else None)


class LeaseProbe:
    """``held(shard)``: False when the shard's lease names another owner or none."""

    def __init__(self, lease: LeaseTable, client: Any = None):
        self.lease = lease
        self._client = client
        self._warned = False  # the protection is off: said once per process, not per retry

    def held(self, shard: str) -> bool:
        try:
            if self._client is None:  # opened once per process, on the first retry
                from squall import aws

                self._client = aws.client(
                    "dynamodb",
                    region=self.lease.region,
                    endpoint_url=self.lease.endpoint,
                    botocore_retries=1,
                    read_timeout=5.0,
                )
            item = self._client.get_item(
                TableName=self.lease.table,
                Key={"leaseKey": {"S": shard}},
                ConsistentRead=True,
                ProjectionExpression="leaseKey, leaseOwner",
            ).get("Item")
        except Exception as exc:  # the probe only stops a retry early; it never fails one
            self._off(shard, f"cannot read it ({type(exc).__name__}: {safe_text(exc, 160)})")
            return True
        if item is None:  # no such lease: not what the KCL writes; keep retrying
            self._off(shard, "no such lease in it (another table?)")
            return True
        return item.get("leaseOwner", {}).get("S") == self.lease.worker  # none: released

    def _off(self, shard: str, why: str) -> None:
        """Tell the operator once that a retried batch is not checked against its lease: a worker
        that lost the lease during an outage may then write a batch its new owner wrote."""
        if not self._warned:
            self._warned = True
            log.warning(
                "shard %s: lease table %s: %s; batches retried after an outage are not checked "
                "against their lease owner (zombie protection off)",
                shard,
                self.lease.table,
                why,
            )
