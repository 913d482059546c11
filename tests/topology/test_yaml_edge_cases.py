"""Odd YAML gives one located problem each, never a traceback (found by review; one test per case)."""

from __future__ import annotations

import re

import pytest

from squall.errors import TopologyError
from squall.topology.loader import load, load_text
from squall.topology.yamlsource import read_yaml

TAIL = "spout: {type: stdin}\nsinks: [{id: out, type: stdout}]\n"


def problems(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(TopologyError) as exc:
        load_text(text, file="t.yaml", env=env or {})
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: t\nsettings: {batch_size: !!int abc}\n" + TAIL,
            "t.yaml:2:24: settings.batch_size: cannot read value: invalid literal for int() with base 10: 'abc'",
        ),
        (
            "name: t\n!!int abc: 1\n" + TAIL,
            "t.yaml:2:1: cannot read key: invalid literal for int() with base 10: 'abc'",
        ),
        (
            "name: t\n!!python/name:os.system x: 1\n" + TAIL,
            "t.yaml:2:1: cannot read key: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/name:os.system'",
        ),
        (
            "name: t\nsettings: {<<: 5}\n" + TAIL,
            "t.yaml:2:12: settings: a merge key '<<' needs a mapping or a list of mappings",
        ),
        ("name: t\nx: &a [*a]\n" + TAIL, "t.yaml:2:4: x[0]: recursive alias"),
        (  # the parser's words alone did not say what to change (tests: regex, colon, tab)
            'name: t\ndescription: "^\\d+$"\n' + TAIL,
            "t.yaml:2:17: YAML syntax error: found unknown escape character 'd' (while scanning a "
            "double-quoted scalar); write a regex in single quotes ('^\\d+$'), or double its "
            "backslashes",
        ),
        (
            "name: t\ndescription: note: this\n" + TAIL,
            "t.yaml:2:18: YAML syntax error: mapping values are not allowed here; a value holding "
            "': ' needs quotes, or this line is indented deeper than the key it belongs with",
        ),
        (
            "name: t\nspout:\n\ttype: stdin\n",
            "t.yaml:3:1: YAML syntax error: found character '\\t' that cannot start any token "
            "(while scanning for the next token); indent with spaces, not tabs",
        ),
        (  # a control character (a pasted colour code) ended `squall validate` in a traceback
            'name: t\ndescription: "\x1b[31mred"\n' + TAIL,
            "t.yaml:2:15: the character U+001B is not allowed in YAML: remove it",
        ),
        (  # a tag on a list or mapping was dropped: `!!set {a}` read as {a: None}, silently
            "name: t\nx: !!set {a, b}\n" + TAIL,
            "t.yaml:2:4: x: the tag '!!set' is not supported: write a plain list, mapping or value",
        ),
        (
            "name: t\nx: !!python/object/apply:os.system [id]\n" + TAIL,
            "t.yaml:2:4: x: the tag '!!python/object/apply:os.system' is not supported: "
            "write a plain list, mapping or value",
        ),
        (
            "name: t\nx: !Ref [a]\n" + TAIL,
            "t.yaml:2:4: x: the tag '!Ref' is not supported: write a plain list, mapping or value",
        ),
        (  # bytes: no JSON value
            "name: t\nx: !!binary aGk=\n" + TAIL,
            "t.yaml:2:4: x: the tag '!!binary' is not supported: write a plain list, mapping or "
            "value",
        ),
        (  # the bare parser error did not say that `{` starts a mapping there
            "name: t\nsettings: {batch_size: ${N:-500}}\n" + TAIL,
            "t.yaml:2:25: YAML syntax error: expected ',' or '}', but got '{' (while parsing a "
            'flow mapping); inside { } or [ ], write a variable in quotes: "${VAR}"',
        ),
        (
            "name: t\nspout: {type: ':'}\nsinks: [{id: out, type: stdout}]\n",
            "t.yaml:2:15: spout.type: cannot import ':': ValueError: Empty module name",
        ),
    ],
)
def test_odd_yaml_is_a_located_problem(text: str, expected: str):
    assert expected in problems(text)


def test_alias_bombs_stop_early_with_a_located_problem():
    text = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 10) + "]\n"
        for i in range(7)
    )
    _, _, found = read_yaml(text, "l.yaml", {})
    assert any("document too large" in str(p) for p in found)


def test_explicit_keys_override_merged_ones():
    data, _, found = read_yaml(
        "a: &s {id: out, type: stdout}\nb: {<<: *s, id: out2}\n", "t.yaml", {}
    )
    assert found == [] and data["b"] == {"id": "out2", "type": "stdout"}


