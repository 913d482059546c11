"""Loading topologies: every problem is one line naming file:line:column and the path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from squall.bolts import RecordBolt
from squall.component import ComponentConfig
from squall.errors import TopologyError
from squall.topology.loader import load, load_text

GOOD = """\
name: t
resources:
  warehouse: {url: "sqlite:///w.db"}
spout: {type: file, path: events.jsonl}
bolts:
  - {id: decode, type: json}
  - {id: keep, type: filter, where: [{field: event_type, in: [click]}]}
sinks:
  - {id: out, type: warehouse, resource: warehouse, table: events, columns: {kind: event_type}}
  - {id: dlq, type: dead_letter, path: dlq.jsonl}
"""


def problems(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(TopologyError) as exc:
        load_text(text, file="topology.yaml", env=env or {})
    return [str(p) for p in exc.value.problems]


def test_good_topology_loads_into_frozen_models():
    topo = load_text(GOOD, file="topology.yaml", env={})
    assert [b.id for b in topo.bolts] == ["decode", "keep"]
    assert topo.spout.id == "spout"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        topo.bolts[0].type = "schema"


def test_typo_in_type_names_place_and_suggests():
    text = GOOD.replace("type: filter", "type: filtr")
    assert problems(text) == [
        "topology.yaml:7:22: bolts[1].type: unknown bolt type 'filtr' (did you mean 'filter'?)"
    ]


def test_typo_geo():
    text = GOOD.replace("{id: decode, type: json}", "{id: decode, type: goe}")
    assert problems(text) == [
        "topology.yaml:6:24: bolts[0].type: unknown bolt type 'goe' (did you mean 'geo'?)"
    ]


def test_bad_indentation_is_a_yaml_error_with_line_and_column():
    text = GOOD.replace("  warehouse: {url", "   warehouse: {url").replace("spout:", " spout:")
    [line] = problems(text)
    assert line.startswith("topology.yaml:4:")
    assert "YAML syntax error" in line


def test_unknown_key_points_at_the_key_and_suggests():
    text = GOOD.replace("{id: decode, type: json}", "{id: decode, type: json, event_id_feild: id}")
    assert problems(text) == [
        "topology.yaml:6:30: bolts[0].event_id_feild: unknown key 'event_id_feild' (did you mean 'event_id_field'?)"
    ]


def test_unknown_top_level_key():
    [line] = problems(GOOD + "setings: {batch_size: 3}\n")
    assert line == "topology.yaml:11:1: setings: unknown key 'setings' (did you mean 'settings'?)"


def test_cycle_names_the_edge():
    text = (
        GOOD
        + """streams:
  - {from: decode, to: keep}
  - {from: keep, to: decode}
"""
    )
    [line] = problems(text)
    assert line.startswith("topology.yaml:12:5: streams[0]: cycle: ")
    assert "decode" in line and "keep" in line


def test_missing_variable_names_the_value():
    text = GOOD.replace('"sqlite:///w.db"', '"${WAREHOUSE_URL}"')
    assert problems(text) == [
        "topology.yaml:3:20: resources.warehouse.url: environment variable 'WAREHOUSE_URL' is not set "
        "(write ${WAREHOUSE_URL:-default} to give a default)"
    ]


def test_missing_variable_in_a_plain_scalar_is_one_problem():
    # Unquoted, the emptied value reads as null: validation must not report it a second time
    # ("Input should be a valid string / integer") at the same place.
    text = (
        GOOD.replace('{url: "sqlite:///w.db"}', "\n    url: ${WAREHOUSE_URL}")
        + "settings:\n  batch_size: ${BATCH}\n"
    )
    assert problems(text) == [
        "topology.yaml:4:10: resources.warehouse.url: environment variable 'WAREHOUSE_URL' is not "
        "set (write ${WAREHOUSE_URL:-default} to give a default)",
        "topology.yaml:13:15: settings.batch_size: environment variable 'BATCH' is not set "
        "(write ${BATCH:-default} to give a default)",
    ]


def test_variables_substitute_with_defaults_and_types():
    text = GOOD + "settings:\n  batch_size: ${BATCH:-250}\n"
    assert load_text(text, env={}).settings.batch_size == 250
    assert load_text(text, env={"BATCH": "7"}).settings.batch_size == 7


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("type: filter", "type: filtr").replace(
        "table: events", "table: events, colour: red"
    )
    lines = problems(text)
    assert len(lines) == 2
    assert any("bolts[1].type" in line for line in lines) and any(
        "sinks[0].colour" in line for line in lines
    )


def test_graph_errors_unknown_ids_and_sink_without_input():
    text = (
        GOOD
        + """streams:
  - {from: decode, stream: error, to: dlqq}
