"""Generic bolts: decode, validate, filter, project, route, dedupe."""

from squall.bolts.base import DEFAULT, ERROR, INVALID, Bolt, Output, RecordBolt

__all__ = ["DEFAULT", "ERROR", "INVALID", "Bolt", "Output", "RecordBolt"]