def test_boolean_and_null_keys_read_as_yaml_wrote_them():
    data, _, _ = read_yaml("r: {true: paid, false: free, null: nop}\n", "t.yaml", {})
    assert data == {"r": {"true": "paid", "false": "free", "null": "nop"}}


@pytest.mark.parametrize(
    "value, env, expected",
    [
        ("${A:-$$}", {}, "$"),
        ("x${E}y", {"E": ""}, "xy"),  # set but empty is set
        ("${E:-d}", {"E": ""}, "d"),  # :- also covers empty, as in a shell
    ],
)
def test_variable_substitution_edge_cases(value: str, env: dict, expected: str):
    data, _, found = read_yaml(f'a: "{value}"\n', "t.yaml", env)
    assert found == [] and data["a"] == expected


def test_nested_variables_in_defaults_are_refused_not_mangled():
    _, _, found = read_yaml("a: ${A:-${B}}\n", "t.yaml", {})
    assert [str(p) for p in found] == [
        "t.yaml:1:4: a: the default of ${A} contains '${': nested variables are not supported"
    ]


def test_a_non_utf8_file_is_a_located_problem(tmp_path):
    f = tmp_path / "latin.yaml"
    f.write_bytes(b"name: t\n# caf\xe9\n" + TAIL.encode())
    with pytest.raises(TopologyError, match=r"latin.yaml:2:6: the file is not UTF-8 text"):
        load(f)
    f.write_bytes("name: t\n# très caf\xe9\n".encode("latin-1"))  # the column counts characters
    with pytest.raises(TopologyError, match=r"latin.yaml:2:5: the file is not UTF-8 text"):
        load(f)


@pytest.mark.parametrize("text", ["---\n", "~\n", "null\n", "--- !!null ''\n"])
def test_a_null_document_says_so_rather_than_failing_silently(text: str):
    """`squall validate` printed nothing and exited 2 for a file of only `---`."""
    [problem] = problems(text)
    assert re.fullmatch(
        r"t\.yaml:[12]:\d+: a topology is a mapping with name, spout, bolts, sinks", problem
    )


def test_duplicate_ids_name_the_first_place_and_nothing_else():
    text = (
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: a, type: json}\n  - {id: a, type: json}\n"
        "sinks: [{id: o, type: stdout}]\n"
    )
    assert problems(text) == [
        "t.yaml:5:10: bolts[1].id: duplicate id 'a' (first used by bolts[0] at line 4, column 10)"
    ]


def test_route_matches_boolean_values_with_unquoted_yaml_keys():
    from squall.testing import MemorySink, records_from, run_topology

    yaml = """
name: r
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: r, type: route, field: premium, routes: {true: paid, false: free}}
sinks:
  - {id: paid, type: 'squall.testing:MemorySink', name: ROUTE-PAID}
  - {id: free, type: 'squall.testing:MemorySink', name: ROUTE-FREE}
streams:
  - {from: r, stream: paid, to: paid}
  - {from: r, stream: free, to: free}
"""
    for name in ("ROUTE-PAID", "ROUTE-FREE"):
        MemorySink.stores.pop(name, None)
    run_topology(yaml, records_from([{"premium": True}, {"premium": False}]))
    assert [ev.value for ev in MemorySink.stores["ROUTE-PAID"]] == [{"premium": True}]
    assert [ev.value for ev in MemorySink.stores["ROUTE-FREE"]] == [{"premium": False}]


def test_graph_ids_and_labels_survive_odd_component_ids():

    topo = load_text(
        "name: g\nspout: {type: stdin}\nbolts:\n  - {id: dec-ode, type: json}\n"
        '  - {id: dec_ode, type: json}\nsinks: [{id: "o\\"ut", type: stdout}]\n',
        env={},
    )
    plan = topo.plan
    mermaid = plan.mermaid()
    assert "n1 --> n2" in mermaid and "n2 --> n3" in mermaid
    assert 'n3[("o#quot;ut: stdout")]' in mermaid
    assert 'label="o\\"ut\\nstdout"' in plan.dot()


def test_an_explicit_tag_wins_over_retyping_a_substituted_value():
    data, _, found = read_yaml("a: !!str ${A:-5}\nb: ${A:-5}\n", "t.yaml", {})
    assert found == [] and data == {"a": "5", "b": 5}
    _, _, found = read_yaml("a: !!int ${A:-x}\n", "t.yaml", {})
    assert [str(p) for p in found] == [
        "t.yaml:1:4: a: cannot read value: invalid literal for int() with base 10: 'x'"
    ]


