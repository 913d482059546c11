"""The docs' YAML and `squall` command lines, checked against the code: every YAML snippet in the
README, docs/ and the examples' READMEs loads (a whole topology with the loader; a fragment — a
component, a list of them, a `resources:`/`settings:`/`streams:` section — against the component's
config model), and every `--flag` given to a `squall` command exists on that command."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import click
import pydantic
import pytest

from squall.errors import TopologyError
from squall.topology import registry
from squall.topology.loader import load_text
from squall.topology.model import Edge, Settings, TopologyDocument
from squall.topology.resource_config import ResourceConfig
from squall.topology.yamlsource import read_yaml
from tests.test_doc_links import FENCE, ROOT

KINDS = {"spout": "spout", "bolts": "bolt", "sinks": "sink"}


def user_docs() -> list[Path]:
    """What a user reads as the truth of today (not the CHANGELOG: its entries are history)."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(ROOT.glob("examples/*/README.md")),
    ]


class DocEnv(Mapping):
    """Every `${VAR}` a snippet leaves to the user is set (to a placeholder); defaults apply."""

    def __getitem__(self, name: str) -> str:
        return f"doc-{name.lower()}"

    def get(self, name, default=None):  # `${VAR:-default}`: the default
        return None

    def __contains__(self, name) -> bool:
        return True

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def fenced_blocks(path: Path, languages: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(first line number, dedented text) of each fenced block in one of ``languages``."""
    lines = path.read_text().splitlines()
    start, lang, body = None, "", []
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            if start is None:
                start, lang, body = number + 1, line.strip().strip("`~").strip(), []
            else:
                if lang in languages:
                    yield start, textwrap.dedent("\n".join(body))
                start = None
        elif start is not None:
            body.append(line)


def _errors(model: type[pydantic.BaseModel], data, base_dir: Path, *, partial: bool) -> list[str]:
    """Validation errors of ``data``; a fragment (``partial``) may leave required options out."""
    try:
        model.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as exc:
        return [
            f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
            for e in exc.errors()
            if not (partial and e["type"] == "missing")
        ]
    return []


def component_problems(kinds: tuple[str, ...], item, base_dir: Path) -> list[str]:
    """Problems of one component; ``kinds`` are the kinds it may be (first that fits wins)."""
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        return [f"not a component (a mapping with a type): {item!r}"]
    tried = []
    for kind in kinds:
        try:
            cls = registry.resolve(kind, item["type"])
        except registry.UnknownType:
            continue
        problems = _errors(cls.Config, {"id": kind, **item}, base_dir, partial=True)
        if not problems:
            return []
        tried += [f"{kind} {item.get('id', item['type'])}: {p}" for p in problems]
    return tried or [f"no {'/'.join(kinds)} type {item['type']!r}"]


def snippet_problems(text: str, where: str, base_dir: Path) -> list[str]:
    data, _, problems = read_yaml(text, where, DocEnv())
    if problems:
        return [str(p) for p in problems]
    if isinstance(data, dict) and {"name", "spout", "sinks"} <= data.keys():
        try:
            load_text(text, file=where, base_dir=base_dir, env=DocEnv())
        except TopologyError as exc:
            return [str(p) for p in exc.problems]
        return []
    found: list[str] = []
    if isinstance(data, list):  # `- id: …`: components of a list whose kind the text gives
        for item in data:
            found += component_problems(("bolt", "sink", "spout"), item, base_dir)
    elif isinstance(data, dict) and "type" in data:
        found += component_problems(("spout", "bolt", "sink"), data, base_dir)
    elif isinstance(data, dict) and data.keys() <= set(TopologyDocument.model_fields):
        for key, kind in KINDS.items():
            items = data.get(key)
            for item in [items] if key == "spout" and items is not None else items or []:
                found += component_problems((kind,), item, base_dir)
        for name, resource in (data.get("resources") or {}).items():
            found += [
                f"resources.{name}.{p}"
                for p in _errors(ResourceConfig, resource, base_dir, partial=False)
            ]
        if "settings" in data:
            found += [
                f"settings.{p}"
                for p in _errors(Settings, data["settings"], base_dir, partial=False)
            ]
        for edge in data.get("streams") or []:
            found += [f"streams: {p}" for p in _errors(Edge, edge, base_dir, partial=False)]
    # else: a fragment of one component's options (`partition_by: …`), shown beside its table
    return found


def yaml_snippets() -> list[tuple[str, str, Path]]:
    return [
        (f"{doc.relative_to(ROOT)}:{line}", text, doc.parent)
        for doc in user_docs()
        for line, text in fenced_blocks(doc, ("yaml", "yml"))
    ]


SNIPPETS = yaml_snippets()


@pytest.mark.parametrize(("where", "text", "base_dir"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_every_yaml_snippet_of_the_docs_loads(where, text, base_dir):
    assert snippet_problems(text, where, base_dir) == []


def test_the_snippet_checker_finds_unknown_options_and_bad_values():
    assert snippet_problems("- {id: g, type: geo, ip_feild: ip}", "a.md:1", ROOT) == [
        "bolt g: ip_feild: Extra inputs are not permitted"
    ]
    assert snippet_problems(
        "sinks:\n  - {id: w, type: warehouse, mode: upsrt}", "a.md:1", ROOT
    ) == ["sink w: mode: Input should be 'insert' or 'upsert'"]
    assert snippet_problems("settings: {batch: 3}", "a.md:1", ROOT) == [
        "settings.batch: Extra inputs are not permitted"
    ]
    assert snippet_problems("name: t\nspout: {type: stdin}\nsinks: []", "a.md:1", ROOT) != []


# `squall [global options] COMMAND rest`: not `python -m squall.cli`, `squall_lambda`, `squall[kcl]`.
SQUALL_COMMAND = re.compile(
    r"(?<![\w./\[-])squall((?:\s+(?:-v+|--verbose|--log-format[= ]\S+))*)\s+([a-z][\w-]*)(.*)"
)
# `python benchmarks/run.py --only x`, `chain_quarters.py --cut full`: a script of benchmarks/ or
# scripts/ (argparse: each option is a string literal in its source).
SCRIPT = re.compile(r"(?<![\w.-])(?:[\w./-]*/)?(\w+\.py)\b(.*)")
FLAG = re.compile(r"(?<![\w\[-])(--?[a-zA-Z][\w-]*)")