"""
    )
    assert problems(text) == [
        "topology.yaml:12:39: streams[0].to: unknown component 'dlqq' (did you mean 'dlq'?)"
    ]


def test_unknown_resource():
    text = GOOD.replace("resource: warehouse", "resource: warehose")
    assert problems(text) == [
        "topology.yaml:9:42: sinks[0].resource: unknown resource 'warehose' (did you mean 'warehouse'?)"
    ]


def test_an_unknown_resource_in_a_nested_option_is_refused_at_load():
    """A lookup's `source.resource`, its `shared_cache.resource` and a Kinesis spout's
    `checkpoint.resource` were not checked: `squall validate` said ok, `squall run` refused."""
    text = (
        "name: t\nresources: {warehouse: {url: 'sqlite:///w.db'}}\n"
        "spout: {type: kinesis, stream: s, checkpoint: {store: sql, resource: warehose}}\n"
        "bolts:\n  - {id: l, type: lookup, key: a, target: b,"
        " source: {type: sql, resource: warehous, table: apps, columns: [a]},"
        " shared_cache: {resource: cache}}\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    assert problems(text) == [
        "topology.yaml:3:70: spout.checkpoint.resource: unknown resource 'warehose' "
        "(did you mean 'warehouse'?)",
        "topology.yaml:5:76: bolts[0].source.resource: unknown resource 'warehous' "
        "(did you mean 'warehouse'?)",
        "topology.yaml:5:139: bolts[0].shared_cache.resource: unknown resource 'cache'",
    ]


def test_a_resource_of_the_wrong_kind_is_refused_at_load_where_it_is_named():
    """A lookup's SQL source on a Redis resource, a shared cache on a database, a warehouse,
    dead-letter table or SQL checkpoint on Redis, a subscription cache on a database: `squall
    validate` said ok and `squall run` (a Lambda init) refused at start."""
    text = (
        "name: t\n"
        "resources:\n"
        "  db: {url: 'postgresql://u:pw@127.0.0.1/d'}\n"
        "  cache: {url: 'redis://127.0.0.1:6379/0'}\n"
        "  states: {url: 'sqlite:///s.db'}\n"
        "spout: {type: kinesis, stream: s, checkpoint: {store: sql, resource: cache}}\n"
        "bolts:\n"
        "  - {id: d, type: json}\n"
        "  - {id: l, type: lookup, key: a, target: b,"
        " source: {type: sql, resource: cache, table: apps}, shared_cache: {resource: db}}\n"
        "  - {id: r, type: lookup, key: a, target: c, source: {type: redis, resource: db}}\n"
        "  - {id: s, type: subscription, store: states, cache: db}\n"
        "sinks:\n"
        "  - {id: w, type: warehouse, resource: cache, table: t, columns: {a: a}}\n"
        "  - {id: x, type: dead_letter_table, resource: cache}\n"
    )
    on_redis = "resource 'cache' is not a SQL database (redis://127.0.0.1:6379/0)"
    on_db = "resource 'db' is not Redis (postgresql://u:***@127.0.0.1/d)"
    found = problems(text)
    assert [p.split(": ", 1)[1] for p in found] == [
        f"spout.checkpoint.resource: {on_redis}",
        f"bolts[1].source.resource: {on_redis}",
        f"bolts[1].shared_cache.resource: {on_db}",
        f"bolts[2].source.resource: {on_db}",
        f"bolts[3].cache: {on_db}",
        f"sinks[0].resource: {on_redis}",
        f"sinks[1].resource: {on_redis}",
    ]
    assert [p.split(":")[1] for p in found] == ["6", "9", "9", "10", "11", "13", "14"]


def test_resources_of_the_right_kind_pass():
    text = (
        "name: t\n"
        "resources: {db: {url: 'sqlite:///w.db'}, cache: {url: 'rediss://h:6380/1'}}\n"
        "spout: {type: kinesis, stream: s, checkpoint: {store: sql, resource: db}}\n"
        "bolts:\n"
        "  - {id: d, type: json}\n"
        "  - {id: l, type: lookup, key: a, target: b,"
        " source: {type: sql, resource: db, table: apps}, shared_cache: {resource: cache}}\n"
        "  - {id: s, type: subscription, store: cache}\n"
        "  - {id: s2, type: subscription, store: db, cache: cache}\n"
        "sinks:\n"
        "  - {id: w, type: warehouse, resource: db, table: t, columns: {a: a}}\n"
        "  - {id: x, type: dead_letter_table, resource: db}\n"
    )
    topo = load_text(text, file="topology.yaml", env={})
    assert [b.id for b in topo.bolts] == ["d", "l", "s", "s2"]


def test_bad_filter_condition_is_located():
    text = GOOD.replace("in: [click]", "in: [click], gt: 3")
    [line] = problems(text)
    assert line.startswith(
        "topology.yaml:7:38: bolts[1].where[0]: a condition needs exactly one operator"
    )


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(TopologyError, match="cannot read topology"):
        load(tmp_path / "nope.yaml")


def test_cli_validate_prints_problems_and_exits_non_zero(tmp_path: Path):
    f = tmp_path / "topology.yaml"
    f.write_text(GOOD.replace("type: filter", "type: filtr"))
    r = subprocess.run(
        [sys.executable, "-m", "squall.cli", "validate", str(f)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"{f}:7:22: bolts[1].type: unknown bolt type 'filtr' (did you mean 'filter'?)"
    )
    f.write_text(GOOD)
    r = subprocess.run(
        [sys.executable, "-m", "squall.cli", "validate", str(f)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_load_returns_the_model_with_its_plan_compiled_once(monkeypatch):
    from squall.topology import graph

    calls = []
    real = graph.compile_plan
    monkeypatch.setattr(graph, "compile_plan", lambda topo: calls.append(topo) or real(topo))
    topo = load_text(GOOD, file="topology.yaml", env={})
    assert len(calls) == 1
    assert topo.plan is topo.plan and topo.plan.topology is topo
    assert sorted(n.id for n in topo.plan.nodes) == ["decode", "dlq", "keep", "out"]
    assert len(calls) == 1  # taking the plan again compiles nothing


def test_a_type_in_the_wrong_list_says_where_it_belongs():
    """`bolts: [{type: warehouse}]` said "unknown bolt type 'warehouse'" and listed the bolts."""
    text = (
        "name: t\nspout: {type: json}\n"
        "bolts: [{id: w, type: warehouse}, {id: s, type: 'squall.sinks.stdout:StdoutSink'}]\n"
        "sinks: [{id: o, type: filter}]\n"
    )
    assert problems(text) == [
        "topology.yaml:2:15: spout.type: 'json' is a bolt type, not a spout one: "
        "list it under 'bolts', not 'spout'",
        "topology.yaml:3:23: bolts[0].type: 'warehouse' is a sink type, not a bolt one: "
        "list it under 'sinks', not 'bolts'",
        "topology.yaml:3:49: bolts[1].type: 'squall.sinks.stdout:StdoutSink' is a sink type, "
        "not a bolt one: list it under 'sinks', not 'bolts'",
        "topology.yaml:4:23: sinks[0].type: 'filter' is a bolt type, not a sink one: "
        "list it under 'bolts', not 'sinks'",
    ]


def test_an_empty_resource_url_is_refused_at_load():
    """`url: "${WAREHOUSE_URL:-}"` with the variable unset passed `squall validate`; `squall run`
    then stopped with "resource 'warehouse' is not a SQL database ()", naming no line."""
    text = GOOD.replace('"sqlite:///w.db"', '"${WAREHOUSE_URL:-}"')
    assert problems(text) == [
        "topology.yaml:3:20: resources.warehouse.url: the URL is empty: set its variable, or "
        "write a URL (sqlite:///…)"
    ]
    assert problems(GOOD.replace('"sqlite:///w.db"', '"${WAREHOUSE_URL}"')) == [
        "topology.yaml:3:20: resources.warehouse.url: environment variable 'WAREHOUSE_URL' is "
        "not set (write ${WAREHOUSE_URL:-default} to give a default)"
    ]


def test_a_bad_window_duration_is_located_at_its_key():
    """`size`, `hop`, `allowed_lateness`, `idle_shard_after` were checked by a model check:
    the error named only the bolt's entry (its first line), not the option."""
    text = (
        "name: t\nresources: {st: {url: 'sqlite:///st.db'}}\nspout: {type: stdin}\nbolts:\n"
        "  - id: w\n    type: window\n    store: st\n    size: 1M\n    hop: 0\n"
        "    idle_shard_after: soon\n    allowed_lateness: .inf\n    aggregates: {n: {fn: count}}\n"
        "sinks: [{id: o, type: stdout}]\n"
    )
    hint = "(use seconds, or e.g. 500ms, 30s, 1m, 2h, 1d)"
    assert problems(text) == [
        f"topology.yaml:8:11: bolts[0].size: not a duration: '1M' {hint}",
        "topology.yaml:9:10: bolts[0].hop: hop must be positive",
        # was a traceback; every number option refuses .inf/.nan (tests/topology/test_finite_numbers.py)
        "topology.yaml:11:23: bolts[0].allowed_lateness: Input should be a finite number or a valid string",
        f"topology.yaml:10:23: bolts[0].idle_shard_after: not a duration: 'soon' {hint}",
    ]


