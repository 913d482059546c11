"""Table and application names squall puts into SQL or AWS calls are checked at load time, everywhere alike."""

from __future__ import annotations

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load_text

SUBSCRIPTION = """
name: ids
resources: {{state: {{url: "sqlite:///s.db"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: sub, type: subscription, store: state, table: {table}}}
sinks: [{{id: out, type: stdout}}]
"""

KINESIS = """
name: ids
resources: {{warehouse: {{url: "sqlite:///w.db"}}}}
spout: {{type: kinesis, stream: s, checkpoint: {checkpoint}}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: stdout}}]
"""


@pytest.mark.parametrize(
    "table", ['"subs; drop table x"', '"a-b"', '"1abc"', '"' + "t" * 64 + '"', '"abc\\n"']
)
def test_subscription_table_must_be_an_identifier(tmp_path, table):
    with pytest.raises(TopologyError, match=r"bolts\[1\]\.table: .*invalid table name"):
        load_text(SUBSCRIPTION.format(table=table), base_dir=tmp_path)


def test_a_good_subscription_table_loads(tmp_path):
    load_text(SUBSCRIPTION.format(table="my_subs"), base_dir=tmp_path)


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ('{store: sql, table: "cp; drop"}', "invalid table name"),
        ('{store: sql, table: "abc\\n"}', "invalid table name"),
        ('{store: sql, application: "app name"}', "invalid application name"),
        ('{store: sql, application: "' + "a" * 256 + '"}', "invalid application name"),
        ('{store: dynamodb, table: "ab"}', "invalid DynamoDB table name"),
        ('{store: dynamodb, table: "cp/x"}', "invalid DynamoDB table name"),
        ('{store: dynamodb, table: cps, application: "x\'y"}', "invalid application name"),
    ],
)
def test_checkpoint_table_and_application_are_checked(tmp_path, checkpoint, message):
    with pytest.raises(TopologyError, match=message):
        load_text(KINESIS.format(checkpoint=checkpoint), base_dir=tmp_path)


def test_good_checkpoint_names_load(tmp_path):
    load_text(
        KINESIS.format(checkpoint="{store: sql, table: cp_1, application: pistats-enrichment.v2}"),
        base_dir=tmp_path,
    )
    load_text(
        KINESIS.format(checkpoint="{store: dynamodb, table: squall-checkpoints.prod}"),
        base_dir=tmp_path,
    )


def test_warehouse_table_with_a_trailing_newline_is_refused(tmp_path):
    yaml = """
name: ids
resources: {db: {url: "sqlite:///w.db"}}
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: warehouse, resource: db, table: "events\\n", columns: {n: n}}]
"""
    with pytest.raises(TopologyError, match="invalid table name"):
        load_text(yaml, base_dir=tmp_path)
