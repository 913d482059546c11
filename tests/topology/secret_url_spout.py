"""A spout whose read opens its SQL resource: a driver's error escapes ``squall run`` uncaught
(what a team's own spout reading a table does when the database is not there)."""

from __future__ import annotations

from collections.abc import Iterator

from squall.component import ComponentConfig
from squall.spouts.base import Spout


class TableSpoutConfig(ComponentConfig):
    resource: str = "db"


class TableSpout(Spout):
    Config = TableSpoutConfig
    summary = "Read a table (tests: its connection's error escapes uncaught)."

    def open(self, resources) -> None:
        self.resources = resources

    def read(self, max_records: int) -> Iterator[list]:
        self.resources.database(self.config.resource).connect().close()
        yield []

    def commit(self, checkpoint: dict) -> dict:
        return {}