class RaisingConfig(ComponentConfig):  # a team's check raising what pydantic does not wrap
    table: str = "t"

    @pydantic.field_validator("table")
    @classmethod
    def _lookup(cls, value: str) -> str:
        return {"known": value}[value]


class RaisingBolt(RecordBolt):
    Config = RaisingConfig


def test_a_config_check_that_raises_another_error_is_a_located_problem():
    """A KeyError (or an OverflowError) from a validator is not pydantic's: `squall validate`
    ended in a traceback."""
    text = (
        "name: t\nspout: {type: stdin}\n"
        f"bolts: [{{id: b, type: '{__name__}:RaisingBolt', table: x}}]\n"
        "sinks: [{id: o, type: stdout}]\n"
    )
    assert problems(text) == [
        "topology.yaml:3:9: bolts[0]: cannot check the options: KeyError: 'x'"
    ]


def test_from_spout_names_the_spouts_own_id():
    """A spout with an id of its own: `from: spout` said "unknown component 'spout'" only."""
    text = (
        GOOD.replace("type: file,", "id: src, type: file,") + "streams: [{from: spout, to: keep}]\n"
    )
    assert problems(text) == [
        "topology.yaml:11:18: streams[0].from: unknown component 'spout' (the spout's id is 'src')"
    ]


