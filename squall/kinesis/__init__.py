"""Shared Kinesis building blocks: KPL (de)aggregation, shard listing and lineage, PutRecords.

Used by the engine (KPL de-aggregation of every source), the ``kinesis`` spout and sink, the
Kinesis dead-letter sink, ``squall produce`` and the runners. Components import these, never
each other's modules. The package itself imports nothing: the engine's ``kpl`` import must not
bring pydantic models or botocore into a topology without a Kinesis component (Lambda init).
"""
