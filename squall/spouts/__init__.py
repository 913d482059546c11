"""Spouts: JSON-lines files, stdin, Kinesis polling; KPL de-aggregation for every source."""

from squall.spouts.base import Progress, Spout

__all__ = ["Progress", "Spout"]