def test_a_bad_topology_name_is_explained_in_words():
    """It quoted the regular expression: "String should match pattern '^[A-Za-z]…$'"."""
    assert problems(GOOD.replace("name: t", "name: my topology")) == [
        "topology.yaml:1:7: name: a topology name is a letter, then up to 127 letters, digits, "
        "'_', '.' or '-' (it also names the checkpoints)"
    ]


def test_a_module_that_exits_when_imported_is_a_located_problem(tmp_path: Path, monkeypatch):
    """A team's script named as a type, running argparse (or sys.exit) at import: `squall
    validate` printed only "bye" (or argparse's usage) and exited, naming no line."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "exits_at_import_y7.py").write_text("import sys\nsys.exit('bye')\n")
    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: t\nspout: {type: stdin}\nbolts: [{id: b, type: 'exits_at_import_y7:Score'}]\n"
        "sinks: [{id: o, type: stdout}]\n"
    )
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value) == (
        f"{path}:3:23: bolts[0].type: cannot import 'exits_at_import_y7:Score': the module exits "
        f"when imported (SystemExit: bye) (at {tmp_path / 'exits_at_import_y7.py'}, line 2); keep "
        'a script\'s code under `if __name__ == "__main__":`'
    )


def test_a_bolt_cut_off_by_a_tee_says_why_and_what_to_add():
    """Wiring decode's default to an archive sink (a tee) stops it feeding the next bolt, as
    documented; the error said only "bolt 'keep' is unreachable from the spout"."""
    text = GOOD + "streams: [{from: decode, to: dlq}]\n"
    assert problems(text) == [
        "topology.yaml:7:5: bolts[1]: bolt 'keep' is unreachable from the spout: the default "
        "stream of 'decode' is wired in 'streams:', so it does not feed the next bolt too; add "
        "{from: decode, to: keep}"
    ]


def test_a_value_where_options_are_wanted_lists_the_options_not_a_class():
    """`resources: {w: "sqlite:///w.db"}` said "Input should be a valid dictionary or instance
    of ResourceConfig": a Python class name, and not which keys to write."""
    text = GOOD.replace('{url: "sqlite:///w.db"}', '"sqlite:///w.db"') + "streams: [a -> b]\n"
    assert problems(text) == [
        "topology.yaml:3:14: resources.warehouse: expected a mapping of options (url, pool_size, "
        "connect_timeout, options)",
        "topology.yaml:11:11: streams[0]: expected a mapping of options (from, stream, to)",
    ]


