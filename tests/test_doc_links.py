"""Relative links and `#anchors` in the README and docs/ resolve (no network: external links are
not fetched)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) or ![alt](target); the text may span lines and hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def doc_files() -> list[Path]:
    return [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(ROOT.glob("examples/*/README.md")),
    ]


def without_code_blocks(text: str) -> str:
    """The text with fenced code blocks blanked (line numbers kept)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def prose(text: str) -> str:
    """The text without code: fenced blocks and inline code blanked (line numbers kept)."""
    return re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group()), without_code_blocks(text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in without_code_blocks(path.read_text()).splitlines():
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    cache: dict[Path, set[str]] = {}
    problems = []
    for path in files:
        text = prose(path.read_text())
        for match in LINK.finditer(text):
            target = match.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue  # https:, mailto: ... not fetched
            where = f"{path.relative_to(root)}:{text.count(chr(10), 0, match.start()) + 1}"
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{where}: {target}: no such file")
            elif fragment and dest.suffix == ".md":
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if fragment not in cache[dest]:
                    problems.append(f"{where}: {target}: no heading with this anchor")
    return problems


def test_every_relative_link_and_anchor_of_the_docs_resolves():
    assert broken_links(doc_files()) == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Lambda producer (for browsers and SDKs)", "lambda-producer-for-browsers-and-sdks"),
        ("`squall kcl`: running a fleet", "squall-kcl-running-a-fleet"),
        (
            "SnapStart: init once per version, not per cold start",
            "snapstart-init-once-per-version-not-per-cold-start",
        ),
        (
            "Sources: SQS and S3 (and their Lambda triggers)",
            "sources-sqs-and-s3-and-their-lambda-triggers",
        ),
    ],
)
def test_anchors_follow_githubs_rule(heading, anchor):
    assert slug(heading) == anchor


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path):
    (tmp_path / "b.md").write_text("# Title\n## Same\n## Same\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#same-1) [gone](c.md) [typo](b.md#titel)\n"
        "[multi\nline](#nowhere)\n```\n[in code](d.md)\n```\n`[inline](e.md)` [web](https://x.test/#y)\n"
    )
    assert broken_links([page], tmp_path) == [
        "a.md:1: c.md: no such file",
        "a.md:1: b.md#titel: no heading with this anchor",
        "a.md:2: #nowhere: no heading with this anchor",
    ]
