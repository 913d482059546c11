"""The README's CLI table names every `squall` command, and each command's row lists every exit
code its code can end with: a literal `sys.exit(N)` / `click.exceptions.Exit(N)` / `code = N`, a
topology that does not load (`_load_or_exit`: 2, and 1 for an outage of a secret reference's
service when it reads them), an output file that cannot be written (`_write`: 1). Codes computed
at run time (a run's report) are not seen here: the tests of each command check them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click

from tests.test_doc_links import ROOT
from tests.test_doc_snippets import squall_commands

ROW = re.compile(r"^\| `squall ([a-z][\w-]*)[^|]*\|.*\|([^|]*)\|\s*$")
LITERAL_EXIT = re.compile(r"(?:sys\.exit|Exit)\((\d+)\)|\bcode = (\d+)\b")


def documented_codes(readme: Path) -> dict[str, set[int]]:
    """Command → the exit codes its rows of the README's CLI table give (a command may have two
    rows: `squall package … --handler consumer|producer` and `--handler kcl`)."""
    text = readme.read_text().split("\n## CLI\n", 1)[1].split("\n## ", 1)[0]
    codes: dict[str, set[int]] = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            found = {int(n) for n in re.findall(r"(?<![\w.-])(\d{1,3})(?![\w.])", match.group(2))}
            codes.setdefault(match.group(1), set()).update(found)
    return codes


def exit_codes(command: click.Command) -> set[int]:
    """The exit codes the command's own function can be seen to end with."""
    source = inspect.getsource(command.callback)
    codes = {int(a or b) for a, b in LITERAL_EXIT.findall(source)}
    for call in re.findall(r"_load_or_exit\(([^)]*)\)", source):
        codes |= {2, 1} if "resolve=" in call and "resolve=False" not in call else {2}
    if "_write(" in source:
        codes.add(1)
    return codes


def exit_code_problems(readme: Path, commands: dict[str, click.Command]) -> list[str]:
    documented = documented_codes(readme)
    problems = [
        f"'squall {name}' has no row in the CLI table"
        for name in commands
        if name not in documented
    ]
    problems += [
        f"the CLI table's 'squall {name}' is no command"
        for name in documented
        if name not in commands
    ]
    for name, command in commands.items():
        missing = exit_codes(command) - documented.get(name, set())
        if name in documented and missing:
            problems.append(f"'squall {name}' can exit with {sorted(missing)}, not in its row")
    return problems


def test_the_cli_table_lists_every_command_and_its_exit_codes():
    assert exit_code_problems(ROOT / "README.md", squall_commands()) == []


def test_the_exit_code_checker_finds_an_undocumented_code_and_a_missing_row(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n## CLI\n| command | what it does | exit codes |\n|---|---|---|\n"
        "| `squall show FILE` | loads it | 0, 2 invalid |\n"
        "| `squall gone` | was removed | 0 |\n## Next\n"
    )

    @click.command()
    def show() -> None:
        _load_or_exit("t.yaml", resolve=True)  # noqa: F821 - only its source is read

    @click.command()
    def write() -> None:
        _write(None, "")  # noqa: F821

    assert exit_code_problems(readme, {"show": show, "write": write}) == [
        "'squall write' has no row in the CLI table",
        "the CLI table's 'squall gone' is no command",
        "'squall show' can exit with [1], not in its row",
    ]