def test_a_name_where_a_tagged_kind_of_options_is_wanted_names_the_tag_and_its_kinds():
    """`checkpoint: registry` (a resource's name, as the option's default — "the `warehouse`
    resource" — suggests) said only "expected a mapping of options (key: value)": not that a
    `store:` picks sql, dynamodb or memory. The same for a lookup's `source:`."""
    text = GOOD.replace(
        "spout: {type: file, path: events.jsonl}",
        "spout: {type: kinesis, stream: s, checkpoint: warehouse}",
    ).replace(
        "  - {id: keep, type: filter, where: [{field: event_type, in: [click]}]}",
        "  - {id: keep, type: lookup, key: k, target: t, source: warehouse}",
    )
    assert problems(text) == [
        "topology.yaml:4:47: spout.checkpoint: expected a mapping of options with 'store' (sql, "
        "dynamodb or memory) and that kind's options",
        "topology.yaml:7:57: bolts[1].source: expected a mapping of options with 'type' (sql, "
        "redis or http) and that kind's options",
    ]


def test_a_mapping_without_its_kind_or_of_an_unknown_kind_names_the_tag_and_its_kinds():
    """`checkpoint: {resource: registry}` (the store left out) said pydantic's "Unable to extract
    tag using discriminator 'store'", and `store: postgres` "Input tag 'postgres' found using
    'store' does not match any of the expected tags": now the key that picks the kind, and its
    values, as for a name where the mapping is wanted."""
    spout = "spout: {type: file, path: events.jsonl}"
    bolt = "  - {id: keep, type: filter, where: [{field: event_type, in: [click]}]}"
    text = GOOD.replace(
        spout, "spout: {type: kinesis, stream: s, checkpoint: {resource: warehouse}}"
    ).replace(bolt, "  - {id: keep, type: lookup, key: k, target: t, source: {type: postgres}}")
    assert problems(text) == [
        "topology.yaml:4:47: spout.checkpoint: missing required key 'store' (sql, dynamodb or "
        "memory): it picks the kind of options",
        "topology.yaml:7:57: bolts[1].source: type 'postgres' is unknown: expected sql, redis or "
        "http",
    ]


def test_a_typo_in_a_warehouse_column_suggests_the_key():
    """A column's options are `Annotated` (a text shorthand is accepted): the did-you-mean
    lookup stopped there, so `pth` got no suggestion."""
    text = GOOD.replace("columns: {kind: event_type}", "columns: {kind: {pth: event_type}}")
    assert problems(text) == [
        "topology.yaml:9:84: sinks[0].columns.kind: missing required key 'path'",
        "topology.yaml:9:85: sinks[0].columns.kind.pth: unknown key 'pth' (did you mean 'path'?)",
    ]


def test_a_list_written_as_one_path_is_refused():
    """`key: app_id, user.id` (block style) was one path, "app_id, user" then "id", that no event
    has: a dedupe then passed every event, a lookup found nothing. `user. id` likewise."""
    text = GOOD.replace(
        "  - {id: keep,", "  - id: dd\n    type: dedupe\n    key: app_id, user.id\n  - {id: keep,"
    ).replace("field: event_type", "field: 'event. type'")
    assert problems(text) == [
        "topology.yaml:9:10: bolts[1].key: 'app_id, user.id' is one dotted path, not several: "
        "write a list ([a, b]) where several are taken",
        "topology.yaml:10:46: bolts[2].where[0].field: 'event. type': a part of the path starts "
        "or ends with a space",
    ]


def test_a_dead_letter_file_that_is_the_spouts_input_is_refused(tmp_path: Path):
    """Dead letters were appended to the file being read; the next run read them as records."""
    text = GOOD.replace("path: dlq.jsonl", "path: ./events.jsonl")
    with pytest.raises(TopologyError) as exc:
        load_text(text, file="topology.yaml", base_dir=tmp_path, env={})
    assert [str(p) for p in exc.value.problems] == [
        "topology.yaml:10:40: sinks[1].path: sink 'dlq' would write into the spout's input file "
        "'./events.jsonl': name another file"
    ]