def test_typos_in_nested_options_are_located_at_the_key_with_a_suggestion():
    """Resources, filter conditions and a lookup's source had no "did you mean", and a union's
    member showed in the path (``source.sql.tabel``, placed at ``source``) and twice for ``key``."""
    text = (
        "name: t\n"
        "resources: {w: {url: 'sqlite:///x.db', pool_sise: 3}}\n"
        "spout: {type: stdin}\n"
        "bolts:\n"
        "  - {id: f, type: filter, where: [{field: a, equlas: 1}]}\n"
        "  - {id: l, type: lookup, key: 5.5, target: b,"
        " source: {type: sql, resource: w, tabel: apps, columns: [a]}}\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    assert problems(text) == [
        "t.yaml:2:40: resources.w.pool_sise: unknown key 'pool_sise' (did you mean 'pool_size'?)",
        "t.yaml:5:46: bolts[0].where[0].equlas: unknown key 'equlas' (did you mean 'equals'?)",
        "t.yaml:6:32: bolts[1].key: Input should be a valid string or a valid list",
        "t.yaml:6:56: bolts[1].source: missing required key 'table'",
        "t.yaml:6:81: bolts[1].source.tabel: unknown key 'tabel' (did you mean 'table'?)",
    ]


@pytest.mark.parametrize(
    "value, shown",
    [
        ("${DLQ_PATH-dlq.jsonl}", "'${DLQ_PATH-…'"),  # the shell's unset-only form
        ("${STAGE:=dev}", "'${STAGE:…'"),
        ("${ STAGE }", "'${ STAGE …'"),
        ("${STAGE", "'${STAGE…'"),
        ("postgresql://u:${PW-hunter2}@h/db", "'${PW-…'"),  # the default is not shown
    ],
)
def test_a_variable_squall_does_not_replace_is_refused_not_kept_as_text(value: str, shown: str):
    """`path: "${DLQ_PATH-dlq.jsonl}"` wrote a file of that name; `${STAGE-dev}` went into data."""
    _, _, found = read_yaml(f'a: "{value}"\n', "t.yaml", {})
    assert [str(p) for p in found] == [
        f"t.yaml:1:4: a: {shown} is no variable squall replaces: write ${{VAR}} or "
        "${VAR:-default} (a name of letters, digits and '_'), or $${ for a literal '${'"
    ]
    assert "hunter2" not in str(found)
    data, _, found = read_yaml('a: "$${STAGE-dev}"\n', "t.yaml", {})
    assert found == [] and data == {"a": "${STAGE-dev}"}


def test_a_default_holding_braces_is_refused_not_cut_at_its_first_brace():
    """`${RX:-^a{2}$}` read as the regex `^a{2$}`: the default ends at the first '}'."""
    _, _, found = read_yaml('a: "${RX:-^a{2}$}"\n', "t.yaml", {})
    assert [str(p) for p in found] == [
        "t.yaml:1:4: a: the default of ${RX} contains '{': a default ends at the first '}', "
        "so it cannot hold braces; set RX in the environment instead"
    ]


