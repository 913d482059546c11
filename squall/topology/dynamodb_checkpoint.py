"""Checkpoints in DynamoDB: one item per (application, stream, shard).

Table keys: ``application`` (hash, S) and ``shard`` (range, S: ``<stream>/<shard id>``). Each
item also holds ``sequence_number`` (S), ``sub_sequence_number`` (N), ``position`` (S) and
``updated_at`` (S, ISO 8601). Kinesis sequence numbers have more digits than a DynamoDB number
keeps (38), so ``position`` is the sequence number zero-padded to 130 digits plus the
sub-sequence number padded to 20: its string order is the numeric order, and a conditional
update on it keeps a position from ever moving backwards (a replayed batch is harmless).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from squall import aws
from squall.errors import SquallError, TransientError
from squall.event import Position

log = logging.getLogger("squall.checkpoint.dynamodb")


def position_key(position: Position) -> str:
    """Sortable string form of a position: string order equals numeric order."""
    return f"{int(position.sequence_number):0130d}.{position.sub_sequence_number:020d}"


class DynamoDbCheckpointStore:
    """Per-shard positions of one application in a DynamoDB table (implements ``CheckpointStore``)."""

    def __init__(
        self,
        client: Any,
        table: str,
        application: str,
        *,
        create_table: bool = True,
        wait_seconds: float = 60.0,
    ):
        self.client = client
        self.table = table
        self.application = application
        if create_table:
            self._ensure_table(wait_seconds)

    def _ensure_table(self, wait_seconds: float) -> None:
        try:
            self.client.describe_table(TableName=self.table)
            return
        except Exception as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise self._error(exc) from exc
        try:
            self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "application", "AttributeType": "S"},
                    {"AttributeName": "shard", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "application", "KeyType": "HASH"},
                    {"AttributeName": "shard", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            log.info("created DynamoDB checkpoint table %s", self.table)
        except Exception as exc:
            if (
                aws.error_code(exc) != "ResourceInUseException"
            ):  # in use: another process created it
                raise self._error(exc) from exc
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            status = self._call(self.client.describe_table, TableName=self.table)["Table"][
                "TableStatus"
            ]
            if status == "ACTIVE":
                return
            time.sleep(0.2)
        raise TransientError(f"DynamoDB table {self.table} is not ACTIVE after {wait_seconds:.0f}s")

    def load(self, stream: str) -> dict[str, Position]:
        """Positions of every shard of ``stream`` checkpointed by this application."""
        prefix = f"{stream}/"
        out: dict[str, Position] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#a = :a AND begins_with(#s, :p)",
            "ExpressionAttributeNames": {"#a": "application", "#s": "shard"},  # both reserved words
            "ExpressionAttributeValues": {":a": {"S": self.application}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        while True:
            resp = self._call(self.client.query, **kwargs)
            for item in resp.get("Items", []):
                shard = item["shard"]["S"][len(prefix) :]
                out[shard] = Position(
                    item["sequence_number"]["S"], int(item["sub_sequence_number"]["N"])
                )
            last = resp.get("LastEvaluatedKey")
            if not last:
                return out
            kwargs["ExclusiveStartKey"] = last

    def save(self, stream: str, positions: dict[str, Position]) -> None:
        """Write each position unless the stored one is already at or past it."""
        now = datetime.now(UTC).isoformat()
        for shard, pos in positions.items():
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={
                        "application": {"S": self.application},
                        "shard": {"S": f"{stream}/{shard}"},
                    },
                    UpdateExpression="SET #seq = :s, #sub = :n, #p = :p, #t = :t",
                    ConditionExpression="attribute_not_exists(#p) OR #p < :p",
                    ExpressionAttributeNames={
                        "#seq": "sequence_number",
                        "#sub": "sub_sequence_number",
                        "#p": "position",
                        "#t": "updated_at",
                    },
                    ExpressionAttributeValues={
                        ":s": {"S": pos.sequence_number},
                        ":n": {"N": str(pos.sub_sequence_number)},
                        ":p": {"S": position_key(pos)},
                        ":t": {"S": now},
                    },
                )
            except Exception as exc:
                if aws.error_code(exc) != "ConditionalCheckFailedException":
                    raise self._error(exc) from exc
                # the stored position is already at or past this one

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> SquallError:
        """Throttling, 5xx and network failures are transient; anything else is permanent."""
        if aws.is_retryable(exc):
            return TransientError(f"DynamoDB checkpoint table {self.table}: {exc}")
        return SquallError(f"DynamoDB checkpoint table {self.table}: {exc}")
