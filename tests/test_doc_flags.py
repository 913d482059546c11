"""A flag the docs name on its own — `--retrieval fanout`, "Options: `--application`,
`--initial-position`, …" — exists: an option of a `squall` command or of one of our scripts.
(A flag written after its command, `squall kcl FILE --stream S`, is checked against that command
by tests/test_doc_snippets.py; these name no command, so any command's option will do.)"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_doc_links import ROOT
from tests.test_doc_snippets import _options, command_lines, squall_commands, user_docs

LONE_FLAG = re.compile(r"^(--[a-zA-Z][\w-]*)")
#: Other tools' flags the docs quote (valgrind's cachegrind, in docs/performance.md; pip's
#: requirements-file option, in docs/deploy.md).
NOT_OURS = {"--cache-sim", "--branch-sim", "--hash"}


def lone_flag_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    from squall.cli import main

    known = set(_options(main)).union(*(_options(c) for c in squall_commands().values()))
    scripts = "\n".join(
        p.read_text() for d in ("benchmarks", "scripts") for p in (root / d).rglob("*.py")
    )
    problems = []
    for path in files:
        for number, span in command_lines(path):
            match = LONE_FLAG.match(span)
            if match is None:
                continue
            flag = match.group(1).replace("--[no-]", "--no-")
            if flag in known or flag in NOT_OURS or f'"{flag}"' in scripts:
                continue
            problems.append(f"{path.relative_to(root)}:{number}: no command or script has {flag}")
    return problems


def test_every_flag_the_docs_name_alone_exists():
    assert lone_flag_problems(user_docs()) == []


def test_the_lone_flag_checker_finds_a_renamed_flag(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "s.py").write_text('parser.add_argument("--rounds")\n')
    page = tmp_path / "a.md"
    page.write_text(
        "Options: `--application`, `--initial-positon`, `--rounds 3`, `--[no-]progress`.\n"
        "```sh\n--retrieval fanout\n```\n"
    )
    assert lone_flag_problems([page], tmp_path) == [
        "a.md:1: no command or script has --initial-positon"
    ]