def test_yaml_1_1_readings_where_an_option_takes_any_value_are_refused():
    """`in: [NO, SE]` kept Norway's events out (NO is false), `equals: 2024-01-05` matched no
    event (a date), `12:30` was 750 and `01234` 668: silently, no event's JSON equals them."""
    text = (
        "name: t\nspout: {type: stdin}\nbolts:\n"
        "  - {id: f, type: filter, where: [{field: c, in: [NO, SE]}, {field: d, equals: 2024-01-05}]}\n"
        "  - {id: g, type: filter, any: [{field: t, equals: 12:30}, {field: z, not_in: [01234]}]}\n"
        "  - {id: p, type: project, defaults: {opted_in: no}}\n"
        "  - {id: r, type: route, field: c, routes: {NO: nordic}}\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    quote = "write it in quotes for the text"
    assert problems(text) == [
        "t.yaml:7:45: bolts[3].routes.NO: YAML reads the key NO as the boolean false: "
        "write 'NO' in quotes for the text, or false for the boolean",
        "t.yaml:4:51: bolts[0].where[0].in[0]: YAML reads the value NO as the boolean false: "
        "write 'NO' in quotes for the text, or false for the boolean",
        "t.yaml:4:80: bolts[0].where[1].equals: YAML reads this unquoted value as a date, "
        f"which no JSON value equals: {quote}",
        "t.yaml:5:52: bolts[1].any[0].equals: YAML reads this unquoted value as a number in "
        f"base 60 (12:30 is 750): {quote}",
        "t.yaml:5:80: bolts[1].any[1].not_in[0]: YAML reads this unquoted value as an octal "
        f"number (01234 is 668): {quote}",
        "t.yaml:6:49: bolts[2].defaults.opted_in: YAML reads the value no as the boolean false: "
        "write 'no' in quotes for the text, or false for the boolean",
    ]


def test_yaml_1_1_readings_stand_where_the_option_wants_that_type():
    topo = load_text(
        "name: t\nspout: {type: stdin}\nbolts:\n"
        "  - {id: f, type: filter, where: [{field: c, in: ['NO', false]}, {field: d, exists: yes}]}\n"
        "sinks: [{id: out, type: stdout, with_meta: on}]\n",
        env={},
    )
    assert topo.bolts[0].where[0].in_ == ["NO", False] and topo.bolts[0].where[1].exists is True
    assert topo.sinks[0].with_meta is True


def test_a_number_where_text_is_wanted_says_to_quote_it():
    """`table: 2024` (or `bucket: 123456`) said only "Input should be a valid string"."""
    text = "name: t\nspout: {type: s3, bucket: 123456}\nsinks: [{id: o, type: sqs, queue: null}]\n"
    assert problems(text) == [
        "t.yaml:2:27: spout.bucket: Input should be a valid string: YAML reads this unquoted "
        "value as a number; write it in quotes",
        "t.yaml:3:35: sinks[0].queue: Input should be a valid string",
    ]


def test_a_variable_in_a_mapping_key_is_refused_not_kept_as_text():
    """`routes: {"${VIP_TIER}": vip}` routed no event to vip: keys are not substituted."""
    _, _, found = read_yaml('r: {"${VIP_TIER}": vip, $$x: 1, $schema: s}\n', "t.yaml", {})
    assert [str(p) for p in found] == [
        "t.yaml:1:5: r.${VIP_TIER}: variables are not replaced in a mapping key, only in values: "
        "write the key itself"
    ]


def test_a_duplicate_id_merged_from_an_anchor_points_at_the_entry_that_merged_it():
    """Both places were the anchor's line: "bolts[1].id at 4:15 … first used by bolts[0] at
    line 4, column 15", and line 4 has nothing to change."""
    text = (
        "name: t\nspout: {type: stdin}\nbolts:\n  - &dec {id: decode, type: json}\n"
        "  - <<: *dec\n    max_depth: 10\nsinks: [{id: o, type: stdout}]\n"
    )
    assert problems(text) == [
        "t.yaml:5:5: bolts[1].id: duplicate id 'decode' (first used by bolts[0] at line 4, "
        "column 15): merged from it with '<<'"
    ]


def test_a_key_whose_entries_are_all_commented_out_says_so():
    """`bolts:` with every entry commented out is null: "Input should be a valid list"."""
    text = (
        "name: t\nresources:\n#  w: {url: x}\nspout: {type: stdin}\nbolts:\n#  - {id: d}\nsinks:\n"
    )
    assert problems(text) == [
        "t.yaml:2:11: resources: has no value (its entries commented out?): remove the key, or "
        "write {}",
        "t.yaml:5:7: bolts: has no value (its entries commented out?): remove the key, or write []",
        "t.yaml:7:7: sinks: has no value (its entries commented out?): it is required",
    ]


@pytest.mark.parametrize(
    "component_id, expected",
    [
        ('""', "t.yaml:3:14: sinks[0].id: an id cannot be empty"),
        ('" "', "t.yaml:3:14: sinks[0].id: an id cannot hold spaces or control characters: ' '"),
        ('"dec ode"', "t.yaml:3:14: sinks[0].id: an id cannot hold spaces or control characters"),
        ('"out\\t"', "t.yaml:3:14: sinks[0].id: an id cannot hold spaces or control characters"),
        ("x" * 129, "t.yaml:3:14: sinks[0].id: an id has at most 128 characters"),
    ],
)
def test_an_empty_blank_or_spaced_component_id_is_refused_where_it_is_written(
    component_id, expected
):
    # Such an id loaded, and named the component in dead letters, logs and metric labels as
    # nothing (CloudWatch refuses an empty dimension value: the metrics were lost).
    text = f"name: t\nspout: {{type: stdin}}\nsinks: [{{id: {component_id}, type: stdout}}]\n"
    (found,) = problems(text)
    assert found.startswith(expected)


def test_may_be_empty_is_every_value_some_variables_empty():
    """``Locator.may_be_empty`` (what ``squall package`` counts as possibly unset) holds a value
    exactly when some variables (unset or empty; set to text) make it null or empty text, for
    every form of one or two pieces, quoted and not. ``${C:-~}`` unquoted is YAML's null when C
    is unset: it was counted as never empty (its default is text)."""
    import itertools

    pieces = ["${A}", "${B:-}", "${C:-x}", "${C:-~}", "${C:-null}", "${D:- }", "$$", "t", "~", "nu"]
    wrong = []
    for n in (1, 2):
        for parts in itertools.product(pieces, repeat=n):
            template = "".join(parts)
            names = sorted({c for c in "ABCD" if "${" + c in template})
            if not names:
                continue
            for text in (f"v: {template}\n", f'v: "{template}"\n'):
                flagged, empty = set(), False
                for combo in itertools.product(("", "x", None), repeat=len(names)):
                    env = {k: v for k, v in zip(names, combo, strict=True) if v is not None}
                    data, loc, problems = read_yaml(text, "t.yaml", env)
                    if problems:  # ${A} unset
                        continue
                    flagged.add(("v",) in loc.may_be_empty)
                    empty = empty or data["v"] in (None, "")
                if flagged != {empty}:
                    wrong.append((text.strip(), flagged, empty))
    assert wrong == []


@pytest.mark.parametrize(
    "text, expected",
    [
        (  # the parser gave up on line 4, at `path:`; the key without its ': ' is on line 3
            "name: t\nspout:\n  type file\n  path: x.jsonl\n" + TAIL[21:],
            "t.yaml:3:3: YAML syntax error: mapping values are not allowed here; this line has "
            "no ': ' after its key, so YAML read it and what follows as one text up to the ':' "
            "on line 4: write `key: value`, with a space after ':'",
        ),
        (
            "name: t\nspout:\n  type:file\n  path: x.jsonl\n" + TAIL[21:],
            "t.yaml:3:3: YAML syntax error: mapping values are not allowed here; this line has "
            "no ': ' after its key, so YAML read it and what follows as one text up to the ':' "
            "on line 4: write `key: value`, with a space after ':'",
        ),
        (  # said at the next line, `sinks:`
            "name: t\nspout:\n  type: file\n  x.jsonl\n" + TAIL[21:],
            "t.yaml:4:3: YAML syntax error: could not find expected ':' (while scanning a simple "
            "key); this line has no ': ' after its key: write `key: value` (or '- ' before a "
            "list entry)",
        ),
        (  # a comment ate `}]}` and the parser gave up on the next line
            "name: t\nspout: {type: stdin}\nbolts:\n"
            "  - {id: f, type: filter, where: [{field: tag, equals: #launch}]}\n"
            "sinks: [{id: out, type: stdout}]\n",
            "t.yaml:4:56: YAML syntax error: expected ',' or '}', but got ':' (while parsing a "
            "flow mapping); ' #' starts a comment, which cut the { } or [ ] short here: quote a "
            "value holding '#'",
        ),
        (  # "found '?'" said nothing to whoever wrote an option one level too shallow
            "name: t\nspout: {type: stdin}\nbolts:\n  - id: g\n    type: geo\n  ip_field: ip\n"
            "sinks: [{id: out, type: stdout}]\n",
            "t.yaml:6:3: YAML syntax error: expected <block end>, but found '?' (while parsing a "
            "block collection); a key here is indented to no level of the lines above: line it "
            "up with the keys of the mapping it belongs to (or the '-' of its list)",
        ),
        (
            "name: t\nspout: {type: stdin}\nsinks:\n  - id: a\n    type: stdout\n - id: b\n",
            "t.yaml:6:2: YAML syntax error: expected <block end>, but found '<block sequence "
            "start>' (while parsing a block mapping); a list entry here is indented to no level "
            "of the lines above: line it up with the keys of the mapping it belongs to (or the "
            "'-' of its list)",
        ),
        (
            "name: t\ndescription: @data-team owns it\n" + TAIL,
            "t.yaml:2:14: YAML syntax error: found character '@' that cannot start any token "
            "(while scanning for the next token); a value starting with this character needs "
            "quotes ('…')",
        ),
        (
            "name: t\nspout: {type: file, path: *.jsonl}\nsinks: [{id: out, type: stdout}]\n",
            "t.yaml:2:27: YAML syntax error: expected alphabetic or numeric character, but found "
            "'.' (while scanning an alias); '*' starts an alias (of an '&anchor'): quote a value "
            "starting with '*' ('*…')",
        ),
    ],
)
def test_a_syntax_error_names_the_line_to_change_and_how(text: str, expected: str):
    """A key without its ': ' was said at the next line ("mapping values are not allowed here",
    with a hint about quoting that line's value); the other parser messages named tokens."""
    assert problems(text) == [expected]


def test_an_octal_or_base_60_number_where_an_option_wants_a_number_is_refused():
    """`batch_size: 0500` ran batches of 320 and `cache_size: 020000` kept 8192, silently: YAML
    1.1 reads a leading 0 as octal and `8:20` in base 60. `07` (7 either way), a quoted value and
    YAML 1.1's other spellings of a number (`0x10`, `1_000`) stand."""
    text = (
        "name: t\nspout: {type: stdin}\nbolts:\n"
        "  - {id: g, type: geo, cache_size: 020000}\n"
        "  - {id: f, type: filter, where: [{field: n, gt: 8:20}]}\n"
        "resources: {w: {url: 'sqlite:///w.db', pool_size: 010}}\n"
        "settings:\n  batch_size: ${N:-0500}\n  retry: {attempts: 07}\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    assert problems(text) == [
        "t.yaml:6:51: resources.w.pool_size: YAML reads the unquoted 010 as an octal number, 8: "
        "write 10 without the leading 0 (or 8 if that is the one meant)",
        "t.yaml:8:15: settings.batch_size: YAML reads the unquoted 0500 as an octal number, 320: "
        "write 500 without the leading 0 (or 320 if that is the one meant)",
        "t.yaml:4:36: bolts[0].cache_size: YAML reads the unquoted 020000 as an octal number, "
        "8192: write 20000 without the leading 0 (or 8192 if that is the one meant)",
        "t.yaml:5:50: bolts[1].where[0].gt: YAML reads the unquoted 8:20 as a number in base 60, "
        "500: write the number in decimal digits (500 if that is the one meant)",
    ]
    topo = load_text(
        "name: t\nspout: {type: stdin}\n"
        "settings: {batch_size: '0500', lambda_batch_size: 0x10, retry: {attempts: 07}}\n"
        "sinks: [{id: out, type: stdout}]\nresources: {w: {url: 'sqlite:///w.db', pool_size: 1_0}}\n",
        env={},
    )
    assert (topo.settings.batch_size, topo.settings.lambda_batch_size) == (500, 16)
    assert (topo.settings.retry.attempts, topo.resources["w"].pool_size) == (7, 10)


def test_an_octal_number_is_said_with_the_other_problems_of_its_mapping():
    """`cache_size: 020000` beside a misspelt option, or `attempts: on` beside
    `batch_size: abc`, was said only once the other problem was fixed: a second run of
    `squall validate` to find it."""
    text = (
        "name: t\nspout: {type: stdin}\n"
        "bolts: [{id: g, type: geo, cache_size: 020000, language: 5}]\n"
        "settings: {batch_size: abc, retry: {attempts: on}}\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    found = problems(text)
    assert (
        "t.yaml:3:40: bolts[0].cache_size: YAML reads the unquoted 020000 as an octal number, "
        "8192: write 20000 without the leading 0 (or 8192 if that is the one meant)"
    ) in found
    assert (
        "t.yaml:4:47: settings.retry.attempts: YAML reads the unquoted on as the boolean true, "
        "which is no number: write the number meant"
    ) in found
    assert len(found) == 4, found  # and language's, batch_size's: each once


def test_a_list_where_a_mapping_is_wanted_and_back_says_what_to_write():
    """`bolts: [json]`, `spout: [...]` and `streams:` written as one mapping said only "Input
    should be a valid dictionary" or "… a valid list"."""
    text = (
        "name: t\nspout:\n  - {type: stdin}\nbolts:\n  - json\n"
        "  - {id: f, type: filter, where: {field: a, exists: true}}\n"
        "sinks:\n  - [{id: out, type: stdout}]\nstreams:\n  from: f\n  to: out\n"
    )
    assert problems(text) == [
        "t.yaml:3:3: spout: the spout is a mapping of its id, type and options "
        "({type: file, path: events.jsonl}), not a list",
        "t.yaml:5:5: bolts[0]: a bolt is a mapping of its id, type and options "
        "({id: decode, type: json}), not text",
        "t.yaml:8:5: sinks[0]: a sink is a mapping of its id, type and options "
        "({id: out, type: stdout}), not a list",
        "t.yaml:10:3: streams: expected a list (an entry per line, each after '- '; or [a, b]), "
        "not a mapping",
        "t.yaml:6:34: bolts[1].where: expected a list (an entry per line, each after '- '; or "
        "[a, b]), not a mapping",
    ]


def test_a_boolean_where_an_option_wants_a_number_is_refused():
    """`attempts: on` retried once and `initial_backoff: off` waited 0 s, silently (a boolean is
    1 or 0 to pydantic); `cache_size: off` said only "greater than or equal to 1"."""
    text = (
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: g, type: geo, cache_size: off}\n"
        "settings: {retry: {attempts: on, initial_backoff: off}}\n"
        "sinks: [{id: out, type: stdout, with_meta: yes}]\n"
    )
    assert problems(text) == [
        "t.yaml:5:30: settings.retry.attempts: YAML reads the unquoted on as the boolean true, "
        "which is no number: write the number meant",
        "t.yaml:5:51: settings.retry.initial_backoff: YAML reads the unquoted off as the boolean "
        "false, which is no duration: write the duration meant (e.g. 30s, 5m)",
        "t.yaml:4:36: bolts[0].cache_size: YAML reads the unquoted off as the boolean false, "
        "which is no number: write the number meant",
    ]


def test_an_empty_variable_and_an_exponent_without_a_dot_say_why_the_value_is_wrong():
    """`table: ${EVENTS_TABLE}` with EVENTS_TABLE set to '' said only "Input should be a valid
    string" (YAML read the empty text as null); `batch_size: 1e3` "unable to parse string as an
    integer" (YAML 1.1 reads it as text)."""
    text = (
        "name: t\nspout: {type: stdin}\nsettings:\n  batch_size: 1e3\n"
        "sinks:\n  - id: out\n    type: dead_letter\n    path: ${DL_PATH}\n"
    )
    assert problems(text, env={"DL_PATH": ""}) == [
        "t.yaml:4:15: settings.batch_size: Input should be a valid integer, unable to parse "
        "string as an integer: YAML reads 1e3 as text (its exponent needs a '.' and a sign, "
        "1.0e+3): write the number in digits",
        "t.yaml:8:11: sinks[0].path: Input should be a valid string: the variable here is empty "
        "(set to '', or an empty default), which YAML reads as null: set it, or give it a "
        "default (${VAR:-value})",
    ]


def test_a_type_in_other_letter_case_is_suggested():
    """`type: JSON` listed every known type: difflib's ratio of 'JSON' to 'json' is 0."""
    text = "name: t\nspout: {type: stdin}\nbolts: [{id: d, type: JSON}]\n" + TAIL[21:]
    assert problems(text) == [
        "t.yaml:3:23: bolts[0].type: unknown bolt type 'JSON' (did you mean 'json'?)"
    ]


def test_a_pasted_no_break_or_zero_width_space_is_named():
    """A no-break space (U+00A0) pasted as indentation made the key ' type' ("unknown key",
    "spout: has no value"); after a value it made the type 'json ' ("unknown bolt type")."""
    text = (
        "name: t\nspout:\n\u00a0 type: stdin\nbolts: [{id: d, type: json\u00a0}]\n"
        "description: 10\u00a0km\nsinks: [{id: out, type: stdout}]\n"
    )
    like = (
        "U+00A0, which looks like a space (or nothing) but is none to YAML (pasted from a web "
        "page or a document?): type an ordinary space, or none"
    )
    assert problems(text) == [
        f"t.yaml:3:1: the key '\\xa0 type' holds {like}",
        f"t.yaml:4:23: bolts[0].type: the value 'json\\xa0' starts or ends with {like}",
        "t.yaml:2:7: spout: has no value (its entries commented out?): it is required",
    ]
    # from a variable, the value is not shown: it may be a password
    text = "name: t\nspout: {type: stdin}\nsinks:\n  - id: out\n    type: dead_letter\n    path: ${P}\n"
    assert problems(text, env={"P": "\u200bdl.jsonl"}) == [
        "t.yaml:6:11: sinks[0].path: the value of its variable starts or ends with U+200B, "
        "which looks like a space (or nothing) but is none to YAML (pasted from a web page or a "
        "document?): type an ordinary space, or none"
    ]


def test_a_no_break_space_inside_a_key_is_data_not_a_paste():
    """A field name holding a no-break space (`Prix\u00a0TTC`, exported from a French
    spreadsheet) is a key of the data: a `rename`, `defaults` or `routes` key loaded as written
    before the pasted-space check, which refused any key holding one; only a key starting or
    ending with one is a paste (`\u00a0 type: stdin`)."""
    topo = load_text(
        "name: t\nspout: {type: stdin}\nbolts:\n"
        "  - {id: p, type: project, rename: {Prix\u00a0TTC: price}, defaults: {a\u202fb: 1}}\n"
        "sinks: [{id: out, type: stdout}]\n",
        env={},
    )
    assert (topo.bolts[0].rename, topo.bolts[0].defaults) == (
        {"Prix\u00a0TTC": "price"},
        {"a\u202fb": 1},
    )
    assert problems(
        "name: t\nspout: {type: stdin}\nsinks:\n  - {id: out, type\u00a0: stdout}\n"
    ) == [
        "t.yaml:4:15: sinks[0]: the key 'type\\xa0' holds U+00A0, which looks like a space (or "
        "nothing) but is none to YAML (pasted from a web page or a document?): type an ordinary "
        "space, or none"
    ]


@pytest.mark.parametrize(
    "text, place",
    [
        ("name: t\nspout:\n  type:\tstdin\n" + TAIL[21:], "3:8"),
        ("name: t\nspout: {type: stdin}\t\n" + TAIL[21:], "2:21"),
    ],
)
def test_a_tab_between_or_after_values_is_not_said_to_be_indentation(text: str, place: str):
    """`type:<tab>stdin`, or a tab left after a value, was said as "indent with spaces"."""
    assert problems(text) == [
        f"t.yaml:{place}: YAML syntax error: found character '\\t' that cannot start any token "
        "(while scanning for the next token); YAML takes no tab between or after values either: "
        "type a space (or none)"
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_says_so(tmp_path, encoding: str):
    """PowerShell 5's `>` writes UTF-16 with a byte-order mark: "not UTF-8 text" at 1:1 did not
    say what the file was, nor what to do."""
    f = tmp_path / "t.yaml"
    text = "name: t\n" + TAIL
    f.write_bytes(
        text.encode(encoding) if encoding == "utf-16" else b"\xfe\xff" + text.encode(encoding)
    )
    with pytest.raises(TopologyError) as exc:
        load(f)
    assert [str(p) for p in exc.value.problems] == [
        f"{f}:1:1: the file is UTF-16 text, not UTF-8: save it as UTF-8"
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        (  # said at the end of the file
            'name: t\ndescription: "unclosed\n' + TAIL,
            "t.yaml:2:14: YAML syntax error: found unexpected end of stream (while scanning a "
            "quoted scalar); this quote is never closed: add the closing quote",
        ),
        (  # said at `sinks:` on the next line
            "name: t\nspout: {type: stdin\nsinks:\n  - {id: out, type: stdout}\n",
            "t.yaml:2:20: YAML syntax error: expected ',' or '}', but got ':' (while parsing a "
            "flow mapping); the '{' opened at column 8 is not closed on its line: add the '}' "
            "at its end (or a ',' if it goes on)",
        ),
        (
            "name: t\nspout: {type: stdin}\nsinks: [{id: out, type: stdout}\nstreams: []\n",
            "t.yaml:3:32: YAML syntax error: expected ',' or ']', but got '<scalar>' (while "
            "parsing a flow sequence); the '[' opened at column 8 is not closed on its line: add "
            "the ']' at its end (or a ',' if it goes on)",
        ),
        (
            "name: t\ndescription: 'it's here'\n" + TAIL,
            "t.yaml:2:18: YAML syntax error: expected <block end>, but found '<scalar>' (while "
            "parsing a block mapping); text follows a closing quote: inside '…' write a quote "
            "twice ('it''s'), or put the value in \"…\"",
        ),
    ],
)
def test_an_unclosed_quote_or_bracket_is_said_where_it_opens(text: str, expected: str):
    assert problems(text) == [expected]


def test_an_empty_list_entry_is_not_told_to_remove_a_key():
    """A '-' with nothing after it said "has no value (its entries commented out?): remove the
    key, or write {}": an entry has no key."""
    text = "name: t\nspout: {type: stdin}\nbolts:\n  -\n  - {id: d, type: json}\n" + TAIL[21:]
    assert problems(text) == [
        "t.yaml:4:4: bolts[0]: is an empty list entry (a '-' with nothing after it): remove it, "
        "or write the entry"
    ]


def test_a_list_or_mapping_where_text_is_wanted_says_so():
    """`path: [events.jsonl]` said only "Input should be a valid string"."""
    text = (
        "name: t\nspout: {type: file, path: [in.jsonl]}\n"
        "sinks: [{id: out, type: dead_letter, path: {file: x}}]\n"
    )
    assert problems(text) == [
        "t.yaml:2:27: spout.path: Input should be a valid string, not a list: write the text alone",
        "t.yaml:3:44: sinks[0].path: Input should be a valid string, not a mapping: write the "
        "text alone",
    ]
    # a union's members still say one sentence: a lookup's `key` takes text or a list
    text = (
        "name: t\nresources: {w: {url: 'sqlite:///x.db'}}\nspout: {type: stdin}\nbolts:\n"
        "  - {id: l, type: lookup, key: {a: b}, target: b,"
        " source: {type: sql, resource: w, table: apps, columns: [a]}}\n" + TAIL[21:]
    )
    assert problems(text) == [
        "t.yaml:5:32: bolts[0].key: Input should be a valid string or a valid list"
    ]


def test_a_duplicate_key_names_where_the_first_one_is():
    """It said only "duplicate key" at the second: in a long file the first was to be found."""
    text = (
        "name: t\nsettings:\n  batch_size: 500\n  retry: {attempts: 3}\n  batch_size: 50\n" + TAIL
    )
    assert problems(text) == [
        "t.yaml:5:3: settings.batch_size: duplicate key (first at line 3, column 3): keep one of "
        "them"
    ]