def command_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of each place a command can be written: a line of a code block (with its
    backslash continuations joined) or an inline code span of the prose."""
    fenced, pending, first = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            if not pending:
                first = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield first, pending + line
            pending = ""
        else:
            for span in re.findall(r"`([^`\n]+)`", line):
                yield number, span


def squall_commands() -> dict[str, click.Command]:
    from squall.cli import main

    ctx = click.Context(main)
    return {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}


def _options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}


def flag_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    from squall.cli import main

    commands = squall_commands()
    problems = []
    for path in files:
        for number, text in command_lines(path):
            for match in SQUALL_COMMAND.finditer(text):
                where = f"{path.relative_to(root)}:{number}"
                name, rest = match.group(2), match.group(3)
                if name not in commands:
                    problems.append(f"{where}: no command 'squall {name}'")
                    continue
                rest = re.split(r"\s(?:&&|\|\|?|;|#|>)\s", rest)[0].replace("--[no-]", "--no-")
                known = _options(commands[name]) | _options(main) | {"-vv"}
                problems += [
                    f"{where}: 'squall {name}' has no option {flag}"
                    for flag in FLAG.findall(rest)
                    if flag not in known
                ]
            for match in SCRIPT.finditer(text):
                where = f"{path.relative_to(root)}:{number}"
                scripts = [
                    s for d in ("benchmarks", "scripts") for s in (root / d).rglob(match.group(1))
                ]
                if not scripts:
                    continue  # not one of ours (or cited by path: path_problems checks it)
                source = scripts[0].read_text()
                rest = re.split(r"\s(?:&&|\|\|?|;|#|>)\s", match.group(2))[0]
                problems += [
                    f"{where}: {match.group(1)} has no option {flag}"
                    for flag in FLAG.findall(rest)
                    if flag.startswith("--") and f'"{flag}"' not in source
                ]
    return problems


def test_every_option_given_to_a_squall_command_in_the_docs_exists():
    assert flag_problems(user_docs()) == []


def test_the_option_checker_finds_a_gone_command_and_a_gone_option(tmp_path: Path):
    page = tmp_path / "a.md"
    page.write_text(
        "Run `squall run t.yaml --batchsize 5` or `squall -v run t.yaml --[no-]progress`;\n"
        "`squall fleet` once.\n```sh\nsquall package t.yaml --handler consumer \\\n"
        "  --templat t.yml  # --not-checked\npip install squall[kcl] --upgrade\n```\n"
        "`python benchmarks/b.py --rounds 3 --round 2` `other.py --x`\n"
    )
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "b.py").write_text('parser.add_argument("--rounds")\n')
    assert flag_problems([page], tmp_path) == [
        "a.md:1: 'squall run' has no option --batchsize",
        "a.md:2: no command 'squall fleet'",
        "a.md:4: 'squall package' has no option --templat",
        "a.md:8: b.py has no option --round",
    ]


PYTHON_NAME = re.compile(r"(?<![\w.<>/-])squall(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")
FILE_NAME = re.compile(r"\.(?:json|ya?ml)$")  # `squall.schema.json`: a file


def _resolves(name: str) -> bool:
    import importlib

    parts = name.replace(":", ".").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def name_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """`squall.…` names that are neither a module or attribute (`squall.redact`,
    `squall.testing:MemorySink`) nor a name the code uses (a logger, a span, an OTel metric)."""
    from squall.observability.metrics import METRICS
    from squall.observability.otel import otel_name

    in_code = {otel_name(spec.key) for spec in METRICS} | {
        m
        for source in (ROOT / "squall").rglob("*.py")
        for m in re.findall(r"[\"'](squall\.[\w.]+)[\"']", source.read_text())
    }
    return [
        f"{path.relative_to(root)}:{number}: {name}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in PYTHON_NAME.findall(line)
        if not FILE_NAME.search(name) and name not in in_code and not _resolves(name)
    ]


def test_every_squall_python_name_in_the_docs_exists():
    assert name_problems(user_docs()) == []


def test_the_name_checker_finds_a_gone_function(tmp_path: Path):
    page = tmp_path / "a.md"
    page.write_text(
        "`squall.testing:MemorySink`, `squall.redact`, logger `squall.progress`, "
        "`squall.schema.json`, `.t.squall.lock`\n`squall.testing.run_topolgy(path)`\n"
    )
    assert name_problems([page], tmp_path) == ["a.md:2: squall.testing.run_topolgy"]


REPO_PATH = re.compile(
    r"(?<![\w./-])((?:tests|squall|examples|benchmarks|scripts|docs)/[\w./*-]*[\w*])"
)


def path_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """Files of this repository the docs cite (`tests/kinesis/test_lambda_e2e.py`,
    `examples/pistats/apps_topology.yaml`) that do not exist. Not checked: what a run writes
    (`…/out/…`) and a path on a line citing another repository (`[browscap](https://…)
    fixtures (`tests/issues/*.php`)`)."""
    problems = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                cited = match.group(1)
                if "/out/" in cited or "](http" in line[: match.start()]:
                    continue
                if not any(any(base.glob(cited)) for base in (root, path.parent)):
                    problems.append(f"{path.relative_to(root)}:{number}: {cited}")
    return problems


def test_every_file_of_the_repository_the_docs_cite_exists():
    assert path_problems(user_docs()) == []


def test_the_path_checker_finds_a_renamed_test(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("")
    page = tmp_path / "a.md"
    page.write_text(
        "See `tests/test_a.py`, `tests/test_*.py` and tests/test_b.py; writes `examples/x/out/a.db`.\n"
        "[other](https://example.test) fixtures (`tests/data/x.txt`)\n"
    )
    assert path_problems([page], tmp_path) == ["a.md:1: tests/test_b.py"]


EXTRAS = re.compile(r"(?:\bsquall|(?<![\w/])\.)\[([\w,-]+)\]|--extras[ =]([\w,-]+)")


def extra_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """`pip install 'squall[http]'`, `-e '.[postgres,bench]'`, `squall package --extras windows`:
    each extra is one setup.cfg declares."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    declared = (
        set(setup["options.extras_require"])
        if setup.has_section("options.extras_require")
        else set()
    )
    return [
        f"{path.relative_to(root)}:{number}: no extra '{extra}'"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in EXTRAS.finditer(line)
        for extra in (match.group(1) or match.group(2)).split(",")
        if extra not in declared
    ]


def test_every_extra_the_docs_name_is_declared():
    assert extra_problems(user_docs()) == []


def test_the_extra_checker_finds_an_undeclared_extra(tmp_path: Path):
    (tmp_path / "setup.cfg").write_text("[options.extras_require]\nhttp =\n    httpx\n")
    page = tmp_path / "a.md"
    page.write_text("`pip install 'squall[http]'`, `.[http,sketch]`, `--extras http,windows`\n")
    assert extra_problems([page], tmp_path) == [
        "a.md:1: no extra 'sketch'",
        "a.md:1: no extra 'windows'",
    ]
